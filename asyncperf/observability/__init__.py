"""Observability (layer 6): the garbage collector, process memory and leak checks.

- :class:`GcMonitor` counts collections per generation, pause times (total,
  p50, p99, max) and objects collected, through ``gc.callbacks``.
- :func:`rss_bytes`, :func:`peak_rss_bytes` and :class:`AllocationRate` read the
  resident set size and tracemalloc's traced memory.
- :func:`find_leaks` runs a coroutine round after round and reports what keeps
  growing: traced memory (with the allocation sites that grew), live tasks.
- :class:`LoopLagMonitor` measures how late the loop wakes; :class:`BlockDetector`
  (a watchdog thread) captures the loop thread's stack when a callback blocks.
- :class:`Metrics` reads every registered component's statistics (and the pools'
  timing hooks) into Prometheus text and a JSON snapshot; :class:`DashboardServer`
  serves them, with a live page, at 127.0.0.1.
- :func:`profile` runs CPU (pyinstrument), memory (tracemalloc), task and blocking
  sections around a block of code and writes an HTML and a JSON report.

Each module stands alone: the metrics layer reads their statistics.
"""

from asyncperf.observability._blocking import BlockDetector, BlockEvent, StackFrame
from asyncperf.observability._gc import GcMonitor, GcStatistics
from asyncperf.observability._lag import LoopLagMonitor, LoopLagStatistics
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
from asyncperf.observability._metrics import DEFAULT_BUCKETS, Metrics
from asyncperf.observability._profile import Profile, profile
from asyncperf.observability._server import DashboardServer, MetricsSource

__all__ = [
    "DEFAULT_BUCKETS",
    "AllocationRate",
    "AllocationSample",
    "AllocationSite",
    "BlockDetector",
    "BlockEvent",
    "DashboardServer",
    "GcMonitor",
    "GcStatistics",
    "LeakReport",
    "LeakTrend",
    "LiveTaskGroup",
    "LoopLagMonitor",
    "LoopLagStatistics",
    "Metrics",
    "MetricsSource",
    "Profile",
    "StackFrame",
    "find_leaks",
    "peak_rss_bytes",
    "profile",
    "rss_bytes",
]
