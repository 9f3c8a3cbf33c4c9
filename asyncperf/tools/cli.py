"""The ``asyncperf`` command line (also ``python -m asyncperf``).

Each subcommand is one :class:`Command` in :data:`COMMANDS`: a function that
adds its arguments to its subparser and a function that runs it. Adding a
subcommand is those two functions and one entry. Arguments argparse cannot
check itself are checked by the run function, which raises :class:`UsageError`
before doing any work; it is reported like any argparse error (exit status 2).
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence
from importlib import metadata

import asyncperf as ap
from asyncperf.tools._command import (
    Command,
    UsageError,
    add_loop_option,
    check_at_least,
    check_loop,
)
from asyncperf.tools.bench._main import COMMAND as BENCH
from asyncperf.tools.dashboard import COMMAND as DASHBOARD
from asyncperf.tools.leaks import COMMAND as LEAKS
from asyncperf.tools.load import COMMAND as LOAD
from asyncperf.tools.profile import COMMAND as PROFILE
from asyncperf.tools.simulate import COMMAND as SIMULATE

__all__ = ["COMMANDS", "Command", "UsageError", "build_parser", "main"]

# -- asyncperf demo ----------------------------------------------------------------


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    add_loop_option(parser)
    parser.add_argument(
        "--jobs",
        type=int,
        default=20_000,
        help="jobs in the burst; the queue's bounds scale with it (default: 20000)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=32,
        help="max_workers of the pool, doubled mid-burst and restored later (default: 32)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=1,
        help="seed of the latencies, errors and priorities (default: 1)",
    )


def _run_demo(args: argparse.Namespace) -> int:
    loop = check_loop(args.loop)
    check_at_least("--jobs", args.jobs, 1)
    check_at_least("--workers", args.workers, 1)
    # Imported here: `info` and `--help` stay quick, and do not need rich.
    from rich.console import Console

    from asyncperf.tools.demo import DemoOptions, demo

    options = DemoOptions(
        jobs=args.jobs,
        workers=args.workers,
        min_workers=min(4, args.workers),
        seed=args.seed,
    )
    result = ap.run(demo(options, console=Console()), loop=loop)
    return 0 if result.consistent else 1


# -- asyncperf info ----------------------------------------------------------------


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    """``info`` takes no arguments."""


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _run_info(args: argparse.Namespace) -> int:
    loops = ap.available_loops()
    rows = [
        ("asyncperf", ap.__version__),
        (
            "python",
            f"{platform.python_version()} ({platform.python_implementation()}) {sys.executable}",
        ),
        ("platform", platform.platform()),
        ("loops", ", ".join(loops)),
        ("auto loop", loops[0]),
        ("uvloop", _version("uvloop")),
        ("rich", _version("rich")),
    ]
    width = max(len(name) for name, _value in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


COMMANDS: tuple[Command, ...] = (
    SIMULATE,
    Command(
        "demo",
        "run a WorkerPool under a burst and print its statistics",
        _demo_arguments,
        _run_demo,
    ),
    Command("info", "show versions and the event loops available", _info_arguments, _run_info),
    BENCH,
    LOAD,
    LEAKS,
    PROFILE,
    DASHBOARD,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="asyncperf",
        description="Bounded, prioritised, measured concurrency for asyncio services.",
    )
    parser.add_argument("--version", action="version", version=f"asyncperf {ap.__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(cli_command=command, cli_parser=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: the arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        0 on success, 1 when a command finds a failure (the demo's consistency
        check), 2 without a command (after printing the help), 130 on Ctrl-C.

    Raises:
        SystemExit: with status 2 for a bad argument (argparse prints the error,
            naming the argument), or 0 after ``--help`` and ``--version``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command | None = getattr(args, "cli_command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return command.run(args)
    except UsageError as exc:
        sub: argparse.ArgumentParser = args.cli_parser
        sub.error(str(exc))  # exits with status 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
