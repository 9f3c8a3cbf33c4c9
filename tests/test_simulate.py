"""The session simulator: workload, upstream, strategies, accounting, output and CLI.

Runs are tiny (well under a second of simulated traffic per strategy); the
assertions are on structure and internal consistency, never on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from asyncperf.testing import VirtualClock
from asyncperf.tools._command import UsageError
from asyncperf.tools.simulate import (
    CLASSES,
    COMMAND,
    OUTCOMES,
    PHASES,
    STRATEGIES,
    Recorder,
    SimulationConfig,
    Upstream,
    UpstreamError,
    UpstreamRateLimited,
    check_run,
    compute_bars,
    make_workload,
    run_strategy,
    simulate,
    write_chart,
    write_json,
)


def tiny(**changes: Any) -> SimulationConfig:
    """A run of about a second per strategy, in this process."""
    values: dict[str, Any] = {
        "sessions": 120,
        "warmup_seconds": 0.1,
        "steady_seconds": 0.2,
        "overload_seconds": 0.3,
        "recovery_seconds": 0.2,
        "slo": 0.3,
        "timeout": 0.6,
        "prompts": 500,
        "payload": 500,
        "isolate": False,
        "disk_cache": False,
        "sample_interval": 0.02,
        "window": 0.05,
    }
    values.update(changes)
    return SimulationConfig(**values)


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    """One tiny simulation of the three strategies in this process (shared by the tests)."""
    return simulate(tiny(disk_cache=True))


# -- the workload -------------------------------------------------------------------------


def test_workload_is_deterministic_for_a_seed_and_differs_across_seeds() -> None:
    config = tiny()
    first, again = make_workload(config), make_workload(config)
    other = make_workload(config.replace(seed=2))
    fields = ("send", "session", "klass", "prompt", "payload", "base_latency", "fails", "phase")
    for name in fields:
        assert getattr(first, name) == getattr(again, name), name
    assert first.send != other.send
    assert first.prompt != other.prompt


def test_workload_is_in_send_order_and_within_its_phases() -> None:
    workload = make_workload(tiny())
    assert workload.send == sorted(workload.send)
    for index, sent in enumerate(workload.send):
        phase = workload.phases[workload.phase[index]]
        assert phase.start <= sent < phase.end
        assert workload.session[index] < phase.active_sessions
        assert workload.klass[index] == workload.session_class[workload.session[index]]
    assert [p.name for p in workload.phases] == list(PHASES)


def test_phases_offer_their_intended_rates() -> None:
    """Counted from the schedule: each phase offers load x capacity messages per second."""
    config = SimulationConfig(
        sessions=4_000,
        warmup_seconds=2.0,
        steady_seconds=2.0,
        overload_seconds=2.0,
        recovery_seconds=2.0,
    )
    workload = make_workload(config)
    for index, phase in enumerate(workload.phases):
        intended = phase.load * config.capacity
        assert workload.offered_rate(index) == pytest.approx(intended, rel=0.1), phase.name
    overload = workload.phases[PHASES.index("overload")]
    assert overload.active_sessions == config.sessions  # the busiest phase has them all
    assert config.think_time == pytest.approx(config.sessions / (2.5 * config.capacity))


def test_prompts_repeat_and_classes_follow_the_mix() -> None:
    workload = make_workload(tiny(sessions=2_000, prompts=1_000))
    # Zipf: the most popular prompt comes far more often than a uniform draw would bring it.
    uniform = len(workload.prompt) / 1_000
    assert workload.prompt.count(0) > 10 * uniform
    assert workload.prompt.count(0) > workload.prompt.count(1) > workload.prompt.count(50)
    shares = [workload.session_class.count(k) / 2_000 for k in range(len(CLASSES))]
    assert shares == pytest.approx([0.1, 0.3, 0.6], abs=0.04)


# -- the upstream (virtual time) ----------------------------------------------------------


@pytest.mark.virtual_time
async def test_upstream_serves_slots_at_base_latency_and_stretches_beyond(
    clock: VirtualClock,
) -> None:
    """Two slots: two calls take 1 s; four calls at once take 2 s each (processor sharing)."""
    upstream = Upstream(2, None, 1, clock)
    start = clock.now()
    await asyncio.gather(*(upstream.call("x", 1.0, False) for _ in range(2)))
    assert clock.now() - start == pytest.approx(1.0, abs=0.002)
    start = clock.now()
    done: list[float] = []

    async def call() -> None:
        await upstream.call("x", 1.0, False)
        done.append(clock.now() - start)

    await asyncio.gather(*(call() for _ in range(4)))
    assert done == pytest.approx([2.0] * 4, abs=0.002)
    assert upstream.statistics().peak_in_flight == 4
    assert upstream.stretch(4) == 2.0


@pytest.mark.virtual_time
async def test_upstream_speeds_up_when_a_caller_gives_up(clock: VirtualClock) -> None:
    """Four calls on two slots; one cancelled at 0.5 s: the rest finish sooner than 2 s."""
    upstream = Upstream(2, None, 1, clock)
    start = clock.now()
    tasks = [asyncio.create_task(upstream.call("x", 1.0, False)) for _ in range(4)]
    await clock.sleep(0.5)
    tasks[0].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # 0.5 s at half speed (0.25 of the work done), then 0.75 left at 2/3 speed: 1.625 s.
    assert clock.now() - start == pytest.approx(1.625, abs=0.003)
    stats = upstream.statistics()
    assert (stats.completed, stats.cancelled, stats.in_flight) == (3, 1, 0)


@pytest.mark.virtual_time
async def test_upstream_rate_limit_answers_429_at_once(clock: VirtualClock) -> None:
    """Rate 10/s with a burst of 2: of five calls at once, two are served and three get 429."""
    upstream = Upstream(10, 10.0, 2, clock)
    start = clock.now()
    results = await asyncio.gather(
        *(upstream.call("x", 0.1, False) for _ in range(5)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, UpstreamRateLimited)]
    assert len(refused) == 3
    assert sum(isinstance(r, str) for r in results) == 2
    assert upstream.statistics().rate_limited == 3
    # After 1/rate seconds one more is admitted.
    await clock.sleep(0.1)
    assert isinstance(await upstream.call("x", 0.1, False), str)
    assert clock.now() - start == pytest.approx(0.3, abs=0.002)


@pytest.mark.virtual_time
async def test_upstream_errors_after_its_latency(clock: VirtualClock) -> None:
    upstream = Upstream(1, None, 1, clock)
    start = clock.now()
    with pytest.raises(UpstreamError):
        await upstream.call("x", 0.5, True)
    assert clock.now() - start == pytest.approx(0.5, abs=0.002)
    assert upstream.statistics().failed == 1


def test_upstream_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="slots"):
        Upstream(0, None, 1, VirtualClock())
    with pytest.raises(ValueError, match="rate"):
        Upstream(1, 0.0, 1, VirtualClock())


# -- accounting ---------------------------------------------------------------------------


def test_recorder_refuses_to_settle_a_message_twice() -> None:
    recorder = Recorder(2, 0.0)
    recorder.settle(0, 0, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="settled twice"):
        recorder.settle(0, 1, 2.0, 2.0)
    with pytest.raises(RuntimeError, match="never settled"):
        recorder.counts()


@pytest.mark.virtual_time
@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_every_message_settles_once_on_virtual_time(
    strategy: str, clock: VirtualClock
) -> None:
    """Each strategy on virtual time: every message ends in exactly one outcome."""
    config = tiny(sessions=200)
    workload = make_workload(config)
    run = await run_strategy(config, workload, strategy, clock=clock)
    result = run.result
    assert all(outcome >= 0 for outcome in run.recorder.outcome)
    assert sum(result["outcomes"].values()) == len(workload) == result["messages"]
    assert all(check.passed for check in check_run(workload, result)), check_run(workload, result)
    # The overload phase pushes the upstream past its capacity in every strategy's view.
    assert result["classes"]["all"]["overload"]["messages"] > 0


def test_simulation_accounts_for_every_message(result: dict[str, Any]) -> None:
    assert result["consistent"], [c for c in result["checks"] if not c["passed"]]
    assert list(result["strategies"]) == list(STRATEGIES)
    for name, run in result["strategies"].items():
        assert sum(run["outcomes"].values()) == result["messages"], name
        classes = run["classes"]
        for phase in ("all", *PHASES):
            whole = classes["all"][phase]
            assert sum(classes[k][phase]["messages"] for k in CLASSES) == whole["messages"]
            for outcome in OUTCOMES:
                assert (
                    sum(classes[k][phase]["outcomes"][outcome] for k in CLASSES)
                    == whole["outcomes"][outcome]
                )
        assert sum(classes["all"][p]["messages"] for p in PHASES) == result["messages"]
        assert classes["all"]["all"]["outcomes"] == run["outcomes"]


def test_only_asyncperf_rejects_or_drops_and_only_caches_hit(result: dict[str, Any]) -> None:
    """Refusals come from the runtime; the naive strategy has no cache to hit."""
    strategies = result["strategies"]
    for name in ("naive", "semaphore"):
        assert strategies[name]["outcomes"]["rejected"] == 0
        assert strategies[name]["outcomes"]["dropped"] == 0
    assert strategies["naive"]["cache_hit_ratio"] == 0
    assert strategies["semaphore"]["cache_hit_ratio"] > 0
    # The runtime's own counters agree with what the callers saw.
    handlers = strategies["asyncperf"]["details"]["handlers"]
    outcomes = strategies["asyncperf"]["outcomes"]
    assert sum(h["rejected"] for h in handlers.values()) == outcomes["rejected"]
    assert sum(h["dropped"] for h in handlers.values()) == outcomes["dropped"]
    assert sum(h["calls"] for h in handlers.values()) == result["messages"]


def test_json_has_the_documented_structure(result: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "out" / "simulation.json"
    write_json(result, path)
    data = json.loads(path.read_text())
    for key in (
        "schema",
        "config",
        "seed",
        "loop",
        "capacity",
        "think_time",
        "phases",
        "strategies",
        "checks",
        "consistent",
        "bars",
        "definitions",
    ):
        assert key in data, key
    assert SimulationConfig.from_json(data["config"]) == tiny(disk_cache=True)
    assert [p["name"] for p in data["phases"]] == list(PHASES)
    for run in data["strategies"].values():
        for key in ("peak_rss_bytes", "peak_tasks", "cpu_per_1000", "cache_hit_ratio", "series"):
            assert key in run, key
        figures = run["classes"]["high"]["overload"]
        for key in (
            "completed_per_s",
            "goodput_per_s",
            "latency_p50",
            "latency_p95",
            "latency_p99",
            "outcomes",
        ):
            assert key in figures, key
        series = run["series"]
        assert len(series["t"]) == len(series["latency_p99"]) == len(series["completed_per_s"])
    names = {(b["name"], b["peer"]) for b in data["bars"]}
    assert ("goodput", "naive") in names
    assert ("high-priority p99", "semaphore") in names
    assert all(isinstance(b["passed"], bool) for b in data["bars"])


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_chart_is_a_png(result: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "simulation.png"
    assert write_chart(result, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chart_is_skipped_without_matplotlib(
    result: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    path = tmp_path / "simulation.png"
    assert not write_chart(result, path)
    assert not path.exists()


def test_bars_compare_asyncperf_with_each_peer() -> None:
    def run(goodput: float, p99: float | None, rss: int) -> dict[str, Any]:
        overload = {"goodput_per_s": goodput, "latency_p99": p99, "cpu_per_1000": 1.0}
        return {
            "classes": {"all": {"overload": overload}, "high": {"overload": overload}},
            "peak_rss_bytes": rss,
            "peak_tasks": 10,
        }

    bars = compute_bars({"naive": run(100, 2.0, 100), "asyncperf": run(150, 0.5, 80)})
    by_name = {bar.name: bar for bar in bars}
    assert {bar.peer for bar in bars} == {"naive"}
    assert by_name["goodput"].ratio == 1.5
    assert by_name["goodput"].passed
    assert by_name["high-priority p99"].ratio == 0.25
    assert by_name["high-priority p99"].passed
    assert by_name["peak RSS"].ratio == 0.8
    assert not by_name["peak RSS"].passed
    missing = compute_bars({"naive": run(100, 2.0, 100), "asyncperf": run(150, None, 80)})
    assert not next(b for b in missing if b.name == "high-priority p99").passed
    assert compute_bars({"naive": run(1, 1, 1)}) == []


# -- child processes ----------------------------------------------------------------------


def test_child_process_path() -> None:
    """Isolated: the strategy runs in a fresh interpreter, and its result comes back whole."""
    progress: list[tuple[str, int, int]] = []
    config = tiny(isolate=True, strategies=("naive",))
    data = simulate(config, progress=lambda *args: progress.append(args))
    assert data["isolated"]
    assert data["consistent"]
    run = data["strategies"]["naive"]
    assert sum(run["outcomes"].values()) == data["messages"]
    assert run["peak_rss_bytes"] > 0
    assert run["max_rss_bytes"] > 0
    assert progress
    assert progress[-1] == ("naive", data["messages"], data["messages"])


# -- the command line ---------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="asyncperf simulate")
    COMMAND.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--sessions", "0"], "--sessions"),
        (["--overload", "-1"], "--overload"),
        (["--slo", "0"], "--slo"),
        (["--timeout", "0.1", "--slo", "0.5"], "--timeout"),
        (["--slots", "0"], "--slots"),
        (["--error-rate", "1.5"], "--error-rate"),
        (["--rate-limit", "nan"], "--rate-limit"),
        (["--overload-seconds", "0"], "--overload-seconds"),
        (["--mix", "1,2"], "--mix"),
        (["--mix", "a,b,c"], "--mix"),
        (["--strategies", "naive,fancy"], "--strategies"),
        (["--strategies", "naive,naive"], "--strategies"),
        (["--window", "0.01", "--sample-interval", "0.05"], "--window"),
    ],
)
def test_cli_rejects_bad_options_naming_them(argv: list[str], option: str) -> None:
    with pytest.raises(UsageError, match=f"^{option} "):
        COMMAND.run(parse(*argv))


def test_cli_rejects_uvloop_when_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    with pytest.raises(UsageError, match="--loop uvloop"):
        COMMAND.run(parse("--loop", "uvloop"))


def test_cli_rejects_an_output_that_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(UsageError, match="--out"):
        COMMAND.run(parse("--quick", "--out", str(file)))


def test_config_rejects_bad_values_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"^sessions must be"):
        SimulationConfig(sessions=0)
    with pytest.raises(ValueError, match=r"^strategies must be"):
        SimulationConfig(strategies=("naive", "other"))
    assert math.isclose(SimulationConfig(slo=2).client_timeout, 10.0)


def test_cli_runs_and_writes_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    args = parse(
        "--quick",
        "--in-process",
        "--no-disk-cache",
        "--sessions",
        "100",
        "--warmup-seconds",
        "0.1",
        "--steady-seconds",
        "0.1",
        "--overload-seconds",
        "0.2",
        "--recovery-seconds",
        "0.1",
        "--slo",
        "0.2",
        "--timeout",
        "0.4",
        "--strategies",
        "naive,asyncperf",
        "--loop",
        "asyncio",
        "--no-chart",
        "--out",
        str(tmp_path),
    )
    assert COMMAND.run(args) == 0
    out = capsys.readouterr().out
    assert "consistency: OK" in out
    assert "goodput" in out
    data = json.loads((tmp_path / "simulation.json").read_text())
    assert list(data["strategies"]) == ["naive", "asyncperf"]
    assert data["loop"] == "asyncio"
    assert not (tmp_path / "simulation.png").exists()


# -- the bench suite ----------------------------------------------------------------------


def test_bench_sessions_suite_records_the_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``sessions`` suite runs each strategy in a child process and records the bars."""
    from rich.console import Console

    from asyncperf.tools.bench import sessions
    from asyncperf.tools.bench._harness import Config, Harness

    monkeypatch.setattr(
        sessions, "scenario", lambda config: tiny(sessions=80, isolate=True, prompts=200)
    )
    config = Config(
        jobs=100, repeat=1, quick=True, loops=("asyncio",), memory_items=10, queue_depths=(1,)
    )
    harness = Harness(config, Console(width=160, file=io.StringIO()))
    plan = sessions.SUITE.plan(config, "asyncio")
    assert [case.contender for case in plan.cases] == list(STRATEGIES)
    results = harness.run_cases(sessions.NAME, plan.cases, "asyncio")
    sessions.SUITE.report(harness, "asyncio", results)
    bars = harness.bars[sessions.NAME]
    assert len(bars) == 7
    assert {bar.contender for bar in bars} == {"asyncperf"}
    assert all(bar.loop == "asyncio" for bar in bars)
    recorded = {(r.contender, r.case) for r in harness.results[sessions.NAME]}
    assert ("naive", "overload/peak_tasks") in recorded
    assert ("asyncperf", "sessions") in recorded
