"""SimulationConfig: every knob of the session simulator, checked where it enters.

Each field has a command-line option of the same name (``--overload``,
``--steady-seconds``...). A bad value raises ValueError naming the field, or the
option when the command line checks it (see :meth:`SimulationConfig.check`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "CLASSES",
    "CLASS_MIX",
    "PHASES",
    "STRATEGIES",
    "LoopName",
    "SimulationConfig",
    "option_name",
]

LoopName = Literal["auto", "uvloop", "asyncio"]

#: The strategies, in the order they run and are reported.
STRATEGIES = ("naive", "semaphore", "asyncperf")
#: The priority classes of sessions, most important first (asyncperf priorities 0, 1, 2).
CLASSES = ("high", "normal", "low")
#: The default share of sessions in each class.
CLASS_MIX = (0.1, 0.3, 0.6)
#: The phases, in order.
PHASES = ("warmup", "steady", "overload", "recovery")


def option_name(field_name: str) -> str:
    """The command-line option of a field: ``steady_seconds`` → ``--steady-seconds``."""
    return "--" + field_name.replace("_", "-")


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """The workload, the upstream, the caller's SLO and the run of one simulation.

    Offered load is set per phase as a multiple of the upstream's capacity
    (``slots / mean base latency`` messages per second). Sessions are open
    loop: the mean think time is chosen so that all ``sessions`` together
    offer the load of the busiest phase, and a phase at a lower load keeps
    only that share of them active.

    Attributes:
        sessions: chat sessions (all of them active in the busiest phase).
        seed: seed of the whole schedule (and so of every strategy's workload).
        warmup_seconds, steady_seconds, overload_seconds, recovery_seconds:
            the length of each phase.
        warmup_load, steady_load, overload, recovery_load: offered load of each
            phase as a multiple of the upstream's capacity.
        slo: a reply within this many seconds of the message counts toward goodput.
        timeout: seconds after which a caller gives up (None: 5 x ``slo``).
        slots: requests the upstream serves at once at its base latency.
        latency: median base latency of the upstream, seconds (lognormal).
        sigma: the lognormal's sigma.
        rate_limit: the upstream's rate limit as a multiple of its capacity (429 beyond).
        burst: requests the upstream's rate limit admits at once after a quiet spell.
        error_rate: share of upstream calls that fail with a 5xx-style error.
        zipf: exponent of the Zipf distribution of prompts.
        prompts: distinct prompts.
        payload: median size of a message's attached context, bytes (lognormal).
        history: turns of history each session keeps (and sends with each message).
        mix: share of sessions in the high, normal and low classes.
        strategies: the strategies to run, in order.
        disk_cache: give the asyncperf runtime a disk tier below its memory cache.
        loop: event loop of each run.
        sample_interval: seconds between two samples of RSS, tasks and CPU.
        window: width of the windows of the time series, seconds.
        isolate: run each strategy in a fresh child process (else in this one).
    """

    sessions: int = 3_000
    seed: int = 1
    warmup_seconds: float = 1.5
    steady_seconds: float = 3.0
    overload_seconds: float = 4.0
    recovery_seconds: float = 3.0
    warmup_load: float = 0.3
    steady_load: float = 0.7
    overload: float = 2.5
    recovery_load: float = 0.7
    slo: float = 1.0
    timeout: float | None = None
    slots: int = 32
    latency: float = 0.070
    sigma: float = 0.5
    rate_limit: float = 2.0
    burst: int = 32
    error_rate: float = 0.01
    zipf: float = 0.8
    prompts: int = 100_000
    payload: int = 8_000
    history: int = 8
    mix: tuple[float, float, float] = CLASS_MIX
    strategies: tuple[str, ...] = STRATEGIES
    disk_cache: bool = True
    loop: LoopName = "auto"
    sample_interval: float = 0.05
    window: float = 0.25
    isolate: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "mix", tuple(float(x) for x in self.mix))
        object.__setattr__(self, "strategies", tuple(self.strategies))
        self.check()

    def check(self, name: Callable[[str], str] = str) -> None:
        """Check every field; errors name the field as ``name(field)`` gives it.

        Raises:
            ValueError: a value out of range, or of the wrong type.
        """

        def fail(field_name: str, what: str) -> ValueError:
            return ValueError(f"{name(field_name)} must be {what}")

        def integer(field_name: str, minimum: int) -> None:
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise fail(field_name, f"an int >= {minimum}, not {value!r}")
            if value < minimum:
                raise fail(field_name, f">= {minimum}, not {value}")

        def number(field_name: str, *, low: float = 0.0, strict: bool = True) -> None:
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise fail(field_name, f"a number, not {value!r}")
            if not math.isfinite(value) or value < low or (strict and value == low):
                raise fail(field_name, f"{'>' if strict else '>='} {low:g}, not {value!r}")
            object.__setattr__(self, field_name, float(value))

        integer("sessions", 1)
        integer("seed", 0)
        for phase in PHASES:
            number(f"{phase}_seconds", strict=False)
        if self.overload_seconds <= 0:
            raise fail("overload_seconds", f"> 0, not {self.overload_seconds!r}")
        for load in ("warmup_load", "steady_load", "overload", "recovery_load"):
            number(load)
        number("slo")
        if self.timeout is not None:
            number("timeout")
            if self.timeout < self.slo:
                raise fail("timeout", f">= --slo ({self.slo:g}), not {self.timeout!r}")
        integer("slots", 1)
        number("latency")
        number("sigma", strict=False)
        if self.sigma > 3:
            raise fail("sigma", f"<= 3, not {self.sigma!r}")
        number("rate_limit")
        integer("burst", 1)
        number("error_rate", strict=False)
        if self.error_rate >= 1:
            raise fail("error_rate", f"< 1, not {self.error_rate!r}")
        number("zipf", strict=False)
        integer("prompts", 1)
        integer("payload", 0)
        integer("history", 0)
        if len(self.mix) != len(CLASSES) or any(not math.isfinite(x) or x < 0 for x in self.mix):
            raise fail("mix", f"{len(CLASSES)} shares >= 0 (high, normal, low), not {self.mix!r}")
        if sum(self.mix) <= 0:
            raise fail("mix", f"shares with a positive sum, not {self.mix!r}")
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies or len(set(self.strategies)) != len(self.strategies):
            raise fail(
                "strategies",
                f"distinct names among {', '.join(STRATEGIES)}, not {','.join(self.strategies)!r}",
            )
        if self.loop not in ("auto", "uvloop", "asyncio"):
            raise fail("loop", f"auto, uvloop or asyncio, not {self.loop!r}")
        number("sample_interval")
        number("window")
        if self.window < self.sample_interval:
            raise fail("window", f">= --sample-interval ({self.sample_interval:g})")
        for flag in ("isolate", "disk_cache"):
            if not isinstance(getattr(self, flag), bool):
                raise fail(flag, f"a bool, not {getattr(self, flag)!r}")

    @classmethod
    def named(cls, name: Callable[[str], str], **values: Any) -> SimulationConfig:
        """Like the constructor, but an error names the field as ``name(field)`` gives it.

        The command line passes :func:`option_name`, so errors say ``--slo``.

        Raises:
            ValueError: a value out of range, named by ``name``.
        """
        try:
            return cls(**values)
        except ValueError as exc:
            error = exc
        # Check a bare instance with the caller's names, to raise the same error named so.
        probe = object.__new__(cls)
        for item in dataclasses.fields(cls):
            value = values.get(item.name, getattr(_DEFAULT, item.name))
            if item.name in ("mix", "strategies"):
                value = tuple(value)
            object.__setattr__(probe, item.name, value)
        probe.check(name)
        raise error  # pragma: no cover - the probe raised the same error

    # -- derived figures ----------------------------------------------------------------

    @property
    def client_timeout(self) -> float:
        """Seconds after which a caller gives up on a message."""
        return self.timeout if self.timeout is not None else 5.0 * self.slo

    @property
    def mean_latency(self) -> float:
        """Mean base latency of the upstream (the lognormal's mean)."""
        return self.latency * math.exp(self.sigma**2 / 2)

    @property
    def capacity(self) -> float:
        """Messages per second the upstream completes at most: slots / mean base latency."""
        return self.slots / self.mean_latency

    def phase_plan(self) -> list[tuple[str, float, float]]:
        """``(name, seconds, load)`` of each phase, in order."""
        loads = (self.warmup_load, self.steady_load, self.overload, self.recovery_load)
        seconds = (
            self.warmup_seconds,
            self.steady_seconds,
            self.overload_seconds,
            self.recovery_seconds,
        )
        return list(zip(PHASES, seconds, loads, strict=True))

    @property
    def peak_load(self) -> float:
        """The load of the busiest phase that lasts (all sessions active then)."""
        return max(load for _name, seconds, load in self.phase_plan() if seconds > 0)

    @property
    def think_time(self) -> float:
        """Mean think time of a session: all sessions together offer the peak load."""
        return self.sessions / (self.peak_load * self.capacity)

    # -- conversions --------------------------------------------------------------------

    def replace(self, **changes: Any) -> SimulationConfig:
        """A copy with ``changes``, checked again."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON values (tuples as lists)."""
        data = dataclasses.asdict(self)
        data["mix"] = list(self.mix)
        data["strategies"] = list(self.strategies)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SimulationConfig:
        """The config :meth:`to_json` wrote."""
        values = dict(data)
        values["mix"] = tuple(values["mix"])
        values["strategies"] = tuple(values["strategies"])
        return cls(**values)

    @classmethod
    def quick(cls, **changes: Any) -> SimulationConfig:
        """A tiny run (a couple of seconds per strategy): for smoke tests and ``--quick``."""
        values: dict[str, Any] = {
            "sessions": 300,
            "warmup_seconds": 0.3,
            "steady_seconds": 0.5,
            "overload_seconds": 0.8,
            "recovery_seconds": 0.5,
            "slo": 0.5,
            "prompts": 10_000,
        }
        values.update(changes)
        return cls(**values)


_DEFAULT = SimulationConfig()
