"""``asyncperf profile MODULE:CALLABLE``: run an async function under :func:`asyncperf.profile`.

``MODULE`` is a dotted module or a ``.py`` file (as for ``asyncperf load``);
``CALLABLE`` names an async function taking no arguments, awaited once inside
the profile. ``--duration S`` bounds a long-running one (a server's main): it is
cancelled after S seconds, and the report covers those seconds. The HTML report
and the JSON summary are written to ``--output-dir``; a short summary is printed.

Exit status: 0 when the function returned (or ran its ``--duration``), 1 when it
raised (the report is written all the same), 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncperf as ap
from asyncperf.observability._profile import Profile, profile
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

__all__ = ["COMMAND", "print_summary", "resolve_callable"]

#: Seconds between refreshes of the spinner (from the loop: no thread writes the console).
_REFRESH_INTERVAL = 0.1


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        metavar="MODULE:CALLABLE",
        help=(
            "the async function to profile, called once without arguments: a dotted module "
            "or a .py file, a colon, and the function's name (mypkg.app:main)"
        ),
    )
    for section, what in (
        ("cpu", "CPU time with pyinstrument"),
        ("memory", "allocations with tracemalloc (top lines and growth)"),
        ("tasks", "every asyncio task with its stack at the end"),
        ("block", "loop blocks past --block-threshold, and the loop's lag"),
    ):
        parser.add_argument(
            f"--{section}",
            action=argparse.BooleanOptionalAction,
            default=True,
            help=f"profile {what} (default: on)",
        )
    parser.add_argument(
        "--sample-rate",
        type=float,
        default=0.001,
        metavar="S",
        help="pyinstrument's sampling interval in seconds (default: 0.001)",
    )
    parser.add_argument(
        "--block-threshold",
        type=float,
        default=0.1,
        metavar="S",
        help="seconds the loop must be held to count as a block (default: 0.1)",
    )
    parser.add_argument(
        "--task-dump-interval",
        type=float,
        default=None,
        metavar="S",
        help="also dump every task every S seconds (default: at the end only)",
    )
    parser.add_argument(
        "--top", type=int, default=20, metavar="N", help="entries per top list (default: 20)"
    )
    parser.add_argument(
        "--output-dir",
        default="profiles",
        metavar="DIR",
        help="where the .html and .json reports are written (default: profiles)",
    )
    parser.add_argument(
        "--name", default=None, help="the reports' file name (default: profile-<time>)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="cancel the function after S seconds (for one that runs until stopped)",
    )
    add_loop_option(parser)


def resolve_callable(spec: str) -> Callable[[], Awaitable[object]]:
    """The async function ``spec`` (``MODULE:CALLABLE``) names.

    Raises:
        TargetError: ``spec`` cannot be loaded (see
            :func:`asyncperf.tools.load.load_object`), or names something that is
            not an async function taking no arguments.
    """
    obj = load_object(spec)
    if inspect.isasyncgenfunction(obj):
        raise TargetError(f"{spec!r} is an async generator function; give an `async def`")
    if inspect.isclass(obj) or inspect.ismodule(obj) or not callable(obj):
        raise TargetError(
            f"{spec!r} is a {type(obj).__name__}, not an async function "
            "(a coroutine function taking no arguments)"
        )
    try:
        inspect.signature(obj).bind()
    except TypeError:
        raise TargetError(f"{spec!r} needs arguments; give an async function taking none") from None
    except ValueError:  # no signature to inspect (some builtins): find out when called
        pass
    function: Callable[[], Awaitable[object]] = obj
    return function


def _check_seconds(option: str, value: float | None) -> None:
    if value is not None and (not value > 0 or math.isinf(value)):
        raise UsageError(f"{option} must be a finite number of seconds > 0 (got {value})")


def _run(args: argparse.Namespace) -> int:
    # Every argument is checked before anything is imported or run.
    loop = check_loop(args.loop)
    _check_seconds("--sample-rate", args.sample_rate)
    _check_seconds("--block-threshold", args.block_threshold)
    _check_seconds("--task-dump-interval", args.task_dump_interval)
    _check_seconds("--duration", args.duration)
    check_at_least("--top", args.top, 1)
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"--output-dir {args.output_dir}: exists and is not a directory")
    try:
        # The same checks as the function's, named as options.
        profile(name=args.name)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--name: {exc}") from None

    import_from_cwd()
    try:
        function = resolve_callable(args.target)
    except TargetError as exc:
        raise UsageError(f"MODULE:CALLABLE: {exc}") from None

    from rich.console import Console

    console = Console()
    outcome: dict[str, str] = {}

    async def main() -> Profile:
        session = profile(
            cpu=args.cpu,
            memory=args.memory,
            tasks=args.tasks,
            block=args.block,
            sample_rate=args.sample_rate,
            output_dir=output_dir,
            block_threshold=args.block_threshold,
            task_dump_interval=args.task_dump_interval,
            top=args.top,
            name=args.name,
        )
        async with _spinner(console, args.target, args.duration), session:
            outcome["result"] = await _call(function, args.target, args.duration)
        return session

    session = ap.run(main(), loop=loop)
    print_summary(session, console)
    result = outcome.get("result", "")
    if result.startswith("error"):
        from rich.markup import escape

        console.print(f"[bold red]{escape(args.target)} raised[/]: {escape(result[7:])}")
        return 1
    return 0


async def _call(
    function: Callable[[], Awaitable[object]], spec: str, duration: float | None
) -> str:
    """Await ``function()`` (cancelled after ``duration``); how it ended, as text."""
    try:
        awaitable = function()
        if not inspect.isawaitable(awaitable):
            raise UsageError(f"MODULE:CALLABLE: {spec!r} returned no awaitable")
        if duration is None:
            await awaitable
            return "returned"
        try:
            async with asyncio.timeout(duration):
                await awaitable
        except TimeoutError:
            return f"cancelled after --duration {duration:g} s"
        return "returned"
    except UsageError:
        raise
    except Exception as exc:
        # Reported, not raised: the profile of a failing run is still worth reading.
        return f"error: {type(exc).__name__}: {exc}"


@contextlib.asynccontextmanager
async def _spinner(console: Console, target: str, duration: float | None) -> AsyncIterator[None]:
    """A spinner (or a bar for ``--duration``) refreshed from the loop while the body runs."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if duration is not None:
        columns.append(BarColumn(bar_width=24))
    columns.append(TimeElapsedColumn())
    bar = Progress(*columns, console=console, transient=True, auto_refresh=False)
    bar_task = bar.add_task(f"profiling {target}", total=duration)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def refresh() -> None:
        while True:
            bar.update(bar_task, completed=loop.time() - started)
            bar.refresh()
            await asyncio.sleep(_REFRESH_INTERVAL)

    with bar:
        refresher = loop.create_task(refresh(), name="asyncperf-profile-progress")
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher


def print_summary(session: Profile, console: Console) -> None:
    """The files written, and the top of each section, as rich tables."""
    from rich.markup import escape
    from rich.table import Table

    report = session.report
    if report is None:
        console.print("no report: the profile did not finish")
        return
    console.print(
        f"profiled {report['duration']:.2f} s on {report['loop']} "
        f"({', '.join(report['sections']) or 'no sections'})",
        markup=False,
    )
    cpu = report["cpu"]
    if cpu is not None and cpu["top_functions"]:
        table = Table(title="CPU: top functions by self time", title_justify="left")
        table.add_column("self s", justify="right")
        table.add_column("function")
        table.add_column("where", overflow="fold")
        for item in cpu["top_functions"][:10]:
            table.add_row(
                f"{item['self_time']:.4f}",
                escape(item["function"]),
                escape(f"{short_path(item['file'])}:{item['line']}"),
            )
        console.print(table)
    memory = report["memory"]
    if memory is not None and memory["growth"]:
        table = Table(title="memory: lines that grew most", title_justify="left")
        table.add_column("bytes", justify="right")
        table.add_column("blocks", justify="right")
        table.add_column("where", overflow="fold")
        for item in memory["growth"][:10]:
            table.add_row(
                f"{item['size_diff']:+,}",
                f"{item['count_diff']:+,}",
                escape(f"{short_path(item['filename'])}:{item['lineno']}"),
            )
        console.print(table)
    tasks = report["tasks"]
    if tasks is not None:
        console.print(f"tasks alive at the end: {tasks['final']['count']}", markup=False)
    blocking = report["blocking"]
    if blocking is not None:
        lag = blocking["lag"]
        console.print(
            f"loop blocks over {blocking['threshold'] * 1000:.0f} ms: "
            f"{blocking['total_blocks']}; lag p99 {lag['p99'] * 1000:.2f} ms, "
            f"max {lag['max'] * 1000:.2f} ms",
            markup=False,
        )
        for block in blocking["blocks"][:5]:
            where = block["stack"][-1] if block["stack"] else None
            place = f"{short_path(where['filename'])}:{where['lineno']}" if where else "?"
            console.print(
                f"  {block['duration'] * 1000:.0f} ms at {place}",
                markup=False,
            )
    console.print(f"wrote {session.html_path}", markup=False)
    console.print(f"wrote {session.json_path}", markup=False)


COMMAND = Command(
    "profile",
    "run an async function under the profiler (CPU, memory, tasks, loop blocks)",
    _add_arguments,
    _run,
)
