"""Layer 6: find_leaks, asyncperf.testing's check_leaks, and `asyncperf leaks` on the CLI."""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import linecache
import re
import sys
import textwrap
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncperf.observability import LeakReport, find_leaks
from asyncperf.observability._leaks import theil_sen_slope
from asyncperf.testing._leaks import check_leaks
from asyncperf.tools._command import UsageError
from asyncperf.tools.leaks import COMMAND

THIS_FILE = str(Path(__file__).resolve())


def assert_consistent(report: LeakReport, rounds: int) -> None:
    """Every series has the baseline and one value per round; the verdicts agree."""
    for trend in (report.traced_bytes, report.traced_blocks, report.tasks):
        assert len(trend.values) == rounds + 1
        assert trend.rounds == rounds
        assert 0 <= trend.rounds_grown <= rounds
        assert trend.total_growth == trend.values[-1] - trend.values[0]
    assert report.leaked == (report.memory_leaked or report.tasks_leaked)
    assert report.leaked == bool(report.reasons)
    assert json.loads(json.dumps(report.as_dict()))["leaked"] == report.leaked
    if not tracemalloc.is_tracing():
        assert report.started_tracing  # and so it stopped tracing again


# -- leaks that must be found ----------------------------------------------------------

LEAKED: list[object] = []


async def leak_one_object() -> None:
    LEAKED.append(object())


async def leak_one_small_dict() -> None:
    LEAKED.append({"round": len(LEAKED)})


@pytest.mark.parametrize("factory", [leak_one_object, leak_one_small_dict])
async def test_one_object_per_round_is_found_within_20_rounds(
    factory: Callable[[], Awaitable[None]],
) -> None:
    # Several runs in a row: the verdict must not depend on luck.
    for _ in range(3):
        LEAKED.clear()
        report = await find_leaks(factory, rounds=20)
        assert_consistent(report, 20)
        assert report.leaked
        assert report.memory_leaked
        assert not report.tasks_leaked
        assert report.traced_blocks.growing
        assert report.traced_blocks.rounds_grown >= 18
        # One block per object (a dict with its keys table is two).
        assert 1.0 <= report.traced_blocks.per_round <= 2.0
        # The line that keeps the objects is the site that grew, one block per round.
        top = report.sites[0]
        assert top.filename == THIS_FILE
        assert "LEAKED.append" in top.source
        assert top.count_diff >= 20
        assert "LEAK FOUND" in report.format()
        assert f"{THIS_FILE}:{top.lineno}" in report.format()
    LEAKED.clear()


async def test_a_task_left_pending_each_round_is_found_by_the_task_count() -> None:
    pending: list[asyncio.Task[None]] = []

    async def never_finishes() -> None:
        await asyncio.Event().wait()

    async def leak_task() -> None:
        pending.append(asyncio.create_task(never_finishes()))

    try:
        report = await find_leaks(leak_task, rounds=10, warmup=2)
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    assert_consistent(report, 10)
    assert report.tasks_leaked
    assert report.leaked
    assert report.tasks.values == tuple(range(2, 13))  # the 2 warm-up tasks are in the baseline
    assert report.tasks.per_round == 1.0
    # Only the tasks created during the judged rounds, by their coroutine.
    assert [(group.coroutine, group.count) for group in report.live_tasks] == [
        (
            "test_a_task_left_pending_each_round_is_found_by_the_task_count.<locals>.never_finishes",
            10,
        )
    ]
    assert report.live_tasks[0].location.startswith(THIS_FILE)
    if report.frames >= 4:  # (python -X tracemalloc keeps one frame: asyncio's own line)
        # Where the tasks were created: this file's create_task line, not asyncio's.
        created_file, _, created_line = report.live_tasks[0].created_at.rpartition(":")
        assert created_file == THIS_FILE
        assert "create_task(never_finishes())" in linecache.getline(THIS_FILE, int(created_line))
        # The memory the tasks hold is charged to this file too.
        assert report.sites[0].filename == THIS_FILE
    assert "live tasks grew" in report.format()


async def test_check_leaks_fails_with_the_report() -> None:
    LEAKED.clear()
    with pytest.raises(AssertionError) as failed:
        await check_leaks(leak_one_object, rounds=20)
    message = str(failed.value)
    assert message.startswith("leak check: LEAK FOUND")
    assert "LEAKED.append(object())" in message
    LEAKED.clear()


# -- clean code that must not be flagged -----------------------------------------------


async def churn() -> None:
    """Allocates and frees a lot: lists, dicts, strings, bytes."""
    data = [bytes(64) for _ in range(2_000)]
    table = {index: str(index) * 3 for index in range(500)}
    await asyncio.sleep(0)
    del data, table


BOUNDED: dict[int, str] = {}
CALLS = [0]


async def bounded_cache() -> None:
    """A cache that fills to 4 entries (during warm-up and the first rounds), then replaces."""
    CALLS[0] += 1
    BOUNDED[CALLS[0] % 4] = f"value-{CALLS[0] % 4}" * 10


RECENT: collections.deque[object] = collections.deque(maxlen=4)


async def recent_results() -> None:
    """A ring of the last 4 results: full after the first rounds, then each round replaces one."""
    RECENT.append({"result": object()})


async def tasks_created_and_finished() -> None:
    async def step(value: int) -> int:
        await asyncio.sleep(0)
        return value

    tasks = [asyncio.create_task(step(index)) for index in range(20)]
    assert sum(await asyncio.gather(*tasks)) == 190


BACKGROUND: set[asyncio.Task[None]] = set()


async def fire_and_forget() -> None:
    """A task kept in a set until its done-callback drops it (the asyncio docs' pattern)."""
    task = asyncio.create_task(asyncio.sleep(0))
    BACKGROUND.add(task)
    task.add_done_callback(BACKGROUND.discard)
    await asyncio.sleep(0)


async def errors_raised_and_caught() -> None:
    async def boom() -> None:
        raise RuntimeError("expected")

    results = await asyncio.gather(*(boom() for _ in range(10)), return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)


async def queue_producer_consumer() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=4)

    async def produce() -> None:
        for index in range(40):
            await queue.put(index)
        await queue.put(None)

    async def consume() -> None:
        while await queue.get() is not None:
            pass

    async with asyncio.TaskGroup() as group:
        group.create_task(produce())
        group.create_task(consume())


CLEAN = [
    churn,
    bounded_cache,
    recent_results,
    tasks_created_and_finished,
    fire_and_forget,
    errors_raised_and_caught,
    queue_producer_consumer,
]


@pytest.mark.parametrize("factory", CLEAN, ids=lambda factory: factory.__name__)
async def test_clean_code_is_not_flagged(factory: Callable[[], Awaitable[None]]) -> None:
    report = await check_leaks(factory, rounds=20)  # raises AssertionError on a leak
    assert_consistent(report, 20)
    assert not report.leaked
    assert not report.live_tasks
    assert "no leak found" in report.format()


# -- the verdict on a series -------------------------------------------------------------


def test_theil_sen_slope_ignores_an_odd_round() -> None:
    assert theil_sen_slope([0, 1, 2, 3, 4, 5]) == 1.0
    assert theil_sen_slope([0, 1, 2, 500, 4, 5]) == 1.0
    assert theil_sen_slope([5, 5, 5, 5]) == 0.0
    assert theil_sen_slope([0, 4, 8, 8, 8, 8, 8, 8, 8, 8]) == 0.0  # filled up, then steady
    assert theil_sen_slope([7]) == 0.0


async def test_a_leak_every_other_round_needs_a_lower_fraction() -> None:
    """The rule is a rise in >= min_growth_fraction of the rounds: say so to find slower leaks."""
    calls = [0]

    async def leak_every_other_round() -> None:
        calls[0] += 1
        if calls[0] % 2 == 0:
            LEAKED.append(object())

    default = await find_leaks(leak_every_other_round, rounds=20)
    assert not default.traced_blocks.growing
    assert default.traced_blocks.rounds_grown >= 9
    lenient = await find_leaks(leak_every_other_round, rounds=20, min_growth_fraction=0.4)
    assert lenient.traced_blocks.growing
    LEAKED.clear()


# -- arguments and failures --------------------------------------------------------------


async def nothing() -> None:
    pass


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"rounds": 1}, ValueError, "rounds must be >= 2"),
        ({"rounds": 2.5}, TypeError, "rounds must be an int"),
        ({"warmup": -1}, ValueError, "warmup must be >= 0"),
        ({"top": -1}, ValueError, "top must be >= 0"),
        ({"frames": 0}, ValueError, "frames must be >= 1"),
        ({"min_growth_fraction": 0}, ValueError, "min_growth_fraction must be > 0"),
        ({"min_growth_fraction": 1.5}, ValueError, "min_growth_fraction must be <= 1"),
        ({"threshold_bytes": -1}, ValueError, "threshold_bytes must be >= 0"),
        ({"threshold_bytes": float("nan")}, ValueError, "threshold_bytes must be >= 0"),
    ],
)
async def test_bad_arguments_name_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        await find_leaks(nothing, **kwargs)
    with pytest.raises(error, match=message):
        await check_leaks(nothing, **kwargs)


async def test_bad_factories_are_refused() -> None:
    was_tracing = tracemalloc.is_tracing()
    with pytest.raises(TypeError, match="coro_factory must be callable"):
        await find_leaks(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="coro_factory must return an awaitable"):
        await find_leaks(lambda: 42, warmup=0)  # type: ignore[arg-type,return-value]
    assert tracemalloc.is_tracing() == was_tracing


async def test_an_error_in_the_coroutine_propagates_and_tracing_stops() -> None:
    was_tracing = tracemalloc.is_tracing()
    calls = [0]

    async def fails_in_round_three() -> None:
        calls[0] += 1
        if calls[0] == 3:
            raise LookupError("round three")

    with pytest.raises(LookupError, match="round three"):
        await find_leaks(fails_in_round_three, rounds=5, warmup=1)
    assert tracemalloc.is_tracing() == was_tracing
    # The checker is free again: a second check runs (rather than raising RuntimeError
    # for a check still in progress). Two rounds are too few to judge a trend on, so
    # only that it ran is asserted.
    report = await find_leaks(nothing, rounds=2, warmup=0)
    assert report.rounds == 2
    assert len(report.tasks.values) == 3


async def test_one_check_at_a_time() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def parked() -> None:
        started.set()
        await release.wait()

    first = asyncio.create_task(find_leaks(parked, rounds=2, warmup=0))
    await started.wait()
    with pytest.raises(RuntimeError, match="already running"):
        await find_leaks(nothing)
    release.set()
    assert not (await first).tasks_leaked


async def test_top_limits_the_sites() -> None:
    LEAKED.clear()
    none = await find_leaks(leak_one_object, rounds=5, top=0)
    assert none.sites == ()
    LEAKED.clear()


# -- the command line --------------------------------------------------------------------


def leaks_main(argv: list[str]) -> int:
    """`asyncperf leaks ARGV` as the CLI runs it: a usage error exits with status 2."""
    parser = argparse.ArgumentParser(prog="asyncperf leaks")
    COMMAND.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return COMMAND.run(args)
    except UsageError as exc:
        parser.error(str(exc))


MODULE = """
import asyncio

KEPT = []


async def leaky():
    KEPT.append(object())


async def clean():
    data = [str(index) for index in range(100)]
    await asyncio.sleep(0)
    del data


def not_async():
    return 42


class NotAFunction:
    pass
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The module above in a file of its own name (the CLI registers files by name)."""
    monkeypatch.setenv("COLUMNS", "200")  # rich tables wide enough to show whole lines
    path = tmp_path / ("leaks_" + re.sub(r"\W", "_", tmp_path.name) + ".py")
    path.write_text(textwrap.dedent(MODULE), encoding="utf-8")
    yield path
    sys.modules.pop(path.stem, None)


TINY = ["--rounds", "20", "--warmup", "2", "--loop", "asyncio"]


def test_cli_finds_a_leak(
    user_module: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    json_path = tmp_path / "out" / "leaks.json"
    assert leaks_main([f"{user_module}:leaky", *TINY, "--json", str(json_path)]) == 1
    out = capsys.readouterr().out
    assert "LEAK FOUND" in out
    assert "KEPT.append(object())" in out
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert data["target"] == f"{user_module}:leaky"
    assert data["leaked"] is True
    assert data["memory_leaked"] is True
    assert len(data["traced_blocks"]["values"]) == 21
    assert data["sites"][0]["filename"] == str(user_module)


def test_cli_reports_no_leak_for_clean_code(
    user_module: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert leaks_main([f"{user_module}:clean", *TINY, "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "no leak found" in out
    assert "traced blocks" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{path}:clean", "--rounds", "1"], "--rounds must be >= 2"),
        (["{path}:clean", "--warmup", "-1"], "--warmup must be >= 0"),
        (["{path}:clean", "--top", "-2"], "--top must be >= 0"),
        (["{path}:clean", "--rounds", "x"], "--rounds: invalid int value"),
        (["{path}:clean", "--loop", "trio"], "--loop: invalid choice"),
        (["{path}:clean", "--json", "{dir}"], "--json {dir}: is a directory"),
    ],
)
def test_cli_rejects_bad_options_before_any_work(
    user_module: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    values = {"path": str(user_module), "dir": str(user_module.parent)}
    with pytest.raises(SystemExit) as exited:
        leaks_main([arg.format(**values) for arg in argv])
    assert exited.value.code == 2
    assert message.format(**values) in capsys.readouterr().err
    assert user_module.stem not in sys.modules  # not even imported


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("{path}:absent", "MODULE:FACTORY: '{path}' has no attribute 'absent'"),
        ("{path}", "must be MODULE:NAME"),
        ("{path}:NotAFunction", "not an async function"),
        ("{path}:KEPT", "not an async function"),
        ("{path}:not_async", "returned no awaitable"),
        ("no_such_module_for_leaks:run", "module 'no_such_module_for_leaks' not found"),
    ],
)
def test_cli_rejects_bad_targets(
    user_module: Path, capsys: pytest.CaptureFixture[str], target: str, message: str
) -> None:
    values = {"path": str(user_module)}
    with pytest.raises(SystemExit) as exited:
        leaks_main([target.format(**values), *TINY])
    assert exited.value.code == 2
    assert message.format(**values) in capsys.readouterr().err
