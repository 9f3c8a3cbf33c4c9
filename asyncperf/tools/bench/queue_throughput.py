"""Suite ``queue``: put/get throughput, asyncperf's PriorityQueue against asyncio's queues.

Buffered: fill then drain in blocks of ``depth`` items (``put_nowait`` then
``get_nowait``) until N items have passed. Async: a producer task doing
``await put`` and a consumer task doing ``await get`` through a queue bounded
at 1,000 items. The figure is nanoseconds per item (one put and one get).
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
)

__all__ = ["SUITE"]

ASYNC_MAXSIZE = 1_000
LEVELS = 3


def _check_empty(size: int) -> None:
    if size:
        raise AssertionError(f"{size} items left in the queue")


# -- buffered: put_nowait a block, then get_nowait it ---------------------------------


async def buffered_asyncio_queue(n: int, depth: int) -> float:
    """Seconds to pass N items through asyncio.Queue, ``depth`` at a time, without waiting."""
    q: asyncio.Queue[int] = asyncio.Queue()
    start = perf_counter()
    done = 0
    while done < n:
        block = min(depth, n - done)
        for i in range(done, done + block):
            q.put_nowait(i)
        for _ in range(block):
            q.get_nowait()
        done += block
    elapsed = perf_counter() - start
    _check_empty(q.qsize())
    return elapsed


async def buffered_asyncio_priority(n: int, depth: int) -> float:
    """Seconds to pass N ``(i % 3, seq, payload)`` items through asyncio.PriorityQueue."""
    q: asyncio.PriorityQueue[tuple[int, int, int]] = asyncio.PriorityQueue()
    start = perf_counter()
    done = 0
    while done < n:
        block = min(depth, n - done)
        for i in range(done, done + block):
            q.put_nowait((i % 3, i, i))
        for _ in range(block):
            q.get_nowait()
        done += block
    elapsed = perf_counter() - start
    _check_empty(q.qsize())
    return elapsed


async def buffered_asyncperf_one_level(n: int, depth: int) -> float:
    """Seconds to pass N items through an asyncperf PriorityQueue with one level."""
    q: ap.PriorityQueue[int] = ap.PriorityQueue([ap.Level(priority=0, max_size=max(n, 1))])
    start = perf_counter()
    done = 0
    while done < n:
        block = min(depth, n - done)
        for i in range(done, done + block):
            q.put_nowait(i)
        for _ in range(block):
            q.get_nowait()
        done += block
    elapsed = perf_counter() - start
    _check_empty(q.qsize())
    return elapsed


async def buffered_asyncperf_three_levels(n: int, depth: int) -> float:
    """Seconds to pass N items through an asyncperf PriorityQueue, item i at level i % 3."""
    levels = [ap.Level(priority=p, max_size=max(n, 1)) for p in range(LEVELS)]
    q: ap.PriorityQueue[int] = ap.PriorityQueue(levels)
    start = perf_counter()
    done = 0
    while done < n:
        block = min(depth, n - done)
        for i in range(done, done + block):
            q.put_nowait(i, i % 3)
        for _ in range(block):
            q.get_nowait()
        done += block
    elapsed = perf_counter() - start
    _check_empty(q.qsize())
    return elapsed


# -- async: a producer task and a consumer task -------------------------------------


async def async_asyncio_queue(n: int) -> float:
    """Seconds for a producer and a consumer task to pass N items through asyncio.Queue(1,000)."""
    q: asyncio.Queue[int] = asyncio.Queue(maxsize=ASYNC_MAXSIZE)

    async def produce() -> None:
        for i in range(n):
            await q.put(i)

    async def consume() -> None:
        for _ in range(n):
            await q.get()

    start = perf_counter()
    await asyncio.gather(produce(), consume())
    elapsed = perf_counter() - start
    _check_empty(q.qsize())
    return elapsed


async def async_asyncio_priority(n: int) -> float:
    """Seconds for a producer and a consumer to pass N items through asyncio.PriorityQueue."""
    q: asyncio.PriorityQueue[tuple[int, int, int]] = asyncio.PriorityQueue(maxsize=ASYNC_MAXSIZE)

    async def produce() -> None:
        for i in range(n):
            await q.put((i % 3, i, i))

    async def consume() -> None:
        for _ in range(n):
            await q.get()

    start = perf_counter()
    await asyncio.gather(produce(), consume())
    elapsed = perf_counter() - start
    _check_empty(q.qsize())
    return elapsed


async def async_asyncperf_one_level(n: int) -> float:
    """Seconds for a producer and a consumer to pass N items through one asyncperf level."""
    q: ap.PriorityQueue[int] = ap.PriorityQueue([ap.Level(priority=0, max_size=ASYNC_MAXSIZE)])

    async def produce() -> None:
        for i in range(n):
            await q.put(i)

    async def consume() -> None:
        for _ in range(n):
            await q.get()

    start = perf_counter()
    await asyncio.gather(produce(), consume())
    elapsed = perf_counter() - start
    _check_empty(q.qsize())
    return elapsed


# -- plan and report -----------------------------------------------------------------

REFERENCE = "asyncio_priority"
ASYNCPERF = ("asyncperf_1", "asyncperf_3")


@dataclass(frozen=True, slots=True)
class Contender:
    key: str
    label: str
    buffered: Callable[[int, int], Coroutine[Any, Any, float]]
    asynchronous: Callable[[int], Coroutine[Any, Any, float]] | None


CONTENDERS = (
    Contender("asyncio_queue", "asyncio.Queue", buffered_asyncio_queue, async_asyncio_queue),
    Contender(
        REFERENCE, "asyncio.PriorityQueue", buffered_asyncio_priority, async_asyncio_priority
    ),
    Contender(
        "asyncperf_1",
        "asyncperf PQ, 1 level",
        buffered_asyncperf_one_level,
        async_asyncperf_one_level,
    ),
    Contender("asyncperf_3", "asyncperf PQ, 3 levels", buffered_asyncperf_three_levels, None),
)

ASYNC_CASE = f"async, bound {ASYNC_MAXSIZE:,}"


def _buffered_case(depth: int) -> str:
    return f"buffered {depth:,}"


def _buffered_maker(
    contender: Contender, n: int, depth: int
) -> Callable[[], Coroutine[Any, Any, float]]:
    def make() -> Coroutine[Any, Any, float]:
        return contender.buffered(n, depth)

    return make


def _async_maker(
    bench: Callable[[int], Coroutine[Any, Any, float]], n: int
) -> Callable[[], Coroutine[Any, Any, float]]:
    def make() -> Coroutine[Any, Any, float]:
        return bench(n)

    return make


def plan(config: Config, loop: LoopChoice) -> Plan:
    """The cases: each queue at each buffered depth, then the async producer/consumer pair."""
    n = config.jobs
    result = Plan(cases=[])
    for depth in config.queue_depths:
        for contender in CONTENDERS:
            result.cases.append(
                Case(
                    case=_buffered_case(depth),
                    contender=contender.key,
                    label=contender.label,
                    make=_buffered_maker(contender, n, depth),
                    items=n,
                    unit="ns/item",
                    scale=1e9,
                )
            )
    for contender in CONTENDERS:
        if contender.asynchronous is not None:
            result.cases.append(
                Case(
                    case=ASYNC_CASE,
                    contender=contender.key,
                    label=contender.label,
                    make=_async_maker(contender.asynchronous, n),
                    items=n,
                    unit="ns/item",
                    scale=1e9,
                )
            )
    return result


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    """Print the table of one loop: ns per item and throughput relative to asyncio.PriorityQueue."""
    table = Table(
        title=f"queue: put + get, {h.config.jobs:,} items — loop {loop}",
        caption=f"median of {h.config.repeat} repetitions, each in a fresh loop; best = fastest; "
        "x asyncio.PQ = throughput relative to asyncio.PriorityQueue (its time / this time)",
    )
    table.add_column("case")
    table.add_column("contender")
    table.add_column("ns/item", justify="right")
    table.add_column("best", justify="right")
    table.add_column("x asyncio.PQ", justify="right")
    table.add_column("bar")
    cases = list(dict.fromkeys(r.case for r in results))
    for case in cases:
        rows = {r.contender: r for r in results if r.case == case}
        reference = rows.get(REFERENCE)
        for row in rows.values():
            cell = Text("")
            ratio_text = "-"
            if reference is not None:
                ratio = reference.value / row.value
                ratio_text = f"{ratio:.2f}x"
                if row.contender in ASYNCPERF and case != ASYNC_CASE:
                    bar: Bar = h.bar(
                        "queue", loop, case, row.contender, ">= asyncio.PQ", ratio, ">=", 1.0
                    )
                    cell = bar.cell()
                elif row.contender in ASYNCPERF:
                    cell = Text("(no bar)", style="dim")
            table.add_row(case, row.label, fmt(row.value), fmt(row.best), ratio_text, cell)
        table.add_section()
    h.console.print(table)


SUITE = Suite(
    name="queue",
    description="put/get throughput (ns per item): buffered fill-then-drain blocks of 100 and "
    "10,000 items with the _nowait calls, and an awaiting producer/consumer pair through a "
    "1,000-item bound.",
    plan=plan,
    report=report,
)
