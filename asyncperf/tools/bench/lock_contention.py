"""Suite ``locks``: the cost of one acquire-release under contention from 1,000 waiters.

1,000 tasks each enter a guarded critical section K times (K = N / 1,000, at
least once), so N acquisitions in all. The critical section awaits
``asyncio.sleep(0)`` once: the holder gives up the loop while it holds the
slot, so the other tasks pile up as waiters and every release hands the slot
to a parked waiter (without a yield inside, a task would take and give back an
uncontended lock K times in a row and nothing would wait). The section also
checks the bound: it counts the tasks inside and fails the run if more than
the limit are ever in at once, or if fewer than N sections ran.

Two limits:

* **mutex** (1 at a time): ``asyncio.Lock`` (the baseline),
  ``asyncio.Semaphore(1)``, ``anyio.Lock`` (a peer), asyncperf's
  ``AdaptiveLimiter`` with its limit pinned to 1 (``initial = min_limit =
  max_limit = 1``; ``async with limiter.acquire()``, which still times every
  hold and feeds its algorithm, as it does in use), and ``WorkerPool(
  max_workers=1)`` running the critical section as a job (``await
  pool.run(section)``: the section runs in the pool's worker, the caller waits
  for its result).
* **64 at a time**: ``asyncio.Semaphore(64)`` (the baseline),
  ``anyio.Semaphore(64)`` (a peer), the ``AdaptiveLimiter`` pinned to 64 and
  ``WorkerPool(max_workers=64)``.

The anyio guards keep their defaults (``fast_acquire=False``: every acquire is
a checkpoint that yields to the loop, even when the guard is free).

Each limit also has a floor: the same tasks and yields with no guard at all,
so ``value - floor`` is the guard's own cost. The figure is microseconds per
acquire-release (the section's one yield included), timed from releasing the
1,000 started tasks to the last one's end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from rich.table import Table

import asyncperf as ap
from asyncperf.tools.bench._harness import (
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

__all__ = ["SUITE", "WAITERS", "Section", "entries_per_waiter"]

NAME = "locks"
#: Tasks contending for the guard.
WAITERS = 1_000
MUTEX = 1
WIDE = 64


class Section:
    """The critical section: one yield, with a count of who is inside.

    Raises AssertionError (failing the run) as soon as more than ``limit``
    tasks are inside at once.
    """

    __slots__ = ("entered", "inside", "limit", "peak")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inside = 0
        self.peak = 0
        self.entered = 0

    async def run(self) -> None:
        self.inside += 1
        self.entered += 1
        try:
            if self.inside > self.peak:
                self.peak = self.inside
                if self.peak > self.limit:
                    raise AssertionError(f"{self.peak} tasks inside a guard of {self.limit}")
            await asyncio.sleep(0)
        finally:
            self.inside -= 1


def entries_per_waiter(n: int) -> int:
    """Times each of the :data:`WAITERS` tasks enters: N acquisitions in all, at least one each."""
    return max(1, n // WAITERS)


# One task's loop: enter the section `times` times through the guard.
Loop = Callable[[Section, int], Awaitable[None]]


async def _contend(section: Section, times: int, body: Loop) -> float:
    """Seconds for WAITERS tasks to each run ``body``; the tasks are started untimed."""
    go = asyncio.Event()

    async def waiter() -> None:
        await go.wait()
        await body(section, times)

    tasks = [asyncio.create_task(waiter()) for _ in range(WAITERS)]
    try:
        await asyncio.sleep(0)  # every task starts and parks on the event
        start = perf_counter()
        go.set()
        await asyncio.gather(*tasks)
        elapsed = perf_counter() - start
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    expected = WAITERS * times
    if section.entered != expected:
        raise AssertionError(f"{section.entered} sections ran, expected {expected}")
    return elapsed


# -- the guards ---------------------------------------------------------------------------


async def bench_floor(limit: int, times: int) -> float:
    """No guard: the tasks and their yields alone."""
    section = Section(WAITERS)

    async def body(section: Section, times: int) -> None:
        for _ in range(times):
            await section.run()

    return await _contend(section, times, body)


async def bench_asyncio_lock(limit: int, times: int) -> float:
    """``async with asyncio.Lock()`` (the limit must be 1)."""
    lock = asyncio.Lock()

    async def body(section: Section, times: int) -> None:
        for _ in range(times):
            async with lock:
                await section.run()

    return await _contend(Section(limit), times, body)


async def bench_asyncio_semaphore(limit: int, times: int) -> float:
    """``async with asyncio.Semaphore(limit)``."""
    semaphore = asyncio.Semaphore(limit)

    async def body(section: Section, times: int) -> None:
        for _ in range(times):
            async with semaphore:
                await section.run()

    return await _contend(Section(limit), times, body)


async def bench_anyio_lock(limit: int, times: int) -> float:
    """``async with anyio.Lock()`` (the limit must be 1)."""
    import anyio

    lock = anyio.Lock()

    async def body(section: Section, times: int) -> None:
        for _ in range(times):
            async with lock:
                await section.run()

    return await _contend(Section(limit), times, body)


async def bench_anyio_semaphore(limit: int, times: int) -> float:
    """``async with anyio.Semaphore(limit)``."""
    import anyio

    semaphore = anyio.Semaphore(limit)

    async def body(section: Section, times: int) -> None:
        for _ in range(times):
            async with semaphore:
                await section.run()

    return await _contend(Section(limit), times, body)


async def bench_limiter(limit: int, times: int) -> float:
    """``async with AdaptiveLimiter(initial=min_limit=max_limit=limit).acquire()``."""
    limiter = ap.AdaptiveLimiter(initial=limit, min_limit=limit, max_limit=limit)

    async def body(section: Section, times: int) -> None:
        for _ in range(times):
            async with limiter.acquire():
                await section.run()

    elapsed = await _contend(Section(limit), times, body)
    if limiter.limit != limit:
        raise AssertionError(f"the pinned limiter moved to {limiter.limit}")
    return elapsed


async def bench_worker_pool(limit: int, times: int) -> float:
    """``await pool.run(section.run)`` on ``WorkerPool(max_workers=limit)``."""
    async with ap.WorkerPool(max_workers=limit) as pool:

        async def body(section: Section, times: int) -> None:
            run = section.run
            for _ in range(times):
                await pool.run(run)

        return await _contend(Section(limit), times, body)


Bench = Callable[[int, int], Coroutine[Any, Any, float]]


@dataclass(frozen=True, slots=True)
class Contender:
    key: str
    label: str
    bench: Bench
    requires: str | None = None


@dataclass(frozen=True, slots=True)
class Workload:
    """One limit and its contenders; ``baseline`` is the key the ratios divide by."""

    name: str
    limit: int
    baseline: str
    contenders: tuple[Contender, ...]


FLOOR = "floor"
FLOOR_CONTENDER = Contender(FLOOR, "floor (no guard)", bench_floor)
WORKLOADS = (
    Workload(
        f"mutex, {WAITERS:,} waiters",
        MUTEX,
        "asyncio_lock",
        (
            FLOOR_CONTENDER,
            Contender("asyncio_lock", "asyncio.Lock", bench_asyncio_lock),
            Contender("asyncio_semaphore", "asyncio.Semaphore(1)", bench_asyncio_semaphore),
            Contender("anyio_lock", "anyio.Lock", bench_anyio_lock, requires="anyio"),
            Contender("limiter", "asyncperf AdaptiveLimiter (1)", bench_limiter),
            Contender("worker_pool", "asyncperf WorkerPool(1) run", bench_worker_pool),
        ),
    ),
    Workload(
        f"limit {WIDE}, {WAITERS:,} waiters",
        WIDE,
        "asyncio_semaphore",
        (
            FLOOR_CONTENDER,
            Contender("asyncio_semaphore", f"asyncio.Semaphore({WIDE})", bench_asyncio_semaphore),
            Contender(
                "anyio_semaphore", f"anyio.Semaphore({WIDE})", bench_anyio_semaphore, "anyio"
            ),
            Contender("limiter", f"asyncperf AdaptiveLimiter ({WIDE})", bench_limiter),
            Contender("worker_pool", f"asyncperf WorkerPool({WIDE}) run", bench_worker_pool),
        ),
    ),
)


def _maker(bench: Bench, limit: int, times: int) -> Callable[[], Coroutine[Any, Any, float]]:
    def make() -> Coroutine[Any, Any, float]:
        return bench(limit, times)

    return make


def plan(config: Config, loop: LoopChoice) -> Plan:
    """Both limits, each with its floor, baseline and every available contender."""
    result = Plan(cases=[])
    times = entries_per_waiter(config.jobs)
    items = WAITERS * times
    wanted: dict[str, bool] = {}
    for work in WORKLOADS:
        for contender in work.contenders:
            peer = contender.requires
            if peer is not None:
                if peer not in wanted:
                    wanted[peer] = import_peer(peer, result.notes, config.vs)
                if not wanted[peer]:
                    continue
            result.cases.append(
                Case(
                    case=work.name,
                    contender=contender.key,
                    label=contender.label,
                    make=_maker(contender.bench, work.limit, times),
                    items=items,
                    unit="µs/acquire",
                    scale=1e6,
                )
            )
    result.notes.append(
        f"locks: {WAITERS:,} tasks x {times:,} entries = {items:,} acquire-release pairs per "
        "run; the critical section awaits asyncio.sleep(0) once (so waiters pile up)."
    )
    return result


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    """Print the table of one loop: µs per acquire-release, ratio to the baseline, over floor."""
    loop_name = results[0].loop if results else loop
    items = results[0].items if results else 0
    table = Table(
        title=f"locks: acquire-release under contention, {items:,} per run — loop {loop_name}",
        caption=f"median of {h.config.repeat} repetitions, each in a fresh loop; best = fastest; "
        f"{WAITERS:,} tasks, one asyncio.sleep(0) inside the section; x base = time / "
        "asyncio.Lock (mutex) or asyncio.Semaphore(64) (limit 64); over floor = time minus "
        "the unguarded floor: the guard's own cost",
    )
    table.add_column("case")
    table.add_column("contender")
    table.add_column("µs/acquire", justify="right")
    table.add_column("best", justify="right")
    table.add_column("x base", justify="right")
    table.add_column("over floor µs", justify="right")
    for work in WORKLOADS:
        rows = {r.contender: r for r in results if r.case == work.name}
        baseline = rows.get(work.baseline)
        floor = rows.get(FLOOR)
        for row in rows.values():
            table.add_row(
                work.name,
                row.label,
                fmt(row.value),
                fmt(row.best),
                f"{row.value / baseline.value:.2f}x" if baseline else "-",
                f"{row.value - floor.value:.2f}" if floor and row is not floor else "-",
            )
        table.add_section()
    h.console.print(table)


SUITE = Suite(
    name=NAME,
    description=f"Lock contention: µs per acquire-release with {WAITERS:,} tasks contending, "
    "one yield inside the section; asyncio.Lock, Semaphore(1), anyio.Lock, asyncperf's "
    "AdaptiveLimiter pinned to 1 and WorkerPool(1), then the same at a limit of 64.",
    plan=plan,
    report=report,
)
