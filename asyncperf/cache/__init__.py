"""Layer 3: caches. ``MemoryCache`` (L1, eviction policies), ``DiskCache`` (L2, SQLite and
files), ``TieredCache`` (levels, single-flight loads), and the ``@cached`` decorator."""

from asyncperf.cache._base import (
    MISS,
    CacheEntry,
    CacheLevel,
    CacheStatistics,
    EvictionReason,
    Miss,
)

__all__ = [
    "MISS",
    "CacheEntry",
    "CacheLevel",
    "CacheStatistics",
    "EvictionReason",
    "Miss",
]
