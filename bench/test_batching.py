"""Micro-batching: one await per item against the Batcher, on SQLite writes and upstream calls.

The workloads are those of the ``batching`` suite (``asyncperf bench batching``,
asyncperf/tools/bench/batching.py): 64 callers in a closed loop send 200-byte
records to a SQLite file written from one thread (each write its own commit, or
one ``executemany`` and commit per batch), or calls to a fake upstream of 2 ms
latency with 8 connections (a request per item, or per batch). The pytest-benchmark
sizes are smaller than the suite's (20,000 writes, 2,000 calls) so that the
directory runs in reasonable time; the suite has the issue's sizes and the bars.
Every round checks its results: the table holds exactly the records written, and
every call got its own answer.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from asyncperf.tools.bench import batching
from bench.conftest import Bench

WRITES = 20_000
QUICK_WRITES = 500
CALLS = 2_000
QUICK_CALLS = 200

Workload = Callable[[int], Coroutine[Any, Any, batching.Run]]

SQLITE: dict[str, Workload] = {
    batching.ONE_AT_A_TIME: batching.sqlite_one_at_a_time,
    batching.BATCHER: batching.sqlite_batcher,
}
UPSTREAM: dict[str, Workload] = {
    batching.ONE_AT_A_TIME: batching.upstream_one_at_a_time,
    batching.BATCHER: batching.upstream_batcher,
}


def _check_and_record(bench: Bench, contender: str, items: int, runs: list[batching.Run]) -> None:
    """Every round accounted for every item; the figures other than time go to extra_info."""
    for run in runs:
        assert run.items == run.verified == items
        if contender == batching.ONE_AT_A_TIME:
            assert run.batcher is None
            assert run.calls == items  # one commit or request per item
        else:
            assert run.batcher is not None
            assert run.calls == run.batcher.batches < items
            assert run.batcher.succeeded == items
            assert run.batcher.failed == run.batcher.batches_failed == 0
    bench.extra_info.update(
        items=items,
        callers=batching.CALLERS,
        items_per_s=round(statistics.median(run.throughput for run in runs)),
        calls=statistics.median(run.calls for run in runs),
        latency_p99_ms=round(statistics.median(run.latency_p99 for run in runs) * 1e3, 3),
    )
    if contender == batching.BATCHER:
        bench.extra_info["bound_ms"] = round(statistics.median(run.bound for run in runs) * 1e3, 3)


@pytest.mark.parametrize("contender", list(SQLITE))
def test_sqlite_writes(bench: Bench, contender: str) -> None:
    """20,000 writes of 200-byte records to SQLite (WAL, synchronous=NORMAL), one writer thread."""
    writes = bench.size(WRITES, QUICK_WRITES)
    workload = SQLITE[contender]
    runs = bench.run("batching: sqlite writes", lambda: workload(writes), rounds=5)
    _check_and_record(bench, contender, writes, runs)


@pytest.mark.parametrize("contender", list(UPSTREAM))
def test_upstream_calls(bench: Bench, contender: str) -> None:
    """2,000 calls to an upstream of 2 ms (+10 µs per item) latency and 8 connections."""
    calls = bench.size(CALLS, QUICK_CALLS)
    workload = UPSTREAM[contender]
    runs = bench.run("batching: upstream calls", lambda: workload(calls), rounds=5)
    _check_and_record(bench, contender, calls, runs)
