"""LoopLagMonitor: how late the event loop wakes a coroutine that asked to sleep.

A coroutine sleeps ``interval`` seconds, again and again, and each time it
wakes it records the *lag*: the time it actually woke minus the time it asked
to wake. On an idle, healthy loop the lag is a fraction of a millisecond; a
callback that holds the loop (a blocking call, a long CPU-bound stretch)
delays every timer behind it, and shows as lag.

The lag is what a request waiting on the loop feels, so it is the number to
watch; *what* blocked the loop is the job of :class:`BlockDetector`
(``_blocking.py``), which catches the culprit's stack from another thread.

The clock is injectable (``now()`` and ``sleep()`` of :class:`asyncperf.abc.Clock`):
the tests drive the monitor with a scripted clock whose sleeps overshoot by a
known amount. A virtual-time loop cannot show lag (its time only moves when the
loop is idle), so on one the monitor records zeros.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Self

from asyncperf._samples import LatencySamples
from asyncperf._validate import check_number
from asyncperf.abc import Clock
from asyncperf.loop import SystemClock

__all__ = ["LagRecorder", "LoopLagMonitor", "LoopLagStatistics"]


@dataclass(frozen=True, slots=True)
class LoopLagStatistics:
    """How late the loop woke the monitor, in seconds.

    Attributes:
        last: the lag of the latest wake-up (0.0 before the first).
        mean: the mean lag over every wake-up since the start (or the last reset).
        p50: the median lag over the last 1,024 wake-ups.
        p99: the 99th percentile lag over the last 1,024 wake-ups.
        max: the largest lag seen.
        samples: wake-ups recorded.
        over_threshold: wake-ups whose lag exceeded ``threshold``.
        threshold: the lag above which a wake-up counts in ``over_threshold``.
        interval: the seconds the monitor asks to sleep between wake-ups.
    """

    last: float
    mean: float
    p50: float
    p99: float
    max: float
    samples: int
    over_threshold: int
    threshold: float
    interval: float

    def as_dict(self) -> dict[str, Any]:
        """The statistics as plain JSON-ready values."""
        return asdict(self)


class LagRecorder:
    """The arithmetic of the monitor: lags in, statistics out (no clock, no loop).

    Args:
        threshold: a lag above it counts in ``over_threshold``.
        interval: reported with the statistics.
    """

    __slots__ = ("_count", "_last", "_max", "_over", "_samples", "_sum", "interval", "threshold")

    def __init__(self, threshold: float, interval: float) -> None:
        self.threshold = threshold
        self.interval = interval
        self._samples = LatencySamples()
        self._count = 0
        self._sum = 0.0
        self._last = 0.0
        self._max = 0.0
        self._over = 0

    def record(self, lag: float) -> None:
        """Add one wake-up's lag; a negative one (a clock that woke early) counts as 0."""
        if lag < 0.0:
            lag = 0.0
        self._samples.add(lag)
        self._count += 1
        self._sum += lag
        self._last = lag
        if lag > self._max:
            self._max = lag
        if lag > self.threshold:
            self._over += 1

    def reset(self) -> None:
        """Forget every sample."""
        self._samples.clear()
        self._count = 0
        self._sum = 0.0
        self._last = 0.0
        self._max = 0.0
        self._over = 0

    def statistics(self) -> LoopLagStatistics:
        """The statistics of the lags recorded so far."""
        p50, p99 = self._samples.percentiles()
        return LoopLagStatistics(
            last=self._last,
            mean=self._sum / self._count if self._count else 0.0,
            p50=p50 or 0.0,
            p99=p99 or 0.0,
            max=self._max,
            samples=self._count,
            over_threshold=self._over,
            threshold=self.threshold,
            interval=self.interval,
        )


class LoopLagMonitor:
    """A coroutine that sleeps ``interval`` again and again and records how late it wakes.

    ::

        async with LoopLagMonitor(interval=0.1) as lag:    # or start() ... await stop()
            await serve()
        lag.statistics().p99

    Statistics are readable while it runs, and add up over start/stop cycles
    until :meth:`reset`.

    Args:
        interval: seconds between wake-ups (> 0). Shorter sees shorter stalls and
            costs one wake-up of the loop per interval.
        threshold: a lag above it counts in ``over_threshold`` (default 0.1 s,
            the block detector's default threshold).
        clock: the source of ``now()`` and ``sleep()`` (default: the system clock).

    Raises:
        TypeError, ValueError: a bad argument (the message names it).
    """

    def __init__(
        self, interval: float = 0.1, *, threshold: float = 0.1, clock: Clock | None = None
    ) -> None:
        interval = check_number("interval", interval)
        threshold = check_number("threshold", threshold, strict=False)
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be a Clock (now, sleep, call_later), not {clock!r}")
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._recorder = LagRecorder(threshold, interval)
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        """Seconds between wake-ups."""
        return self._recorder.interval

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The monitoring task while it runs (a task dump can leave it out)."""
        return self._task

    @property
    def running(self) -> bool:
        """Whether the monitoring coroutine is running."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the monitoring coroutine on the running loop.

        Raises:
            RuntimeError: it is already running, or no loop is running.
        """
        if self.running:
            raise RuntimeError("LoopLagMonitor is already running")
        loop = asyncio.get_running_loop()
        # The first wake-up is due one interval after start(), not after the task
        # first runs: a block right after start() delays that first run, and counts.
        due = self._clock.now() + self._recorder.interval
        self._task = loop.create_task(self._watch(due), name="asyncperf-loop-lag-monitor")

    async def stop(self) -> None:
        """Stop the monitoring coroutine and wait for it to end; a stopped monitor is left as is."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def reset(self) -> None:
        """Forget every sample; a running monitor keeps running."""
        self._recorder.reset()

    def statistics(self) -> LoopLagStatistics:
        """The lag statistics so far (a snapshot; the monitor may keep running)."""
        return self._recorder.statistics()

    async def _watch(self, due: float) -> None:
        clock, interval, record = self._clock, self._recorder.interval, self._recorder.record
        while True:
            await clock.sleep(max(due - clock.now(), 0.0))
            now = clock.now()
            record(now - due)
            due = now + interval

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        stats = self.statistics()
        return (
            f"<LoopLagMonitor {'running' if self.running else 'stopped'} "
            f"interval={self.interval}s samples={stats.samples} max={stats.max:.6f}s>"
        )
