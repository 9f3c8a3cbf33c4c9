"""Layer 1: queues and backpressure, usable on their own.

- ``PriorityQueue``: levels, drop strategies, weighted fair dequeue, deadlines,
  CoDel, ``adjust(load)`` and priority shedding under a total bound.
- ``AdaptiveLimiter``: a concurrency limit moved by measured latency
  (Vegas, Gradient2, AIMD), on its own or driving a ``WorkerPool``.
- ``RateLimiter``: GCRA, with burst, weighted costs and exact waits.
- ``Throttle`` and ``RetryBudget``: for calls out to an upstream that may refuse.
"""

from asyncperf.queues._codel import CoDel
from asyncperf.queues._limiter import (
    AdaptiveLimiter,
    LimitChange,
    LimiterAcquire,
    LimiterStatistics,
    LimiterToken,
)
from asyncperf.queues._priority import (
    DEFAULT_LEVELS,
    DropStrategy,
    Level,
    LevelStatistics,
    PriorityQueue,
    QueueStatistics,
)
from asyncperf.queues._rate import RateLimiter, RateLimiterStatistics
from asyncperf.queues._throttle import (
    Backoff,
    RetryBudget,
    RetryBudgetStatistics,
    Throttle,
    ThrottleStatistics,
)

__all__ = [
    "DEFAULT_LEVELS",
    "AdaptiveLimiter",
    "Backoff",
    "CoDel",
    "DropStrategy",
    "Level",
    "LevelStatistics",
    "LimitChange",
    "LimiterAcquire",
    "LimiterStatistics",
    "LimiterToken",
    "PriorityQueue",
    "QueueStatistics",
    "RateLimiter",
    "RateLimiterStatistics",
    "RetryBudget",
    "RetryBudgetStatistics",
    "Throttle",
    "ThrottleStatistics",
]
