"""``asyncperf load MODULE:HANDLER``: the command line of the load tester."""

from __future__ import annotations

import argparse
import contextlib
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncperf as ap
from asyncperf.tools._command import (
    Command,
    UsageError,
    add_loop_option,
    check_loop,
    import_from_cwd,
)
from asyncperf.tools.load._results import LoadReport
from asyncperf.tools.load._run import DEFAULT_CONCURRENCY, DEFAULT_MAX_IN_FLIGHT, run_load
from asyncperf.tools.load._target import (
    ArgumentsError,
    ArgumentSource,
    FileArguments,
    GeneratorArguments,
    NoArguments,
    Target,
    TargetError,
    resolve_setup,
    resolve_target,
)

__all__ = ["COMMAND", "parse_concurrency", "parse_rate"]

#: File names written in ``--out DIR`` (unless ``--json`` / ``--chart`` name others).
JSON_NAME = "load.json"
CHART_NAME = "load.png"

_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*/\s*(s|sec|second|m|min|minute)\s*$")
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}


def parse_concurrency(text: str) -> tuple[int, ...]:
    """``"1,8,64"`` as ``(1, 8, 64)``, sorted, duplicates dropped.

    Raises:
        UsageError: not a comma-separated list of integers >= 1.
    """
    values: list[int] = []
    for item in text.split(","):
        try:
            value = int(item.strip())
        except ValueError:
            raise UsageError(
                "--concurrency must be a comma-separated list of integers >= 1, "
                f"e.g. 1,8,64,256 (got {text!r})"
            ) from None
        if value < 1:
            raise UsageError(f"--concurrency values must be >= 1 (got {value})")
        values.append(value)
    return tuple(sorted(set(values)))


def parse_rate(text: str) -> tuple[float, ...]:
    """``"500/s,30/min"`` as calls per second, ``(0.5, 500.0)``: sorted, duplicates dropped.

    Raises:
        UsageError: an item is not a positive number of calls per ``s`` or ``min``.
    """
    values: list[float] = []
    for item in text.split(","):
        match = _RATE.match(item)
        if match is None:
            raise UsageError(
                "--rate must be calls per second or per minute, like 500/s or 30/min "
                f"(a comma-separated list for a sweep: 100/s,200/s); got {item.strip()!r}"
            )
        value = float(match[1]) / _PER[match[2]]
        if not value > 0 or math.isinf(value):
            raise UsageError(f"--rate must be > 0 (got {item.strip()!r})")
        values.append(value)
    return tuple(sorted(set(values)))


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        metavar="MODULE:HANDLER",
        help=(
            "the async function to load-test: a dotted module or a .py file, a colon, "
            "and the function's name (examples/load_target.py:handle)"
        ),
    )
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument(
        "--concurrency",
        metavar="N,N,...",
        help=(
            "a sweep: N workers call the handler back to back, one step per value "
            f"(default: {','.join(map(str, DEFAULT_CONCURRENCY))})"
        ),
    )
    shape.add_argument(
        "--rate",
        metavar="R/s,...",
        help=(
            "fixed arrival rates instead: calls started at fixed times whether or not "
            "earlier ones answered, e.g. 500/s or 100/s,200/s,400/s (also /min)"
        ),
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds each step measures (default: 10)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds each step runs before it measures; not counted (default: 1)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds a call may take; then it is cancelled and counted as timed out "
        "(default: no limit)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        metavar="N",
        help="with --rate: calls outstanding at most; a call due beyond that is skipped "
        f"and counted (default: {DEFAULT_MAX_IN_FLIGHT:,})",
    )
    arguments = parser.add_mutually_exclusive_group()
    arguments.add_argument(
        "--args",
        metavar="MODULE:GENERATOR",
        help="a function returning an iterable of argument items: a tuple is the positional "
        "arguments, a dict the keyword arguments, anything else the one argument; "
        "called again when exhausted (default: no arguments)",
    )
    arguments.add_argument(
        "--args-file",
        metavar="FILE.jsonl",
        help="JSON lines, one call each: an array is the positional arguments, an object "
        "the keyword arguments, anything else the one argument; read again from the top "
        "when exhausted",
    )
    parser.add_argument(
        "--setup",
        metavar="MODULE:NAME",
        help="an async context manager (an asyncperf Runtime), or a function returning one, "
        "entered around the whole run: what the handler needs running",
    )
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON to FILE")
    parser.add_argument(
        "--chart",
        metavar="FILE.png",
        help="draw throughput against latency, a point per step and the knee marked "
        "(needs matplotlib)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help=f"write {JSON_NAME} and {CHART_NAME} in DIR (unless --json / --chart say otherwise)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar while the steps run"
    )
    add_loop_option(parser)


def _check_number(option: str, value: float | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise UsageError(f"{option} must be {'>= 0' if allow_zero else '> 0'} (got {value:g})")


def _resolve(option: str, resolve: Callable[[str], Any], spec: str) -> Any:
    """``resolve(spec)``, a failure reported as a usage error naming ``option``."""
    try:
        return resolve(spec)
    except (TargetError, ArgumentsError) as exc:
        raise UsageError(f"{option}: {exc}") from None


def _outputs(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    out = Path(args.out) if args.out else None
    json_path = Path(args.json) if args.json else (out / JSON_NAME if out else None)
    chart_path = Path(args.chart) if args.chart else (out / CHART_NAME if out else None)
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out}: not a directory")
    if chart_path is not None and chart_path.suffix.lower() != ".png":
        raise UsageError(f"--chart must name a .png file (got {str(chart_path)!r})")
    return json_path, chart_path


def _run(args: argparse.Namespace) -> int:
    # Every argument is checked before anything runs.
    loop = check_loop(args.loop)
    concurrency = parse_concurrency(args.concurrency) if args.concurrency is not None else None
    rate = parse_rate(args.rate) if args.rate is not None else None
    _check_number("--duration", args.duration)
    _check_number("--warmup", args.warmup, allow_zero=True)
    _check_number("--timeout", args.timeout)
    if args.max_in_flight is not None:
        if rate is None:
            raise UsageError("--max-in-flight applies to --rate only (a sweep bounds itself)")
        if args.max_in_flight < 1:
            raise UsageError(f"--max-in-flight must be >= 1 (got {args.max_in_flight})")
    json_path, chart_path = _outputs(args)

    import_from_cwd()
    target: Target = _resolve("MODULE:HANDLER", resolve_target, args.target)
    source: ArgumentSource = NoArguments()
    if args.args is not None:
        source = _resolve("--args", GeneratorArguments.from_spec, args.args)
    elif args.args_file is not None:
        source = _resolve("--args-file", FileArguments, args.args_file)
    setup = _resolve("--setup", resolve_setup, args.setup) if args.setup else None

    from rich.console import Console

    console = Console()

    async def main() -> LoadReport:
        manager: contextlib.AbstractAsyncContextManager[Any] = contextlib.nullcontext()
        if setup is not None:
            manager = _resolve("--setup", lambda _spec: setup(), args.setup)
        async with manager:
            return await run_load(
                target,
                concurrency=concurrency,
                rate=rate,
                duration=args.duration,
                warmup=args.warmup,
                timeout=args.timeout,
                max_in_flight=(
                    args.max_in_flight if args.max_in_flight is not None else DEFAULT_MAX_IN_FLIGHT
                ),
                arguments=source,
                console=console,
                progress=not args.no_progress,
            )

    try:
        report = ap.run(main(), loop=loop)
    except TargetError as exc:
        raise UsageError(f"MODULE:HANDLER: {exc}") from None
    except ArgumentsError as exc:
        raise UsageError(f"{'--args-file' if args.args_file else '--args'}: {exc}") from None

    from asyncperf.tools.load._report import print_report, write_chart, write_json

    print_report(report, console)
    if json_path is not None:
        console.print(f"wrote {write_json(report, json_path)}")
    if chart_path is not None:
        written = write_chart(report, chart_path)
        if written is None:
            console.print(f"[dim]matplotlib is not installed: no chart ({chart_path})[/dim]")
        else:
            console.print(f"wrote {written}")
    return 0 if report.consistent else 1


COMMAND = Command(
    "load",
    "load-test an async handler: a concurrency sweep or fixed rates, latency and the knee",
    _add_arguments,
    _run,
)
