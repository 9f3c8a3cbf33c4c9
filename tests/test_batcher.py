"""Layer 1: Batcher: batching by size and by delay, per-item results, dedupe, backpressure,
cancellation, flush and close; every accepted item ends with a result or an error."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from asyncperf._errors import BatcherClosed, BatchFailed, ClosedError, QueueFull
from asyncperf.abc import Cancellable
from asyncperf.io._batcher import Batcher, BatcherStatistics
from asyncperf.testing import VirtualClock, wait_until

Result = int | BaseException


class Upstream:
    """A fake ``process_batch``: records each batch (and when it started on the clock),
    can hold batches until ``gate`` is set, and answers ``item * 10`` by default."""

    def __init__(
        self,
        clock: VirtualClock | None = None,
        *,
        hold: bool = False,
        duration: float = 0.0,
        answer: Callable[[list[int]], Sequence[Result]] | None = None,
    ) -> None:
        self.clock = clock
        self.gate = asyncio.Event()
        if not hold:
            self.gate.set()
        self.duration = duration
        self.answer = answer if answer is not None else (lambda items: [i * 10 for i in items])
        self.calls: list[list[int]] = []
        self.times: list[float] = []
        self.running = 0
        self.completed = 0
        self.cancelled = 0

    async def __call__(self, items: list[int]) -> Sequence[Result]:
        self.calls.append(list(items))
        if self.clock is not None:
            self.times.append(self.clock.now())
        self.running += 1
        try:
            await self.gate.wait()
            if self.duration:
                await asyncio.sleep(self.duration)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        self.completed += 1
        return self.answer(items)


def check_invariants(stats: BatcherStatistics) -> None:
    """The counters of a batcher add up (see BatcherStatistics)."""
    assert stats.submitted == stats.succeeded + stats.failed + stats.outstanding
    assert stats.submitted == stats.items + stats.deduplicated + stats.pending
    assert sum(stats.flushes.values()) == stats.batches
    assert set(stats.flushes) == {"size", "delay", "flush", "close"}
    assert 0 <= stats.batches_failed <= stats.batches
    assert stats.cancelled <= stats.succeeded + stats.failed
    if stats.batches:
        assert stats.mean_batch_size == pytest.approx(stats.items / stats.batches)


def flushes(**counts: int) -> dict[str, int]:
    return {"size": 0, "delay": 0, "flush": 0, "close": 0, **counts}


# -- construction -------------------------------------------------------------------


async def _noop(items: list[int]) -> list[int]:
    return items


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_size": 0}, ValueError, r"^max_size must be >= 1, not 0$"),
        ({"max_size": 2.0}, TypeError, r"^max_size must be an int, not float$"),
        ({"max_size": True}, TypeError, r"^max_size must be an int, not bool$"),
        ({"max_delay": -0.1}, ValueError, r"^max_delay must be >= 0, not -0\.1$"),
        ({"max_delay": math.nan}, ValueError, r"^max_delay must be >= 0, not nan$"),
        ({"max_delay": math.inf}, ValueError, r"^max_delay must be finite, not inf$"),
        ({"max_delay": "1"}, TypeError, r"^max_delay must be a number, not str$"),
        ({"max_concurrency": 0}, ValueError, r"^max_concurrency must be >= 1, not 0$"),
        ({"max_concurrency": None}, TypeError, r"^max_concurrency must be an int, not NoneType$"),
        ({"key": 5}, TypeError, r"^key must be callable or None, not int$"),
        ({"name": 3}, TypeError, r"^name must be a str, not int$"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    """Bad settings raise an error naming the parameter."""
    with pytest.raises(error, match=message):
        Batcher(_noop, **kwargs)


def test_process_batch_must_be_callable() -> None:
    """A process_batch that is not callable is refused at once."""
    with pytest.raises(TypeError, match=r"^process_batch must be callable, not NoneType$"):
        Batcher(None)  # type: ignore[arg-type]


def test_settings_and_repr() -> None:
    """The settings read back, and repr shows the live state."""
    batcher: Batcher[int, int] = Batcher(
        _noop, max_size=8, max_delay=0, max_concurrency=3, name="users"
    )
    assert (batcher.name, batcher.max_size, batcher.max_delay, batcher.max_concurrency) == (
        "users",
        8,
        0.0,
        3,
    )
    assert (batcher.pending, batcher.in_flight, batcher.closed) == (0, 0, False)
    assert repr(batcher) == "<Batcher 'users' open: 0 pending, 0/3 batches in flight>"
    stats = batcher.statistics()
    assert stats.batches == stats.items == stats.submitted == 0
    assert stats.mean_batch_size == stats.wait_mean == stats.processing_p99 == 0.0
    check_invariants(stats)


# -- when batches are sent ------------------------------------------------------------


class CountingClock:
    """A VirtualClock that records the timers asked of it."""

    def __init__(self, inner: VirtualClock) -> None:
        self.inner = inner
        self.timers: list[asyncio.TimerHandle] = []

    def now(self) -> float:
        return self.inner.now()

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Cancellable:
        handle = self.inner.call_later(delay, callback, *args)
        assert isinstance(handle, asyncio.TimerHandle)
        self.timers.append(handle)
        return handle


@pytest.mark.virtual_time
async def test_full_batch_is_sent_at_once(clock: VirtualClock) -> None:
    """max_size pending items are sent at once (reason size), without waiting max_delay."""
    upstream = Upstream(clock)
    start = clock.now()
    async with Batcher(upstream, max_size=3, max_delay=10.0, clock=clock) as batcher:
        results = await asyncio.gather(*(batcher.submit(i) for i in (1, 2, 3)))
        assert results == [10, 20, 30]
        assert upstream.calls == [[1, 2, 3]]
        assert upstream.times == [start]
        stats = batcher.statistics()
    assert clock.now() == start
    assert stats.flushes == flushes(size=1)
    assert (stats.batches, stats.items, stats.succeeded, stats.outstanding) == (1, 3, 3, 0)
    check_invariants(stats)


@pytest.mark.virtual_time
async def test_batch_is_sent_max_delay_after_its_oldest_item(clock: VirtualClock) -> None:
    """A batch not full is sent max_delay after its first item arrived, not its last."""
    upstream = Upstream(clock)
    async with Batcher(upstream, max_size=10, max_delay=0.005, clock=clock) as batcher:
        first_at = clock.now()
        first = asyncio.create_task(batcher.submit(1))
        await clock.sleep(0.002)
        second = asyncio.create_task(batcher.submit(2))
        assert list(await asyncio.gather(first, second)) == [10, 20]
        assert upstream.calls == [[1, 2]]
        assert upstream.times == [pytest.approx(first_at + 0.005, abs=1e-9)]

        # The next batch gets its own timer, started by its own first item.
        later = clock.now() + 1.0
        await clock.sleep(later - clock.now())
        assert await batcher.submit(3) == 30
        assert upstream.times[1] == pytest.approx(later + 0.005, abs=1e-9)
        stats = batcher.statistics()
    assert stats.flushes == flushes(delay=2)
    # Items 1, 2, 3 waited 5, 3 and 5 ms from submission to the start of their batch.
    assert stats.wait_mean == pytest.approx((0.005 + 0.003 + 0.005) / 3)
    assert stats.wait_p99 == pytest.approx(0.005)
    check_invariants(stats)


@pytest.mark.virtual_time
async def test_one_timer_per_batch_cancelled_when_sent_by_size(clock: VirtualClock) -> None:
    """Only a batch's first item starts a timer, and a batch sent by size cancels it."""
    counting = CountingClock(clock)
    upstream = Upstream(clock)
    async with Batcher(upstream, max_size=3, max_delay=0.01, clock=counting) as batcher:
        futures = [batcher.submit_nowait(i) for i in (1, 2, 3)]
        assert len(counting.timers) == 1
        assert counting.timers[0].cancelled()
        assert await asyncio.gather(*futures) == [10, 20, 30]

        assert list(await asyncio.gather(batcher.submit(4), batcher.submit(5))) == [40, 50]
        assert len(counting.timers) == 2
        assert not counting.timers[1].cancelled()  # it fired: the batch went by delay
        stats = batcher.statistics()
    assert upstream.calls == [[1, 2, 3], [4, 5]]
    assert stats.flushes == flushes(size=1, delay=1)


@pytest.mark.virtual_time
async def test_zero_delay_batches_what_arrives_in_one_loop_pass(clock: VirtualClock) -> None:
    """With max_delay=0, items submitted before the loop runs its timers share a batch."""
    upstream = Upstream(clock)
    async with Batcher(upstream, max_size=100, max_delay=0, clock=clock) as batcher:
        assert await asyncio.gather(*(batcher.submit(i) for i in range(5))) == [
            0,
            10,
            20,
            30,
            40,
        ]
    assert upstream.calls == [[0, 1, 2, 3, 4]]


# -- results and errors -----------------------------------------------------------------


@pytest.mark.virtual_time
async def test_per_item_exception_goes_to_its_caller_only(clock: VirtualClock) -> None:
    """An exception returned for one item is raised to its caller; its neighbours succeed."""
    errors = {i: ValueError(f"bad item {i}") for i in (1, 3)}
    upstream = Upstream(
        clock,
        answer=lambda items: [errors.get(i, i * 10) for i in items],
    )
    async with Batcher(upstream, max_size=4, clock=clock) as batcher:
        results = await asyncio.gather(
            *(batcher.submit(i) for i in range(4)), return_exceptions=True
        )
        stats = batcher.statistics()
    assert results == [0, errors[1], 20, errors[3]]
    assert results[1] is errors[1]
    assert (stats.succeeded, stats.failed, stats.batches_failed) == (2, 2, 0)
    check_invariants(stats)


@pytest.mark.virtual_time
async def test_batch_exception_fails_every_item_with_the_cause_chained(
    clock: VirtualClock,
) -> None:
    """process_batch raising fails each item with its own BatchFailed caused by the error."""
    cause = RuntimeError("upstream down")

    def down(items: list[int]) -> list[Result]:
        raise cause

    upstream = Upstream(clock, answer=down)
    async with Batcher(upstream, max_size=3, clock=clock, name="users") as batcher:
        results = await asyncio.gather(
            *(batcher.submit(i) for i in range(3)), return_exceptions=True
        )
        # The batcher goes on working after a failed batch.
        upstream.answer = lambda items: [i * 10 for i in items]
        assert await asyncio.gather(*(batcher.submit(i) for i in range(3))) == [0, 10, 20]
        stats = batcher.statistics()
    assert all(isinstance(result, BatchFailed) for result in results)
    assert len({id(result) for result in results}) == 3
    for result in results:
        assert isinstance(result, BatchFailed)
        assert str(result) == (
            "batcher 'users': batch of 3 items failed: process_batch raised RuntimeError: "
            "upstream down"
        )
        assert result.__cause__ is cause
    assert (stats.batches, stats.batches_failed, stats.failed, stats.succeeded) == (2, 1, 3, 3)
    check_invariants(stats)


@pytest.mark.virtual_time
@pytest.mark.parametrize(
    ("answer", "what", "cause"),
    [
        (
            lambda items: [1] * (len(items) - 1),
            "process_batch returned 2 results for 3 items",
            None,
        ),
        (
            lambda items: [1] * (len(items) + 1),
            "process_batch returned 4 results for 3 items",
            None,
        ),
        (lambda items: None, "process_batch raised TypeError: ", TypeError),
    ],
    ids=["too-few", "too-many", "not-a-sequence"],
)
async def test_broken_contract_fails_the_whole_batch(
    clock: VirtualClock,
    answer: Callable[[list[int]], Sequence[Result]],
    what: str,
    cause: type[BaseException] | None,
) -> None:
    """A wrong number of results (or no sequence at all) fails every item of the batch."""
    upstream = Upstream(clock, answer=answer)
    async with Batcher(upstream, max_size=3, clock=clock) as batcher:
        results = await asyncio.gather(
            *(batcher.submit(i) for i in range(3)), return_exceptions=True
        )
        stats = batcher.statistics()
    for result in results:
        assert isinstance(result, BatchFailed)
        assert str(result).startswith(f"batcher 'batcher': batch of 3 items failed: {what}")
        if cause is None:
            assert result.__cause__ is None
        else:
            assert isinstance(result.__cause__, cause)
    assert (stats.failed, stats.batches_failed) == (3, 1)
    check_invariants(stats)


@pytest.mark.virtual_time
async def test_cancellation_escaping_process_batch_fails_only_its_batch(
    clock: VirtualClock,
) -> None:
    """A CancelledError of process_batch's own fails its items; the batcher carries on."""

    async def cancelled_inside(items: list[int]) -> list[int]:
        raise asyncio.CancelledError("an inner await was cancelled")

    async with Batcher(cancelled_inside, max_size=2, clock=clock) as batcher:
        results = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        stats = batcher.statistics()
    for result in results:
        assert isinstance(result, BatchFailed)
        assert str(result) == "batcher 'batcher': batch of 2 items failed: was cancelled"
        assert isinstance(result.__cause__, asyncio.CancelledError)
    assert (stats.failed, stats.batches_failed, stats.in_flight) == (2, 1, 0)


# -- deduplication -------------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_equal_keys_in_one_batch_are_sent_once_and_fanned_out(clock: VirtualClock) -> None:
    """Items of equal key in one batch reach process_batch once; every caller gets the result."""
    seen: list[list[str]] = []
    failure = LookupError("no such user")

    async def lookup(names: list[str]) -> list[str | BaseException]:
        seen.append(list(names))
        return [failure if name == "x" else name.upper() for name in names]

    async with Batcher(lookup, max_size=10, key=str.lower, clock=clock) as batcher:
        results = await asyncio.gather(
            *(batcher.submit(name) for name in ("a", "A", "b", "x", "a", "X")),
            return_exceptions=True,
        )
        # Dedupe is within one batch: the next batch sends "a" again.
        assert await batcher.submit("a") == "A"
        stats = batcher.statistics()
    assert seen == [["a", "b", "x"], ["a"]]
    assert results == ["A", "A", "B", failure, "A", failure]
    assert results[5] is failure
    assert (stats.submitted, stats.items, stats.deduplicated) == (7, 4, 3)
    assert (stats.succeeded, stats.failed) == (5, 2)
    check_invariants(stats)


@pytest.mark.virtual_time
async def test_deduplicated_callers_of_a_failed_batch_get_their_own_errors(
    clock: VirtualClock,
) -> None:
    """When a batch fails, every caller of a shared key gets its own BatchFailed."""

    async def down(names: list[str]) -> list[str]:
        raise OSError("unreachable")

    async with Batcher(down, max_size=10, key=str, clock=clock) as batcher:
        results = await asyncio.gather(
            batcher.submit("k"), batcher.submit("k"), return_exceptions=True
        )
        stats = batcher.statistics()
    assert all(isinstance(result, BatchFailed) for result in results)
    assert results[0] is not results[1]
    assert str(results[0]).startswith("batcher 'batcher': batch of 1 items failed:")
    assert (stats.failed, stats.items, stats.deduplicated) == (2, 1, 1)


def unhashable_key(item: int) -> Any:
    return [item]


async def test_unhashable_key_is_refused_before_acceptance() -> None:
    """A key function giving an unhashable key makes submit raise; nothing is accepted."""
    batcher: Batcher[int, int] = Batcher(_noop, key=unhashable_key)
    with pytest.raises(TypeError, match="unhashable"):
        await batcher.submit(1)
    with pytest.raises(TypeError, match="unhashable"):
        _ = batcher.submit_nowait(1)
    await batcher.aclose()
    assert batcher.statistics().submitted == 0


# -- backpressure ----------------------------------------------------------------------------


async def test_submit_waits_in_line_when_batches_run_and_the_next_is_full() -> None:
    """At max_concurrency batches and a full next batch, submit waits (FIFO), nowait refuses."""
    upstream = Upstream(hold=True)
    async with Batcher(upstream, max_size=2, max_delay=60.0, max_concurrency=1) as batcher:
        first = [batcher.submit_nowait(1), batcher.submit_nowait(2)]
        await wait_until(lambda: upstream.running == 1)
        second = [batcher.submit_nowait(3), batcher.submit_nowait(4)]
        with pytest.raises(QueueFull, match=r"^Batcher 'batcher' is full: 2 items wait for"):
            _ = batcher.submit_nowait(5)
        waiting = [asyncio.create_task(batcher.submit(i)) for i in (5, 6, 7)]
        await wait_until(lambda: batcher.statistics().waiting == 3)
        stats = batcher.statistics()
        assert (stats.submitted, stats.pending, stats.in_flight) == (4, 2, 1)
        assert upstream.calls == [[1, 2]]
        # A submit_nowait may not jump the line either.
        with pytest.raises(QueueFull):
            _ = batcher.submit_nowait(8)

        upstream.gate.set()
        assert await asyncio.gather(*first, *second, *waiting[:2]) == [10, 20, 30, 40, 50, 60]
        # Item 7 came into a batch of its own, which leaving `async with` sends.
        assert (batcher.pending, waiting[2].done()) == (1, False)
    assert await waiting[2] == 70
    stats = batcher.statistics()
    assert upstream.calls == [[1, 2], [3, 4], [5, 6], [7]]
    assert stats.flushes == flushes(size=3, close=1)
    assert (stats.submitted, stats.rejected, stats.waiting) == (7, 0, 0)
    check_invariants(stats)


async def test_free_slot_takes_a_full_batch_at_once() -> None:
    """With a free batch slot, a full batch is sent while another is still running."""
    upstream = Upstream(hold=True)
    async with Batcher(upstream, max_size=2, max_delay=60.0, max_concurrency=2) as batcher:
        futures = [batcher.submit_nowait(i) for i in range(4)]
        assert batcher.in_flight == 2
        await wait_until(lambda: upstream.running == 2)
        upstream.gate.set()
        assert await asyncio.gather(*futures) == [0, 10, 20, 30]
    assert upstream.calls == [[0, 1], [2, 3]]


async def test_cancelled_waiter_leaves_the_line_unaccepted() -> None:
    """A submit cancelled while it waits for room is never accepted nor sent."""
    upstream = Upstream(hold=True)
    async with Batcher(upstream, max_size=1, max_delay=60.0, max_concurrency=1) as batcher:
        running = batcher.submit_nowait(1)
        await wait_until(lambda: upstream.running == 1)
        queued = batcher.submit_nowait(2)
        giving_up = asyncio.create_task(batcher.submit(3))
        behind = asyncio.create_task(batcher.submit(4))
        await wait_until(lambda: batcher.statistics().waiting == 2)
        giving_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await giving_up
        assert batcher.statistics().waiting == 1
        upstream.gate.set()
        assert list(await asyncio.gather(running, queued, behind)) == [10, 20, 40]
        stats = batcher.statistics()
    assert upstream.calls == [[1], [2], [4]]
    assert (stats.submitted, stats.cancelled, stats.succeeded) == (3, 0, 3)
    check_invariants(stats)


# -- cancellation of callers -------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_cancelled_caller_leaves_its_pending_batch_intact(clock: VirtualClock) -> None:
    """Cancelling one caller keeps its item in the batch; its neighbours get their results."""
    upstream = Upstream(clock)
    async with Batcher(upstream, max_size=10, max_delay=0.01, clock=clock) as batcher:
        callers = [asyncio.create_task(batcher.submit(i)) for i in (1, 2, 3)]
        await wait_until(lambda: batcher.pending == 3)
        callers[1].cancel()
        with pytest.raises(asyncio.CancelledError):
            await callers[1]
        assert batcher.pending == 3
        assert list(await asyncio.gather(callers[0], callers[2])) == [10, 30]
        stats = batcher.statistics()
    assert upstream.calls == [[1, 2, 3]]
    assert (stats.cancelled, stats.succeeded, stats.failed, stats.outstanding) == (1, 3, 0, 0)
    assert (stats.batches, stats.items) == (1, 3)
    check_invariants(stats)


async def test_cancelled_caller_does_not_cancel_its_running_batch() -> None:
    """Cancelling a caller whose batch runs leaves the batch running to its end."""
    upstream = Upstream(hold=True)
    async with Batcher(upstream, max_size=2, max_delay=60.0) as batcher:
        callers = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
        await wait_until(lambda: upstream.running == 1)
        callers[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await callers[0]
        upstream.gate.set()
        assert await callers[1] == 20
        stats = batcher.statistics()
    assert (upstream.completed, upstream.cancelled) == (1, 0)
    assert (stats.cancelled, stats.succeeded, stats.outstanding) == (1, 2, 0)
    check_invariants(stats)


@pytest.mark.virtual_time
async def test_cancelled_future_of_submit_nowait_drops_only_its_result(
    clock: VirtualClock,
) -> None:
    """Cancelling a submit_nowait future is a caller giving up: counted, the item still sent."""
    upstream = Upstream(
        clock,
        answer=lambda items: [ValueError(i) for i in items],
    )
    async with Batcher(upstream, max_size=10, key=abs, clock=clock) as batcher:
        dropped = batcher.submit_nowait(-1)
        kept = batcher.submit_nowait(1)  # same key: shares the item, not the future
        dropped.cancel()
        with pytest.raises(ValueError, match="-1"):
            await kept
        stats = batcher.statistics()
    assert upstream.calls == [[-1]]
    assert (stats.cancelled, stats.failed, stats.deduplicated) == (1, 2, 1)
    check_invariants(stats)


# -- flush and close --------------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_flush_sends_pending_items_and_waits_for_started_batches(
    clock: VirtualClock,
) -> None:
    """flush() sends what is pending now and returns once every batch so far has ended."""
    upstream = Upstream(clock, duration=1.0)
    async with Batcher(
        upstream, max_size=2, max_delay=60.0, max_concurrency=2, clock=clock
    ) as batcher:
        await batcher.flush()  # nothing to do
        start = clock.now()
        full = [batcher.submit_nowait(1), batcher.submit_nowait(2)]  # runs until start + 1
        await clock.sleep(0.5)
        partial = batcher.submit_nowait(3)
        await batcher.flush()
        assert clock.now() == pytest.approx(start + 1.5)
        assert all(future.done() for future in [*full, partial])
        stats = batcher.statistics()
        assert (stats.in_flight, stats.pending) == (0, 0)
    assert upstream.calls == [[1, 2], [3]]
    assert stats.flushes == flushes(size=1, flush=1)
    assert stats.processing_p50 == pytest.approx(1.0)


async def test_flush_waits_for_a_slot_for_the_pending_batch() -> None:
    """With every slot busy, flush() sends the pending batch when one frees, and waits for it."""
    upstream = Upstream(hold=True)
    async with Batcher(upstream, max_size=2, max_delay=60.0, max_concurrency=1) as batcher:
        futures = [batcher.submit_nowait(i) for i in (1, 2, 3)]
        await wait_until(lambda: upstream.running == 1)
        flushing = asyncio.create_task(batcher.flush())
        upstream.gate.set()
        await flushing
        # Had flush() returned before the pending batch ran, item 3 would still be waiting.
        assert all(future.done() for future in futures)
        assert await asyncio.gather(*futures) == [10, 20, 30]
        stats = batcher.statistics()
    assert upstream.calls == [[1, 2], [3]]
    assert stats.flushes == flushes(size=1, flush=1)


async def test_aclose_sends_everything_pending_and_loses_nothing() -> None:
    """aclose() waits for running batches and sends the pending items (reason close)."""
    upstream = Upstream(hold=True)
    batcher: Batcher[int, Result] = Batcher(upstream, max_size=5, max_delay=60.0, max_concurrency=8)
    callers = [asyncio.create_task(batcher.submit(i)) for i in range(33)]
    await wait_until(lambda: batcher.statistics().submitted == 33)
    assert (batcher.in_flight, batcher.pending) == (6, 3)
    closing = asyncio.create_task(batcher.aclose())
    await wait_until(lambda: batcher.closed and upstream.running == 7)
    assert not closing.done()
    upstream.gate.set()
    await closing
    assert await asyncio.gather(*callers) == [i * 10 for i in range(33)]
    assert sorted(item for call in upstream.calls for item in call) == list(range(33))
    stats = batcher.statistics()
    assert stats.flushes == flushes(size=6, close=1)
    assert (stats.succeeded, stats.failed, stats.outstanding, stats.in_flight) == (33, 0, 0, 0)
    check_invariants(stats)
    assert repr(batcher) == "<Batcher 'batcher' closed: 0 pending, 0/8 batches in flight>"


async def test_closed_batcher_refuses_new_items() -> None:
    """After aclose(), submit and submit_nowait raise BatcherClosed; aclose is idempotent."""
    async with Batcher(_noop, name="writes") as batcher:
        assert await batcher.submit(1) == 1
    await batcher.aclose()
    message = r"^Cannot submit to batcher 'writes': it has been closed\.$"
    with pytest.raises(BatcherClosed, match=message):
        await batcher.submit(2)
    with pytest.raises(BatcherClosed, match=message):
        _ = batcher.submit_nowait(3)
    assert issubclass(BatcherClosed, ClosedError)
    assert issubclass(BatcherClosed, RuntimeError)
    stats = batcher.statistics()
    assert (stats.submitted, stats.succeeded, stats.rejected) == (1, 1, 2)
    check_invariants(stats)


async def test_aclose_refuses_submits_still_waiting_for_room() -> None:
    """A submit blocked on backpressure was never accepted: aclose makes it raise BatcherClosed."""
    upstream = Upstream(hold=True)
    batcher: Batcher[int, Result] = Batcher(
        upstream, max_size=2, max_delay=60.0, max_concurrency=1, name="b"
    )
    accepted = [batcher.submit_nowait(i) for i in range(4)]
    await wait_until(lambda: upstream.running == 1)
    blocked = asyncio.create_task(batcher.submit(4))
    await wait_until(lambda: batcher.statistics().waiting == 1)
    closing = asyncio.create_task(batcher.aclose())
    with pytest.raises(BatcherClosed, match=r"^Batcher 'b' was closed before it had room\.$"):
        await blocked
    upstream.gate.set()
    await closing
    assert await asyncio.gather(*accepted) == [0, 10, 20, 30]
    stats = batcher.statistics()
    assert (stats.submitted, stats.rejected, stats.succeeded, stats.waiting) == (4, 1, 4, 0)
    assert stats.flushes == flushes(size=2)  # the second batch was already due by size
    check_invariants(stats)


@pytest.mark.virtual_time
async def test_cancelled_aclose_fails_every_item_instead_of_hanging(clock: VirtualClock) -> None:
    """If aclose() is cancelled, running batches are cancelled and unsent items fail."""
    upstream = Upstream(clock, hold=True)
    batcher: Batcher[int, Result] = Batcher(
        upstream, max_size=2, max_delay=60.0, max_concurrency=1, clock=clock, name="b"
    )
    futures = [batcher.submit_nowait(i) for i in range(3)]
    await wait_until(lambda: upstream.running == 1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await batcher.aclose()
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert [str(result) for result in results] == [
        "batcher 'b': batch of 2 items failed: was cancelled",
        "batcher 'b': batch of 2 items failed: was cancelled",
        "batcher 'b': 1 pending items were not sent: aclose() was cancelled",
    ]
    assert all(isinstance(result, BatchFailed) for result in results)
    first = results[0]
    assert isinstance(first, BatchFailed)
    assert isinstance(first.__cause__, asyncio.CancelledError)
    assert upstream.cancelled == 1
    stats = batcher.statistics()
    assert (stats.failed, stats.outstanding, stats.in_flight, stats.pending) == (3, 0, 0, 0)
    assert (stats.batches, stats.batches_failed) == (1, 1)
    assert batcher.closed
    await batcher.aclose()  # nothing left: returns at once


@pytest.mark.virtual_time
async def test_flush_waiting_for_an_unsent_batch_returns_when_aclose_is_cancelled(
    clock: VirtualClock,
) -> None:
    """A flush() waiting for a batch that a cancelled aclose() never sent is released."""
    upstream = Upstream(clock, hold=True)
    batcher: Batcher[int, Result] = Batcher(
        upstream, max_size=2, max_delay=60.0, max_concurrency=1, clock=clock, name="b"
    )
    futures = [batcher.submit_nowait(i) for i in range(3)]
    await wait_until(lambda: upstream.running == 1)
    flushing = asyncio.create_task(batcher.flush())  # waits for the running and the unsent batch
    await wait_until(lambda: batcher.statistics().pending == 1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await batcher.aclose()
    async with asyncio.timeout(1.0):  # virtual: only fails if flush() never returns
        await flushing
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(result, BatchFailed) for result in results)
    assert batcher.statistics().outstanding == 0
    await batcher.flush()  # closed and empty: returns at once


# -- statistics and real loops ------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_statistics_count_batches_sizes_reasons_and_waits(clock: VirtualClock) -> None:
    """Each reason to send a batch is counted; sizes and waits are exact on virtual time."""
    upstream = Upstream(clock, duration=0.5)
    batcher: Batcher[int, Result] = Batcher(upstream, max_size=4, max_delay=0.01, clock=clock)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(4))) == [0, 10, 20, 30]
    assert list(await asyncio.gather(batcher.submit(4), batcher.submit(5))) == [40, 50]
    sent_by_flush = batcher.submit_nowait(6)
    await batcher.flush()
    sent_by_close = batcher.submit_nowait(7)
    await batcher.aclose()
    assert (await sent_by_flush, await sent_by_close) == (60, 70)
    stats = batcher.statistics()
    assert stats.flushes == flushes(size=1, delay=1, flush=1, close=1)
    assert (stats.batches, stats.items, stats.submitted, stats.succeeded) == (4, 8, 8, 8)
    assert stats.mean_batch_size == 2.0
    assert stats.p99_batch_size == 4.0
    # Only the two items sent by delay waited (10 ms each).
    assert stats.wait_mean == pytest.approx(2 * 0.01 / 8)
    assert stats.wait_p99 == pytest.approx(0.01)
    assert stats.processing_p50 == stats.processing_p99 == pytest.approx(0.5)
    assert stats.name == "batcher"
    check_invariants(stats)


async def test_burst_on_a_real_loop_sends_every_item_exactly_once() -> None:
    """Hundreds of concurrent callers on asyncio and uvloop: each item in exactly one batch."""
    seen: list[list[int]] = []

    async def process(items: list[int]) -> list[int]:
        seen.append(list(items))
        await asyncio.sleep(0)
        return [i * 10 for i in items]

    async with Batcher(process, max_size=16, max_delay=0.001, max_concurrency=2) as batcher:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(300)))
        stats = batcher.statistics()
    assert results == [i * 10 for i in range(300)]
    assert sorted(item for batch in seen for item in batch) == list(range(300))
    assert all(1 <= len(batch) <= 16 for batch in seen)
    assert stats.batches == len(seen)
    assert (stats.succeeded, stats.outstanding, stats.in_flight) == (300, 0, 0)
    check_invariants(stats)
