"""LocalLeasedQueue: the in-process leased priority queue (the default backend).

The same contract as :class:`~asyncperf.backends.redis.RedisPriorityQueue`,
for one process: levels with bounds and drop strategies as
:class:`~asyncperf.Level`, strict priority order, leases with deadlines,
redelivery of expired leases, dead letters after ``max_attempts``, dedupe keys.
Useful on its own (jobs that must be retried) and as the stand-in for Redis in
tests: switching is a constructor, not a rewrite.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from asyncperf._errors import DropReason, QueueClosed, Rejected
from asyncperf._validate import check_int, check_number
from asyncperf.abc import (
    Clock,
    DeadLetter,
    Lease,
    LeasedLevelStatistics,
    LeasedQueueStatistics,
)
from asyncperf.backends._leasing import JobLease, LeasingQueue, Settle, check_timeout
from asyncperf.loop import SystemClock
from asyncperf.queues import DEFAULT_LEVELS, DropStrategy, Level

__all__ = ["LocalLeasedQueue", "check_levels"]

T = TypeVar("T")


def check_levels(levels: Iterable[Level] | None) -> list[Level]:
    """The levels sorted by priority, checked as PriorityQueue checks them."""
    level_list = list(DEFAULT_LEVELS if levels is None else levels)
    if not level_list:
        raise ValueError("levels must not be empty")
    for level in level_list:
        if not isinstance(level, Level):
            raise TypeError(f"levels must hold Level objects, not {type(level).__name__}")
    level_list.sort(key=lambda level: level.priority)
    priorities = [level.priority for level in level_list]
    if len(set(priorities)) != len(priorities):
        raise ValueError(f"levels must have distinct priorities, got {priorities}")
    return level_list


@dataclass(slots=True)
class _Job(Generic[T]):
    item: T
    level: _Level[T]
    seq: int
    dedupe_key: str | None
    attempts: int = 0
    reason: str = ""


@dataclass(slots=True)
class _Level(Generic[T]):
    level: Level
    # Sequence numbers of ready jobs, ascending: arrival order, and a
    # redelivered job goes back to its original place.
    ready: list[int] = field(default_factory=list)
    putters: deque[asyncio.Future[None]] = field(default_factory=deque)
    enqueued: int = 0
    dropped: int = 0
    rejected: int = 0
    deduplicated: int = 0


def _wake_one(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


class LocalLeasedQueue(LeasingQueue[T]):
    """An in-process priority queue handing out jobs as leases (at-least-once).

    Jobs are served strictly by priority, first in first out within a level
    (unlike :class:`~asyncperf.PriorityQueue`, there is no weighted sharing:
    ``Level.weight`` and ``Level.share`` are ignored). A full level applies its
    strategy: BLOCK makes ``put`` wait for room, REJECT raises
    :class:`~asyncperf.Rejected`, DROP_OLDEST / DROP_NEWEST evict a ready job
    (reported to ``on_drop`` and counted). A lease not acked, nacked or renewed
    within ``lease`` seconds expires and the job is delivered again, up to
    ``max_attempts`` deliveries; then it becomes a dead letter with the reason.

    Args:
        levels: the levels (default :data:`~asyncperf.DEFAULT_LEVELS`).
        default_priority: the level of a ``put`` naming none (default the middle one).
        lease: seconds a lease lasts unless renewed (``lease()`` renews every third of it).
        max_attempts: deliveries before a failing job becomes a dead letter.
        dedupe_ttl: seconds a dedupe key is kept at most; it is freed earlier
            when its job is acked, dead-lettered or dropped.
        on_drop: called as ``on_drop(item, reason)`` for each item rejected or evicted.
        clock: time source for lease deadlines and dedupe expiry.

    Raises:
        ValueError, TypeError: bad levels or a parameter out of range (named).
    """

    def __init__(
        self,
        levels: Iterable[Level] | None = None,
        *,
        default_priority: int | None = None,
        lease: float = 30.0,
        max_attempts: int = 5,
        dedupe_ttl: float = 3600.0,
        on_drop: Callable[[T, DropReason], None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        level_list = check_levels(levels)
        self._levels = [_Level[T](level) for level in level_list]
        self._by_priority = {state.level.priority: state for state in self._levels}
        priorities = list(self._by_priority)
        if default_priority is None:
            default_priority = priorities[len(priorities) // 2]
        if default_priority not in self._by_priority:
            raise ValueError(
                f"default_priority must be one of {priorities}, not {default_priority!r}"
            )
        self._default = self._by_priority[default_priority]
        self._lease_seconds = check_number("lease", lease)
        self._max_attempts = check_int("max_attempts", max_attempts, minimum=1)
        self._dedupe_ttl = check_number("dedupe_ttl", dedupe_ttl)
        self._on_drop = on_drop
        self._clock = clock if clock is not None else SystemClock()
        self._seq = itertools.count(1)
        self._jobs: dict[int, _Job[T]] = {}
        # seq -> (deadline, attempt) of each leased job.
        self._leases: dict[int, tuple[float, int]] = {}
        self._dedupe: dict[str, tuple[int, float]] = {}
        self._dead: list[int] = []
        self._getters: deque[asyncio.Future[None]] = deque()
        self._counts = dict.fromkeys(
            ("delivered", "acked", "retried", "expired", "released", "dead", "stale"), 0
        )
        self._closed = False

    # -- putting ------------------------------------------------------------------

    def _level(self, priority: int | None) -> _Level[T]:
        if priority is None:
            return self._default
        state = self._by_priority.get(priority)
        if state is None:
            raise ValueError(f"priority must be one of {list(self._by_priority)}, not {priority!r}")
        return state

    async def put(
        self, item: T, priority: int | None = None, *, dedupe_key: str | None = None
    ) -> str | None:
        """Queue ``item``; see :meth:`asyncperf.abc.LeasedQueue.put`.

        Raises:
            ValueError: ``priority`` names no level.
            Rejected: the level is full and REJECTs.
            QueueClosed: the queue is closed.
        """
        state = self._level(priority)
        while True:
            if self._closed:
                raise QueueClosed("Cannot put into a closed queue.")
            now = self._clock.now()
            if dedupe_key is not None:
                held = self._dedupe.get(dedupe_key)
                if held is not None and held[1] > now:
                    state.deduplicated += 1
                    return None
            if len(state.ready) < state.level.max_size:
                break
            strategy = state.level.strategy
            if strategy is DropStrategy.REJECT:
                state.rejected += 1
                self._report(item, DropReason.REJECTED)
                raise Rejected(
                    f"level {state.level.priority} is full ({state.level.max_size} items) "
                    "and rejects new items",
                    reason=DropReason.REJECTED,
                    priority=state.level.priority,
                )
            if strategy is DropStrategy.BLOCK:
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                state.putters.append(waiter)
                try:
                    await waiter
                except BaseException:
                    waiter.cancel()
                    with _suppress_value_error():
                        state.putters.remove(waiter)
                    if not waiter.cancelled():
                        _wake_one(state.putters)  # pass on the room we will not use
                    raise
                continue
            victim_seq = state.ready.pop(0 if strategy is DropStrategy.DROP_OLDEST else -1)
            victim = self._forget(victim_seq)
            state.dropped += 1
            self._report(victim.item, DropReason.EVICTED)
            break
        seq = next(self._seq)
        self._jobs[seq] = _Job(item, state, seq, dedupe_key)
        state.ready.append(seq)  # seq is the largest so far: the list stays sorted
        state.enqueued += 1
        if dedupe_key is not None:
            self._dedupe[dedupe_key] = (seq, self._clock.now() + self._dedupe_ttl)
        _wake_one(self._getters)
        return str(seq)

    def _report(self, item: T, reason: DropReason) -> None:
        if self._on_drop is not None:
            self._on_drop(item, reason)

    def _forget(self, seq: int) -> _Job[T]:
        """Remove job ``seq`` for good, freeing its dedupe key."""
        job = self._jobs.pop(seq)
        if job.dedupe_key is not None and self._dedupe.get(job.dedupe_key, (0, 0.0))[0] == seq:
            del self._dedupe[job.dedupe_key]
        return job

    # -- taking -------------------------------------------------------------------

    def _take_now(self) -> JobLease[T] | None:
        self._reap()
        for state in self._levels:
            if state.ready:
                seq = state.ready.pop(0)
                _wake_one(state.putters)
                job = self._jobs[seq]
                job.attempts += 1
                self._leases[seq] = (self._clock.now() + self._lease_seconds, job.attempts)
                self._counts["delivered"] += 1
                return JobLease(self, str(seq), job.item, state.level.priority, job.attempts)
        return None

    def _reap(self) -> None:
        """Expired leases: back to ready, or to the dead letters after the last attempt."""
        now = self._clock.now()
        expired = [seq for seq, (deadline, _) in self._leases.items() if deadline <= now]
        for seq in expired:
            del self._leases[seq]
            self._counts["expired"] += 1
            job = self._jobs[seq]
            if job.attempts >= self._max_attempts:
                self._bury(job, f"lease expired on attempt {job.attempts}")
            else:
                self._ready_again(job)

    def _ready_again(self, job: _Job[T]) -> None:
        bisect.insort(job.level.ready, job.seq)
        _wake_one(self._getters)

    def _bury(self, job: _Job[T], reason: str) -> None:
        job.reason = reason
        self._dead.append(job.seq)
        self._counts["dead"] += 1
        if job.dedupe_key is not None and self._dedupe.get(job.dedupe_key, (0, 0.0))[0] == job.seq:
            del self._dedupe[job.dedupe_key]

    async def take(self, timeout: float | None = None) -> Lease[T]:
        """Lease the next job; see :meth:`asyncperf.abc.LeasedQueue.take`.

        Raises:
            TimeoutError: no job within ``timeout`` seconds.
            QueueClosed: the queue is closed and has no ready job.
        """
        timeout = check_timeout(timeout)
        clock = self._clock
        deadline = math.inf if timeout is None else clock.now() + timeout
        while True:
            lease = self._take_now()
            if lease is not None:
                return lease
            if self._closed:
                raise QueueClosed("the queue is closed and empty")
            now = clock.now()
            if now >= deadline:
                raise TimeoutError(f"no job within {timeout} s")
            # Wake for a put, or when the earliest lease may have expired.
            wake_at = min([deadline, *(d for d, _ in self._leases.values())])
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            timer = clock.call_later(max(wake_at - now, 0.0), _resolve, waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                with _suppress_value_error():
                    self._getters.remove(waiter)
                if not waiter.cancelled() and any(state.ready for state in self._levels):
                    _wake_one(self._getters)  # pass on the wake-up we will not use
                raise
            finally:
                timer.cancel()

    async def _settle(self, lease: JobLease[T], how: Settle, reason: str) -> bool:
        seq = int(lease.id)
        held = self._leases.get(seq)
        if held is None or held[1] != lease.attempt or held[0] <= self._clock.now():
            if held is not None and held[1] == lease.attempt:
                self._reap()  # its deadline passed: it is the reaper's now
            self._counts["stale"] += how != "renew"
            return False
        if how == "renew":
            self._leases[seq] = (self._clock.now() + self._lease_seconds, held[1])
            return True
        del self._leases[seq]
        job = self._jobs[seq]
        if how == "ack":
            self._forget(seq)
            self._counts["acked"] += 1
        elif how == "release":
            job.attempts -= 1
            self._counts["released"] += 1
            self._ready_again(job)
        elif how == "dead" or job.attempts >= self._max_attempts:
            self._bury(job, reason or f"failed on attempt {job.attempts}")
        else:
            self._counts["retried"] += 1
            self._ready_again(job)
        return True

    # -- inspection and shutdown --------------------------------------------------

    async def statistics(self) -> LeasedQueueStatistics:
        """A snapshot; ``enqueued == acked + dead + dropped + depth + in_flight``."""
        self._reap()
        levels = tuple(
            LeasedLevelStatistics(
                priority=state.level.priority,
                bound=state.level.max_size,
                strategy=state.level.strategy.value,
                depth=len(state.ready),
                enqueued=state.enqueued,
                dropped=state.dropped,
                rejected=state.rejected,
                deduplicated=state.deduplicated,
            )
            for state in self._levels
        )
        counts = self._counts
        return LeasedQueueStatistics(
            levels=levels,
            depth=sum(level.depth for level in levels),
            in_flight=len(self._leases),
            enqueued=sum(level.enqueued for level in levels),
            dropped=sum(level.dropped for level in levels),
            delivered=counts["delivered"],
            acked=counts["acked"],
            retried=counts["retried"],
            expired=counts["expired"],
            released=counts["released"],
            dead_letters=counts["dead"],
            stale_settles=counts["stale"],
        )

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter[T]]:
        """The oldest ``limit`` dead letters."""
        check_int("limit", limit, minimum=1)
        letters = []
        for seq in self._dead[:limit]:
            job = self._jobs[seq]
            letters.append(
                DeadLetter(str(seq), job.item, job.level.level.priority, job.attempts, job.reason)
            )
        return letters

    async def aclose(self) -> None:
        """Refuse new puts; waiting takers fail once nothing is ready. Idempotent."""
        self._closed = True
        for waiters in [self._getters, *(state.putters for state in self._levels)]:
            while waiters:
                _wake_one(waiters)

    def __repr__(self) -> str:
        ready = sum(len(state.ready) for state in self._levels)
        return f"<LocalLeasedQueue {ready} ready, {len(self._leases)} leased>"


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _suppress_value_error:
    """``contextlib.suppress(ValueError)`` without its per-call generator (waits are hot)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, traceback: object) -> bool:
        return kind is ValueError
