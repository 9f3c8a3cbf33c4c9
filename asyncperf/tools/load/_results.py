"""The results of a load run: one :class:`StepResult` per step, the knee, the whole report.

Every call a step starts ends in exactly one outcome: ``ok``, an error (counted
by exception type name), ``timed_out`` (the runner's per-call timeout),
``cancelled`` (the target was cancelled by something other than the runner) or
``unfinished`` (still running when the step ended; the runner cancelled it).
Calls a fixed-rate step could not start because ``max_in_flight`` calls were
outstanding are ``skipped``: offered, never started, and never silently lost.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "PERCENTILES",
    "Knee",
    "LatencySummary",
    "LoadReport",
    "Mode",
    "StepResult",
    "find_knee",
    "quantile",
]

#: A concurrency sweep (closed loop) or fixed arrival rates (open loop).
Mode = Literal["concurrency", "rate"]

#: The latency percentiles reported for every step.
PERCENTILES = (50, 90, 95, 99)


def quantile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values, interpolated between the closest ranks (NaN if none)."""
    if not ordered:
        return math.nan
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency of the successful calls of a step, in seconds (NaN when there was none).

    A call's latency runs from the call to its result. (A rate step's start lag,
    how late calls started on their schedule, is summed up the same way.)
    """

    count: int
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, latencies: Sequence[float]) -> LatencySummary:
        """The summary of ``latencies`` (any order)."""
        ordered = sorted(latencies)
        if not ordered:
            return cls(0, *(math.nan,) * 6)
        p50, p90, p95, p99 = (quantile(ordered, p / 100) for p in PERCENTILES)
        return cls(len(ordered), p50, p90, p95, p99, ordered[-1], math.fsum(ordered) / len(ordered))

    def to_dict(self) -> dict[str, float | int | None]:
        """Milliseconds by name (``p50_ms``...), None where there were no calls."""
        values: dict[str, float | int | None] = {"count": self.count}
        for name in ("p50", "p90", "p95", "p99", "max", "mean"):
            value = getattr(self, name)
            values[f"{name}_ms"] = None if math.isnan(value) else value * 1e3
        return values


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one step of a run counted.

    Attributes:
        mode: ``concurrency`` or ``rate``.
        level: the step's concurrency (workers calling back to back) or its rate
            (calls per second).
        elapsed: seconds the step measured (its duration, or a little more when
            the loop was late to end it); the throughput is ``ok / elapsed``.
        started: calls started in the measured window.
        ok: calls that returned.
        errors: calls that raised, by exception type name.
        timed_out: calls the runner's timeout ended.
        cancelled: calls cancelled by something other than the runner.
        unfinished: calls still running when the step ended (the runner cancelled them).
        skipped: calls a fixed-rate step did not start (``max_in_flight`` outstanding).
        warmup_calls: calls started during the warm-up (not counted above).
        latency: of the ``ok`` calls.
        start_lag: of a rate step, how late its calls started on their schedule
            (the loop's timer resolution, or a loop too busy to keep up; its
            ``count`` leaves out calls cancelled before they could start).
            None for a concurrency step.
    """

    mode: Mode
    level: float
    elapsed: float
    started: int
    ok: int
    errors: Mapping[str, int]
    timed_out: int
    cancelled: int
    unfinished: int
    skipped: int
    warmup_calls: int
    latency: LatencySummary
    start_lag: LatencySummary | None = None

    @property
    def failed(self) -> int:
        """Calls that raised (all error types)."""
        return sum(self.errors.values())

    @property
    def ended(self) -> int:
        """Calls that ended in one of the outcomes; equals ``started``."""
        return self.ok + self.failed + self.timed_out + self.cancelled + self.unfinished

    @property
    def offered(self) -> int:
        """Calls the step tried to make: started and skipped."""
        return self.started + self.skipped

    @property
    def consistent(self) -> bool:
        """Whether every started call ended in exactly one outcome."""
        return self.ended == self.started and self.latency.count == self.ok

    @property
    def throughput(self) -> float:
        """Successful calls per second."""
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def label(self) -> str:
        """The step as shown: ``64`` for a concurrency, ``500/s`` for a rate."""
        return format_level(self.mode, self.level)

    def to_dict(self) -> dict[str, Any]:
        """The step as JSON-ready values (latencies in milliseconds)."""
        return {
            "level": self.level,
            "label": self.label,
            "elapsed_s": self.elapsed,
            "started": self.started,
            "ok": self.ok,
            "failed": self.failed,
            "errors": dict(sorted(self.errors.items())),
            "timed_out": self.timed_out,
            "cancelled": self.cancelled,
            "unfinished": self.unfinished,
            "skipped": self.skipped,
            "offered": self.offered,
            "warmup_calls": self.warmup_calls,
            "throughput_per_s": self.throughput,
            "latency": self.latency.to_dict(),
            "start_lag": None if self.start_lag is None else self.start_lag.to_dict(),
            "consistent": self.consistent,
        }


def format_level(mode: Mode, level: float) -> str:
    """``64`` for a concurrency, ``500/s`` for a rate."""
    if mode == "concurrency":
        return f"{int(level)}"
    return f"{level:g}/s"


@dataclass(frozen=True, slots=True)
class Knee:
    """The step after which p99 latency grew faster than throughput.

    Attributes:
        index: the step's position in the run.
        level: its concurrency or rate.
        p99_growth: p99 of the next step over p99 of this one (inf when this
            one's was zero, NaN when the next step had no successful call).
        throughput_growth: throughput of the next step over this one's.
    """

    index: int
    level: float
    p99_growth: float
    throughput_growth: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (a non-finite growth as None)."""
        return {
            "index": self.index,
            "level": self.level,
            "p99_growth": self.p99_growth if math.isfinite(self.p99_growth) else None,
            "throughput_growth": self.throughput_growth,
        }


def _growth(before: float, after: float) -> float:
    if before == 0:
        return 1.0 if after == 0 else math.inf
    return after / before


def find_knee(steps: Sequence[StepResult]) -> Knee | None:
    """The first step after which p99 grows faster than throughput, step to step.

    For each pair of neighbouring steps, p99 growth is ``p99[i+1] / p99[i]`` and
    throughput growth ``throughput[i+1] / throughput[i]``; the knee is the first
    ``i`` where the first exceeds the second. A next step without any
    successful call (all errors: throughput growth 0) is past the knee too. A
    step without successful calls has no p99 to grow from, and starts no pair.

    Returns:
        The knee, or None when latency never outgrew throughput within the sweep.
    """
    for index in range(len(steps) - 1):
        this, after = steps[index], steps[index + 1]
        if this.ok == 0 or this.throughput == 0:
            continue
        throughput_growth = after.throughput / this.throughput
        if after.ok == 0:
            return Knee(index, this.level, math.nan, throughput_growth)
        p99_growth = _growth(this.latency.p99, after.latency.p99)
        if p99_growth > throughput_growth:
            return Knee(index, this.level, p99_growth, throughput_growth)
    return None


@dataclass(frozen=True, slots=True)
class LoadReport:
    """A whole load run: its settings, its steps, and the knee.

    Attributes:
        target: the ``MODULE:NAME`` (or the function's name) under load.
        mode: ``concurrency`` or ``rate``.
        loop: the event loop the run ran on.
        arguments: where the calls' arguments came from.
        duration: seconds each step measured (as asked).
        warmup: seconds of warm-up before each step.
        timeout: seconds a call may take (None: no limit).
        max_in_flight: outstanding calls a fixed-rate step allows (None for a sweep).
        steps: one result per level, in the order run (ascending).
        knee: see :func:`find_knee`; None when there is none within the sweep.
        started_at: when the run started (ISO 8601, UTC).
    """

    target: str
    mode: Mode
    loop: str
    arguments: str
    duration: float
    warmup: float
    timeout: float | None
    max_in_flight: int | None
    steps: tuple[StepResult, ...]
    knee: Knee | None
    started_at: str
    notes: tuple[str, ...] = field(default=())

    @property
    def consistent(self) -> bool:
        """Whether every step's counts add up."""
        return all(step.consistent for step in self.steps)

    def error_types(self) -> list[str]:
        """Every exception type name any step counted, sorted."""
        return sorted({name for step in self.steps for name in step.errors})

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (latencies in milliseconds, rates per second)."""
        return {
            "tool": "asyncperf load",
            "target": self.target,
            "mode": self.mode,
            "loop": self.loop,
            "arguments": self.arguments,
            "started_at": self.started_at,
            "settings": {
                "levels": [step.level for step in self.steps],
                "duration_s": self.duration,
                "warmup_s": self.warmup,
                "timeout_s": self.timeout,
                "max_in_flight": self.max_in_flight,
            },
            "steps": [step.to_dict() for step in self.steps],
            "knee": None if self.knee is None else self.knee.to_dict(),
            "consistent": self.consistent,
            "notes": list(self.notes),
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)
