"""Layer 1: RateLimiter (GCRA): burst, steady rate, weighted costs, waiting, cancelling."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncperf.abc import Cancellable
from asyncperf.queues._rate import RateLimiter, RateLimiterStatistics
from asyncperf.testing import VirtualClock, VirtualEventLoop, wait_until


async def acquire_at(limiter: RateLimiter, clock: VirtualClock, cost: float = 1) -> float:
    """Acquire ``cost`` and return the virtual time at which it was admitted."""
    await limiter.acquire(cost)
    return clock.now()


async def parked(limiter: RateLimiter, count: int) -> None:
    """Let the loop run until ``count`` acquire() calls wait on ``limiter``."""
    await wait_until(lambda: limiter.statistics().waiting == count)


# -- construction -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"rate": 0}, ValueError, r"^rate must be > 0, not .+$"),
        ({"rate": -1.5}, ValueError, r"^rate must be > 0, not .+$"),
        ({"rate": math.nan}, ValueError, r"^rate must be > 0, not .+$"),
        ({"rate": math.inf}, ValueError, r"^rate must be finite, not .+$"),
        ({"rate": "5"}, TypeError, r"^rate must be a number, not str$"),
        ({"rate": True}, TypeError, r"^rate must be a number, not bool$"),
        ({"rate": 1, "per": 0}, ValueError, r"^per must be > 0, not .+$"),
        ({"rate": 1, "per": None}, TypeError, r"^per must be a number, not NoneType$"),
        ({"rate": 1, "burst": 0}, ValueError, r"^burst must be >= 1$"),
        ({"rate": 1, "burst": 2.0}, TypeError, r"^burst must be an int, not float$"),
        ({"rate": 1, "burst": True}, TypeError, r"^burst must be an int, not bool$"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    """Bad settings raise an error naming the parameter."""
    with pytest.raises(error, match=message):
        RateLimiter(**kwargs)


def test_bad_costs() -> None:
    """A cost that is not a positive number no larger than burst is refused by every call."""
    limiter = RateLimiter(1, burst=2)
    with pytest.raises(ValueError, match=r"^cost must be > 0, not .+$"):
        limiter.try_acquire(0)
    with pytest.raises(ValueError, match=r"^cost must be > 0, not .+$"):
        limiter.time_to_wait(-1)
    with pytest.raises(TypeError, match=r"^cost must be a number, not str$"):
        limiter.try_acquire("1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^cost must be <= burst \(2\), not 3$"):
        limiter.time_to_wait(3)
    with pytest.raises(ValueError, match=r"^cost must be <= burst \(2\), not 2\.5$"):
        limiter.try_acquire(2.5)
    assert limiter.statistics().admitted_calls == 0
    assert limiter.statistics().refused == 0


async def test_acquire_more_than_burst_fails_at_once() -> None:
    """acquire() of a cost above burst raises ValueError at once instead of waiting forever."""
    limiter = RateLimiter(1, burst=3)
    with pytest.raises(ValueError, match=r"^cost must be <= burst \(3\), not 4$"):
        await limiter.acquire(4)
    assert limiter.statistics().waiting == 0
    assert limiter.try_acquire(3)


@pytest.mark.parametrize(
    ("text", "rate", "per"),
    [
        ("300/min", 300.0, 60.0),
        ("300/minute", 300.0, 60.0),
        ("5/s", 5.0, 1.0),
        ("5/sec", 5.0, 1.0),
        ("5/second", 5.0, 1.0),
        ("1000/h", 1000.0, 3600.0),
        ("1000/hour", 1000.0, 3600.0),
        ("0.5/s", 0.5, 1.0),
        (" 12 / MIN ", 12.0, 60.0),
    ],
)
def test_parse_forms(text: str, rate: float, per: float) -> None:
    """parse() reads a count and a unit into rate and per, and passes burst on."""
    limiter = RateLimiter.parse(text, burst=7)
    assert (limiter.rate, limiter.per, limiter.burst) == (rate, per, 7)


@pytest.mark.parametrize("text", ["300", "300/day", "abc/s", "/s", "-1/s", "", "3/s/s", "1e3/s"])
def test_parse_errors(text: str) -> None:
    """Malformed text is a ValueError that quotes it."""
    expected = (
        rf"^cannot parse rate {re.escape(repr(text))}: expected 'N/s', 'N/min' or 'N/hour' "
        r"\(units s, sec, second, min, minute, h, hour\)$"
    )
    with pytest.raises(ValueError, match=expected):
        RateLimiter.parse(text)


def test_parse_refuses_zero_and_non_text() -> None:
    """A zero count fails like rate=0; a non-str is a TypeError naming text."""
    with pytest.raises(ValueError, match=r"^rate must be > 0, not .+$"):
        RateLimiter.parse("0/s")
    with pytest.raises(TypeError, match=r"^text must be a str, not int$"):
        RateLimiter.parse(300)  # type: ignore[arg-type]


# -- admission without waiting ------------------------------------------------------


@pytest.mark.virtual_time
async def test_burst_at_once_then_one_per_interval(clock: VirtualClock) -> None:
    """An idle limiter admits `burst` units at once, and the next one exactly T later."""
    limiter = RateLimiter(4, burst=3, clock=clock)  # T = 0.25 s
    assert [limiter.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert limiter.time_to_wait() == 0.25
    await clock.sleep(0.125)
    assert not limiter.try_acquire()
    assert limiter.time_to_wait() == 0.125
    await clock.sleep(0.125)
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    # After a quiet spell the whole burst is back, and no more than that.
    await clock.sleep(10.0)
    assert [limiter.try_acquire() for _ in range(4)] == [True, True, True, False]


@pytest.mark.virtual_time
async def test_long_run_admits_rate_times_duration_plus_burst(clock: VirtualClock) -> None:
    """A greedy caller polling for 20 s gets exactly rate*20 + burst units, no more."""
    limiter = RateLimiter(8, burst=5, clock=clock)
    admitted = 0
    for _ in range(20 * 64 + 1):  # every 1/64 s from 0 to 20 s inclusive
        while limiter.try_acquire():
            admitted += 1
        await clock.sleep(1 / 64)
    assert admitted == 8 * 20 + 5


@pytest.mark.virtual_time
async def test_long_run_with_per_and_inexact_interval(clock: VirtualClock) -> None:
    """At 300/min (T = 0.2 s, inexact in binary) acquire() admits 300*2 + burst units in 2 min."""
    limiter = RateLimiter.parse("300/min", burst=10, clock=clock)
    times = [await acquire_at(limiter, clock) for _ in range(611)]
    within = [t for t in times if t <= 120.0 + 1e-9]
    assert len(within) == 300 * 2 + 10
    assert times[-1] == pytest.approx(120.2)
    assert times[10] == pytest.approx(0.2)


@pytest.mark.virtual_time
async def test_weighted_costs(clock: VirtualClock) -> None:
    """Costs draw on the burst in proportion; what is left refills at the rate."""
    limiter = RateLimiter(2, burst=10, clock=clock)  # T = 0.5 s per unit
    assert limiter.try_acquire(7)
    assert not limiter.try_acquire(4)  # only 3 units are left
    assert limiter.time_to_wait(4) == 0.5
    assert limiter.try_acquire(2.5)
    assert limiter.time_to_wait(0.5) == 0.0
    assert limiter.time_to_wait(1) == 0.25
    await clock.sleep(2.5)  # 5 units come back
    assert limiter.try_acquire(5.5)
    assert not limiter.try_acquire(0.5)
    stats = limiter.statistics()
    assert (stats.admitted, stats.admitted_calls, stats.refused) == (15.0, 3, 2)


@pytest.mark.virtual_time
async def test_time_to_wait_exact_values(clock: VirtualClock) -> None:
    """time_to_wait() is 0 when the cost fits and otherwise the exact time until it does."""
    limiter = RateLimiter(1, per=2.0, burst=4, clock=clock)  # T = 2 s
    assert limiter.time_to_wait(4) == 0.0
    assert limiter.try_acquire(3)
    assert limiter.time_to_wait(1) == 0.0
    assert limiter.time_to_wait(2) == 2.0
    assert limiter.time_to_wait(4) == 6.0
    await clock.sleep(1.5)
    assert limiter.time_to_wait(4) == 4.5
    # A refusal changes nothing.
    assert not limiter.try_acquire(4)
    assert limiter.time_to_wait(4) == 4.5


# -- waiting ------------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_acquire_waits_exactly(clock: VirtualClock) -> None:
    """acquire() returns at the exact virtual time its cost fits."""
    limiter = RateLimiter(4, burst=4, clock=clock)
    assert await acquire_at(limiter, clock, 4) == 0.0
    assert await acquire_at(limiter, clock, 2) == 0.5
    assert await acquire_at(limiter, clock, 1) == 0.75
    await clock.sleep(0.25)
    assert await acquire_at(limiter, clock, 0.5) == 1.0
    assert limiter.statistics().total_wait_seconds == 0.75


async def test_free_acquire_does_not_yield() -> None:
    """acquire() that fits at once returns without letting another task run."""
    limiter = RateLimiter(1, burst=2)
    ran: list[int] = []

    async def other() -> None:
        ran.append(1)

    task = asyncio.create_task(other())
    await limiter.acquire()
    await limiter.acquire()
    assert ran == []
    await task
    assert limiter.statistics().admitted_calls == 2


@pytest.mark.virtual_time
async def test_waiters_are_served_fifo(clock: VirtualClock) -> None:
    """Waiters are admitted in arrival order, a big cost holding back small ones behind it."""
    limiter = RateLimiter(10, burst=3, clock=clock)  # T = 0.1 s
    assert limiter.try_acquire(3)
    order: list[tuple[str, float]] = []

    async def take(name: str, cost: float) -> None:
        await limiter.acquire(cost)
        order.append((name, clock.now()))

    async with asyncio.TaskGroup() as group:
        for count, (name, cost) in enumerate([("a", 1), ("b", 3), ("c", 1), ("d", 2)], 1):
            group.create_task(take(name, cost))
            await parked(limiter, count)
        assert limiter.statistics().waiting == 4
        assert limiter.time_to_wait(1) == pytest.approx(0.8)
        assert not limiter.try_acquire()  # the queue is not jumped
    assert [name for name, _ in order] == ["a", "b", "c", "d"]
    assert [when for _, when in order] == pytest.approx([0.1, 0.4, 0.5, 0.7])


@pytest.mark.virtual_time
async def test_cancelled_middle_waiter_frees_its_place(clock: VirtualClock) -> None:
    """Cancelling a waiter in the middle lets the ones behind in sooner; it consumes nothing."""
    limiter = RateLimiter(1, burst=2, clock=clock)
    assert limiter.try_acquire(2)
    first = asyncio.create_task(acquire_at(limiter, clock, 1))  # due at 1 s
    middle = asyncio.create_task(acquire_at(limiter, clock, 2))  # due at 3 s
    last = asyncio.create_task(acquire_at(limiter, clock, 1))  # due at 4 s, or 2 s without middle
    await parked(limiter, 3)
    assert limiter.time_to_wait(1) == 5.0
    middle.cancel()
    await parked(limiter, 2)
    assert limiter.time_to_wait(1) == 3.0
    assert await first == 1.0
    assert await last == 2.0
    assert middle.cancelled()
    stats = limiter.statistics()
    assert (stats.admitted, stats.admitted_calls, stats.waiting) == (4.0, 3, 0)
    assert stats.total_wait_seconds == 3.0


@pytest.mark.virtual_time
async def test_cancelled_head_waiter_moves_the_timer(clock: VirtualClock) -> None:
    """Cancelling the head waiter re-arms the timer for the next one's own cost."""
    limiter = RateLimiter(1, burst=2, clock=clock)
    assert limiter.try_acquire(2)
    head = asyncio.create_task(acquire_at(limiter, clock, 2))  # due at 2 s
    behind = asyncio.create_task(acquire_at(limiter, clock, 1))  # due at 3 s, or 1 s alone
    await parked(limiter, 2)
    await clock.sleep(0.5)
    head.cancel()
    assert await behind == 1.0
    assert head.cancelled()
    assert limiter.statistics().admitted == 3.0


class HookedClock:
    """A virtual clock that runs ``after_timer`` right after each timer callback."""

    def __init__(self, clock: VirtualClock, after_timer: Callable[[], None]) -> None:
        self._clock = clock
        self._after = after_timer

    def now(self) -> float:
        return self._clock.now()

    async def sleep(self, seconds: float) -> None:
        await self._clock.sleep(seconds)

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Cancellable:
        def run() -> None:
            callback(*args)
            self._after()

        return self._clock.call_later(delay, run)


@pytest.mark.virtual_time
async def test_waiter_cancelled_after_admission_is_refunded(clock: VirtualClock) -> None:
    """A waiter cancelled between its admission and its wake-up gives its units back."""
    tasks: list[asyncio.Task[float]] = []

    def cancel_first() -> None:
        tasks[0].cancel()

    limiter = RateLimiter(1, burst=1, clock=HookedClock(clock, cancel_first))
    assert limiter.try_acquire()
    tasks.append(asyncio.create_task(acquire_at(limiter, clock)))  # admitted at 1 s, cancelled
    tasks.append(asyncio.create_task(acquire_at(limiter, clock)))  # 2 s, or 1 s after the refund
    await parked(limiter, 2)
    assert await tasks[1] == 1.0
    assert tasks[0].cancelled()
    stats = limiter.statistics()
    assert (stats.admitted, stats.admitted_calls) == (2.0, 2)
    assert limiter.time_to_wait() == 1.0


async def test_cancelled_waiter_on_a_real_loop() -> None:
    """On asyncio and uvloop a parked waiter can be cancelled, and its timer goes with it."""
    limiter = RateLimiter(1, per=3600.0, burst=1)
    assert limiter.try_acquire()
    task = asyncio.create_task(limiter.acquire())
    await parked(limiter, 1)
    assert limiter.time_to_wait(1) == pytest.approx(7200.0, abs=1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = limiter.statistics()
    assert (stats.waiting, stats.admitted_calls) == (0, 1)
    assert 3500.0 < stats.next_free_in <= 3600.0


@pytest.mark.virtual_time
async def test_wait_for_timeout_consumes_nothing(clock: VirtualClock) -> None:
    """acquire() under asyncio.wait_for that times out leaves the limiter as it was."""
    limiter = RateLimiter(1, per=60.0, burst=1, clock=clock)
    assert limiter.try_acquire()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(limiter.acquire(), timeout=5.0)
    assert clock.now() == 5.0
    stats = limiter.statistics()
    assert (stats.admitted, stats.waiting, stats.next_free_in) == (1.0, 0, 55.0)


# -- statistics and repr ------------------------------------------------------------


@pytest.mark.virtual_time
async def test_statistics(clock: VirtualClock) -> None:
    """statistics() reports the settings, the counters and the time to the next unit."""
    limiter = RateLimiter(2, burst=2, clock=clock)
    assert limiter.try_acquire(2)
    assert not limiter.try_acquire()
    waiter = asyncio.create_task(limiter.acquire(1.5))
    await parked(limiter, 1)
    stats = limiter.statistics()
    assert stats == RateLimiterStatistics(
        rate=2.0,
        per=1.0,
        burst=2,
        admitted=2.0,
        admitted_calls=1,
        refused=1,
        waiting=1,
        total_wait_seconds=0.0,
        next_free_in=1.25,
    )
    await waiter
    assert clock.now() == 0.75
    stats = limiter.statistics()
    assert (stats.admitted, stats.admitted_calls, stats.waiting) == (3.5, 2, 0)
    assert stats.total_wait_seconds == 0.75
    assert stats.next_free_in == 0.5
    with pytest.raises(AttributeError):
        stats.admitted = 0  # type: ignore[misc]


@pytest.mark.virtual_time
async def test_repr_shows_state(clock: VirtualClock) -> None:
    """repr() shows the rate, the units available now and the waiters."""
    limiter = RateLimiter(300, per=60.0, burst=10, clock=clock)
    assert repr(limiter) == "<RateLimiter 300/60s burst 10, 10.00 available, 0 waiting>"
    assert limiter.try_acquire(7.5)
    assert repr(limiter) == "<RateLimiter 300/60s burst 10, 2.50 available, 0 waiting>"


# -- property: never more than rate * elapsed + burst -------------------------------

RATES = [(1.0, 1.0), (3.0, 1.0), (10.0, 2.0), (300.0, 60.0)]
costs = st.sampled_from([0.5, 1, 1, 2, 3])
operations = st.one_of(
    st.tuples(st.just("try"), costs),
    st.tuples(st.just("acquire"), costs),
    st.tuples(st.just("spawn"), costs),
    st.tuples(st.just("cancel"), st.integers(0, 20)),
    st.tuples(st.just("sleep"), st.sampled_from([0.0, 0.01, 0.1, 0.33, 1.0, 2.5])),
)


async def admission_scenario(
    rate: float, per: float, burst: int, ops: list[tuple[Any, ...]]
) -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualEventLoop)
    clock = loop.clock
    limiter = RateLimiter(rate, per, burst=burst, clock=clock)
    admissions: list[tuple[float, float]] = []
    tasks: list[asyncio.Task[None]] = []

    async def take(cost: float) -> None:
        await limiter.acquire(cost)
        admissions.append((clock.now(), cost))

    for op in ops:
        name, arg = op
        if name == "try":
            if limiter.try_acquire(arg):
                admissions.append((clock.now(), arg))
        elif name == "acquire":
            await take(arg)
        elif name == "spawn":
            tasks.append(asyncio.create_task(take(arg)))
            await asyncio.sleep(0)
        elif name == "cancel" and tasks:
            tasks[arg % len(tasks)].cancel()
            await asyncio.sleep(0)
        elif name == "sleep":
            await clock.sleep(arg)
    await asyncio.gather(*tasks, return_exceptions=True)

    admitted = 0.0
    for when, cost in sorted(admissions):
        admitted += cost
        assert admitted <= rate * when / per + burst + 1e-6, (when, admitted)
    stats = limiter.statistics()
    assert stats.admitted == pytest.approx(admitted)
    assert stats.admitted_calls == len(admissions)
    assert stats.waiting == 0


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rate_per=st.sampled_from(RATES),
    burst=st.integers(3, 6),
    ops=st.lists(operations, max_size=40),
)
def test_never_more_than_rate_times_elapsed_plus_burst(
    rate_per: tuple[float, float], burst: int, ops: list[tuple[Any, ...]]
) -> None:
    """Random try_acquire/acquire/cancel/sleep never admit more than rate*t/per + burst by t."""
    loop = VirtualEventLoop()
    try:
        loop.run_until_complete(admission_scenario(*rate_per, burst, ops))
    finally:
        loop.close()
