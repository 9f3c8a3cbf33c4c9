"""WorkerPool: long-lived workers taking jobs from a PriorityQueue."""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar, TypeVarTuple

from asyncperf._errors import (
    Dropped,
    DropReason,
    InternalError,
    JobTimeout,
    PoolClosed,
    QueueClosed,
    QueueEmpty,
    QueueFull,
    Rejected,
)
from asyncperf._samples import SAMPLES, percentile, sample_ring
from asyncperf._validate import check_int, check_number
from asyncperf.abc import Cancellable, Clock
from asyncperf.loop import SystemClock, loop_name
from asyncperf.queues import DEFAULT_LEVELS, AdaptiveLimiter, Level, PriorityQueue

__all__ = ["ErrorPolicy", "Job", "JobState", "PoolInstrument", "PoolStatistics", "WorkerPool"]

T = TypeVar("T")
R = TypeVar("R")
Ts = TypeVarTuple("Ts")

_pool_ids = itertools.count(1)
# Latency percentiles come from a ring of the last SAMPLES timed jobs (a power
# of two: the index is a mask); each worker times one job in _TIMED_EVERY.
_SAMPLE_MASK = SAMPLES - 1
_TIMED_EVERY = 8
# Idle workers due to expire within this many seconds expire now (see _expire_idle).
_EXPIRY_SLACK = 1e-6


class ErrorPolicy(enum.StrEnum):
    """What a job's exception does to the pool."""

    #: The exception goes to the job's awaiter only; the pool carries on.
    ISOLATE = "isolate"
    #: The first exception closes the pool: queued jobs are dropped, running ones
    #: cancelled, and leaving ``async with`` re-raises that exception.
    FAIL_FAST = "fail_fast"
    #: Exceptions go to their awaiters and are also collected; leaving
    #: ``async with`` raises them together as an ``ExceptionGroup``.
    COLLECT = "collect"


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


class _PoolState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    DRAINING = "draining"
    CLOSED = "closed"


class _Interrupt(enum.Enum):
    """Why the pool cancelled a worker's task: the job, not the worker, is the target."""

    CANCEL = "cancel"
    TIMEOUT = "timeout"


class Job(asyncio.Future[T]):
    """A handle on one job of a :class:`WorkerPool`; an ``asyncio.Future`` of its result.

    ``await job`` gives the result or raises what the job raised, or
    :class:`~asyncperf.JobTimeout`, :class:`~asyncperf.Dropped`, or
    ``CancelledError``. ``cancel()`` takes a queued job out of the queue, or
    cancels a running one. As with a task, cancelling a caller that awaits the
    job cancels the job (shield it with ``asyncio.shield`` to prevent that).
    Jobs are made by the pool, never directly.
    """

    __slots__ = ("_args", "_fn", "_pool", "_priority", "_timeout", "_worker")

    _fn: Callable[..., Awaitable[T]]
    _args: tuple[Any, ...]
    _priority: int | None
    _timeout: float | None
    _pool: WorkerPool
    # The worker that took the job; unset while it is queued (one store less
    # per job on the submit path), so read it with getattr(job, "_worker", None).
    _worker: _Worker

    @property
    def state(self) -> JobState:
        """``queued``, ``running`` or ``done``."""
        if self.done():
            return JobState.DONE
        return JobState.QUEUED if getattr(self, "_worker", None) is None else JobState.RUNNING

    @property
    def priority(self) -> int:
        """The level the job was submitted to."""
        if self._priority is None:
            return self._pool._queue.default_priority
        return self._priority

    def cancel(self, msg: Any | None = None) -> bool:
        """Cancel the job: a queued job leaves the queue, a running one is cancelled.

        Returns:
            False if the job had already finished, else True. A running job
            ends (as cancelled, unless it suppresses the cancellation) the next
            time it yields to the loop.
        """
        if self.done():
            return False
        return self._pool._cancel_job(self, msg)

    def _cancel_future(self, msg: Any | None) -> None:
        asyncio.Future.cancel(self, msg)

    def __repr__(self) -> str:
        name = getattr(self._fn, "__qualname__", repr(self._fn))
        if self.done():
            # _exception, not exception(): a repr must not mark the error as seen.
            error: BaseException | None = getattr(self, "_exception", None)
            if self.cancelled():
                outcome = "cancelled"
            elif error is not None:
                outcome = f"raised {type(error).__name__}"
            else:
                outcome = "done"
        else:
            outcome = self.state.value
        return f"<Job {name} priority={self.priority} {outcome}>"


class _Worker:
    __slots__ = ("idle_since", "interrupt", "job", "looking", "retired", "task", "waiter")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.job: Job[Any] | None = None
        self.interrupt: _Interrupt | None = None
        self.waiter: asyncio.Future[bool] | None = None
        self.idle_since = 0.0
        self.retired = False
        # Started or woken to take a job, and not yet running: counted in
        # WorkerPool._looking so a burst does not start a worker per job.
        self.looking = False


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot of a :class:`WorkerPool`.

    Every accepted job is in exactly one place, so
    ``submitted == pending + active + completed + failed + cancelled + timed_out + dropped``.
    ``rejected`` jobs were never accepted. Times are in seconds, sampled from one
    job in eight over the last 8,192 that ran; ``avg_lifetime`` is the mean time
    from submission to end of those samples.
    """

    loop: str
    max_workers: int
    limit: int
    min_workers: int
    workers: int
    active: int
    idle: int
    pending: int
    submitted: int
    completed: int
    failed: int
    cancelled: int
    timed_out: int
    rejected: int
    dropped: int
    avg_lifetime: float
    wait_p50: float
    wait_p99: float
    run_p50: float
    run_p99: float


class PoolInstrument(Protocol):
    """What a metrics layer plugs into a pool (``pool._set_instrument``) to see its jobs' times.

    The pool stays ignorant of metrics. :meth:`job_done` is called for the jobs
    the pool times anyway (one in eight per worker), or for every job a worker
    ran if the instrument was set with ``every_job=True`` (each job then costs
    two clock reads more). Without an instrument, the per-job cost is one
    attribute test.
    """

    def job_done(self, priority: int | None, wait: float, run: float, outcome: str) -> None:
        """A worker finished a job.

        Args:
            priority: the job's level as submitted (None: the queue's default level).
            wait: seconds the job spent queued (its sojourn time).
            run: seconds it ran.
            outcome: ``completed``, ``failed``, ``timed_out`` or ``cancelled``.
        """


def _check_positive(name: str, value: float | None) -> None:
    if value is not None:
        check_number(name, value)


class WorkerPool:
    """A bounded, resizable pool of long-lived worker coroutines.

    Jobs wait in a :class:`~asyncperf.PriorityQueue` and run on at most
    ``max_workers`` workers. A worker is a long-lived task that runs one job's
    coroutine after another, inline; the coroutine is only created when a
    worker takes the job, so a queued job costs a small handle, not a task.

    Every accepted job ends in exactly one of: a result, an exception,
    :class:`~asyncperf.JobTimeout`, cancelled, or :class:`~asyncperf.Dropped`;
    each is counted in :meth:`statistics`. No job starts while ``max_workers``
    jobs are running, also while the limit is changed.

    Jobs run in their worker's task and ``contextvars`` context, not the
    submitter's: pass what a job needs as arguments.

    A worker whose own loop raises (a bug in asyncperf or in a part plugged
    into it, never a job's exception) fails the pool's task group, unless a
    running :class:`~asyncperf.Supervisor` watches the pool: it then restarts
    the worker, up to its restart intensity, and beyond that fails the pool
    (:attr:`failure`).

    Use it as an async context manager; leaving the block drains the pool
    (waits for queued and running jobs, up to ``drain_timeout``, then cancels);
    leaving it with an exception cancels at once::

        async with WorkerPool(max_workers=64) as pool:
            job = await pool.submit(fetch, url, priority=0, timeout=2.0)
            page = await job

    Args:
        max_workers: the most jobs that run at once; settable while running.
        min_workers: workers kept alive even when idle.
        idle_timeout: seconds an idle worker above ``min_workers`` lives; None
            keeps them until ``cleanup_idle()`` or close.
        queue: the queue jobs wait in (the pool becomes its only user); default
            three levels, see :data:`~asyncperf.DEFAULT_LEVELS`.
        max_pending: the per-level bound of the default queue (not with ``queue``).
        error_policy: ``isolate`` (default), ``fail_fast`` or ``collect``; see
            :class:`ErrorPolicy`.
        drain_timeout: how long leaving ``async with`` waits for jobs before
            cancelling them; None waits for all.
        limiter: an :class:`~asyncperf.AdaptiveLimiter` fed with every job's
            run time (timeouts count as loss); the pool runs at most
            ``min(max_workers, limiter.limit)`` jobs at once and follows the
            limit as it moves. Give it the pool's clock.
        clock: the time source for timeouts and statistics.
        name: shown in ``repr`` and in worker task names.

    Raises:
        TypeError: a parameter has the wrong type.
        ValueError: a parameter is out of range (the message names it).
    """

    def __init__(
        self,
        max_workers: int = 64,
        *,
        min_workers: int = 0,
        idle_timeout: float | None = 10.0,
        queue: PriorityQueue[Job[Any]] | None = None,
        max_pending: int | None = None,
        error_policy: ErrorPolicy | str = ErrorPolicy.ISOLATE,
        drain_timeout: float | None = None,
        limiter: AdaptiveLimiter | None = None,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        check_int("max_workers", max_workers, minimum=1)
        check_int("min_workers", min_workers, minimum=0)
        if min_workers > max_workers:
            raise ValueError("min_workers must be <= max_workers")
        _check_positive("idle_timeout", idle_timeout)
        _check_positive("drain_timeout", drain_timeout)
        try:
            policy = ErrorPolicy(error_policy)
        except ValueError:
            choices = "'isolate', 'fail_fast', 'collect'"
            raise ValueError(
                f"error_policy must be one of {choices}, not {error_policy!r}"
            ) from None
        if queue is not None and max_pending is not None:
            raise ValueError("pass either queue or max_pending, not both")
        if queue is None:
            if max_pending is not None:
                check_int("max_pending", max_pending, minimum=1)
                levels = [
                    Level(lv.priority, max_pending, lv.strategy, lv.weight) for lv in DEFAULT_LEVELS
                ]
            else:
                levels = list(DEFAULT_LEVELS)
            queue = PriorityQueue(levels, clock=clock)
        elif not isinstance(queue, PriorityQueue):
            raise TypeError(f"queue must be a PriorityQueue, not {type(queue).__name__}")
        self._queue: PriorityQueue[Job[Any]] = queue
        queue._add_drop_listener(self._on_queue_drop)
        if limiter is not None and not isinstance(limiter, AdaptiveLimiter):
            raise TypeError(f"limiter must be an AdaptiveLimiter, not {type(limiter).__name__}")
        self._max_workers = max_workers
        self._limiter = limiter
        # The limit in force: max_workers, or less while the limiter says so.
        self._limit = max_workers if limiter is None else min(max_workers, limiter.limit)
        self._running = 0  # jobs running, counted only for the limiter's samples
        self._min_workers = min_workers
        self._idle_timeout = idle_timeout
        self._error_policy = policy
        self._drain_timeout = drain_timeout
        self._clock = clock if clock is not None else SystemClock()
        self._now = self._clock.now
        self.name = name if name is not None else f"pool-{next(_pool_ids)}"

        self._state = _PoolState.NEW
        # Mirrors `_state is RUNNING`, read as one attribute on the per-job path.
        self._accepting = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task_group: asyncio.TaskGroup | None = None
        self._worker_ids = itertools.count(1)
        # Workers committed to taking jobs; a worker is taken off this count the
        # moment it decides (or is told) to retire, so resizing never over-retires.
        self._nworkers = 0
        self._workers: set[_Worker] = set()
        # Idle workers, longest idle first: a new job wakes the most recently
        # idle one (warm, and lets the others expire), expiry takes the oldest.
        self._idle: deque[_Worker] = deque()
        self._looking = 0
        self._idle_timer: Cancellable | None = None
        self._all_stopped = asyncio.Event()
        self._errors: list[Exception] = []
        # Supervision: called with the exception that escaped a worker's own loop
        # (not a job's); True restarts the worker. None: the crash propagates to
        # the task group, which fails the pool.
        self._crash_handler: Callable[[BaseException], bool] | None = None
        # Set by _fail(): why the pool stopped; queued jobs are dropped with it as
        # their cause and leaving `async with` raises it.
        self._failure: BaseException | None = None
        self._crashes = 0

        self._submitted = 0
        self._completed = 0
        self._failed = 0
        self._cancelled = 0
        self._timed_out = 0
        self._rejected = 0
        self._dropped = 0
        # Wait and run times of the last SAMPLES jobs, written in place by the workers.
        self._samples = 0
        self._wait_samples = sample_ring()
        self._run_samples = sample_ring()
        # A metrics layer's hook (see PoolInstrument and _set_instrument). The
        # workers read _time_every_job once per job, _instrument only per timed job.
        self._instrument: PoolInstrument | None = None
        self._time_every_job = False

    # -- configuration ------------------------------------------------------------

    @property
    def max_workers(self) -> int:
        """The most jobs that run at once.

        Raising it starts workers only for jobs that are waiting; lowering it
        retires idle workers at once and busy ones as their jobs finish (running
        jobs are never interrupted, and no new job starts above the new limit).
        """
        return self._max_workers

    @max_workers.setter
    def max_workers(self, value: int) -> None:
        check_int("max_workers", value, minimum=1)
        if value < self._min_workers:
            raise ValueError("max_workers must be >= min_workers")
        self._max_workers = value
        self._apply_limit()

    @property
    def limit(self) -> int:
        """The limit in force: ``max_workers``, or the limiter's limit when lower."""
        return self._limit

    @property
    def limiter(self) -> AdaptiveLimiter | None:
        return self._limiter

    def _apply_limit(self, _limiter_limit: int | None = None) -> None:
        """Recompute the limit in force and resize to it (also the limiter's listener)."""
        limit = self._max_workers
        if self._limiter is not None:
            limit = min(limit, self._limiter.limit)
        self._limit = limit
        if self._state is not _PoolState.RUNNING:
            return
        while self._nworkers > limit and self._idle:
            self._retire_idle(self._idle.popleft())
        spare = min(self._queue._size - self._looking, limit - self._nworkers)
        for _ in range(spare):
            self._spawn()

    @property
    def min_workers(self) -> int:
        return self._min_workers

    @property
    def queue(self) -> PriorityQueue[Job[Any]]:
        """The queue the jobs wait in (read its ``statistics()`` for per-level figures)."""
        return self._queue

    @property
    def closed(self) -> bool:
        """True once the pool accepts no more jobs (draining or closed)."""
        return self._state in (_PoolState.DRAINING, _PoolState.CLOSED)

    @property
    def running(self) -> bool:
        """True while the pool accepts jobs: entered, and not draining, failed or closed."""
        return self._accepting

    @property
    def failure(self) -> BaseException | None:
        """Why the pool was failed by its supervisor (see :meth:`_fail`), or None."""
        return self._failure

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> WorkerPool:
        if self._state is not _PoolState.NEW:
            raise RuntimeError("A WorkerPool can be entered only once; create a new one.")
        self._loop = asyncio.get_running_loop()
        self._task_group = asyncio.TaskGroup()
        await self._task_group.__aenter__()
        self._set_state(_PoolState.RUNNING)
        if self._limiter is not None:
            self._limiter.add_listener(self._apply_limit)
            self._apply_limit()
        for _ in range(self._min_workers):
            self._spawn()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task_group is not None  # set by __aenter__, which must have run
        try:
            if exc is None:
                await self.drain(self._drain_timeout)
            else:
                self._cancel_now()
        except BaseException as error:
            self._cancel_now()
            await self._task_group.__aexit__(type(error), error, error.__traceback__)
            raise
        # The body's own exception is not handed to the task group, which
        # would wrap it in an ExceptionGroup; it propagates unchanged.
        if isinstance(exc, asyncio.CancelledError):
            await self._task_group.__aexit__(exc_type, exc, tb)
        else:
            await self._task_group.__aexit__(None, None, None)
        self._set_state(_PoolState.CLOSED)
        if self._failure is not None and (exc is None or isinstance(exc, PoolClosed)):
            # The pool was failed from outside (its workers kept crashing): say so
            # here too, even if the body did not notice.
            raise self._failure
        # A body that failed only because fail-fast closed the pool gets the
        # job's error instead (the PoolClosed stays attached as its context).
        if self._errors and (exc is None or isinstance(exc, PoolClosed)):
            errors, self._errors = self._errors, []
            if self._error_policy is ErrorPolicy.FAIL_FAST:
                raise errors[0]
            raise ExceptionGroup(f"{len(errors)} job(s) of {self.name} failed", errors)

    async def drain(self, timeout: float | None = None) -> bool:
        """Stop accepting jobs, let queued and running ones finish, then stop the workers.

        If they are not done within ``timeout`` seconds, running jobs are
        cancelled and queued ones dropped (as :meth:`aclose`).

        Returns:
            True if every job finished, False if the timeout cut it short.

        Raises:
            ValueError: ``timeout`` is not positive.
        """
        _check_positive("timeout", timeout)
        if self._state is _PoolState.NEW:
            self._set_state(_PoolState.CLOSED)
            return True
        if self._state is _PoolState.RUNNING:
            self._set_state(_PoolState.DRAINING)
            self._queue.close()
            # No worker is retired for idleness any more; a pending timer would also keep
            # the closed pool alive (and its memory held) until it fired.
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
            # Idle workers wake, find the queue closed and empty, and leave.
            for worker in list(self._idle):
                self._wake_to_work(worker)
            self._idle.clear()
            self._check_stopped()
        if self._all_stopped.is_set():
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._all_stopped.wait()
            return True
        except TimeoutError:
            await self.aclose()
            return False

    async def aclose(self) -> None:
        """Close now: queued jobs are dropped, running jobs cancelled; waits for the workers.

        Idempotent. A job that ignores its cancellation is reported to the
        loop's exception handler every 5 seconds until it ends.
        """
        if self._state is _PoolState.NEW:
            self._set_state(_PoolState.CLOSED)
            return
        self._cancel_now()
        while self._workers:
            tasks = {w.task for w in self._workers if w.task is not None}
            _done, pending = await asyncio.wait(tasks, timeout=5.0)
            if pending:
                assert self._loop is not None  # set when the pool started
                self._loop.call_exception_handler(
                    {
                        "message": f"{self.name}: jobs still running 5 s after being cancelled",
                        "jobs": [w.job for w in self._workers if w.job is not None],
                    }
                )

    def _cancel_now(self) -> None:
        if self._state is _PoolState.NEW:
            self._set_state(_PoolState.CLOSED)
            return
        self._set_state(_PoolState.CLOSED)
        if self._limiter is not None:
            self._limiter.remove_listener(self._apply_limit)
        self._queue.close()
        self._queue.drop_all(DropReason.SHUTDOWN)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        for worker in list(self._idle):
            self._wake(worker, False)
        self._idle.clear()
        for worker in self._workers:
            if worker.task is not None and worker.job is not None:
                worker.task.cancel(msg=f"{self.name} closed")
        self._check_stopped()

    def _fail(self, error: BaseException) -> None:
        """Fail the pool: used by a supervisor whose restart intensity was exceeded.

        The pool stops accepting jobs; queued jobs are dropped (they raise
        :class:`~asyncperf.Dropped` with ``error`` as its cause); running jobs
        finish; idle workers leave. ``submit`` then raises
        :class:`~asyncperf.PoolClosed` caused by ``error``, and leaving
        ``async with`` raises ``error``. Idempotent: the first error is kept.
        """
        if self._failure is not None or self._state is _PoolState.CLOSED:
            return
        self._failure = error
        if self._state is _PoolState.NEW:
            self._set_state(_PoolState.CLOSED)
            return
        self._set_state(_PoolState.DRAINING)
        self._queue.close()
        self._queue.drop_all(DropReason.SHUTDOWN)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        for worker in list(self._idle):
            self._wake(worker, False)
        self._idle.clear()
        self._check_stopped()

    def _crashed(self, worker: _Worker, exc: Exception) -> bool:
        """A worker's own loop raised ``exc``: settle its job, ask the handler; True restarts."""
        self._crashes += 1
        job = worker.job
        if job is not None:
            # Nothing accepted is lost: the job the worker held ends with the crash.
            worker.job = None
            if not job.done():
                self._failed += 1
                job.set_exception(exc)
                job.exception()  # the crash is reported by the supervisor, not as unretrieved
        handler = self._crash_handler
        assert handler is not None  # checked by the caller
        try:
            return handler(exc)
        except Exception as error:
            assert self._loop is not None  # workers exist only while running
            self._loop.call_exception_handler(
                {
                    "message": f"{self.name}: the crash handler failed; worker not restarted",
                    "exception": error,
                }
            )
            return False

    def _set_state(self, state: _PoolState) -> None:
        self._state = state
        self._accepting = state is _PoolState.RUNNING

    def _set_instrument(
        self, instrument: PoolInstrument | None, *, every_job: bool = False
    ) -> None:
        """Plug in (or, with None, remove) the metrics layer's instrument.

        With ``every_job`` the workers time every job for it; otherwise it sees
        the pool's own sample (one job in eight per worker).
        """
        self._instrument = instrument
        self._time_every_job = instrument is not None and every_job

    def _check_stopped(self) -> None:
        if not self._workers and self._state is not _PoolState.RUNNING:
            self._all_stopped.set()

    # -- submitting ---------------------------------------------------------------

    def _refuse(self) -> BaseException:
        if self._state is _PoolState.NEW and self._failure is None:
            return RuntimeError(
                f"{self.name} is not running: use 'async with WorkerPool(...) as pool:' first."
            )
        error = PoolClosed(f"Cannot submit to {self.name}: it has been closed.")
        error.__cause__ = self._failure
        return error

    def _new_job(
        self,
        fn: Callable[..., Awaitable[R]],
        args: tuple[Any, ...],
        priority: int | None,
        timeout: float | None,
    ) -> Job[R]:
        # Job() finds the running loop itself, faster than passing loop=.
        job: Job[R] = Job()
        job._fn = fn
        job._args = args
        job._priority = priority
        job._timeout = timeout
        job._pool = self
        return job

    async def submit(
        self,
        fn: Callable[[*Ts], Awaitable[R]],
        /,
        *args: *Ts,
        priority: int | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Job[R]:
        """Queue ``fn(*args)`` as a job, waiting for room if its level is full.

        Args:
            fn: an async function; it is called only when a worker takes the job.
            *args: its positional arguments.
            priority: the queue level; default the queue's default level.
            timeout: seconds the job may run once started; it is then cancelled
                and raises :class:`~asyncperf.JobTimeout`.
            deadline: seconds from now by which a worker must have started the
                job; a job still queued then is dropped and raises
                :class:`~asyncperf.Dropped` (reason ``deadline``) at once.

        Returns:
            The job's handle; ``await`` it for the result.

        Raises:
            PoolClosed: the pool is closed (or closes while this waits).
            Rejected: the level is full and its strategy is REJECT.
            ValueError: unknown ``priority`` or a ``timeout`` that is not positive.
            RuntimeError: the pool has not been started with ``async with``.
        """
        if not self._accepting:
            raise self._refuse()
        if timeout is not None:
            _check_positive("timeout", timeout)
        if deadline is not None:
            _check_positive("deadline", deadline)
        # _new_job, inlined: this is the per-job path.
        job: Job[R] = Job()
        job._fn = fn
        job._args = args
        job._priority = priority
        job._timeout = timeout
        job._pool = self
        queue = self._queue
        try:
            if not queue._offer(job, priority, deadline):
                await queue.put(job, priority, deadline=deadline)
        except Rejected:
            self._rejected += 1
            raise
        except QueueClosed:
            raise self._refuse() from self._failure
        self._submitted += 1
        # _dispatch, inlined; under load (no idle worker, all started) it is two tests.
        if self._idle:
            if queue._size > self._looking:
                self._wake_to_work(self._idle.pop())
        elif self._nworkers < self._limit and queue._size > self._looking:
            self._spawn()
        return job

    def submit_nowait(
        self,
        fn: Callable[[*Ts], Awaitable[R]],
        /,
        *args: *Ts,
        priority: int | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Job[R]:
        """Queue ``fn(*args)`` as a job if its level has room now (see :meth:`submit`).

        Raises:
            QueueFull: the level is full and its strategy is BLOCK (the job is
                counted as rejected).
            Rejected: the level is full and its strategy is REJECT.
            PoolClosed: the pool is closed.
            ValueError: unknown ``priority`` or a ``timeout`` that is not positive.
            RuntimeError: the pool has not been started with ``async with``.
        """
        if not self._accepting:
            raise self._refuse()
        if timeout is not None:
            _check_positive("timeout", timeout)
        if deadline is not None:
            _check_positive("deadline", deadline)
        job = self._new_job(fn, args, priority, timeout)
        try:
            self._queue.put_nowait(job, priority, deadline=deadline)
        except (QueueFull, Rejected):
            self._rejected += 1
            raise
        self._submitted += 1
        self._dispatch()
        return job

    async def run(
        self,
        fn: Callable[[*Ts], Awaitable[R]],
        /,
        *args: *Ts,
        priority: int | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> R:
        """Submit ``fn(*args)`` and wait for its result: a bounded ``await fn(*args)``.

        Cancelling the caller cancels the job (or takes it out of the queue).

        Raises:
            JobTimeout: the job ran longer than ``timeout``.
            Dropped: the job was dropped from the queue before it ran (its
                deadline passed, CoDel shed it, or a newer job evicted it).
            Exception: whatever ``fn`` raised.
            PoolClosed, Rejected, ValueError, RuntimeError: as :meth:`submit`.
        """
        job = await self.submit(fn, *args, priority=priority, timeout=timeout, deadline=deadline)
        return await job

    def map(
        self,
        fn: Callable[[T], Awaitable[R]],
        items: Iterable[T] | AsyncIterable[T],
        *,
        ordered: bool = True,
        window: int | None = None,
        priority: int | None = None,
        timeout: float | None = None,
    ) -> MapIterator[T, R]:
        """Run ``fn`` on each item with at most ``window`` jobs in flight; iterate the results.

        Items are read lazily, so an endless iterable is fine. With
        ``ordered=True`` results come in the order of the items, otherwise as
        they complete. The first exception is raised by the iteration and the
        jobs still in flight are cancelled; so are they when the loop is left
        early (``break``) or the iterator closed::

            async for page in pool.map(fetch, urls, ordered=False):
                ...

        Args:
            window: jobs in flight at once; default ``2 * max_workers``.

        Raises:
            ValueError: ``window`` below 1 (raised here, not on iteration).
        """
        if window is None:
            window = 2 * self._max_workers
        check_int("window", window, minimum=1)
        if timeout is not None:
            _check_positive("timeout", timeout)
        return MapIterator(self, fn, items, ordered, window, priority, timeout)

    # -- dispatch -----------------------------------------------------------------

    def _dispatch(self) -> None:
        """A job was queued: unless enough workers are on their way, wake one or start one.

        The most recently idle worker is woken (it is warm, and the others can
        expire).
        """
        if self._idle:
            if self._queue._size > self._looking:
                self._wake_to_work(self._idle.pop())
        elif self._nworkers < self._limit and self._queue._size > self._looking:
            self._spawn()

    def _spawn(self) -> None:
        assert self._task_group is not None  # only called while running
        worker = _Worker()
        worker.looking = True
        self._looking += 1
        self._nworkers += 1
        self._workers.add(worker)
        worker.task = self._task_group.create_task(
            self._work(worker), name=f"{self.name}-worker-{next(self._worker_ids)}"
        )

    @staticmethod
    def _wake(worker: _Worker, take_jobs: bool) -> None:
        waiter = worker.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(take_jobs)

    def _wake_to_work(self, worker: _Worker) -> None:
        waiter = worker.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)
            worker.looking = True
            self._looking += 1

    def _arrived(self, worker: _Worker) -> None:
        """The worker runs again: it no longer counts as on its way to a job."""
        if worker.looking:
            worker.looking = False
            self._looking -= 1

    def _retire_idle(self, worker: _Worker) -> None:
        worker.retired = True
        self._nworkers -= 1
        self._wake(worker, False)

    def _arm_idle_timer(self) -> None:
        if (
            self._idle_timer is None
            and self._idle_timeout is not None
            and self._nworkers > self._min_workers
            and self._idle
        ):
            due = self._idle[0].idle_since + self._idle_timeout - self._now()
            self._idle_timer = self._clock.call_later(max(due, 0.0), self._expire_idle)

    def _expire_idle(self) -> None:
        """Retire workers idle for ``idle_timeout``, oldest first, down to ``min_workers``."""
        self._idle_timer = None
        assert self._idle_timeout is not None  # the timer is armed only with a timeout
        # Loops run timers up to their clock's resolution early, and float
        # rounding can leave a worker due a femtosecond from now: without the
        # slack, the timer would be re-armed for ~0 s again and again while
        # time stands still (a spin on a virtual clock).
        deadline = self._now() - self._idle_timeout + _EXPIRY_SLACK
        while (
            self._idle
            and self._nworkers > self._min_workers
            and self._idle[0].idle_since <= deadline
        ):
            self._retire_idle(self._idle.popleft())
        self._arm_idle_timer()

    async def cleanup_idle(self) -> int:
        """Retire every idle worker above ``min_workers`` now; returns how many."""
        retired: list[_Worker] = []
        while self._idle and self._nworkers > self._min_workers:
            worker = self._idle.popleft()
            self._retire_idle(worker)
            retired.append(worker)
        tasks = {w.task for w in retired if w.task is not None}
        if tasks:
            await asyncio.wait(tasks)
        return len(retired)

    async def _wait_for_job(self, worker: _Worker) -> bool:
        """Park an idle worker; True means look for a job, False means retire."""
        assert self._loop is not None  # workers exist only while running
        waiter: asyncio.Future[bool] = self._loop.create_future()
        worker.waiter = waiter
        worker.idle_since = self._now()
        self._idle.append(worker)
        self._arm_idle_timer()
        try:
            return await waiter
        except asyncio.CancelledError:
            try:
                self._idle.remove(worker)
            except ValueError:
                # Already taken off the idle list: if that was to take a job,
                # hand the job to another worker.
                woken = waiter.done() and not waiter.cancelled() and waiter.result()
                self._arrived(worker)
                if woken and self._accepting:
                    self._dispatch()
            raise
        finally:
            worker.waiter = None
            self._arrived(worker)

    # -- the worker ---------------------------------------------------------------

    async def _work(self, worker: _Worker) -> None:
        """One worker: take a job, run it inline, record how it ended; repeat.

        This loop is the pool's per-job cost, so it reads each attribute once,
        keeps its own references, and reads the clock once per job (the end of
        one job is the start of the next when no wait comes between).
        """
        queue = self._queue
        get_job = queue.get_nowait
        now = self._now
        waits = self._wait_samples
        runs = self._run_samples
        task = worker.task
        assert task is not None  # set right after create_task, before the first step
        self._arrived(worker)
        countdown = _TIMED_EVERY
        started = wait = 0.0
        limiter = self._limiter
        measure = limiter is not None
        holding = False  # counted in self._running (only with a limiter)
        started_with = 0  # jobs running when this one started, itself included
        restart = False  # the loop crashed and its supervisor restarts it
        try:
            while True:
                if self._nworkers > self._limit:
                    worker.retired = True
                    self._nworkers -= 1
                    return
                if not queue._size:
                    if not self._accepting:
                        return
                    if not await self._wait_for_job(worker):
                        return
                    continue
                try:
                    job = get_job()
                except QueueEmpty:
                    continue  # what was queued had expired and was dropped
                # Time one job in 8: percentiles need samples, not every job,
                # and reading the clock is a large share of the per-job cost.
                countdown -= 1
                timed = not countdown
                every = self._time_every_job  # an instrument wants every job timed
                if timed or measure or every:
                    # An adaptive limiter needs the run time of every job.
                    if timed:
                        countdown = _TIMED_EVERY
                    started = now()
                    wait = started - queue._last_enqueued_at
                    if measure:
                        self._running += 1
                        started_with = self._running
                        holding = True
                job._worker = worker
                worker.job = job
                timer = None
                if job._timeout is not None:
                    timer = self._clock.call_later(job._timeout, self._on_timeout, worker, job)
                try:
                    result = await job._fn(*job._args)
                except BaseException as exc:
                    worker.job = None
                    if timer is not None:
                        timer.cancel()
                    if holding:
                        self._running -= 1
                        holding = False
                    timed_out = self._job_raised(worker, job, exc)
                    if limiter is not None and not job.cancelled():
                        # Timeouts are the limiter's loss signal; cancelled jobs tell nothing.
                        limiter.record(now() - started, in_flight=started_with, dropped=timed_out)
                    if timed_out:
                        outcome = "timed_out"
                    else:
                        outcome = "cancelled" if job.cancelled() else "failed"
                else:
                    worker.job = None
                    if timer is not None:
                        timer.cancel()
                    if worker.interrupt is not None:
                        # The job suppressed its cancellation and returned.
                        worker.interrupt = None
                        task.uncancel()
                    self._completed += 1
                    job.set_result(result)
                    if limiter is not None:
                        self._running -= 1
                        holding = False
                        limiter.record(now() - started, in_flight=started_with)
                    outcome = "completed"
                if timed:
                    index = self._samples & _SAMPLE_MASK
                    self._samples += 1
                    waits[index] = wait
                    runs[index] = run = now() - started
                    instrument = self._instrument
                    if instrument is not None:
                        instrument.job_done(job._priority, wait, run, outcome)
                elif every:
                    instrument = self._instrument
                    if instrument is not None:
                        instrument.job_done(job._priority, wait, now() - started, outcome)
        except Exception as exc:
            # The worker's own loop failed (a job's exception never gets here
            # unless the worker is being cancelled). Unsupervised, or while the
            # worker is being cancelled, it propagates to the task group as before.
            if worker.interrupt is not None:
                worker.interrupt = None
                task.uncancel()  # that cancel was aimed at a job the crash ended
            if self._crash_handler is None or task.cancelling():
                raise
            restart = self._crashed(worker, exc)
        finally:
            if worker.job is not None:
                raise InternalError(f"worker left {worker.job!r} unfinished")
            self._arrived(worker)
            if not worker.retired:
                worker.retired = True
                self._nworkers -= 1
            self._workers.discard(worker)
            if holding:
                self._running -= 1  # left in the middle of a job
            # Restart a crashed worker one-for-one (also while draining, if jobs
            # are left); or replace one killed from outside with jobs still
            # queued and no one to take them.
            if (
                (self._accepting and (restart or queue._size))
                or (restart and self._state is _PoolState.DRAINING and queue._size)
            ) and self._nworkers < self._limit:
                # The task group refuses if it is aborting.
                try:
                    self._spawn()
                except RuntimeError:
                    pass
            self._check_stopped()

    def _job_raised(self, worker: _Worker, job: Job[Any], exc: BaseException) -> bool:
        """Settle a job whose coroutine raised; True if it timed out.

        Re-raises what must end the worker (its own cancellation, or a
        KeyboardInterrupt or SystemExit from the job).
        """
        task = worker.task
        assert task is not None  # a worker with a job has a task
        interrupt, worker.interrupt = worker.interrupt, None
        if interrupt is not None:
            task.uncancel()  # the pool's own cancel was aimed at the job, not the worker
        if interrupt is _Interrupt.TIMEOUT and isinstance(exc, Exception | asyncio.CancelledError):
            # CancelledError, or whatever the job raised while handling it.
            self._timed_out += 1
            error = JobTimeout(f"job exceeded its timeout of {job._timeout} s")
            error.__cause__ = exc
            job.set_exception(error)
            if task.cancelling():
                raise exc  # the worker itself is being cancelled (the pool is closing)
            return True
        if isinstance(exc, asyncio.CancelledError):
            self._cancelled += 1
            job._cancel_future(exc.args[0] if exc.args else None)
        else:
            self._failed += 1
            job.set_exception(exc)
            if not isinstance(exc, Exception):
                raise exc  # KeyboardInterrupt, SystemExit: never swallowed
            if self._error_policy is not ErrorPolicy.ISOLATE:
                self._on_job_error(job, exc)
        if task.cancelling():
            raise exc  # the worker itself is being cancelled (the pool is closing)
        return False

    def _on_timeout(self, worker: _Worker, job: Job[Any]) -> None:
        if worker.job is job and worker.interrupt is None and worker.task is not None:
            worker.interrupt = _Interrupt.TIMEOUT
            worker.task.cancel(msg=f"{self.name}: job timed out")

    def _cancel_job(self, job: Job[Any], msg: Any | None) -> bool:
        worker: _Worker | None = getattr(job, "_worker", None)
        if worker is None:
            if not self._queue.remove(job, job._priority):
                raise InternalError(f"{job!r} was queued but not found in the queue")
            self._cancelled += 1
            job._cancel_future(msg)
            return True
        assert worker.task is not None  # a worker gets its task before it takes jobs
        if worker.interrupt is None:
            worker.interrupt = _Interrupt.CANCEL
            worker.task.cancel(msg=msg)
        return True

    def _on_queue_drop(self, job: Job[Any], reason: DropReason) -> None:
        if reason is DropReason.REJECTED:
            return  # never accepted: submit() raises Rejected and counts it
        self._dropped += 1
        error = Dropped(
            f"job dropped before it ran ({reason.value})",
            reason=reason,
            priority=job.priority,
        )
        # A pool failed by its supervisor drops its queue: the failure is why.
        error.__cause__ = self._failure
        job.set_exception(error)
        # A drop is the queue doing its job, and is counted; an awaiter still
        # gets Dropped, but one nobody awaits is not logged as an unseen error
        # (a shutdown or an overload would otherwise flood the log).
        job.exception()

    def _on_job_error(self, job: Job[Any], exc: Exception) -> None:
        job.exception()  # the pool re-raises it on exit: do not also log it as unretrieved
        self._errors.append(exc)
        if self._error_policy is ErrorPolicy.FAIL_FAST and self._state is _PoolState.RUNNING:
            self._cancel_now()

    # -- statistics ---------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        """A frozen snapshot of the pool's workers, jobs and latencies."""
        count = min(self._samples, SAMPLES)
        waits = sorted(self._wait_samples[:count])
        runs = sorted(self._run_samples[:count])
        loop = self._loop
        return PoolStatistics(
            loop=loop_name(loop) if loop is not None else "not started",
            max_workers=self._max_workers,
            limit=self._limit,
            min_workers=self._min_workers,
            workers=len(self._workers),
            active=self._active_count(),
            idle=len(self._idle),
            pending=self._queue._size,
            submitted=self._submitted,
            completed=self._completed,
            failed=self._failed,
            cancelled=self._cancelled,
            timed_out=self._timed_out,
            rejected=self._rejected,
            dropped=self._dropped,
            avg_lifetime=(sum(waits) + sum(runs)) / count if count else 0.0,
            wait_p50=percentile(waits, 0.50),
            wait_p99=percentile(waits, 0.99),
            run_p50=percentile(runs, 0.50),
            run_p99=percentile(runs, 0.99),
        )

    def _active_count(self) -> int:
        return sum(1 for worker in self._workers if worker.job is not None)

    def __repr__(self) -> str:
        return (
            f"<WorkerPool {self.name} {self._active_count()}/{self._limit} busy, "
            f"{self._queue._size} pending, {self._state.value}>"
        )


class MapIterator(Generic[T, R]):
    """The async iterator returned by :meth:`WorkerPool.map`.

    Leaving the ``async for`` early, or an exception, cancels the jobs in flight.
    Usable as ``async with pool.map(...) as results:`` to make that explicit.
    """

    def __init__(
        self,
        pool: WorkerPool,
        fn: Callable[[T], Awaitable[R]],
        items: Iterable[T] | AsyncIterable[T],
        ordered: bool,
        window: int,
        priority: int | None,
        timeout: float | None,
    ) -> None:
        # Set first: __del__ runs even when this constructor raises.
        self._closed = False
        self._in_flight: deque[Job[R]] = deque()
        self._finished: deque[Job[R]] = deque()  # unordered mode: done, not yet yielded
        self._pool = pool
        self._fn = fn
        self._sync_items: Iterator[T] | None = None
        self._async_items: AsyncIterator[T] | None = None
        if isinstance(items, AsyncIterable):
            self._async_items = aiter(items)
        elif isinstance(items, Iterable):
            self._sync_items = iter(items)
        else:
            raise TypeError(f"items must be iterable, not {type(items).__name__}")
        self._ordered = ordered
        self._window = window
        self._priority = priority
        self._timeout = timeout
        self._wakeup: asyncio.Event | None = None
        self._exhausted = False

    def __aiter__(self) -> MapIterator[T, R]:
        return self

    async def __aenter__(self) -> MapIterator[T, R]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _next_item(self) -> tuple[T] | None:
        """The next item in a 1-tuple (an item may be None), or None when exhausted."""
        if self._sync_items is not None:
            for item in self._sync_items:
                return (item,)
            return None
        assert self._async_items is not None  # one of the two is always set
        try:
            return (await anext(self._async_items),)
        except StopAsyncIteration:
            return None

    def _job_done(self, job: asyncio.Future[R]) -> None:
        if self._closed:
            return
        assert isinstance(job, Job)  # only our jobs get this callback
        self._in_flight.remove(job)
        self._finished.append(job)
        if self._wakeup is not None:
            self._wakeup.set()

    async def _fill(self) -> None:
        while not self._exhausted and len(self._in_flight) + len(self._finished) < self._window:
            next_item = await self._next_item()
            if next_item is None:
                self._exhausted = True
                return
            job = await self._pool.submit(
                self._fn, next_item[0], priority=self._priority, timeout=self._timeout
            )
            self._in_flight.append(job)
            if not self._ordered:
                job.add_done_callback(self._job_done)

    async def __anext__(self) -> R:
        if self._closed:
            raise StopAsyncIteration
        try:
            await self._fill()
            if self._ordered:
                if not self._in_flight:
                    raise StopAsyncIteration
                result = await self._in_flight[0]
                del self._in_flight[0]
                return result
            while not self._finished:
                if not self._in_flight:
                    raise StopAsyncIteration
                self._wakeup = asyncio.Event()
                await self._wakeup.wait()
            return self._finished.popleft().result()
        except BaseException:
            self._cancel_all()
            raise

    def _cancel_all(self) -> None:
        self._closed = True
        for job in list(self._in_flight):
            job.cancel()
        for job in self._finished:
            if not job.cancelled():
                job.exception()  # finished but never yielded: not an unobserved error
        self._in_flight.clear()
        self._finished.clear()

    async def aclose(self) -> None:
        """Cancel the jobs still in flight and stop the iteration."""
        self._cancel_all()

    def __del__(self) -> None:
        # Leaving `async for` with `break` drops the iterator: stop its jobs.
        if not self._closed and (self._in_flight or self._finished):
            self._cancel_all()
