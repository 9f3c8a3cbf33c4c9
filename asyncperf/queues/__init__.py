"""Layer 1: queues and backpressure, usable on their own."""

from asyncperf.queues._codel import CoDel
from asyncperf.queues._priority import (
    DEFAULT_LEVELS,
    DropStrategy,
    Level,
    LevelStatistics,
    PriorityQueue,
    QueueStatistics,
)

__all__ = [
    "DEFAULT_LEVELS",
    "CoDel",
    "DropStrategy",
    "Level",
    "LevelStatistics",
    "PriorityQueue",
    "QueueStatistics",
]
