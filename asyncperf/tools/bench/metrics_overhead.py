"""Suite ``metrics``: what the metrics hooks add to a WorkerPool's per-job overhead.

The workload is the ``pool`` suite's (its no-op and yield-once handlers, 64 jobs
at once at most, 10,000 pending), run through the same pool twice: with no
:class:`~asyncperf.observability.Metrics` registered ("off": the pool's hook is
one ``is not None`` test per job) and with one registered ("on": every job is
timed and counted in the wait and run time histograms). The two cases differ
only in that one call, and their repetitions are interleaved, so their ratio is
the cost of the hooks. "On" is the default: the histograms take the jobs the pool
times anyway (one in eight per worker). Bar: on <= 1.05x off. A third contender,
"every job" (``Metrics(time_every_job=True)``, exact histogram counts), shows
what timing each job costs; it has no bar.

"Off" against the code before the hooks existed cannot be measured in one run;
when the ``pool`` suite ran in the same run, its WorkerPool figure is shown next
to "off" instead (the same workload).

A third case times :meth:`Metrics.snapshot` (what the dashboard reads every
second) and :meth:`Metrics.prometheus_text` for three busy pools with their queues,
a tiered cache and a supervisor. Bar: a snapshot < 1 ms.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from time import perf_counter
from typing import Any

from rich.table import Table
from rich.text import Text

import asyncperf as ap
from asyncperf.observability._metrics import Metrics
from asyncperf.tools.bench import pool_overhead
from asyncperf.tools.bench._harness import (
    Bar,
    Case,
    Config,
    Harness,
    LoopChoice,
    Plan,
    Result,
    Suite,
    fmt,
)
from asyncperf.tools.bench.pool_overhead import BOUND, PENDING, WORKLOADS, Workload

__all__ = ["SUITE"]

OFF = "metrics_off"
ON = "metrics_on"
EVERY_JOB = "metrics_every_job"
SNAPSHOT = "snapshot"
PROMETHEUS = "prometheus_text"
#: Metrics on may cost at most this much more per job than metrics off.
OVERHEAD_BAR = 1.05
#: A snapshot (the dashboard reads one a second) must take less than this many µs.
SNAPSHOT_BAR_US = 1_000.0
SNAPSHOT_POOLS = 3


async def bench_pool(work: Workload, n: int, mode: str) -> float:
    """Seconds for N jobs through ``WorkerPool(64, max_pending=10,000)``, with or without Metrics.

    The pool suite's ``bench_worker_pool``, with the one registration that is measured.
    """
    fn = work.fn
    metrics = None if mode == OFF else Metrics(time_every_job=mode == EVERY_JOB)
    try:
        async with ap.WorkerPool(max_workers=BOUND, max_pending=PENDING) as pool:
            if metrics is not None:
                metrics.add_pool(pool)
            jobs: list[ap.Job[object]] = []
            start = perf_counter()
            for _ in range(n):
                jobs.append(await pool.submit(fn))
            results = [await job for job in jobs]
            elapsed = perf_counter() - start
    finally:
        if metrics is not None:
            metrics.close()
    if len(results) != n:
        raise AssertionError(f"expected {n} results, got {len(results)}")
    if metrics is not None:
        counted = metrics.histograms()[pool.name].runs["completed"].count
        # Every job, or the sample: one in eight per worker (none if a worker ran < 8).
        if counted != n if mode == EVERY_JOB else counted > n // 8:
            raise AssertionError(f"the histogram counted {counted} of {n} jobs")
    return elapsed


async def bench_reads(reads: int, prometheus: bool) -> float:
    """Seconds for ``reads`` snapshots (or Prometheus texts) of 3 pools, a cache, a supervisor."""
    metrics = Metrics()
    supervisor = ap.Supervisor()
    cache = ap.TieredCache(ap.MemoryCache(max_entries=1_000))
    try:
        async with (
            ap.WorkerPool(max_workers=BOUND, name="api") as api,
            ap.WorkerPool(max_workers=BOUND, name="batch") as batch,
            ap.WorkerPool(max_workers=BOUND, name="io") as io,
        ):
            for pool in (api, batch, io):
                supervisor.watch(pool)
                metrics.add_pool(pool)
                # Fill the latency rings, so statistics() sorts full sample lists.
                jobs = [await pool.submit(pool_overhead.noop) for _ in range(10_000)]
                for job in jobs:
                    await job
            metrics.add_cache(cache, "pages")
            metrics.add_supervisor(supervisor)
            read: Callable[[], object] = metrics.prometheus_text if prometheus else metrics.snapshot
            start = perf_counter()
            for _ in range(reads):
                read()
            return perf_counter() - start
    finally:
        metrics.close()


def _pool_maker(work: Workload, n: int, mode: str) -> Callable[[], Coroutine[Any, Any, float]]:
    def make() -> Coroutine[Any, Any, float]:
        return bench_pool(work, n, mode)

    return make


def _reads_maker(reads: int, prometheus: bool) -> Callable[[], Coroutine[Any, Any, float]]:
    def make() -> Coroutine[Any, Any, float]:
        return bench_reads(reads, prometheus)

    return make


def plan(config: Config, loop: LoopChoice) -> Plan:
    """Off and on for each of the pool suite's handlers; the two reads."""
    result = Plan(cases=[])
    for work in WORKLOADS:
        for key, label in (
            (OFF, "WorkerPool, no Metrics"),
            (ON, "WorkerPool + Metrics (sampled)"),
            (EVERY_JOB, "WorkerPool + Metrics (every job)"),
        ):
            result.cases.append(
                Case(
                    case=work.name,
                    contender=key,
                    label=label,
                    make=_pool_maker(work, config.jobs, key),
                    items=config.jobs,
                    unit="us/job",
                    scale=1e6,
                )
            )
    reads = 20 if config.quick else 200
    for key, label, prometheus in (
        (SNAPSHOT, "Metrics.snapshot()", False),
        (PROMETHEUS, "Metrics.prometheus_text()", True),
    ):
        result.cases.append(
            Case(
                case="read",
                contender=key,
                label=label,
                make=_reads_maker(reads, prometheus),
                items=reads,
                unit="us/read",
                scale=1e6,
                note=f"{SNAPSHOT_POOLS} pools with full latency rings, a tiered cache, "
                "a supervisor",
            )
        )
    return result


def _pool_suite_figure(h: Harness, loop: str, case: str) -> Result | None:
    """The pool suite's WorkerPool result for this loop and handler, if it ran."""
    for result in h.results.get("pool", []):
        if result.loop == loop and result.case == case and result.contender == pool_overhead.POOL:
            return result
    return None


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    """The table of one loop: off, on, their ratio and the bars."""
    table = Table(
        title=f"metrics: hook overhead per job, {h.config.jobs:,} jobs, bound {BOUND} "
        f"— loop {loop}",
        caption=f"median of {h.config.repeat} repetitions, interleaved; x off = time / the same "
        "pool without Metrics; 'pool suite' = the pool suite's WorkerPool figure in this run "
        "(the code path before the hooks cannot run in the same process)",
    )
    for column in ("handler", "contender", "value", "best", "x off", "pool suite", "bar"):
        table.add_column(column, justify="left" if column in ("handler", "contender") else "right")
    for work in WORKLOADS:
        rows = {r.contender: r for r in results if r.case == work.name}
        off, on = rows.get(OFF), rows.get(ON)
        bar: Bar | None = None
        if off is not None and on is not None:
            bar = h.bar(
                "metrics",
                loop,
                work.name,
                ON,
                f"on <= {OVERHEAD_BAR}x off",
                on.value / off.value,
                "<=",
                OVERHEAD_BAR,
            )
        for row in (off, on, rows.get(EVERY_JOB)):
            if row is None:
                continue
            pool_row = _pool_suite_figure(h, row.loop, work.name) if row is off else None
            table.add_row(
                work.name,
                row.label,
                f"{fmt(row.value)} {row.unit}",
                fmt(row.best),
                f"{row.value / off.value:.3f}x" if off is not None else "-",
                f"{fmt(pool_row.value)} {pool_row.unit}" if pool_row is not None else "-",
                bar.cell() if bar is not None and row is on else Text(""),
            )
        table.add_section()
    for row in results:
        if row.case != "read":
            continue
        read_bar: Bar | None = None
        if row.contender == SNAPSHOT:
            read_bar = h.bar(
                "metrics",
                loop,
                "read",
                SNAPSHOT,
                f"< {SNAPSHOT_BAR_US:g} µs",
                row.value / SNAPSHOT_BAR_US,
                "<=",
                1.0,
            )
        table.add_row(
            "read",
            row.label,
            f"{fmt(row.value)} {row.unit}",
            fmt(row.best),
            "-",
            "-",
            read_bar.cell() if read_bar is not None else Text(""),
        )
    h.console.print(table)


SUITE = Suite(
    name="metrics",
    description="What the metrics hooks add to a WorkerPool's per-job overhead (µs/job, "
    "Metrics off vs on, the pool suite's handlers), and the cost of a snapshot and of a "
    "Prometheus text for three pools.",
    plan=plan,
    report=report,
)
