"""Layer 6 and 8: ``asyncperf.profile`` (every section, the files) and ``asyncperf profile``."""

from __future__ import annotations

import argparse
import asyncio
import json
import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from asyncperf.observability._profile import REPORT_KEYS, profile
from asyncperf.tools._command import UsageError
from asyncperf.tools.profile import COMMAND

THIS_FILE = str(Path(__file__).resolve())

SECTION_IDS = ("asyncperf-summary", "asyncperf-cpu", "asyncperf-memory", "asyncperf-tasks")


def line_of(marker: str) -> int:
    """The line number in this file of the line that ends with ``# marker``."""
    for number, line in enumerate(Path(THIS_FILE).read_text().splitlines(), start=1):
        if line.rstrip().endswith(f"# {marker}"):
            return number
    raise AssertionError(f"marker {marker!r} not found")


LEAKED: list[object] = []


class Leaky:
    """One object of the planted leak (a class of its own: its allocations are easy to see)."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.payload = [number] * 8


def plant_leak(count: int) -> None:
    for number in range(count):
        LEAKED.append(Leaky(number))  # the planted leak


def spin_hot(seconds: float) -> int:
    """A pure-Python CPU-bound loop for ``seconds`` (the CPU section's hot function)."""
    total = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for value in range(500):
            total += value * value
    return total


async def test_every_section_finds_what_was_planted(tmp_path: Path) -> None:
    parked = asyncio.Event()
    waiter = asyncio.create_task(parked.wait(), name="parked<script>alert(1)</script>")
    LEAKED.clear()
    tracing_before = tracemalloc.is_tracing()
    try:
        async with profile(output_dir=tmp_path, name="all", task_dump_interval=0.05) as session:
            plant_leak(2000)
            spin_hot(0.05)
            await asyncio.sleep(0.12)  # the dumper's 0.05 s timer runs before this one
            time.sleep(0.2)  # noqa: ASYNC251  # the planted block
            await asyncio.sleep(0)
    finally:
        parked.set()
        await waiter
        LEAKED.clear()
    assert tracemalloc.is_tracing() == tracing_before
    report = session.report
    assert report is not None
    assert tuple(report) == REPORT_KEYS
    assert report["name"] == "all"
    assert report["outcome"] == "ok"
    assert report["sections"] == ["cpu", "memory", "tasks", "block"]
    assert set(report["overhead"]) == set(report["sections"])
    assert report["duration"] >= 0.2 + 0.12

    # CPU: the hot function is named, and the numbers are consistent.
    cpu = report["cpu"]
    assert cpu["samples"] > 0
    functions = [item["function"] for item in cpu["top_functions"]]
    assert "spin_hot" in functions
    assert len(functions) <= 20
    for item in cpu["top_functions"]:
        assert 0.0 <= item["self_time"] <= item["total_time"] + 1e-9
    self_times = [item["self_time"] for item in cpu["top_functions"]]
    assert self_times == sorted(self_times, reverse=True)

    # Memory: the planted leak's line tops the growth.
    memory = report["memory"]
    leak_line = line_of("the planted leak")
    leak_sites = [
        item
        for item in memory["growth"]
        if item["filename"] == THIS_FILE and item["lineno"] == leak_line
    ]
    assert leak_sites, memory["growth"]
    assert leak_sites[0]["count_diff"] >= 2000
    assert memory["growth"][0]["size_diff"] >= leak_sites[0]["size_diff"] > 0
    assert "LEAKED.append(Leaky(number))" in leak_sites[0]["line"]
    assert any(item["lineno"] == leak_line for item in memory["top"])

    # Tasks: the parked task, with the chain of awaits down to Event.wait.
    tasks = report["tasks"]
    assert tasks["dumps_taken"] == len(tasks["dumps"]) + 1 >= 2
    final = tasks["final"]
    assert final["count"] == len(final["tasks"])
    (parked_task,) = [t for t in final["tasks"] if t["name"].startswith("parked")]
    assert parked_task["state"] == "pending"
    assert parked_task["coroutine"] == "Event.wait"
    assert parked_task["stack"][-1]["function"] == "Event.wait"
    assert parked_task["waiting_on"]
    assert parked_task["age"] >= 0.2
    names = {t["name"] for t in final["tasks"]}
    assert not any(name.startswith("asyncperf-") for name in names)  # the profiler's own
    for dump in tasks["dumps"]:
        assert dump["count"] == len(dump["tasks"])
        assert any(t["name"].startswith("parked") for t in dump["tasks"])

    # Blocking: the planted block, with the line it blocked on; the lag felt it.
    blocking = report["blocking"]
    assert blocking["total_blocks"] == len(blocking["blocks"]) >= 1
    block_line = line_of("the planted block")
    (planted,) = [
        b
        for b in blocking["blocks"]
        if b["stack"]
        and (b["stack"][-1]["filename"], b["stack"][-1]["lineno"]) == (THIS_FILE, block_line)
    ]
    assert planted["duration"] >= 0.2
    assert planted["stack"][-1]["function"] == "test_every_section_finds_what_was_planted"
    assert blocking["lag"]["max"] >= 0.1

    # The files: JSON as the report, HTML with every section, everything escaped.
    assert session.json_path == tmp_path / "all.json"
    assert session.html_path == tmp_path / "all.html"
    assert json.loads(session.json_path.read_text()) == report
    page = session.html_path.read_text()
    for section in (*SECTION_IDS, "asyncperf-blocking"):
        assert f'id="{section}"' in page
    assert "pyinstrument" in page.lower()  # pyinstrument's own HTML is the first part
    assert "<script>alert(1)</script>" not in page
    assert "parked&lt;script&gt;alert(1)&lt;/script&gt;" in page


async def test_sections_can_be_turned_off(tmp_path: Path) -> None:
    async with profile(
        cpu=False, memory=False, tasks=False, block=False, output_dir=tmp_path
    ) as session:
        await asyncio.sleep(0)
    report = session.report
    assert report is not None
    assert report["sections"] == []
    assert report["overhead"] == {}
    for section in ("cpu", "memory", "tasks", "blocking"):
        assert report[section] is None
    assert session.html_path is not None
    assert session.html_path.name.startswith("profile-")
    page = session.html_path.read_text()
    assert 'id="asyncperf-summary"' in page
    assert 'id="asyncperf-cpu"' not in page
    assert page.startswith("<!DOCTYPE html>")


async def test_an_error_in_the_block_is_reported_and_raised(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="boom"):
        async with profile(cpu=False, memory=False, block=False, output_dir=tmp_path) as session:
            raise ValueError("boom")
    assert session.report is not None
    assert session.report["outcome"] == "error: ValueError: boom"
    assert session.json_path is not None
    assert json.loads(session.json_path.read_text())["outcome"] == session.report["outcome"]


async def test_one_profile_at_a_time_and_one_run_each(tmp_path: Path) -> None:
    first = profile(cpu=False, memory=False, block=False, output_dir=tmp_path, name="same")
    async with first:
        with pytest.raises(RuntimeError, match=r"another asyncperf\.profile is running"):
            async with profile(cpu=False, memory=False, block=False, output_dir=tmp_path):
                pass
    with pytest.raises(RuntimeError, match="runs once"):
        async with first:
            pass
    # The same name again keeps both reports.
    async with profile(cpu=False, memory=False, block=False, output_dir=tmp_path, name="same") as p:
        pass
    assert p.json_path == tmp_path / "same-2.json"
    assert (tmp_path / "same.json").exists()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"cpu": 1}, TypeError, "cpu must be a bool"),
        ({"block": None}, TypeError, "block must be a bool"),
        ({"sample_rate": 0}, ValueError, "sample_rate must be > 0"),
        ({"sample_rate": "fast"}, TypeError, "sample_rate must be a number"),
        ({"block_threshold": -0.1}, ValueError, "block_threshold must be > 0"),
        ({"task_dump_interval": 0}, ValueError, "task_dump_interval must be > 0"),
        ({"top": 0}, ValueError, "top must be >= 1"),
        ({"top": 2.5}, TypeError, "top must be an int"),
        ({"output_dir": 3}, TypeError, "output_dir must be a str or a path"),
        ({"name": "../escape"}, ValueError, "name must be"),
        ({"name": ""}, ValueError, "name must be"),
        ({"name": 7}, TypeError, "name must be a str"),
    ],
)
def test_bad_arguments_name_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        profile(**kwargs)


# -- the command line -----------------------------------------------------------------

TARGET = textwrap.dedent(
    """
    import asyncio
    import time

    KEEP = []

    def crunch():
        return sum(i * i for i in range(20_000))

    async def main():
        KEEP.extend([0] * 10 for _ in range(100))
        crunch()
        await asyncio.sleep(0)

    async def forever():
        while True:
            await asyncio.sleep(0.01)

    async def fails():
        raise RuntimeError("the target failed")

    async def needs(x):
        return x
    """
)


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    COMMAND.add_arguments(parser)
    return COMMAND.run(parser.parse_args(list(argv)))


@pytest.fixture
def target_file(tmp_path: Path) -> Path:
    path = tmp_path / "profile_target_module.py"
    path.write_text(TARGET)
    return path


def test_cli_writes_both_reports(
    target_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    status = run_cli(
        f"{target_file}:main", "--output-dir", str(out), "--name", "cli", "--loop", "asyncio"
    )
    assert status == 0
    report = json.loads((out / "cli.json").read_text())
    assert tuple(report) == REPORT_KEYS
    assert report["outcome"] == "ok"
    assert report["loop"] == "asyncio"
    assert report["sections"] == ["cpu", "memory", "tasks", "block"]
    assert any(item["filename"] == str(target_file) for item in report["memory"]["growth"])
    page = (out / "cli.html").read_text()
    for section in SECTION_IDS:
        assert f'id="{section}"' in page
    printed = capsys.readouterr().out
    assert f"wrote {out / 'cli.json'}" in printed
    assert f"wrote {out / 'cli.html'}" in printed


def test_cli_duration_cancels_a_long_running_function(target_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    status = run_cli(
        f"{target_file}:forever",
        "--output-dir",
        str(out),
        "--name",
        "forever",
        "--duration",
        "0.2",
        "--no-cpu",
        "--no-memory",
    )
    assert status == 0
    report = json.loads((out / "forever.json").read_text())
    assert report["sections"] == ["tasks", "block"]
    assert report["cpu"] is None
    assert report["memory"] is None
    # uvloop (the CLI's default loop here) sets a timer from its loop time, kept in whole
    # milliseconds and read at the start of the loop's pass: the timer can fire up to
    # 1 ms before time.monotonic() says 0.2 s have passed since the profile started.
    assert report["duration"] >= 0.2 - 0.001


def test_cli_a_failing_function_still_writes_its_report(
    target_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    status = run_cli(f"{target_file}:fails", "--output-dir", str(out), "--name", "f", "--no-cpu")
    assert status == 1
    assert (out / "f.json").exists()
    assert "the target failed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--sample-rate", "0"], "--sample-rate must be"),
        (["--block-threshold", "-1"], "--block-threshold must be"),
        (["--task-dump-interval", "0"], "--task-dump-interval must be"),
        (["--duration", "nan"], "--duration must be"),
        (["--top", "0"], "--top must be >= 1"),
        (["--name", "a/b"], "--name"),
    ],
)
def test_cli_bad_options_name_the_option(target_file: Path, argv: list[str], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        run_cli(f"{target_file}:main", *argv)


def test_cli_bad_targets(target_file: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"MODULE:CALLABLE: .*needs arguments"):
        run_cli(f"{target_file}:needs")
    with pytest.raises(UsageError, match=r"MODULE:CALLABLE: .*has no attribute 'missing'"):
        run_cli(f"{target_file}:missing")
    with pytest.raises(UsageError, match=r"MODULE:CALLABLE: .*must be MODULE:NAME"):
        run_cli("no_colon_here")
    with pytest.raises(UsageError, match=r"MODULE:CALLABLE: .*not an async function"):
        run_cli(f"{target_file}:KEEP")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="--output-dir"):
        run_cli(f"{target_file}:main", "--output-dir", str(blocker))
