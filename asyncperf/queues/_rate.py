"""RateLimiter: the generic cell rate algorithm (GCRA) with burst and weighted acquire."""

from __future__ import annotations

import asyncio
import math
import re
from collections import deque
from dataclasses import dataclass
from typing import Self

from asyncperf._validate import check_cost, check_rate
from asyncperf.abc import Cancellable, Clock
from asyncperf.loop import SystemClock

__all__ = ["RateLimiter", "RateLimiterStatistics"]

# A request due within this many seconds is admitted now: timers fire up to one
# tick of the clock early, and sums of float times are inexact by a few ulps.
_TOLERANCE = 1e-9
# When a timer fires before its head waiter is due (uvloop rounds timer delays
# to whole milliseconds), wait at least this long again rather than spin.
_REARM_FLOOR = 1e-3

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}
_RATE_TEXT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*/\s*([a-zA-Z]+)\s*")


@dataclass(frozen=True, slots=True)
class RateLimiterStatistics:
    """A snapshot of a :class:`RateLimiter`.

    Attributes:
        rate: units admitted per ``per`` seconds on average.
        per: the period of ``rate``, in seconds.
        burst: units that may be admitted at once.
        admitted: units admitted so far (the sum of the admitted costs).
        admitted_calls: calls of ``try_acquire``/``acquire`` that were admitted.
        refused: ``try_acquire`` calls that returned False.
        waiting: ``acquire`` calls waiting now.
        total_wait_seconds: time the admitted ``acquire`` calls spent waiting, summed.
        next_free_in: seconds until one more unit would be admitted (``time_to_wait(1)``).
    """

    rate: float
    per: float
    burst: int
    admitted: float
    admitted_calls: int
    refused: int
    waiting: int
    total_wait_seconds: float
    next_free_in: float


class _Waiter:
    """One parked ``acquire``: what it costs and the future that admits it."""

    __slots__ = ("cost", "future")

    def __init__(self, future: asyncio.Future[None], cost: float) -> None:
        self.future = future
        self.cost = cost


class RateLimiter:
    """Admits ``rate`` units per ``per`` seconds on average, and up to ``burst`` at once.

    The generic cell rate algorithm: each unit costs an emission interval
    ``T = per / rate`` of a *theoretical arrival time* (TAT), the time at which
    everything admitted so far would have been sent at the steady rate. A
    request of cost ``c`` at time ``t`` is admitted when
    ``max(TAT, t) + c*T - burst*T <= t``, and then moves the TAT to
    ``max(TAT, t) + c*T``. So an idle limiter admits ``burst`` units at once,
    and over any stretch of time starting from rest at most
    ``rate * elapsed / per + burst`` units get through. One float of state: no
    token refills, no background task.

    ``acquire`` waits exactly as long as its cost needs. Waiters are served in
    FIFO order by a single timer armed for the head waiter; a waiter that is
    cancelled consumes nothing, and the waiters behind it move up at once.
    ``try_acquire`` never jumps that queue: while anyone waits it refuses.

    Args:
        rate: units admitted per ``per`` seconds.
        per: the period of ``rate`` in seconds (``RateLimiter(300, 60.0)`` is 300/min).
        burst: how many units may be admitted at once after a quiet spell;
            also the largest cost one call may ask for.
        clock: the time source (default :class:`~asyncperf.SystemClock`).

    Raises:
        TypeError: ``rate`` or ``per`` is not a number, or ``burst`` is not an int.
        ValueError: ``rate`` or ``per`` is not > 0 and finite, or ``burst`` < 1.
    """

    __slots__ = (
        "_admitted",
        "_admitted_calls",
        "_burst",
        "_burst_window",
        "_clock",
        "_interval",
        "_now",
        "_per",
        "_rate",
        "_refused",
        "_tat",
        "_timer",
        "_total_wait",
        "_waiters",
    )

    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        *,
        burst: int = 1,
        clock: Clock | None = None,
    ) -> None:
        self._rate, self._per, self._burst = check_rate(rate, per, burst)
        self._interval = self._per / self._rate
        # A request is admitted when max(TAT, now) + cost*T - now <= burst*T.
        self._burst_window = self._burst * self._interval
        self._clock = clock if clock is not None else SystemClock()
        self._now = self._clock.now
        self._tat = -math.inf
        self._waiters: deque[_Waiter] = deque()
        self._timer: Cancellable | None = None
        self._admitted = 0.0
        self._admitted_calls = 0
        self._refused = 0
        self._total_wait = 0.0

    @classmethod
    def parse(cls, text: str, *, burst: int = 1, clock: Clock | None = None) -> Self:
        """A limiter from a rate written as text: ``"300/min"``, ``"5/s"``, ``"1000/hour"``.

        The unit is one of ``s``, ``sec``, ``second``, ``min``, ``minute``,
        ``h``, ``hour`` (any case); the count may be a decimal (``"0.5/s"``).

        Raises:
            TypeError: ``text`` is not a str.
            ValueError: ``text`` is not of that form, or its count is not > 0.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        match = _RATE_TEXT.fullmatch(text)
        unit = "" if match is None else match.group(2).lower()
        if match is None or unit not in _UNITS:
            raise ValueError(
                f"cannot parse rate {text!r}: expected 'N/s', 'N/min' or 'N/hour' "
                "(units s, sec, second, min, minute, h, hour)"
            )
        return cls(float(match.group(1)), _UNITS[unit], burst=burst, clock=clock)

    # -- inspection ---------------------------------------------------------------

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def per(self) -> float:
        return self._per

    @property
    def burst(self) -> int:
        return self._burst

    def _check_cost(self, cost: float) -> float:
        return check_cost(cost, self._burst)

    def _wait_for(self, units: float, now: float) -> float:
        """Seconds from ``now`` until ``units`` more units fit (0.0 when they fit now)."""
        wait = max(self._tat, now) + units * self._interval - self._burst_window - now
        return wait if wait > _TOLERANCE else 0.0

    def time_to_wait(self, cost: float = 1) -> float:
        """The seconds until ``cost`` units would be admitted; 0.0 if they would be now.

        Counts the waiters already queued: they are served first.

        Raises:
            TypeError: ``cost`` is not a number.
            ValueError: ``cost`` is not > 0, or is more than ``burst``.
        """
        cost = self._check_cost(cost)
        queued = sum(waiter.cost for waiter in self._waiters)
        return self._wait_for(queued + cost, self._now())

    def statistics(self) -> RateLimiterStatistics:
        """A frozen snapshot of the limiter's settings and counters."""
        return RateLimiterStatistics(
            rate=self._rate,
            per=self._per,
            burst=self._burst,
            admitted=self._admitted,
            admitted_calls=self._admitted_calls,
            refused=self._refused,
            waiting=len(self._waiters),
            total_wait_seconds=self._total_wait,
            next_free_in=self.time_to_wait(1),
        )

    def __repr__(self) -> str:
        now = self._now()
        available = (now + self._burst_window - max(self._tat, now)) / self._interval
        return (
            f"<RateLimiter {self._rate:g}/{self._per:g}s burst {self._burst}, "
            f"{max(available, 0.0):.2f} available, {len(self._waiters)} waiting>"
        )

    # -- admission ----------------------------------------------------------------

    def try_acquire(self, cost: float = 1) -> bool:
        """Admit ``cost`` units now if they fit, without waiting.

        A refusal changes nothing (it is only counted), and so does a call
        while ``acquire`` calls are waiting: it refuses rather than jump ahead.

        Raises:
            TypeError: ``cost`` is not a number.
            ValueError: ``cost`` is not > 0, or is more than ``burst``.
        """
        cost = self._check_cost(cost)
        if self._waiters:
            # A late timer may owe the queue an admission: settle that first.
            self._serve(fired=False)
            if self._waiters:
                self._refused += 1
                return False
        now = self._now()
        if self._wait_for(cost, now):
            self._refused += 1
            return False
        self._admit(cost, now)
        return True

    async def acquire(self, cost: float = 1) -> None:
        """Wait until ``cost`` units are admitted, exactly as long as needed.

        Returns at once, without yielding to the loop, when the units fit and
        nobody is waiting. Otherwise the call queues behind earlier waiters
        (FIFO) and is admitted by a timer at the moment its cost fits.
        Cancellation-safe: a cancelled ``acquire`` consumes nothing, even when
        it was cancelled just after being admitted.

        Raises:
            TypeError: ``cost`` is not a number.
            ValueError: ``cost`` is not > 0, or is more than ``burst`` (it
                could never be admitted).
        """
        cost = self._check_cost(cost)
        now = self._now()
        waiters = self._waiters
        if not waiters and not self._wait_for(cost, now):
            self._admit(cost, now)
            return
        waiter = _Waiter(asyncio.get_running_loop().create_future(), cost)
        waiters.append(waiter)
        if len(waiters) == 1:
            self._arm(self._wait_for(cost, now))
        try:
            await waiter.future
        except BaseException:
            self._withdraw(waiter)
            raise
        self._total_wait += self._now() - now

    def _admit(self, cost: float, now: float) -> None:
        self._tat = max(self._tat, now) + cost * self._interval
        self._admitted += cost
        self._admitted_calls += 1

    def _arm(self, delay: float) -> None:
        assert self._timer is None, "one timer at most, for the head waiter"
        self._timer = self._clock.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._serve(fired=True)

    def _serve(self, *, fired: bool) -> None:
        """Admit the head waiters whose costs fit now, then arm the timer for the next one.

        ``fired`` says the timer armed for the current head just ran.
        """
        waiters = self._waiters
        now = self._now()
        served = False
        while waiters:
            head = waiters[0]
            wait = self._wait_for(head.cost, now)
            if wait:
                if served and self._timer is not None:
                    # Armed for a head that has just been admitted: too early now.
                    self._timer.cancel()
                    self._timer = None
                if self._timer is None:
                    self._arm(max(wait, _REARM_FLOOR) if fired and not served else wait)
                return
            waiters.popleft()
            self._admit(head.cost, now)
            head.future.set_result(None)
            served = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _withdraw(self, waiter: _Waiter) -> None:
        """Undo a cancelled ``acquire``: leave the queue, or give back what it was admitted."""
        if waiter.future.done() and not waiter.future.cancelled():
            # Admitted, then cancelled before it could resume: refund its units.
            # The TAT only ever grew by max() and by costs, so taking the cost
            # back keeps every bound the algorithm promises.
            self._tat -= waiter.cost * self._interval
            self._admitted -= waiter.cost
            self._admitted_calls -= 1
        else:
            waiter.future.cancel()
            was_head = self._waiters[0] is waiter
            self._waiters.remove(waiter)
            if not was_head:
                return  # the head's timer is unchanged; those behind just need less
        # The head changed or the TAT moved back: the next admission may be sooner.
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._serve(fired=False)
