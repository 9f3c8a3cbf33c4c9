"""``asyncperf simulate``: the command line of the session simulator (the job of ``make run``)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from asyncperf.tools._command import Command, UsageError, add_loop_option, check_loop
from asyncperf.tools.simulate._config import STRATEGIES, SimulationConfig, option_name

__all__ = ["COMMAND", "add_arguments", "config_from_args", "run"]

# (field, type, help); the default shown is SimulationConfig's.
_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("sessions", int, "chat sessions, all active in the busiest phase"),
    ("seed", int, "seed of the whole workload"),
    ("warmup_seconds", float, "length of the warm-up phase"),
    ("steady_seconds", float, "length of the steady phase"),
    ("overload_seconds", float, "length of the overload phase"),
    ("recovery_seconds", float, "length of the recovery phase"),
    ("warmup_load", float, "offered load of the warm-up, x capacity"),
    ("steady_load", float, "offered load of the steady phase, x capacity"),
    ("overload", float, "offered load of the overload phase, x capacity"),
    ("recovery_load", float, "offered load of the recovery phase, x capacity"),
    ("slo", float, "seconds within which a reply counts toward goodput"),
    ("timeout", float, "seconds after which a caller gives up (default: 5 x --slo)"),
    ("slots", int, "requests the upstream serves at once at its base latency"),
    ("latency", float, "median base latency of the upstream, seconds"),
    ("sigma", float, "sigma of the upstream's lognormal latency"),
    ("rate_limit", float, "the upstream's rate limit, x capacity (429 beyond it)"),
    ("burst", int, "requests the upstream's rate limit admits at once"),
    ("error_rate", float, "share of upstream calls that fail (5xx)"),
    ("zipf", float, "exponent of the Zipf distribution of prompts"),
    ("prompts", int, "distinct prompts"),
    ("payload", int, "median characters of context attached to a message"),
    ("history", int, "turns of history a session keeps and sends"),
    ("sample_interval", float, "seconds between samples of RSS, tasks and CPU"),
    ("window", float, "width of the time series' windows, seconds"),
)
_DEFAULTS = SimulationConfig(isolate=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``asyncperf simulate``: one per field of SimulationConfig, and the output."""
    add_loop_option(parser)
    for field, kind, text in _OPTIONS:
        default = getattr(_DEFAULTS, field)
        shown = "" if default is None else f" (default: {default:g})"
        parser.add_argument(option_name(field), type=kind, default=None, help=text + shown)
    parser.add_argument(
        "--mix",
        default=None,
        metavar="HIGH,NORMAL,LOW",
        help="share of sessions in each class (default: 0.1,0.3,0.6)",
    )
    parser.add_argument(
        "--strategies",
        default=None,
        metavar="LIST",
        help=f"strategies to run, in order (default: {','.join(STRATEGIES)})",
    )
    parser.add_argument(
        "--no-disk-cache",
        action="store_true",
        help="give the asyncperf runtime a memory cache only (default: memory over disk)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the strategies in this process, not each in its own (RSS then shared)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run (a couple of seconds per strategy); other options still apply",
    )
    parser.add_argument(
        "--out",
        default="simulation",
        metavar="DIR",
        help="directory for simulation.json and simulation.png (default: ./simulation)",
    )
    parser.add_argument("--no-chart", action="store_true", help="do not draw the PNG chart")


def _floats(option: str, text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"{option} must be numbers separated by commas, not {text!r}") from None


def config_from_args(args: argparse.Namespace) -> SimulationConfig:
    """The SimulationConfig the options describe.

    Raises:
        UsageError: an option out of range (the message names it).
    """
    values: dict[str, Any] = {}
    for field, _kind, _text in _OPTIONS:
        value = getattr(args, field)
        if value is not None:
            values[field] = value
    if args.mix is not None:
        values["mix"] = _floats("--mix", args.mix)
    if args.strategies is not None:
        values["strategies"] = tuple(s.strip() for s in args.strategies.split(","))
    values["loop"] = check_loop(args.loop)
    values["isolate"] = not args.in_process
    values["disk_cache"] = not args.no_disk_cache
    base = SimulationConfig.quick(isolate=False) if args.quick else _DEFAULTS
    merged = {f.name: getattr(base, f.name) for f in dataclasses.fields(SimulationConfig)}
    merged.update(values)
    try:
        return SimulationConfig.named(option_name, **merged)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    """Run the simulation the options describe; 0 when it ran and its counts add up.

    Bars that miss are reported, not an error.
    """
    config = config_from_args(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out must be a directory, and {str(out)!r} is a file")
    # Imported here: --help and the argument checks stay quick.
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    from asyncperf.tools.simulate._report import print_report, write_chart, write_json
    from asyncperf.tools.simulate._run import simulate
    from asyncperf.tools.simulate._workload import make_workload

    console = Console()
    messages = len(make_workload(config))
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        tasks: dict[str, TaskID] = {
            name: progress.add_task(f"{name:>9}: messages settled", total=messages)
            for name in config.strategies
        }

        def advance(strategy: str, settled: int, total: int) -> None:
            progress.update(tasks[strategy], completed=settled, total=total)

        try:
            result = simulate(config, progress=advance)
        except RuntimeError as exc:  # a child failed, or a message was lost: say which
            console.print(f"[bold red]simulation failed:[/bold red] {exc}")
            return 1
    print_report(result, console)
    json_path = out / "simulation.json"
    write_json(result, json_path)
    console.print(f"wrote {json_path}")
    if not args.no_chart:
        png_path = out / "simulation.png"
        if write_chart(result, png_path):
            console.print(f"wrote {png_path}")
        else:
            console.print("note: matplotlib is not installed; no chart (pip install matplotlib)")
    return 0 if result["consistent"] else 1


COMMAND = Command(
    "simulate",
    "run the session simulator: naive, semaphore and asyncperf under the same load",
    add_arguments,
    run,
)
