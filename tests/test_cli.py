"""The command line (asyncperf info, asyncperf demo, argument errors) and the demo coroutine."""

from __future__ import annotations

import asyncio
import io
import os
import platform
import re
import signal
import subprocess
import sys
from typing import Any

import pytest
from rich.console import Console

import asyncperf as ap
from asyncperf.tools import cli
from asyncperf.tools.demo import PRIORITIES, DemoOptions, Outcome, demo


@pytest.fixture(autouse=True)
def plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich writes plain text to the captured output, whatever the environment asks."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "120")


def _plain_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env["COLUMNS"] = "120"
    return env


# -- asyncperf info ----------------------------------------------------------------


def test_info_prints_versions_and_loops(capsys: pytest.CaptureFixture[str]) -> None:
    """`asyncperf info` shows the version, Python, the loops available and the one auto picks."""
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    loops = ap.available_loops()
    assert re.search(rf"^asyncperf\s+{re.escape(ap.__version__)}$", out, re.M)
    assert re.search(rf"^python\s+{re.escape(platform.python_version())} ", out, re.M)
    assert re.search(rf"^loops\s+{', '.join(loops)}$", out, re.M)
    assert re.search(rf"^auto loop\s+{loops[0]}$", out, re.M)


def test_info_without_uvloop(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without uvloop, `info` lists asyncio only and says auto picks it."""
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^loops\s+asyncio$", out, re.M)
    assert re.search(r"^auto loop\s+asyncio$", out, re.M)


# -- asyncperf demo ----------------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_demo_command_reports_consistent_counts(
    loop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`asyncperf demo --jobs 500` exits 0, names its loop and prints the check as OK."""
    assert cli.main(["demo", "--jobs", "500", "--workers", "8", "--loop", loop]) == 0
    out = capsys.readouterr().out
    assert f"500 jobs on {loop}" in out
    assert "pool.statistics()" in out
    assert "pool.queue.statistics()" in out
    assert "consistency: OK" in out
    assert "MISMATCH" not in out


def test_demo_as_a_module_in_a_subprocess() -> None:
    """`python -m asyncperf demo` runs the same command line in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-m", "asyncperf", "demo", "--jobs", "300", "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_plain_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "consistency: OK" in proc.stdout
    assert proc.stderr == ""


def _default_sigint() -> None:
    # A shell may start background jobs with SIGINT ignored; Ctrl-C must reach Python.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_ctrl_c_stops_the_demo_cleanly() -> None:
    """Ctrl-C mid-burst exits 130 saying 'interrupted', with no unretrieved job errors logged."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "asyncperf", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_plain_env(),
        preexec_fn=_default_sigint,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "resize up" in line:  # mid-burst: jobs running, queued, dropped, failed
                break
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert err == "interrupted\n"


# -- argument errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--jobs", "0"], "--jobs must be >= 1"),
        (["demo", "--jobs", "-5"], "--jobs must be >= 1"),
        (["demo", "--workers", "0"], "--workers must be >= 1"),
        (["demo", "--jobs", "many"], "argument --jobs: invalid int value: 'many'"),
        (["demo", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
        (["demo", "--loop", "trio"], "argument --loop: invalid choice: 'trio'"),
        (["demo", "--speed", "9"], "unrecognized arguments: --speed 9"),
        (["info", "extra"], "unrecognized arguments: extra"),
        (["bogus"], "invalid choice: 'bogus'"),
    ],
)
def test_bad_arguments_exit_2_naming_the_parameter(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad argument is an argparse error: exit status 2, the parameter named on stderr."""
    with pytest.raises(SystemExit) as excinfo:
        cli.main(argv)
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("usage: asyncperf")


def test_uvloop_asked_for_but_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--loop uvloop` without uvloop installed is a usage error with an install hint."""
    monkeypatch.setitem(sys.modules, "uvloop", None)
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["demo", "--loop", "uvloop"])
    assert excinfo.value.code == 2
    assert "--loop uvloop: uvloop is not installed (pip install uvloop)" in capsys.readouterr().err


def test_no_subcommand_prints_help_and_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a subcommand the help (listing every command) goes to stderr, status 2."""
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: asyncperf")
    for command in cli.COMMANDS:
        assert command.name in err


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """`asyncperf --version` prints the version and exits 0."""
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["--version"])
    assert excinfo.value.code == 0
    assert capsys.readouterr().out == f"asyncperf {ap.__version__}\n"


# -- the demo coroutine ------------------------------------------------------------

SMALL = DemoOptions(
    jobs=600,
    workers=8,
    min_workers=2,
    seed=3,
    median_latency=0.001,
    error_rate=0.05,
    timeout_every=10,
    short_timeout=0.001,
)


async def test_demo_counts_agree_with_pool_statistics() -> None:
    """Every job the demo submits ends in one outcome, and its counts equal the statistics."""
    result = await demo(SMALL)
    assert result.consistent, [check for check in result.checks if not check.ok]
    assert result.loop == ap.loop_name()
    pool = result.pool
    assert sum(result.total(outcome) for outcome in Outcome) == SMALL.jobs
    assert pool.submitted == (
        pool.completed + pool.failed + pool.cancelled + pool.timed_out + pool.dropped
    )
    assert pool.pending == pool.active == 0
    assert result.total(Outcome.OK) == pool.completed
    assert result.total(Outcome.ERROR) == pool.failed
    assert result.total(Outcome.TIMEOUT) == pool.timed_out
    assert result.total(Outcome.DROPPED) == pool.dropped
    assert result.total(Outcome.REJECTED) == pool.rejected
    for level in result.queue.levels:
        counts = result.outcomes[level.priority]
        assert level.depth == 0
        assert level.dropped == counts[Outcome.DROPPED]
        assert level.rejected == counts[Outcome.REJECTED]


async def test_demo_burst_shows_every_outcome() -> None:
    """The burst overflows the REJECT and DROP_OLDEST levels; errors and timeouts occur."""
    result = await demo(SMALL)
    assert result.outcomes[0][Outcome.REJECTED] > 0
    assert result.outcomes[1][Outcome.DROPPED] > 0
    assert result.outcomes[2][Outcome.REJECTED] == result.outcomes[2][Outcome.DROPPED] == 0
    assert result.total(Outcome.ERROR) > 0
    assert result.total(Outcome.TIMEOUT) > 0
    assert result.total(Outcome.CANCELLED) == 0
    assert set(result.outcomes) == set(PRIORITIES)


async def test_demo_resizes_up_then_back_down() -> None:
    """Mid-burst the pool doubles max_workers and later restores it; both are events."""
    result = await demo(SMALL)
    messages = [event.message for event in result.events]
    up = messages.index("resize up: max_workers 8 -> 16")
    down = messages.index("resize down: max_workers 16 -> 8")
    assert up < down
    assert result.pool.max_workers == 8
    assert [event.at for event in result.events] == sorted(event.at for event in result.events)


async def test_demo_prints_report_with_progress() -> None:
    """With a console the demo prints its header, tables and 'consistency: OK'."""
    out = io.StringIO()
    result = await demo(SMALL, console=Console(file=out, width=120), progress=True)
    text = out.getvalue()
    assert result.consistent
    assert text.startswith(f"asyncperf demo: 600 jobs on {result.loop}")
    for heading in ("pool.statistics()", "pool.queue.statistics()", "outcomes the demo observed"):
        assert heading in text
    assert "consistency: OK" in text


async def test_cancelled_demo_leaves_no_task_behind() -> None:
    """Cancelling the demo mid-burst closes its pool and cancels its progress task."""
    out = io.StringIO()
    task = asyncio.create_task(demo(DemoOptions(jobs=2_000, workers=4), console=Console(file=out)))
    # Loop passes, not time: the first runs the burst up to the BLOCK level's bound.
    for _ in range(3):
        await asyncio.sleep(0)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "consistency" not in out.getvalue()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"jobs": 0}, "jobs must be >= 1"),
        ({"workers": 0}, "workers must be >= 1"),
        ({"workers": 2, "min_workers": 3}, "min_workers must be >= 0 and <= workers"),
        ({"median_latency": 0.0}, "median_latency must be > 0"),
        ({"error_rate": 1.5}, "error_rate must be between 0 and 1"),
    ],
)
def test_demo_options_are_checked(options: dict[str, Any], message: str) -> None:
    """DemoOptions refuses out-of-range values with a ValueError naming the option."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        DemoOptions(**options)
