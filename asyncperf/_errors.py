"""The exceptions asyncperf raises.

Every exception derives from :class:`AsyncPerfError`, and also from the built-in
(or asyncio) exception that callers already catch where one fits::

    AsyncPerfError
    ├── WouldBlock                     a *_nowait call could not complete at once
    │   ├── QueueFull                  (also asyncio.QueueFull)
    │   └── QueueEmpty                 (also asyncio.QueueEmpty)
    ├── Rejected                       refused at admission: never accepted
    │   └── RateLimited                a rate limit would not admit it in time
    ├── Dropped                        accepted, then discarded before it ran
    ├── JobTimeout                     (also TimeoutError) a job ran past its timeout
    ├── ClosedError                    (also RuntimeError) used after close
    │   ├── PoolClosed
    │   │   └── PoolFailed             its workers crashed past the restart intensity
    │   ├── QueueClosed
    │   ├── CacheClosed
    │   └── RuntimeNotRunning          a handler called outside ``async with runtime``
    ├── CacheError                     a cache could not be opened or used safely
    │   └── UnsafeCacheDirectory       (also PermissionError) pickle refused outside a private dir
    └── InternalError                  a bug in asyncperf; please report it

Bad arguments raise the built-in ``ValueError`` or ``TypeError`` with a message
that names the parameter.
"""

from __future__ import annotations

import asyncio
import enum

__all__ = [
    "AsyncPerfError",
    "BackendError",
    "BackendUnavailable",
    "BatchFailed",
    "BatcherClosed",
    "CacheClosed",
    "CacheError",
    "ClosedError",
    "DropReason",
    "Dropped",
    "InternalError",
    "JobTimeout",
    "PoolClosed",
    "PoolFailed",
    "QueueClosed",
    "QueueEmpty",
    "QueueFull",
    "RateLimited",
    "Rejected",
    "RuntimeNotRunning",
    "UnsafeCacheDirectory",
    "WouldBlock",
]


class DropReason(enum.StrEnum):
    """Why an item was refused or discarded (carried by :class:`Dropped`/:class:`Rejected`)."""

    #: The level was full and its strategy is REJECT: the incoming item was refused.
    REJECTED = "rejected"
    #: The level was full and its strategy is DROP_OLDEST or DROP_NEWEST: a queued
    #: item was discarded to make room for the incoming one.
    EVICTED = "evicted"
    #: The queue or pool was closed (or a fail-fast error stopped it) before the item ran.
    SHUTDOWN = "shutdown"
    #: The item's own deadline passed while it was queued: its caller has given up.
    DEADLINE = "deadline"
    #: CoDel shed it: it sat in a standing queue longer than the sojourn limit.
    CODEL = "codel"
    #: The queue was full as a whole, and a more important item (or one of a
    #: level below its guaranteed share) took its place.
    SHED = "shed"
    #: A rate limit would not admit the call within its admission budget.
    RATE_LIMITED = "rate_limited"
    #: A shared limit could not reach its backend (Redis) and fails closed.
    BACKEND_UNAVAILABLE = "backend_unavailable"


class AsyncPerfError(Exception):
    """Base class of every exception asyncperf raises on purpose."""


class WouldBlock(AsyncPerfError):
    """A ``*_nowait`` operation could not complete without waiting."""


class QueueFull(WouldBlock, asyncio.QueueFull):
    """The level is full and its strategy is BLOCK: ``put`` would have to wait."""


class QueueEmpty(WouldBlock, asyncio.QueueEmpty):
    """The queue holds no item: ``get`` would have to wait."""


class Rejected(AsyncPerfError):
    """An item or job was refused at admission; it was never accepted.

    Attributes:
        reason: why it was refused.
        priority: the level it was meant for, when there is one.
    """

    def __init__(self, message: str, *, reason: DropReason, priority: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.priority = priority


class Dropped(AsyncPerfError):
    """An accepted item or job was discarded before it ran.

    Attributes:
        reason: why it was discarded.
        priority: the level it was queued in, when there is one.
    """

    def __init__(self, message: str, *, reason: DropReason, priority: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.priority = priority


class RateLimited(Rejected):
    """A call was refused because its rate limit would not admit it in time.

    Attributes:
        retry_after: seconds until the limiter would admit one more call (when it was refused).
        reason: always :attr:`DropReason.RATE_LIMITED`.
    """

    def __init__(self, message: str, *, retry_after: float, priority: int | None = None) -> None:
        super().__init__(message, reason=DropReason.RATE_LIMITED, priority=priority)
        self.retry_after = retry_after


class JobTimeout(AsyncPerfError, TimeoutError):
    """A job ran longer than its ``timeout`` and was cancelled."""


class ClosedError(AsyncPerfError, RuntimeError):
    """An operation was attempted on a resource that has been closed."""


class PoolClosed(ClosedError):
    """The worker pool is closed (or closing) and accepts no new jobs."""


class PoolFailed(PoolClosed):
    """A supervised pool's workers crashed more often than its restart intensity allows.

    The pool has been failed: its queued jobs were dropped (each raises
    :class:`Dropped` caused by this error), and it accepts no more jobs.
    ``__cause__`` is the last crash. Raised by ``Supervisor.run`` and when
    leaving the pool's ``async with``.
    """


class QueueClosed(ClosedError):
    """The queue is closed: no new items, and ``get`` on an empty closed queue fails."""


class CacheClosed(ClosedError):
    """The cache (or one of its levels) is closed."""


class BatcherClosed(ClosedError):
    """The batcher is closed (or closing) and accepts no new items."""


class RuntimeNotRunning(ClosedError):
    """A handler was called, or the runtime used, outside ``async with runtime:``.

    Calls made while the runtime drains are not this error: they are refused
    with :class:`Rejected` (reason ``shutdown``) and counted.
    """


class CacheError(AsyncPerfError):
    """A cache could not be opened or used safely."""


class UnsafeCacheDirectory(CacheError, PermissionError):
    """Pickle was asked for in a directory other users can write or own, with no HMAC key.

    Unpickling runs code, so a pickled cache must live in a directory only its
    owner can write (created 0700), or every value must carry an HMAC signature.
    """


class BatchFailed(AsyncPerfError):
    """The whole batch an item travelled in failed: ``process_batch`` raised, or broke its contract.

    Each item of the batch gets its own ``BatchFailed``; what ``process_batch``
    raised is chained as the cause (None when it returned the wrong number of results).
    """


class BackendError(AsyncPerfError):
    """A shared backend (Redis) answered with an error: a script, a command or its data failed.

    Redis's own exception is chained as the cause.
    """


class BackendUnavailable(BackendError, ConnectionError):
    """A shared backend (Redis) could not be reached, or stopped answering in time.

    What each primitive does then is documented with it: a queue raises this (the
    caller sees backpressure, never a silent local fallback), a cache tier reads
    it as a miss, a limit fails open or closed as configured.
    """


class InternalError(AsyncPerfError):
    """An invariant of asyncperf itself was broken: this is a bug, please report it."""
