"""Layer 4: memory pools, for reuse where it measurably saves allocation or set-up.

- ``BufferPool``  size-classed ``bytearray`` buffers handed out as memoryviews
                  (``with bufs.acquire(5000) as view:``), zero-copy socket and file reads
- ``ObjectPool``  objects with costly set-up: ``acquire()``/``release()``, ``borrow()``
- statistics per pool and class, ``optimize()`` from observed demand,
  ``recycle_unused()`` on an injectable clock, and a debug mode that reports
  unreleased objects with the traceback of where they were taken

Both pools are bounded caches of *free* objects, synchronous (nothing waits),
and meant for one event loop (not thread-safe).
"""

from asyncperf.pools._buffers import (
    DEFAULT_SIZE_CLASSES,
    BufferPool,
    PooledBuffer,
    SupportsReadinto,
)
from asyncperf.pools._debug import BufferReleasedError, MemoryPoolClosed, PoolLeak
from asyncperf.pools._objects import Borrowed, ObjectPool, ReleaseError
from asyncperf.pools._stats import (
    BufferPoolStatistics,
    CapacityChange,
    ObjectPoolStatistics,
    SizeClassStatistics,
)

__all__ = [
    "DEFAULT_SIZE_CLASSES",
    "Borrowed",
    "BufferPool",
    "BufferPoolStatistics",
    "BufferReleasedError",
    "CapacityChange",
    "MemoryPoolClosed",
    "ObjectPool",
    "ObjectPoolStatistics",
    "PoolLeak",
    "PooledBuffer",
    "ReleaseError",
    "SizeClassStatistics",
    "SupportsReadinto",
]
