import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asyncperf.tools.bench import backpressure as overload
from asyncperf.tools.bench._main import SUITES as REGISTERED

REPO = Path(__file__).resolve().parent.parent
# The suites this quick run covers; the newer ones have their own test files.
SUITES = {"pool", "queue", "memory", "backpressure", "cache", "hit_ratio", "disk", "scaling"}
STRATEGIES = {"gather_semaphore", "pool_static", "pool_overload"}


def test_bench_quick_run_writes_every_suite(tmp_path: Path) -> None:
    """A --quick run of all suites exits 0 and writes a positive figure for every contender."""
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "bench", "--quick", *sorted(SUITES), "--loop", "asyncio"]
    proc = subprocess.run(
        [*command, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data["suites"]) == SUITES
    assert data["metadata"]["cpu_count"] == os.cpu_count()
    for name in SUITES - {"backpressure", "hit_ratio"}:
        results = data["suites"][name]["results"]
        assert results, f"suite {name} has no results"
        for result in results:
            assert result["loop"] == "asyncio"
            assert result["value"] > 0, result
            assert result["samples"], result
            assert all(sample > 0 for sample in result["samples"]), result
    pool = {r["contender"] for r in data["suites"]["pool"]["results"]}
    assert {"floor", "queue_workers", "worker_pool"} <= pool
    cache = {r["contender"] for r in data["suites"]["cache"]["results"]}
    assert {"dict", "cachetools", "asyncperf", "asyncperf_nowait"} <= cache
    disk = {r["contender"] for r in data["suites"]["disk"]["results"]}
    assert {"asyncperf", "diskcache_thread"} <= disk
    _check_hit_ratio(data["suites"]["hit_ratio"])
    _check_overload(data["suites"]["backpressure"])


def _check_hit_ratio(suite: dict[str, object]) -> None:
    """Every policy is measured; a hit ratio is a percentage, and each bar has its figures."""
    results = suite["results"]
    assert isinstance(results, list)
    assert {r["contender"] for r in results} == {"lru", "lfu", "fifo", "sieve", "tinylfu"}
    for result in results:
        assert result["unit"] == "%"
        assert 0 <= result["value"] <= 100, result
    bars = suite["bars"]
    assert isinstance(bars, list)
    assert bars
    assert all(bar["contender"] == "tinylfu" for bar in bars)


def _check_overload(suite: dict[str, object]) -> None:
    results = suite["results"]
    assert isinstance(results, list)
    headline = {r["contender"]: r for r in results if r["case"] == "backpressure"}
    assert set(headline) == STRATEGIES
    for result in headline.values():
        assert result["loop"] == "asyncio"
        assert result["samples"], result
        assert all(sample >= 0 for sample in result["samples"]), result
    figures = {(r["contender"], r["case"]): r for r in results}
    for strategy in STRATEGIES:
        offered = figures[(strategy, "overall/all/offered")]["samples"]
        on_time = figures[(strategy, "overall/all/on_time")]["samples"]
        late = figures[(strategy, "overall/all/late")]["samples"]
        shed = figures[(strategy, "overall/all/shed")]["samples"]
        failed = figures[(strategy, "overall/all/failed")]["samples"]
        assert offered
        assert all(n > 0 for n in offered)
        # Every request ends in exactly one of answered (on time or late), shed or failed.
        for row in zip(offered, on_time, late, shed, failed, strict=True):
            assert row[0] == sum(row[1:]), (strategy, row)
    # The quick sizes are too small to judge the bars, but every bar is checked.
    bars = suite["bars"]
    assert isinstance(bars, list)
    assert {bar["contender"] for bar in bars} == {"pool_overload"}
    assert len(bars) == 3
    notes = suite["notes"]
    assert isinstance(notes, list)
    settings = [note for note in notes if note.startswith("settings ")]
    assert settings
    scenario = json.loads(settings[0].removeprefix("settings "))["scenario"]
    assert scenario["loads"] == [0.5, 2.0, 3.0, 0.5]


def test_overload_recorder_refuses_a_second_outcome() -> None:
    """A request settled twice is an accounting bug, and the recorder says so."""
    recorder = overload.Recorder(2)
    recorder.settle(0, overload.ANSWERED)
    with pytest.raises(AssertionError, match="ended twice"):
        recorder.settle(0, overload.DROPPED)
    assert recorder.left == 1


def test_overload_workload_is_seeded_and_follows_the_phases() -> None:
    """The same seed gives the same arrivals; each phase offers about load x capacity."""
    scenario = overload.Scenario(phase_seconds=0.5)
    first = overload.make_workload(scenario)
    assert overload.make_workload(scenario) == first
    assert first.arrivals == sorted(first.arrivals)
    for phase, load in enumerate(scenario.loads):
        count = first.phases.count(phase)
        expected = load * scenario.capacity * scenario.phase_seconds
        assert abs(count - expected) < 5 * expected**0.5 + 1, (phase, count, expected)
    assert set(first.classes) == {0, 1, 2}


def test_every_suite_the_issue_names_is_registered() -> None:
    """``asyncperf bench all`` runs every suite the issue and DESIGN.md name, and the rest."""
    named = {"pool", "queue", "cache", "memory", "backpressure", "sessions", "gc", "locks"}
    assert set(REGISTERED) >= named | {"channels"} | SUITES


def test_vs_limits_the_peers_and_keeps_the_baselines(tmp_path: Path) -> None:
    """``--vs aiojobs``: aiojobs runs, the other peers are skipped with a note, the stock
    baselines and asyncperf still run, and every result has a min-max range around its median."""
    out = tmp_path / "vs.json"
    command = [sys.executable, "-m", "asyncperf", "bench", "pool", "--quick", "--loop", "asyncio"]
    proc = subprocess.run(
        [*command, "--vs", "aiojobs", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    suite = data["suites"]["pool"]
    contenders = {r["contender"] for r in suite["results"]}
    assert "aiojobs" in contenders
    assert not contenders & {"anyio", "aiometer"}
    assert {"floor", "queue_workers", "worker_pool"} <= contenders
    assert any("anyio is not in --vs" in note for note in suite["notes"])
    assert data["metadata"]["config"]["vs"] == ["aiojobs"]
    for result in suite["results"]:
        assert result["best"] <= result["value"] <= result["worst"], result


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope"], "SUITE: unknown suite 'nope'"),
        (["pool", "--vs", "aiojobs,nope"], "--vs: unknown peer 'nope'"),
        (["pool", "--repeat", "3"], "--repeat must be >= 5"),
        (["pool", "--jobs", "0"], "--jobs must be >= 1"),
    ],
)
def test_bench_rejects_bad_options_naming_them(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad options exit with status 2 before anything runs, and the error names the option."""
    from asyncperf.tools import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
