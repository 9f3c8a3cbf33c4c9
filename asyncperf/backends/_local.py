"""In-process implementations of the limit protocols: the defaults the Redis ones replace.

:class:`LocalSemaphore` is :class:`~asyncperf.abc.SemaphoreBackend` over an
``asyncio.Semaphore``; :class:`LocalRateLimiter` is
:class:`~asyncperf.abc.RateLimiterBackend` over an :class:`asyncperf.RateLimiter`
(whose own ``try_acquire``/``time_to_wait`` answer synchronously, as nothing
in process needs a round trip). :class:`SlotAcquire` is the object both
semaphores return from ``acquire()``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, Self

from asyncperf._validate import check_int, check_number
from asyncperf.abc import SemaphoreStatistics
from asyncperf.queues import RateLimiter, RateLimiterStatistics

__all__ = ["LocalRateLimiter", "LocalSemaphore", "SlotAcquire", "check_name", "check_timeout"]


def check_name(name: object) -> str:
    """``name`` as a non-empty str.

    Raises:
        TypeError: it is not a str.
        ValueError: it is empty.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError("name must not be empty")
    return name


def check_timeout(timeout: object) -> float | None:
    """An ``acquire`` timeout: None (for ever) or a finite number >= 0 (0: do not wait).

    Raises:
        TypeError: it is not a number.
        ValueError: it is negative, NaN or infinite.
    """
    if timeout is None:
        return None
    return check_number("timeout", timeout, strict=False)


class SlotAcquire:
    """What a semaphore's ``acquire()`` returns: await it for a token, or ``async with`` it.

    Awaited, it gives the token to pass to ``release``. As an async context
    manager it holds the slot for the block and releases it on exit, whether
    the block ended normally, raised or was cancelled.
    """

    __slots__ = ("_release", "_take", "_token")

    def __init__(
        self, take: Callable[[], Awaitable[str]], release: Callable[[str], Awaitable[bool]]
    ) -> None:
        self._take = take
        self._release = release
        self._token: str | None = None

    def __await__(self) -> Generator[Any, None, str]:
        return self._take().__await__()

    async def __aenter__(self) -> str:
        self._token = await self._take()
        return self._token

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token = self._token
        assert token is not None  # __aexit__ runs only after __aenter__ returned it
        self._token = None
        await self._release(token)


class LocalSemaphore:
    """At most ``limit`` slots held at once in this process: the in-process
    :class:`~asyncperf.abc.SemaphoreBackend`.

    First come, first served, cancellation-safe (a cancelled waiter holds
    nothing). There are no leases: in process a holder cannot crash without
    taking the whole process, and every slot, with it. Share one instance
    between the tasks that share the limit.

    Args:
        name: what the semaphore is called (in errors and statistics).
        limit: slots that may be held at once.

    Raises:
        TypeError: ``name`` is not a str or ``limit`` not an int.
        ValueError: ``name`` is empty or ``limit`` < 1.
    """

    def __init__(self, name: str, limit: int) -> None:
        self._name = check_name(name)
        self._limit = check_int("limit", limit, minimum=1)
        self._semaphore = asyncio.Semaphore(self._limit)
        self._held: set[str] = set()
        self._waiting = 0
        self._acquired = 0
        self._released = 0
        self._waited = 0
        self._timed_out = 0
        self._cancelled = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def limit(self) -> int:
        return self._limit

    def acquire(self, *, timeout: float | None = None) -> SlotAcquire:
        """Wait for a slot (see :meth:`asyncperf.abc.SemaphoreBackend.acquire`).

        Raises:
            TimeoutError: no slot came within ``timeout``.
            TypeError, ValueError: ``timeout`` is not None or a number >= 0
                (raised when awaited).
        """
        return SlotAcquire(lambda: self._take(timeout), self.release)

    async def _take(self, timeout: float | None) -> str:
        timeout = check_timeout(timeout)
        if self._semaphore.locked():
            if timeout == 0:
                self._timed_out += 1
                raise self._timeout_error(timeout)
            self._waiting += 1
            try:
                async with asyncio.timeout(timeout):
                    await self._semaphore.acquire()
            except TimeoutError:
                self._timed_out += 1
                raise self._timeout_error(timeout) from None
            except asyncio.CancelledError:
                self._cancelled += 1
                raise
            finally:
                self._waiting -= 1
            self._waited += 1
        else:
            # A free slot and nobody queued: acquire() returns without yielding.
            await self._semaphore.acquire()
        token = uuid.uuid4().hex
        self._held.add(token)
        self._acquired += 1
        return token

    def _timeout_error(self, timeout: float | None) -> TimeoutError:
        return TimeoutError(
            f"semaphore {self._name!r}: no slot free within {timeout:g} s "
            f"(limit {self._limit}, all held)"
        )

    async def release(self, token: str) -> bool:
        """Give a slot back; False if ``token`` is not held (released already, or foreign)."""
        if token not in self._held:
            return False
        self._held.remove(token)
        self._released += 1
        self._semaphore.release()
        return True

    async def in_use(self) -> int:
        """Slots held now."""
        return len(self._held)

    def statistics(self) -> SemaphoreStatistics:
        """The counters (``lost``, ``reclaimed`` and ``failed_open`` are always 0 here)."""
        return SemaphoreStatistics(
            name=self._name,
            limit=self._limit,
            held=len(self._held),
            waiting=self._waiting,
            acquired=self._acquired,
            released=self._released,
            waited=self._waited,
            timed_out=self._timed_out,
            cancelled=self._cancelled,
            lost=0,
            reclaimed=0,
            failed_open=0,
        )

    async def aclose(self) -> None:
        """Release every slot still held (their holders' later ``release`` returns False)."""
        for token in list(self._held):
            await self.release(token)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<LocalSemaphore {self._name!r} {len(self._held)}/{self._limit} held>"


class LocalRateLimiter:
    """An :class:`asyncperf.RateLimiter` behind the asynchronous
    :class:`~asyncperf.abc.RateLimiterBackend` protocol.

    Every call goes straight to ``limiter`` (no waiting is added: the
    coroutines of ``try_acquire`` and ``time_to_wait`` never yield). Share one
    instance between the tasks that share the limit.

    Args:
        limiter: the in-process limiter to adapt.

    Raises:
        TypeError: ``limiter`` is not a RateLimiter.
    """

    __slots__ = ("_limiter",)

    def __init__(self, limiter: RateLimiter) -> None:
        if not isinstance(limiter, RateLimiter):
            raise TypeError(f"limiter must be a RateLimiter, not {type(limiter).__name__}")
        self._limiter = limiter

    @property
    def limiter(self) -> RateLimiter:
        """The adapted limiter."""
        return self._limiter

    @property
    def rate(self) -> float:
        return self._limiter.rate

    @property
    def per(self) -> float:
        return self._limiter.per

    @property
    def burst(self) -> int:
        return self._limiter.burst

    async def acquire(self, cost: float = 1) -> None:
        """:meth:`asyncperf.RateLimiter.acquire`: FIFO, exact waits, cancellation-safe."""
        await self._limiter.acquire(cost)

    async def try_acquire(self, cost: float = 1) -> bool:
        """:meth:`asyncperf.RateLimiter.try_acquire`."""
        return self._limiter.try_acquire(cost)

    async def time_to_wait(self, cost: float = 1) -> float:
        """:meth:`asyncperf.RateLimiter.time_to_wait`."""
        return self._limiter.time_to_wait(cost)

    def statistics(self) -> RateLimiterStatistics:
        """The adapted limiter's statistics."""
        return self._limiter.statistics()

    def __repr__(self) -> str:
        return f"<LocalRateLimiter {self._limiter!r}>"
