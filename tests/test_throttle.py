"""Layer 1: client-side Throttle (SRE formula) and RetryBudget with backoff."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest

from asyncperf.abc import Cancellable
from asyncperf.queues._throttle import (
    Backoff,
    RetryBudget,
    RetryBudgetStatistics,
    Throttle,
    ThrottleStatistics,
)
from asyncperf.testing import VirtualClock


def never_random() -> float:
    """A random source for cases that must not draw: fails the test if called."""
    raise AssertionError("random() was called with a rejection probability of 0")


def even_random() -> Callable[[], float]:
    """A deterministic, evenly spread random source: n * golden ratio, modulo 1."""
    values = ((n * 0.6180339887498949) % 1.0 for n in itertools.count(1))
    return lambda: next(values)


def sre_probability(requests: float, accepts: float, k: float) -> float:
    return max(0.0, (requests - k * accepts) / (requests + 1))


# -- Throttle -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"k": 0.5}, ValueError, r"^k must be >= 1, not .+$"),
        ({"k": math.nan}, ValueError, r"^k must be >= 1, not .+$"),
        ({"k": "2"}, TypeError, r"^k must be a number, not str$"),
        ({"window": 0}, ValueError, r"^window must be > 0, not .+$"),
        ({"window": math.inf}, ValueError, r"^window must be finite, not .+$"),
        ({"random": 0.5}, TypeError, r"^random must be callable, not float$"),
    ],
)
def test_throttle_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Bad Throttle settings raise an error naming the parameter."""
    with pytest.raises(error, match=message):
        Throttle(**kwargs)


@pytest.mark.parametrize("k", [1.0, 2.0])
def test_healthy_upstream_is_never_throttled(k: float) -> None:
    """With every request accepted the probability stays 0 and nothing is rejected."""
    clock = VirtualClock()
    throttle = Throttle(k, window=10.0, clock=clock, random=never_random)
    for _ in range(5_000):
        assert throttle.allow()
        throttle.record(accepted=True)
        assert throttle.probability() == 0.0
        clock.advance(0.01)
    stats = throttle.statistics()
    assert (stats.throttled, stats.rejected, stats.probability) == (0, 0, 0.0)


def test_probability_follows_the_formula() -> None:
    """probability() is max(0, (requests - k*accepts) / (requests + 1)) of the counts."""
    clock = VirtualClock()
    throttle = Throttle(2.0, clock=clock, random=lambda: 0.999)
    assert throttle.probability() == 0.0
    for accepted in [True] * 4 + [False] * 6:
        assert throttle.allow()
        throttle.record(accepted)
    assert throttle.probability() == pytest.approx(2 / 11)
    assert throttle.statistics() == ThrottleStatistics(
        requests=10.0, accepts=4.0, throttled=0, rejected=6, probability=2 / 11
    )
    # k=1 is stricter: the same counts give (10 - 4) / 11.
    strict = Throttle(1.0, clock=clock)
    for accepted in [True] * 4 + [False] * 6:
        strict.allow()
        strict.record(accepted)
    assert strict.probability() == pytest.approx(6 / 11)


def test_first_request_always_goes_through() -> None:
    """A fresh throttle's first allow() is decided on empty counts: probability 0."""
    throttle = Throttle(clock=VirtualClock(), random=never_random)
    assert throttle.allow()
    assert throttle.probability() == pytest.approx(0.5)


def test_allow_rejects_with_the_probability() -> None:
    """allow() rejects exactly when random() falls below the current probability."""
    draws = iter([0.49, 0.5])
    throttle = Throttle(clock=VirtualClock(), random=lambda: next(draws))
    assert throttle.allow()
    throttle.record(accepted=False)
    # requests=1, accepts=0: p = 1/2.
    assert not throttle.allow()
    # requests=2: p = 2/3; 0.5 < 2/3.
    assert throttle.probability() == pytest.approx(2 / 3)
    assert not throttle.allow()
    assert throttle.statistics().throttled == 2


def test_rejecting_upstream_drives_probability_to_the_formula() -> None:
    """When the upstream refuses everything, p climbs to R/(R+1) and a trickle still passes."""
    clock = VirtualClock()
    throttle = Throttle(2.0, window=120.0, clock=clock, random=even_random())
    allowed_late = 0
    for step in range(6_000):  # 10 requests a second for 10 minutes
        if throttle.allow():
            throttle.record(accepted=False)
            if step >= 3_000:
                allowed_late += 1
        clock.advance(0.1)
    stats = throttle.statistics()
    assert stats.accepts == 0.0
    # The decayed count of a steady 10/s over a 120 s window is about 1200.
    assert stats.requests == pytest.approx(1_200, rel=0.01)
    assert stats.probability == sre_probability(stats.requests, 0.0, 2.0)
    assert stats.probability > 0.999
    assert stats.throttled + stats.rejected == 6_000
    assert allowed_late >= 1  # requests still trickle through to notice a recovery


def test_recovers_when_accepts_return() -> None:
    """After an outage, accepted trickle requests bring the probability back to 0."""
    clock = VirtualClock()
    throttle = Throttle(2.0, window=120.0, clock=clock, random=even_random())
    for _ in range(6_000):
        if throttle.allow():
            throttle.record(accepted=False)
        clock.advance(0.1)
    start = throttle.probability()
    history = []
    for step in range(15_000):  # the upstream is healthy again
        if throttle.allow():
            throttle.record(accepted=True)
        clock.advance(0.1)
        if step % 1_000 == 999:
            history.append(throttle.probability())
    assert start > 0.999
    assert history[2] < start
    assert history == sorted(history, reverse=True)
    assert history[-1] == 0.0
    assert throttle.allow()


def test_counts_decay_over_the_window() -> None:
    """Counts lose a factor e per window of silence, and the probability falls with them."""
    clock = VirtualClock()
    throttle = Throttle(2.0, window=60.0, clock=clock, random=lambda: 0.999)
    for _ in range(100):
        throttle.allow()
    throttle.record(accepted=True)
    clock.advance(60.0)
    stats = throttle.statistics()
    assert stats.requests == pytest.approx(100 / math.e)
    assert stats.accepts == pytest.approx(1 / math.e)
    assert stats.probability == pytest.approx(sre_probability(100 / math.e, 1 / math.e, 2.0))
    clock.advance(600.0)
    assert throttle.probability() < 0.01


def test_throttle_repr() -> None:
    """repr() shows k, the decayed counts and the probability."""
    throttle = Throttle(clock=VirtualClock(), random=lambda: 0.999)
    for _ in range(3):
        throttle.allow()
    throttle.record(accepted=True)
    assert repr(throttle) == "<Throttle k=2, 3.0 requests, 1.0 accepts, p=0.250>"


# -- Backoff ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"initial": -1}, ValueError, r"^initial must be >= 0, not .+$"),
        ({"multiplier": 0.5}, ValueError, r"^multiplier must be >= 1, not .+$"),
        ({"max_delay": -0.1}, ValueError, r"^max_delay must be >= 0, not .+$"),
        ({"max_delay": math.inf}, ValueError, r"^max_delay must be finite, not .+$"),
        ({"jitter": 1.5}, ValueError, r"^jitter must be <= 1$"),
        ({"jitter": -0.5}, ValueError, r"^jitter must be >= 0, not .+$"),
        ({"initial": "1"}, TypeError, r"^initial must be a number, not str$"),
    ],
)
def test_backoff_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Bad Backoff fields raise an error naming the field."""
    with pytest.raises(error, match=message):
        Backoff(**kwargs)


def test_backoff_delays() -> None:
    """Delays grow by the multiplier up to max_delay, less the jittered share."""
    exact = Backoff(initial=0.5, multiplier=3.0, max_delay=10.0, jitter=0.0)
    assert [exact.delay(n, 0.9) for n in range(1, 6)] == [0.5, 1.5, 4.5, 10.0, 10.0]
    full = Backoff(initial=1.0, multiplier=2.0, max_delay=5.0)
    assert full.delay(3, 0.0) == 4.0
    assert full.delay(3, 0.75) == 1.0
    half = Backoff(initial=2.0, jitter=0.5)
    assert half.delay(1, 0.5) == 1.5
    assert full.delay(100_000, 0.0) == 5.0  # no overflow for huge attempt numbers
    assert Backoff(initial=0.0).delay(100_000, 0.0) == 0.0


# -- RetryBudget --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"ratio": -0.1}, ValueError, r"^ratio must be >= 0, not .+$"),
        ({"ratio": math.nan}, ValueError, r"^ratio must be >= 0, not .+$"),
        ({"ratio": None}, TypeError, r"^ratio must be a number, not NoneType$"),
        ({"min_per_second": -1}, ValueError, r"^min_per_second must be >= 0, not .+$"),
        ({"window": 0.0}, ValueError, r"^window must be > 0, not .+$"),
        ({"max_attempts": 0}, ValueError, r"^max_attempts must be >= 1, not .+$"),
        ({"max_attempts": 2.0}, TypeError, r"^max_attempts must be an int, not float$"),
        ({"random": "x"}, TypeError, r"^random must be callable, not str$"),
    ],
)
def test_retry_budget_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Bad RetryBudget settings raise an error naming the parameter."""
    with pytest.raises(error, match=message):
        RetryBudget(**kwargs)


def test_can_retry_validates_attempt() -> None:
    """attempt must be an int >= 1."""
    budget = RetryBudget(clock=VirtualClock())
    with pytest.raises(ValueError, match=r"^attempt must be >= 1, not .+$"):
        budget.can_retry(0)
    with pytest.raises(TypeError, match=r"^attempt must be an int, not bool$"):
        budget.can_retry(True)


def test_retries_capped_at_the_ratio() -> None:
    """With no floor, 100 requests at ratio 0.1 earn exactly 10 retries."""
    budget = RetryBudget(0.1, min_per_second=0.0, clock=VirtualClock())
    assert not budget.can_retry(1)
    for _ in range(100):
        budget.record_request()
    granted = [budget.can_retry(1) for _ in range(12)]
    assert granted == [True] * 10 + [False] * 2
    assert budget.statistics() == RetryBudgetStatistics(
        requests=100,
        retries=10,
        refused_retries=3,
        exhausted=0,
        available=0.0,
    )
    budget.record_request()
    assert not budget.can_retry(1)  # a tenth of a retry is not a retry
    for _ in range(9):
        budget.record_request()
    assert budget.can_retry(1)


def test_floor_lets_a_quiet_service_retry() -> None:
    """Without requests, min_per_second * window retries are in hand, refilling at that rate."""
    clock = VirtualClock()
    budget = RetryBudget(0.1, min_per_second=1.0, window=10.0, clock=clock)
    assert [budget.can_retry(1) for _ in range(11)] == [True] * 10 + [False]
    # 10 retries decay to 9 (room for one more) after 10 * ln(10/9) = 1.054 s.
    clock.advance(1.0)
    assert not budget.can_retry(1)
    clock.advance(0.06)
    assert budget.can_retry(1)
    assert not budget.can_retry(1)


def test_max_attempts_caps_each_call() -> None:
    """No call gets more than max_attempts tries, and the cap spends no budget."""
    budget = RetryBudget(1.0, max_attempts=3, clock=VirtualClock())
    before = budget.statistics().available
    assert not budget.can_retry(3)
    assert not budget.can_retry(4)
    stats = budget.statistics()
    assert (stats.exhausted, stats.retries, stats.available) == (2, 0, before)
    assert budget.can_retry(2)
    assert not RetryBudget(max_attempts=1, clock=VirtualClock()).can_retry(1)


def test_long_run_stays_within_the_budget() -> None:
    """Under a steady failure rate, retries stay within ratio*requests + floor*(window+t)."""
    clock = VirtualClock()
    budget = RetryBudget(0.1, min_per_second=1.0, window=10.0, clock=clock)
    for _ in range(5_000):  # 50 requests a second for 100 s, each wanting a retry
        budget.record_request()
        budget.can_retry(1)
        clock.advance(0.02)
    stats = budget.statistics()
    bound = 0.1 * 5_000 + 1.0 * (10.0 + 100.0)
    assert stats.retries <= bound
    assert stats.retries >= 0.95 * bound
    assert stats.retries + stats.refused_retries == 5_000


class RecordingClock:
    """A clock whose sleep() records the delay and only yields: proves nothing sleeps for real."""

    def __init__(self) -> None:
        self.slept: list[float] = []
        self._now = 0.0

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self._now += seconds
        await asyncio.sleep(0)

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Cancellable:
        raise AssertionError("RetryBudget.call must not arm timers")


def flaky(failures: int, error: type[Exception] = ConnectionError) -> Callable[[int], Any]:
    """A coroutine function that fails ``failures`` times, then returns its argument doubled."""
    calls = itertools.count(1)

    async def call(value: int) -> int:
        attempt = next(calls)
        if attempt <= failures:
            raise error(f"attempt {attempt}")
        return value * 2

    return call


async def test_call_returns_after_transient_failures() -> None:
    """call() retries through the clock with backoff and returns the eventual result."""
    clock = RecordingClock()
    budget = RetryBudget(max_attempts=3, clock=clock, random=lambda: 0.5)
    backoff = Backoff(initial=60.0, multiplier=2.0, jitter=0.5, max_delay=600.0)
    assert await budget.call(flaky(2), 21, backoff=backoff) == 42
    assert clock.slept == [45.0, 90.0]
    stats = budget.statistics()
    assert (stats.requests, stats.retries, stats.refused_retries) == (1, 2, 0)


@pytest.mark.virtual_time
async def test_call_sleeps_on_virtual_time(clock: VirtualClock) -> None:
    """On virtual time, call() spends exactly the backoff delays of the clock."""
    budget = RetryBudget(clock=clock, random=lambda: 0.0)
    backoff = Backoff(initial=1.0, multiplier=3.0)
    assert await budget.call(flaky(2), 1, backoff=backoff) == 2
    assert clock.now() == 4.0


async def test_call_reraises_after_max_attempts() -> None:
    """When every attempt fails, call() re-raises the last error, unchained, after max_attempts."""
    clock = RecordingClock()
    budget = RetryBudget(1.0, max_attempts=3, clock=clock, random=lambda: 0.0)
    with pytest.raises(ConnectionError, match=r"^attempt 3$") as caught:
        await budget.call(flaky(10), 1, backoff=Backoff(initial=1.0, jitter=0.0))
    assert caught.value.__context__ is None
    assert clock.slept == [1.0, 2.0]
    stats = budget.statistics()
    assert (stats.requests, stats.retries, stats.exhausted) == (1, 2, 1)


async def test_call_reraises_when_the_budget_is_spent() -> None:
    """With no budget left, call() re-raises the first error without sleeping."""
    clock = RecordingClock()
    budget = RetryBudget(0.0, min_per_second=0.0, max_attempts=5, clock=clock)
    with pytest.raises(ConnectionError, match=r"^attempt 1$"):
        await budget.call(flaky(1), 1)
    assert clock.slept == []
    stats = budget.statistics()
    assert (stats.requests, stats.retries, stats.refused_retries) == (1, 0, 1)


async def test_call_does_not_retry_other_errors() -> None:
    """An error outside retry_on propagates at once, spending nothing."""
    clock = RecordingClock()
    budget = RetryBudget(clock=clock)
    with pytest.raises(KeyError):
        await budget.call(flaky(1, KeyError), 1, retry_on=ConnectionError)
    assert await budget.call(flaky(1, ConnectionError), 1, retry_on=(OSError,)) == 2
    stats = budget.statistics()
    assert (stats.requests, stats.retries, stats.refused_retries) == (2, 1, 0)
    assert len(clock.slept) == 1


async def test_call_never_retries_cancellation() -> None:
    """CancelledError propagates even when retry_on names BaseException."""
    budget = RetryBudget(clock=RecordingClock())
    calls = 0

    async def cancelled() -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await budget.call(cancelled, retry_on=BaseException)
    assert calls == 1
    assert budget.statistics().retries == 0


async def test_call_validates_retry_on() -> None:
    """retry_on must be an exception type or a tuple of them."""
    budget = RetryBudget(clock=RecordingClock())
    for bad in (ValueError("x"), (int,), [ValueError]):
        with pytest.raises(
            TypeError, match=r"^retry_on must be an exception type or a tuple of them$"
        ):
            await budget.call(flaky(0), 1, retry_on=bad)  # type: ignore[arg-type]
    assert budget.statistics().requests == 0


def test_retry_budget_repr() -> None:
    """repr() shows the ratio, max_attempts and the retries available now."""
    budget = RetryBudget(0.2, min_per_second=0.5, window=4.0, clock=VirtualClock())
    for _ in range(10):
        budget.record_request()
    assert repr(budget) == "<RetryBudget ratio=0.2, max_attempts=3, 4.0 retries available>"
