"""Observability (layer 6): the garbage collector, process memory and leak checks.

- :class:`GcMonitor` counts collections per generation, pause times (total,
  p50, p99, max) and objects collected, through ``gc.callbacks``.
- :func:`rss_bytes`, :func:`peak_rss_bytes` and :class:`AllocationRate` read the
  resident set size and tracemalloc's traced memory.
- :func:`find_leaks` runs a coroutine round after round and reports what keeps
  growing: traced memory (with the allocation sites that grew), live tasks.

Each module stands alone: the metrics layer reads their statistics.
"""

from asyncperf.observability._gc import GcMonitor, GcStatistics
from asyncperf.observability._leaks import (
    AllocationSite,
    LeakReport,
    LeakTrend,
    LiveTaskGroup,
    find_leaks,
)
from asyncperf.observability._memory import (
    AllocationRate,
    AllocationSample,
    peak_rss_bytes,
    rss_bytes,
)

__all__ = [
    "AllocationRate",
    "AllocationSample",
    "AllocationSite",
    "GcMonitor",
    "GcStatistics",
    "LeakReport",
    "LeakTrend",
    "LiveTaskGroup",
    "find_leaks",
    "peak_rss_bytes",
    "rss_bytes",
]
