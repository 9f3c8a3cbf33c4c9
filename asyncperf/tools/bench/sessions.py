"""Suite ``sessions``: the session simulator, shortened, with the overload bars of DESIGN.md.

The scenario of ``asyncperf simulate`` (see :mod:`asyncperf.tools.simulate`)
with shorter phases: chat sessions (open loop, exponential think times, three
priority classes, Zipf prompts) call a simulated upstream (processor sharing
past its slots, a rate limit answering 429, 1 % errors) through three
strategies: naive (a task per message), semaphore (gather + Semaphore and a
dict cache) and the asyncperf runtime (priorities, adaptive limit, CoDel,
supervisor, tiered cache). Each run of a strategy is a fresh child process (its
peak RSS, tasks and CPU are its own) on the loop of the harness; every run
replays the same seeded workload and checks that every message settled once.

The case's figure is the overload phase's goodput (replies within the SLO per
second); the other figures (p99 of the high class, peak RSS, peak tasks, CPU
per 1,000 messages, hit ratio) are kept on the side, reported as medians over
the repetitions, and the bars are checked on those medians: against naive,
goodput >= 1.3x, high-priority p99 <= 0.5x, peak RSS <= 0.7x, peak tasks <=
0.5x, CPU per message <= 0.8x; against semaphore, goodput >= 1x and
high-priority p99 <= 1x.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from rich.table import Table

from asyncperf.tools.bench._harness import (
    Case,
    Config,
    Harness,
    LoopChoice,
    Plan,
    Result,
    Suite,
    fmt,
)
from asyncperf.tools.simulate import (
    STRATEGIES,
    SimulationConfig,
    check_run,
    compute_bars,
    make_workload,
)
from asyncperf.tools.simulate._run import run_isolated

__all__ = ["SUITE", "scenario"]

NAME = "sessions"
LABELS = {
    "naive": "naive (task per message)",
    "semaphore": "gather + Semaphore + dict cache",
    "asyncperf": "asyncperf Runtime",
}
#: Repetitions of each strategy at most (each run takes several seconds).
REPEAT = 2
#: The figures kept per run: (key, unit, how to read it from a strategy's result).
_METRICS: tuple[tuple[str, str, Callable[[dict[str, Any]], float | None]], ...] = (
    ("goodput_per_s", "msg/s", lambda r: r["classes"]["all"]["overload"]["goodput_per_s"]),
    ("completed_per_s", "msg/s", lambda r: r["classes"]["all"]["overload"]["completed_per_s"]),
    ("high_p99", "s", lambda r: r["classes"]["high"]["overload"]["latency_p99"]),
    ("p99", "s", lambda r: r["classes"]["all"]["overload"]["latency_p99"]),
    ("peak_rss_bytes", "bytes", lambda r: r["peak_rss_bytes"]),
    ("peak_tasks", "tasks", lambda r: r["peak_tasks"]),
    ("cpu_per_1000", "s", lambda r: r["classes"]["all"]["overload"]["cpu_per_1000"]),
    ("cache_hit_ratio", "ratio", lambda r: r["classes"]["all"]["overload"]["cache_hit_ratio"]),
)


def scenario(config: Config) -> SimulationConfig:
    """The shortened scenario (a few seconds per strategy), or a tiny one with ``--quick``."""
    if config.quick:
        return SimulationConfig.quick(
            sessions=200,
            warmup_seconds=0.2,
            steady_seconds=0.3,
            overload_seconds=0.6,
            recovery_seconds=0.3,
            timeout=1.0,
        )
    return SimulationConfig(
        sessions=2_000,
        warmup_seconds=0.5,
        steady_seconds=1.0,
        overload_seconds=2.5,
        recovery_seconds=1.0,
        timeout=2.5,
    )


def _warmup(config: SimulationConfig) -> SimulationConfig:
    """The harness's warm-up run: the same settings with very short phases."""
    return config.replace(
        sessions=min(config.sessions, 100),
        warmup_seconds=0.05,
        steady_seconds=0.05,
        overload_seconds=0.1,
        recovery_seconds=0.05,
    )


@dataclass(slots=True)
class _Store:
    """Per loop: the scenario and the result of every timed run, per strategy."""

    config: SimulationConfig
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


_STORES: dict[str, _Store] = {}


def _run(config: SimulationConfig, strategy: str) -> dict[str, Any]:
    """One isolated run of a strategy, checked: every message settled exactly once."""
    result = run_isolated(config, strategy, None)
    failed = [c for c in check_run(make_workload(config), result) if not c.passed]
    if failed:
        raise RuntimeError(
            f"sessions/{strategy}: {failed[0].name} does not hold ({failed[0].detail})"
        )
    result.pop("codes")
    return result


def _maker(strategy: str, store: _Store) -> Callable[[], Coroutine[Any, Any, float]]:
    """The case's coroutine factory: the harness's first call is the (short) warm-up."""
    calls = 0

    async def measure() -> float:
        nonlocal calls
        calls += 1
        config = _warmup(store.config) if calls == 1 else store.config
        # The child process does the work; this loop only waits for it.
        result = await asyncio.to_thread(_run, config, strategy)
        if calls > 1:
            store.runs.setdefault(strategy, []).append(result)
        figure: float = result["classes"]["all"]["overload"]["goodput_per_s"]
        return figure

    return measure


def plan(config: Config, loop: LoopChoice) -> Plan:
    """One case per strategy, each run in a child process on ``loop``."""
    simulation = scenario(config).replace(loop=loop, isolate=True)
    store = _Store(simulation)
    _STORES[loop] = store
    repeat = min(config.repeat, REPEAT)
    result = Plan(cases=[])
    for strategy in STRATEGIES:
        result.cases.append(
            Case(
                case=NAME,
                contender=strategy,
                label=LABELS[strategy],
                make=_maker(strategy, store),
                items=1,
                unit="msg/s",
                scale=1.0,
                raw_unit="msg/s",
                max_repeat=REPEAT,
                note="goodput (replies within the SLO) of the overload phase; the warm-up "
                "figure is from a run with very short phases",
            )
        )
    workload = make_workload(simulation)
    result.notes.append(
        f"{repeat} repetition(s) of each strategy, each in a fresh child process; "
        f"{len(workload):,} messages a run from {simulation.sessions:,} sessions, phases "
        + ", ".join(f"{p.name} {p.seconds:g} s at {p.load:g}x" for p in workload.phases)
        + f" of the upstream's capacity ({workload.capacity:,.0f} msg/s); SLO "
        f"{simulation.slo:g} s, client timeout {simulation.client_timeout:g} s. "
        "--jobs does not apply."
    )
    return result


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _medians(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    medians: dict[str, float | None] = {}
    for key, _unit, read in _METRICS:
        values = [v for v in (read(run) for run in runs) if v is not None]
        medians[key] = _median([float(v) for v in values])
    return medians


def _as_result(medians: dict[str, float | None]) -> dict[str, Any]:
    """A strategy's medians in the shape :func:`compute_bars` reads."""
    return {
        "classes": {
            "all": {
                "overload": {
                    "goodput_per_s": medians["goodput_per_s"],
                    "cpu_per_1000": medians["cpu_per_1000"],
                }
            },
            "high": {"overload": {"latency_p99": medians["high_p99"]}},
        },
        "peak_rss_bytes": medians["peak_rss_bytes"],
        "peak_tasks": medians["peak_tasks"],
    }


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return "—"
    if key.endswith("p99"):
        return f"{value * 1000:,.0f} ms"
    if key == "peak_rss_bytes":
        return f"{value / 1e6:,.1f} MB"
    if key == "cpu_per_1000":
        return f"{value:.3f} s"
    if key == "cache_hit_ratio":
        return f"{value:.0%}"
    return fmt(value)


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    """Print the medians per strategy, check the bars on them, add every figure to the results."""
    store = _STORES[loop]
    loop_name = results[0].loop if results else loop
    medians = {s: _medians(store.runs.get(s, [])) for s in STRATEGIES if store.runs.get(s)}
    table = Table(
        title=f"sessions · {loop_name} · overload phase, median of the repetitions",
    )
    table.add_column("strategy")
    for key, _unit, _read in _METRICS:
        table.add_column(key.replace("_", " "), justify="right")
    for strategy, figures in medians.items():
        table.add_row(LABELS[strategy], *(_cell(key, figures[key]) for key, _u, _r in _METRICS))
    h.console.print(table)

    bars = Table(title=f"sessions · {loop_name} · bars (asyncperf against each peer)")
    for header in ("bar", "vs", "ratio", "verdict"):
        bars.add_column(header, justify="right" if header == "ratio" else "left")
    checks = compute_bars({s: _as_result(m) for s, m in medians.items()})
    for check in checks:
        if check.ratio is None:
            h.note(NAME, f"{check.name} vs {check.peer}: no figure to compare (no samples)")
            continue
        # The harness knows <= and >= only: "beats" (> 1, < 1) is checked as >= 1, <= 1.
        op: Literal["<=", ">="] = "<=" if check.op in ("<=", "<") else ">="
        bar = h.bar(
            NAME,
            loop_name,
            "overload",
            "asyncperf",
            f"{check.name} vs {check.peer} ({check.metric})",
            check.ratio,
            op,
            check.threshold,
        )
        bars.add_row(check.name, check.peer, f"{check.ratio:.2f}x", bar.cell())
    h.console.print(bars)
    h.results.setdefault(NAME, []).extend(_json_results(loop_name, store))


def _json_results(loop: str, store: _Store) -> list[Result]:
    """Every side figure as a result: case ``overload/<metric>``."""
    results: list[Result] = []
    for strategy, runs in store.runs.items():
        for key, unit, read in _METRICS:
            values = [float(v) for v in (read(run) for run in runs) if v is not None]
            if not values:
                continue
            results.append(
                Result.side_figure(
                    NAME,
                    f"overload/{key}",
                    strategy,
                    LABELS[strategy],
                    loop,
                    unit,
                    values,
                    "median of the repetitions (each run in its own process)",
                )
            )
    return results


SUITE = Suite(
    name=NAME,
    description="Sessions: the session simulator (shortened) — chat sessions over a "
    "rate-limited upstream pushed to 2.5x capacity, through naive, gather + Semaphore and "
    "the asyncperf runtime, each in its own process; goodput, high-priority p99, peak RSS, "
    "peak tasks and CPU per message against the bars of DESIGN.md.",
    plan=plan,
    report=report,
)
