"""Layer 3: caches.

- ``MemoryCache``  L1: in process, eviction policies (W-TinyLFU by default), TTL, byte bounds
- ``DiskCache``    L2: SQLite (WAL) index and value files; survives restarts, shared by processes
- ``TieredCache``  any number of levels: read-through with promotion, write-through or
                   write-behind, single-flight ``get_or_load``, stale-while-revalidate
- ``cached``       the decorator for async functions and methods
"""

from asyncperf.cache._base import (
    MISS,
    CacheEntry,
    CacheLevel,
    CacheStatistics,
    EvictionReason,
    Miss,
    Missing,
)
from asyncperf.cache._decorator import CachedFunction, cached
from asyncperf.cache._disk import DiskCache
from asyncperf.cache._memory import MemoryCache
from asyncperf.cache._policies import POLICIES, EvictionPolicy, PolicyName
from asyncperf.cache._serializers import (
    JsonSerializer,
    MsgpackSerializer,
    PickleSerializer,
    Serializer,
)
from asyncperf.cache._tiered import AiocacheLevel, TieredCache, TieredStatistics

__all__ = [
    "MISS",
    "POLICIES",
    "AiocacheLevel",
    "CacheEntry",
    "CacheLevel",
    "CacheStatistics",
    "CachedFunction",
    "DiskCache",
    "EvictionPolicy",
    "EvictionReason",
    "JsonSerializer",
    "MemoryCache",
    "Miss",
    "Missing",
    "MsgpackSerializer",
    "PickleSerializer",
    "PolicyName",
    "Serializer",
    "TieredCache",
    "TieredStatistics",
    "cached",
]
