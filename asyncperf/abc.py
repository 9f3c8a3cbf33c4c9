"""Interfaces users may implement to plug their own parts into asyncperf."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, fields
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

__all__ = [
    "Cancellable",
    "Clock",
    "DeadLetter",
    "Lease",
    "LeasedLevelStatistics",
    "LeasedQueue",
    "LeasedQueueStatistics",
    "RateLimiterBackend",
    "ScalingDecision",
    "ScalingPolicy",
    "ScalingReadings",
    "SemaphoreAcquire",
    "SemaphoreBackend",
    "SemaphoreStatistics",
]


class Cancellable(Protocol):
    """A scheduled callback that can be called off (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None: ...


@runtime_checkable
class Clock(Protocol):
    """The source of time for everything in asyncperf that measures or waits.

    Components take ``clock=`` and read time only through it, so tests can run
    them on virtual time (:class:`asyncperf.testing.VirtualClock`). ``now()``
    must be monotonic; ``sleep`` and ``call_later`` must agree with ``now()``.
    """

    def now(self) -> float:
        """Seconds on a monotonic scale; only differences are meaningful."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""
        ...

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Cancellable:
        """Run ``callback(*args)`` on the running loop after ``delay`` seconds of this clock."""
        ...


@dataclass(frozen=True, slots=True)
class ScalingReadings:
    """What a supervisor measured of one pool at one tick: the input of a :class:`ScalingPolicy`.

    Rates are per second since the previous tick; times are in seconds on the
    supervisor's clock.
    """

    #: The pool's name.
    pool: str
    #: When the tick ran.
    time: float
    #: Seconds between ticks.
    interval: float
    #: The pool's size: its ``max_workers``, the knob a policy turns.
    workers: int
    #: The pool's ``min_workers``: the size never goes below it.
    min_workers: int
    #: The limit in force: ``workers``, or the limiter's limit when lower.
    limit: int
    #: Worker tasks alive (busy or idle; workers start only for queued jobs).
    live: int
    #: Jobs running.
    active: int
    #: Idle workers.
    idle: int
    #: Jobs queued.
    pending: int
    #: Age of the oldest queued job (0.0 when none is queued).
    queue_delay: float
    #: Jobs offered per second (accepted or refused).
    arrival_rate: float
    #: Jobs that ended on a worker per second (a result, an error, a timeout or cancelled).
    completion_rate: float
    #: The adaptive limiter's limit and upper bound; None without a limiter.
    limiter_limit: int | None
    limiter_max: int | None
    #: The load last given to the pool's ``queue.adjust()`` (1.0: bounds relaxed).
    load: float
    #: How late the supervisor's tick woke: the event loop's lag.
    loop_lag: float
    #: CPU seconds the process used per second of real time since the previous
    #: tick (1.0: one core busy, which is all an event loop thread can use).
    cpu: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """The numeric readings by name (a limiter's are left out when there is none)."""
        values: dict[str, float] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int | float):
                values[field.name] = value
        return values


@dataclass(frozen=True, slots=True)
class ScalingDecision:
    """What a :class:`ScalingPolicy` wants done to one pool; None leaves a knob alone.

    The supervisor applies each change and records it as an event with
    ``reason``; a decision that changes nothing but gives a reason is recorded
    as a ``hold`` (say why the policy refrains, e.g. growing would not help).
    ``ScalingDecision()`` keeps everything and records nothing.
    """

    #: The pool's new size (``max_workers``); raised to the pool's ``min_workers`` if below.
    workers: int | None = None
    #: The adaptive limiter's new limit (clamped to its bounds; ignored without one).
    limiter_limit: int | None = None
    #: The load to give ``queue.adjust()``: above 1 tightens the lower levels' bounds.
    load: float | None = None
    #: Why, in words; shown in the event log.
    reason: str = ""


@runtime_checkable
class ScalingPolicy(Protocol):
    """Decides, from one tick's readings of a pool, how to resize it.

    A :class:`~asyncperf.Supervisor` calls :meth:`decide` once per tick for
    each pool it watches, on the event loop (so it must not block), with that
    pool's readings, and applies the decision. A policy may keep state between
    ticks (windows, timers): give each pool its own policy object.
    :class:`asyncperf.ScalingPolicy` is the default implementation. An
    exception raised by ``decide`` stops the supervisor (its ``run()`` raises it).
    """

    def decide(self, readings: ScalingReadings) -> ScalingDecision:
        """The decision for this tick; ``ScalingDecision()`` to keep everything."""
        ...


# -- leased queues (asyncperf.backends: LocalLeasedQueue, RedisPriorityQueue) ----------

_Item = TypeVar("_Item")
_Item_co = TypeVar("_Item_co", covariant=True)


@dataclass(frozen=True, slots=True)
class LeasedLevelStatistics:
    """One priority level of a :class:`LeasedQueue`.

    ``rejected`` and ``deduplicated`` items were never enqueued; ``dropped``
    ones were enqueued and then evicted by DROP_OLDEST / DROP_NEWEST.
    """

    priority: int
    #: The level's bound on ready items (leased items do not count).
    bound: int
    #: The level's DropStrategy, by its value ("block", "reject", ...).
    strategy: str
    #: Ready items, waiting to be leased.
    depth: int
    enqueued: int
    dropped: int
    rejected: int
    deduplicated: int


@dataclass(frozen=True, slots=True)
class LeasedQueueStatistics:
    """A snapshot of a whole :class:`LeasedQueue` (for Redis: of every process using it).

    Every enqueued job is in exactly one place, so
    ``enqueued == acked + dead + dropped + depth + in_flight`` always holds.
    """

    levels: tuple[LeasedLevelStatistics, ...]
    #: Ready jobs over all levels.
    depth: int
    #: Jobs leased and not yet settled.
    in_flight: int
    enqueued: int
    dropped: int
    #: Leases handed out, redeliveries included.
    delivered: int
    acked: int
    #: Jobs nacked and put back to ready for another attempt.
    retried: int
    #: Leases that ran out (their consumer died or stalled) and were reaped.
    expired: int
    #: Leases given back without using an attempt (a cancelled consumer).
    released: int
    #: Jobs moved to the dead-letter list.
    dead_letters: int
    #: Acks and nacks refused because the lease had already been lost.
    stale_settles: int

    def level(self, priority: int) -> LeasedLevelStatistics:
        """The statistics of the level ``priority``.

        Raises:
            KeyError: there is no such level.
        """
        for level in self.levels:
            if level.priority == priority:
                return level
        raise KeyError(priority)


@dataclass(frozen=True, slots=True)
class DeadLetter(Generic[_Item]):
    """A job that failed ``max_attempts`` times (or was nacked with ``retry=False``)."""

    id: str
    item: _Item
    priority: int
    attempts: int
    #: Why it died: the last nack's reason, or that its lease expired.
    reason: str


@runtime_checkable
class Lease(Protocol[_Item_co]):
    """One delivery of a job: the consumer holds it until it acks, nacks or loses it.

    Delivery is at least once: a lease that runs out (its consumer died or
    stalled past the deadline without renewing) is given to another consumer,
    and the first one's ``ack`` then returns False.
    """

    @property
    def id(self) -> str:
        """The job's id (the same across redeliveries)."""
        ...

    @property
    def item(self) -> _Item_co:
        """The job's payload."""
        ...

    @property
    def priority(self) -> int:
        """The level it was queued in."""
        ...

    @property
    def attempt(self) -> int:
        """1 for the first delivery, 2 for the first redelivery, ..."""
        ...

    @property
    def lost(self) -> bool:
        """Whether the queue refused a renew or settle: the job may be running elsewhere."""
        ...

    async def ack(self) -> bool:
        """The job is done: remove it. False if the lease had been lost (nothing changed)."""
        ...

    async def nack(self, reason: str = "", *, retry: bool = True) -> bool:
        """The attempt failed: back to ready, or to the dead letters after the last attempt
        (at once with ``retry=False``). False if the lease had been lost."""
        ...

    async def renew(self) -> bool:
        """Push the lease deadline one lease period from now. False if it had been lost."""
        ...

    async def release(self) -> bool:
        """Give the job back untouched: ready again, the attempt not counted."""
        ...


@runtime_checkable
class LeasedQueue(Protocol[_Item]):
    """A priority queue whose consumers take jobs as leases (at-least-once delivery).

    Jobs are served strictly by priority (lower number first), first in first
    out within a level. Each level has a bound and a drop strategy as
    :class:`asyncperf.Level`. ``async with queue.lease() as job:`` acks when
    the block ends normally and nacks when it raises (the exception goes on),
    renewing the lease while the block runs.
    """

    async def put(
        self, item: _Item, priority: int | None = None, *, dedupe_key: str | None = None
    ) -> str | None:
        """Queue ``item``; its job id, or None when a live job has the same ``dedupe_key``.

        Raises:
            Rejected: the level is full and REJECTs.
        """
        ...

    async def take(self, timeout: float | None = None) -> Lease[_Item]:
        """Lease the next job, waiting up to ``timeout`` seconds (None: for ever).

        The lease is not renewed: call ``renew()`` or use :meth:`lease`.

        Raises:
            TimeoutError: no job came within ``timeout``.
        """
        ...

    def lease(self, timeout: float | None = None) -> AbstractAsyncContextManager[Lease[_Item]]:
        """``take`` as a context manager: renewed while held, acked or nacked on exit."""
        ...

    async def consume(
        self,
        handler: Callable[[Lease[_Item]], Awaitable[object]],
        *,
        workers: int = 1,
        stop: asyncio.Event | None = None,
    ) -> int:
        """Run ``handler`` on jobs, at most ``workers`` at once, until ``stop`` is set
        (then finish the running ones) or the call is cancelled. Returns jobs acked."""
        ...

    async def statistics(self) -> LeasedQueueStatistics:
        """A snapshot of the levels and the lease counters."""
        ...

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter[_Item]]:
        """The oldest ``limit`` dead letters."""
        ...


# -- Shared limits: a concurrency limit and a rate limit, in process or on Redis ----------


@dataclass(frozen=True, slots=True)
class SemaphoreStatistics:
    """A snapshot of one :class:`SemaphoreBackend` client (counters are this client's own).

    ``acquired == released + held + (leases lost or abandoned)``: every slot
    handed out is either still held, given back, or was taken back by its lease.
    """

    #: The semaphore's name (shared by every client of one limit).
    name: str
    #: Slots that may be held at once, over all clients.
    limit: int
    #: Slots this client holds now.
    held: int
    #: ``acquire`` calls of this client waiting now.
    waiting: int
    #: Slots handed to this client (fail-open admissions included).
    acquired: int
    #: Slots this client gave back while they were still its own.
    released: int
    #: ``acquire`` calls that had to wait before they got a slot.
    waited: int
    #: ``acquire`` calls that gave up after ``timeout`` (TimeoutError).
    timed_out: int
    #: ``acquire`` calls cancelled while waiting; they hold nothing.
    cancelled: int
    #: Slots of this client whose lease ran out while held (the holder stalled, or
    #: the backend could not be reached to renew): the limit may then have let
    #: another holder in. Always 0 in process.
    lost: int
    #: Expired leases of other holders (a crashed process) this client took back.
    reclaimed: int
    #: Admissions made without the backend because it was unreachable and the
    #: semaphore fails open. Always 0 in process.
    failed_open: int


class SemaphoreAcquire(Awaitable[str], AbstractAsyncContextManager[str], Protocol):
    """What :meth:`SemaphoreBackend.acquire` returns.

    Awaited, it gives a token to pass to :meth:`SemaphoreBackend.release`;
    ``async with`` it holds the slot for the block and releases it on exit.
    """


@runtime_checkable
class SemaphoreBackend(Protocol):
    """A concurrency limit shared by every client of the same name: at most ``limit``
    slots held at once.

    ``asyncperf.backends.LocalSemaphore`` is the in-process implementation (one
    event loop), ``asyncperf.backends.redis.RedisSemaphore`` the one shared by
    processes and hosts through Redis, where each slot is a *lease*: renewed
    while its holder lives, taken back ``lease`` seconds after a holder crashed.

    ``acquire`` is cancellation-safe: a waiter cancelled at any point holds no
    slot afterwards. There is no FIFO promise across clients.
    """

    @property
    def name(self) -> str:
        """The semaphore's name."""
        ...

    @property
    def limit(self) -> int:
        """Slots that may be held at once."""
        ...

    def acquire(self, *, timeout: float | None = None) -> SemaphoreAcquire:
        """Wait for a slot: ``token = await sem.acquire()`` or ``async with sem.acquire():``.

        Args:
            timeout: seconds to wait at most (None: for ever; 0: take a free slot
                or fail at once).

        Raises:
            TimeoutError: no slot came within ``timeout``; the message names the semaphore.
        """
        ...

    async def release(self, token: str) -> bool:
        """Give a slot back. False if it was not held any more (a lost lease, a second
        release): nothing changed then."""
        ...

    async def in_use(self) -> int:
        """Slots held now, over all clients."""
        ...

    def statistics(self) -> SemaphoreStatistics:
        """This client's counters."""
        ...

    async def aclose(self) -> None:
        """Give back the slots this client holds and stop its background work."""
        ...


@runtime_checkable
class RateLimiterBackend(Protocol):
    """A rate limit shared by every client of the same limiter: ``rate`` units per ``per``
    seconds on average, ``burst`` at once (GCRA).

    The methods of :class:`asyncperf.RateLimiter`, made asynchronous because a
    shared limiter answers over the network: ``asyncperf.backends.LocalRateLimiter``
    adapts a ``RateLimiter`` (the in-process default),
    ``asyncperf.backends.redis.RedisRateLimiter`` keeps the limit in Redis.
    """

    @property
    def rate(self) -> float:
        """Units admitted per ``per`` seconds."""
        ...

    @property
    def per(self) -> float:
        """The period of ``rate``, in seconds."""
        ...

    @property
    def burst(self) -> int:
        """Units that may be admitted at once; also the largest cost of one call."""
        ...

    async def acquire(self, cost: float = 1) -> None:
        """Wait until ``cost`` units are admitted."""
        ...

    async def try_acquire(self, cost: float = 1) -> bool:
        """Admit ``cost`` units now if they fit; False (and nothing consumed) if not."""
        ...

    async def time_to_wait(self, cost: float = 1) -> float:
        """Seconds until ``cost`` units would be admitted; 0.0 if they would be now."""
        ...
