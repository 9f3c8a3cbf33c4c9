"""RedisRateLimiter: GCRA in one Lua script on Redis's clock, exact across processes.

The state is one number in Redis, the *theoretical arrival time* (TAT) in
microseconds of server time, exactly as :class:`asyncperf.RateLimiter` keeps
it in process. The script reads the server's clock (``TIME``), so every client
measures time on the same clock whatever their hosts' clocks say, and answers
whether the request fits and, if not, how long until it would. ``acquire``
sleeps exactly that long and asks again: no polling.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import redis.asyncio as redis_asyncio

from asyncperf._errors import BackendUnavailable
from asyncperf._validate import check_cost, check_rate
from asyncperf.backends._local import check_name
from asyncperf.backends.redis._client import key_join
from asyncperf.backends.redis._limits_support import FailMode, check_fail_mode, round_trip

__all__ = ["RedisRateLimiter", "RedisRateLimiterStatistics"]

_logger = logging.getLogger("asyncperf")

# KEYS[1] the TAT (µs of server time); ARGV interval µs, burst, cost, apply (1/0).
# Returns {admitted (1/0), µs to wait}. Times in µs (16 digits today) are exact in
# a double, but Lua 5.1 prints numbers with 14 digits: they cross as formatted text.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + tonumber(ARGV[3]) * interval
local wait = new_tat - tonumber(ARGV[2]) * interval - now
if wait >= 1 then
  return {0, string.format('%.0f', math.ceil(wait))}
end
if ARGV[4] == '1' then
  -- The key expires when the limiter is back at rest: a missing TAT means "now".
  redis.call('SET', KEYS[1], string.format('%.0f', math.ceil(new_tat)),
             'PX', math.ceil((new_tat - now) / 1000) + 1)
end
return {1, '0'}
"""


@dataclass(frozen=True, slots=True)
class RedisRateLimiterStatistics:
    """A snapshot of one :class:`RedisRateLimiter` client (the counters are its own).

    Attributes:
        rate: units admitted per ``per`` seconds on average, over all clients.
        per: the period of ``rate``, in seconds.
        burst: units that may be admitted at once.
        admitted: units this client was admitted (fail-open admissions included).
        admitted_calls: calls of ``try_acquire``/``acquire`` that were admitted.
        refused: ``try_acquire`` calls that returned False.
        waiting: ``acquire`` calls waiting now.
        total_wait_seconds: time the admitted ``acquire`` calls spent waiting, summed.
        failed_open: calls admitted without Redis because it was unreachable (``fail="open"``).
    """

    rate: float
    per: float
    burst: int
    admitted: float
    admitted_calls: int
    refused: int
    waiting: int
    total_wait_seconds: float
    failed_open: int


class RedisRateLimiter:
    """Admits ``rate`` units per ``per`` seconds, ``burst`` at once, over every client of
    ``name`` on one Redis (a :class:`~asyncperf.abc.RateLimiterBackend`).

    The same GCRA as :class:`asyncperf.RateLimiter`, evaluated in one Lua script
    on the server's clock, so the limit is exact across processes and hosts.
    Every client of one limiter must be given the same ``rate``, ``per`` and
    ``burst``. Waiting ``acquire`` calls sleep the wait the script returned and
    then try again; unlike the in-process limiter there is no FIFO order between
    them (nor between clients), and a call cancelled while its script runs may
    have been admitted (it is never admitted twice).

    When Redis cannot be reached, ``fail="closed"`` (the default) raises
    :class:`~asyncperf.BackendUnavailable` from every call: the caller is
    refused. ``fail="open"`` admits it (``try_acquire`` returns True,
    ``time_to_wait`` 0.0) and counts it in ``statistics().failed_open``.

    Args:
        client: a ``redis.asyncio.Redis`` (see :func:`~asyncperf.backends.redis.connect`).
        name: the limiter's name; clients with the same ``name`` and ``namespace``
            share the limit.
        rate: units admitted per ``per`` seconds.
        per: the period of ``rate`` in seconds.
        burst: units that may be admitted at once; also the largest cost of one call.
        namespace: groups the keys (``asyncperf:{NAMESPACE:rate:NAME}:tat``).
        fail: ``"closed"`` or ``"open"``, see above.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: ``rate`` or ``per`` not > 0 and finite, ``burst`` < 1,
            ``fail`` not ``"open"``/``"closed"``, or ``name``/``namespace``
            empty or holding braces.
    """

    def __init__(
        self,
        client: redis_asyncio.Redis,
        name: str,
        rate: float,
        per: float = 1.0,
        *,
        burst: int = 1,
        namespace: str = "default",
        fail: FailMode = "closed",
    ) -> None:
        if not isinstance(client, redis_asyncio.Redis):
            raise TypeError(f"client must be a redis.asyncio.Redis, not {type(client).__name__}")
        self._name = check_name(name)
        self._rate, self._per, self._burst = check_rate(rate, per, burst)
        # The emission interval T in µs; a float, as per/rate may be inexact.
        self._interval_us = self._per / self._rate * 1_000_000
        self._fail = check_fail_mode(fail)
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, not {type(namespace).__name__}")
        base = f"{namespace}:rate:{self._name}"
        if not namespace or "{" in base or "}" in base:
            raise ValueError(
                f"name and namespace must be non-empty and without braces, not {name!r}, "
                f"{namespace!r}"
            )
        self._client = client
        self._key = key_join(base, "tat")
        self._script = client.register_script(_GCRA)
        self._admitted = 0.0
        self._admitted_calls = 0
        self._refused = 0
        self._waiting = 0
        self._total_wait = 0.0
        self._failed_open = 0
        self._open_since_failure = False

    # -- inspection ---------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def per(self) -> float:
        return self._per

    @property
    def burst(self) -> int:
        return self._burst

    def statistics(self) -> RedisRateLimiterStatistics:
        """A frozen snapshot of this client's settings and counters."""
        return RedisRateLimiterStatistics(
            rate=self._rate,
            per=self._per,
            burst=self._burst,
            admitted=self._admitted,
            admitted_calls=self._admitted_calls,
            refused=self._refused,
            waiting=self._waiting,
            total_wait_seconds=self._total_wait,
            failed_open=self._failed_open,
        )

    def __repr__(self) -> str:
        return (
            f"<RedisRateLimiter {self._name!r} {self._rate:g}/{self._per:g}s "
            f"burst {self._burst}, {self._waiting} waiting>"
        )

    # -- admission ----------------------------------------------------------------

    def _check_cost(self, cost: float) -> float:
        return check_cost(cost, self._burst)

    async def _ask(self, cost: float, *, apply: bool) -> tuple[bool, float] | None:
        """Run the script: (admitted, seconds to wait), or None when Redis is unreachable
        and the limiter fails open.

        Raises:
            BackendUnavailable: Redis is unreachable and the limiter fails closed.
        """
        try:
            reply = await round_trip(
                f"rate limiter {self._name!r}",
                self._script(
                    keys=[self._key],
                    args=[repr(self._interval_us), self._burst, repr(cost), int(apply)],
                ),
            )
        except BackendUnavailable as exc:
            if self._fail == "closed":
                raise
            if not self._open_since_failure:
                # Once per outage, not once per call: a busy limiter would flood the log.
                self._open_since_failure = True
                _logger.warning(
                    "rate limiter %r: admitting without the limit until Redis is back "
                    "(fail open): %s",
                    self,
                    exc,
                )
            return None
        self._open_since_failure = False
        admitted, wait_us = reply
        return bool(int(admitted)), int(wait_us) / 1_000_000

    def _admit(self, cost: float) -> None:
        self._admitted += cost
        self._admitted_calls += 1

    async def try_acquire(self, cost: float = 1) -> bool:
        """Admit ``cost`` units now if they fit; False, consuming nothing, if not.

        Raises:
            TypeError: ``cost`` is not a number.
            ValueError: ``cost`` is not > 0, or is more than ``burst``.
            BackendUnavailable: Redis is unreachable and ``fail="closed"``.
            BackendError: Redis answered with an error.
        """
        cost = self._check_cost(cost)
        answer = await self._ask(cost, apply=True)
        if answer is None:
            self._failed_open += 1
            self._admit(cost)
            return True
        admitted, _wait = answer
        if admitted:
            self._admit(cost)
        else:
            self._refused += 1
        return admitted

    async def time_to_wait(self, cost: float = 1) -> float:
        """Seconds (on Redis's clock) until ``cost`` units would be admitted; 0.0 if now.

        Consumes nothing. Other clients may take the units meanwhile.

        Raises:
            TypeError: ``cost`` is not a number.
            ValueError: ``cost`` is not > 0, or is more than ``burst``.
            BackendUnavailable: Redis is unreachable and ``fail="closed"``
                (with ``"open"`` the answer is 0.0).
            BackendError: Redis answered with an error.
        """
        cost = self._check_cost(cost)
        answer = await self._ask(cost, apply=False)
        return 0.0 if answer is None else answer[1]

    async def acquire(self, cost: float = 1) -> None:
        """Wait until ``cost`` units are admitted.

        Each try is one script; a refused try sleeps exactly the wait it was
        told, then tries again (another client may have taken the units).

        Raises:
            TypeError: ``cost`` is not a number.
            ValueError: ``cost`` is not > 0, or is more than ``burst``.
            BackendUnavailable: Redis is unreachable and ``fail="closed"``.
            BackendError: Redis answered with an error.
        """
        cost = self._check_cost(cost)
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._waiting += 1
        try:
            while True:
                answer = await self._ask(cost, apply=True)
                if answer is None:
                    self._failed_open += 1
                    break
                admitted, wait = answer
                if admitted:
                    break
                await asyncio.sleep(wait)
        finally:
            self._waiting -= 1
        self._admit(cost)
        self._total_wait += loop.time() - started
