import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import overload

REPO = Path(__file__).resolve().parent.parent
SUITES = {"pool", "queue", "memory", "overload", "cache", "hit_ratio", "disk", "scaling"}
STRATEGIES = {"gather_semaphore", "pool_static", "pool_overload"}


def test_bench_quick_run_writes_every_suite(tmp_path: Path) -> None:
    """A --quick run of all suites exits 0 and writes a positive figure for every contender."""
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "bench", "--quick", "--suite", "all", "--loop", "asyncio"]
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
    for name in SUITES - {"overload", "hit_ratio"}:
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
    _check_overload(data["suites"]["overload"])


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
    headline = {r["contender"]: r for r in results if r["case"] == "overload"}
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
