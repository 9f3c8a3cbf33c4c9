"""Layer 6: LoopLagMonitor (the arithmetic on a scripted clock) and BlockDetector (a real block)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from asyncperf.abc import Cancellable
from asyncperf.observability._blocking import BlockDetector
from asyncperf.observability._lag import LagRecorder, LoopLagMonitor

THIS_FILE = str(Path(__file__).resolve())


def line_of(marker: str) -> int:
    """The line number in this file of the line that ends with ``# marker``."""
    for number, line in enumerate(Path(THIS_FILE).read_text().splitlines(), start=1):
        if line.rstrip().endswith(f"# {marker}"):
            return number
    raise AssertionError(f"marker {marker!r} not found")


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (on the loop) for ``condition`` to hold: for an event, never to let things settle."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# -- the arithmetic -------------------------------------------------------------------


def test_recorder_statistics_add_up() -> None:
    recorder = LagRecorder(threshold=0.1, interval=0.05)
    empty = recorder.statistics()
    assert (empty.samples, empty.last, empty.mean, empty.p99, empty.max) == (0, 0.0, 0.0, 0.0, 0.0)

    lags = [0.001, 0.002, 0.3, 0.004, 0.15, 0.003]
    for lag in lags:
        recorder.record(lag)
    stats = recorder.statistics()
    assert stats.samples == len(lags)
    assert stats.last == 0.003
    assert stats.mean == pytest.approx(sum(lags) / len(lags))
    assert stats.max == 0.3
    assert stats.over_threshold == 2  # 0.3 and 0.15
    # Nearest rank over the sorted lags: rank round(0.99 * 5) = 5, round(0.5 * 5) = 2.
    assert stats.p99 == 0.3
    assert stats.p50 == sorted(lags)[2]
    assert (stats.threshold, stats.interval) == (0.1, 0.05)
    assert stats.as_dict()["samples"] == len(lags)

    recorder.record(-0.5)  # a clock that woke early: no negative lag
    assert recorder.statistics().last == 0.0
    assert recorder.statistics().mean == pytest.approx(sum(lags) / (len(lags) + 1))

    recorder.reset()
    assert recorder.statistics().samples == 0
    assert recorder.statistics().max == 0.0


def test_p99_covers_the_last_1024_samples_and_the_mean_all_of_them() -> None:
    recorder = LagRecorder(threshold=1.0, interval=0.1)
    for _ in range(2000):
        recorder.record(0.5)
    for _ in range(1024):
        recorder.record(0.001)
    stats = recorder.statistics()
    assert stats.samples == 3024
    assert stats.p99 == 0.001  # the 0.5 s lags fell out of the ring
    assert stats.max == 0.5  # but not out of the max or the mean
    assert stats.mean == pytest.approx((2000 * 0.5 + 1024 * 0.001) / 3024)


class ScriptedClock:
    """A clock whose every sleep overshoots by the next lag of a script.

    When the script runs out, the sleeper parks until cancelled, and ``done`` is set.
    """

    def __init__(self, lags: Iterable[float]) -> None:
        self.time = 1000.0
        self.lags = list(lags)
        self.slept: list[float] = []
        self.done = asyncio.Event()

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        if not self.lags:
            self.done.set()
            await asyncio.get_running_loop().create_future()  # until cancelled
        self.slept.append(seconds)
        self.time += seconds + self.lags.pop(0)
        await asyncio.sleep(0)

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Cancellable:
        return asyncio.get_running_loop().call_later(delay, callback, *args)


async def test_monitor_records_how_late_each_sleep_wakes() -> None:
    lags = [0.0, 0.002, 0.25, 0.001, 0.0]
    clock = ScriptedClock(lags)
    async with LoopLagMonitor(interval=0.1, threshold=0.05, clock=clock) as monitor:
        assert monitor.task is not None
        await clock.done.wait()
        stats = monitor.statistics()
    assert not monitor.running
    assert stats.samples == len(lags)
    assert stats.last == 0.0
    assert stats.max == 0.25
    assert stats.mean == pytest.approx(sum(lags) / len(lags))
    assert stats.over_threshold == 1
    # Every sleep asks for exactly one interval from the time it last woke.
    assert clock.slept == [pytest.approx(0.1)] * len(lags)


async def test_monitor_start_stop_and_restart() -> None:
    clock = ScriptedClock([0.01])
    monitor = LoopLagMonitor(interval=0.1, clock=clock)
    await monitor.stop()  # not running: nothing to do
    monitor.start()
    with pytest.raises(RuntimeError, match="already running"):
        monitor.start()
    await clock.done.wait()
    await monitor.stop()
    assert monitor.task is None
    clock.lags = [0.03]
    clock.done.clear()
    monitor.start()  # statistics add up over start/stop cycles
    await clock.done.wait()
    await monitor.stop()
    assert monitor.statistics().samples == 2
    assert monitor.statistics().max == pytest.approx(0.03)
    assert "stopped" in repr(monitor)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"interval": 0}, ValueError, "interval must be > 0"),
        ({"interval": "1"}, TypeError, "interval must be a number"),
        ({"interval": float("inf")}, ValueError, "interval must be finite"),
        ({"threshold": -1}, ValueError, "threshold must be >= 0"),
        ({"clock": "now"}, TypeError, "clock must be a Clock"),
    ],
)
def test_monitor_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        LoopLagMonitor(**kwargs)


# -- the block detector: one real 200 ms block -----------------------------------------


def _detector_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "asyncperf-block-detector"]


async def test_a_200ms_blocking_call_is_caught_with_its_stack() -> None:
    detector = BlockDetector(threshold=0.1)
    async with detector, LoopLagMonitor(interval=0.01, threshold=0.1) as lag:
        assert len(_detector_threads()) == 1
        beats = detector.heartbeats
        await until(lambda: detector.heartbeats > beats)  # the heartbeat runs
        time.sleep(0.2)  # noqa: ASYNC251  # the planted block
        after_block = detector.heartbeats
        await until(lambda: detector.heartbeats > after_block)  # the loop came back
        await until(lambda: lag.statistics().samples > 0)
    assert not _detector_threads()  # joined

    blocks = detector.blocks()
    assert len(blocks) == 1, blocks
    assert detector.total_blocks == 1
    block = blocks[0]
    assert block.ended
    assert block.duration >= 0.2  # the beat before the block came before the sleep began
    assert block.started <= block.detected
    assert block.detected - block.started > detector.threshold
    where = block.where
    assert where is not None
    assert where.filename == THIS_FILE
    assert where.function == "test_a_200ms_blocking_call_is_caught_with_its_stack"
    assert where.lineno == line_of("the planted block")
    assert "time.sleep(0.2)" in where.line
    assert block.task  # the test's own task was running
    data = block.as_dict()
    assert data["stack"][-1]["lineno"] == where.lineno
    assert [frame["function"] for frame in data["stack"]] == [f.function for f in block.stack]

    # The lag monitor felt the same block.
    stats = lag.statistics()
    assert stats.max >= 0.1
    assert stats.over_threshold >= 1


async def test_an_idle_loop_has_no_blocks() -> None:
    async with BlockDetector(threshold=0.1, interval=0.01) as detector:
        await until(lambda: detector.heartbeats >= 3)
    assert detector.blocks() == []
    assert detector.total_blocks == 0
    assert not detector.running
    assert not _detector_threads()


async def test_detector_start_twice_and_stop_twice() -> None:
    detector = BlockDetector(threshold=0.1)
    detector.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            detector.start()
    finally:
        detector.stop()
    detector.stop()  # not running: nothing to do
    assert not _detector_threads()


def test_detector_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        BlockDetector().start()
    assert not _detector_threads()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"threshold": 0}, ValueError, "threshold must be > 0"),
        ({"threshold": "0.1"}, TypeError, "threshold must be a number"),
        ({"threshold": 0.1, "interval": 0.1}, ValueError, "interval must be < threshold"),
        ({"interval": -1}, ValueError, "interval must be > 0"),
        ({"max_blocks": 0}, ValueError, "max_blocks must be >= 1"),
        ({"stack_limit": 1.5}, TypeError, "stack_limit must be an int"),
    ],
)
def test_detector_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        BlockDetector(**kwargs)
