"""The simulator's output: a rich table in the terminal, the JSON file and the PNG chart.

rich and matplotlib are imported inside the functions: the child processes
import this package, and their RSS must not carry them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

from asyncperf.tools.simulate._config import CLASSES
from asyncperf.tools.simulate._measure import OUTCOMES

__all__ = ["print_report", "write_chart", "write_json"]

_COLORS = {"naive": "tab:red", "semaphore": "tab:orange", "asyncperf": "tab:blue"}


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:,.0f}"


def _mb(size: float | None) -> str:
    return "—" if size is None else f"{size / 1e6:,.1f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "—"
    if value == float("inf"):
        return "∞"
    return f"{value:.2f}x"


#: Column headings of the outcomes, short enough for an 80-column terminal.
_SHORT = {
    "ok_late": "late",
    "rate_limited": "429",
    "upstream_error": "5xx",
    "timed_out": "timed out",
}


def print_report(result: dict[str, Any], console: Console) -> None:
    """Print the figures of the overload phase, the outcomes, the bars and the checks."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    # One cell of padding and none at the edges: every table fits 80 columns.
    _COMPACT: dict[str, Any] = {"box": box.SIMPLE_HEAVY, "padding": (0, 1), "pad_edge": False}

    config = result["config"]
    console.print(
        f"[bold]{result['messages']:,} messages[/bold] per strategy from {config['sessions']:,} "
        f"sessions (seed {result['seed']}, mean think time {result['think_time']:.2f} s) on "
        f"{result['loop']}; upstream capacity {result['capacity']:,.0f} msg/s "
        f"({config['slots']} slots, median {config['latency'] * 1000:g} ms), rate limit "
        f"{config['rate_limit']:g}x capacity; SLO {config['slo']:g} s, client timeout "
        f"{result['client_timeout']:g} s; "
        + ("each strategy in its own process" if result["isolated"] else "all in this process")
    )
    phases = ", ".join(
        f"{p['name']} {p['end'] - p['start']:g} s at {p['load']:g}x "
        f"({p['offered_rate']:,.0f} msg/s offered)"
        for p in result["phases"]
    )
    console.print(f"phases: {phases}")

    # Narrow tables (at most nine columns) so that an 80-column terminal or a CI log
    # shows every figure rather than truncating them.
    table = Table(
        title="overload phase (messages sent during it): throughput and latency",
        **_COMPACT,
    )
    for header in ("strategy", "class", "msgs", "done/s", "goodput/s", "p50 ms", "p95 ms"):
        table.add_column(
            header,
            justify="left" if header in ("strategy", "class") else "right",
            min_width=len(header),
        )
    table.add_column("p99 ms", justify="right")
    table.add_column("hit %", justify="right")
    refused = Table(
        title="overload phase: the calls that got no reply",
        **_COMPACT,
    )
    for header in ("strategy", "class", "rejected", "dropped", "timed out", "429", "5xx"):
        refused.add_column(header, justify="left" if header in ("strategy", "class") else "right")
    for name, run in result["strategies"].items():
        for klass in ("all", *CLASSES):
            group = run["classes"][klass]["overload"]
            outcomes = group["outcomes"]
            whole = klass == "all"
            last = klass == CLASSES[-1]
            table.add_row(
                name if whole else "",
                klass,
                f"{group['messages']:,}",
                f"{group['completed_per_s']:,.0f}",
                f"{group['goodput_per_s']:,.0f}",
                _ms(group["latency_p50"]),
                _ms(group["latency_p95"]),
                _ms(group["latency_p99"]),
                f"{100 * group['cache_hit_ratio']:.0f}",
                end_section=last,
            )
            refused.add_row(
                name if whole else "",
                klass,
                f"{outcomes['rejected']:,}",
                f"{outcomes['dropped']:,}",
                f"{outcomes['timed_out']:,}",
                f"{outcomes['rate_limited']:,}",
                f"{outcomes['upstream_error']:,}",
                end_section=last,
            )
    console.print(table)
    console.print(refused)

    resources = Table(title="resources of each strategy's process", **_COMPACT)
    for header in ("strategy", "peak RSS MB", "RSS growth MB", "peak tasks", "CPU s/1k msgs"):
        resources.add_column(header, justify="left" if header == "strategy" else "right")
    for name, run in result["strategies"].items():
        overload = run["classes"]["all"]["overload"]
        cpu = overload.get("cpu_per_1000")
        resources.add_row(
            name,
            _mb(run["peak_rss_bytes"]),
            _mb(run["rss_growth_bytes"]),
            f"{run['peak_tasks']:,}",
            f"{cpu:.3f}" if cpu else "",
        )
    resources.caption = (
        "peak RSS and tasks over the whole run; RSS growth = peak minus the RSS before any "
        "traffic; CPU per 1,000 messages sent in the overload phase"
    )
    console.print(resources)

    answers = Table(
        title="the answer each caller got (whole run)",
        **_COMPACT,
    )
    answers.add_column("strategy", min_width=len("semaphore"))
    for outcome in OUTCOMES:
        answers.add_column(_SHORT.get(outcome, outcome), justify="right")
    answers.add_column("total", justify="right")
    for name, run in result["strategies"].items():
        counts = run["outcomes"]
        answers.add_row(name, *(f"{counts[o]:,}" for o in OUTCOMES), f"{sum(counts.values()):,}")
    console.print(answers)

    if result["bars"]:
        bars = Table(title="bars (DESIGN.md), overload phase", **_COMPACT)
        for header in ("bar", "vs", "asyncperf", "peer", "ratio", "target", "verdict"):
            bars.add_column(header, justify="left" if header in ("bar", "vs") else "right")
        for bar in result["bars"]:
            passed = bar["passed"]
            bars.add_row(
                bar["name"],
                bar["peer"],
                _figure(bar["name"], bar["asyncperf"]),
                _figure(bar["name"], bar["other"]),
                _ratio(bar["ratio"]),
                f"{bar['op']} {bar['threshold']:g}x",
                Text("PASS" if passed else "MISS", style="bold green" if passed else "bold red"),
            )
        console.print(bars)
        missed = [b for b in result["bars"] if not b["passed"]]
        if missed:
            names = ", ".join(f"{b['name']} vs {b['peer']}" for b in missed)
            console.print(f"[bold red]bars missed:[/bold red] {names}")
        else:
            console.print("[bold green]every bar passed[/bold green]")
    failed = [c for c in result["checks"] if not c["passed"]]
    if failed:
        for check in failed:
            console.print(
                f"[bold red]consistency MISMATCH[/bold red] {check['strategy']}: "
                f"{check['name']} ({check['detail']})"
            )
    else:
        console.print(
            f"consistency: OK ({len(result['checks'])} checks: every message settled exactly "
            "once, outcomes, classes and phases add up)"
        )


def _figure(name: str, value: float | None) -> str:
    if value is None:
        return "—"
    if "RSS" in name:
        return f"{_mb(value)} MB"
    if "p99" in name:
        return f"{_ms(value)} ms"
    if "CPU" in name:
        return f"{value:.3f} s/1k"
    if "goodput" in name:
        return f"{value:,.0f}/s"
    return f"{value:,.0f}"


def write_json(result: dict[str, Any], path: Path) -> None:
    """Write the whole result to ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def write_chart(result: dict[str, Any], path: Path) -> bool:
    """Draw p99 latency and throughput over time per strategy, the overload phase shaded.

    Returns False (and draws nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, throughput) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for name, run in result["strategies"].items():
        series = run["series"]
        color = _COLORS.get(name)
        t = series["t"]
        p99 = [None if v is None else v * 1000 for v in series["latency_p99"]]
        latency.plot(t, [float("nan") if v is None else v for v in p99], label=name, color=color)
        throughput.plot(t, series["completed_per_s"], label=f"{name} replies", color=color)
        throughput.plot(
            t, series["goodput_per_s"], label=f"{name} within SLO", color=color, linestyle="--"
        )
    for axis in (latency, throughput):
        for phase in result["phases"]:
            if phase["name"] == "overload":
                axis.axvspan(phase["start"], phase["end"], color="grey", alpha=0.2, lw=0)
        axis.grid(True, alpha=0.3)
    slo_ms = result["config"]["slo"] * 1000
    latency.axhline(slo_ms, color="black", linestyle=":", linewidth=1, label="SLO")
    latency.set_ylabel("p99 latency (ms)")
    latency.set_yscale("log")
    latency.legend(loc="upper left", fontsize="small")
    latency.set_title(
        f"session simulator: {result['messages']:,} messages, overload "
        f"{result['config']['overload']:g}x capacity (shaded), {result['loop']}"
    )
    throughput.axhline(result["capacity"], color="black", linestyle=":", linewidth=1)
    throughput.set_ylabel("messages/s (by completion time)")
    throughput.set_xlabel("seconds since the start of the run")
    throughput.legend(loc="upper left", fontsize="small", ncol=3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
