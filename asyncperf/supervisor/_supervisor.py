"""Supervisor: one coroutine that sizes the watched pools each tick and restarts crashed workers."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Literal

from asyncperf._errors import PoolFailed
from asyncperf._validate import check_int, check_number
from asyncperf.abc import Cancellable, Clock, ScalingDecision, ScalingReadings
from asyncperf.abc import ScalingPolicy as ScalingPolicyProtocol
from asyncperf.loop import SystemClock
from asyncperf.queues import AdaptiveLimiter
from asyncperf.supervisor._policy import ScalingPolicy
from asyncperf.workers import WorkerPool

__all__ = [
    "EventListener",
    "ScalingAction",
    "ScalingEvent",
    "SupervisedPoolStatistics",
    "Supervisor",
    "SupervisorStatistics",
]

_logger = logging.getLogger("asyncperf.supervisor")
_NO_READINGS: Mapping[str, float] = MappingProxyType({})

ScalingAction = Literal["grow", "shrink", "hold", "limit", "adjust", "restart", "fail"]


@dataclass(frozen=True, slots=True)
class ScalingEvent:
    """One decision of a :class:`Supervisor`, as kept in its log.

    ``action`` is ``grow`` or ``shrink`` (``before``/``after``: the pool's
    size), ``limit`` (the adaptive limiter's limit), ``adjust`` (the load given
    to ``queue.adjust()``), ``hold`` (the policy refrained; before = after =
    the size), ``restart`` (a crashed worker was restarted; the restarts in
    the window before and after) or ``fail`` (the restart intensity was
    exceeded and the pool failed).
    """

    #: When, on the supervisor's clock.
    time: float
    #: The pool's name in the supervisor.
    pool: str
    action: ScalingAction
    before: float
    after: float
    #: Why, in words.
    reason: str
    #: The readings of the tick behind it (empty for a restart).
    readings: Mapping[str, float]

    def __str__(self) -> str:
        change = f"{_num(self.before)} -> {_num(self.after)}"
        return f"{self.pool}: {self.action} {change}: {self.reason}"


#: Called with each new event (metrics, dashboards); see :meth:`Supervisor.add_listener`.
EventListener = Callable[[ScalingEvent], None]


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


@dataclass(frozen=True, slots=True)
class SupervisedPoolStatistics:
    """One watched pool, as its supervisor sees it."""

    name: str
    #: The pool's size (``max_workers``) and worker tasks alive.
    workers: int
    live: int
    #: The limit in force (the size, or the limiter's limit when lower).
    limit: int
    #: Events recorded for the pool (decisions, restarts, failure).
    decisions: int
    #: Crashed workers restarted (in all), and the pool's failure, if any.
    restarts: int
    failed: bool


@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    """A snapshot of a :class:`Supervisor`."""

    #: Ticks run.
    ticks: int
    #: How late the last tick woke, and the most it ever did, seconds.
    loop_lag: float
    max_loop_lag: float
    pools: tuple[SupervisedPoolStatistics, ...]
    #: The last ``max_events`` events, oldest first.
    events: tuple[ScalingEvent, ...]

    def pool(self, name: str) -> SupervisedPoolStatistics:
        """The statistics of the pool named ``name``.

        Raises:
            KeyError: no watched pool has that name.
        """
        for entry in self.pools:
            if entry.name == name:
                return entry
        raise KeyError(name)


@dataclass(slots=True, eq=False)
class _Watched:
    pool: WorkerPool
    policy: ScalingPolicyProtocol
    limiter: AdaptiveLimiter | None
    name: str
    # Counters at the previous tick, for the rates.
    last_time: float = math.nan
    last_offered: int = 0
    last_finished: int = 0
    decisions: int = 0
    restarts: int = 0
    # Times of the restarts within the restart window.
    recent: deque[float] = field(default_factory=deque)
    failure: PoolFailed | None = None
    # The reason of the last event if it was a hold: the same hold is not repeated.
    last_hold: str | None = None


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Supervisor:
    """Keeps worker pools sized to their load and their workers running.

    One coroutine, :meth:`run`, serves every pool given to :meth:`watch`.
    Every ``interval`` seconds of ``clock`` it reads each pool (queue delay,
    backlog, busy and idle workers, the limit in force, the adaptive
    limiter's limit, arrival and completion rates) and the loop lag (how late
    the tick itself woke), hands the readings to the pool's
    :class:`~asyncperf.abc.ScalingPolicy` and applies the decision: the pool's
    ``max_workers``, the limiter's limit, and ``queue.adjust(load)``.

    While it runs it also supervises the pools' workers: a worker whose own
    loop raises (a bug, not a job's exception, which only its job sees) is
    restarted one-for-one. More than ``max_restarts`` restarts of one pool
    within ``restart_window`` seconds fail that pool instead: its queued jobs
    end with :class:`~asyncperf.Dropped`, it accepts no more jobs, and
    :meth:`run` raises :class:`PoolFailed` with the crash as its cause.

    Every decision is a :class:`ScalingEvent` (time, action, from, to, reason
    and readings), kept in a bounded log (:attr:`events`, :meth:`statistics`),
    passed to listeners and logged on the ``asyncperf.supervisor`` logger (INFO;
    restarts at WARNING, a failure at ERROR)::

        supervisor = Supervisor(interval=0.25)
        supervisor.watch(pool, policy=ScalingPolicy(min_workers=2, max_workers=64))
        async with supervisor:
            ...

    Args:
        clock: the time source the ticks sleep on (default
            :class:`~asyncperf.SystemClock`); give the pools the same one.
        interval: seconds between ticks.
        max_restarts: restarts of one pool's workers allowed within
            ``restart_window``; one more fails the pool (0: the first crash does).
        restart_window: seconds over which restarts are counted.
        max_events: events kept in the log.

    Raises:
        TypeError: a parameter has the wrong type.
        ValueError: a parameter is out of range (the message names it).
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        interval: float = 0.25,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        max_events: int = 256,
        cpu_time: Callable[[], float] = time.process_time,
        real_time: Callable[[], float] = time.perf_counter,
    ) -> None:
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be a Clock, not {type(clock).__name__}")
        check_number("interval", interval)
        check_int("max_restarts", max_restarts, minimum=0)
        check_number("restart_window", restart_window)
        check_int("max_events", max_events, minimum=1)
        self._clock = clock if clock is not None else SystemClock()
        self._interval = float(interval)
        self._max_restarts = max_restarts
        self._restart_window = float(restart_window)
        self._events: deque[ScalingEvent] = deque(maxlen=max_events)
        self._watched: list[_Watched] = []
        self._listeners: list[EventListener] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None
        # The task inside `async with`, cancelled if run() fails (see __aenter__).
        self._host: asyncio.Task[Any] | None = None
        self._host_cancelled = False
        self._wakeup: asyncio.Future[None] | None = None
        self._failure: PoolFailed | None = None
        self._ticks = 0
        self._lag = 0.0
        self._max_lag = 0.0
        # CPU use is measured in real time whatever the clock: a virtual clock
        # says nothing about how busy the process is.
        self._cpu_time = cpu_time
        self._real_time = real_time
        self._cpu_mark = (cpu_time(), real_time())
        self._cpu = 0.0

    # -- configuration ------------------------------------------------------------

    @property
    def interval(self) -> float:
        """Seconds between ticks."""
        return self._interval

    @property
    def events(self) -> tuple[ScalingEvent, ...]:
        """The last ``max_events`` events, newest last."""
        return tuple(self._events)

    def watch(
        self,
        pool: WorkerPool,
        *,
        policy: ScalingPolicyProtocol | None = None,
        limiter: AdaptiveLimiter | None = None,
        name: str | None = None,
    ) -> None:
        """Size ``pool`` with ``policy`` and supervise its workers; also while running.

        A pool that has not started yet, or has closed, is skipped at each tick.

        Args:
            pool: the pool.
            policy: decides the pool's size; default a fresh
                :class:`ScalingPolicy`. One policy object per pool.
            limiter: an adaptive limiter that moves with the size; default the
                pool's own ``limiter``, if any.
            name: the pool's name in events and statistics; default ``pool.name``.

        Raises:
            TypeError: ``pool``, ``policy`` or ``limiter`` has the wrong type.
            ValueError: the pool, its name or the policy is already watched.
        """
        if not isinstance(pool, WorkerPool):
            raise TypeError(f"pool must be a WorkerPool, not {type(pool).__name__}")
        if policy is None:
            policy = ScalingPolicy()
        elif not isinstance(policy, ScalingPolicyProtocol):
            raise TypeError(
                f"policy must have a decide(readings) method, not {type(policy).__name__}"
            )
        if limiter is None:
            limiter = pool.limiter
        elif not isinstance(limiter, AdaptiveLimiter):
            raise TypeError(f"limiter must be an AdaptiveLimiter, not {type(limiter).__name__}")
        if name is None:
            name = pool.name
        elif not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        for entry in self._watched:
            if entry.pool is pool:
                raise ValueError(f"pool {entry.name!r} is already watched")
            if entry.name == name:
                raise ValueError(f"name {name!r} is already used by a watched pool")
            if entry.policy is policy:
                raise ValueError(
                    f"policy is already used for pool {entry.name!r}: give each pool its own"
                )
        watched = _Watched(pool, policy, limiter, name)
        if self._running:
            self._attach(watched)
        self._watched.append(watched)

    def unwatch(self, pool: WorkerPool) -> None:
        """Stop sizing and supervising ``pool``; nothing happens if it is not watched."""
        for entry in self._watched:
            if entry.pool is pool:
                self._detach(entry)
                self._watched.remove(entry)
                return

    def add_listener(self, callback: EventListener) -> None:
        """Call ``callback(event)`` for each new event (a metrics layer, a dashboard).

        A callback that raises is logged and removed.
        """
        self._listeners.append(callback)

    def remove_listener(self, callback: EventListener) -> None:
        """Stop calling ``callback``; nothing happens if it is not registered."""
        try:
            self._listeners.remove(callback)
        except ValueError:
            pass

    # -- running ------------------------------------------------------------------

    async def run(self) -> None:
        """Tick every ``interval`` until cancelled; supervise the pools' workers meanwhile.

        Raises:
            PoolFailed: a pool's workers crashed beyond the restart intensity
                (the crash is its ``__cause__``); the pool has been failed.
            RuntimeError: ``run()`` is already running.
            Exception: whatever a policy's ``decide`` raised.
        """
        if self._running:
            raise RuntimeError("Supervisor.run() is already running")
        if self._failure is not None:
            raise self._failure
        self._running = True
        loop = asyncio.get_running_loop()
        now = self._clock.now
        try:
            for entry in self._watched:
                self._check_attachable(entry)
            for entry in self._watched:
                self._attach(entry)
            due = now() + self._interval
            while True:
                waiter: asyncio.Future[None] = loop.create_future()
                handle: Cancellable = self._clock.call_later(
                    max(due - now(), 0.0), _resolve, waiter
                )
                self._wakeup = waiter
                try:
                    await waiter
                finally:
                    self._wakeup = None
                    handle.cancel()
                if self._failure is not None:
                    raise self._failure
                woke = now()
                self._tick(woke, max(woke - due, 0.0))
                due += self._interval
                if due <= woke:
                    due = woke + self._interval  # ticks missed while the loop was blocked
        finally:
            self._running = False
            for entry in self._watched:
                self._detach(entry)

    async def __aenter__(self) -> Supervisor:
        """Start :meth:`run` in a task owned by the supervisor.

        If :meth:`run` fails (a pool failed, or a policy raised), the task that
        entered the block is cancelled, as a task group does, and leaving the
        block raises that error.
        """
        if self._task is not None:
            raise RuntimeError("A Supervisor can be entered only once at a time.")
        self._host = asyncio.current_task()
        self._host_cancelled = False
        self._task = asyncio.create_task(self.run(), name="asyncperf-supervisor")
        self._task.add_done_callback(self._on_run_done)
        return self

    def _on_run_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None or self._host is None:
            return
        # Escalate: the block's task learns of the failure now, not at its end.
        self._host_cancelled = True
        self._host.cancel(msg="supervisor: run() failed")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Cancel :meth:`run` and wait for it; raise its error if it failed.

        Raises:
            PoolFailed: a pool failed while the block ran (unless the block
                raised an error of its own, which then propagates).
        """
        task, self._task = self._task, None
        assert task is not None  # set by __aenter__
        task.remove_done_callback(self._on_run_done)
        host, self._host = self._host, None
        if not task.done():
            task.cancel(msg="supervisor: closing")
            # The block may be cancelled while this waits: run() is cancelled already.
            await asyncio.wait({task})
        error = None if task.cancelled() else task.exception()
        if self._host_cancelled:
            self._host_cancelled = False
            assert host is not None  # only a host is cancelled
            if host.uncancel() == 0 and isinstance(exc, asyncio.CancelledError):
                # That cancellation was ours, to deliver the failure.
                assert error is not None  # we cancel the host only when run() failed
                raise error
        if error is not None and exc is None:
            raise error

    # -- a tick -------------------------------------------------------------------

    def _tick(self, now: float, lag: float) -> None:
        self._ticks += 1
        self._lag = lag
        self._max_lag = max(self._max_lag, lag)
        cpu, real = self._cpu_time(), self._real_time()
        last_cpu, last_real = self._cpu_mark
        if real > last_real:
            self._cpu = max(cpu - last_cpu, 0.0) / (real - last_real)
        self._cpu_mark = (cpu, real)
        for entry in list(self._watched):
            if entry.pool.running and entry.failure is None:
                self._tick_pool(entry, now, lag)

    def _read(self, entry: _Watched, now: float, lag: float) -> ScalingReadings:
        pool = entry.pool
        stats = pool.statistics()
        queue = pool.queue.statistics()
        offered = stats.submitted + stats.rejected
        finished = stats.completed + stats.failed + stats.timed_out + stats.cancelled
        elapsed = now - entry.last_time
        if math.isnan(elapsed) or elapsed <= 0:
            arrival_rate = completion_rate = 0.0
        else:
            arrival_rate = (offered - entry.last_offered) / elapsed
            completion_rate = (finished - entry.last_finished) / elapsed
        entry.last_time, entry.last_offered, entry.last_finished = now, offered, finished
        limiter = entry.limiter
        return ScalingReadings(
            pool=entry.name,
            time=now,
            interval=self._interval,
            workers=stats.max_workers,
            min_workers=stats.min_workers,
            limit=stats.limit,
            live=stats.workers,
            active=stats.active,
            idle=stats.idle,
            pending=stats.pending,
            queue_delay=max((level.oldest_age for level in queue.levels), default=0.0),
            arrival_rate=arrival_rate,
            completion_rate=completion_rate,
            limiter_limit=limiter.limit if limiter is not None else None,
            limiter_max=limiter.max_limit if limiter is not None else None,
            load=queue.load,
            loop_lag=lag,
            cpu=self._cpu,
        )

    def _tick_pool(self, entry: _Watched, now: float, lag: float) -> None:
        readings = self._read(entry, now, lag)
        decision = entry.policy.decide(readings)
        if not isinstance(decision, ScalingDecision):
            raise TypeError(
                f"{type(entry.policy).__name__}.decide() must return a ScalingDecision, "
                f"not {type(decision).__name__}"
            )
        self._apply(entry, readings, decision)

    def _apply(self, entry: _Watched, r: ScalingReadings, d: ScalingDecision) -> None:
        """Carry out a decision, one event per change (or a hold, for a reason alone)."""
        pool = entry.pool
        values = MappingProxyType(r.as_dict())
        reason = d.reason or f"{type(entry.policy).__name__} decided so"
        changed = False
        if d.workers is not None:
            check_int("workers", d.workers, minimum=1)
            size = max(d.workers, pool.min_workers)
            if size != d.workers:
                reason += f" (raised to min_workers {size})"
            before = pool.max_workers
            if size != before:
                pool.max_workers = size
                action: ScalingAction = "grow" if size > before else "shrink"
                self._record(entry, r.time, action, before, size, reason, values)
                changed = True
        limiter = entry.limiter
        if d.limiter_limit is not None and limiter is not None:
            check_int("limiter_limit", d.limiter_limit)
            limit = min(max(d.limiter_limit, limiter.min_limit), limiter.max_limit)
            before = limiter.limit
            if limit != before:
                limiter.limit = limit
                self._record(entry, r.time, "limit", before, limit, reason, values)
                changed = True
        if d.load is not None:
            check_number("load", d.load, strict=False)
            if d.load != r.load:
                pool.queue.adjust(d.load)
                self._record(entry, r.time, "adjust", r.load, d.load, reason, values)
                changed = True
        if not changed and d.reason and reason != entry.last_hold:
            # Refraining is a decision too; the same hold tick after tick is logged once.
            size = pool.max_workers
            self._record(entry, r.time, "hold", size, size, reason, values)
            entry.last_hold = reason

    # -- events -------------------------------------------------------------------

    def _record(
        self,
        entry: _Watched,
        time: float,
        action: ScalingAction,
        before: float,
        after: float,
        reason: str,
        readings: Mapping[str, float],
        level: int = logging.INFO,
        cause: BaseException | None = None,
    ) -> None:
        event = ScalingEvent(time, entry.name, action, before, after, reason, readings)
        entry.decisions += 1
        entry.last_hold = None
        self._events.append(event)
        _logger.log(
            level,
            "%s",
            event,
            exc_info=(type(cause), cause, cause.__traceback__) if cause is not None else None,
        )
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                _logger.exception("supervisor event listener %r failed; removed", listener)
                self.remove_listener(listener)

    # -- supervision --------------------------------------------------------------

    def _check_attachable(self, entry: _Watched) -> None:
        handler = entry.pool._crash_handler
        if handler is not None and not (
            isinstance(handler, _CrashHandler) and handler.entry is entry
        ):
            raise RuntimeError(f"pool {entry.name!r} is already supervised by another Supervisor")

    def _attach(self, entry: _Watched) -> None:
        """Restart the pool's crashed workers from now on, and count its rates from now."""
        self._check_attachable(entry)
        entry.pool._crash_handler = _CrashHandler(self, entry)
        stats = entry.pool.statistics()
        entry.last_time = self._clock.now()
        entry.last_offered = stats.submitted + stats.rejected
        entry.last_finished = stats.completed + stats.failed + stats.timed_out + stats.cancelled

    def _detach(self, entry: _Watched) -> None:
        handler = entry.pool._crash_handler
        if isinstance(handler, _CrashHandler) and handler.entry is entry:
            entry.pool._crash_handler = None

    def _on_crash(self, entry: _Watched, exc: BaseException) -> bool:
        """A worker of ``entry``'s pool crashed: restart it, or fail the pool; True restarts."""
        now = self._clock.now()
        recent = entry.recent
        while recent and recent[0] <= now - self._restart_window:
            recent.popleft()
        crash = f"worker loop crashed: {type(exc).__name__}: {exc}"
        if len(recent) >= self._max_restarts:
            error = PoolFailed(
                f"{entry.name}: workers crashed {len(recent) + 1} times within "
                f"{self._restart_window:g} s (max_restarts={self._max_restarts}); "
                "the pool has been failed"
            )
            error.__cause__ = exc
            entry.failure = error
            self._record(
                entry,
                now,
                "fail",
                len(recent),
                len(recent) + 1,
                f"{crash}; restart intensity exceeded: the pool fails",
                _NO_READINGS,
                logging.ERROR,
                exc,
            )
            entry.pool._fail(error)
            if self._failure is None:
                self._failure = error
            if self._wakeup is not None:
                _resolve(self._wakeup)  # run() raises now, not at the next tick
            return False
        recent.append(now)
        entry.restarts += 1
        self._record(
            entry,
            now,
            "restart",
            len(recent) - 1,
            len(recent),
            f"{crash}; restarted ({len(recent)} of {self._max_restarts} within "
            f"{self._restart_window:g} s)",
            _NO_READINGS,
            logging.WARNING,
            exc,
        )
        return True

    # -- inspection ---------------------------------------------------------------

    def statistics(self) -> SupervisorStatistics:
        """A frozen snapshot: ticks, loop lag, each watched pool, and the event log."""
        pools = []
        for entry in self._watched:
            pool = entry.pool
            pools.append(
                SupervisedPoolStatistics(
                    name=entry.name,
                    workers=pool.max_workers,
                    live=pool.statistics().workers,
                    limit=pool.limit,
                    decisions=entry.decisions,
                    restarts=entry.restarts,
                    failed=entry.failure is not None,
                )
            )
        return SupervisorStatistics(
            ticks=self._ticks,
            loop_lag=self._lag,
            max_loop_lag=self._max_lag,
            pools=tuple(pools),
            events=tuple(self._events),
        )

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return (
            f"<Supervisor {len(self._watched)} pools, every {self._interval:g} s, "
            f"{self._ticks} ticks, {state}>"
        )


class _CrashHandler:
    """The pool's crash hook: the supervisor's, for one watched pool."""

    __slots__ = ("entry", "supervisor")

    def __init__(self, supervisor: Supervisor, entry: _Watched) -> None:
        self.supervisor = supervisor
        self.entry = entry

    def __call__(self, exc: BaseException) -> bool:
        return self.supervisor._on_crash(self.entry, exc)
