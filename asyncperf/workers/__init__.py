"""Layer 2: the worker pool: long-lived workers taking jobs from a PriorityQueue."""

from asyncperf.workers._pool import (
    ErrorPolicy,
    Job,
    JobState,
    MapIterator,
    PoolStatistics,
    WorkerPool,
)

__all__ = ["ErrorPolicy", "Job", "JobState", "MapIterator", "PoolStatistics", "WorkerPool"]
