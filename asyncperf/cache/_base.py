"""What every cache level shares: the miss sentinel, entries, statistics, the level protocol.

A *level* is one store (memory, disk, an aiocache backend, Redis later) behind
the small :class:`CacheLevel` protocol; :class:`~asyncperf.cache.TieredCache`
stacks any number of them. Levels report the time an entry has left rather
than an absolute expiry, so levels on different clocks (monotonic in memory,
wall-clock on disk, server time in Redis) compose without converting.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple, Protocol, runtime_checkable

from asyncperf._samples import LatencySamples

__all__ = [
    "MISS",
    "CacheEntry",
    "CacheLevel",
    "CacheStatistics",
    "EvictionReason",
    "LatencySamples",
    "Miss",
]


class Miss(enum.Enum):
    """The type of :data:`MISS`: ``None`` is a value a cache can hold, so a miss is not None."""

    MISS = "MISS"

    def __repr__(self) -> str:
        return "asyncperf.MISS"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return False


#: Returned by ``get(key)`` (with no ``default``) and ``get_nowait(key)`` on a miss.
MISS: Final = Miss.MISS
#: ``Literal[MISS]``, for annotations: ``def get(...) -> V | Missing``.
Missing = Literal[Miss.MISS]


class EvictionReason(enum.StrEnum):
    """Why an entry left a level (the keys of ``CacheStatistics.evictions``)."""

    #: The level was full: the eviction policy chose this entry (or refused to admit it).
    CAPACITY = "capacity"
    #: Its TTL ran out (found on read, by the sweep, or culled on write).
    EXPIRED = "expired"
    #: Larger than the level's whole bound: refused at ``set``, nothing else was evicted.
    TOO_LARGE = "too_large"
    #: Stored bytes failed their checksum or did not deserialize: removed, read as a miss.
    CORRUPT = "corrupt"


class CacheEntry(NamedTuple):
    """A value found in a level, with the seconds it has left (None: no expiry)."""

    value: Any
    ttl: float | None


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    """A snapshot of one level's counters (``level.statistics()``)."""

    #: The level's name (``"memory"``, ``"disk"``, or what the user passed).
    name: str
    #: The eviction policy (``"tinylfu"``, ``"lrs"`` for least recently stored, ...).
    policy: str
    entries: int
    #: Bytes held, as the level's weigher counts them (0 when it does not weigh).
    bytes: int
    max_entries: int | None
    max_bytes: int | None
    hits: int
    misses: int
    sets: int
    deletes: int
    #: Entries removed, by :class:`EvictionReason` value; every reason is present.
    evictions: Mapping[str, int] = field(default_factory=dict)
    #: Seconds for a hit, median and 99th percentile of the sampled hits (None: none yet).
    hit_latency_p50: float | None = None
    hit_latency_p99: float | None = None

    @property
    def hit_ratio(self) -> float:
        """hits / (hits + misses); 0.0 before the first lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


@runtime_checkable
class CacheLevel(Protocol):
    """One store of a :class:`~asyncperf.cache.TieredCache`.

    Keys are hashable; a level may accept fewer kinds (the disk level takes
    str, bytes, int, float, bool, None and tuples of them) and raises
    ``TypeError`` naming ``key`` for the rest. ``ttl`` is in seconds, ``None``
    for no expiry. A level never raises on a miss or on a damaged entry.
    """

    @property
    def name(self) -> str: ...

    async def get_entry(self, key: Hashable) -> CacheEntry | None:
        """The value and the time it has left, or None on a miss (expired counts as a miss)."""
        ...

    async def get_many(self, keys: Iterable[Hashable]) -> dict[Hashable, CacheEntry]:
        """The entries found among ``keys`` (missing keys are left out)."""
        ...

    async def set(self, key: Hashable, value: Any, ttl: float | None = None) -> bool:
        """Store ``value``; False when the level refused it (too large, or not admitted)."""
        ...

    async def set_many(self, items: Iterable[tuple[Hashable, Any, float | None]]) -> int:
        """Store ``(key, value, ttl)`` items in one round trip; how many were stored."""
        ...

    async def delete(self, key: Hashable) -> bool:
        """Remove ``key``; whether it was present."""
        ...

    async def clear(self) -> None:
        """Remove every entry."""
        ...

    def statistics(self) -> CacheStatistics: ...

    async def aclose(self) -> None:
        """Release files, threads and connections; the level is unusable afterwards."""
        ...
