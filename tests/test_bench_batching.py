"""The ``batching`` bench suite: its plan, a quick run through the harness, and its own checks.

The quick run goes through the harness as ``asyncperf bench`` does (plan,
``run_cases``, ``report``) with the console writing to a buffer. Nothing asserts
a timing or a bar's verdict: only that every figure exists and is consistent
with the others (rows written, answers, batches and calls add up).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import math
import sqlite3
import statistics
from pathlib import Path

import pytest
from rich.console import Console

from asyncperf.io._batcher import Batcher
from asyncperf.tools.bench import batching
from asyncperf.tools.bench._harness import Config, Harness, LoopChoice, Result

CASES = {batching.SQLITE_CASE, batching.UPSTREAM_CASE}
CONTENDERS = {batching.ONE_AT_A_TIME, batching.BATCHER}
#: Side figures per contender (the Batcher has two more: its bound and p99 / bound).
SIDE_ALL = {"items_per_s", "latency_p50_ms", "latency_p99_ms", "calls", "call_ms", "mean_batch"}
SIDE_BATCHER = SIDE_ALL | {"bound_ms", "latency_over_bound"}


def config(quick: bool = True, repeat: int = 3) -> Config:
    return Config(
        jobs=100,
        repeat=repeat,
        quick=quick,
        loops=("asyncio",),
        memory_items=100,
        queue_depths=(10,),
    )


def run_suite(loop: LoopChoice) -> tuple[Harness, list[Result]]:
    """Plan, run and report the suite on one loop, as ``_main.run`` does; the timed results."""
    h = Harness(config(), Console(file=io.StringIO(), width=250))
    plan = batching.SUITE.plan(h.config, loop)
    for text in plan.notes:
        h.note(batching.SUITE.name, text)
    results = h.run_cases(batching.SUITE.name, plan.cases, loop)
    batching.SUITE.report(h, loop, results)
    return h, results


# -- the plan ----------------------------------------------------------------------------------


@pytest.mark.parametrize("quick", [True, False])
def test_plan_has_both_contenders_on_both_cases(quick: bool) -> None:
    plan = batching.SUITE.plan(config(quick=quick), "asyncio")
    writes, calls = batching.sizes(quick)
    assert (writes, calls) == ((2_000, 500) if quick else (100_000, 10_000))
    assert {(c.case, c.contender) for c in plan.cases} == {
        (case, contender) for case in CASES for contender in CONTENDERS
    }
    for case in plan.cases:
        assert case.items == (writes if case.case == batching.SQLITE_CASE else calls)
        assert case.unit == "µs/item"
        # Only the slow baseline runs fewer repetitions.
        assert case.max_repeat == (3 if case.contender == batching.ONE_AT_A_TIME else None)
    assert plan.runs(5) == 2 * (1 + 3) + 2 * (1 + 5)
    assert any("max_size is 64" in note for note in plan.notes)


# -- a quick run through the harness ------------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_quick_run_figures_add_up(loop: LoopChoice, tmp_path: Path) -> None:
    h, results = run_suite(loop)
    repeat = h.config.repeat
    writes, calls = batching.sizes(quick=True)
    assert {(r.case, r.contender) for r in results} == {(c, k) for c in CASES for k in CONTENDERS}
    for result in results:
        assert result.loop == loop
        assert result.repeat == repeat == len(result.samples)
        assert all(math.isfinite(s) and s > 0 for s in result.samples), result
        assert result.best <= result.value <= result.worst

    runs = batching._STORES[loop].runs
    assert set(runs) == {(c, k) for c in CASES for k in CONTENDERS}
    for (case, contender), timed in runs.items():
        assert len(timed) == repeat  # the warm-up is left out
        items = writes if case == batching.SQLITE_CASE else calls
        for run in timed:
            assert run.items == run.verified == items
            assert 0 < run.latency_p50 <= run.latency_p99
            assert run.call_mean > 0
            if contender == batching.ONE_AT_A_TIME:
                assert run.batcher is None
                assert run.calls == items
                assert math.isnan(run.bound)
                continue
            stats = run.batcher
            assert stats is not None
            assert run.max_delay == 0.002
            sqlite = case == batching.SQLITE_CASE
            max_size = batching.SQLITE_MAX_SIZE if sqlite else batching.UPSTREAM_MAX_SIZE
            # Every item went through exactly one batch; each batch was one call.
            assert stats.submitted == stats.items == stats.succeeded == items
            assert stats.batches == run.calls == sum(stats.flushes.values())
            assert math.ceil(items / max_size) <= run.calls < items
            assert stats.processing_p50 <= stats.processing_p99
            assert run.bound == pytest.approx(0.002 + stats.processing_p99)
            assert run.latency_over_bound == pytest.approx(run.latency_p99 / run.bound)

    # The side figures: one per figure, contender and case, one value per timed run.
    side = {(r.case, r.contender): r for r in h.results["batching"][len(results) :]}
    expected = {
        (f"{case}/{name}", contender)
        for case in CASES
        for contender in CONTENDERS
        for name in (SIDE_BATCHER if contender == batching.BATCHER else SIDE_ALL)
    }
    assert set(side) == expected
    for result in results:
        per_second = side[(f"{result.case}/items_per_s", result.contender)]
        assert per_second.samples == [
            run.throughput for run in runs[(result.case, result.contender)]
        ]
        # Three repetitions: the median time and the median throughput are the same run.
        assert 1e6 / result.value == pytest.approx(statistics.median(per_second.samples))

    # Two bars per case, on the Batcher, named with the loop that ran.
    bars = h.bars["batching"]
    assert sorted((b.case, b.op) for b in bars) == sorted(
        (case, op) for case in CASES for op in ("<=", ">=")
    )
    for bar in bars:
        assert bar.loop == loop
        assert bar.contender == batching.BATCHER
        assert math.isfinite(bar.ratio)
        assert bar.ratio > 0
    file = h.console.file
    assert isinstance(file, io.StringIO)
    text = file.getvalue()
    assert f"64 closed-loop callers — loop {loop}" in text
    assert "Batcher(max_size=64, max_delay=2 ms, max_concurrency=8)" in text

    out = tmp_path / "batching.json"
    h.write_json(out, ["batching"], elapsed=1.0)
    data = json.loads(out.read_text(encoding="utf-8"))["suites"]["batching"]
    assert len(data["results"]) == len(results) + len(expected)
    assert all(isinstance(bar["passed"], bool) for bar in data["bars"])


# -- the workloads and their checks ------------------------------------------------------------


async def test_tiny_workloads_batch_as_the_closed_loop_dictates() -> None:
    # 130 calls from 64 callers: two full batches, then the last 2 items wait out max_delay.
    run = await batching.upstream_batcher(130)
    assert run.batcher is not None
    assert run.calls == 3
    assert dict(run.batcher.flushes) == {"size": 2, "delay": 1, "flush": 0, "close": 0}
    # Fewer writes than callers: one batch, sent by its delay.
    run = await batching.sqlite_batcher(5)
    assert run.batcher is not None
    assert (run.calls, run.verified, run.mean_batch) == (1, 5, 5.0)
    assert run.batcher.flushes["delay"] == 1
    run = await batching.sqlite_one_at_a_time(7)
    assert (run.calls, run.verified) == (7, 7)
    run = await batching.upstream_one_at_a_time(9)
    assert (run.calls, run.verified) == (9, 9)


async def test_record_store_verify_catches_a_lost_write(tmp_path: Path) -> None:
    async with batching.RecordStore(tmp_path / "records.sqlite") as store:
        for index in range(9):
            assert await store.write_one(batching.record(index)) == index
        assert await store.verify(9) == 9
        with pytest.raises(AssertionError, match=r"holds 9 rows \(ids 0\.\.8, 1,800 body bytes\)"):
            await store.verify(10)


async def test_record_store_batch_is_all_or_nothing(tmp_path: Path) -> None:
    async with batching.RecordStore(tmp_path / "records.sqlite") as store:
        assert await store.write_many([batching.record(0), batching.record(1)]) == [0, 1]
        # A record written twice fails its whole batch: record 2 is rolled back with it.
        with pytest.raises(sqlite3.IntegrityError):
            await store.write_many([batching.record(2), batching.record(1)])
        assert store.transactions == 1
        assert await store.verify(2) == 2


def test_records_are_200_distinct_bytes() -> None:
    first, second = batching.record(0), batching.record(1)
    assert first[0] == 0
    assert len(first[1]) == len(second[1]) == batching.RECORD_BYTES
    assert first[1] != second[1]


async def test_fake_upstream_answers_within_its_connection_limit() -> None:
    upstream = batching.FakeUpstream(latency=0.001, per_item=0.0, connections=3)
    answers = await asyncio.gather(*(upstream.request([i, i + 100]) for i in range(10)))
    assert answers == [[2 * i, 2 * (i + 100)] for i in range(10)]
    assert (upstream.requests, upstream.items, upstream.in_flight) == (10, 20, 0)
    assert upstream.peak_in_flight == 3
    assert upstream.mean_request > 0
    upstream.check(20)
    with pytest.raises(AssertionError, match="served 20 items for 21 calls"):
        upstream.check(21)


async def test_drive_keeps_callers_in_a_closed_loop_and_catches_wrong_answers() -> None:
    in_flight = peak = 0

    async def call(index: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0)
        in_flight -= 1
        return index + 1 if index in (7, 150) else index

    with pytest.raises(
        AssertionError, match=r"2 of 200 items got a wrong answer \(first: item 7\)"
    ):
        await batching.drive(200, call, lambda index: index)
    assert peak == batching.CALLERS
    elapsed, latencies, answered = await batching.drive(200, call, lambda i: i + (i in (7, 150)))
    assert answered == 200
    assert len(latencies) == 200
    assert all(0 <= latency <= elapsed for latency in latencies)


async def test_check_batcher_catches_counts_that_do_not_add_up() -> None:
    async def double(items: list[int]) -> list[int]:
        return [item * 2 for item in items]

    async with Batcher(double, max_size=4, max_delay=0.0, name="tiny") as batcher:
        assert await asyncio.gather(*(batcher.submit(i) for i in range(10))) == [
            2 * i for i in range(10)
        ]
    stats = batcher.statistics()
    batching.check_batcher(stats, 10, stats.batches, 4)
    with pytest.raises(AssertionError, match="'tiny': 10 submitted, 10 sent, 10 succeeded for 11"):
        batching.check_batcher(stats, 11, stats.batches, 4)
    with pytest.raises(AssertionError, match=r"batches \(3 flushes\) for 4 calls"):
        batching.check_batcher(stats, 10, 4, 4)
    with pytest.raises(AssertionError, match="1 failed, 0 cancelled"):
        batching.check_batcher(dataclasses.replace(stats, failed=1), 10, stats.batches, 4)
    with pytest.raises(AssertionError, match="p99 batch size 4 over max_size 3"):
        batching.check_batcher(stats, 10, stats.batches, 3)


@pytest.mark.parametrize(
    ("workload", "size", "error", "message"),
    [
        (batching.sqlite_one_at_a_time, 0, ValueError, "writes must be >= 1, not 0"),
        (batching.sqlite_batcher, -3, ValueError, "writes must be >= 1, not -3"),
        (batching.upstream_one_at_a_time, 0, ValueError, "calls must be >= 1, not 0"),
        (batching.upstream_batcher, True, TypeError, "calls must be an int, not bool"),
    ],
)
async def test_bad_sizes_are_refused_by_name(
    workload: batching.Workload, size: int, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        await workload(size)
