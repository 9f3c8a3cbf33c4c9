"""The frequency sketch of W-TinyLFU: how often each key was asked for, recently.

A count-min sketch of depth 4 (one byte per counter, saturating at 15 like
Caffeine's 4-bit counters), behind a doorkeeper: a Bloom filter that absorbs the
first occurrence of each key, so one-hit wonders never reach the counters.
:meth:`FrequencySketch.age` halves every counter and clears the doorkeeper, so
old popularity fades; the policy ages the sketch after a sample of about ten
times its capacity in events.

Hashing costs most in pure Python, so a key is hashed once, by
:meth:`FrequencySketch.locate` (or :meth:`FrequencySketch.record`, which also
counts it), into its *slots* (the positions of its four counters and its two
doorkeeper bits); the caller keeps the slots next to the key's entry, and
estimates and increments cost a few index operations.

Each integer operation costs about as much as a dictionary lookup here, so the
layout saves operations: the four row indexes come out of the mixed hash's bytes
in one ``struct`` call, and the doorkeeper takes a byte per bit (testing a bit is
one index, not a shift, a mask and an index) up to ``_MAX_BYTE_DOOR`` bytes,
about a megabyte for a cache of 10,000 entries, and packs eight bits a byte
beyond. Both layouts hold the same bits, so estimates do not depend on them.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from typing import Final

__all__ = ["MAX_FREQUENCY", "FrequencySketch", "Slots"]

#: Counters saturate here, as Caffeine's 4-bit counters do.
MAX_FREQUENCY: Final = 15

#: Where one key lives in a sketch: its counter in each of the four rows, then its
#: two doorkeeper bits.
Slots = tuple[int, int, int, int, int, int]

_M64: Final = (1 << 64) - 1
# Odd multipliers from splitmix64 and Murmur3's finaliser.
_C1: Final = 0x9E3779B97F4A7C15
_C2: Final = 0xBF58476D1CE4E5B9
_C3: Final = 0x94D049BB133111EB
#: The four row indexes out of the mixed hash's bytes, in one C call.
_LANES16: Final = struct.Struct("<4H").unpack
_LANES32: Final = struct.Struct("<4I").unpack
#: ``counter >> 1`` for every byte value: ageing halves a whole row in one C call.
_HALVE: Final = bytes(value >> 1 for value in range(256))
#: ``counter + 1``, saturating at ``MAX_FREQUENCY``, for every counter value.
_INCREMENT: Final = bytes(min(value + 1, MAX_FREQUENCY) for value in range(256))
#: The doorkeeper is addressed with 32-bit indexes.
_MAX_DOOR_BITS: Final = 32
#: The largest doorkeeper kept a byte per bit (8 MiB: caches up to about 100,000 entries).
_MAX_BYTE_DOOR: Final = 1 << 23


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
        "_byte_door",
        "_door",
        "_door_mask",
        "_door_multiplier",
        "_lanes_mask",
        "_rows",
        "_wide",
        "capacity",
        "door_additions",
        "recorded",
    )

    def __init__(self, capacity: int) -> None:
        self.capacity = max(16, capacity)
        width = _pow2_at_least(2 * self.capacity)
        #: Rows wider than 2**16 take 32-bit lanes of two hashes instead of 16-bit ones.
        self._wide = width > 1 << 16
        #: The row mask in each lane of the mixed hash (of both products' in wide rows).
        bits = 32 if self._wide else 16
        lane = (width - 1) & ((1 << bits) - 1)
        self._lanes_mask = sum(lane << shift for shift in range(0, 4 * bits, bits))
        #: The multiplier whose product's high half places the doorkeeper bits.
        self._door_multiplier = _C3 if self._wide else _C2
        self._rows = [bytearray(width) for _ in range(4)]
        door_bits = min(_pow2_at_least(8 * self.sample_size), 1 << _MAX_DOOR_BITS)
        self._door_mask = door_bits - 1
        self._byte_door = door_bits <= _MAX_BYTE_DOOR
        self._door = bytearray(door_bits if self._byte_door else door_bits >> 3)
        #: Keys the doorkeeper took since it was last cleared.
        self.door_additions = 0
        #: Calls of :meth:`record` that changed a counter, since the sketch was made.
        self.recorded = 0

    @property
    def sample_size(self) -> int:
        """Events between two ageings: ten times the capacity."""
        return 10 * self.capacity

    def locate(self, key: Hashable) -> Slots:
        """The slots of ``key``: hash once, then pass them to the other methods.

        ``hash()`` of a small int is the int itself, so the bits are mixed first
        (a multiply-xorshift round; the products' high halves for more bits). The
        row indexes are the 16-bit lanes of the mixed hash (in rows wider than
        2**16, the 32-bit lanes of it and of a second product's high half), masked
        to the width.
        """
        # ``h * C & M64`` equals ``(h & M64) * C & M64`` for every int h, negative too.
        x = hash(key) * _C1 & _M64
        x ^= x >> 32
        if self._wide:
            lanes = (x * _C2 >> 64 << 64 | x) & self._lanes_mask
            a, b, c, d = _LANES32(lanes.to_bytes(16, "little"))
        else:
            a, b, c, d = _LANES16((x & self._lanes_mask).to_bytes(8, "little"))
        door = x * self._door_multiplier >> 64
        door_mask = self._door_mask
        return (a, b, c, d, door & door_mask, door >> 32 & door_mask)

    def record(self, key_hash: int) -> Slots:
        """Record one occurrence of the key whose ``hash()`` is ``key_hash``: the
        slots of :meth:`locate`, then :meth:`increment`, in one call (a cache's
        miss path). Counts in :attr:`recorded` when a counter changed."""
        x = key_hash * _C1 & _M64  # as in ``locate``, spelled out for speed
        x ^= x >> 32
        if self._wide:
            lanes = (x * _C2 >> 64 << 64 | x) & self._lanes_mask
            a, b, c, d = _LANES32(lanes.to_bytes(16, "little"))
        else:
            a, b, c, d = _LANES16((x & self._lanes_mask).to_bytes(8, "little"))
        door_hash = x * self._door_multiplier >> 64
        door_mask = self._door_mask
        e = door_hash & door_mask
        f = door_hash >> 32 & door_mask
        door = self._door
        if self._byte_door:
            if not (door[e] and door[f]):
                door[e] = door[f] = 1
                self.door_additions += 1
                return (a, b, c, d, e, f)
        elif not door[e >> 3] >> (e & 7) & door[f >> 3] >> (f & 7) & 1:
            door[e >> 3] |= 1 << (e & 7)
            door[f >> 3] |= 1 << (f & 7)
            self.door_additions += 1
            return (a, b, c, d, e, f)
        row0, row1, row2, row3 = self._rows
        v0, v1, v2, v3 = row0[a], row1[b], row2[c], row3[d]
        # Counters stay below 16, so the four AND to 15 only when all are saturated.
        if v0 & v1 & v2 & v3 != MAX_FREQUENCY:
            increment = _INCREMENT
            row0[a] = increment[v0]
            row1[b] = increment[v1]
            row2[c] = increment[v2]
            row3[d] = increment[v3]
            self.recorded += 1
        return (a, b, c, d, e, f)

    def frequency(self, slots: Slots) -> int:
        """The estimate: the smallest of the key's four counters, plus one if the
        doorkeeper has seen it (capped at 15)."""
        a, b, c, d, e, f = slots
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
        if count < MAX_FREQUENCY:
            door = self._door
            if self._byte_door:
                if door[e] and door[f]:
                    count += 1
            elif door[e >> 3] >> (e & 7) & door[f >> 3] >> (f & 7) & 1:
                count += 1
        return count

    def _seen(self, e: int, f: int) -> bool:
        door = self._door
        if self._byte_door:
            return bool(door[e] and door[f])
        return bool(door[e >> 3] >> (e & 7) & door[f >> 3] >> (f & 7) & 1)

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
        a, b, c, d, e, f = slots
        if not self._seen(e, f):
            door = self._door
            if self._byte_door:
                door[e] = door[f] = 1
            else:
                door[e >> 3] |= 1 << (e & 7)
                door[f >> 3] |= 1 << (f & 7)
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
        """Forget every count (:attr:`recorded` keeps counting)."""
        self._rows = [bytearray(len(row)) for row in self._rows]
        self._door = bytearray(len(self._door))
        self.door_additions = 0
