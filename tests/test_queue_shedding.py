"""Layer 1: shedding under overload: deadlines, CoDel with adaptive LIFO, adjust(load)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import asyncperf as ap
from asyncperf.testing import VirtualClock, VirtualEventLoop, current_virtual_clock, wait_until

Drops = list[tuple[Any, ap.DropReason]]


def make_queue(clock: VirtualClock, *levels: ap.Level, **kwargs: Any) -> ap.PriorityQueue[Any]:
    return ap.PriorityQueue(list(levels) or [ap.Level(0, max_size=1_000)], clock=clock, **kwargs)


# -- deadlines -------------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_expired_item_is_dropped_when_reached(clock: VirtualClock) -> None:
    """A get skips an item whose deadline has passed, reporting it with reason DEADLINE."""
    drops: Drops = []
    queue = make_queue(clock, on_drop=lambda i, r: drops.append((i, r)))
    queue.put_nowait("late", deadline=1.0)
    queue.put_nowait("fine")
    clock.advance(2.0)  # by hand: no timer has run yet
    assert queue.get_nowait() == "fine"
    assert drops == [("late", ap.DropReason.DEADLINE)]
    stats = queue.statistics().level(0)
    assert (stats.dropped, stats.drops, stats.dequeued) == (1, {ap.DropReason.DEADLINE: 1}, 1)


@pytest.mark.virtual_time
async def test_deadline_sweep_reports_without_a_get(clock: VirtualClock) -> None:
    """Expired items are dropped by the sweep within 10 ms of their deadline, unread."""
    drops: Drops = []
    queue = make_queue(clock, on_drop=lambda i, r: drops.append((i, r)))
    start = clock.now()
    for i in range(100):
        queue.put_nowait(i, deadline=1.0 + (i % 3))  # mixed deadlines: 1, 2, 3 s
    queue.put_nowait("no deadline")
    await clock.sleep(1.005)
    assert len(drops) == 34
    await clock.sleep(2.0)
    assert len(drops) == 100
    assert queue.qsize() == 1
    assert queue.get_nowait() == "no deadline"
    assert clock.now() - start == pytest.approx(3.005)


@pytest.mark.virtual_time
async def test_every_item_expired_means_empty(clock: VirtualClock) -> None:
    """get_nowait raises QueueEmpty when every queued item had expired; get() waits on."""
    queue = make_queue(clock)
    queue.put_nowait("a", deadline=1.0)
    clock.advance(5.0)
    with pytest.raises(ap.QueueEmpty, match="expired"):
        queue.get_nowait()
    assert queue.empty()
    getter = asyncio.create_task(queue.get())
    queue.put_nowait("b", deadline=1.0)
    clock.advance(5.0)
    queue.put_nowait("c")
    assert await getter == "c"


@pytest.mark.virtual_time
async def test_deadline_validation(clock: VirtualClock) -> None:
    """A deadline that is not a positive number is refused, naming the parameter."""
    queue = make_queue(clock)
    with pytest.raises(ValueError, match=r"^deadline must be > 0, not 0$"):
        queue.put_nowait("x", deadline=0)
    with pytest.raises(TypeError, match=r"^deadline must be a number, not str$"):
        queue.put_nowait("x", deadline="1")  # type: ignore[arg-type]
    assert queue.empty()


@pytest.mark.virtual_time
async def test_deadline_counts_from_enqueue_after_waiting_for_room(clock: VirtualClock) -> None:
    """put() that waits for room starts the item's deadline when it is queued."""
    queue = make_queue(clock, ap.Level(0, max_size=1))
    queue.put_nowait("first")
    putter = asyncio.create_task(queue.put("second", deadline=1.0))
    await clock.sleep(5.0)
    assert queue.get_nowait() == "first"
    await putter
    await clock.sleep(0.5)
    assert queue.get_nowait() == "second"


# -- CoDel -------------------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_codel_does_not_shed_a_burst_that_drains(clock: VirtualClock) -> None:
    """Items may wait up to the interval while the queue keeps emptying: nothing is shed."""
    drops: Drops = []
    queue = make_queue(
        clock, codel=ap.CoDel(target=0.005, interval=0.1), on_drop=lambda i, r: drops.append((i, r))
    )
    for _round in range(20):
        for i in range(10):
            queue.put_nowait(i)
        for _ in range(10):
            await clock.sleep(0.009)  # a slow consumer: the last item waits 90 ms
            queue.get_nowait()
        assert queue.empty()
        await clock.sleep(0.01)
    assert drops == []
    assert not queue.statistics().standing


@pytest.mark.virtual_time
async def test_codel_sheds_only_during_a_standing_queue(clock: VirtualClock) -> None:
    """Once the queue has not emptied for an interval, items older than 2 x target are shed."""
    drops: Drops = []
    queue = make_queue(
        clock,
        codel=ap.CoDel(target=0.005, interval=0.1, adaptive_lifo=False),
        on_drop=lambda i, r: drops.append((i, r)),
    )
    served: list[int] = []
    for i in range(200):  # offered every 1 ms, served every 2 ms: a standing queue
        queue.put_nowait(i)
        await clock.sleep(0.001)
        if i % 2:
            try:
                served.append(queue.get_nowait())
            except ap.QueueEmpty:
                pass
    assert queue.statistics().standing
    assert drops, "a standing queue must be shed"
    assert {reason for _, reason in drops} == {ap.DropReason.CODEL}
    # Before the queue stood for an interval, nothing was shed.
    assert min(item for item, _ in drops) >= 40
    # What is still queued is young: no item older than the sojourn limit survives a get.
    served.append(queue.get_nowait())
    assert queue.statistics().level(0).oldest_age <= 0.010 + 1e-9
    assert len(served) + len(drops) + queue.qsize() == 200


@pytest.mark.virtual_time
async def test_adaptive_lifo_serves_newest_first_while_standing(clock: VirtualClock) -> None:
    """With a standing queue, gets take the newest item; once it drains, FIFO returns."""
    queue = make_queue(clock, codel=ap.CoDel(target=0.06, interval=0.1))
    for i in range(5):
        queue.put_nowait(i)
    assert queue.get_nowait() == 0  # not standing yet: FIFO
    await clock.sleep(0.11)  # not empty for a whole interval, nothing old enough to shed
    queue.put_nowait(5)
    assert queue.statistics().standing
    assert [queue.get_nowait() for _ in range(5)] == [5, 4, 3, 2, 1]
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert not queue.statistics().standing
    assert queue.get_nowait() == "a"  # the queue emptied: FIFO again


@pytest.mark.virtual_time
async def test_codel_sweep_sheds_while_nothing_is_taken(clock: VirtualClock) -> None:
    """With every consumer busy, the sweep still sheds a standing queue."""
    drops: Drops = []
    queue = make_queue(clock, codel=ap.CoDel(), on_drop=lambda i, r: drops.append((i, r)))
    for i in range(50):
        queue.put_nowait(i)
    await clock.sleep(0.2)
    assert len(drops) == 50
    assert queue.empty()


def test_codel_validation() -> None:
    """CoDel settings are checked, naming the parameter."""
    with pytest.raises(ValueError, match=r"^target must be > 0, not 0$"):
        ap.CoDel(target=0)
    with pytest.raises(ValueError, match=r"^target must be < interval$"):
        ap.CoDel(target=0.2, interval=0.1)
    with pytest.raises(TypeError, match=r"^interval must be a number, not str$"):
        ap.CoDel(interval="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^codel must be a CoDel, not dict$"):
        ap.PriorityQueue(codel={})  # type: ignore[arg-type]


# -- adjust(load) ------------------------------------------------------------------------


def levels_of(queue: ap.PriorityQueue[Any]) -> list[int]:
    return [level.bound for level in queue.statistics().levels]


def test_adjust_tightens_lower_levels_first() -> None:
    """Rising load shrinks the least important level first and the most important last."""
    queue: ap.PriorityQueue[Any] = ap.PriorityQueue(
        [ap.Level(p, max_size=1_000) for p in (0, 1, 2)], shrink_to=0.1, full_load=4.0
    )
    assert levels_of(queue) == [1_000, 1_000, 1_000]
    queue.adjust(2.0)  # a third of the way: level 2 fully shrunk, the others untouched
    assert levels_of(queue) == [1_000, 1_000, 100]
    queue.adjust(2.5)
    assert levels_of(queue) == [1_000, 550, 100]
    queue.adjust(4.0)
    assert levels_of(queue) == [100, 100, 100]
    queue.adjust(40.0)  # bounded: never below the floor
    assert levels_of(queue) == [100, 100, 100]
    assert queue.statistics().load == 40.0


def test_adjust_is_idempotent_and_relaxes() -> None:
    """The bounds depend on the load only; a load at or below 1 restores every max_size."""
    queue: ap.PriorityQueue[Any] = ap.PriorityQueue()
    queue.adjust(2.0)
    once = levels_of(queue)
    queue.adjust(2.0)
    assert levels_of(queue) == once
    queue.adjust(0.5)
    assert levels_of(queue) == [10_000, 10_000, 10_000]


def test_adjusted_bound_refuses_new_items_but_keeps_queued_ones() -> None:
    """A shrunk level keeps what it holds and refuses more until it drains below the bound."""
    queue: ap.PriorityQueue[Any] = ap.PriorityQueue([ap.Level(0, max_size=10)], full_load=2.0)
    for i in range(8):
        queue.put_nowait(i)
    queue.adjust(2.0)
    assert queue.statistics().level(0).bound == 1
    assert queue.qsize() == 8
    assert not queue.offer("more")
    queue.adjust(1.0)
    assert queue.offer("more")


@pytest.mark.virtual_time
async def test_relaxing_wakes_blocked_putters() -> None:
    """Raising a bound back lets waiting putters in at once."""
    queue: ap.PriorityQueue[Any] = ap.PriorityQueue([ap.Level(0, max_size=4)], full_load=2.0)
    queue.adjust(2.0)
    queue.put_nowait("a")
    putter = asyncio.create_task(queue.put("b"))
    await asyncio.sleep(0)
    assert not putter.done()
    queue.adjust(1.0)
    await putter
    assert queue.qsize() == 2


def test_adjust_validation() -> None:
    """Bad loads and settings are refused, naming the parameter."""
    queue: ap.PriorityQueue[Any] = ap.PriorityQueue()
    with pytest.raises(ValueError, match=r"^load must be >= 0, not -1$"):
        queue.adjust(-1)
    with pytest.raises(TypeError, match=r"^load must be a number, not str$"):
        queue.adjust("2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^shrink_to must be > 0 and <= 1$"):
        ap.PriorityQueue(shrink_to=0)
    with pytest.raises(ValueError, match=r"^full_load must be > 1 and finite$"):
        ap.PriorityQueue(full_load=1)


# -- priority shedding with a total bound ---------------------------------------------------


def shared_queue(drops: Drops, **kwargs: Any) -> ap.PriorityQueue[Any]:
    levels = kwargs.pop(
        "levels",
        [ap.Level(p, max_size=100, share=0.2) for p in (0, 1, 2)],
    )
    return ap.PriorityQueue(
        levels, max_total=10, on_drop=lambda i, r: drops.append((i, r)), **kwargs
    )


def test_levels_burst_into_spare_room_and_are_shed_lowest_first() -> None:
    """A low level may fill a roomy queue; important items then take its places, oldest first."""
    drops: Drops = []
    queue = shared_queue(drops)
    for i in range(10):
        queue.put_nowait(("low", i), 2)
    queue.put_nowait(("mid", 0), 1)
    queue.put_nowait(("high", 0), 0)
    assert drops == [(("low", 0), ap.DropReason.SHED), (("low", 1), ap.DropReason.SHED)]
    for i in range(1, 7):
        queue.put_nowait(("high", i), 0)
    # Level 2 is down to its guaranteed 2 items; level 1 holds 1, below its share.
    assert [level.depth for level in queue.statistics().levels] == [7, 1, 2]
    with pytest.raises(ap.QueueFull):
        queue.put_nowait(("high", 7), 0)
    assert queue.statistics().level(2).drops == {ap.DropReason.SHED: 8}


def test_a_level_below_its_share_takes_room_from_more_important_ones() -> None:
    """The guaranteed share holds against more important levels too, once the queue is full."""
    drops: Drops = []
    queue = shared_queue(drops)
    for i in range(10):
        queue.put_nowait(("high", i), 0)
    queue.put_nowait(("low", 0), 2)
    queue.put_nowait(("low", 1), 2)
    assert drops == [(("high", 0), ap.DropReason.SHED), (("high", 1), ap.DropReason.SHED)]
    with pytest.raises(ap.QueueFull):  # level 2 has its share now
        queue.put_nowait(("low", 2), 2)


def test_total_bound_follows_the_level_strategy_when_nothing_can_be_shed() -> None:
    """With no place to take, REJECT refuses and DROP_OLDEST evicts within its own level."""
    drops: Drops = []
    queue = shared_queue(
        drops,
        levels=[
            ap.Level(0, max_size=100, strategy=ap.DropStrategy.REJECT),
            ap.Level(1, max_size=100, strategy=ap.DropStrategy.DROP_OLDEST),
        ],
    )
    for i in range(5):
        queue.put_nowait(("a", i), 0)
        queue.put_nowait(("b", i), 1)
    queue.put_nowait(("b", 5), 1)  # nothing less important to shed: evicts its own oldest
    assert drops == [(("b", 0), ap.DropReason.EVICTED)]
    queue.put_nowait(("a", 5), 0)  # level 1 is less important: its oldest is shed
    assert drops[-1] == (("b", 1), ap.DropReason.SHED)
    for i in range(6, 10):
        queue.put_nowait(("a", i), 0)
    with pytest.raises(ap.Rejected, match=r"^the queue is full \(10 items\) and level 0"):
        queue.put_nowait(("a", 10), 0)
    assert drops[-1] == (("a", 10), ap.DropReason.REJECTED)
    assert queue.statistics().level(0).rejected == 1


async def test_blocked_putter_wakes_when_any_level_frees_room() -> None:
    """A putter waiting for room in a full queue is let in when an item of any level leaves."""
    drops: Drops = []
    queue = shared_queue(drops)
    for i in range(10):
        queue.put_nowait(i, 0)
    putter = asyncio.create_task(queue.put("waiting", 0))
    await wait_until(lambda: queue.statistics().waiting_putters == 1)
    assert queue.get_nowait() == 0
    await putter
    assert queue.qsize() == 10
    assert drops == []


def test_total_bound_validation() -> None:
    """Bad totals and shares are refused, naming the parameter."""
    with pytest.raises(ValueError, match=r"^max_total must be >= 1, not .+$"):
        ap.PriorityQueue(max_total=0)
    with pytest.raises(TypeError, match=r"^max_total must be an int, not float$"):
        ap.PriorityQueue(max_total=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^share must be between 0 and 1$"):
        ap.Level(0, share=1.5)
    with pytest.raises(ValueError, match=r"^the shares of the levels must add up to 1 at most$"):
        ap.PriorityQueue([ap.Level(0, share=0.6), ap.Level(1, share=0.6)], max_total=10)


# -- no item lost or reported twice ------------------------------------------------------

OP_ARGUMENTS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "put": st.tuples(st.integers(0, 2), st.sampled_from([None, None, 0.003, 0.02, 0.5])),
    "get": st.tuples(st.integers(1, 4)),
    "remove": st.tuples(st.integers(0, 200)),
    "sleep": st.tuples(st.sampled_from([0.0, 0.001, 0.004, 0.03, 0.2])),
    # Time passing before any timer runs: gets meet expired items first.
    "advance": st.tuples(st.sampled_from([0.001, 0.004, 0.03, 0.6])),
    "adjust": st.tuples(st.sampled_from([0.5, 1.0, 1.5, 2.5, 5.0])),
}
# Puts half the time, so that the levels and the total bound fill up and the
# strategies and the shedding come into play.
op_kinds = st.sampled_from(["put"] * 6 + [kind for kind in OP_ARGUMENTS if kind != "put"])
queue_ops = st.lists(
    op_kinds.flatmap(lambda kind: OP_ARGUMENTS[kind].map(lambda args: (kind, *args))),
    min_size=30,
    max_size=150,
)


async def _interleave(
    ops: list[tuple[Any, ...]], codel: ap.CoDel | None, max_total: int | None
) -> None:
    clock = current_virtual_clock()
    reported: list[tuple[int, ap.DropReason]] = []
    queue: ap.PriorityQueue[int] = ap.PriorityQueue(
        [
            ap.Level(0, max_size=4, strategy=ap.DropStrategy.REJECT, weight=3, share=0.2),
            ap.Level(1, max_size=4, strategy=ap.DropStrategy.DROP_OLDEST, weight=2, share=0.2),
            ap.Level(2, max_size=4, strategy=ap.DropStrategy.DROP_NEWEST, share=0.2),
        ],
        codel=codel,
        max_total=max_total,
        on_drop=lambda item, reason: reported.append((item, reason)),
        clock=clock,
        full_load=3.0,
    )
    accepted: dict[int, int] = {}
    taken: list[int] = []
    removed: list[int] = []
    rejected: list[int] = []
    for serial, op in enumerate(ops):
        if op[0] == "put":
            try:
                queue.put_nowait(serial, op[1], deadline=op[2])
                accepted[serial] = op[1]
            except ap.Rejected:
                rejected.append(serial)
            except ap.QueueFull:
                pass
        elif op[0] == "get":
            for _ in range(op[1]):
                try:
                    taken.append(queue.get_nowait())
                except ap.QueueEmpty:
                    break
        elif op[0] == "remove" and accepted:
            item = list(accepted)[op[1] % len(accepted)]
            if queue.remove(item, accepted[item]):
                removed.append(item)
        elif op[0] == "sleep":
            await clock.sleep(op[1])
        elif op[0] == "advance":
            clock.advance(op[1])
        elif op[0] == "adjust":
            queue.adjust(op[1])
    left: list[int] = []
    queue.adjust(1.0)
    while True:
        try:
            left.append(queue.get_nowait())
        except ap.QueueEmpty:
            break
    dropped = [item for item, reason in reported if reason is not ap.DropReason.REJECTED]
    refused = [item for item, reason in reported if reason is ap.DropReason.REJECTED]
    outcomes = taken + removed + dropped + left
    assert sorted(outcomes) == sorted(accepted), "every accepted item ends exactly once"
    assert sorted(refused) == sorted(rejected)
    stats = queue.statistics()
    assert sum(level.enqueued for level in stats.levels) == len(accepted)
    assert sum(level.dropped for level in stats.levels) == len(dropped)
    assert sum(level.rejected for level in stats.levels) == len(rejected)
    assert sum(level.removed for level in stats.levels) == len(removed)


@pytest.mark.parametrize(
    ("codel", "max_total"),
    [(None, None), (ap.CoDel(target=0.002, interval=0.01), None), (None, 6)],
    ids=["plain", "codel", "total"],
)
@settings(max_examples=150, deadline=None)
@given(ops=queue_ops)
def test_no_item_lost_or_reported_twice(
    codel: ap.CoDel | None, max_total: int | None, ops: list[Any]
) -> None:
    """Random puts, gets, removals, deadlines, sheds and adjusts account for every item once."""
    loop = VirtualEventLoop()
    try:
        loop.run_until_complete(_interleave(ops, codel, max_total))
    finally:
        loop.close()
