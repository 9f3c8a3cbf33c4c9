"""The presence filter of a DiskCache: a Bloom filter of the keys its directory may hold.

A get for a key the filter has never seen is answered "missing" on the event
loop, without the thread hop and SQLite lookup that a miss costs otherwise.
The filter may answer "maybe" for a key that is absent (a false positive,
about 1% at its design load, or a key deleted since): that read simply takes
the SQLite path as before. It must never answer "absent" for a committed
key, and the rules that keep it so live in :mod:`asyncperf.cache._disk`.

Bits are taken from the 16-byte blake2b hash the cache computes for every key
anyway (one bit per 32-bit word of it), so a check costs no extra hashing.

Thread safety: every change (adding bits, publishing a new view) happens under
:attr:`Presence.lock`. A reader on the event loop takes no lock: it reads
:attr:`Presence.view` once, a tuple replaced whole, and bits are only ever set
in a published filter, so it sees a filter at least as full as the view's
watermark promises.
"""

from __future__ import annotations

import math
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple

__all__ = ["BloomFilter", "Presence", "PresenceStatistics", "PresenceView"]

#: The false-positive rate a filter is sized for, at its design capacity.
ERROR_RATE: Final = 0.01
#: Bit positions per key: the four 32-bit words of the 16-byte key hash, one each.
#: 4 rather than the memory-optimal 7: every hit pays one check, and 4 probes cost
#: 10.5 bits per key at 1% instead of 9.6.
PROBES: Final = 4
#: The smallest design capacity.
MIN_CAPACITY: Final = 4_096
#: A filter is built for this many times the entries present, so it has room to grow.
GROWTH: Final = 2

_words = struct.Struct("<4I").unpack


class BloomFilter:
    """A Bloom filter over 16-byte hashes, sized for ``capacity`` keys at ``error_rate``.

    Each of the hash's four 32-bit words picks one bit (the hash is blake2b, so
    the words are independent), and the bit count is a power of two so that a
    mask picks it: a check is a handful of operations, no loop and no extra
    hashing. Rounding the size up to a power of two leaves room for more keys
    at the same rate, so :attr:`capacity` may exceed the capacity asked for.

    Not thread-safe on its own: :class:`Presence` serializes the writers.
    """

    __slots__ = ("bits", "capacity", "mask", "size")

    def __init__(self, capacity: int, error_rate: float = ERROR_RATE) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity}")
        if not 0.0 < error_rate < 1.0:
            raise ValueError(f"error_rate must be between 0 and 1, not {error_rate}")
        # With k probes and m/n bits per key the rate is (1 - e^(-k n/m))^k; solved for m/n.
        bits_per_key = -PROBES / math.log(1.0 - error_rate ** (1.0 / PROBES))
        wanted = max(64, math.ceil(capacity * bits_per_key))
        #: Bits in the filter: a power of two, 64 to 2**32.
        self.size = min(1 << 32, 1 << (wanted - 1).bit_length())
        self.mask = self.size - 1
        #: Keys the filter holds at ``error_rate`` (at least the capacity asked for,
        #: unless that would take more than 2**32 bits).
        self.capacity = int(self.size / bits_per_key)
        self.bits = bytearray(self.size // 8)

    @property
    def probes(self) -> int:
        """Bit positions per key."""
        return PROBES

    def add(self, key_hash: bytes) -> bool:
        """Set the bits of ``key_hash``; whether any was newly set (a key not seen before)."""
        mask = self.mask
        bits = self.bits
        new = False
        for word in _words(key_hash):
            bit = word & mask
            byte = bit >> 3
            flag = 1 << (bit & 7)
            if not bits[byte] & flag:
                bits[byte] |= flag
                new = True
        return new

    def __contains__(self, key_hash: object) -> bool:
        """``key_hash in bloom``: :meth:`might_contain` (False for anything but bytes)."""
        return isinstance(key_hash, bytes) and self.might_contain(key_hash)

    def might_contain(self, key_hash: bytes) -> bool:
        """False when ``key_hash`` was certainly never added; True when it may have been."""
        mask = self.mask
        bits = self.bits
        a, b, c, d = _words(key_hash)
        a &= mask
        b &= mask
        c &= mask
        d &= mask
        # Unrolled, and `and` stops at the first clear bit (most absent keys: the first).
        return bool(
            bits[a >> 3] >> (a & 7) & 1
            and bits[b >> 3] >> (b & 7) & 1
            and bits[c >> 3] >> (c & 7) & 1
            and bits[d >> 3] >> (d & 7) & 1
        )


class PresenceView(NamedTuple):
    """What the event loop reads, replaced whole so that its fields agree.

    Every key stored by a transaction that set ``seq <= watermark`` is in ``bits``.
    """

    bits: BloomFilter
    #: The index's ``seq`` (a counter every store increments) the filter reflects.
    watermark: int
    #: Changes when the filter object is replaced (rebuild, clear).
    epoch: int
    #: When the filter was last brought up to date (the cache's clock).
    refreshed_at: float


@dataclass(frozen=True, slots=True)
class PresenceStatistics:
    """A snapshot of a DiskCache's presence filter (``cache.presence_statistics()``)."""

    #: False when the cache was made with ``presence_filter=False`` (other fields are 0).
    enabled: bool
    #: Keys the current filter is sized for (about 1% false positives at that load).
    capacity: int
    #: Bits in the filter (its memory is bits / 8 bytes).
    bits: int
    #: Distinct keys added to the current filter (present or since removed).
    load: int
    #: Misses answered by the filter on the event loop, without a thread hop.
    skips: int
    #: Times the filter was rebuilt from the index (the first build at open included).
    rebuilds: int
    #: Times it was brought up to date with another instance's or process's writes.
    refreshes: int


class Presence:
    """A Bloom filter shared by a cache's loop and threads, and what it reflects."""

    def __init__(self, now: float) -> None:
        self.lock = threading.Lock()
        # Until the writer has built the filter at open, ``ready`` is False and reads take
        # the SQLite path; sets still add here (and are re-added once the real one exists).
        self.view = PresenceView(BloomFilter(MIN_CAPACITY), -1, 0, now)
        self.ready = False
        #: Distinct keys added to the current filter since it was built.
        self.load = 0
        #: Entries this instance removed (deleted, evicted, expired) since the build.
        self.removed = 0
        #: Set by the loop when a read wants the filter brought up to date.
        self.refresh_wanted = False
        self.skips = 0
        self.rebuilds = 0
        self.refreshes = 0

    # -- changes (any thread) ---------------------------------------------------------

    def add(self, key_hash: bytes) -> int:
        """Add a key; the epoch of the filter it went into."""
        with self.lock:
            view = self.view
            if view.bits.add(key_hash):
                self.load += 1
            return view.epoch

    def fold(
        self, hashes: Iterable[bytes], epoch: int, seq: int, now: float, *, refresh: bool = False
    ) -> None:
        """Add keys read from the index as of ``seq``, then move the watermark to ``seq``.

        The watermark moves only if the filter is still the one of ``epoch``: a
        filter built since may lack keys stored before ``seq``. ``refresh``
        counts the call as a refresh in the statistics.
        """
        with self.lock:
            if refresh:
                self.refreshes += 1
            view = self.view
            bits = view.bits
            added = 0
            for key_hash in hashes:
                if bits.add(key_hash):
                    added += 1
            self.load += added
            if view.epoch == epoch:
                self.view = PresenceView(view.bits, max(view.watermark, seq), epoch, now)

    def committed(
        self, foreign: list[bytes], epoch: int, seq: int | None, now: float, removed: int
    ) -> bool:
        """After a writer's COMMIT: fold in ``foreign`` keys, move the watermark to ``seq``
        (None: nothing was stored), count ``removed`` entries; whether to rebuild.

        One lock round per write batch: this runs after every commit. The rebuild rule:
        more distinct keys than the design capacity (false positives above 1%), or
        over half of them known removed by this instance (deleted, evicted, expired).
        """
        with self.lock:
            view = self.view
            if foreign:
                bits = view.bits
                self.load += sum(1 for key_hash in foreign if bits.add(key_hash))
            if seq is not None and view.epoch == epoch and seq > view.watermark:
                self.view = PresenceView(view.bits, seq, epoch, now)
            self.removed += removed
            return self.load > view.bits.capacity or (
                self.removed > 0 and 2 * self.removed > max(self.load, MIN_CAPACITY)
            )

    def replace(self, bits: BloomFilter, load: int, watermark: int, now: float) -> int:
        """Publish a filter built from the index as of ``watermark``; the new epoch."""
        with self.lock:
            epoch = self.view.epoch + 1
            self.view = PresenceView(bits, watermark, epoch, now)
            self.load = load
            self.removed = 0
            self.ready = True
            self.rebuilds += 1
            return epoch

    def reset(self, now: float) -> None:
        """Empty the filter (for ``clear``): nothing is known until the index is read again.

        The watermark drops to -1, so the next miss reads every row stored since
        (a failed clear loses no key) instead of trusting the empty filter.
        """
        with self.lock:
            view = self.view
            self.view = PresenceView(BloomFilter(view.bits.capacity), -1, view.epoch + 1, now)
            self.load = 0
            self.removed = 0

    def statistics(self) -> PresenceStatistics:
        """A snapshot of the counters."""
        bits = self.view.bits
        return PresenceStatistics(
            enabled=True,
            capacity=bits.capacity,
            bits=bits.size,
            load=self.load,
            skips=self.skips,
            rebuilds=self.rebuilds,
            refreshes=self.refreshes,
        )


def capacity_for(entries: int) -> int:
    """The design capacity of a filter built over ``entries`` keys (room to grow)."""
    return max(MIN_CAPACITY, GROWTH * entries)
