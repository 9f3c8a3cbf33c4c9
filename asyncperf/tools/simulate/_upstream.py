"""The simulated upstream (an LLM-like API) every strategy calls, in the same process.

- ``slots`` requests are served at once at their base latency; beyond that every
  request in flight is stretched (processor sharing: each progresses at
  ``slots / in_flight`` of its base speed), so pushed past capacity it gets
  slower for everyone and completes no more.
- A rate limit (GCRA) answers at once with a 429-style error.
- Some requests fail with a 5xx-style error after their latency.

The base latency and the failure of each request are given by the caller (they
come from the workload's schedule), so every strategy meets the same upstream.

Processor sharing is simulated in O(log n) per event with a virtual work clock
``V`` that advances at ``min(1, slots / in_flight)`` per second: a request that
arrives at ``V0`` with base latency ``b`` completes when ``V`` reaches ``V0 + b``.
One timer (for the earliest completion) is rescheduled when the number in
flight changes, so the upstream's own CPU cost stays small next to the callers'.
"""

from __future__ import annotations

import asyncio
import heapq
from dataclasses import dataclass

from asyncperf.abc import Cancellable, Clock

__all__ = ["Upstream", "UpstreamError", "UpstreamRateLimited", "UpstreamStatistics"]

# Completions due within this many seconds count as due when the timer fires: uvloop's
# timers have a resolution of 1 ms and may fire that much early, and a request
# finishing 1 ms early does not matter next to latencies of tens of milliseconds.
_TOLERANCE = 0.001


class UpstreamRateLimited(Exception):
    """The upstream's 429: its rate limit refused the request."""


class UpstreamError(Exception):
    """The upstream's 5xx: the request failed after its latency."""


@dataclass(frozen=True, slots=True)
class UpstreamStatistics:
    """What the upstream saw."""

    calls: int
    completed: int
    failed: int
    rate_limited: int
    cancelled: int
    in_flight: int
    peak_in_flight: int


class _Request:
    __slots__ = ("finish", "future", "seq")

    def __init__(self, finish: float, seq: int, future: asyncio.Future[None]) -> None:
        self.finish = finish
        self.seq = seq
        self.future: asyncio.Future[None] | None = future

    def __lt__(self, other: _Request) -> bool:
        return (self.finish, self.seq) < (other.finish, other.seq)


class Upstream:
    """A rate-limited upstream with ``slots`` of capacity and processor sharing beyond it.

    Args:
        slots: requests served at once at their base latency.
        rate: the rate limit, requests per second (None: no limit).
        burst: requests the rate limit admits at once after a quiet spell.
        clock: the time source (real or virtual).
    """

    def __init__(self, slots: int, rate: float | None, burst: int, clock: Clock) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, not {slots}")
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0, not {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, not {burst}")
        self.slots = slots
        self._clock = clock
        self._interval = 0.0 if rate is None else 1.0 / rate
        self._tolerance = burst * self._interval
        self._tat = -float("inf")  # GCRA's theoretical arrival time
        self._work = 0.0  # V: virtual work done per request since the start
        self._stamp = clock.now()
        self._heap: list[_Request] = []
        self._in_flight = 0
        self._seq = 0
        self._timer: Cancellable | None = None
        self._calls = 0
        self._completed = 0
        self._failed = 0
        self._rate_limited = 0
        self._cancelled = 0
        self._peak = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def statistics(self) -> UpstreamStatistics:
        return UpstreamStatistics(
            calls=self._calls,
            completed=self._completed,
            failed=self._failed,
            rate_limited=self._rate_limited,
            cancelled=self._cancelled,
            in_flight=self._in_flight,
            peak_in_flight=self._peak,
        )

    def stretch(self, in_flight: int | None = None) -> float:
        """How much slower than its base latency a request progresses now (>= 1)."""
        n = self._in_flight if in_flight is None else in_flight
        return max(1.0, n / self.slots)

    async def call(self, request: str, base_latency: float, fails: bool) -> str:
        """Serve one request; returns the response body (JSON text).

        Raises:
            UpstreamRateLimited: at once, when the rate limit refuses it.
            UpstreamError: after its latency, when ``fails``.
        """
        self._calls += 1
        now = self._clock.now()
        if self._interval:
            tat = max(self._tat, now) + self._interval
            if tat - now > self._tolerance:
                self._rate_limited += 1
                raise UpstreamRateLimited("429 Too Many Requests")
            self._tat = tat
        self._advance(now)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        entry = _Request(self._work + base_latency, self._seq, future)
        heapq.heappush(self._heap, entry)
        self._in_flight += 1
        if self._in_flight > self._peak:
            self._peak = self._in_flight
        self._reschedule(now)
        try:
            await future
        except asyncio.CancelledError:
            if entry.future is not None:  # still in service: leave, the others speed up
                entry.future = None
                now = self._clock.now()
                self._advance(now)
                self._in_flight -= 1
                self._cancelled += 1
                self._reschedule(now)
            raise
        if fails:
            self._failed += 1
            raise UpstreamError("503 Service Unavailable")
        self._completed += 1
        return request_reply(len(request))

    # -- processor sharing ---------------------------------------------------------

    def _advance(self, now: float) -> None:
        """Move V to ``now`` at the speed the current number in flight allows."""
        elapsed = now - self._stamp
        if elapsed > 0 and self._in_flight:
            self._work += elapsed * self._speed()
        self._stamp = now

    def _speed(self) -> float:
        """Virtual work per second of each request in flight."""
        return min(1.0, self.slots / self._in_flight) if self._in_flight else 1.0

    def _reschedule(self, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        heap = self._heap
        while heap and heap[0].future is None:  # cancelled requests left lazily
            heapq.heappop(heap)
        if not heap:
            return
        delay = max(0.0, (heap[0].finish - self._work) / self._speed())
        self._timer = self._clock.call_later(delay, self._complete_due)

    def _complete_due(self) -> None:
        self._timer = None
        now = self._clock.now()
        self._advance(now)
        heap = self._heap
        due = self._work + _TOLERANCE * self._speed()
        while heap and (heap[0].future is None or heap[0].finish <= due):
            entry = heapq.heappop(heap)
            future = entry.future
            if future is None:
                continue
            entry.future = None
            self._in_flight -= 1
            if not future.done():
                future.set_result(None)
        self._reschedule(now)


def request_reply(size: int) -> str:
    """The response body to a request of ``size`` characters: JSON, a few hundred bytes."""
    words = 40 + size % 60
    return '{"status": 200, "text": "' + ("lorem ipsum " * words) + '"}'
