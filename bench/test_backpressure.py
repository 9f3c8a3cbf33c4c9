"""Backpressure: a producer faster than its consumers, bounded queues against an unbounded one.

The producer puts ``BURST`` items between two yields to the loop; each of the
``CONSUMERS`` consumers takes one item per yield. So the producer offers 10
items for every 4 the consumers can take: a bounded queue must refuse or drop
about 60% of them, and an unbounded queue grows instead. The figures of
interest are in ``extra_info``: how many items were refused or dropped and how
deep the queue got.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest

import asyncperf as ap
from bench.conftest import Bench

ITEMS = 20_000
QUICK_ITEMS = 1_000
BOUND = 100
CONSUMERS = 4
BURST = 10


@dataclass(frozen=True, slots=True)
class FlowOutcome:
    """What became of the items offered.

    Attributes:
        taken: items the consumers took, in the order they were taken.
        refused: puts that raised ``ap.Rejected``.
        dropped_by_reason: ``on_drop`` calls by reason (REJECT reports refusals there too).
        peak_depth: the deepest the queue was right after a put.
        level: the bounded queue's statistics at the end (None for asyncio.Queue).
    """

    taken: list[int]
    refused: int
    dropped_by_reason: Counter[ap.DropReason]
    peak_depth: int
    level: ap.LevelStatistics | None


async def bounded_flow(items: int, strategy: ap.DropStrategy) -> FlowOutcome:
    """Through ``ap.PriorityQueue``: one level of 100 that refuses or evicts when full."""
    dropped: Counter[ap.DropReason] = Counter()

    def on_drop(_item: int, reason: ap.DropReason) -> None:
        dropped[reason] += 1

    queue: ap.PriorityQueue[int] = ap.PriorityQueue(
        [ap.Level(priority=0, max_size=BOUND, strategy=strategy)], on_drop=on_drop
    )
    taken: list[int] = []

    async def consume() -> None:
        while True:
            try:
                item = await queue.get()
            except ap.QueueClosed:
                return
            taken.append(item)
            await asyncio.sleep(0)  # processing the item

    refused = peak = 0
    async with asyncio.TaskGroup() as group:
        for _ in range(CONSUMERS):
            group.create_task(consume())
        for i in range(items):
            try:
                queue.put_nowait(i)
            except ap.Rejected:
                refused += 1
            peak = max(peak, queue.qsize())
            if i % BURST == BURST - 1:
                await asyncio.sleep(0)
        queue.close()  # the consumers take what is left, then stop
    return FlowOutcome(taken, refused, dropped, peak, queue.statistics().level(0))


async def unbounded_flow(items: int) -> FlowOutcome:
    """The stock pattern: an unbounded ``asyncio.Queue``; nothing is refused, memory grows."""
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    taken: list[int] = []

    async def consume() -> None:
        while (item := await queue.get()) is not None:
            taken.append(item)
            await asyncio.sleep(0)

    peak = 0
    async with asyncio.TaskGroup() as group:
        for _ in range(CONSUMERS):
            group.create_task(consume())
        for i in range(items):
            queue.put_nowait(i)
            peak = max(peak, queue.qsize())
            if i % BURST == BURST - 1:
                await asyncio.sleep(0)
        for _ in range(CONSUMERS):
            queue.put_nowait(None)  # one stop signal per consumer, after every item
    return FlowOutcome(taken, 0, Counter(), peak, None)


CONTENDERS: dict[str, Callable[[int], Coroutine[Any, Any, FlowOutcome]]] = {
    "PriorityQueue REJECT": lambda items: bounded_flow(items, ap.DropStrategy.REJECT),
    "PriorityQueue DROP_OLDEST": lambda items: bounded_flow(items, ap.DropStrategy.DROP_OLDEST),
    "asyncio.Queue unbounded (stock)": unbounded_flow,
}


def _check(contender: str, items: int, outcome: FlowOutcome) -> None:
    taken = outcome.taken
    # Consumers take in queue order, and each item at most once.
    assert all(a < b for a, b in itertools.pairwise(taken)), "items out of order"
    level = outcome.level
    if level is None:
        assert taken == list(range(items))
        return
    assert outcome.peak_depth <= BOUND
    assert level.depth == 0
    assert level.enqueued == level.dequeued + level.dropped + level.removed + level.depth
    assert level.dequeued == len(taken)
    if contender.endswith("REJECT"):
        # Refused items were never queued; everything queued was taken.
        assert outcome.refused > 0, "the producer never outran the consumers"
        assert outcome.dropped_by_reason == Counter({ap.DropReason.REJECTED: outcome.refused})
        assert level.rejected == outcome.refused
        assert level.dropped == 0
        assert len(taken) + outcome.refused == items
        assert taken[0] == 0  # the first items got in; the refused ones came later
    else:
        # Evicted items were queued, then dropped for newer ones.
        evicted = outcome.dropped_by_reason[ap.DropReason.EVICTED]
        assert evicted > 0, "the producer never outran the consumers"
        assert outcome.dropped_by_reason == Counter({ap.DropReason.EVICTED: evicted})
        assert outcome.refused == level.rejected == 0
        assert level.dropped == evicted
        assert len(taken) + evicted == items
        assert taken[-BOUND:] == list(range(items - BOUND, items))  # the newest survive


@pytest.mark.parametrize("contender", list(CONTENDERS))
def test_backpressure(bench: Bench, contender: str) -> None:
    """20,000 items offered 10 per yield to 4 consumers taking 1 per yield."""
    items = bench.size(ITEMS, QUICK_ITEMS)
    run = CONTENDERS[contender]
    outcomes = bench.run("backpressure", lambda: run(items), rounds=7)
    for outcome in outcomes:
        _check(contender, items, outcome)
    last = outcomes[-1]
    shed = items - len(last.taken)
    bench.extra_info.update(
        items=items,
        taken=len(last.taken),
        refused=last.refused,
        dropped=shed - last.refused,
        shed_fraction=round(shed / items, 4),
        peak_depth=last.peak_depth,
    )
