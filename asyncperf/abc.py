"""Interfaces users may implement to plug their own parts into asyncperf."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

__all__ = ["Cancellable", "Clock", "ScalingDecision", "ScalingPolicy", "ScalingReadings"]


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
