"""The default scaling policy: grow at once on a sustained queue delay, shrink after a hold-down."""

from __future__ import annotations

import math
from collections import deque

from asyncperf._validate import check_int, check_number
from asyncperf.abc import ScalingDecision, ScalingReadings

__all__ = ["ScalingPolicy"]

#: The highest load handed to ``queue.adjust()`` (beyond its ``full_load`` it changes nothing).
_MAX_LOAD = 10.0
#: Seconds of ticks the load is measured over (or the window, if longer): rates over a
#: few short ticks are noise.
_LOAD_SPAN = 1.0
_KEEP = ScalingDecision()


def _s(seconds: float) -> str:
    """Seconds for a reason: milliseconds below one second."""
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


class ScalingPolicy:
    """The default :class:`asyncperf.abc.ScalingPolicy`: size a pool from its queue delay.

    Each tick it compares the queue delay (the age of the oldest queued job)
    with ``target_queue_delay``, and acts only on a full window of ticks,
    never on one sample:

    * **Grow at once.** When the delay was above the target on each of the
      last ``window`` ticks, the pool grows straight to
      ``min(active + pending, max_workers)`` (every job waiting or running
      gets a worker), or by ``scale_up_step`` per tick when that is set. The
      adaptive limiter's limit, if below the new size, is raised with it, and
      any backpressure is relaxed (``load`` 1.0): while the pool can grow, the
      queue does not shed.
    * **Refrain when growing would not help**, and apply backpressure
      instead (``queue.adjust(load)`` with ``load`` = offered / completed
      over the last second): when the limiter holds the limit below the size (the
      upstream is saturated: more workers would only wait on it), when the
      event loop lags more than ``max_loop_lag`` on average over the window
      (the process is CPU-bound: more workers only add overhead), or when the
      pool is at ``max_workers``. Each such stop is reported once, as a
      ``hold`` with its reason.
    * **Shrink after a hold-down.** Only after ``hold_down`` seconds with the
      delay continuously at or below the target does the pool shrink, to
      ``max(peak demand over those seconds, min_workers)`` where demand is
      ``active + pending``; the limiter's limit comes down with it and the
      queue's bounds are relaxed. The pool retires idle workers first, the
      most recently idle last, and lets busy ones finish their job. Then the
      next hold-down starts.

    A policy keeps state between ticks: give each pool its own.

    Args:
        min_workers: the pool never shrinks below this.
        max_workers: the pool never grows above this.
        target_queue_delay: seconds a job may wait in the queue before the pool
            counts as short of workers.
        scale_up_step: grow by at most this many workers per tick; None grows
            at once to the demand.
        hold_down: seconds the delay must stay at or below the target before
            the pool shrinks.
        window: ticks of sustained delay before the pool grows (at least 1).
        max_loop_lag: mean loop lag over the window, seconds, above which the
            pool does not grow.
        max_cpu: mean CPU use over the window (CPU seconds per second, 1.0 = one
            core) above which the pool does not grow: an event loop thread that
            is busy all the time gains nothing from more workers. None (the
            default) turns this guard off; 0.9 suits a process whose work all
            runs on its event loop.

    Raises:
        TypeError: a parameter has the wrong type.
        ValueError: a parameter is out of range (the message names it).
    """

    def __init__(
        self,
        *,
        min_workers: int = 1,
        max_workers: int = 64,
        target_queue_delay: float = 0.05,
        scale_up_step: int | None = None,
        hold_down: float = 30.0,
        window: int = 4,
        max_loop_lag: float = 0.1,
        max_cpu: float | None = None,
    ) -> None:
        check_int("min_workers", min_workers, minimum=1)
        check_int("max_workers", max_workers, minimum=1)
        if max_workers < min_workers:
            raise ValueError("max_workers must be >= min_workers")
        check_number("target_queue_delay", target_queue_delay)
        if scale_up_step is not None:
            check_int("scale_up_step", scale_up_step, minimum=1)
        check_number("hold_down", hold_down, strict=False)
        check_int("window", window, minimum=1)
        check_number("max_loop_lag", max_loop_lag)
        if max_cpu is not None:
            check_number("max_cpu", max_cpu)
        self.min_workers = min_workers
        self.max_workers = max_workers
        self.target_queue_delay = float(target_queue_delay)
        self.scale_up_step = scale_up_step
        self.hold_down = float(hold_down)
        self.window = window
        self.max_loop_lag = float(max_loop_lag)
        self.max_cpu = None if max_cpu is None else float(max_cpu)
        # The last `window` ticks: delay above the target?, and the loop lag.
        self._over: deque[bool] = deque(maxlen=window)
        self._lags: deque[float] = deque(maxlen=window)
        self._cpus: deque[float] = deque(maxlen=window)
        # Arrival and completion rates of the last _LOAD_SPAN seconds of ticks
        # (sized at the first tick, which tells the interval).
        self._arrivals: deque[float] | None = None
        self._completions: deque[float] | None = None
        # Since when the delay has stayed at or below the target (None: it is
        # above), and the peak demand seen since then.
        self._calm_since: float | None = None
        self._peak_demand = 0
        # Why growth is refused now ("limiter", "lag", "max"), so each stop is
        # reported once rather than every tick.
        self._blocked: str | None = None

    def __repr__(self) -> str:
        return (
            f"<ScalingPolicy {self.min_workers}..{self.max_workers} workers, "
            f"target {_s(self.target_queue_delay)}, window {self.window}, "
            f"hold-down {_s(self.hold_down)}>"
        )

    def decide(self, readings: ScalingReadings) -> ScalingDecision:
        """This tick's decision for the pool ``readings`` describe."""
        r = readings
        over = r.queue_delay > self.target_queue_delay
        self._over.append(over)
        self._lags.append(r.loop_lag)
        self._cpus.append(r.cpu)
        if self._arrivals is None or self._completions is None:
            ticks = max(self.window, math.ceil(_LOAD_SPAN / r.interval))
            self._arrivals, self._completions = deque(maxlen=ticks), deque(maxlen=ticks)
        self._arrivals.append(r.arrival_rate)
        self._completions.append(r.completion_rate)
        demand = r.active + r.pending
        if over:
            self._calm_since = None
        elif self._calm_since is None:
            self._calm_since = r.time
            self._peak_demand = demand
        else:
            self._peak_demand = max(self._peak_demand, demand)

        size = r.workers
        if not self.min_workers <= size <= self.max_workers:
            new = min(max(size, self.min_workers), self.max_workers)
            return ScalingDecision(
                workers=new,
                limiter_limit=self._limiter_follows(r, new),
                reason=f"size {size} is outside the policy's {self.min_workers}.."
                f"{self.max_workers} workers",
            )
        if len(self._over) == self.window and all(self._over):
            return self._short(r, size, demand)
        self._blocked = None
        # (A nanosecond of slack: tick times are sums of float intervals.)
        if self._calm_since is not None and r.time - self._calm_since >= self.hold_down - 1e-9:
            return self._calm(r, size, demand)
        return _KEEP

    # -- growing ------------------------------------------------------------------

    def _short(self, r: ScalingReadings, size: int, demand: int) -> ScalingDecision:
        """The delay has been above the target all window: grow, or say why not."""
        sustained = (
            f"queue delay {_s(r.queue_delay)} > target {_s(self.target_queue_delay)} "
            f"for {self.window} ticks"
        )
        if r.limit < size:
            # The limiter, not the size, bounds the pool: its latency says the
            # upstream is saturated, so more workers would only queue there.
            return self._hold(
                r,
                "limiter",
                f"{sustained}, but the limiter holds the limit at {r.limit} < size {size}: "
                "not growing (the upstream is saturated); backpressure instead",
            )
        high = self.max_workers
        if r.limiter_max is not None:
            high = min(high, r.limiter_max)
        want = min(demand, high)
        if self.scale_up_step is not None:
            want = min(want, size + self.scale_up_step)
        if want <= size:
            if size >= high:
                return self._hold(
                    r,
                    "max",
                    f"{sustained}, at the most workers ({high}): backpressure instead",
                )
            self._blocked = None
            return _KEEP  # every waiting job has a worker on its way
        lag = sum(self._lags) / len(self._lags)
        if lag > self.max_loop_lag:
            return self._hold(
                r,
                "lag",
                f"{sustained}, but the loop lags {_s(lag)} > max_loop_lag "
                f"{_s(self.max_loop_lag)}: not growing (more workers only add overhead); "
                "backpressure instead",
            )
        if self.max_cpu is not None:
            cpu = sum(self._cpus) / len(self._cpus)
            if cpu > self.max_cpu:
                return self._hold(
                    r,
                    "cpu",
                    f"{sustained}, but the process uses {cpu:.2f} CPU > max_cpu "
                    f"{self.max_cpu:g}: not growing (more workers only add overhead); "
                    "backpressure instead",
                )
        self._blocked = None
        return ScalingDecision(
            workers=want,
            limiter_limit=self._limiter_follows(r, want),
            load=1.0 if r.load > 1.0 else None,
            reason=f"{sustained}; demand {demand} ({r.active} running + {r.pending} queued)",
        )

    def _hold(self, r: ScalingReadings, kind: str, reason: str) -> ScalingDecision:
        """Do not grow; tighten the queue's bounds to the measured overload instead."""
        load = self._load()
        # Small moves of the measured load are noise: only a change of 10% is applied.
        new_load = None if math.isclose(load, r.load, rel_tol=0.1) else load
        if kind == self._blocked and new_load is None:
            return _KEEP  # already reported, nothing new to do
        self._blocked = kind
        return ScalingDecision(load=new_load, reason=f"{reason} (load {load:.2g})")

    def _load(self) -> float:
        """Offered over completed in the last second, at least 1.0: the ``adjust`` load."""
        # Both are set by decide() before it gets here.
        assert self._arrivals is not None
        assert self._completions is not None
        offered = sum(self._arrivals)
        completed = sum(self._completions)
        if completed <= 0:
            return _MAX_LOAD if offered > 0 else 1.0
        return round(min(max(offered / completed, 1.0), _MAX_LOAD), 1)

    # -- shrinking ----------------------------------------------------------------

    def _calm(self, r: ScalingReadings, size: int, demand: int) -> ScalingDecision:
        """A hold-down passed with the delay at or below the target: shrink to the peak demand."""
        assert self._calm_since is not None  # checked by the caller
        calm = r.time - self._calm_since
        peak = self._peak_demand
        need = max(peak, self.min_workers)
        # The next hold-down starts now, whether or not this one shrinks.
        self._calm_since = r.time
        self._peak_demand = demand
        workers = need if need < size else None
        load = 1.0 if r.load > 1.0 else None
        if workers is None and load is None:
            return _KEEP
        return ScalingDecision(
            workers=workers,
            limiter_limit=self._limiter_follows(r, need) if workers is not None else None,
            load=load,
            reason=f"queue delay <= target {_s(self.target_queue_delay)} for {_s(calm)} "
            f"(hold-down {_s(self.hold_down)}); peak demand {peak} "
            f"(min_workers {self.min_workers})",
        )

    @staticmethod
    def _limiter_follows(r: ScalingReadings, size: int) -> int | None:
        """The limiter's new limit when the size moves to ``size``: it moves with it.

        Raised to a larger size (the limit would cap the growth), lowered to a
        smaller one (a limit above the size is not in force, and the next growth
        should start from the size).
        """
        if r.limiter_limit is None or r.limiter_limit == size:
            return None
        if size > r.workers:
            return size if r.limiter_limit < size else None
        return size if r.limiter_limit > size else None
