"""Suite ``pool``: per-job overhead of bounded concurrency, 64 jobs at once at most.

Every contender gets the same workload: the submitter loops over N, hands one
job per iteration to the contender's API, then awaits every result; the clock
runs from the first submit to the last result. Setting up and closing the
contender's long-lived parts (workers, scheduler, pool) is outside the timing.
Where a contender has a buffer of pending jobs, it holds 10,000.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from rich.table import Table
from rich.text import Text

import asyncperf as ap
from asyncperf.tools.bench._harness import (
    Bar,
    Case,
    Config,
    Harness,
    LoopChoice,
    Plan,
    Result,
    Suite,
    fmt,
    import_peer,
)

__all__ = ["SUITE"]

BOUND = 64
PENDING = 10_000

Handler = Callable[[], Coroutine[Any, Any, object]]
ItemHandler = Callable[[int], Coroutine[Any, Any, object]]


async def noop() -> None:
    """The no-op handler."""
    return None


async def yield_once() -> None:
    """The handler that yields to the loop once."""
    await asyncio.sleep(0)


async def noop_item(_item: int) -> None:
    """The no-op handler, taking an item (for aiometer)."""
    return None


async def yield_once_item(_item: int) -> None:
    """The yielding handler, taking an item (for aiometer)."""
    await asyncio.sleep(0)


@dataclass(frozen=True, slots=True)
class Workload:
    """A handler in the two shapes the contenders call."""

    name: str
    fn: Handler
    item_fn: ItemHandler


WORKLOADS = (
    Workload("noop", noop, noop_item),
    Workload("yield_once", yield_once, yield_once_item),
)


def _check(results: list[object], n: int) -> None:
    if len(results) != n:
        raise AssertionError(f"expected {n} results, got {len(results)}")


async def bench_floor(work: Workload, n: int) -> float:
    """Seconds for N bare inline ``await fn()`` in a loop: the floor, no concurrency."""
    fn = work.fn
    results: list[object] = []
    start = perf_counter()
    for _ in range(n):
        results.append(await fn())
    elapsed = perf_counter() - start
    _check(results, n)
    return elapsed


async def bench_gather_semaphore(work: Workload, n: int) -> float:
    """Seconds for N jobs as one task each, guarded by ``asyncio.Semaphore(64)``, gathered."""
    fn = work.fn
    sem = asyncio.Semaphore(BOUND)

    async def guarded() -> object:
        async with sem:
            return await fn()

    start = perf_counter()
    coros = []
    for _ in range(n):
        coros.append(guarded())
    results = await asyncio.gather(*coros)
    elapsed = perf_counter() - start
    _check(results, n)
    return elapsed


async def bench_taskgroup_spawner(work: Workload, n: int) -> float:
    """Seconds for N jobs spawned into a TaskGroup after taking a Semaphore(64) slot each."""
    fn = work.fn
    sem = asyncio.Semaphore(BOUND)

    async def release_after() -> object:
        try:
            return await fn()
        finally:
            sem.release()

    tasks: list[asyncio.Task[object]] = []
    start = perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(n):
            await sem.acquire()
            tasks.append(tg.create_task(release_after()))
    results = [task.result() for task in tasks]
    elapsed = perf_counter() - start
    _check(results, n)
    return elapsed


async def bench_queue_workers(work: Workload, n: int) -> float:
    """Seconds for N jobs through a hand-written Queue(10,000) + 64 workers + one future each."""
    fn = work.fn
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Handler, asyncio.Future[object]]] = asyncio.Queue(maxsize=PENDING)

    async def worker() -> None:
        while True:
            job_fn, fut = await queue.get()
            try:
                result = await job_fn()
            except Exception as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

    # Owned by this list and cancelled in `finally`.
    workers = [asyncio.create_task(worker()) for _ in range(BOUND)]
    try:
        futures: list[asyncio.Future[object]] = []
        start = perf_counter()
        for _ in range(n):
            fut = loop.create_future()
            await queue.put((fn, fut))
            futures.append(fut)
        results = [await fut for fut in futures]
        elapsed = perf_counter() - start
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    _check(results, n)
    return elapsed


async def bench_anyio(work: Workload, n: int) -> float:
    """Seconds for N jobs started into an anyio task group after taking a CapacityLimiter(64)."""
    import anyio

    fn = work.fn
    limiter = anyio.CapacityLimiter(BOUND)
    results: list[object] = [None] * n

    async def run_one(index: int) -> None:
        try:
            results[index] = await fn()
        finally:
            limiter.release_on_behalf_of(index)

    start = perf_counter()
    async with anyio.create_task_group() as tg:
        for index in range(n):
            # The spawner takes the token on the job's behalf; the job gives it back.
            await limiter.acquire_on_behalf_of(index)
            tg.start_soon(run_one, index)
    elapsed = perf_counter() - start
    _check(results, n)
    return elapsed


async def bench_aiojobs(work: Workload, n: int) -> float:
    """Seconds for N jobs spawned on an aiojobs Scheduler(limit=64, pending_limit=10,000)."""
    import aiojobs

    fn = work.fn
    scheduler = aiojobs.Scheduler(limit=BOUND, pending_limit=PENDING)
    try:
        jobs: list[aiojobs.Job[object]] = []
        start = perf_counter()
        for _ in range(n):
            jobs.append(await scheduler.spawn(fn()))
        results = [await job.wait() for job in jobs]
        elapsed = perf_counter() - start
    finally:
        await scheduler.close()
    _check(results, n)
    return elapsed


async def bench_aiometer(work: Workload, n: int) -> float:
    """Seconds for ``aiometer.run_on_each`` over N items with max_at_once=64 (no results)."""
    import aiometer

    start = perf_counter()
    await aiometer.run_on_each(work.item_fn, range(n), max_at_once=BOUND)
    return perf_counter() - start


async def bench_worker_pool(work: Workload, n: int) -> float:
    """Seconds for N jobs through ``asyncperf.WorkerPool(64, max_pending=10,000)``."""
    fn = work.fn
    async with ap.WorkerPool(max_workers=BOUND, max_pending=PENDING) as pool:
        jobs: list[ap.Job[object]] = []
        start = perf_counter()
        for _ in range(n):
            jobs.append(await pool.submit(fn))
        results = [await job for job in jobs]
        elapsed = perf_counter() - start
    _check(results, n)
    return elapsed


Bench = Callable[[Workload, int], Coroutine[Any, Any, float]]


@dataclass(frozen=True, slots=True)
class Contender:
    key: str
    label: str
    bench: Bench
    #: The optional peer it needs (skipped with a note when it does not import).
    requires: str | None = None
    note: str = ""
    #: A cap on repetitions for a slow peer (keeps the default run short).
    max_repeat: int | None = None


FLOOR = "floor"
BASELINE = "queue_workers"
POOL = "worker_pool"

CONTENDERS = (
    Contender(FLOOR, "floor (inline await)", bench_floor),
    Contender("gather_semaphore", "gather + Semaphore", bench_gather_semaphore),
    Contender("taskgroup_spawner", "TaskGroup spawner", bench_taskgroup_spawner),
    Contender(BASELINE, "baseline Queue+workers", bench_queue_workers),
    Contender("anyio", "anyio CapacityLimiter", bench_anyio, requires="anyio"),
    Contender("aiojobs", "aiojobs Scheduler", bench_aiojobs, requires="aiojobs"),
    Contender(
        "aiometer",
        "aiometer run_on_each †",
        bench_aiometer,
        requires="aiometer",
        note="returns no results",
    ),
    Contender(POOL, "asyncperf WorkerPool", bench_worker_pool),
)

#: (contender, bar name, threshold): contender time / WorkerPool time must reach the threshold.
SPEEDUP_BARS = (
    ("aiojobs", "pool >= 5x faster", 5.0),
    ("gather_semaphore", "pool >= 5x faster", 5.0),
    ("taskgroup_spawner", "pool >= 1.5x faster", 1.5),
)
BASELINE_BAR = 1.3


def _maker(
    contender: Contender, work: Workload, n: int
) -> Callable[[], Coroutine[Any, Any, float]]:
    def make() -> Coroutine[Any, Any, float]:
        return contender.bench(work, n)

    return make


def plan(config: Config, loop: LoopChoice) -> Plan:
    """The cases: every available contender on each of the two handlers."""
    result = Plan(cases=[])
    available = [
        c
        for c in CONTENDERS
        if c.requires is None or import_peer(c.requires, result.notes, config.vs)
    ]
    for work in WORKLOADS:
        for contender in available:
            result.cases.append(
                Case(
                    case=work.name,
                    contender=contender.key,
                    label=contender.label,
                    make=_maker(contender, work, config.jobs),
                    items=config.jobs,
                    unit="us/job",
                    scale=1e6,
                    max_repeat=contender.max_repeat,
                    note=contender.note,
                )
            )
    for contender in available:
        if contender.max_repeat is not None and contender.max_repeat < config.repeat:
            result.notes.append(
                f"{contender.label}: {contender.max_repeat} repetitions instead of "
                f"{config.repeat} (a slow peer; keeps the default run short)."
            )
    return result


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    """Print the table of one loop with ratios and bars."""
    table = Table(
        title=f"pool: per-job overhead, {h.config.jobs:,} jobs, bound {BOUND}, "
        f"pending {PENDING:,} — loop {loop}",
        caption=f"median of {h.config.repeat} repetitions, each in a fresh loop; best = fastest; "
        "x base = time / hand-written Queue + 64 workers; pool x = time / WorkerPool time "
        "(WorkerPool's speedup); † returns no results",
    )
    table.add_column("handler")
    table.add_column("contender")
    table.add_column("µs/job", justify="right")
    table.add_column("best", justify="right")
    table.add_column("x base", justify="right")
    table.add_column("pool x", justify="right")
    table.add_column("bar")
    for work in WORKLOADS:
        rows = {r.contender: r for r in results if r.case == work.name}
        baseline = rows.get(BASELINE)
        pool = rows.get(POOL)
        bars: dict[str, Bar] = {}
        if pool is not None and baseline is not None:
            bars[POOL] = h.bar(
                "pool",
                loop,
                work.name,
                POOL,
                f"<= {BASELINE_BAR}x baseline",
                pool.value / baseline.value,
                "<=",
                BASELINE_BAR,
            )
        for key, name, threshold in SPEEDUP_BARS:
            other = rows.get(key)
            if pool is not None and other is not None:
                ratio = other.value / pool.value
                bars[key] = h.bar("pool", loop, work.name, key, name, ratio, ">=", threshold)
        for row in rows.values():
            versus_baseline = f"{row.value / baseline.value:.2f}x" if baseline else "-"
            speedup = (
                f"{row.value / pool.value:.2f}x" if pool is not None and row is not pool else "-"
            )
            bar = bars.get(row.contender)
            table.add_row(
                work.name,
                row.label,
                fmt(row.value),
                fmt(row.best),
                versus_baseline,
                speedup,
                bar.cell() if bar is not None else Text(""),
            )
        table.add_section()
    h.console.print(table)


SUITE = Suite(
    name="pool",
    description="Per-job overhead (µs/job) of bounded concurrency: 64 at once, a no-op "
    "handler and one that awaits asyncio.sleep(0) once; time from the first submit to the "
    "last result.",
    plan=plan,
    report=report,
)
