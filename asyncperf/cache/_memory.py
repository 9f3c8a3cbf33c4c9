"""The in-process cache level (L1): a dict of values behind a pluggable eviction policy.

Values live in one dict as ``(value, expires)`` pairs (``expires`` is None for
no expiry), so a hit is one dictionary lookup; the policy keeps only keys and
weights. Expiry is lazy (a read finds an expired entry, removes it and reports
a miss) plus a sweep that costs no timer and no task: keys with a TTL sit in
coarse expiry buckets (one per second of expiry time), and the write and read
paths that already know the time remove a bounded batch of keys from buckets
whose second has passed.
"""

from __future__ import annotations

import heapq
import math
import random
import sys
import time
from collections.abc import Callable, Hashable, Iterable
from types import EllipsisType, TracebackType
from typing import Any, Final

from asyncperf._errors import CacheClosed
from asyncperf._validate import check_int, check_number
from asyncperf.abc import Clock
from asyncperf.cache._base import (
    MISS,
    CacheEntry,
    CacheStatistics,
    EvictionReason,
    LatencySamples,
)
from asyncperf.cache._policies import EvictionPolicy, PolicyName, make_policy
from asyncperf.loop import SystemClock

__all__ = ["MemoryCache", "default_weigher"]

#: Width of an expiry bucket, in seconds of the cache's clock.
_SLOT: Final = 1.0
#: Keys a sweep examines per call at most. Each write adds at most one key to
#: the buckets and each sweep from a write removes up to this many, so the
#: sweep keeps up with any write rate while no single call pays for a backlog.
_SWEEP_BATCH: Final = 64
#: One lookup in this many is timed for the hit latency percentiles.
_SAMPLE_EVERY: Final = 16

_INF: Final = math.inf


def default_weigher(value: Any) -> int:
    """The bytes a value counts for: its length for bytes-like and str, else ``sys.getsizeof``."""
    if isinstance(value, bytes | bytearray | str):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    return sys.getsizeof(value)


def _check_ttl(name: str, ttl: object) -> float:
    return check_number(name, ttl, minimum=0.0, strict=True)


class MemoryCache:
    """An in-memory cache level with TTLs, bounds by entries and bytes, and eviction policies.

    ``get`` never yields to the event loop (it is a coroutine only to satisfy
    the level protocol); hot code can call :meth:`get_nowait` and
    :meth:`set_nowait` directly. ``None`` is a value like any other: a miss
    returns ``default``, which is :data:`~asyncperf.cache.MISS` unless given.

    Bounds: ``max_entries`` caps the number of entries, ``max_bytes`` the total
    weight as ``weigher`` counts it (by default the length of bytes and str
    values, ``sys.getsizeof`` of anything else; the weigher is only called when
    ``max_bytes`` is set). When a write goes over a bound, the policy picks the
    entries to evict. A value heavier than ``max_bytes`` on its own is refused:
    ``set`` returns False and the key ends absent; nothing else is evicted.

    Policies: ``"lru"``, ``"lfu"``, ``"fifo"``, ``"sieve"`` and ``"tinylfu"``
    (W-TinyLFU, the default: it admits a new key only if it is looked up more
    often than the entry it would evict, so a scan does not flush the cache;
    ``set`` returns False when a value was not admitted).

    Expiry: ``ttl`` seconds per entry (``default_ttl`` when not given; None for
    no expiry), read on ``clock``. With ``jitter`` j, an entry keeps
    ``ttl * (1 - j * random())``, so keys written together do not expire
    together. An expired entry reads as a miss and is removed then, or earlier
    by an incremental sweep run from writes and reads (no timer per key, no
    background task); :meth:`expire` sweeps everything now.

    Args:
        max_entries: at most this many entries (None: no bound on the count).
        max_bytes: at most this many bytes, as the weigher counts (None: no bound).
        policy: the eviction policy.
        weigher: ``weigher(value) -> int``, the bytes a value counts for.
        default_ttl: seconds an entry lives when ``set`` is given no ``ttl``.
        jitter: in [0, 1): the fraction of a TTL that may be cut at random.
        clock: the source of time for TTLs (default: the monotonic system clock).
        name: the level's name in statistics.

    Raises:
        ValueError: both bounds are None, or an argument is out of range
            (the message names it).
        TypeError: an argument has the wrong type (the message names it).
    """

    __slots__ = (
        "_access",
        "_buckets",
        "_capacity_evictions",
        "_clock",
        "_closed",
        "_countdown",
        "_data",
        "_default_ttl",
        "_deletes",
        "_expired",
        "_hits",
        "_jitter",
        "_latency",
        "_max_bytes",
        "_max_entries",
        "_misses",
        "_name",
        "_note_miss",
        "_now",
        "_policy",
        "_sets",
        "_slots",
        "_sweep_due",
        "_too_large",
        "_weigher",
    )

    def __init__(
        self,
        max_entries: int | None = 10_000,
        *,
        max_bytes: int | None = None,
        policy: PolicyName = "tinylfu",
        weigher: Callable[[Any], int] | None = None,
        default_ttl: float | None = None,
        jitter: float = 0.0,
        clock: Clock | None = None,
        name: str = "memory",
    ) -> None:
        self._max_entries, self._max_bytes = _check_bounds(max_entries, max_bytes)
        if weigher is not None and not callable(weigher):
            raise TypeError(f"weigher must be callable, not {type(weigher).__name__}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        jitter = check_number("jitter", jitter, minimum=0.0, strict=False)
        if jitter >= 1.0:
            raise ValueError(f"jitter must be < 1, not {jitter!r}")
        self._policy: EvictionPolicy = make_policy(policy, self._max_entries, self._max_bytes)
        self._default_ttl = None if default_ttl is None else _check_ttl("default_ttl", default_ttl)
        self._jitter = jitter
        self._weigher = weigher if weigher is not None else default_weigher
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._name = name
        # Bound methods cached for the hit path: no attribute lookups per call.
        self._now = self._clock.now
        self._access = self._policy.access
        self._note_miss = self._policy.miss
        self._data: dict[Hashable, tuple[Any, float | None]] = {}
        # Expiry buckets: slot (expiry second) -> keys; ``_slots`` is a heap of
        # the bucket slots, ``_sweep_due`` the end of the earliest one.
        self._buckets: dict[float, set[Hashable]] = {}
        self._slots: list[float] = []
        self._sweep_due = _INF
        self._closed = False
        self._hits = 0
        self._misses = 0
        self._sets = 0
        self._deletes = 0
        self._capacity_evictions = 0
        self._expired = 0
        self._too_large = 0
        self._latency = LatencySamples()
        self._countdown = _SAMPLE_EVERY

    # -- reading ------------------------------------------------------------------

    def get_nowait(self, key: Hashable, default: Any = MISS) -> Any:
        """The value of ``key``, or ``default`` on a miss (an expired entry is a miss).

        Raises:
            CacheClosed: the cache is closed.
        """
        entry = self._data.get(key)
        if entry is not None:
            expires = entry[1]
            if expires is None:
                self._access(key)
                self._hits += 1
                return entry[0]
            now = self._now()
            if expires > now:
                self._access(key)
                self._hits += 1
                if now >= self._sweep_due:
                    self._sweep(now, _SWEEP_BATCH)
                return entry[0]
        return self._miss(key, default)

    async def get(self, key: Hashable, default: Any = MISS) -> Any:
        """The value of ``key``, or ``default`` on a miss; never yields to the event loop.

        Raises:
            CacheClosed: the cache is closed.
        """
        countdown = self._countdown - 1
        if not countdown:
            self._countdown = _SAMPLE_EVERY
            return self._timed_get(key, default)
        self._countdown = countdown
        # The body of get_nowait, inlined: a call less on the hit path.
        entry = self._data.get(key)
        if entry is not None:
            expires = entry[1]
            if expires is None:
                self._access(key)
                self._hits += 1
                return entry[0]
            now = self._now()
            if expires > now:
                self._access(key)
                self._hits += 1
                if now >= self._sweep_due:
                    self._sweep(now, _SWEEP_BATCH)
                return entry[0]
        return self._miss(key, default)

    def _timed_get(self, key: Hashable, default: Any) -> Any:
        hits = self._hits
        start = time.perf_counter()
        value = self.get_nowait(key, default)
        elapsed = time.perf_counter() - start
        if self._hits != hits:
            self._latency.add(elapsed)
        return value

    def _miss(self, key: Hashable, default: Any) -> Any:
        # Also reached after aclose(): the values are gone, so every lookup misses.
        if self._closed:
            raise CacheClosed(_CLOSED)
        entry = self._data.get(key)
        if entry is not None:  # present, but its time has passed
            self._remove_expired(key, entry[1])
        self._note_miss(key)
        self._misses += 1
        if self._slots:
            now = self._now()
            if now >= self._sweep_due:
                self._sweep(now, _SWEEP_BATCH)
        return default

    def _lookup_entry(self, key: Hashable) -> CacheEntry | None:
        entry = self._data.get(key)
        if entry is not None:
            expires = entry[1]
            if expires is None:
                self._access(key)
                self._hits += 1
                return CacheEntry(entry[0], None)
            now = self._now()
            if expires > now:
                self._access(key)
                self._hits += 1
                if now >= self._sweep_due:
                    self._sweep(now, _SWEEP_BATCH)
                return CacheEntry(entry[0], expires - now)
        self._miss(key, None)
        return None

    async def get_entry(self, key: Hashable) -> CacheEntry | None:
        """The value of ``key`` with the seconds it has left (None: no expiry), or None on a miss.

        Raises:
            CacheClosed: the cache is closed.
        """
        countdown = self._countdown - 1
        if countdown:
            self._countdown = countdown
            return self._lookup_entry(key)
        self._countdown = _SAMPLE_EVERY
        hits = self._hits
        start = time.perf_counter()
        found = self._lookup_entry(key)
        elapsed = time.perf_counter() - start
        if self._hits != hits:
            self._latency.add(elapsed)
        return found

    async def get_many(self, keys: Iterable[Hashable]) -> dict[Hashable, CacheEntry]:
        """The entries found among ``keys``, with the seconds they have left; misses left out.

        Raises:
            CacheClosed: the cache is closed.
        """
        if self._closed:
            raise CacheClosed(_CLOSED)
        found: dict[Hashable, CacheEntry] = {}
        lookup = self._lookup_entry
        for key in keys:
            entry = lookup(key)
            if entry is not None:
                found[key] = entry
        return found

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` holds an unexpired value; counts nothing and changes no recency."""
        entry = self._data.get(key)
        if entry is None:
            return False
        expires = entry[1]
        return expires is None or expires > self._now()

    def __len__(self) -> int:
        """Entries held, including expired ones not yet found or swept."""
        return len(self._data)

    # -- writing ------------------------------------------------------------------

    def set_nowait(self, key: Hashable, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` under ``key``; False when it was refused (too large, or not admitted).

        Args:
            key: any hashable.
            value: any value, None included.
            ttl: seconds it lives (> 0, finite); None: the cache's ``default_ttl``.

        Raises:
            CacheClosed: the cache is closed.
            ValueError, TypeError: ``ttl`` is not a positive finite number.
        """
        if self._closed:
            raise CacheClosed(_CLOSED)
        if ttl is None:
            ttl = self._default_ttl
        elif ttl.__class__ is not float or not 0.0 < ttl < _INF:  # fast path for a float ttl
            ttl = _check_ttl("ttl", ttl)
        weight = 0
        max_bytes = self._max_bytes
        if max_bytes is not None:
            weight = self._weigh(value)
            if weight > max_bytes:
                self._refuse(key)
                return False
        data = self._data
        old = data.get(key)
        now = 0.0
        if ttl is not None:
            if self._jitter:
                ttl *= 1.0 - self._jitter * random.random()
            now = self._now()
            expires: float | None = now + ttl
        else:
            expires = None
            if self._slots:
                now = self._now()
        if old is not None:
            if old[1] is not None:
                self._unbucket(key, old[1])
            data[key] = (value, expires)
            evicted = self._policy.update(key, weight)
            admitted = True
        else:
            evicted = self._policy.insert(key, weight)
            admitted = True
            if evicted:
                for gone in evicted:
                    if gone is key or gone == key:
                        admitted = False
                        break
            if admitted:
                data[key] = (value, expires)
        if evicted:
            self._drop_evicted(evicted)
        if admitted:
            self._sets += 1
            if expires is not None:
                self._bucket(key, expires)
        if now >= self._sweep_due:
            self._sweep(now, _SWEEP_BATCH)
        return admitted

    async def set(self, key: Hashable, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` under ``key``; False when it was refused (too large, or not admitted).

        See :meth:`set_nowait`; this never yields to the event loop.
        """
        return self.set_nowait(key, value, ttl)

    async def set_many(self, items: Iterable[tuple[Hashable, Any, float | None]]) -> int:
        """Store ``(key, value, ttl)`` items; how many were stored (not refused).

        Every ``ttl`` is checked before anything is stored.

        Raises:
            CacheClosed: the cache is closed.
            ValueError, TypeError: a ``ttl`` is not a positive finite number.
        """
        if self._closed:
            raise CacheClosed(_CLOSED)
        batch = list(items)
        for _key, _value, ttl in batch:
            if ttl is not None:
                _check_ttl("ttl", ttl)
        stored = 0
        store = self.set_nowait
        for key, value, ttl in batch:
            if store(key, value, ttl):
                stored += 1
        return stored

    def delete_nowait(self, key: Hashable) -> bool:
        """Remove ``key``; whether it held an unexpired value.

        Raises:
            CacheClosed: the cache is closed.
        """
        if self._closed:
            raise CacheClosed(_CLOSED)
        entry = self._data.get(key)
        if entry is None:
            return False
        expires = entry[1]
        if expires is not None and expires <= self._now():
            self._remove_expired(key, expires)
            return False
        del self._data[key]
        self._policy.remove(key)
        if expires is not None:
            self._unbucket(key, expires)
        self._deletes += 1
        return True

    async def delete(self, key: Hashable) -> bool:
        """Remove ``key``; whether it held an unexpired value.

        Raises:
            CacheClosed: the cache is closed.
        """
        return self.delete_nowait(key)

    async def clear(self) -> None:
        """Remove every entry (not counted as deletes or evictions).

        Raises:
            CacheClosed: the cache is closed.
        """
        if self._closed:
            raise CacheClosed(_CLOSED)
        self._forget_all()

    # -- expiry -------------------------------------------------------------------

    def expire(self) -> int:
        """Remove every expired entry now; how many were removed.

        Raises:
            CacheClosed: the cache is closed.
        """
        if self._closed:
            raise CacheClosed(_CLOSED)
        now = self._now()
        removed = self._sweep(now, _INF)
        # The bucket of the current second holds keys on both sides of now.
        slots = self._slots
        if slots and slots[0] * _SLOT <= now:
            data = self._data
            bucket = self._buckets[slots[0]]
            for key in [k for k in bucket if _expiry(data[k]) <= now]:
                bucket.discard(key)
                del data[key]
                self._policy.remove(key)
                self._expired += 1
                removed += 1
        return removed

    def _bucket(self, key: Hashable, expires: float) -> None:
        slot = expires // _SLOT
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = set()
            heapq.heappush(self._slots, slot)
            self._sweep_due = (self._slots[0] + 1.0) * _SLOT
        bucket.add(key)

    def _unbucket(self, key: Hashable, expires: float) -> None:
        # An emptied bucket stays until the sweep reaches it: a bucket is in the
        # heap exactly once, for as long as it is in the dict.
        bucket = self._buckets.get(expires // _SLOT)
        if bucket is not None:
            bucket.discard(key)

    def _sweep(self, now: float, limit: float) -> int:
        """Remove the keys of buckets whose second has passed, examining at most ``limit``."""
        slots = self._slots
        buckets = self._buckets
        data = self._data
        remove = self._policy.remove
        removed = 0
        while slots and (slots[0] + 1.0) * _SLOT <= now:
            bucket = buckets[slots[0]]
            while bucket:
                if removed >= limit:
                    self._expired += removed
                    return removed
                # Every key of a passed bucket has expired: its expiry is in that second.
                key = bucket.pop()
                del data[key]
                remove(key)
                removed += 1
            del buckets[heapq.heappop(slots)]
        self._sweep_due = (slots[0] + 1.0) * _SLOT if slots else _INF
        self._expired += removed
        return removed

    def _remove_expired(self, key: Hashable, expires: float | None) -> None:
        del self._data[key]
        self._policy.remove(key)
        if expires is not None:
            self._unbucket(key, expires)
        self._expired += 1

    # -- eviction helpers -----------------------------------------------------------

    def _weigh(self, value: Any) -> int:
        weight = self._weigher(value)
        if weight.__class__ is not int:
            weight = check_int("weigher(value)", weight, minimum=0)
        elif weight < 0:
            raise ValueError(f"weigher(value) must be >= 0, not {weight!r}")
        return weight

    def _refuse(self, key: Hashable) -> None:
        """Refuse a value heavier than max_bytes: the key ends absent, nothing else moves."""
        old = self._data.pop(key, None)
        if old is not None:
            self._policy.remove(key)
            if old[1] is not None:
                self._unbucket(key, old[1])
        self._too_large += 1

    def _drop_evicted(self, evicted: Iterable[Hashable]) -> None:
        """Delete the values of keys the policy evicted (the inserted key if not admitted)."""
        data = self._data
        for key in evicted:
            entry = data.pop(key, None)
            if entry is not None and entry[1] is not None:
                self._unbucket(key, entry[1])
            self._capacity_evictions += 1

    def _forget_all(self) -> None:
        self._data.clear()
        self._policy.clear()
        self._buckets.clear()
        self._slots.clear()
        self._sweep_due = _INF

    # -- policy and bounds ----------------------------------------------------------

    @property
    def name(self) -> str:
        """The level's name in statistics."""
        return self._name

    @property
    def policy(self) -> str:
        """The name of the eviction policy."""
        return self._policy.name

    @property
    def size(self) -> int:
        """Bytes held, as the weigher counts them (0 when ``max_bytes`` is not set)."""
        return self._policy.weight

    @property
    def max_entries(self) -> int | None:
        """The bound on the number of entries (None: none)."""
        return self._max_entries

    @property
    def max_bytes(self) -> int | None:
        """The bound on the bytes held (None: none)."""
        return self._max_bytes

    def set_eviction_policy(self, policy: PolicyName) -> None:
        """Switch to another eviction policy, keeping the entries.

        The entries are replayed into the new policy in the old one's order of
        eviction (coldest first), so the new policy starts by keeping what the
        old one valued most; any it evicts are counted as capacity evictions.

        Raises:
            ValueError: ``policy`` is not a known policy (the message lists them).
            CacheClosed: the cache is closed.
        """
        if self._closed:
            raise CacheClosed(_CLOSED)
        fresh = make_policy(policy, self._max_entries, self._max_bytes)
        self._replay(fresh, self._policy.items())

    def set_capacity(
        self,
        *,
        max_entries: int | EllipsisType | None = ...,
        max_bytes: int | EllipsisType | None = ...,
    ) -> None:
        """Change the bounds (``...``: leave that one as it is); shrinking evicts at once.

        Entries evicted to fit are counted as capacity evictions. Setting
        ``max_bytes`` on a cache that did not weigh its values weighs them all now.

        Raises:
            ValueError: both bounds would be None, or a bound is below 1.
            TypeError: a bound is not an int or None.
            CacheClosed: the cache is closed.
        """
        if self._closed:
            raise CacheClosed(_CLOSED)
        entries = self._max_entries if isinstance(max_entries, EllipsisType) else max_entries
        nbytes = self._max_bytes if isinstance(max_bytes, EllipsisType) else max_bytes
        entries, nbytes = _check_bounds(entries, nbytes)
        policy = self._policy
        if (nbytes is None) != (self._max_bytes is None):
            # Weighing starts or stops: every entry gets its new weight (0 when not weighing),
            # all computed before anything changes, in case the weigher raises.
            data = self._data
            weigh = self._weigh
            order = [
                (key, 0 if nbytes is None else weigh(data[key][0])) for key, _ in policy.items()
            ]
            self._max_entries, self._max_bytes = entries, nbytes
            self._replay(make_policy(policy.name, entries, nbytes), order)
            return
        if nbytes is not None and self._max_bytes is not None and nbytes < self._max_bytes:
            # The policy is never handed a key heavier than its whole bound.
            for key, weight in list(policy.items()):
                if weight > nbytes:
                    policy.remove(key)
                    self._drop_evicted((key,))
        self._max_entries, self._max_bytes = entries, nbytes
        evicted = policy.resize(entries, nbytes)
        if evicted:
            self._drop_evicted(evicted)

    def _replay(self, fresh: EvictionPolicy, order: Iterable[tuple[Hashable, int]]) -> None:
        """Insert ``(key, weight)`` coldest first into ``fresh`` and make it the policy."""
        max_bytes = self._max_bytes
        for key, weight in order:
            if max_bytes is not None and weight > max_bytes:
                self._drop_evicted((key,))
                continue
            evicted = fresh.insert(key, weight)
            if evicted:
                self._drop_evicted(evicted)
        self._policy = fresh
        self._access = fresh.access
        self._note_miss = fresh.miss

    # -- statistics and lifecycle ---------------------------------------------------

    def statistics(self) -> CacheStatistics:
        """A snapshot of the counters (hit latency from one lookup in 16 of ``get``)."""
        p50, p99 = self._latency.percentiles()
        evictions = dict.fromkeys((reason.value for reason in EvictionReason), 0)
        evictions[EvictionReason.CAPACITY.value] = self._capacity_evictions
        evictions[EvictionReason.EXPIRED.value] = self._expired
        evictions[EvictionReason.TOO_LARGE.value] = self._too_large
        return CacheStatistics(
            name=self._name,
            policy=self._policy.name,
            entries=len(self._data),
            bytes=self._policy.weight,
            max_entries=self._max_entries,
            max_bytes=self._max_bytes,
            hits=self._hits,
            misses=self._misses,
            sets=self._sets,
            deletes=self._deletes,
            evictions=evictions,
            hit_latency_p50=p50,
            hit_latency_p99=p99,
        )

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    async def aclose(self) -> None:
        """Drop every entry and close the cache; later calls raise CacheClosed. Idempotent."""
        self._closed = True
        self._forget_all()

    async def __aenter__(self) -> MemoryCache:
        if self._closed:
            raise CacheClosed(_CLOSED)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._data)}"
        bound = f"/{self._max_entries}" if self._max_entries is not None else ""
        weight = (
            f", {self._policy.weight}/{self._max_bytes} bytes"
            if self._max_bytes is not None
            else ""
        )
        return f"<MemoryCache {self._name!r} {self._policy.name} {state}{bound} entries{weight}>"


_CLOSED: Final = "Cannot use a cache that has been closed."


def _expiry(entry: tuple[Any, float | None]) -> float:
    expires = entry[1]
    assert expires is not None, "only entries with an expiry are in the buckets"
    return expires


def _check_bounds(max_entries: object, max_bytes: object) -> tuple[int | None, int | None]:
    entries = None if max_entries is None else check_int("max_entries", max_entries, minimum=1)
    nbytes = None if max_bytes is None else check_int("max_bytes", max_bytes, minimum=1)
    if entries is None and nbytes is None:
        raise ValueError("max_entries or max_bytes must be set (both are None)")
    return entries, nbytes
