"""RedisSemaphore: a concurrency limit shared by processes and hosts, with leases.

The holders of one semaphore are a sorted set in Redis: each member is a
holder's token, scored with the moment (server time, in milliseconds) its lease
ends. Every operation is one Lua script, so it is atomic however many clients
race:

- acquire: drop the holders whose lease ended (a crashed process's slots come
  back here), then take a slot if fewer than ``limit`` remain;
- release: remove the token, and push one wake-up on the semaphore's wake list;
- renew: push the lease end of the tokens still held (``ZADD XX``);
- in use: count the holders whose lease has not ended.

A waiter blocks on the wake list (``BLPOP``) instead of polling: a release
wakes one waiter at once. The block is bounded by ``wake_timeout`` (the safety
net for a lost wake-up) and by the end of the earliest lease (so a crashed
holder's slot is taken as soon as its lease runs out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import redis.asyncio as redis_asyncio

from asyncperf._errors import AsyncPerfError, BackendUnavailable
from asyncperf._validate import check_bool, check_int, check_number
from asyncperf.abc import SemaphoreStatistics
from asyncperf.backends._local import SlotAcquire, check_name, check_timeout
from asyncperf.backends.redis._client import key_join
from asyncperf.backends.redis._limits_support import FailMode, check_fail_mode, round_trip

__all__ = ["RedisSemaphore", "RedisSemaphoreStatistics"]

_logger = logging.getLogger("asyncperf")

# The token of a slot granted without Redis (fail="open"): never sent to Redis.
_OPEN_PREFIX = "open:"
# The safety net of a blocked waiter, unless the client's timeout is shorter.
_DEFAULT_WAKE_TIMEOUT = 1.0
# The shortest block on the wake list: BLPOP's timeout 0 means "for ever".
_MIN_BLOCK = 0.01
# Wake-ups left in the list nobody took are dropped after this long (ms).
_WAKE_LIST_TTL_MS = 60_000

# Server time in ms: one clock for every client, whatever their hosts' clocks say.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# The key lives as long as its longest lease (plus a second), so an abandoned
# semaphore leaves nothing behind.
_KEEP_UNTIL_LAST_LEASE = """
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], tonumber(last[2]) + 1000) end
"""

# KEYS[1] holders; ARGV limit, lease ms, token.
# Returns {granted, reclaimed, ms until the earliest lease ends (when refused)}.
_ACQUIRE = (
    _NOW
    + """
local reclaimed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local count = redis.call('ZCARD', KEYS[1])
if count < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
"""
    + _KEEP_UNTIL_LAST_LEASE
    + """
  return {1, reclaimed, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, reclaimed, tonumber(first[2]) - now}
"""
)

# KEYS[1] holders, KEYS[2] wake list; ARGV token, limit. Returns 1 if the token was held.
# An expired lease nobody has reclaimed yet still counts as held: no one else got it.
_RELEASE = """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 then
  redis.call('RPUSH', KEYS[2], '1')
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]))
end
return removed
"""

# KEYS[2] wake list; ARGV limit: one more wake-up, for a waiter that was
# cancelled and may have swallowed the one meant for somebody else.
_WAKE = """
redis.call('RPUSH', KEYS[2], '1')
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[1]), -1)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]))
return 1
"""

# KEYS[1] holders; ARGV lease ms, tokens... Returns the tokens that are not held any more.
_RENEW = (
    _NOW
    + """
local lost = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
"""
    + _KEEP_UNTIL_LAST_LEASE
    + """
return lost
"""
)

# KEYS[1] holders. Holders whose lease has not ended (read only).
_IN_USE = (
    _NOW
    + """
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""
)


@dataclass(frozen=True, slots=True)
class RedisSemaphoreStatistics(SemaphoreStatistics):
    """:class:`~asyncperf.abc.SemaphoreStatistics` plus how this client's waiters woke."""

    #: Waiters blocked on the wake list now.
    blocked: int
    #: Blocks that ended with a wake-up pushed by a release.
    wakeups: int
    #: Blocks that ended on their timeout (the safety net, or the end of a lease).
    rechecks: int


class RedisSemaphore:
    """At most ``limit`` slots held at once by every client of ``name`` on one Redis.

    Each slot is a lease of ``lease`` seconds of server time. While a slot is
    held, a background task of this client renews its leases every
    ``lease / 3`` seconds, so a live holder keeps its slot however long it
    runs; the slots of a process that died (or stalled for longer than
    ``lease``) come back to the others once their lease has run out. A holder
    whose lease ran out anyway (its loop was blocked, Redis was unreachable)
    is counted in ``statistics().lost`` and logged: the limit may then have let
    someone else in, so choose ``lease`` well above the longest stall.

    Every client of one semaphore must be given the same ``limit``. There is
    no FIFO across clients: a waiter woken by a release may lose the slot to a
    caller arriving at that moment, and then waits again.

    When Redis cannot be reached, ``fail="closed"`` (the default) raises
    :class:`~asyncperf.BackendUnavailable` from ``acquire``: the caller is
    refused. ``fail="open"`` admits it without the limit (its token is
    local; releasing it is free) and counts it in ``statistics().failed_open``.
    A ``release`` that cannot reach Redis raises nothing: the slot comes back
    when its lease ends (counted in ``lost``). ``in_use`` always raises.

    ``acquire`` is cancellation-safe: a slot granted by a script whose reply
    the cancelled waiter never read is given back at once, and a wake-up it
    may have swallowed is passed on. On Python 3.11, redis-py can hold back a
    cancellation that lands just as a command is sent (CPython gh-86296); the
    waiter then stops when that command returns, at most ``wake_timeout`` later.

    Args:
        client: a ``redis.asyncio.Redis`` (see :func:`~asyncperf.backends.redis.connect`);
            its ``socket_timeout`` must exceed ``wake_timeout``. Not closed by
            :meth:`aclose`.
        name: the semaphore's name; clients with the same ``name`` and
            ``namespace`` share the limit.
        limit: slots that may be held at once.
        lease: seconds a slot stays held without renewal.
        namespace: groups the keys (``asyncperf:{NAMESPACE:semaphore:NAME}:...``).
        fail: ``"closed"`` or ``"open"``, see above.
        auto_renew: renew held leases in the background. False leaves it to
            the holder (:meth:`renew`), so that a holder which stops making
            progress, not only one that dies, loses its slot.
        wake_timeout: the longest a waiter blocks before it looks again on
            its own (the safety net against a lost wake-up). None: 1 s, or
            half the client's timeout when that is shorter.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: ``limit`` < 1, ``lease`` or ``wake_timeout`` not > 0,
            ``wake_timeout`` not below the client's timeout, ``fail`` not
            ``"open"``/``"closed"``, or ``name``/``namespace`` empty or holding braces.
    """

    def __init__(
        self,
        client: redis_asyncio.Redis,
        name: str,
        limit: int,
        *,
        lease: float = 10.0,
        namespace: str = "default",
        fail: FailMode = "closed",
        auto_renew: bool = True,
        wake_timeout: float | None = None,
    ) -> None:
        if not isinstance(client, redis_asyncio.Redis):
            raise TypeError(f"client must be a redis.asyncio.Redis, not {type(client).__name__}")
        self._name = check_name(name)
        self._limit = check_int("limit", limit, minimum=1)
        self._lease = check_number("lease", lease)
        # Leases are kept in whole milliseconds of server time.
        self._lease_ms = max(1, math.ceil(self._lease * 1000))
        self._fail = check_fail_mode(fail)
        self._auto_renew = check_bool("auto_renew", auto_renew)
        socket_timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        if wake_timeout is None:
            self._wake_timeout = _DEFAULT_WAKE_TIMEOUT
            if socket_timeout is not None:
                self._wake_timeout = min(self._wake_timeout, socket_timeout / 2)
        else:
            self._wake_timeout = check_number("wake_timeout", wake_timeout)
        if socket_timeout is not None and self._wake_timeout >= socket_timeout:
            raise ValueError(
                f"wake_timeout must be below the client's timeout ({socket_timeout:g} s), "
                f"not {wake_timeout!r}: a blocked waiter would time out as unreachable"
            )
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, not {type(namespace).__name__}")
        base = f"{namespace}:semaphore:{self._name}"
        if not namespace or "{" in base or "}" in base:
            raise ValueError(
                f"name and namespace must be non-empty and without braces, not {name!r}, "
                f"{namespace!r}"
            )
        self._client = client
        self._holders = key_join(base, "holders")
        self._wake = key_join(base, "wake")
        self._acquire_script = client.register_script(_ACQUIRE)
        self._release_script = client.register_script(_RELEASE)
        self._wake_script = client.register_script(_WAKE)
        self._renew_script = client.register_script(_RENEW)
        self._in_use_script = client.register_script(_IN_USE)
        self._held: set[str] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._cleanups: set[asyncio.Task[Any]] = set()
        self._waiting = 0
        self._blocked = 0
        self._acquired = 0
        self._released = 0
        self._waited = 0
        self._timed_out = 0
        self._cancelled = 0
        self._lost = 0
        self._reclaimed = 0
        self._failed_open = 0
        self._open_since_failure = False
        self._wakeups = 0
        self._rechecks = 0

    # -- inspection ---------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def lease(self) -> float:
        """Seconds a slot stays held without renewal."""
        return self._lease

    async def in_use(self) -> int:
        """Slots held now over all clients (leases that have not ended).

        Raises:
            BackendUnavailable: Redis cannot be reached (whatever ``fail`` says).
        """
        count = await round_trip(
            f"semaphore {self._name!r}: in_use", self._in_use_script(keys=[self._holders])
        )
        return int(count)

    def statistics(self) -> RedisSemaphoreStatistics:
        """This client's counters: ``acquired == released + held + lost``."""
        return RedisSemaphoreStatistics(
            name=self._name,
            limit=self._limit,
            held=len(self._held),
            waiting=self._waiting,
            acquired=self._acquired,
            released=self._released,
            waited=self._waited,
            timed_out=self._timed_out,
            cancelled=self._cancelled,
            lost=self._lost,
            reclaimed=self._reclaimed,
            failed_open=self._failed_open,
            blocked=self._blocked,
            wakeups=self._wakeups,
            rechecks=self._rechecks,
        )

    def __repr__(self) -> str:
        return (
            f"<RedisSemaphore {self._name!r} limit {self._limit}, "
            f"{len(self._held)} held here, {self._waiting} waiting>"
        )

    # -- acquiring ----------------------------------------------------------------

    def acquire(self, *, timeout: float | None = None) -> SlotAcquire:
        """Wait for a slot: ``token = await sem.acquire()`` or ``async with sem.acquire():``.

        Args:
            timeout: seconds to wait at most (None: for ever; 0: one attempt).

        Raises:
            TimeoutError: no slot came within ``timeout``; the message names the semaphore.
            BackendUnavailable: Redis cannot be reached and ``fail="closed"``.
            BackendError: Redis answered with an error.
            TypeError, ValueError: ``timeout`` is not None or a number >= 0.
        """
        return SlotAcquire(lambda: self._take(timeout), self.release)

    async def _take(self, timeout: float | None) -> str:
        timeout = check_timeout(timeout)
        loop = asyncio.get_running_loop()
        deadline = math.inf if timeout is None else loop.time() + timeout
        token = uuid.uuid4().hex
        self._waiting += 1
        try:
            await self._wait_for_slot(token, deadline, timeout)
        except BackendUnavailable as exc:
            if self._fail == "closed":
                raise
            if not self._open_since_failure:
                # Once per outage, not once per call: a busy semaphore would flood the log.
                self._open_since_failure = True
                _logger.warning(
                    "semaphore %r: admitting without the limit until Redis is back (fail open): %s",
                    self,
                    exc,
                )
            self._failed_open += 1
            token = _OPEN_PREFIX + token
        except asyncio.CancelledError:
            self._cancelled += 1
            raise
        finally:
            self._waiting -= 1
        self._held.add(token)
        self._acquired += 1
        if not token.startswith(_OPEN_PREFIX):
            self._start_renewing()
        return token

    async def _wait_for_slot(self, token: str, deadline: float, timeout: float | None) -> None:
        """Try, and block on the wake list between tries, until ``token`` holds a slot."""
        loop = asyncio.get_running_loop()
        waited = False
        while True:
            granted, until_expiry = await self._try_take(token)
            if granted:
                if waited:
                    self._waited += 1
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                self._timed_out += 1
                raise TimeoutError(
                    f"semaphore {self._name!r}: no slot free within {timeout:g} s "
                    f"(limit {self._limit}, all held)"
                )
            waited = True
            # Block until a release wakes us, the earliest lease can be reclaimed,
            # the caller's time is up, or the safety net fires, whichever is first.
            block = min(self._wake_timeout, remaining, until_expiry)
            await self._block(max(block, _MIN_BLOCK))

    async def _try_take(self, token: str) -> tuple[bool, float]:
        """One acquire script: (granted, seconds until the earliest lease ends)."""
        try:
            reply = await round_trip(
                f"semaphore {self._name!r}: acquire",
                self._acquire_script(
                    keys=[self._holders], args=[self._limit, self._lease_ms, token]
                ),
            )
        except asyncio.CancelledError:
            # The script may have granted the slot before its reply was read:
            # give it back, or it would stay taken until its lease ran out.
            await self._shielded(self._forget(token))
            raise
        self._open_since_failure = False
        granted, reclaimed, until_expiry_ms = (int(value) for value in reply)
        self._reclaimed += reclaimed
        return bool(granted), max(until_expiry_ms, 0) / 1000

    async def _block(self, seconds: float) -> None:
        """Wait on the wake list for up to ``seconds``."""
        self._blocked += 1
        try:
            woken = await round_trip(
                f"semaphore {self._name!r}: wait",
                self._client.blpop([self._wake], timeout=round(seconds, 3)),
            )
        except asyncio.CancelledError:
            # A wake-up may have been popped for nobody: pass one on (a spare
            # wake-up costs a waiter one extra look; a lost one, wake_timeout).
            await self._shielded(self._pass_wake_on())
            raise
        finally:
            self._blocked -= 1
        if woken is None:
            self._rechecks += 1
        else:
            self._wakeups += 1

    async def _forget(self, token: str) -> None:
        with contextlib.suppress(AsyncPerfError):
            await self._run_release(token)

    async def _pass_wake_on(self) -> None:
        with contextlib.suppress(AsyncPerfError):
            await round_trip(
                f"semaphore {self._name!r}: wake",
                self._wake_script(
                    keys=[self._holders, self._wake], args=[self._limit, _WAKE_LIST_TTL_MS]
                ),
            )

    async def _shielded(self, cleanup: Coroutine[Any, Any, None]) -> None:
        """Run ``cleanup`` to its end even if the caller is cancelled again meanwhile."""
        task = asyncio.get_running_loop().create_task(cleanup)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)

    # -- releasing and renewing ------------------------------------------------------

    async def release(self, token: str) -> bool:
        """Give a slot back and wake one waiter.

        Returns False when nothing changed: the token was not held any more
        (its lease ran out and another holder took the slot, or it was released
        already), or Redis could not be reached (the slot then comes back when
        its lease ends; counted as ``lost`` and logged).

        Raises:
            BackendError: Redis answered with an error.
        """
        ours = token in self._held
        # Forget the token before the round trip: if this call is cancelled
        # midway, the lease is no longer renewed and runs out on its own.
        self._held.discard(token)
        if not self._held:
            await self._stop_renewing()
        if token.startswith(_OPEN_PREFIX):
            if ours:
                self._released += 1
            return ours
        try:
            removed = await self._run_release(token)
        except BackendUnavailable as exc:
            if ours:
                self._lost += 1
            _logger.warning(
                "semaphore %r: could not release a slot; it comes back when its lease ends "
                "(%g s): %s",
                self,
                self._lease,
                exc,
            )
            return False
        if ours:
            if removed:
                self._released += 1
            else:
                self._lost += 1
                self._log_lost(1)
        return removed

    async def _run_release(self, token: str) -> bool:
        removed = await round_trip(
            f"semaphore {self._name!r}: release",
            self._release_script(
                keys=[self._holders, self._wake], args=[token, self._limit, _WAKE_LIST_TTL_MS]
            ),
        )
        return bool(removed)

    async def renew(self, token: str) -> bool:
        """Push the lease of ``token`` to ``lease`` seconds from now (server time).

        Returns False when the token is not held any more (its lease ran out and
        the slot was taken back): stop the work it guarded, somebody else may
        be doing it. With ``auto_renew`` (the default) this happens by itself.

        Raises:
            BackendUnavailable: Redis cannot be reached.
            BackendError: Redis answered with an error.
        """
        if token.startswith(_OPEN_PREFIX):
            return token in self._held
        lost = await self._renew([token])
        return not lost

    async def _renew(self, tokens: list[str]) -> list[str]:
        """Renew ``tokens`` in one script; forget and count those that were lost."""
        reply = await round_trip(
            f"semaphore {self._name!r}: renew",
            self._renew_script(keys=[self._holders], args=[self._lease_ms, *tokens]),
        )
        lost = [item.decode() if isinstance(item, bytes) else str(item) for item in reply]
        held_and_lost = [token for token in lost if token in self._held]
        for token in held_and_lost:
            self._held.discard(token)
        if held_and_lost:
            self._lost += len(held_and_lost)
            self._log_lost(len(held_and_lost))
        return lost

    def _log_lost(self, count: int) -> None:
        _logger.warning(
            "semaphore %r: %d slot(s) lost: the lease (%g s) ran out while held, and the "
            "limit may have let another holder in (a blocked loop, or Redis unreachable?)",
            self,
            count,
            self._lease,
        )

    def _start_renewing(self) -> None:
        if self._auto_renew and (self._renewer is None or self._renewer.done()):
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_while_held(), name=f"asyncperf semaphore {self._name} renewer"
            )

    async def _stop_renewing(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None and not renewer.done():
            renewer.cancel()
            # wait() does not raise the renewer's CancelledError, only our own.
            await asyncio.wait([renewer])

    async def _renew_while_held(self) -> None:
        """Renew every held lease each ``lease / 3`` seconds, until none is held."""
        interval = self._lease / 3
        while True:
            await asyncio.sleep(interval)
            tokens = [token for token in self._held if not token.startswith(_OPEN_PREFIX)]
            if not tokens:
                return
            try:
                await self._renew(tokens)
            except AsyncPerfError as exc:
                # Keep trying: the leases hold for `lease` seconds, two more tries.
                _logger.warning("semaphore %r: could not renew the leases: %s", self, exc)

    # -- closing ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Release the slots this client holds and stop renewing. The client stays open."""
        for token in list(self._held):
            with contextlib.suppress(AsyncPerfError):
                await self.release(token)
        await self._stop_renewing()
        if self._cleanups:
            await asyncio.wait(list(self._cleanups))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
