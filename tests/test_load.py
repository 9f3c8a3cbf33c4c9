"""asyncperf load: the runner's counts, the knee, argument sources, targets, outputs, the CLI.

Runs are tiny (a few tenths of a second, most on virtual time) and the tests
assert how calls are counted, never how fast they were.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from asyncperf.tools._command import UsageError
from asyncperf.tools.load import (
    COMMAND,
    ArgumentsError,
    FileArguments,
    GeneratorArguments,
    LatencySummary,
    LoadReport,
    StepResult,
    TargetError,
    as_call,
    find_knee,
    load_object,
    print_report,
    resolve_setup,
    resolve_target,
    run_load,
    write_chart,
    write_json,
)
from asyncperf.tools.load._command import parse_concurrency, parse_rate

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "load_target.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich writes plain text to the captured output, whatever the environment asks."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "120")


def assert_counts_add_up(report: LoadReport) -> None:
    """Every started call ended in exactly one outcome, and only ok calls were timed."""
    for step in report.steps:
        assert step.started == (
            step.ok + step.failed + step.timed_out + step.cancelled + step.unfinished
        ), step
        assert step.latency.count == step.ok
        assert step.offered == step.started + step.skipped
        assert step.consistent
    assert report.consistent


# -- the knee (a pure function) --------------------------------------------------------


def _step(level: float, ok: int, p99: float, *, elapsed: float = 1.0) -> StepResult:
    latency = LatencySummary(ok, p99 / 2, p99, p99, p99, p99, p99 / 2)
    if ok == 0:
        latency = LatencySummary.of([])
    return StepResult(
        mode="concurrency",
        level=level,
        elapsed=elapsed,
        started=ok,
        ok=ok,
        errors={},
        timed_out=0,
        cancelled=0,
        unfinished=0,
        skipped=0,
        warmup_calls=0,
        latency=latency,
    )


def test_knee_none_while_throughput_keeps_up() -> None:
    """Throughput x8 while p99 grows a little: no knee within the sweep."""
    steps = [_step(1, 100, 0.010), _step(8, 800, 0.011), _step(64, 6_000, 0.015)]
    assert find_knee(steps) is None


def test_knee_at_the_step_before_latency_outgrows_throughput() -> None:
    """p99 x4 while throughput x1.1 from 64 to 256: the knee is 64 (index 2)."""
    steps = [
        _step(1, 100, 0.010),
        _step(8, 800, 0.010),
        _step(64, 6_000, 0.012),
        _step(256, 6_600, 0.048),
    ]
    knee = find_knee(steps)
    assert knee is not None
    assert (knee.index, knee.level) == (2, 64)
    assert knee.p99_growth == pytest.approx(4.0)
    assert knee.throughput_growth == pytest.approx(1.1)


def test_knee_is_the_first_one() -> None:
    """Two places where latency outgrows throughput: the first is the knee."""
    steps = [_step(1, 100, 0.01), _step(2, 110, 0.05), _step(4, 120, 0.5), _step(8, 130, 5.0)]
    knee = find_knee(steps)
    assert knee is not None
    assert knee.index == 0


def test_knee_when_the_next_step_has_no_successful_call() -> None:
    """A step where every call failed is past the knee."""
    knee = find_knee([_step(1, 100, 0.01), _step(8, 800, 0.01), _step(64, 0, math.nan)])
    assert knee is not None
    assert knee.index == 1
    assert knee.throughput_growth == 0.0
    assert math.isnan(knee.p99_growth)


def test_knee_skips_steps_without_successful_calls() -> None:
    """A first step with no ok call has nothing to grow from; the sweep goes on after it."""
    assert find_knee([_step(1, 0, math.nan), _step(8, 800, 0.01), _step(64, 6_400, 0.01)]) is None
    knee = find_knee([_step(1, 0, math.nan), _step(8, 800, 0.01), _step(64, 800, 0.08)])
    assert knee is not None
    assert knee.level == 8


def test_knee_of_zero_latencies_and_short_sweeps() -> None:
    """Zero p99 that stays zero is no growth; one step, or none, has no knee."""
    assert find_knee([_step(1, 100, 0.0), _step(2, 200, 0.0)]) is None
    grown = find_knee([_step(1, 100, 0.0), _step(2, 200, 0.001)])
    assert grown is not None
    assert grown.p99_growth == math.inf
    assert find_knee([_step(1, 100, 0.01)]) is None
    assert find_knee([]) is None


def test_latency_summary() -> None:
    """Percentiles interpolate between ranks; no values give NaN and a count of 0."""
    summary = LatencySummary.of([float(v) for v in range(101, 0, -1)])  # 1..101, unsorted
    assert summary.count == 101
    assert (summary.p50, summary.p90, summary.p99, summary.max) == (51.0, 91.0, 100.0, 101.0)
    assert summary.mean == pytest.approx(51.0)
    empty = LatencySummary.of([])
    assert empty.count == 0
    assert math.isnan(empty.p99)
    assert empty.to_dict()["p99_ms"] is None


# -- the runner, on virtual time ---------------------------------------------------------


class Recorder:
    """A target that sleeps, then answers or raises as its argument says, and counts it."""

    def __init__(self, latency: float = 0.01) -> None:
        self.latency = latency
        self.calls = 0
        self.returned = 0
        self.raised: Counter[str] = Counter()
        self.arguments: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    async def __call__(self, kind: str = "ok", *, latency: float | None = None) -> str:
        self.calls += 1
        self.arguments.append(((kind,), {} if latency is None else {"latency": latency}))
        await asyncio.sleep(self.latency if latency is None else latency)
        if kind == "value":
            self.raised["ValueError"] += 1
            raise ValueError(kind)
        if kind == "key":
            self.raised["KeyError"] += 1
            raise KeyError(kind)
        if kind == "own-timeout":
            self.raised["TimeoutError"] += 1
            raise TimeoutError(kind)
        if kind == "cancel":
            self.raised["cancelled"] += 1
            raise asyncio.CancelledError
        self.returned += 1
        return kind


@pytest.mark.virtual_time
async def test_sweep_counts_add_up_and_match_the_target() -> None:
    """Outcomes by type equal what the target itself did; every call is accounted for."""
    target = Recorder()
    kinds = ["ok", "ok", "value", "ok", "key", "ok", "cancel"]
    report = await run_load(
        target,
        concurrency=[1, 3, 2],  # sorted by the runner
        duration=0.2,
        warmup=0.0,
        arguments=lambda: kinds,
    )
    assert [step.level for step in report.steps] == [1, 2, 3]
    assert_counts_add_up(report)
    # One probe call (the first item: "ok") before the steps, counted nowhere else.
    assert target.calls == 1 + sum(step.started for step in report.steps)
    assert target.returned == 1 + sum(step.ok for step in report.steps)
    by_type: Counter[str] = Counter()
    for step in report.steps:
        by_type.update(step.errors)
    assert dict(by_type) == {
        "ValueError": target.raised["ValueError"],
        "KeyError": target.raised["KeyError"],
    }
    assert by_type["ValueError"] > 0
    assert by_type["KeyError"] > 0
    assert sum(step.cancelled for step in report.steps) == target.raised["cancelled"] > 0
    for step in report.steps:
        # Each worker had a call in flight when the window closed.
        assert step.unfinished == step.level
        assert step.throughput == step.ok / step.elapsed
        assert step.warmup_calls == 0


@pytest.mark.virtual_time
async def test_arguments_reach_the_target_in_order_and_cycle() -> None:
    """Tuples are positional, dicts keywords; a finite source starts again."""
    target = Recorder(latency=0.01)
    items: list[object] = [("ok",), {"kind": "ok", "latency": 0.02}, "ok"]
    report = await run_load(
        target, concurrency=[1], duration=0.1, warmup=0.0, arguments=lambda: items
    )
    assert_counts_add_up(report)
    expected = [(("ok",), {}), (("ok",), {"latency": 0.02}), (("ok",), {})]
    assert len(target.arguments) > len(items)
    for index, seen in enumerate(target.arguments):
        assert seen == expected[index % 3]


@pytest.mark.virtual_time
async def test_warmup_calls_are_counted_apart() -> None:
    """Calls started during the warm-up are not in the step's counts."""
    target = Recorder(latency=0.01)
    report = await run_load(target, concurrency=[2], duration=0.1, warmup=0.05)
    step = report.steps[0]
    assert step.warmup_calls > 0
    assert_counts_add_up(report)
    assert target.calls == 1 + step.warmup_calls + step.started


@pytest.mark.virtual_time
async def test_timeouts_are_an_outcome_and_the_targets_own_timeout_is_an_error() -> None:
    """The runner's timeout counts as timed out; a TimeoutError the target raises is an error."""
    target = Recorder(latency=0.01)
    items = [("ok",), {"kind": "ok", "latency": 1.0}, ("own-timeout",)]
    report = await run_load(
        target, concurrency=[2], duration=0.5, warmup=0.0, timeout=0.05, arguments=lambda: items
    )
    assert_counts_add_up(report)
    step = report.steps[0]
    assert step.timed_out > 0
    assert step.errors.get("TimeoutError", 0) > 0
    assert set(step.errors) == {"TimeoutError"}
    assert step.latency.max <= 0.05


@pytest.mark.virtual_time
async def test_calls_running_at_the_end_are_unfinished() -> None:
    """A target slower than the step: each worker's one call ends as unfinished."""
    target = Recorder(latency=60.0)
    report = await run_load(target, concurrency=[1, 4], duration=0.1, warmup=0.0)
    assert_counts_add_up(report)
    for step in report.steps:
        assert (step.started, step.unfinished, step.ok) == (step.level, step.level, 0)
        assert math.isnan(step.latency.p99)
    assert report.knee is None
    assert "did not answer" in report.notes[0]


@pytest.mark.virtual_time
async def test_rate_step_starts_calls_on_schedule() -> None:
    """100/s for 0.5 s offers 50 calls, all started while few are in flight."""
    target = Recorder(latency=0.005)
    report = await run_load(target, rate=[100.0, 200.0], duration=0.5, warmup=0.1)
    assert report.mode == "rate"
    assert report.max_in_flight is not None
    assert_counts_add_up(report)
    for step in report.steps:
        assert abs(step.offered - step.level * 0.5) <= 1
        assert abs(step.warmup_calls - step.level * 0.1) <= 1
        assert step.skipped == 0
        # On virtual time the scheduler wakes exactly when a call is due.
        assert step.start_lag is not None
        assert step.start_lag.count == step.started
        assert step.start_lag.max < 1e-9
    assert target.calls == 1 + sum(s.started + s.warmup_calls for s in report.steps)


@pytest.mark.virtual_time
async def test_rate_step_skips_calls_beyond_max_in_flight() -> None:
    """With 10 calls outstanding at most, the others are skipped, and counted."""
    target = Recorder(latency=30.0)
    report = await run_load(
        target, rate=[100.0], duration=0.5, warmup=0.0, max_in_flight=10, timeout=60.0
    )
    step = report.steps[0]
    assert_counts_add_up(report)
    assert (step.started, step.unfinished) == (10, 10)
    assert step.skipped == step.offered - 10
    assert step.start_lag is not None
    assert step.start_lag.count == 10
    assert abs(step.offered - 50) <= 1
    # The probe plus every call started; a call cancelled before it ran never reached it.
    assert target.calls <= 1 + step.started


@pytest.mark.virtual_time
async def test_progress_bar_runs_and_is_gone_after() -> None:
    """With a console the runner shows progress while it runs and leaves no task behind."""
    out = io.StringIO()
    report = await run_load(
        Recorder(),
        concurrency=[1, 2],
        duration=0.3,
        warmup=0.0,
        console=Console(file=out, width=100),
    )
    assert_counts_add_up(report)


async def test_runs_on_real_loops() -> None:
    """A tiny sweep on asyncio and uvloop: the counts add up, the report names the loop."""
    target = Recorder(latency=0.001)
    report = await run_load(target, concurrency=[1, 4], duration=0.05, warmup=0.01)
    assert_counts_add_up(report)
    assert report.loop in ("asyncio", "uvloop")
    assert all(step.ok > 0 for step in report.steps)


@pytest.mark.virtual_time
async def test_failing_argument_source_stops_the_run() -> None:
    """A generator that raises mid-run: the run stops with ArgumentsError, no task is left."""

    def items() -> Iterator[str]:
        yield "ok"
        yield "ok"
        raise RuntimeError("the source broke")

    with pytest.raises(ArgumentsError, match="raised RuntimeError: the source broke"):
        await run_load(Recorder(), concurrency=[2], duration=1.0, warmup=0.0, arguments=items)
    with pytest.raises(ArgumentsError, match="raised RuntimeError"):
        await run_load(Recorder(), rate=[50.0], duration=1.0, warmup=0.0, arguments=items)


@pytest.mark.virtual_time
async def test_a_target_returning_no_awaitable_is_refused_on_its_first_call() -> None:
    """A plain function resolves (it could return an awaitable) but fails the probe."""

    def not_async() -> int:
        return 1

    with pytest.raises(TargetError, match="returned int, not an awaitable"):
        await run_load(not_async, concurrency=[1], duration=0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concurrency": [0]}, "concurrency must be >= 1"),
        ({"concurrency": []}, "concurrency must be a non-empty"),
        ({"rate": [0.0]}, "rate must be > 0"),
        ({"concurrency": [1], "rate": [1.0]}, "concurrency or rate, not both"),
        ({"duration": 0.0}, "duration must be > 0"),
        ({"warmup": -1.0}, "warmup must be >= 0"),
        ({"timeout": 0.0}, "timeout must be > 0"),
        ({"max_in_flight": 0}, "max_in_flight must be >= 1"),
    ],
)
async def test_run_load_rejects_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    """Bad settings raise ValueError naming the parameter, before any call."""
    target = Recorder()
    with pytest.raises(ValueError, match=message):
        await run_load(target, **kwargs)
    assert target.calls == 0


# -- argument sources ------------------------------------------------------------------


def test_as_call_shapes() -> None:
    """A tuple is positional, a dict keywords, anything else the one argument."""
    assert as_call((1, "a")) == ((1, "a"), {})
    assert as_call({"x": 1}) == ((), {"x": 1})
    assert as_call([1, 2]) == (([1, 2],), {})
    assert as_call(None) == ((None,), {})
    with pytest.raises(ArgumentsError, match="must be strings"):
        as_call({1: "x"})


def test_generator_source_cycles_and_reports_bad_items() -> None:
    """A finite source starts again; a bad item names the source and its position."""
    source = GeneratorArguments(lambda: [1, 2, 3], "gen")
    calls = source.calls()
    assert [next(calls)[0][0] for _ in range(7)] == [1, 2, 3, 1, 2, 3, 1]

    bad = GeneratorArguments(lambda: [1, {2: "x"}], "gen").calls()
    next(bad)
    with pytest.raises(ArgumentsError, match="gen, item 2: keyword argument names"):
        next(bad)


def test_generator_source_needs_fresh_items() -> None:
    """No items at all, or the same exhausted iterator again, is an error."""
    with pytest.raises(ArgumentsError, match="returned no argument items"):
        next(GeneratorArguments(list, "empty").calls())
    shared = iter([1, 2])
    calls = GeneratorArguments(lambda: shared, "shared").calls()
    assert [next(calls), next(calls)] == [((1,), {}), ((2,), {})]
    with pytest.raises(ArgumentsError, match="return a fresh iterable"):
        next(calls)
    with pytest.raises(ArgumentsError, match="must return an iterable"):
        next(GeneratorArguments(lambda: 5, "five").calls())  # type: ignore[arg-type,return-value]


def test_file_source(tmp_path: Path) -> None:
    """JSON lines: arrays positional, objects keywords, scalars one argument, blanks skipped."""
    path = tmp_path / "calls.jsonl"
    path.write_text('["a", 1]\n\n{"kind": "ok"}\n"single"\n42\n', encoding="utf-8")
    source = FileArguments(path)
    calls = source.calls()
    seen = [next(calls) for _ in range(5)]
    assert seen == [
        (("a", 1), {}),
        ((), {"kind": "ok"}),
        (("single",), {}),
        ((42,), {}),
        (("a", 1), {}),
    ]


def test_file_source_errors_name_the_file_and_line(tmp_path: Path) -> None:
    """A bad line gives its number; an empty or missing file is refused."""
    path = tmp_path / "bad.jsonl"
    path.write_text('["ok"]\n\n{"kind": \n', encoding="utf-8")
    with pytest.raises(ArgumentsError, match=r"bad\.jsonl, line 3: not JSON"):
        FileArguments(path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ArgumentsError, match="has no argument lines"):
        FileArguments(empty)
    with pytest.raises(ArgumentsError, match="cannot read"):
        FileArguments(tmp_path / "missing.jsonl")


# -- target resolution -----------------------------------------------------------------


@pytest.fixture
def user_module(tmp_path: Path) -> Iterator[Path]:
    """A user's module file, with a unique name, removed from sys.modules afterwards."""
    name = f"load_user_{uuid.uuid4().hex}"
    path = tmp_path / f"{name}.py"
    path.write_text(
        textwrap.dedent(
            """
            import contextlib

            import asyncperf as ap

            NOT_CALLABLE = 3
            calls = []

            async def handle(x=0):
                calls.append(x)
                return x

            async def stream():
                yield 1

            def items():
                return [(1,), (2,)]

            class Client:
                async def method(self):
                    return 1

                @staticmethod
                async def static():
                    return 2

            runtime = ap.Runtime(max_workers=2)

            @runtime.handler
            async def bounded(x=0):
                calls.append(x)
                return x

            @contextlib.asynccontextmanager
            async def started():
                calls.append("setup")
                yield
                calls.append("teardown")
            """
        ),
        encoding="utf-8",
    )
    yield path
    for key, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == str(path):
            del sys.modules[key]


def test_resolve_target_from_a_file_and_a_module(user_module: Path) -> None:
    """A file path or a dotted module, and an attribute path in it."""
    target = resolve_target(f"{user_module}:handle")
    assert target.name == f"{user_module}:handle"
    assert target.function.__name__ == "handle"
    assert resolve_target(f"{user_module}:Client.static").function.__name__ == "static"
    assert resolve_target("asyncio:sleep").function is asyncio.sleep
    # The same file is one module, whoever names it.
    assert load_object(f"{user_module}:calls") is load_object(f"{user_module}:calls")
    bounded = resolve_target(f"{user_module}:bounded").function
    assert getattr(bounded, "runtime", None) is load_object(f"{user_module}:runtime")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "must be MODULE:NAME"),
        ("{path}:", "must be MODULE:NAME"),
        ("no_such_module_for_load:handle", "module 'no_such_module_for_load' not found"),
        ("missing_dir/nothing.py:handle", "file 'missing_dir/nothing.py' not found"),
        ("{path}:absent", "has no attribute 'absent'"),
        ("{path}:Client.absent", "has no attribute 'absent'"),
        ("{path}:NOT_CALLABLE", "is an int, not an async function"),
        ("{path}:stream", "async generator function"),
        ("{path}:Client", "is the class Client"),
        ("{path}:Client.method", "is an instance method"),
    ],
)
def test_resolve_target_errors(user_module: Path, spec: str, message: str) -> None:
    """Each way a target can be wrong has its own clear message."""
    with pytest.raises(TargetError, match=message):
        resolve_target(spec.format(path=user_module))


def test_import_errors_inside_the_users_module(tmp_path: Path) -> None:
    """A module that fails to import is reported as such, not as 'not found'."""
    broken = tmp_path / "load_broken_module.py"
    broken.write_text("import no_such_dependency_for_load\n", encoding="utf-8")
    with pytest.raises(TargetError, match=r"importing .* failed: ModuleNotFoundError"):
        resolve_target(f"{broken}:handle")
    raising = tmp_path / "load_raising_module.py"
    raising.write_text("raise RuntimeError('boom')\n", encoding="utf-8")
    with pytest.raises(TargetError, match="RuntimeError: boom"):
        resolve_target(f"{raising}:handle")
    assert "load_raising_module" not in sys.modules


def test_resolve_setup(user_module: Path) -> None:
    """An async context manager, or a function returning one; anything else is refused."""
    runtime = load_object(f"{user_module}:runtime")
    assert resolve_setup(f"{user_module}:runtime")() is runtime
    manager = resolve_setup(f"{user_module}:started")()
    assert hasattr(manager, "__aenter__")
    with pytest.raises(TargetError, match="not an async context manager"):
        resolve_setup(f"{user_module}:NOT_CALLABLE")
    with pytest.raises(TargetError, match="returned a list, not an async context manager"):
        resolve_setup(f"{user_module}:items")()


def test_generator_source_from_spec(user_module: Path) -> None:
    """--args names a plain function; an async one is refused."""
    source = GeneratorArguments.from_spec(f"{user_module}:items")
    calls = source.calls()
    assert [next(calls) for _ in range(3)] == [((1,), {}), ((2,), {}), ((1,), {})]
    with pytest.raises(TargetError, match="is an async function"):
        GeneratorArguments.from_spec(f"{user_module}:handle")


# -- outputs ---------------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_report_json_table_and_chart(tmp_path: Path) -> None:
    """The JSON has every step and outcome; the table names them; the chart is a PNG."""
    kinds = ["ok", "ok", "ok", "value"]
    report = await run_load(
        Recorder(), concurrency=[1, 4], duration=0.2, warmup=0.0, arguments=lambda: kinds
    )
    data = json.loads(report.to_json())
    assert data["tool"] == "asyncperf load"
    assert data["mode"] == "concurrency"
    assert data["settings"]["levels"] == [1, 4]
    assert data["consistent"] is True
    assert len(data["steps"]) == 2
    for step, raw in zip(report.steps, data["steps"], strict=True):
        assert raw["started"] == (
            raw["ok"] + raw["failed"] + raw["timed_out"] + raw["cancelled"] + raw["unfinished"]
        )
        assert raw["failed"] == sum(raw["errors"].values()) == step.failed
        assert raw["errors"] == {"ValueError": step.errors["ValueError"]}
        assert set(raw["latency"]) == {
            "count",
            "p50_ms",
            "p90_ms",
            "p95_ms",
            "p99_ms",
            "max_ms",
            "mean_ms",
        }
        assert raw["latency"]["count"] == raw["ok"]
        assert raw["start_lag"] is None  # a concurrency step
    assert data["knee"] is None or data["knee"]["level"] in (1, 4)

    written = write_json(report, tmp_path / "out" / "load.json")
    assert json.loads(written.read_text(encoding="utf-8")) == data

    out = io.StringIO()
    print_report(report, Console(file=out, width=120))
    text = out.getvalue()
    assert "ok/s" in text
    assert "p99" in text
    assert "ValueError" in text
    assert "knee" in text

    pytest.importorskip("matplotlib")
    chart = write_chart(report, tmp_path / "out" / "load.png")
    assert chart is not None
    assert chart.read_bytes().startswith(PNG_MAGIC)


# -- the command line ------------------------------------------------------------------


def load_main(argv: list[str]) -> int:
    """`asyncperf load ARGV`, as the CLI runs it: a usage error exits with status 2."""
    parser = argparse.ArgumentParser(prog="asyncperf load")
    COMMAND.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return COMMAND.run(args)
    except UsageError as exc:
        parser.error(str(exc))


TINY = ["--duration", "0.05", "--warmup", "0.01", "--no-progress", "--loop", "asyncio"]


def test_cli_sweep_on_the_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The example handler with its argument generator: table, JSON and PNG."""
    json_path, chart_path = tmp_path / "load.json", tmp_path / "load.png"
    status = load_main(
        [
            f"{EXAMPLE}:handle",
            "--args",
            f"{EXAMPLE}:prompts",
            "--concurrency",
            "4,1",
            "--json",
            str(json_path),
            "--chart",
            str(chart_path),
            *TINY,
        ]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert "throughput and latency" in out
    assert "what became of the calls" in out
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert data["arguments"] == f"{EXAMPLE}:prompts"
    assert [step["level"] for step in data["steps"]] == [1, 4]
    assert data["consistent"] is True
    assert all(step["ok"] > 0 for step in data["steps"])
    if chart_path.exists():
        assert chart_path.read_bytes().startswith(PNG_MAGIC)
    else:
        assert "matplotlib is not installed" in out


def test_cli_rate_with_args_file_and_out_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fixed rate, arguments from JSON lines, outputs under --out."""
    lines = tmp_path / "calls.jsonl"
    lines.write_text('["hello", 1]\n{"prompt": "hi", "size": 2}\n"plain"\n', encoding="utf-8")
    status = load_main(
        [
            f"{EXAMPLE}:handle",
            "--rate",
            "200/s,6000/min",
            "--args-file",
            str(lines),
            "--max-in-flight",
            "50",
            "--timeout",
            "1",
            "--out",
            str(tmp_path / "out"),
            *TINY,
        ]
    )
    assert status == 0
    assert "skipped" in capsys.readouterr().out
    data = json.loads((tmp_path / "out" / "load.json").read_text(encoding="utf-8"))
    assert data["mode"] == "rate"
    assert [step["level"] for step in data["steps"]] == [100.0, 200.0]
    assert data["settings"]["max_in_flight"] == 50
    for step in data["steps"]:
        assert step["offered"] == step["started"] + step["skipped"]
        assert step["start_lag"]["count"] <= step["started"]
        assert step["consistent"] is True


def test_cli_with_a_runtime_handler_and_setup(
    user_module: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An asyncperf handler, its runtime entered by --setup; a factory works as well."""
    status = load_main(
        [f"{user_module}:bounded", "--setup", f"{user_module}:runtime", "--concurrency", "2", *TINY]
    )
    assert status == 0
    calls = load_object(f"{user_module}:calls")
    assert len(calls) > 1  # the probe and the step's calls
    assert "RuntimeNotRunning" not in capsys.readouterr().out

    calls.clear()
    status = load_main(
        [f"{user_module}:handle", "--setup", f"{user_module}:started", "--concurrency", "1", *TINY]
    )
    assert status == 0
    assert calls[0] == "setup"
    assert calls[-1] == "teardown"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--concurrency", "0"], "--concurrency values must be >= 1"),
        (["--concurrency", "1,x"], "--concurrency must be a comma-separated list"),
        (["--rate", "500"], "--rate must be calls per second or per minute"),
        (["--rate", "500/h"], "--rate must be calls per second or per minute"),
        (["--rate", "0/s"], "--rate must be > 0"),
        (
            ["--concurrency", "1", "--rate", "5/s"],
            "--rate: not allowed with argument --concurrency",
        ),
        (["--duration", "0"], "--duration must be > 0"),
        (["--duration", "nan"], "--duration must be > 0"),
        (["--duration", "x"], "--duration: invalid float value"),
        (["--warmup", "-1"], "--warmup must be >= 0"),
        (["--timeout", "0"], "--timeout must be > 0"),
        (["--max-in-flight", "5"], "--max-in-flight applies to --rate only"),
        (["--rate", "5/s", "--max-in-flight", "0"], "--max-in-flight must be >= 1"),
        (["--args", "a:b", "--args-file", "f"], "--args-file: not allowed with argument --args"),
        (["--chart", "x.jpg"], "--chart must name a .png file"),
        (["--loop", "trio"], "--loop: invalid choice"),
    ],
)
def test_cli_rejects_bad_options_before_any_work(
    user_module: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """A bad option exits with status 2 and names it; the user's module is not even imported."""
    with pytest.raises(SystemExit) as exited:
        load_main([f"{user_module}:handle", *argv])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert user_module.stem not in sys.modules


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{path}:absent"], "MODULE:HANDLER: '{path}' has no attribute 'absent'"),
        (["{path}"], "must be MODULE:NAME"),
        (["{path}:handle", "--args", "{path}:absent"], "--args: "),
        (["{path}:handle", "--args-file", "{dir}/missing.jsonl"], "--args-file: cannot read"),
        (["{path}:handle", "--args-file", "{dir}/bad.jsonl"], "bad.jsonl, line 2: not JSON"),
        (["{path}:handle", "--setup", "{path}:NOT_CALLABLE"], "--setup: "),
        (["{path}:handle", "--setup", "{path}:items"], "--setup: "),
    ],
)
def test_cli_rejects_bad_targets_and_sources(
    user_module: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Target, argument and setup problems are usage errors naming the option."""
    (user_module.parent / "bad.jsonl").write_text('["ok"]\nnot json\n', encoding="utf-8")
    values = {"path": str(user_module), "dir": str(user_module.parent)}
    with pytest.raises(SystemExit) as exited:
        load_main([arg.format(**values) for arg in argv] + TINY)
    assert exited.value.code == 2
    assert message.format(**values) in capsys.readouterr().err
    assert load_object(f"{user_module}:calls") == []  # the handler was never called


def test_parse_helpers() -> None:
    """Lists are sorted and deduplicated; rates per minute become per second."""
    assert parse_concurrency("64, 1,8,8") == (1, 8, 64)
    assert parse_rate("30/min, 500/s,0.5/sec") == (0.5, 500.0)
