"""asyncperf: bounded, prioritised, measured concurrency for asyncio services.

General layout (each layer imports only from the layers above it in this list):

- ``loop``      L0  run(), the choice of event loop (uvloop or asyncio), the clock
- ``queues``    L1  PriorityQueue (levels, drop strategies, weighted fair dequeue,
                    deadlines, CoDel, shedding), AdaptiveLimiter, RateLimiter,
                    Throttle, RetryBudget
- ``workers``   L2  WorkerPool: long-lived workers, a resizable limit, Job handles
- ``tools``     L8  the command line and its demo
- ``testing``       virtual time for tests (not imported here)
- ``abc``           the interfaces users implement (Clock)

Everything users need is re-exported here; the submodules are the implementation.
"""

from asyncperf._errors import (
    AsyncPerfError,
    ClosedError,
    Dropped,
    DropReason,
    InternalError,
    JobTimeout,
    PoolClosed,
    QueueClosed,
    QueueEmpty,
    QueueFull,
    Rejected,
    WouldBlock,
)
from asyncperf.loop import SystemClock, available_loops, loop_name, new_event_loop, run
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
from asyncperf.workers import ErrorPolicy, Job, JobState, MapIterator, PoolStatistics, WorkerPool

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LEVELS",
    "AdaptiveLimiter",
    "AsyncPerfError",
    "Backoff",
    "ClosedError",
    "CoDel",
    "DropReason",
    "DropStrategy",
    "Dropped",
    "ErrorPolicy",
    "InternalError",
    "Job",
    "JobState",
    "JobTimeout",
    "Level",
    "LevelStatistics",
    "LimitChange",
    "LimiterAcquire",
    "LimiterStatistics",
    "LimiterToken",
    "MapIterator",
    "PoolClosed",
    "PoolStatistics",
    "PriorityQueue",
    "QueueClosed",
    "QueueEmpty",
    "QueueFull",
    "QueueStatistics",
    "RateLimiter",
    "RateLimiterStatistics",
    "Rejected",
    "RetryBudget",
    "RetryBudgetStatistics",
    "SystemClock",
    "Throttle",
    "ThrottleStatistics",
    "WorkerPool",
    "WouldBlock",
    "__version__",
    "available_loops",
    "loop_name",
    "new_event_loop",
    "run",
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
