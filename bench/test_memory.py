"""Memory: memory usage of queued work, GC pressure, memory leaks.

These benchmarks are about memory, not time: their figures are in
``extra_info`` (``--benchmark-json``). Their times are still recorded, but
``tracemalloc`` is on while the memory usage and leak rounds run, which makes
every allocation several times slower: compare those times only with each
other.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tracemalloc
import weakref
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import asyncperf as ap
from bench.conftest import Bench

# -- memory usage ---------------------------------------------------------------------

QUEUED = 10_000
QUICK_QUEUED = 1_000


@contextlib.contextmanager
def traced() -> Iterator[Callable[[], tuple[int, int]]]:
    """Trace allocations in the block; yields ``grown()``: (held, peak) bytes since it began.

    Starts tracemalloc unless it is already tracing (``python -X tracemalloc``),
    and then leaves it on.
    """
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]

    def grown() -> tuple[int, int]:
        held, peak = tracemalloc.get_traced_memory()
        return held - base, peak - base

    try:
        yield grown
    finally:
        if started:
            tracemalloc.stop()


@dataclass(frozen=True, slots=True)
class MemoryOutcome:
    """Traced bytes while every job waited: ``held`` right then, ``peak`` the most on the way."""

    completed: int
    held: int
    peak: int


async def queued_pool_jobs(jobs: int) -> MemoryOutcome:
    """``jobs`` jobs queued in a pool whose one worker is busy: each is a handle in the queue.

    The worker task (and the job blocking it) exist before the measurement
    starts; what is measured is the jobs, their arguments, their queue slots
    and the list of handles.
    """
    gate = asyncio.Event()

    async def work(i: int) -> int:
        await gate.wait()
        return i

    async with ap.WorkerPool(max_workers=1, max_pending=jobs + 1) as pool:
        blocker = pool.submit_nowait(gate.wait)
        with traced() as grown:
            handles = [pool.submit_nowait(work, i) for i in range(jobs)]
            held, peak = grown()
        gate.set()
        await blocker
        completed = 0
        for i, handle in enumerate(handles):
            completed += await handle == i
    return MemoryOutcome(completed, held, peak)


async def pending_tasks(jobs: int) -> MemoryOutcome:
    """The stock pattern: a task per job, each started and waiting (the task, its coroutine
    and frame, the waiter future), and the list of tasks."""
    gate = asyncio.Event()

    async def work(i: int) -> int:
        await gate.wait()
        return i

    with traced() as grown:
        tasks = [asyncio.create_task(work(i)) for i in range(jobs)]
        # One yield: every task takes its first step (they were scheduled before
        # this one's wake-up) and parks on the gate, as a pending task does.
        await asyncio.sleep(0)
        held, peak = grown()
    assert all(not task.done() for task in tasks)
    gate.set()
    completed = sum(1 for i, result in enumerate(await asyncio.gather(*tasks)) if result == i)
    return MemoryOutcome(completed, held, peak)


MEMORY_USAGE: dict[str, Callable[[int], Coroutine[Any, Any, MemoryOutcome]]] = {
    "WorkerPool job, queued": queued_pool_jobs,
    "Task, pending (stock)": pending_tasks,
}


@pytest.mark.parametrize("contender", list(MEMORY_USAGE))
def test_memory_usage(bench: Bench, contender: str) -> None:
    """Traced memory of 10,000 jobs waiting to run: queued pool jobs against pending tasks.

    CPython hands some small objects out of free lists that tracemalloc does
    not see, so both figures are slight underestimates (bench/README.md).
    """
    jobs = bench.size(QUEUED, QUICK_QUEUED)
    run = MEMORY_USAGE[contender]
    outcomes = bench.run("memory usage", lambda: run(jobs), rounds=5, before_round=gc.collect)
    for outcome in outcomes:
        assert outcome.completed == jobs
        # Every job holds at least its slot in the list of handles.
        assert outcome.peak >= outcome.held >= jobs * 8
    held = sorted(outcome.held for outcome in outcomes)
    median = held[len(held) // 2]
    bench.extra_info.update(
        jobs=jobs,
        bytes_per_job=round(median / jobs, 1),
        peak_bytes_per_job=round(max(outcome.peak for outcome in outcomes) / jobs, 1),
    )


# -- GC pressure ----------------------------------------------------------------------

GC_JOBS = 10_000
QUICK_GC_JOBS = 1_000
GC_WORKERS = 64


@dataclass(slots=True)
class GcRecord:
    """Collections seen through ``gc.callbacks`` while a workload ran."""

    collections: Counter[int] = field(default_factory=Counter)
    stops: int = 0
    collected: int = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.collections[info["generation"]] += 1
        else:
            self.stops += 1
            self.collected += info["collected"]


@dataclass(frozen=True, slots=True)
class GcOutcome:
    total: int
    record: GcRecord


async def _yield_once(i: int) -> int:
    await asyncio.sleep(0)
    return i


async def _watching_gc(workload: Coroutine[Any, Any, int]) -> GcOutcome:
    record = GcRecord()
    gc.callbacks.append(record)
    try:
        total = await workload
    finally:
        gc.callbacks.remove(record)
    return GcOutcome(total, record)


async def pool_gc(jobs: int) -> int:
    """Every job submitted to a 64-worker pool, then every result awaited."""
    async with ap.WorkerPool(max_workers=GC_WORKERS, max_pending=jobs) as pool:
        handles = [await pool.submit(_yield_once, i) for i in range(jobs)]
        total = 0
        for handle in handles:
            total += await handle
        return total


async def task_per_job_gc(jobs: int) -> int:
    """The stock pattern: a task per job under ``asyncio.Semaphore(64)``, all gathered."""
    semaphore = asyncio.Semaphore(GC_WORKERS)

    async def one(i: int) -> int:
        async with semaphore:
            return await _yield_once(i)

    return sum(await asyncio.gather(*(one(i) for i in range(jobs))))


GC_PRESSURE: dict[str, Callable[[int], Coroutine[Any, Any, int]]] = {
    "WorkerPool": pool_gc,
    "task per job (stock)": task_per_job_gc,
}


@pytest.mark.parametrize("contender", list(GC_PRESSURE))
def test_gc_pressure(bench: Bench, contender: str) -> None:
    """Garbage collections while 10,000 jobs run, at most 64 at once.

    Each round starts after a full collection, so every round starts with
    empty generations and the counts compare.
    """
    jobs = bench.size(GC_JOBS, QUICK_GC_JOBS)
    run = GC_PRESSURE[contender]
    outcomes = bench.run(
        "GC pressure", lambda: _watching_gc(run(jobs)), rounds=5, before_round=gc.collect
    )
    for outcome in outcomes:
        assert outcome.total == jobs * (jobs - 1) // 2
        # Every collection that started also finished, inside the workload.
        assert outcome.record.stops == outcome.record.collections.total()
    record = outcomes[-1].record
    bench.extra_info.update(
        jobs=jobs,
        gen0=record.collections[0],
        gen1=record.collections[1],
        gen2=record.collections[2],
        objects_collected=record.collected,
    )


# -- memory leaks ---------------------------------------------------------------------

LEAK_JOBS = 10_000
QUICK_LEAK_JOBS = 2_000
LEAK_WORKERS = 64
#: Rounds the leak check compares; the first is left out (it fills caches
#: that live for the whole process: interned names, method caches, the loop's
#: first-use imports).
LEAK_ROUNDS = 4
#: Live objects a round may add: the test keeps each round's LeakOutcome (9 objects).
LEAK_OBJECTS_PER_ROUND = 16
#: Traced bytes a round may add without being a leak: its kept LeakOutcome
#: (about 1.5 KB) and a little per-loop state of asyncio and uvloop (under 1 KB).
#: A leak of one handle per job would add ~100 bytes per job, 1 MB per round at
#: the real size; this bound catches a leak of one byte per job at that size.
LEAK_BYTES_PER_ROUND = 8 * 1024


@dataclass(frozen=True, slots=True)
class LeakOutcome:
    outcomes: Counter[str]
    statistics: ap.PoolStatistics
    #: Weak references to the pool and to a job of each kind: dead once the round is over.
    refs: list[weakref.ref[Any]]


async def mixed_jobs(jobs: int) -> LeakOutcome:
    """A quarter of the jobs succeed, a quarter raise, a quarter are cancelled while
    queued and a quarter time out; then the pool closes."""
    never = asyncio.Event()

    async def succeed(i: int) -> int:
        await asyncio.sleep(0)
        return i

    async def fail(i: int) -> int:
        await asyncio.sleep(0)
        raise ValueError(i)

    async def hang(i: int) -> int:
        await never.wait()
        return i

    refs: list[weakref.ref[Any]] = []
    async with ap.WorkerPool(max_workers=LEAK_WORKERS, max_pending=jobs) as pool:
        refs.append(weakref.ref(pool))
        handles: list[ap.Job[int]] = []
        for i in range(jobs):
            kind = i % 4
            if kind == 0:
                handles.append(await pool.submit(succeed, i))
            elif kind == 1:
                handles.append(await pool.submit(fail, i))
            elif kind == 2:
                job = await pool.submit(hang, i)
                job.cancel()
                handles.append(job)
            else:
                handles.append(await pool.submit(hang, i, timeout=0.001))
        refs.extend(weakref.ref(handle) for handle in handles[:4])
        results = await asyncio.gather(*handles, return_exceptions=True)
        statistics = pool.statistics()
    outcomes: Counter[str] = Counter()
    for i, result in enumerate(results):
        if isinstance(result, asyncio.CancelledError):
            outcomes["cancelled"] += 1
        elif isinstance(result, ap.JobTimeout):
            outcomes["timed_out"] += 1
        elif isinstance(result, ValueError):
            outcomes["failed"] += 1
        elif result == i:
            outcomes["completed"] += 1
        else:
            outcomes[f"unexpected {result!r}"] += 1
    return LeakOutcome(outcomes, statistics, refs)


def test_memory_leaks(bench: Bench) -> None:
    """10,000 mixed jobs through a fresh pool per round: nothing may accumulate across rounds.

    After each round (inside the timed part) a full collection runs and the
    traced memory still held is read. Under ``--benchmark-disable`` the
    missing rounds run untimed.
    """
    jobs = bench.size(LEAK_JOBS, QUICK_LEAK_JOBS)
    retained: list[int] = []
    live_objects: list[int] = []

    gc.collect()
    with traced() as grown:

        def measure() -> None:
            gc.collect()
            retained.append(grown()[0])
            live_objects.append(len(gc.get_objects()))

        results = bench.run("memory leaks", lambda: mixed_jobs(jobs), rounds=4, after_round=measure)
        while len(results) < LEAK_ROUNDS:
            results.append(bench.run_once(lambda: mixed_jobs(jobs)))
            measure()

    quarter = jobs // 4
    for result in results:
        assert result.outcomes == Counter(
            completed=quarter, failed=quarter, cancelled=quarter, timed_out=quarter
        )
        stats = result.statistics
        assert stats.submitted == jobs
        assert (stats.completed, stats.failed, stats.cancelled, stats.timed_out) == (
            quarter,
            quarter,
            quarter,
            quarter,
        )
        assert stats.dropped == stats.rejected == stats.pending == stats.active == 0
        # The pool and its jobs were freed with the round (measure() collected).
        assert all(ref() is None for ref in result.refs)
    growth = retained[-1] - retained[1]
    object_growth = live_objects[-1] - live_objects[1]
    bench.extra_info.update(
        jobs=jobs,
        retained_bytes=retained,
        retained_growth_bytes=growth,
        live_objects=live_objects,
    )
    compared = len(retained) - 2  # rounds after the one growth is measured from
    assert growth <= LEAK_BYTES_PER_ROUND * compared, (
        f"traced memory grew by {growth} bytes over {compared} rounds: {retained}"
    )
    assert object_growth <= LEAK_OBJECTS_PER_ROUND * compared, (
        f"live objects grew over rounds: {live_objects}"
    )
