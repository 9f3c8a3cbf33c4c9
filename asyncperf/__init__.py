"""asyncperf: bounded, prioritised, measured concurrency for asyncio services.

General layout (each layer imports only from the layers above it in this list):

- ``loop``      L0  run(), the choice of event loop (uvloop or asyncio), the clock
- ``queues``    L1  PriorityQueue (levels, drop strategies, weighted fair dequeue,
                    deadlines, CoDel, shedding), AdaptiveLimiter, RateLimiter,
                    Throttle, RetryBudget
- ``io``        L1  Batcher (micro-batching), Compressor (zstd, lz4), FileIO (atomic
                    writes, pooled reads, bounded file operations)
- ``workers``   L2  WorkerPool: long-lived workers, a resizable limit, Job handles
- ``cache``     L3  MemoryCache (eviction policies), DiskCache, TieredCache
                    (single-flight loads), @cached
- ``pools``     L4  BufferPool and ObjectPool: memory reuse where it measurably pays,
                    with statistics, optimize(), recycling and a leak-reporting debug mode
- ``supervisor`` L5 Supervisor and ScalingPolicy: pool sizes from measured load,
                    restarts of crashed workers
- ``observability`` L6 GcMonitor, RSS and allocation rate, find_leaks (a leak check
                    for async code)
- ``runtime``   L7  Runtime and @runtime.handler: admission, queue, pool, cache,
                    supervisor behind one decorator
- ``tools``     L8  the command line and its demo
- ``testing``       virtual time for tests (not imported here)
- ``abc``           the interfaces users implement (Clock)

Everything users need is re-exported here; the submodules are the implementation.
"""

from asyncperf._errors import (
    AsyncPerfError,
    BackendError,
    BackendUnavailable,
    BatcherClosed,
    BatchFailed,
    CacheClosed,
    CacheError,
    ClosedError,
    Dropped,
    DropReason,
    InternalError,
    JobTimeout,
    PoolClosed,
    PoolFailed,
    QueueClosed,
    QueueEmpty,
    QueueFull,
    RateLimited,
    Rejected,
    RuntimeNotRunning,
    UnsafeCacheDirectory,
    WouldBlock,
)
from asyncperf.cache import (
    MISS,
    AiocacheLevel,
    CachedFunction,
    CacheEntry,
    CacheLevel,
    CacheStatistics,
    DiskCache,
    EvictionReason,
    JsonSerializer,
    MemoryCache,
    MsgpackSerializer,
    PickleSerializer,
    Serializer,
    TieredCache,
    TieredStatistics,
    cached,
)
from asyncperf.io import (
    Batcher,
    BatcherStatistics,
    CompressionStatistics,
    Compressor,
    FileIO,
    FileIOStatistics,
    train_dictionary,
)
from asyncperf.loop import SystemClock, available_loops, loop_name, new_event_loop, run
from asyncperf.observability import (
    AllocationRate,
    AllocationSample,
    AllocationSite,
    BlockDetector,
    BlockEvent,
    DashboardServer,
    GcMonitor,
    GcStatistics,
    LeakReport,
    LeakTrend,
    LiveTaskGroup,
    LoopLagMonitor,
    LoopLagStatistics,
    Metrics,
    Profile,
    StackFrame,
    find_leaks,
    peak_rss_bytes,
    profile,
    rss_bytes,
)
from asyncperf.pools import (
    DEFAULT_SIZE_CLASSES,
    Borrowed,
    BufferPool,
    BufferPoolStatistics,
    BufferReleasedError,
    CapacityChange,
    MemoryPoolClosed,
    ObjectPool,
    ObjectPoolStatistics,
    PooledBuffer,
    PoolLeak,
    ReleaseError,
    SizeClassStatistics,
    SupportsReadinto,
)
from asyncperf.queues import (
    DEFAULT_LEVELS,
    AdaptiveLimiter,
    Backoff,
    CoDel,
    DropStrategy,
    Level,
    LevelStatistics,
    LimitChange,
    LimiterAcquire,
    LimiterStatistics,
    LimiterToken,
    PriorityQueue,
    QueueStatistics,
    RateLimiter,
    RateLimiterStatistics,
    RetryBudget,
    RetryBudgetStatistics,
    Throttle,
    ThrottleStatistics,
)
from asyncperf.runtime import (
    Handler,
    HandlerSettings,
    HandlerStatistics,
    PoolSettings,
    Runtime,
    RuntimeConfig,
    RuntimeStatistics,
    ShutdownReport,
)
from asyncperf.supervisor import (
    ScalingDecision,
    ScalingEvent,
    ScalingPolicy,
    ScalingReadings,
    SupervisedPoolStatistics,
    Supervisor,
    SupervisorStatistics,
)
from asyncperf.workers import ErrorPolicy, Job, JobState, MapIterator, PoolStatistics, WorkerPool

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LEVELS",
    "DEFAULT_SIZE_CLASSES",
    "MISS",
    "AdaptiveLimiter",
    "AiocacheLevel",
    "AllocationRate",
    "AllocationSample",
    "AllocationSite",
    "AsyncPerfError",
    "BackendError",
    "BackendUnavailable",
    "Backoff",
    "BatchFailed",
    "Batcher",
    "BatcherClosed",
    "BatcherStatistics",
    "BlockDetector",
    "BlockEvent",
    "Borrowed",
    "BufferPool",
    "BufferPoolStatistics",
    "BufferReleasedError",
    "CacheClosed",
    "CacheEntry",
    "CacheError",
    "CacheLevel",
    "CacheStatistics",
    "CachedFunction",
    "CapacityChange",
    "ClosedError",
    "CoDel",
    "CompressionStatistics",
    "Compressor",
    "DashboardServer",
    "DiskCache",
    "DropReason",
    "DropStrategy",
    "Dropped",
    "ErrorPolicy",
    "EvictionReason",
    "FileIO",
    "FileIOStatistics",
    "GcMonitor",
    "GcStatistics",
    "Handler",
    "HandlerSettings",
    "HandlerStatistics",
    "InternalError",
    "Job",
    "JobState",
    "JobTimeout",
    "JsonSerializer",
    "LeakReport",
    "LeakTrend",
    "Level",
    "LevelStatistics",
    "LimitChange",
    "LimiterAcquire",
    "LimiterStatistics",
    "LimiterToken",
    "LiveTaskGroup",
    "LoopLagMonitor",
    "LoopLagStatistics",
    "MapIterator",
    "MemoryCache",
    "MemoryPoolClosed",
    "Metrics",
    "MsgpackSerializer",
    "ObjectPool",
    "ObjectPoolStatistics",
    "PickleSerializer",
    "PoolClosed",
    "PoolFailed",
    "PoolLeak",
    "PoolSettings",
    "PoolStatistics",
    "PooledBuffer",
    "PriorityQueue",
    "Profile",
    "QueueClosed",
    "QueueEmpty",
    "QueueFull",
    "QueueStatistics",
    "RateLimited",
    "RateLimiter",
    "RateLimiterStatistics",
    "Rejected",
    "ReleaseError",
    "RetryBudget",
    "RetryBudgetStatistics",
    "Runtime",
    "RuntimeConfig",
    "RuntimeNotRunning",
    "RuntimeStatistics",
    "ScalingDecision",
    "ScalingEvent",
    "ScalingPolicy",
    "ScalingReadings",
    "Serializer",
    "ShutdownReport",
    "SizeClassStatistics",
    "StackFrame",
    "SupervisedPoolStatistics",
    "Supervisor",
    "SupervisorStatistics",
    "SupportsReadinto",
    "SystemClock",
    "Throttle",
    "ThrottleStatistics",
    "TieredCache",
    "TieredStatistics",
    "UnsafeCacheDirectory",
    "WorkerPool",
    "WouldBlock",
    "__version__",
    "available_loops",
    "cached",
    "find_leaks",
    "loop_name",
    "new_event_loop",
    "peak_rss_bytes",
    "profile",
    "rss_bytes",
    "run",
    "train_dictionary",
]


def _fix_module_names() -> None:
    """Show public objects as ``asyncperf.X`` in reprs and tracebacks."""
    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) or callable(obj):
            try:
                obj.__module__ = __name__
            except (AttributeError, TypeError):
                pass


_fix_module_names()
del _fix_module_names
