"""Suite ``memory``: bytes per queued WorkerPool job against bytes per pending asyncio Task.

Measured with tracemalloc as the growth of traced memory over a baseline
snapshot, divided by the number of items. A task is measured twice: just after
``create_task`` (before its first step: the task, its coroutine and the
scheduled callback) and once it has started and is parked on an Event (the
task, its coroutine and the Event's waiter future). A WorkerPool job is
measured while it waits in the queue behind a single worker blocked on an Event.
Both sides keep their handles in a list, so that list is in both figures.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import tracemalloc
from collections.abc import Callable, Coroutine
from typing import Any

from rich.table import Table
from rich.text import Text

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
)

__all__ = ["SUITE"]

TASK_PENDING = "task_pending"
TASK_PARKED = "task_parked"
POOL_QUEUED = "pool_queued"
BAR = 0.3
CASE = "queued item"


def _empty_free_lists() -> list[object]:
    """Objects that take everything out of CPython's free lists the items draw from.

    An object handed out from a free list is not a new allocation, so tracemalloc
    would not see it: holding these for the measurement makes every item's
    tuples, floats and contexts count.
    """
    hold: list[object] = []
    hold.extend((i,) for i in range(2_100))
    hold.extend((i, i) for i in range(2_100))
    hold.extend(float(i) + 0.5 for i in range(200))
    hold.extend(contextvars.copy_context() for _ in range(300))
    return hold


def _start_tracing() -> tuple[int, list[object]]:
    gc.collect()
    tracemalloc.start()
    hold = _empty_free_lists()
    return tracemalloc.get_traced_memory()[0], hold


def _grown(base: int) -> float:
    return float(tracemalloc.get_traced_memory()[0] - base)


async def memory_task_pending(n: int) -> float:
    """Bytes traced for N ``asyncio.Task`` objects just created, before their first step."""
    event = asyncio.Event()

    async def work(i: int) -> None:
        await event.wait()

    base, hold = _start_tracing()
    try:
        tasks = [asyncio.create_task(work(i)) for i in range(n)]
        grown = _grown(base)
    finally:
        tracemalloc.stop()
    event.set()
    await asyncio.gather(*tasks)
    del hold
    return grown


async def memory_task_parked(n: int) -> float:
    """Bytes traced for N ``asyncio.Task`` objects that have started and wait on an Event."""
    event = asyncio.Event()
    started = 0

    async def work(i: int) -> None:
        nonlocal started
        started += 1
        await event.wait()

    base, hold = _start_tracing()
    try:
        tasks = [asyncio.create_task(work(i)) for i in range(n)]
        while started < n:
            await asyncio.sleep(0)
        grown = _grown(base)
    finally:
        tracemalloc.stop()
    event.set()
    await asyncio.gather(*tasks)
    del hold
    return grown


async def memory_pool_queued(n: int) -> float:
    """Bytes traced for N WorkerPool jobs queued behind a single worker blocked on an Event."""
    event = asyncio.Event()

    async def work(i: int) -> None:
        await event.wait()

    async with ap.WorkerPool(max_workers=1, max_pending=n) as pool:
        blocker = pool.submit_nowait(event.wait)
        while blocker.state is not ap.JobState.RUNNING:
            await asyncio.sleep(0)
        base, hold = _start_tracing()
        try:
            jobs = [pool.submit_nowait(work, i) for i in range(n)]
            grown = _grown(base)
        finally:
            tracemalloc.stop()
        event.set()
        await blocker
        for job in jobs:
            await job
    del hold
    return grown


BENCHES: tuple[tuple[str, str, Callable[[int], Coroutine[Any, Any, float]]], ...] = (
    (TASK_PENDING, "Task, created (not started)", memory_task_pending),
    (TASK_PARKED, "Task, parked on an Event", memory_task_parked),
    (POOL_QUEUED, "WorkerPool job, queued", memory_pool_queued),
)


def _maker(
    bench: Callable[[int], Coroutine[Any, Any, float]], n: int
) -> Callable[[], Coroutine[Any, Any, float]]:
    def make() -> Coroutine[Any, Any, float]:
        return bench(n)

    return make


def plan(config: Config, loop: LoopChoice) -> Plan:
    """The cases: the two task figures and the queued job figure."""
    n = config.memory_items
    return Plan(
        cases=[
            Case(
                case=CASE,
                contender=key,
                label=label,
                make=_maker(bench, n),
                items=n,
                unit="B/item",
                scale=1.0,
                raw_unit="B",
            )
            for key, label, bench in BENCHES
        ]
    )


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    """Print the table of one loop: bytes per item and the job/task ratios."""
    rows = {r.contender: r for r in results}
    created = rows.get(TASK_PENDING)
    parked = rows.get(TASK_PARKED)
    tasks = [r for r in (created, parked) if r is not None]
    smaller = min(tasks, key=lambda r: r.value) if tasks else None
    pool = rows.get(POOL_QUEUED)
    items = h.config.memory_items
    table = Table(
        title=f"memory: bytes per queued item, {items:,} items (tracemalloc) — loop {loop}",
        caption=f"median of {h.config.repeat} repetitions, each in a fresh loop; "
        "x created / x parked = bytes / that task figure; the bar is judged against the "
        "smaller task figure" + (f" ({smaller.label})" if smaller is not None else ""),
    )
    table.add_column("contender")
    table.add_column("bytes/item", justify="right")
    table.add_column("min", justify="right")
    table.add_column("x created", justify="right")
    table.add_column("x parked", justify="right")
    table.add_column("bar")
    for row in rows.values():
        cell = Text("")
        if row is pool and smaller is not None:
            bar = h.bar(
                "memory",
                loop,
                CASE,
                POOL_QUEUED,
                f"<= {BAR}x a pending task (the smaller figure: {smaller.contender})",
                row.value / smaller.value,
                "<=",
                BAR,
            )
            cell = bar.cell()
        table.add_row(
            row.label,
            fmt(row.value),
            fmt(row.best),
            f"{row.value / created.value:.2f}x" if created is not None else "-",
            f"{row.value / parked.value:.2f}x" if parked is not None else "-",
            cell,
        )
    h.console.print(table)


SUITE = Suite(
    name="memory",
    description="Traced bytes per queued WorkerPool job against per pending asyncio.Task "
    "(created, and started then parked on an Event).",
    plan=plan,
    report=report,
)
