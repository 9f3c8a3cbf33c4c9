"""The frequency sketch of W-TinyLFU: how often each key was asked for, recently.

A count-min sketch of depth 4 (one byte per counter, saturating at 15 like
Caffeine's 4-bit counters), behind a doorkeeper: a Bloom filter that absorbs the
first occurrence of each key, so one-hit wonders never reach the counters.
:meth:`FrequencySketch.age` halves every counter and clears the doorkeeper, so
old popularity fades; the policy ages the sketch after a sample of about ten
times its capacity in events.

Hashing costs most in pure Python, so a key is hashed once, by
:meth:`FrequencySketch.locate`, into its *slots* (the positions of its four
counters and its two doorkeeper bits); the caller keeps the slots next to the
key's entry, and estimates and increments cost a few index operations.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from typing import Final

__all__ = ["MAX_FREQUENCY", "FrequencySketch", "Slots"]

#: Counters saturate here, as Caffeine's 4-bit counters do.
MAX_FREQUENCY: Final = 15

#: Where one key lives in a sketch: its counter in each of the four rows, then the
#: byte and the bit mask of each of its two doorkeeper bits.
Slots = tuple[int, int, int, int, int, int, int, int]

_M64: Final = (1 << 64) - 1
# Odd multipliers from splitmix64 and Murmur3's finaliser.
_C1: Final = 0x9E3779B97F4A7C15
_C2: Final = 0xBF58476D1CE4E5B9
_C3: Final = 0x94D049BB133111EB
#: One 64-bit word as four 16-bit lanes, or two 32-bit ones, in one C call each.
_PACK: Final = struct.Struct("<Q").pack
_LANES16: Final = struct.Struct("<4H").unpack
_LANES32: Final = struct.Struct("<2I").unpack
#: ``counter >> 1`` for every byte value: ageing halves a whole row in one C call.
_HALVE: Final = bytes(value >> 1 for value in range(256))
#: The doorkeeper is addressed with 32-bit indexes.
_MAX_DOOR_BITS: Final = 32


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class FrequencySketch:
    """Estimates how often a key was recorded since the last ageing, up to 15.

    Args:
        capacity: the number of entries of the cache it serves. Each of the four
            rows has ``2 * capacity`` counters (rounded up to a power of two),
            and the doorkeeper eight bits per event of a sample.
    """

    __slots__ = (
        "_door",
        "_door_mask",
        "_row_mask",
        "_rows",
        "_wide",
        "capacity",
        "door_additions",
    )

    def __init__(self, capacity: int) -> None:
        self.capacity = max(16, capacity)
        width = _pow2_at_least(2 * self.capacity)
        self._row_mask = width - 1
        #: Rows wider than 2**16 take 32-bit lanes of two hashes instead of 16-bit ones.
        self._wide = width > 1 << 16
        self._rows = [bytearray(width) for _ in range(4)]
        door_bits = min(_pow2_at_least(8 * self.sample_size), 1 << _MAX_DOOR_BITS)
        self._door_mask = door_bits - 1
        self._door = bytearray(door_bits >> 3)
        #: Keys the doorkeeper took since it was last cleared.
        self.door_additions = 0

    @property
    def sample_size(self) -> int:
        """Events between two ageings: ten times the capacity."""
        return 10 * self.capacity

    def locate(self, key: Hashable) -> Slots:
        """The slots of ``key``: hash once, then pass them to the other methods.

        ``hash()`` of a small int is the int itself, so the bits are mixed first
        (a multiply-xorshift round; the products' high halves for more bits).
        """
        x = (hash(key) & _M64) * _C1 & _M64
        x ^= x >> 32
        mask = self._row_mask
        if self._wide:
            a, b = _LANES32(_PACK(x))
            c, d = _LANES32(_PACK((x * _C2) >> 64))
            door = (x * _C3) >> 64
        else:
            a, b, c, d = _LANES16(_PACK(x))
            door = (x * _C2) >> 64
        door_mask = self._door_mask
        e = door & door_mask
        f = (door >> 32) & door_mask
        return (a & mask, b & mask, c & mask, d & mask, e >> 3, 1 << (e & 7), f >> 3, 1 << (f & 7))

    def frequency(self, slots: Slots) -> int:
        """The estimate: the smallest of the key's four counters, plus one if the
        doorkeeper has seen it (capped at 15)."""
        a, b, c, d, e, em, f, fm = slots
        row0, row1, row2, row3 = self._rows
        count = row0[a]
        value = row1[b]
        if value < count:
            count = value
        value = row2[c]
        if value < count:
            count = value
        value = row3[d]
        if value < count:
            count = value
        door = self._door
        if count < MAX_FREQUENCY and door[e] & em and door[f] & fm:
            count += 1
        return count

    def increment(self, slots: Slots) -> bool:
        """Record one occurrence: the doorkeeper takes the first, the counters the rest.

        Returns whether a counter changed (False: the doorkeeper took it, or the
        counters are saturated).
        """
        return self.add(slots, 1)

    def add(self, slots: Slots, count: int) -> bool:
        """Record ``count`` occurrences at once (each counter saturates at 15).

        Returns whether a counter changed.
        """
        if count <= 0:
            return False
        a, b, c, d, e, em, f, fm = slots
        door = self._door
        if not (door[e] & em and door[f] & fm):
            door[e] |= em
            door[f] |= fm
            self.door_additions += 1
            count -= 1
            if not count:
                return False
        top = MAX_FREQUENCY - count  # a counter above this saturates
        changed = False
        row0, row1, row2, row3 = self._rows
        value = row0[a]
        if value < MAX_FREQUENCY:
            row0[a] = value + count if value <= top else MAX_FREQUENCY
            changed = True
        value = row1[b]
        if value < MAX_FREQUENCY:
            row1[b] = value + count if value <= top else MAX_FREQUENCY
            changed = True
        value = row2[c]
        if value < MAX_FREQUENCY:
            row2[c] = value + count if value <= top else MAX_FREQUENCY
            changed = True
        value = row3[d]
        if value < MAX_FREQUENCY:
            row3[d] = value + count if value <= top else MAX_FREQUENCY
            changed = True
        return changed

    def age(self) -> None:
        """Halve every counter and clear the doorkeeper: the periodic reset of TinyLFU."""
        self._rows = [row.translate(_HALVE) for row in self._rows]
        self._door = bytearray(len(self._door))
        self.door_additions = 0

    def clear(self) -> None:
        """Forget everything."""
        self._rows = [bytearray(len(row)) for row in self._rows]
        self._door = bytearray(len(self._door))
        self.door_additions = 0
