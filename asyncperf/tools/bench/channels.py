"""Suite ``channels``: producer/consumer throughput through a bounded channel.

Producer tasks ``await`` a put of each item and consumer tasks ``await`` a get,
through a channel bounded at ``depth`` items, until N items have passed: the
producers wait whenever the channel is full and the consumers whenever it is
empty, so the figure includes the backpressure and the task switches it
causes. Two shapes: one producer and one consumer at each depth of
``--quick``/full (100 and 1,000 / 100 and 10,000), and four producers with four
consumers at the first depth (each producer puts N/4 items, each consumer
takes N/4, so the counts add up and nothing needs closing). The consumers add
up what they take; a run fails unless they took exactly N items summing to
``0 + 1 + ... + N-1``.

Where a put or get finds room or an item it returns without yielding
(``asyncio.Queue``, asyncperf), so one producer and one consumer switch
about twice per channel-full of items: the per-item figure is mostly the
queue's own put and get, and the switches show at small bounds and with more
tasks. anyio's streams yield on every call.

Contenders: ``asyncio.Queue(depth)`` (the baseline), an anyio memory object
stream with ``max_buffer_size=depth`` (a peer; its ``send`` and ``receive``
are cancellation points that yield to the loop on every call), asyncperf's
``PriorityQueue`` with one level of ``max_size=depth``, and with three levels
of ``ceil(depth / 3)`` each (item i at level i % 3, equal weights) so the
buffered total stays about ``depth``.

The ``queue`` suite measures the queues without task switches (fill, then
drain, with the ``_nowait`` calls) and one awaiting pair at a bound of 1,000;
this suite is the awaiting side: more shapes, smaller bounds, the peer and
the multi-level queue.
"""

from __future__ import annotations

import asyncio
import math
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

__all__ = ["SUITE", "Shape", "pass_items", "shares"]

NAME = "channels"
LEVELS = 3

Put = Callable[[int], Awaitable[None]]
Get = Callable[[], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Shape:
    """How many producers and consumers, and the channel's bound."""

    producers: int
    consumers: int
    depth: int

    @property
    def name(self) -> str:
        return f"{self.producers}P/{self.consumers}C, bound {self.depth:,}"


def shares(n: int, parts: int) -> list[tuple[int, int]]:
    """N split into ``parts`` contiguous ranges ``(start, stop)`` that differ by one at most."""
    base, extra = divmod(n, parts)
    ranges: list[tuple[int, int]] = []
    start = 0
    for index in range(parts):
        stop = start + base + (1 if index < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges


async def pass_items(n: int, shape: Shape, put: Put, get: Get) -> float:
    """Seconds for the shape's producers and consumers to pass N items through put/get."""
    totals: list[int] = []
    counts: list[int] = []

    async def produce(start: int, stop: int) -> None:
        for item in range(start, stop):
            await put(item)

    async def consume(count: int) -> None:
        total = 0
        for _ in range(count):
            total += await get()
        totals.append(total)
        counts.append(count)

    coroutines: list[Coroutine[Any, Any, None]] = [
        produce(start, stop) for start, stop in shares(n, shape.producers)
    ]
    coroutines += [consume(stop - start) for start, stop in shares(n, shape.consumers)]
    start = perf_counter()
    await asyncio.gather(*coroutines)
    elapsed = perf_counter() - start
    if sum(counts) != n or sum(totals) != n * (n - 1) // 2:
        raise AssertionError(f"consumers took {sum(counts)} items summing to {sum(totals)}")
    return elapsed


# -- the channels -------------------------------------------------------------------------


async def bench_asyncio_queue(n: int, shape: Shape) -> float:
    """Through ``asyncio.Queue(maxsize=depth)``."""
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=shape.depth)
    elapsed = await pass_items(n, shape, queue.put, queue.get)
    if queue.qsize():
        raise AssertionError(f"{queue.qsize()} items left in the channel")
    return elapsed


async def bench_anyio_stream(n: int, shape: Shape) -> float:
    """Through an anyio memory object stream with ``max_buffer_size=depth``."""
    import anyio

    send, receive = anyio.create_memory_object_stream[int](max_buffer_size=shape.depth)
    with send, receive:
        elapsed = await pass_items(n, shape, send.send, receive.receive)
        left = receive.statistics().current_buffer_used
    if left:
        raise AssertionError(f"{left} items left in the channel")
    return elapsed


async def bench_asyncperf_one_level(n: int, shape: Shape) -> float:
    """Through an asyncperf ``PriorityQueue`` with one level of ``max_size=depth``."""
    queue: ap.PriorityQueue[int] = ap.PriorityQueue([ap.Level(priority=0, max_size=shape.depth)])
    elapsed = await pass_items(n, shape, queue.put, queue.get)
    if queue.qsize():
        raise AssertionError(f"{queue.qsize()} items left in the channel")
    return elapsed


def level_size(depth: int) -> int:
    """Each of the three levels' bound: the buffered total stays about ``depth``."""
    return math.ceil(depth / LEVELS)


async def bench_asyncperf_three_levels(n: int, shape: Shape) -> float:
    """Through an asyncperf ``PriorityQueue`` with three equal-weight levels, item i at i % 3."""
    size = level_size(shape.depth)
    queue: ap.PriorityQueue[int] = ap.PriorityQueue(
        [ap.Level(priority=p, max_size=size) for p in range(LEVELS)]
    )
    queue_put = queue.put

    async def put(item: int) -> None:
        await queue_put(item, item % LEVELS)

    elapsed = await pass_items(n, shape, put, queue.get)
    if queue.qsize():
        raise AssertionError(f"{queue.qsize()} items left in the channel")
    return elapsed


Bench = Callable[[int, Shape], Coroutine[Any, Any, float]]


@dataclass(frozen=True, slots=True)
class Contender:
    key: str
    label: str
    bench: Bench
    requires: str | None = None


BASELINE = "asyncio_queue"
CONTENDERS = (
    Contender(BASELINE, "asyncio.Queue", bench_asyncio_queue),
    Contender("anyio_stream", "anyio memory stream", bench_anyio_stream, requires="anyio"),
    Contender("asyncperf_1", "asyncperf PQ, 1 level", bench_asyncperf_one_level),
    Contender("asyncperf_3", "asyncperf PQ, 3 levels", bench_asyncperf_three_levels),
)


def shapes(config: Config) -> list[Shape]:
    """1P/1C at each configured depth, then 4P/4C at the first."""
    result = [Shape(1, 1, depth) for depth in config.queue_depths]
    result.append(Shape(4, 4, config.queue_depths[0]))
    return result


def _maker(bench: Bench, n: int, shape: Shape) -> Callable[[], Coroutine[Any, Any, float]]:
    def make() -> Coroutine[Any, Any, float]:
        return bench(n, shape)

    return make


def plan(config: Config, loop: LoopChoice) -> Plan:
    """Every shape with every available channel."""
    result = Plan(cases=[])
    available = [
        c
        for c in CONTENDERS
        if c.requires is None or import_peer(c.requires, result.notes, config.vs)
    ]
    for shape in shapes(config):
        for contender in available:
            result.cases.append(
                Case(
                    case=shape.name,
                    contender=contender.key,
                    label=contender.label,
                    make=_maker(contender.bench, config.jobs, shape),
                    items=config.jobs,
                    unit="ns/item",
                    scale=1e9,
                )
            )
    return result


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    """Print the table of one loop: ns per item and the ratio to asyncio.Queue."""
    loop_name = results[0].loop if results else loop
    table = Table(
        title=f"channels: producer/consumer, {h.config.jobs:,} items — loop {loop_name}",
        caption=f"median of {h.config.repeat} repetitions, each in a fresh loop; best = fastest; "
        "awaiting put/get with backpressure; x asyncio.Queue = time / asyncio.Queue's time "
        f"(below 1 is faster); 3 levels hold ceil(bound / {LEVELS}) each",
    )
    table.add_column("case")
    table.add_column("contender")
    table.add_column("ns/item", justify="right")
    table.add_column("best", justify="right")
    table.add_column("x asyncio.Queue", justify="right")
    for case in dict.fromkeys(r.case for r in results):
        rows = {r.contender: r for r in results if r.case == case}
        baseline = rows.get(BASELINE)
        for row in rows.values():
            table.add_row(
                case,
                row.label,
                fmt(row.value),
                fmt(row.best),
                f"{row.value / baseline.value:.2f}x" if baseline else "-",
            )
        table.add_section()
    h.console.print(table)


SUITE = Suite(
    name=NAME,
    description="Channel throughput (ns per item): awaiting producers and consumers through "
    "a bounded channel (1P/1C at bounds 100 and 10,000, 4P/4C at 100): asyncio.Queue, anyio "
    "memory object streams, asyncperf PriorityQueue with one and three levels.",
    plan=plan,
    report=report,
)
