"""Layer 6: GcMonitor (gc.callbacks), RSS and the tracemalloc allocation rate."""

from __future__ import annotations

import gc
import json
import sys
import tracemalloc
from collections.abc import Iterator

import pytest

from asyncperf.observability import (
    AllocationRate,
    GcMonitor,
    GcStatistics,
    peak_rss_bytes,
    rss_bytes,
)


@pytest.fixture
def gc_paused() -> Iterator[None]:
    """No automatic collection during the test: only the ones it forces are counted."""
    was_enabled = gc.isenabled()
    gc.collect()  # start from a clean heap: later collections find only what the test made
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Node:
    """One half of a reference cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


def plant_cycles(count: int) -> None:
    """``count`` pairs of objects that refer to each other, unreachable once this returns."""
    for _ in range(count):
        first, second = Node(), Node()
        first.other, second.other = second, first


class Ticks:
    """A timer that advances one second at every read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def hooks_of(monitor: GcMonitor) -> int:
    """How many times ``monitor``'s hook is in gc.callbacks."""
    return sum(1 for hook in gc.callbacks if getattr(hook, "__self__", None) is monitor)


# -- GcMonitor -----------------------------------------------------------------------


@pytest.mark.usefixtures("gc_paused")
@pytest.mark.parametrize("generation", [0, 1, 2])
def test_a_forced_collection_is_counted_in_its_generation(generation: int) -> None:
    with GcMonitor() as monitor:
        gc.collect(generation)
        stats = monitor.statistics()
    expected = [0, 0, 0]
    expected[generation] = 1
    assert stats.collections == tuple(expected)
    assert stats.total_collections == 1


@pytest.mark.usefixtures("gc_paused")
def test_every_forced_collection_is_counted_exactly() -> None:
    with GcMonitor() as monitor:
        for generation in (0, 0, 1, 2, 0, 2, 2):
            gc.collect(generation)
    assert monitor.statistics().collections == (3, 1, 3)


@pytest.mark.usefixtures("gc_paused")
def test_planted_cycles_are_counted_as_collected() -> None:
    pairs = 200
    with GcMonitor() as monitor:
        plant_cycles(pairs)
        found = gc.collect()
    stats = monitor.statistics()
    assert stats.collected >= 2 * pairs
    # gc.collect() returns every unreachable object: those freed and those it could not free.
    assert stats.collected + stats.uncollectable == found
    assert stats.uncollectable == 0


@pytest.mark.usefixtures("gc_paused")
def test_pause_statistics_are_consistent() -> None:
    with GcMonitor() as monitor:
        for index in range(30):
            plant_cycles(20)
            gc.collect(index % 3)
    stats = monitor.statistics()
    assert stats.total_collections == 30
    assert 0 < stats.pause_p50 <= stats.pause_p99 <= stats.pause_max <= stats.pause_total
    assert stats.pause_total <= stats.elapsed
    assert 0 < stats.pause_fraction <= 1


@pytest.mark.usefixtures("gc_paused")
def test_pauses_are_timed_with_the_injected_timer() -> None:
    """Each collection reads the timer once at its start and once at its end: one tick."""
    ticks = Ticks()
    monitor = GcMonitor(timer=ticks)
    monitor.start()  # a read
    for generation in (0, 1, 2, 2):
        gc.collect(generation)  # two reads each
    monitor.stop()  # a read
    stats = monitor.statistics()
    assert stats.pause_total == 4.0
    assert stats.pause_p50 == stats.pause_p99 == stats.pause_max == 1.0
    assert stats.elapsed == ticks.now - 1.0  # from the read in start() to the one in stop()
    assert stats.elapsed == 9.0


def test_statistics_before_any_collection() -> None:
    monitor = GcMonitor()
    stats = monitor.statistics()
    assert stats == GcStatistics((0, 0, 0), 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert stats.pause_fraction == 0.0
    assert json.loads(json.dumps(stats.as_dict()))["collections"] == [0, 0, 0]


def test_the_hook_is_installed_while_running_and_removed_after() -> None:
    monitor = GcMonitor()
    assert hooks_of(monitor) == 0
    monitor.start()
    assert hooks_of(monitor) == 1
    assert repr(monitor).startswith("<GcMonitor running")
    monitor.stop()
    assert not monitor.running
    assert hooks_of(monitor) == 0
    monitor.stop()  # stopping a stopped monitor does nothing
    assert hooks_of(monitor) == 0


def test_the_hook_is_removed_when_the_block_raises() -> None:
    monitor = GcMonitor()
    with pytest.raises(ZeroDivisionError), monitor:
        assert hooks_of(monitor) == 1
        _ = 1 / 0
    assert hooks_of(monitor) == 0
    assert not monitor.running


async def test_async_with_removes_the_hook_on_error() -> None:
    monitor = GcMonitor()
    with pytest.raises(KeyError):
        async with monitor:
            assert hooks_of(monitor) == 1
            raise KeyError("boom")
    assert hooks_of(monitor) == 0


def test_starting_twice_is_refused() -> None:
    with GcMonitor() as monitor, pytest.raises(RuntimeError, match="already running"):
        monitor.start()
    assert hooks_of(monitor) == 0


@pytest.mark.usefixtures("gc_paused")
def test_two_monitors_at_once_each_count() -> None:
    outer = GcMonitor()
    inner = GcMonitor()
    with outer:
        gc.collect(0)
        with inner:
            gc.collect(1)
            gc.collect(2)
        gc.collect(0)  # inner has stopped: only outer sees it
    assert outer.statistics().collections == (2, 1, 1)
    assert inner.statistics().collections == (0, 1, 1)
    assert hooks_of(outer) == hooks_of(inner) == 0


@pytest.mark.usefixtures("gc_paused")
def test_statistics_add_up_over_restarts_until_reset() -> None:
    monitor = GcMonitor()
    with monitor:
        gc.collect(0)
    gc.collect(0)  # stopped: not counted
    with monitor:
        gc.collect(0)
        assert monitor.statistics().collections == (2, 0, 0)  # readable while running
        monitor.reset()
        gc.collect(2)
    stats = monitor.statistics()
    assert stats.collections == (0, 0, 1)
    assert "stopped" in repr(monitor)


def test_bad_timer_is_refused() -> None:
    with pytest.raises(TypeError, match="timer must be callable"):
        GcMonitor(timer=1.0)  # type: ignore[arg-type]


# -- memory ----------------------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/statm is Linux")
def test_rss_grows_when_memory_is_touched() -> None:
    before = rss_bytes()
    assert before is not None
    assert before > 0
    block = b"x" * (32 << 20)  # written, so its pages are resident
    after = rss_bytes()
    assert after is not None
    assert after - before >= 16 << 20
    peak = peak_rss_bytes()
    assert peak is not None
    assert peak >= after
    del block


@pytest.fixture
def untraced() -> Iterator[None]:
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc was already tracing (python -X tracemalloc)")
    try:
        yield
    finally:
        tracemalloc.stop()


class StepClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.usefixtures("untraced")
def test_allocation_rate_says_so_when_tracemalloc_is_off() -> None:
    sample = AllocationRate().sample()
    assert not sample.tracing
    assert sample.traced_bytes is None
    assert sample.growth_per_second is None
    assert "tracemalloc is not tracing" in sample.note


@pytest.mark.usefixtures("untraced")
def test_allocation_rate_between_samples() -> None:
    clock = StepClock()
    rate = AllocationRate(clock=clock)
    tracemalloc.start()
    first = rate.sample()
    assert first.tracing
    assert first.traced_bytes is not None
    assert first.growth_per_second is None
    assert "two" in first.note
    kept = bytearray(1 << 20)
    clock.now += 2.0
    second = rate.sample()
    assert second.growth_bytes is not None
    assert second.growth_bytes >= 1 << 20
    assert second.interval == 2.0
    assert second.growth_per_second == second.growth_bytes / 2.0
    assert second.allocated_per_second is None  # track_peak is off
    assert json.loads(json.dumps(second.as_dict()))["interval"] == 2.0
    del kept
    tracemalloc.stop()
    assert not rate.sample().tracing


@pytest.mark.usefixtures("untraced")
def test_allocation_rate_sees_memory_allocated_and_freed_with_track_peak() -> None:
    clock = StepClock()
    rate = AllocationRate(clock=clock, track_peak=True)
    tracemalloc.start()
    rate.sample()
    transient = bytearray(4 << 20)
    del transient
    clock.now += 1.0
    sample = rate.sample()
    assert sample.growth_bytes is not None
    assert sample.growth_bytes < 1 << 20
    assert sample.allocated_per_second is not None
    assert sample.allocated_per_second >= 4 << 20  # but seen in the interval's peak
