"""One simulation: the workload through each strategy, checked, compared against the bars.

Each strategy runs in a fresh child process by default (sequentially: they
must not compete for the CPU), so the peak RSS, CPU time and task count are
its own; ``isolate=False`` runs them in this process instead (quick, for tests;
RSS is then shared and only indicative).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import asyncperf as ap
from asyncperf.tools.simulate._config import CLASSES, PHASES, SimulationConfig
from asyncperf.tools.simulate._measure import CODES, OUTCOMES
from asyncperf.tools.simulate._workload import Workload, make_workload

__all__ = [
    "SCHEMA_VERSION",
    "BarCheck",
    "Check",
    "Progress",
    "check_run",
    "compute_bars",
    "run_isolated",
    "simulate",
]

#: Bumped when the structure of the JSON result changes.
SCHEMA_VERSION = 1
#: Called with (strategy, messages settled, messages) while a strategy runs.
Progress = Callable[[str, int, int], None]
#: The phase the bars are measured in.
BAR_PHASE = "overload"


@dataclass(frozen=True, slots=True)
class Check:
    """One consistency check of a run."""

    strategy: str
    name: str
    passed: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "name": self.name,
            "passed": self.passed,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class BarCheck:
    """A bar of DESIGN.md: asyncperf's figure over a peer's, against a threshold."""

    name: str
    peer: str
    metric: str
    asyncperf: float | None
    other: float | None
    ratio: float | None
    op: Literal["<=", ">=", "<", ">"]
    threshold: float

    @property
    def passed(self) -> bool:
        ratio = self.ratio
        if ratio is None:
            return False
        return {
            "<=": ratio <= self.threshold,
            ">=": ratio >= self.threshold,
            "<": ratio < self.threshold,
            ">": ratio > self.threshold,
        }[self.op]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "peer": self.peer,
            "metric": self.metric,
            "asyncperf": self.asyncperf,
            "other": self.other,
            "ratio": self.ratio,
            "op": self.op,
            "threshold": self.threshold,
            "passed": self.passed,
        }


def _ratio(mine: float | None, theirs: float | None) -> float | None:
    if mine is None or theirs is None:
        return None
    if theirs == 0:
        return float("inf") if mine > 0 else 1.0
    return mine / theirs


# (name, peer, metric, how to read it from a strategy's result, op, threshold)
_BARS: tuple[tuple[str, str, str, Callable[[dict[str, Any]], float | None], str, float], ...] = (
    (
        "goodput",
        "naive",
        "overload goodput/s within the SLO",
        lambda r: r["classes"]["all"][BAR_PHASE]["goodput_per_s"],
        ">=",
        1.3,
    ),
    (
        "high-priority p99",
        "naive",
        "overload p99 latency of the high class",
        lambda r: r["classes"]["high"][BAR_PHASE]["latency_p99"],
        "<=",
        0.5,
    ),
    ("peak RSS", "naive", "peak RSS of the run", lambda r: r["peak_rss_bytes"], "<=", 0.7),
    ("peak tasks", "naive", "peak task count of the run", lambda r: r["peak_tasks"], "<=", 0.5),
    (
        "CPU per message",
        "naive",
        "overload CPU seconds per 1,000 messages",
        lambda r: r["classes"]["all"][BAR_PHASE]["cpu_per_1000"],
        "<=",
        0.8,
    ),
    (
        "goodput",
        "semaphore",
        "overload goodput/s within the SLO",
        lambda r: r["classes"]["all"][BAR_PHASE]["goodput_per_s"],
        ">",
        1.0,
    ),
    (
        "high-priority p99",
        "semaphore",
        "overload p99 latency of the high class",
        lambda r: r["classes"]["high"][BAR_PHASE]["latency_p99"],
        "<",
        1.0,
    ),
)


def compute_bars(strategies: dict[str, dict[str, Any]]) -> list[BarCheck]:
    """The bars that the strategies run allow (asyncperf and the peer must both have run)."""
    mine = strategies.get("asyncperf")
    if mine is None:
        return []
    bars = []
    for name, peer, metric, read, op, threshold in _BARS:
        theirs = strategies.get(peer)
        if theirs is None:
            continue
        a, b = read(mine), read(theirs)
        bars.append(
            BarCheck(name, peer, metric, a, b, _ratio(a, b), op, threshold)  # type: ignore[arg-type]
        )
    return bars


def check_run(workload: Workload, result: dict[str, Any]) -> list[Check]:
    """Every message accounted for exactly once; per-class and per-phase sums equal totals."""
    strategy = result["strategy"]
    checks: list[Check] = []

    def check(name: str, passed: bool, detail: str) -> None:
        checks.append(Check(strategy, name, passed, detail))

    total = len(workload)
    codes: str = result["codes"]
    check(
        "every message settled once",
        len(codes) == total and all(c in CODES for c in codes),
        f"{len(codes)} outcomes for {total} messages, "
        f"{sum(c not in CODES for c in codes)} unsettled",
    )
    counts = result["outcomes"]
    check(
        "outcomes sum to messages sent",
        sum(counts.values()) == total == result["messages"],
        f"{sum(counts.values())} outcomes, {result['messages']} messages, {total} scheduled",
    )
    from_codes = {name: codes.count(CODES[k]) for k, name in enumerate(OUTCOMES)}
    check("outcome counts match per message", from_codes == counts, f"{from_codes} vs {counts}")
    classes = result["classes"]
    for phase in ("all", *PHASES):
        whole = classes["all"][phase]
        per_class = [classes[k][phase] for k in CLASSES]
        messages_ok = sum(g["messages"] for g in per_class) == whole["messages"]
        outcomes_ok = all(
            sum(g["outcomes"][o] for g in per_class) == whole["outcomes"][o] for o in OUTCOMES
        )
        check(
            f"classes sum to the total ({phase})",
            messages_ok and outcomes_ok and sum(whole["outcomes"].values()) == whole["messages"],
            f"{whole['messages']} messages",
        )
    phase_sum = sum(classes["all"][p]["messages"] for p in PHASES)
    check(
        "phases sum to the total",
        phase_sum == classes["all"]["all"]["messages"] == total,
        f"{phase_sum} of {total}",
    )
    return checks


def run_isolated(
    config: SimulationConfig, strategy: str, progress: Progress | None
) -> dict[str, Any]:
    """Run one strategy in a fresh interpreter (``config.loop``); its result, as JSON data.

    The result holds ``codes`` (one character per message) for :func:`check_run`.

    Raises:
        RuntimeError: the child process failed.
    """
    with tempfile.TemporaryDirectory(prefix="asyncperf-simulate-") as directory:
        output = Path(directory) / "result.json"
        with subprocess.Popen(
            [sys.executable, "-m", "asyncperf.tools.simulate._child", strategy, str(output)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as process:
            assert process.stdin is not None
            assert process.stdout is not None
            try:
                process.stdin.write(json.dumps(config.to_json()))
                process.stdin.close()
                for line in process.stdout:
                    parts = line.split()
                    if len(parts) == 3 and parts[0] == "progress" and progress is not None:
                        progress(strategy, int(parts[1]), int(parts[2]))
                status = process.wait()
            except BaseException:
                process.kill()
                raise
        if status != 0:
            raise RuntimeError(f"the child process of the {strategy} strategy exited with {status}")
        data: dict[str, Any] = json.loads(output.read_text(encoding="utf-8"))
        return data


def _run_here(
    config: SimulationConfig, workload: Workload, strategy: str, progress: Progress | None
) -> dict[str, Any]:
    from asyncperf.tools.simulate._strategies import run_strategy

    def report(settled: int, total: int) -> None:
        if progress is not None:
            progress(strategy, settled, total)

    run = ap.run(run_strategy(config, workload, strategy, progress=report), loop=config.loop)
    return run.result


def simulate(config: SimulationConfig, *, progress: Progress | None = None) -> dict[str, Any]:
    """Run every strategy of ``config`` over the same workload; the whole result (JSON-able).

    The result holds the config, the phases (with the offered rate of each,
    counted from the schedule), per strategy its figures (per class and phase),
    its time series and its outcome counts, the consistency checks
    (``consistent`` is True when all held) and the bars.

    Raises:
        RuntimeError: a child process failed, or a strategy lost or double-settled a message.
    """
    workload = make_workload(config)
    strategies: dict[str, dict[str, Any]] = {}
    checks: list[Check] = []
    for strategy in config.strategies:
        if config.isolate:
            result = run_isolated(config, strategy, progress)
        else:
            result = _run_here(config, workload, strategy, progress)
        checks.extend(check_run(workload, result))
        result.pop("codes")
        strategies[strategy] = result
    loops = sorted({r["loop"] for r in strategies.values()})
    bars = compute_bars(strategies)
    return {
        "schema": SCHEMA_VERSION,
        "config": config.to_json(),
        "seed": config.seed,
        "loop": loops[0] if len(loops) == 1 else ",".join(loops),
        "isolated": config.isolate,
        "capacity": workload.capacity,
        "think_time": workload.think_time,
        "client_timeout": config.client_timeout,
        "messages": len(workload),
        "phases": [
            {
                "name": phase.name,
                "start": phase.start,
                "end": phase.end,
                "load": phase.load,
                "active_sessions": phase.active_sessions,
                "messages": workload.phase.count(index),
                "offered_rate": workload.offered_rate(index),
                "intended_rate": phase.load * workload.capacity,
            }
            for index, phase in enumerate(workload.phases)
        ],
        "strategies": strategies,
        "checks": [c.to_json() for c in checks],
        "consistent": all(c.passed for c in checks),
        "bars": [b.to_json() for b in bars],
        "definitions": DEFINITIONS,
    }


#: How the figures are defined; written into the JSON next to them.
DEFINITIONS = {
    "phase of a message": "the phase it was sent in (scheduled send time)",
    "bars": "measured on the messages sent in the overload phase (goodput, p99, CPU), "
    "and over the whole run (peak RSS, peak tasks), asyncperf against each peer",
    "latency": "from the scheduled send time to the reply (ok, ok_late) or to the moment "
    "the caller gave up (timed_out); refusals and errors are counted, not timed",
    "goodput_per_s": "replies within the SLO per second of the phase",
    "completed_per_s": "replies (within the SLO or not) per second of the phase",
    "peak_rss_bytes": "max of /proc/self/statm resident samples (every sample_interval) "
    "in the strategy's own process; max_rss_bytes is ru_maxrss of that process",
    "rss_growth_bytes": "peak_rss_bytes minus the first sample (taken before any traffic)",
    "peak_tasks": "max of len(asyncio.all_tasks()) samples",
    "cpu_per_1000": "process CPU seconds (time.process_time, all threads) in the phase "
    "per 1,000 messages sent in it",
    "cache_hit_ratio": "messages answered by the cache without a call of their own, over messages",
    "outcomes": {
        "ok": "a reply within the SLO",
        "ok_late": "a reply after the SLO, before the client timeout",
        "rate_limited": "the upstream's 429",
        "upstream_error": "the upstream's 5xx",
        "rejected": "asyncperf refused it at admission (Rejected / RateLimited)",
        "dropped": "asyncperf shed it from its queue (Dropped: deadline, CoDel, eviction)",
        "timed_out": "the caller gave up after the client timeout (or the handler's timeout)",
    },
}
