"""What a load run shows and writes: a terminal table, a JSON file, a PNG chart."""

from __future__ import annotations

import math
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from asyncperf.tools.load._results import LoadReport

__all__ = ["print_report", "write_chart", "write_json"]


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    value = seconds * 1e3
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _count(value: int) -> str:
    return f"{value:,}" if value else "[dim]0[/dim]"


def _table(title: str, *headings: str) -> Table:
    """A compact table: headings after the first are right-aligned (numbers)."""
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
        show_edge=False,
    )
    for index, heading in enumerate(headings):
        table.add_column(heading, justify="left" if index == 0 else "right", min_width=len(heading))
    return table


def knee_text(report: LoadReport) -> str:
    """One line on the knee, in words."""
    if report.knee is None:
        return "no knee within the sweep: p99 latency never grew faster than throughput"
    knee = report.knee
    step = report.steps[knee.index]
    after = report.steps[knee.index + 1]
    if after.ok == 0:
        growth = f"the next step ({after.label}) had no successful call"
    else:
        growth = (
            f"from {step.label} to {after.label} p99 grew x{knee.p99_growth:.2f} "
            f"while throughput grew x{knee.throughput_growth:.2f}"
        )
    return f"* knee at {step.label}: {growth}"


def print_report(report: LoadReport, console: Console) -> None:
    """Print the steps (throughput, latency, outcomes), errors by type, the knee."""
    level = "workers" if report.mode == "concurrency" else "rate"
    timeout = "none" if report.timeout is None else f"{report.timeout:g} s"
    console.print(
        f"[bold]asyncperf load[/bold] {report.target} on [bold]{report.loop}[/bold]: "
        f"{report.duration:g} s per step after {report.warmup:g} s of warm-up, "
        f"timeout {timeout}, arguments {report.arguments}"
        + (f", max in flight {report.max_in_flight:,}" if report.max_in_flight else "")
    )
    knee_index = report.knee.index if report.knee is not None else None
    speed = _table("throughput and latency of the successful calls (ms)", level, "ok/s")
    for heading in ("p50", "p90", "p95", "p99", "max"):
        speed.add_column(heading, justify="right", min_width=6)
    if report.mode == "rate":
        # How late calls started on their schedule: a loop that cannot keep up.
        speed.add_column("lag p99", justify="right")
    for index, step in enumerate(report.steps):
        latency = step.latency
        cells = [
            step.label + (" [yellow]*[/yellow]" if index == knee_index else ""),
            f"[bold]{step.throughput:,.1f}[/bold]",
            *(_ms(value) for value in (latency.p50, latency.p90, latency.p95, latency.p99)),
            _ms(latency.max),
        ]
        if step.start_lag is not None:
            cells.append(_ms(step.start_lag.p99))
        speed.add_row(*cells)
    console.print()
    console.print(speed)

    # Columns that would be all zeros are left out (a rate step always shows skipped).
    show_timed_out = report.timeout is not None or any(s.timed_out for s in report.steps)
    show_cancelled = any(step.cancelled for step in report.steps)
    show_skipped = report.mode == "rate"
    headings = [level, "started", "ok", "failed"]
    headings += ["timed out"] * show_timed_out + ["cancelled"] * show_cancelled
    headings += ["unfinished"] + ["skipped"] * show_skipped
    outcomes = _table("what became of the calls started", *headings)
    for step in report.steps:
        cells = [step.label, f"{step.started:,}", f"{step.ok:,}", _count(step.failed)]
        cells += [_count(step.timed_out)] * show_timed_out
        cells += [_count(step.cancelled)] * show_cancelled
        cells += [_count(step.unfinished)] + [_count(step.skipped)] * show_skipped
        outcomes.add_row(*cells)
    console.print()
    console.print(outcomes)

    types = report.error_types()
    if types:
        errors = _table("errors by type", level, *types)
        for step in report.steps:
            errors.add_row(step.label, *(_count(step.errors.get(name, 0)) for name in types))
        console.print()
        console.print(errors)

    console.print()
    style = "yellow" if report.knee is not None else "green"
    console.print(f"[{style}]{knee_text(report)}[/{style}]")
    for note in report.notes:
        console.print(f"[dim]note: {note}[/dim]")
    if not report.consistent:
        console.print("[red]the counts of a step do not add up: please report this bug[/red]")


def write_json(report: LoadReport, path: str | Path) -> Path:
    """Write the report as JSON to ``path`` (parent directories created); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(report.to_json() + "\n", encoding="utf-8")
    return target


def write_chart(report: LoadReport, path: str | Path) -> Path | None:
    """Draw throughput against p99 (and p50) latency, a point per step, the knee marked.

    Returns:
        The path written, or None when matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    steps = [step for step in report.steps if step.ok > 0]
    figure, axes = plt.subplots(figsize=(8, 5), dpi=100)
    try:
        throughput = [step.throughput for step in steps]
        axes.plot(
            throughput, [s.latency.p99 * 1e3 for s in steps], "o-", color="tab:red", label="p99"
        )
        axes.plot(
            throughput,
            [s.latency.p50 * 1e3 for s in steps],
            "s--",
            color="tab:blue",
            alpha=0.6,
            label="p50",
        )
        prefix = "c=" if report.mode == "concurrency" else ""
        for step in steps:
            axes.annotate(
                f"{prefix}{step.label}",
                (step.throughput, step.latency.p99 * 1e3),
                textcoords="offset points",
                xytext=(6, 6),
                fontsize=9,
            )
        if report.knee is not None:
            knee = report.steps[report.knee.index]
            axes.plot(
                [knee.throughput],
                [knee.latency.p99 * 1e3],
                "o",
                markersize=16,
                markerfacecolor="none",
                markeredgecolor="orange",
                markeredgewidth=2,
                label=f"knee ({prefix}{knee.label})",
            )
        lowest = min((s.latency.p50 for s in steps), default=0.0)
        highest = max((s.latency.p99 for s in steps), default=0.0)
        if lowest > 0 and highest / lowest > 20:
            # Latency past the knee can be orders of magnitude above the rest.
            axes.set_yscale("log")
            plain = FuncFormatter(lambda value, _position: f"{value:g}")
            axes.yaxis.set_major_formatter(plain)
            axes.yaxis.set_minor_formatter(plain)
        axes.set_xlabel("throughput (successful calls per second)")
        axes.set_ylabel("latency (ms)")
        level = "concurrency" if report.mode == "concurrency" else "rate"
        axes.set_title(f"asyncperf load {report.target}: throughput vs latency by {level}")
        axes.grid(True, alpha=0.3)
        axes.legend(loc="upper left")
        figure.tight_layout()
        figure.savefig(target)
    finally:
        plt.close(figure)
    return target
