"""What every subcommand of the command line shares: its shape, usage errors, the loop option.

Each command module (``demo``, ``simulate``, ``load``, ``bench``) defines one
:class:`Command`; :mod:`asyncperf.tools.cli` lists them. Arguments argparse
cannot check itself are checked by the run function, which raises
:class:`UsageError` before doing any work; the CLI reports it like any
argparse error (exit status 2), naming the option.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import asyncperf as ap

__all__ = [
    "LOOP_CHOICES",
    "Command",
    "UsageError",
    "add_loop_option",
    "check_at_least",
    "check_loop",
    "import_from_cwd",
    "short_path",
]

LOOP_CHOICES = ("auto", "uvloop", "asyncio")


class UsageError(Exception):
    """A bad command-line argument, found after parsing; the message names it."""


@dataclass(frozen=True, slots=True)
class Command:
    """One subcommand: its name, one line of help, its arguments and what it runs."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def add_loop_option(parser: argparse.ArgumentParser) -> None:
    """``--loop auto|uvloop|asyncio``, for every subcommand that runs a loop."""
    parser.add_argument(
        "--loop",
        choices=LOOP_CHOICES,
        default="auto",
        help="event loop: uvloop when installed (auto), or the one named (default: auto)",
    )


def check_loop(loop: str) -> ap.loop.LoopChoice:
    """The loop choice, checked to be importable here.

    Raises:
        UsageError: uvloop was asked for and is not installed.
    """
    if loop == "uvloop" and "uvloop" not in ap.available_loops():
        raise UsageError("--loop uvloop: uvloop is not installed (pip install uvloop)")
    if loop == "uvloop":
        return "uvloop"
    return "asyncio" if loop == "asyncio" else "auto"


def check_at_least(option: str, value: int, minimum: int) -> None:
    """Raises UsageError ``"--option must be >= minimum"`` when ``value`` is below it."""
    if value < minimum:
        raise UsageError(f"{option} must be >= {minimum}")


def import_from_cwd() -> None:
    """Make modules in the current directory importable, as ``python -m`` does.

    For the commands that load a user's ``MODULE:NAME`` (load, leaks, profile).
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def short_path(path: str) -> str:
    """``path`` relative to the current directory when it is under it, for reports.

    Pseudo-files (``<frozen ...>``, ``<string>``) and paths elsewhere stay as they are.
    """
    if not path or path.startswith("<"):
        return path
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if relative.startswith("..") else relative
