"""The ``gc``, ``locks`` and ``channels`` bench suites: plans, tiny runs, and their checks.

Every run here is tiny and goes through the harness exactly as ``asyncperf
bench`` does (plan, ``run_cases``, ``report``), with the console writing to a
buffer. Nothing asserts a timing: only that every case produced one finite,
positive figure, that the side figures add up, and that the suites' own
correctness checks fire when a guard or a channel misbehaves.
"""

from __future__ import annotations

import asyncio
import gc
import io
import math
import sys

import pytest
from rich.console import Console

from asyncperf.tools.bench import channels, gc_pressure, lock_contention
from asyncperf.tools.bench._harness import Config, Harness, LoopChoice, Result, Suite

SUITES = (gc_pressure.SUITE, lock_contention.SUITE, channels.SUITE)
GC_CONTENDERS = {"queue_workers", "worker_pool", "taskgroup_spawner", "gather_semaphore"}
LOCK_MUTEX = {"floor", "asyncio_lock", "asyncio_semaphore", "limiter", "worker_pool"}
LOCK_WIDE = {"floor", "asyncio_semaphore", "limiter", "worker_pool"}
CHANNELS = {"asyncio_queue", "asyncperf_1", "asyncperf_3"}


def tiny(vs: frozenset[str] | None = None, jobs: int = 300) -> Config:
    """A --quick-like config, smaller still."""
    return Config(
        jobs=jobs,
        repeat=2,
        quick=True,
        loops=("asyncio",),
        memory_items=100,
        queue_depths=(10, 50),
        vs=vs,
    )


def run_suite(suite: Suite, config: Config, loop: LoopChoice) -> tuple[Harness, list[Result]]:
    """Plan, run and report one suite on one loop, as ``_main.run`` does; the timed results."""
    h = Harness(config, Console(file=io.StringIO(), width=200))
    plan = suite.plan(config, loop)
    for text in plan.notes:
        h.note(suite.name, text)
    results = h.run_cases(suite.name, plan.cases, loop)
    assert len(results) == len(plan.cases)
    suite.report(h, loop, results)
    return h, results


def output(h: Harness) -> str:
    file = h.console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


def contenders(suite: Suite, config: Config, case: str | None = None) -> set[str]:
    plan = suite.plan(config, "asyncio")
    return {c.contender for c in plan.cases if case is None or c.case == case}


def check_timed(results: list[Result], repeat: int) -> None:
    """One result per case; every figure finite and positive, from ``repeat`` repetitions."""
    keys = [(r.case, r.contender) for r in results]
    assert len(keys) == len(set(keys))
    for result in results:
        assert result.repeat == repeat, result
        assert len(result.samples) == repeat, result
        assert all(math.isfinite(s) and s > 0 for s in result.samples), result
        assert math.isfinite(result.value), result
        assert result.value > 0, result
        assert result.best <= result.value <= result.worst, result


# -- plans -------------------------------------------------------------------------------


def test_plans_have_the_expected_contenders() -> None:
    config = tiny()
    assert contenders(gc_pressure.SUITE, config) == GC_CONTENDERS | {"aiojobs"}
    mutex, wide = (w.name for w in lock_contention.WORKLOADS)
    assert contenders(lock_contention.SUITE, config, mutex) == LOCK_MUTEX | {"anyio_lock"}
    assert contenders(lock_contention.SUITE, config, wide) == LOCK_WIDE | {"anyio_semaphore"}
    plan = channels.SUITE.plan(config, "asyncio")
    cases = {c.case for c in plan.cases}
    assert cases == {"1P/1C, bound 10", "1P/1C, bound 50", "4P/4C, bound 10"}
    assert {c.contender for c in plan.cases} == CHANNELS | {"anyio_stream"}


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_no_peers_asked_for_skips_them_with_a_note(suite: Suite) -> None:
    plan = suite.plan(tiny(vs=frozenset()), "asyncio")
    keys = {c.contender for c in plan.cases}
    assert not keys & {"aiojobs", "anyio_lock", "anyio_semaphore", "anyio_stream"}
    assert plan.cases
    assert any("is not in --vs" in note for note in plan.notes)


@pytest.mark.parametrize(
    ("suite", "peer", "gone"),
    [
        (gc_pressure.SUITE, "aiojobs", {"aiojobs"}),
        (lock_contention.SUITE, "anyio", {"anyio_lock", "anyio_semaphore"}),
        (channels.SUITE, "anyio", {"anyio_stream"}),
    ],
    ids=["gc", "locks", "channels"],
)
def test_a_missing_peer_is_a_note_not_an_error(
    monkeypatch: pytest.MonkeyPatch, suite: Suite, peer: str, gone: set[str]
) -> None:
    monkeypatch.setitem(sys.modules, peer, None)  # importing it now raises ImportError
    plan = suite.plan(tiny(), "asyncio")
    assert not {c.contender for c in plan.cases} & gone
    assert [note for note in plan.notes if note.startswith(f"{peer} is not installed")]


def test_lock_sizes_follow_jobs() -> None:
    assert lock_contention.entries_per_waiter(1) == 1
    assert lock_contention.entries_per_waiter(100_000) == 100
    plan = lock_contention.SUITE.plan(tiny(jobs=5_000), "asyncio")
    assert {c.items for c in plan.cases} == {lock_contention.WAITERS * 5}


def test_shares_cover_every_item_once() -> None:
    ranges = channels.shares(10, 4)
    assert ranges == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert channels.shares(2, 4) == [(0, 1), (1, 2), (2, 2), (2, 2)]
    assert channels.level_size(100) * channels.LEVELS >= 100


# -- tiny runs through the harness -----------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_gc_run_side_figures_add_up(loop: LoopChoice) -> None:
    config = tiny(jobs=2_000)
    h, results = run_suite(gc_pressure.SUITE, config, loop)
    assert {r.contender for r in results} == GC_CONTENDERS | {"aiojobs"}
    for result in results:
        assert result.repeat == config.repeat
        assert all(math.isfinite(s) and s >= 0 for s in result.samples), result
    side = {(r.contender, r.case.rsplit("/", 1)[1]): r for r in h.results["gc"][len(results) :]}
    metrics = {key for key, _unit in gc_pressure.SIDE_METRICS}
    assert set(side) == {(r.contender, m) for r in results for m in metrics}
    for result in results:
        figure = {m: side[(result.contender, m)].samples for m in metrics}
        # The warm-up run is left out of the side figures, as out of the samples.
        assert all(len(values) == config.repeat for values in figure.values())
        for rep, pause in enumerate(result.samples):
            counts = [figure[f"gen{g}"][rep] for g in range(3)]
            assert all(c >= 0 and c == int(c) for c in counts)
            # The held job handles alone outgrow the generation-0 threshold.
            assert counts[0] >= 1, (result.contender, counts)
            assert (pause > 0) == (sum(counts) > 0)
            assert pause * 1e3 <= figure["wall_ms"][rep]
            assert figure["max_pause_ms"][rep] <= pause * 1e3 + 1e-9
            assert 0 <= figure["gc_share_pct"][rep] <= 100
    text = output(h)
    assert "gc: collector work for 2,000 jobs" in text
    assert "asyncperf WorkerPool" in text


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_locks_run(loop: LoopChoice) -> None:
    config = tiny()
    h, results = run_suite(lock_contention.SUITE, config, loop)
    check_timed(results, config.repeat)
    assert {r.items for r in results} == {lock_contention.WAITERS}
    assert len(results) == len(LOCK_MUTEX) + len(LOCK_WIDE) + 2  # + the two anyio guards
    assert "anyio.Lock" in output(h)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_channels_run(loop: LoopChoice) -> None:
    config = tiny()
    h, results = run_suite(channels.SUITE, config, loop)
    check_timed(results, config.repeat)
    assert len(results) == 3 * (len(CHANNELS) + 1)
    assert "x asyncio.Queue" in output(h)


# -- the suites' own checks ------------------------------------------------------------------


async def test_section_catches_a_guard_that_lets_too_many_in() -> None:
    section = lock_contention.Section(limit=1)
    outcomes = await asyncio.gather(section.run(), section.run(), return_exceptions=True)
    assert outcomes[0] is None
    assert isinstance(outcomes[1], AssertionError)
    assert str(outcomes[1]) == "2 tasks inside a guard of 1"
    assert (section.entered, section.peak, section.inside) == (2, 2, 0)


async def test_section_counts_entries_under_a_lock() -> None:
    section = lock_contention.Section(limit=1)
    lock = asyncio.Lock()

    async def enter() -> None:
        async with lock:
            await section.run()

    await asyncio.gather(*(enter() for _ in range(5)))
    assert (section.entered, section.peak, section.inside) == (5, 1, 0)


async def test_channel_check_catches_a_corrupted_item() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=4)

    async def get_off_by_one() -> int:
        return await queue.get() + 1

    with pytest.raises(AssertionError, match="consumers took 20 items"):
        await channels.pass_items(20, channels.Shape(2, 2, 4), queue.put, get_off_by_one)


async def test_channel_passes_every_item_with_more_producers_than_items() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    elapsed = await channels.pass_items(3, channels.Shape(4, 4, 1), queue.put, queue.get)
    assert elapsed >= 0
    assert queue.empty()


def test_gc_monitor_counts_a_collection_and_ignores_an_unmatched_stop() -> None:
    monitor = gc_pressure.GcMonitor()
    monitor("stop", {"generation": 0, "collected": 5, "uncollectable": 0})
    assert monitor.collections == [0, 0, 0]
    with monitor:
        gc.collect(1)
    assert monitor not in gc.callbacks
    assert monitor.collections == [0, 1, 0]
    assert 0 < monitor.max_pause <= monitor.pause
