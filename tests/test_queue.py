"""Layer 1: PriorityQueue: levels, strategies, weighted fair dequeue, waiting, closing."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

import asyncperf as ap
from asyncperf.testing import VirtualClock, wait_until

BLOCK, REJECT = ap.DropStrategy.BLOCK, ap.DropStrategy.REJECT
DROP_OLDEST, DROP_NEWEST = ap.DropStrategy.DROP_OLDEST, ap.DropStrategy.DROP_NEWEST


def make_queue(*levels: ap.Level, **kwargs: Any) -> ap.PriorityQueue[Any]:
    return ap.PriorityQueue(list(levels), **kwargs)


# -- construction -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_size": 0}, ValueError, r"^max_size must be >= 1, not .+$"),
        ({"weight": 0}, ValueError, r"^weight must be >= 1, not .+$"),
        ({"max_size": 1.5}, TypeError, r"^max_size must be an int, not float$"),
        ({"weight": True}, TypeError, r"^weight must be an int, not bool$"),
        ({"strategy": "block"}, TypeError, r"^strategy must be a DropStrategy, not str$"),
    ],
)
def test_level_validates(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    """Bad level settings raise an error naming the parameter."""
    with pytest.raises(error, match=message):
        ap.Level(priority=0, **kwargs)


def test_level_priority_must_be_int() -> None:
    """A non-int priority is a TypeError naming it."""
    with pytest.raises(TypeError, match=r"^priority must be an int, not str$"):
        ap.Level(priority="high")  # type: ignore[arg-type]


def test_queue_validates_levels() -> None:
    """Empty levels, duplicate priorities, foreign objects and bad defaults are refused."""
    with pytest.raises(ValueError, match=r"^levels must not be empty$"):
        ap.PriorityQueue([])
    with pytest.raises(ValueError, match=r"^levels must have distinct priorities"):
        make_queue(ap.Level(1), ap.Level(1))
    with pytest.raises(TypeError, match=r"^levels must hold Level objects, not int$"):
        ap.PriorityQueue([1])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"^default_priority must be one of \[0, 1\], not 5$"):
        make_queue(ap.Level(0), ap.Level(1), default_priority=5)


def test_default_levels_and_priority() -> None:
    """The default queue has levels 0, 1, 2 and puts into the middle one."""
    queue: ap.PriorityQueue[str] = ap.PriorityQueue()
    assert queue.priorities == (0, 1, 2)
    assert queue.default_priority == 1
    queue.put_nowait("x")
    assert queue.statistics().level(1).depth == 1
    with pytest.raises(KeyError):
        queue.statistics().level(9)


def test_unknown_priority_is_refused() -> None:
    """put into a level that does not exist is a ValueError naming priority."""
    queue = make_queue(ap.Level(0), ap.Level(2))
    with pytest.raises(ValueError, match=r"^priority must be one of \[0, 2\], not 1$"):
        queue.put_nowait("x", 1)


# -- order ---------------------------------------------------------------------------


def test_fifo_within_a_level() -> None:
    """Items of one level come out in the order they went in."""
    queue = make_queue(ap.Level(0, max_size=100))
    for i in range(50):
        queue.put_nowait(i)
    assert [queue.get_nowait() for _ in range(50)] == list(range(50))
    with pytest.raises(ap.QueueEmpty):
        queue.get_nowait()


def test_weighted_round_robin_shares() -> None:
    """With every level backlogged, gets follow the weights exactly (8:2:1)."""
    queue = make_queue(
        ap.Level(0, max_size=1_000, weight=8),
        ap.Level(1, max_size=1_000, weight=2),
        ap.Level(2, max_size=1_000, weight=1),
    )
    for i in range(1_000):
        for priority in (0, 1, 2):
            queue.put_nowait((priority, i), priority)
    served = Counter(queue.get_nowait()[0] for _ in range(110))
    assert served == {0: 80, 1: 20, 2: 10}


def test_weights_hold_over_ten_thousand_dequeues() -> None:
    """With every level kept busy by random arrivals, shares stay within 5% of the weights."""
    import random

    rng = random.Random(7)
    weights = {0: 8, 1: 3, 2: 1}
    queue = make_queue(*(ap.Level(p, max_size=100_000, weight=w) for p, w in weights.items()))
    for priority in weights:
        for i in range(50):
            queue.put_nowait((priority, i), priority)
    served: Counter[int] = Counter()
    for step in range(10_000):
        # Arrivals in random bursts, more than enough to keep every level busy.
        for _ in range(rng.randint(0, 3)):
            priority = rng.choice(list(weights))
            queue.put_nowait((priority, step), priority)
        for priority in weights:
            if queue.statistics().level(priority).depth == 0:
                queue.put_nowait((priority, step), priority)
        served[queue.get_nowait()[0]] += 1
    total = sum(weights.values())
    for priority, weight in weights.items():
        share = served[priority] / 10_000
        assert share == pytest.approx(weight / total, rel=0.05), (priority, share)


def test_low_levels_never_starve() -> None:
    """An item in the lowest level is served within one round of the weights."""
    queue = make_queue(ap.Level(0, max_size=1_000, weight=8), ap.Level(1, max_size=10, weight=1))
    for i in range(500):
        queue.put_nowait(("high", i), 0)
    queue.put_nowait(("low", 0), 1)
    taken = [queue.get_nowait() for _ in range(9)]
    assert ("low", 0) in taken


def test_a_lone_level_keeps_the_turn() -> None:
    """When only one level has items it is served whatever its weight."""
    queue = make_queue(ap.Level(0, weight=5), ap.Level(1, max_size=100, weight=1))
    for i in range(20):
        queue.put_nowait(i, 1)
    assert [queue.get_nowait() for _ in range(20)] == list(range(20))


# -- strategies ----------------------------------------------------------------------


def test_block_level_full() -> None:
    """A full BLOCK level: put_nowait raises QueueFull (also asyncio.QueueFull), offer is False."""
    queue = make_queue(ap.Level(0, max_size=2, strategy=BLOCK))
    queue.put_nowait("a")
    assert queue.offer("b")
    assert queue.full()
    assert not queue.offer("c")
    with pytest.raises(asyncio.QueueFull, match=r"^level 0 is full \(2 items\)$"):
        queue.put_nowait("c")
    with pytest.raises(ap.WouldBlock):
        queue.put_nowait("c")
    stats = queue.statistics().level(0)
    assert (stats.depth, stats.enqueued, stats.rejected, stats.dropped) == (2, 2, 0, 0)


def test_reject_level_full() -> None:
    """A full REJECT level refuses the incoming item, counts it and reports it."""
    dropped: list[tuple[Any, ap.DropReason]] = []
    queue = make_queue(
        ap.Level(0, max_size=1, strategy=REJECT), on_drop=lambda i, r: dropped.append((i, r))
    )
    queue.put_nowait("kept")
    with pytest.raises(ap.Rejected, match="level 0 is full") as info:
        queue.put_nowait("refused")
    assert info.value.reason is ap.DropReason.REJECTED
    assert info.value.priority == 0
    assert dropped == [("refused", ap.DropReason.REJECTED)]
    assert queue.get_nowait() == "kept"
    assert queue.statistics().level(0).rejected == 1


async def test_reject_level_never_waits() -> None:
    """put() on a full REJECT level raises at once instead of waiting."""
    queue = make_queue(ap.Level(0, max_size=1, strategy=REJECT))
    await queue.put("a")
    with pytest.raises(ap.Rejected):
        await queue.put("b")


@pytest.mark.parametrize(
    ("strategy", "expected_victim", "remaining"),
    [(DROP_OLDEST, 0, [1, 2, 3]), (DROP_NEWEST, 2, [0, 1, 3])],
)
def test_drop_strategies(
    strategy: ap.DropStrategy, expected_victim: int, remaining: list[int]
) -> None:
    """DROP_OLDEST drops the oldest queued item, DROP_NEWEST the youngest; the new one is kept."""
    dropped: list[tuple[Any, ap.DropReason]] = []
    queue = make_queue(
        ap.Level(0, max_size=3, strategy=strategy), on_drop=lambda i, r: dropped.append((i, r))
    )
    for i in range(4):
        queue.put_nowait(i)
    assert dropped == [(expected_victim, ap.DropReason.EVICTED)]
    assert [queue.get_nowait() for _ in range(3)] == remaining
    stats = queue.statistics().level(0)
    assert (stats.enqueued, stats.dequeued, stats.dropped) == (4, 3, 1)


@pytest.mark.allow_loop_errors
async def test_failing_drop_hook_is_reported(loop_errors: list[dict[str, Any]]) -> None:
    """An on_drop hook that raises goes to the loop's exception handler; the put still happens."""

    def hook(item: Any, reason: ap.DropReason) -> None:
        raise RuntimeError("hook broke")

    queue = make_queue(ap.Level(0, max_size=1, strategy=DROP_OLDEST), on_drop=hook)
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert queue.get_nowait() == "b"
    assert len(loop_errors) == 1
    assert isinstance(loop_errors[0]["exception"], RuntimeError)
    loop_errors.clear()


# -- waiting -------------------------------------------------------------------------


async def test_get_waits_for_put() -> None:
    """get() on an empty queue waits until an item is put."""
    queue = make_queue(ap.Level(0))
    getter = asyncio.create_task(queue.get())
    await wait_until(lambda: queue.statistics().waiting_getters == 1)
    queue.put_nowait("item")
    assert await getter == "item"


async def test_put_waits_for_room() -> None:
    """put() on a full BLOCK level waits until a get makes room."""
    queue = make_queue(ap.Level(0, max_size=1))
    await queue.put("first")
    putter = asyncio.create_task(queue.put("second"))
    await wait_until(lambda: queue.statistics().waiting_putters == 1)
    assert queue.get_nowait() == "first"
    await putter
    assert queue.get_nowait() == "second"


async def test_cancelled_getter_passes_on_its_wakeup() -> None:
    """A getter woken for an item and cancelled before it runs hands the item to the next."""
    queue = make_queue(ap.Level(0))
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await wait_until(lambda: queue.statistics().waiting_getters == 2)
    queue.put_nowait("item")  # wakes `first`
    first.cancel()  # ... which is cancelled before it can take the item
    assert await second == "item"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert queue.qsize() == 0


async def test_cancelled_putter_passes_on_the_room() -> None:
    """A putter woken for room and cancelled before it runs lets the next putter in."""
    queue = make_queue(ap.Level(0, max_size=1))
    queue.put_nowait("held")
    first = asyncio.create_task(queue.put("first"))
    second = asyncio.create_task(queue.put("second"))
    await wait_until(lambda: queue.statistics().waiting_putters == 2)
    assert queue.get_nowait() == "held"  # wakes `first`
    first.cancel()
    await second
    assert queue.get_nowait() == "second"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert queue.qsize() == 0


async def test_cancelled_waiters_take_nothing() -> None:
    """Cancelled get/put leave the queue as it was."""
    queue = make_queue(ap.Level(0, max_size=1))
    getter = asyncio.create_task(queue.get())
    await wait_until(lambda: queue.statistics().waiting_getters == 1)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    queue.put_nowait("x")
    putter = asyncio.create_task(queue.put("y"))
    await wait_until(lambda: queue.statistics().waiting_putters == 1)
    putter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await putter
    assert queue.get_nowait() == "x"
    assert queue.empty()
    stats = queue.statistics()
    assert (stats.waiting_getters, stats.waiting_putters) == (0, 0)


# -- removal and closing -------------------------------------------------------------


async def test_remove_takes_an_item_out_and_wakes_a_putter() -> None:
    """remove() withdraws a queued item, counts it, and makes room for a waiting putter."""
    queue = make_queue(ap.Level(0, max_size=2))
    queue.put_nowait("a")
    queue.put_nowait("b")
    putter = asyncio.create_task(queue.put("c"))
    await wait_until(lambda: queue.statistics().waiting_putters == 1)
    assert queue.remove("a")
    assert not queue.remove("missing")
    await putter
    assert [queue.get_nowait(), queue.get_nowait()] == ["b", "c"]
    stats = queue.statistics().level(0)
    assert (stats.enqueued, stats.dequeued, stats.removed) == (3, 2, 1)


async def test_close_refuses_puts_and_drains() -> None:
    """After close(), puts fail, queued items can still be taken, then get() fails."""
    queue = make_queue(ap.Level(0, max_size=1))
    queue.put_nowait("last")
    putter = asyncio.create_task(queue.put("late"))
    await wait_until(lambda: queue.statistics().waiting_putters == 1)
    queue.close()
    queue.close()  # idempotent
    with pytest.raises(ap.QueueClosed, match="closed"):
        await putter
    with pytest.raises(ap.QueueClosed):
        queue.put_nowait("x")
    assert isinstance(ap.QueueClosed("x"), RuntimeError)
    assert await queue.get() == "last"
    with pytest.raises(ap.QueueClosed, match="closed and empty"):
        await queue.get()
    assert queue.closed


async def test_close_wakes_every_waiting_getter() -> None:
    """Getters parked on an empty queue fail with QueueClosed when it closes."""
    queue = make_queue(ap.Level(0))
    getters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await wait_until(lambda: queue.statistics().waiting_getters == 3)
    queue.put_nowait("one")  # wakes the first getter only
    queue.close()
    results = await asyncio.gather(*getters, return_exceptions=True)
    assert results.count("one") == 1
    assert sum(isinstance(r, ap.QueueClosed) for r in results) == 2


def test_drop_all_reports_each_item() -> None:
    """drop_all() empties every level and reports each item with the reason."""
    dropped: list[tuple[Any, ap.DropReason]] = []
    queue = make_queue(ap.Level(0), ap.Level(1), on_drop=lambda i, r: dropped.append((i, r)))
    queue.put_nowait("a", 0)
    queue.put_nowait("b", 1)
    assert queue.drop_all() == 2
    assert sorted(dropped) == [("a", ap.DropReason.SHUTDOWN), ("b", ap.DropReason.SHUTDOWN)]
    assert queue.empty()
    assert queue.statistics().level(0).dropped == 1


# -- statistics ------------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_oldest_age(clock: VirtualClock) -> None:
    """statistics() gives the age of each level's oldest item, on the queue's clock."""
    queue = make_queue(ap.Level(0), ap.Level(1), clock=clock)
    queue.put_nowait("old", 0)
    await clock.sleep(3.0)
    queue.put_nowait("new", 0)
    await clock.sleep(1.0)
    stats = queue.statistics()
    assert stats.level(0).oldest_age == pytest.approx(4.0)
    assert stats.level(1).oldest_age == 0.0
    queue.get_nowait()
    assert queue.statistics().level(0).oldest_age == pytest.approx(1.0)


def test_repr_shows_state() -> None:
    """repr() shows levels, depth and whether the queue is open."""
    queue = make_queue(ap.Level(0), ap.Level(1))
    queue.put_nowait("x")
    assert repr(queue) == "<PriorityQueue 2 levels, 1 queued, open>"
    queue.close()
    assert repr(queue).endswith("closed>")
