"""Suite ``gc``: the garbage-collector work a bounded-concurrency pattern causes.

Every contender runs the workload of the ``pool`` suite (N jobs, at most 64 at
once, each awaiting ``asyncio.sleep(0)`` once; the submitter keeps every
handle and awaits each result at the end) through the same functions as that
suite: a hand-written ``asyncio.Queue`` + 64 workers (the baseline),
``asyncperf.WorkerPool``, a TaskGroup spawner that takes a semaphore slot
before each ``create_task``, ``gather`` + ``Semaphore``, and aiojobs when it is
installed.

While one run goes, a :data:`gc.callbacks` hook counts the collections per
generation and times each with ``perf_counter`` from its ``start`` to its
``stop`` callback. The window is the whole contender call (its setup and
close included), and the wall time is measured over the same window, so GC
time is always a part of the wall time. The primary figure of a case is the
GC pause per run, in milliseconds; the wall time, collections per generation,
objects collected and the longest single pause are kept per repetition on the
side and added to the results as extra rows.

The collector stays at its defaults: thresholds ``gc.get_threshold()``
(``(700, 10, 10)`` on CPython 3.11: a generation-0 collection after 700 more
tracked container allocations than deallocations, a generation-1 collection
every 10 of those, a full one every 10 of those, and a full collection is
also skipped until the objects that survived the last full one grew by 25%)
and nothing is frozen. ``gc.freeze()`` would move every object alive at that
point (the harness, the imported modules) to a permanent generation that no
collection scans, which makes full collections cheaper for every contender;
it is not used here, so full collections also scan the process's own objects.
The harness calls ``gc.collect()`` before each run, outside the window.
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from time import perf_counter
from types import TracebackType
from typing import Any

from rich.table import Table

from asyncperf.tools.bench import pool_overhead
from asyncperf.tools.bench._harness import (
    Case,
    Config,
    Harness,
    LoopChoice,
    Plan,
    Result,
    Suite,
    fmt,
    import_peer,
    keep_timed_runs,
)

__all__ = ["SUITE", "GcMonitor", "GcRun", "measure"]

NAME = "gc"
GENERATIONS = 3
#: The workload: the pool suite's handler that yields to the loop once.
WORKLOAD = next(w for w in pool_overhead.WORKLOADS if w.name == "yield_once")
CASE = f"{WORKLOAD.name}, bound {pool_overhead.BOUND}"

Bench = Callable[[pool_overhead.Workload, int], Coroutine[Any, Any, float]]


class GcMonitor:
    """Counts and times garbage collections through :data:`gc.callbacks` while installed.

    Use it as a context manager around the code to watch. A ``stop`` callback
    whose ``start`` came before the monitor was installed is ignored, so
    every pause counted lies inside the window.
    """

    __slots__ = ("_started", "collected", "collections", "max_pause", "pause", "uncollectable")

    def __init__(self) -> None:
        #: Collections finished inside the window, per generation.
        self.collections = [0] * GENERATIONS
        #: Seconds spent in those collections.
        self.pause = 0.0
        #: The longest single collection, seconds.
        self.max_pause = 0.0
        #: Unreachable objects the collections found (and freed).
        self.collected = 0
        self.uncollectable = 0
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now = perf_counter()
        if phase == "start":
            self._started = now
            return
        if self._started is None:
            return  # started before the window opened
        duration = now - self._started
        self._started = None
        self.collections[info["generation"]] += 1
        self.pause += duration
        self.max_pause = max(self.max_pause, duration)
        self.collected += info.get("collected", 0)
        self.uncollectable += info.get("uncollectable", 0)

    def __enter__(self) -> GcMonitor:
        gc.callbacks.append(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        gc.callbacks.remove(self)


@dataclass(frozen=True, slots=True)
class GcRun:
    """What one run of one contender cost the collector."""

    #: Seconds spent in collections inside the window.
    pause_s: float
    #: Seconds of the whole window (setup, the N jobs, close).
    wall_s: float
    #: Collections per generation (0, 1, 2).
    collections: tuple[int, int, int]
    collected: int
    max_pause_s: float

    def figures(self) -> dict[str, float]:
        """Every figure by name, in the units of :data:`SIDE_METRICS`."""
        gen0, gen1, gen2 = self.collections
        return {
            "wall_ms": self.wall_s * 1e3,
            "gc_share_pct": 100.0 * self.pause_s / self.wall_s if self.wall_s > 0 else 0.0,
            "gen0": float(gen0),
            "gen1": float(gen1),
            "gen2": float(gen2),
            "collected": float(self.collected),
            "max_pause_ms": self.max_pause_s * 1e3,
        }


#: The side figures: key, unit.
SIDE_METRICS = (
    ("wall_ms", "ms"),
    ("gc_share_pct", "%"),
    ("gen0", "collections"),
    ("gen1", "collections"),
    ("gen2", "collections"),
    ("collected", "objects"),
    ("max_pause_ms", "ms"),
)


async def measure(bench: Bench, n: int) -> GcRun:
    """Run ``bench`` on N jobs with the collector watched; what it cost."""
    with GcMonitor() as monitor:
        start = perf_counter()
        await bench(WORKLOAD, n)
        wall = perf_counter() - start
    gen0, gen1, gen2 = monitor.collections
    return GcRun(monitor.pause, wall, (gen0, gen1, gen2), monitor.collected, monitor.max_pause)


@dataclass(frozen=True, slots=True)
class Contender:
    key: str
    label: str
    bench: Bench
    requires: str | None = None


BASELINE = "queue_workers"
POOL = "worker_pool"

CONTENDERS = (
    Contender(BASELINE, "baseline Queue+workers", pool_overhead.bench_queue_workers),
    Contender(POOL, "asyncperf WorkerPool", pool_overhead.bench_worker_pool),
    Contender("taskgroup_spawner", "TaskGroup spawner", pool_overhead.bench_taskgroup_spawner),
    Contender("gather_semaphore", "gather + Semaphore", pool_overhead.bench_gather_semaphore),
    Contender("aiojobs", "aiojobs Scheduler", pool_overhead.bench_aiojobs, requires="aiojobs"),
)


@dataclass(slots=True)
class _Store:
    """Per loop: the side figures of every timed run (the warm-up left out), per contender."""

    runs: dict[str, list[GcRun]] = field(default_factory=dict)


_STORES: dict[str, _Store] = {}


def plan(config: Config, loop: LoopChoice) -> Plan:
    """One case per available contender, all on the same N-job workload."""
    result = Plan(cases=[])
    store = _Store()
    _STORES[loop] = store
    for contender in CONTENDERS:
        if contender.requires is not None and not import_peer(
            contender.requires, result.notes, config.vs
        ):
            continue
        result.cases.append(
            Case(
                case=CASE,
                contender=contender.key,
                label=contender.label,
                make=keep_timed_runs(
                    partial(measure, contender.bench, config.jobs),
                    lambda run: run.pause_s,
                    store.runs.setdefault(contender.key, []),
                ),
                items=1,
                unit="ms GC/run",
                scale=1e3,
                note=f"GC pause per run of {config.jobs:,} jobs (gc.callbacks start/stop)",
            )
        )
    threshold = ", ".join(str(t) for t in gc.get_threshold())
    result.notes.append(
        f"gc: default collector settings (thresholds {threshold}, gc.freeze() not used); "
        "the harness collects before each run, outside the measured window."
    )
    return result


def _median(runs: list[GcRun], key: str) -> float:
    values = [run.figures()[key] for run in runs]
    return statistics.median(values) if values else float("nan")


def _ratio(value: float, reference: float | None) -> str:
    """``value / reference`` as ``1.23x``; ``-`` without a reference, ``∞`` over zero."""
    if reference is None:
        return "-"
    if reference > 0:
        return f"{value / reference:.2f}x"
    return "∞" if value > 0 else "1.00x"


def _side_results(loop_name: str, results: list[Result], store: _Store) -> list[Result]:
    """The side figures as results: case ``<case>/<metric>``, one row per contender."""
    extra: list[Result] = []
    for row in results:
        runs = store.runs.get(row.contender, [])
        for key, unit in SIDE_METRICS:
            values = [run.figures()[key] for run in runs]
            if not values:
                continue
            extra.append(
                Result.side_figure(
                    NAME,
                    f"{row.case}/{key}",
                    row.contender,
                    row.label,
                    loop_name,
                    unit,
                    values,
                    "median of the repetitions; best/worst = smallest/largest",
                )
            )
    return extra


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    """Print the table of one loop (GC pause, collections, wall) and add the side figures."""
    store = _STORES[loop]
    loop_name = results[0].loop if results else loop
    rows = {r.contender: r for r in results}
    baseline = rows.get(BASELINE)
    pool = rows.get(POOL)
    table = Table(
        title=f"gc: collector work for {h.config.jobs:,} jobs (yield once, bound "
        f"{pool_overhead.BOUND}) — loop {loop_name}",
        caption=f"median of {h.config.repeat} repetitions, each in a fresh loop; GC = time "
        "inside collections (gc.callbacks start→stop) during the run; x base / x pool = GC "
        "time / the baseline's or the WorkerPool's; gen0/1/2 = collections per run; wall = "
        "the same window (setup and close included); collected = unreachable objects the "
        "collections found (0: they only traversed live objects); default thresholds, no "
        "gc.freeze()",
    )
    table.add_column("contender")
    for column in (
        "GC ms",
        "best",
        "x base",
        "x pool",
        "gen0",
        "gen1",
        "gen2",
        "max pause ms",
        "collected",
        "wall ms",
        "GC %",
    ):
        table.add_column(column, justify="right")
    for row in results:
        runs = store.runs.get(row.contender, [])
        table.add_row(
            row.label,
            fmt(row.value),
            fmt(row.best),
            _ratio(row.value, baseline.value if baseline else None),
            _ratio(row.value, pool.value if pool else None),
            f"{_median(runs, 'gen0'):.0f}",
            f"{_median(runs, 'gen1'):.0f}",
            f"{_median(runs, 'gen2'):.0f}",
            fmt(_median(runs, "max_pause_ms")),
            f"{_median(runs, 'collected'):,.0f}",
            fmt(_median(runs, "wall_ms")),
            f"{_median(runs, 'gc_share_pct'):.1f}",
        )
    h.console.print(table)
    h.results.setdefault(NAME, []).extend(_side_results(loop_name, results, store))


SUITE = Suite(
    name=NAME,
    description="GC pressure: time spent in garbage collections (gc.callbacks) and "
    "collections per generation while N jobs (64 at once, each yielding once) run through "
    "a Queue+workers baseline, WorkerPool, a TaskGroup spawner, gather + Semaphore and "
    "aiojobs; default collector thresholds, no gc.freeze().",
    plan=plan,
    report=report,
)
