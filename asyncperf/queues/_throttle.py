"""Client-side protection of an upstream: adaptive throttling and a retry budget.

Both count over a *decaying window*: every count is multiplied by
``exp(-elapsed / window)`` as time passes, so an event weighs 1 when it happens
and ``1/e`` after ``window`` seconds. A steady rate ``r`` settles at ``r * window``
counted events, as a sliding window of ``window`` seconds would give, but with
one float per count, no buckets, no background task, and no cliff when an old
burst leaves the window.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar, TypeVarTuple

from asyncperf._validate import check_int, check_number
from asyncperf.abc import Clock
from asyncperf.loop import SystemClock

__all__ = [
    "Backoff",
    "RetryBudget",
    "RetryBudgetStatistics",
    "Throttle",
    "ThrottleStatistics",
]

R = TypeVar("R")
Ts = TypeVarTuple("Ts")

# Slack on the budget comparison: ratio * requests is a sum of floats.
_TOLERANCE = 1e-9


def _random_source(random: Callable[[], float] | None) -> Callable[[], float]:
    if random is None:
        return _random.random
    if not callable(random):
        raise TypeError(f"random must be callable, not {type(random).__name__}")
    return random


def _exception_types(value: object) -> tuple[type[BaseException], ...]:
    kinds = (value,) if isinstance(value, type) else value
    if isinstance(kinds, tuple) and all(
        isinstance(kind, type) and issubclass(kind, BaseException) for kind in kinds
    ):
        return kinds
    raise TypeError("retry_on must be an exception type or a tuple of them")


# -- adaptive throttling ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThrottleStatistics:
    """A snapshot of a :class:`Throttle`.

    Attributes:
        requests: requests counted in the decaying window (allowed or not).
        accepts: requests the upstream accepted, counted in the decaying window.
        throttled: requests rejected locally by ``allow()``, since creation.
        rejected: upstream rejections reported by ``record(False)``, since creation.
        probability: the rejection probability the next ``allow()`` uses.
    """

    requests: float
    accepts: float
    throttled: int
    rejected: int
    probability: float


class Throttle:
    """Adaptive client-side throttling: reject locally what the upstream would reject.

    The scheme of Google's SRE book ("Handling Overload"): the client counts the
    requests it attempts and the ones the upstream accepts, and rejects a new
    request locally with probability
    ``max(0, (requests - k * accepts) / (requests + 1))``. While the upstream
    accepts everything the probability is 0; when it starts refusing, the
    client sheds the excess itself (saving the upstream the cost of saying no)
    and still lets a trickle through, so it notices when the upstream recovers.
    Requests rejected locally count as requests too: that is what keeps the
    probability up while the upstream is down.

    Counts decay with time constant ``window`` (see the module docstring).
    Call :meth:`allow` before each request and, for every allowed one,
    :meth:`record` with the upstream's answer.

    Args:
        k: how many requests per accepted one are let through; 2 (the book's
            choice) lets through twice what the upstream accepts, lower is
            more aggressive. Must be >= 1, so a healthy upstream is never throttled.
        window: the time constant of the decaying counts, in seconds (the book
            uses two minutes of history).
        clock: the time source (default :class:`~asyncperf.SystemClock`).
        random: returns a float in [0, 1); default :func:`random.random`. It is
            called only when the probability is above 0. Inject one for
            deterministic tests.

    Raises:
        TypeError: ``k`` or ``window`` is not a number, or ``random`` is not callable.
        ValueError: ``k`` < 1, or ``window`` is not > 0 and finite.
    """

    __slots__ = (
        "_accepts",
        "_clock",
        "_k",
        "_last",
        "_now",
        "_random",
        "_rejected",
        "_requests",
        "_throttled",
        "_window",
    )

    def __init__(
        self,
        k: float = 2.0,
        window: float = 120.0,
        *,
        clock: Clock | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        self._k = check_number("k", k, minimum=1, strict=False)
        self._window = check_number("window", window, minimum=0, strict=True)
        self._random = _random_source(random)
        self._clock = clock if clock is not None else SystemClock()
        self._now = self._clock.now
        self._last = self._now()
        self._requests = 0.0
        self._accepts = 0.0
        self._throttled = 0
        self._rejected = 0

    @property
    def k(self) -> float:
        return self._k

    @property
    def window(self) -> float:
        return self._window

    def _decay(self) -> None:
        now = self._now()
        elapsed = now - self._last
        if elapsed > 0:
            factor = math.exp(-elapsed / self._window)
            self._requests *= factor
            self._accepts *= factor
            self._last = now

    def _probability(self) -> float:
        requests = self._requests
        return max(0.0, (requests - self._k * self._accepts) / (requests + 1.0))

    def probability(self) -> float:
        """The probability with which the next :meth:`allow` rejects locally."""
        self._decay()
        return self._probability()

    def allow(self) -> bool:
        """Count a request and say whether to send it; False means rejected locally.

        The probability is taken from the counts before this request, so the
        first request of a fresh throttle always goes through.
        """
        self._decay()
        probability = self._probability()
        self._requests += 1.0
        if probability > 0.0 and self._random() < probability:
            self._throttled += 1
            return False
        return True

    def record(self, accepted: bool) -> None:
        """Report the upstream's answer to an allowed request.

        Args:
            accepted: True if the upstream took the request; False if it
                refused it for overload (a 429, 503, "resource exhausted").
                Errors that say nothing about load (a 404, a bad request)
                should be reported as accepted.
        """
        self._decay()
        if accepted:
            self._accepts += 1.0
        else:
            self._rejected += 1

    def statistics(self) -> ThrottleStatistics:
        """A frozen snapshot of the counts and the current probability."""
        self._decay()
        return ThrottleStatistics(
            requests=self._requests,
            accepts=self._accepts,
            throttled=self._throttled,
            rejected=self._rejected,
            probability=self._probability(),
        )

    def __repr__(self) -> str:
        self._decay()
        return (
            f"<Throttle k={self._k:g}, {self._requests:.1f} requests, "
            f"{self._accepts:.1f} accepts, p={self._probability():.3f}>"
        )


# -- retry budget -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: how long to wait before each retry.

    Before the retry that follows attempt ``n`` the ceiling is
    ``min(max_delay, initial * multiplier ** (n - 1))``, and the delay is that
    ceiling less a random share of up to ``jitter`` of it. The default,
    ``jitter=1.0``, is "full jitter" (uniform over the whole range), which
    spreads the retries of clients that failed together the most.

    Args:
        initial: the ceiling before the first retry, in seconds.
        multiplier: how much the ceiling grows per retry.
        max_delay: the largest ceiling, in seconds.
        jitter: the share of the ceiling that is random, from 0 (none) to 1 (full).

    Raises:
        TypeError: a field is not a number.
        ValueError: ``initial`` or ``max_delay`` < 0, ``multiplier`` < 1,
            ``jitter`` outside [0, 1], or a field not finite.
    """

    initial: float = 0.1
    multiplier: float = 2.0
    max_delay: float = 10.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        check_number("initial", self.initial, minimum=0, strict=False)
        check_number("multiplier", self.multiplier, minimum=1, strict=False)
        check_number("max_delay", self.max_delay, minimum=0, strict=False)
        if check_number("jitter", self.jitter, minimum=0, strict=False) > 1:
            raise ValueError("jitter must be <= 1")

    def delay(self, attempt: int, random_value: float) -> float:
        """The seconds to wait after attempt ``attempt`` failed, given a random value in [0, 1)."""
        if self.initial == 0:
            return 0.0
        try:
            growth = self.multiplier ** (attempt - 1)
        except OverflowError:  # a huge attempt number: the cap applies anyway
            growth = math.inf
        ceiling = min(self.max_delay, self.initial * growth)
        return ceiling * (1.0 - self.jitter * random_value)


@dataclass(frozen=True, slots=True)
class RetryBudgetStatistics:
    """A snapshot of a :class:`RetryBudget`.

    Attributes:
        requests: requests recorded since creation.
        retries: retries granted by ``can_retry`` since creation.
        refused_retries: retries refused because the budget was spent.
        exhausted: retries refused because the call had made ``max_attempts`` attempts.
        available: retries the budget would grant right now.
    """

    requests: int
    retries: int
    refused_retries: int
    exhausted: int
    available: float


class RetryBudget:
    """Caps retries to a share of the requests, so retries cannot multiply an overload.

    Per-call retry limits alone let a failing upstream receive ``max_attempts``
    times its normal load exactly when it can least take it. A budget (as in
    Finagle and Envoy) grants a retry only while the retries counted in the
    decaying window (see the module docstring) stay within
    ``ratio * requests + min_per_second * window``. The floor lets a quiet
    service still retry now and then. Over any run from creation, the retries
    granted never exceed ``ratio * requests + min_per_second * (window + elapsed)``.

    Args:
        ratio: retries allowed per request (0.1: one retry per ten requests).
        min_per_second: retries per second allowed whatever the traffic; the
            budget starts with ``min_per_second * window`` of them in hand.
            Default 1.0: a service with little traffic may retry once a second.
        window: the time constant of the decaying counts, in seconds.
        max_attempts: how many times one call may be tried in all (1: never retried).
        clock: the time source, also used by :meth:`call` to sleep
            (default :class:`~asyncperf.SystemClock`).
        random: returns a float in [0, 1) for the backoff jitter; default
            :func:`random.random`.

    Raises:
        TypeError: a number is not a number, ``max_attempts`` is not an int, or
            ``random`` is not callable.
        ValueError: ``ratio`` or ``min_per_second`` < 0, ``window`` not > 0, a
            number not finite, or ``max_attempts`` < 1.
    """

    __slots__ = (
        "_clock",
        "_exhausted",
        "_floor",
        "_last",
        "_max_attempts",
        "_now",
        "_random",
        "_ratio",
        "_recent_requests",
        "_recent_retries",
        "_refused",
        "_requests",
        "_retries",
        "_window",
    )

    def __init__(
        self,
        ratio: float = 0.1,
        *,
        min_per_second: float = 1.0,
        window: float = 10.0,
        max_attempts: int = 3,
        clock: Clock | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        self._ratio = check_number("ratio", ratio, minimum=0, strict=False)
        floor = check_number("min_per_second", min_per_second, minimum=0, strict=False)
        self._window = check_number("window", window, minimum=0, strict=True)
        self._floor = floor * self._window
        self._max_attempts = check_int("max_attempts", max_attempts, minimum=1)
        self._random = _random_source(random)
        self._clock = clock if clock is not None else SystemClock()
        self._now = self._clock.now
        self._last = self._now()
        self._recent_requests = 0.0
        self._recent_retries = 0.0
        self._requests = 0
        self._retries = 0
        self._refused = 0
        self._exhausted = 0

    @property
    def max_attempts(self) -> int:
        return self._max_attempts

    def _decay(self) -> None:
        now = self._now()
        elapsed = now - self._last
        if elapsed > 0:
            factor = math.exp(-elapsed / self._window)
            self._recent_requests *= factor
            self._recent_retries *= factor
            self._last = now

    def _available(self) -> float:
        return self._ratio * self._recent_requests + self._floor - self._recent_retries

    def record_request(self) -> None:
        """Count one request (a first attempt): it earns the budget ``ratio`` of a retry."""
        self._decay()
        self._recent_requests += 1.0
        self._requests += 1

    def can_retry(self, attempt: int) -> bool:
        """Whether a call whose attempt number ``attempt`` failed may try again.

        A True answer spends one retry of the budget: call it only when about
        to retry.

        Args:
            attempt: the number of the attempt that failed, 1 for the first.

        Raises:
            TypeError: ``attempt`` is not an int.
            ValueError: ``attempt`` < 1.
        """
        check_int("attempt", attempt, minimum=1)
        if attempt >= self._max_attempts:
            self._exhausted += 1
            return False
        self._decay()
        if self._available() < 1.0 - _TOLERANCE:
            self._refused += 1
            return False
        self._recent_retries += 1.0
        self._retries += 1
        return True

    async def call(
        self,
        fn: Callable[[*Ts], Awaitable[R]],
        *args: *Ts,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
        backoff: Backoff | None = None,
    ) -> R:
        """Run ``fn(*args)``, retrying its failures while the budget and attempts allow.

        Records one request, then after each failure of a ``retry_on`` type asks
        :meth:`can_retry`; when granted it sleeps (through the clock) for the
        backoff delay and tries again. Cancellation and other exceptions that are
        not ``Exception`` subclasses are never retried.

        Args:
            fn: the coroutine function to call.
            args: its positional arguments.
            retry_on: the exception types worth a retry.
            backoff: the delays between attempts (default :class:`Backoff()`).

        Returns:
            What the first successful attempt returned.

        Raises:
            TypeError: ``retry_on`` is not an exception type or a tuple of them.
            Exception: the last error of ``fn``, when it is not a ``retry_on``
                type, or when the budget or ``max_attempts`` allow no more tries.
        """
        retry_types = _exception_types(retry_on)
        backoff = Backoff() if backoff is None else backoff
        self.record_request()
        attempt = 1
        while True:
            try:
                return await fn(*args)
            except retry_types as exc:
                if not isinstance(exc, Exception) or not self.can_retry(attempt):
                    raise
                delay = backoff.delay(attempt, self._random())
            # Sleep outside the except block: the next error must not chain this one.
            await self._clock.sleep(delay)
            attempt += 1

    def statistics(self) -> RetryBudgetStatistics:
        """A frozen snapshot of the counters and the retries available now."""
        self._decay()
        return RetryBudgetStatistics(
            requests=self._requests,
            retries=self._retries,
            refused_retries=self._refused,
            exhausted=self._exhausted,
            available=max(0.0, self._available()),
        )

    def __repr__(self) -> str:
        self._decay()
        return (
            f"<RetryBudget ratio={self._ratio:g}, max_attempts={self._max_attempts}, "
            f"{max(0.0, self._available()):.1f} retries available>"
        )
