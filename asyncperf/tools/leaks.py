"""``asyncperf leaks MODULE:FACTORY``: run a coroutine round after round and report what grows.

``MODULE`` is a dotted module or a ``.py`` file (as for ``asyncperf load``);
``FACTORY`` names an async function taking no arguments (or any callable
returning an awaitable), called once per round. The exit status is 1 when a
leak is found, 0 when none is, 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import inspect
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import asyncperf as ap
from asyncperf.observability import LeakReport, LeakTrend, find_leaks
from asyncperf.tools._command import (
    Command,
    UsageError,
    add_loop_option,
    check_at_least,
    check_loop,
    import_from_cwd,
    short_path,
)
from asyncperf.tools.load._target import TargetError, load_object

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["COMMAND", "print_report", "resolve_factory"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        metavar="MODULE:FACTORY",
        help=(
            "the async function to run once per round, without arguments: a dotted module "
            "or a .py file, a colon, and the function's name (mypkg.jobs:handle_one)"
        ),
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=20,
        metavar="N",
        help="rounds judged, at least 2 (default: 20)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        metavar="N",
        help="rounds run first and not judged: caches fill, imports happen (default: 2)",
    )
    parser.add_argument(
        "--top",
        type=int,
        default=10,
        metavar="N",
        help="allocation sites to show, those that grew most (default: 10)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE")
    add_loop_option(parser)


def resolve_factory(spec: str) -> Callable[[], Awaitable[object]]:
    """The callable ``spec`` (``MODULE:FACTORY``) names.

    Raises:
        TargetError: ``spec`` cannot be loaded (see
            :func:`asyncperf.tools.load.load_object`), or names something that is
            not callable, a class, or an async generator function.
    """
    obj = load_object(spec)
    if inspect.isasyncgenfunction(obj):
        raise TargetError(
            f"{spec!r} is an async generator function; give an `async def` that runs one round"
        )
    if inspect.isclass(obj) or inspect.ismodule(obj) or not callable(obj):
        raise TargetError(
            f"{spec!r} is a {type(obj).__name__}, not an async function "
            "(a coroutine function or a callable that returns an awaitable)"
        )
    factory: Callable[[], Awaitable[object]] = obj
    return factory


def _run(args: argparse.Namespace) -> int:
    # Every argument is checked before anything is imported or run.
    loop = check_loop(args.loop)
    check_at_least("--rounds", args.rounds, 2)
    check_at_least("--warmup", args.warmup, 0)
    check_at_least("--top", args.top, 0)
    json_path = Path(args.json) if args.json else None
    if json_path is not None and json_path.is_dir():
        raise UsageError(f"--json {args.json}: is a directory")

    import_from_cwd()
    try:
        factory = resolve_factory(args.target)
    except TargetError as exc:
        raise UsageError(f"MODULE:FACTORY: {exc}") from None

    from rich.console import Console

    console = Console()
    console.print(
        f"leak check of {args.target}: {args.warmup} warm-up rounds, then {args.rounds} rounds",
        markup=False,
    )

    async def main() -> LeakReport:
        return await find_leaks(factory, rounds=args.rounds, warmup=args.warmup, top=args.top)

    try:
        report = ap.run(main(), loop=loop)
    except TypeError as exc:
        if "coro_factory must return an awaitable" in str(exc):
            raise UsageError(f"MODULE:FACTORY: {args.target!r} returned no awaitable") from None
        raise
    print_report(report, console)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(
            json.dumps({"target": args.target, **report.as_dict()}, indent=2) + "\n",
            encoding="utf-8",
        )
        console.print(f"wrote {json_path}", markup=False)
    return 1 if report.leaked else 0


def _short_location(location: str) -> str:
    """``file:line`` with the file as :func:`~asyncperf.tools._command.short_path` gives it."""
    path, sep, line = location.rpartition(":")
    return f"{short_path(path)}:{line}" if sep and path else location


def _trend_row(name: str, unit: str, trend: LeakTrend) -> tuple[str, ...]:
    return (
        name,
        f"{trend.values[0]:,}{unit}",
        f"{trend.values[-1]:,}{unit}",
        f"{trend.per_round:+,.1f}{unit}",
        f"{trend.rounds_grown}/{trend.rounds}",
        "[bold red]growing[/]" if trend.growing else "[green]steady[/]",
    )


def print_report(report: LeakReport, console: Console) -> None:
    """The report as rich tables: the three series, the sites that grew, the live tasks."""
    from rich.markup import escape
    from rich.table import Table

    trends = Table(
        title=f"what grew over {report.rounds} rounds (after {report.warmup} warm-up)",
        title_justify="left",
    )
    for column in ("series", "baseline", "last round", "per round", "rounds grown", "verdict"):
        trends.add_column(column, justify="left" if column in ("series", "verdict") else "right")
    trends.add_row(*_trend_row("traced memory", " B", report.traced_bytes))
    trends.add_row(*_trend_row("traced blocks", "", report.traced_blocks))
    trends.add_row(*_trend_row("live tasks", "", report.tasks))
    console.print(trends)

    if report.sites:
        sites = Table(title="allocation sites that grew most", title_justify="left")
        sites.add_column("bytes", justify="right")
        sites.add_column("blocks", justify="right")
        sites.add_column("held at the end", justify="right")
        sites.add_column("where", overflow="fold")
        sites.add_column("line", overflow="fold")
        for site in report.sites:
            sites.add_row(
                f"{site.size_diff:+,}",
                f"{site.count_diff:+,}",
                f"{site.size:,} B",
                escape(f"{short_path(site.filename)}:{site.lineno}"),
                escape(site.source),
            )
        console.print(sites)
    if report.live_tasks:
        tasks = Table(title="tasks created during the rounds, still alive", title_justify="left")
        tasks.add_column("tasks", justify="right")
        tasks.add_column("coroutine")
        tasks.add_column("created at", overflow="fold")
        tasks.add_column("coroutine defined at", overflow="fold")
        for group in report.live_tasks:
            tasks.add_row(
                f"{group.count:,}",
                escape(group.coroutine),
                escape(_short_location(group.created_at)),
                escape(_short_location(group.location)),
            )
        console.print(tasks)

    if report.leaked:
        console.print("[bold red]LEAK FOUND[/]: " + "; ".join(report.reasons))
    else:
        console.print(
            f"[green]no leak found[/]: nothing grew in >= {report.min_growth_fraction:.0%} "
            "of the rounds"
        )


COMMAND = Command(
    "leaks",
    "run an async function round after round and report memory and tasks that keep growing",
    _add_arguments,
    _run,
)
