"""GcMonitor: collections per generation, pause times and objects collected, via ``gc.callbacks``.

CPython calls every function in :data:`gc.callbacks` twice per collection: with
``"start"`` before it and with ``"stop"`` after it, the latter with the
generation collected and the objects freed (``collected``) or found
unreclaimable (``uncollectable``). The monitor's hook reads the timer at each
phase and does a few additions: it runs inside every collection, so it must
stay cheap and must never raise.

Each monitor installs its own hook, so several can run at once (one in the
runtime, one in a test) without seeing each other. A collection that began
before :meth:`GcMonitor.start` is not counted.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

from asyncperf._samples import LatencySamples

__all__ = ["GcMonitor", "GcStatistics"]

_GENERATIONS = 3


@dataclass(frozen=True, slots=True)
class GcStatistics:
    """What the garbage collector did while a :class:`GcMonitor` was watching.

    Attributes:
        collections: collections of generation 0, 1 and 2 (a collection of
            generation 2 also collects 0 and 1, and counts once, as 2).
        collected: objects the collections freed (unreachable and reclaimed).
        uncollectable: objects found unreachable but not freed (``gc.garbage``).
        pause_total: seconds spent inside collections, all of them.
        pause_p50: the median pause, over the last 1,024 collections (0.0 before the first).
        pause_p99: the 99th percentile pause, over the same collections (0.0 before the first).
        pause_max: the longest pause seen (0.0 before the first).
        elapsed: seconds the monitor has been running (all its start/stop intervals).
    """

    collections: tuple[int, int, int]
    collected: int
    uncollectable: int
    pause_total: float
    pause_p50: float
    pause_p99: float
    pause_max: float
    elapsed: float

    @property
    def total_collections(self) -> int:
        """Collections of every generation."""
        return sum(self.collections)

    @property
    def pause_fraction(self) -> float:
        """The share of the monitored time spent in collections (0.0 before any time passed)."""
        return self.pause_total / self.elapsed if self.elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The statistics as plain JSON-ready values (collections as a list)."""
        data = asdict(self)
        data["collections"] = list(self.collections)
        return data


class GcMonitor:
    """Counts garbage collections and times their pauses while started.

    ::

        with GcMonitor() as gc_monitor:         # or start() ... stop()
            await serve()
        stats = gc_monitor.statistics()        # also readable while running
        stats.collections, stats.pause_p99, stats.collected

    Statistics add up over every start/stop interval until :meth:`reset`. The
    hook is removed by :meth:`stop` and by leaving the ``with`` block, also when
    the block raises.

    Args:
        timer: seconds as a float, read at the start and the end of each
            collection and for the elapsed time (default :func:`time.perf_counter`).
    """

    def __init__(self, *, timer: Callable[[], float] = time.perf_counter) -> None:
        if not callable(timer):
            raise TypeError(f"timer must be callable, not {type(timer).__name__}")
        self._timer = timer
        # The bound method is made once: removing it later needs the very same object.
        self._hook: Callable[[str, dict[str, int]], None] = self._on_gc
        self._running = False
        self._collection_started: float | None = None
        self._collections = [0] * _GENERATIONS
        self._collected = 0
        self._uncollectable = 0
        self._pause_total = 0.0
        self._pause_max = 0.0
        self._pauses = LatencySamples()
        self._elapsed_before = 0.0  # monitored seconds of earlier start/stop intervals
        self._started_at = 0.0

    @property
    def running(self) -> bool:
        """Whether the hook is installed."""
        return self._running

    def start(self) -> None:
        """Install the hook in :data:`gc.callbacks`.

        Raises:
            RuntimeError: the monitor is already running.
        """
        if self._running:
            raise RuntimeError("GcMonitor is already running")
        self._collection_started = None
        self._started_at = self._timer()
        gc.callbacks.append(self._hook)
        self._running = True

    def stop(self) -> None:
        """Remove the hook; a monitor that is not running is left as it is."""
        if not self._running:
            return
        self._running = False
        # By identity: another monitor's hook is a different object.
        for index, hook in enumerate(gc.callbacks):
            if hook is self._hook:
                del gc.callbacks[index]
                break
        self._elapsed_before += self._timer() - self._started_at
        self._collection_started = None

    def reset(self) -> None:
        """Forget every count and pause; a running monitor keeps running from now."""
        self._collections = [0] * _GENERATIONS
        self._collected = 0
        self._uncollectable = 0
        self._pause_total = 0.0
        self._pause_max = 0.0
        self._pauses.clear()
        self._elapsed_before = 0.0
        self._started_at = self._timer()

    def statistics(self) -> GcStatistics:
        """The counts and pauses so far (a snapshot; the monitor may keep running)."""
        p50, p99 = self._pauses.percentiles()
        elapsed = self._elapsed_before
        if self._running:
            elapsed += self._timer() - self._started_at
        counts = self._collections
        return GcStatistics(
            collections=(counts[0], counts[1], counts[2]),
            collected=self._collected,
            uncollectable=self._uncollectable,
            pause_total=self._pause_total,
            pause_p50=p50 or 0.0,
            pause_p99=p99 or 0.0,
            pause_max=self._pause_max,
            elapsed=elapsed,
        )

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        # Runs inside every collection: a timer read and a few additions, nothing
        # that could raise (an exception here would be printed as unraisable).
        if phase == "start":
            self._collection_started = self._timer()
            return
        started = self._collection_started
        if started is None:  # it began before start(): its pause is unknown
            return
        self._collection_started = None
        pause = self._timer() - started
        generation = info.get("generation", _GENERATIONS - 1)
        if 0 <= generation < _GENERATIONS:
            self._collections[generation] += 1
        self._collected += info.get("collected", 0)
        self._uncollectable += info.get("uncollectable", 0)
        self._pause_total += pause
        if pause > self._pause_max:
            self._pause_max = pause
        self._pauses.add(pause)

    def __enter__(self) -> GcMonitor:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> GcMonitor:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        stats = self.statistics()
        return (
            f"<GcMonitor {'running' if self._running else 'stopped'} "
            f"collections={stats.collections} pause_total={stats.pause_total:.6f}s>"
        )
