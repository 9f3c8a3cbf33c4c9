"""Suite ``scaling``: a supervised pool against fixed pools on a load step 10% -> 300% -> 10%.

A simulated upstream takes ``C`` calls at once at its base latency (lognormal,
seeded) and slows down for everyone in proportion to the calls in flight
beyond ``C`` (pushed past capacity it completes no more). An open-loop Poisson
arrival process (seeded; arrivals never wait for answers) offers 10%, then
300%, then 10% of the upstream's capacity (``C / mean latency`` calls per
second). Three pools face the identical arrival sequence:

(a) a fixed pool sized for the average offered load (``min_workers =
    max_workers = ceil(mean load x C)``);
(b) a fixed pool sized for the peak (``ceil(peak load x C)`` workers);
(c) a supervised pool: ``min_workers`` small, ``max_workers`` the peak size,
    an adaptive limiter, and a :class:`~asyncperf.supervisor.Supervisor` with
    the default :class:`~asyncperf.supervisor.ScalingPolicy` (short interval,
    window and hold-down, to fit the short phases).

Every request is submitted with ``submit_nowait`` to a queue that never fills,
and every request is answered (asserted, with the pools' own counters).
Figures per run: throughput (answers / seconds from the first arrival to the
last answer), p50/p99 latency (arrival to answer), peak and mean worker count
(worker tasks alive, sampled every 10 ms), and peak traced memory (tracemalloc,
on for every contender, from the start of the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from rich.table import Table
from rich.text import Text

from asyncperf.queues import AdaptiveLimiter
from asyncperf.supervisor import ScalingPolicy, Supervisor
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
    quantile,
)
from asyncperf.tools.bench.backpressure import Upstream
from asyncperf.workers import WorkerPool

__all__ = ["SUITE", "Scenario", "Workload", "make_workload", "run_pool"]

NAME = "scaling"

#: Calls the upstream takes at once at its base latency.
CONCURRENCY = 16
#: Mean base latency of one upstream call, seconds (lognormal).
MEAN_LATENCY = 0.050
SIGMA = 0.5
#: Offered load of each phase, as a multiple of the upstream's capacity, and its length.
LOADS = (0.1, 3.0, 0.1)
#: A burst: the peak lasts 8 mean latencies, between calm phases three times as long.
#: With the peak's backlog, a pool is saturated for about half of the run; how much of
#: the run is spent saturated is what the mean worker count of (c) depends on.
PHASES = (1.2, 0.4, 1.2)
QUICK_PHASES = (0.3, 0.1, 0.3)
WARMUP_PHASES = (0.1, 0.1, 0.2)
SEED = 20_250_501
#: Seconds after the last arrival a run waits for answers; one still missing then is a failure.
GRACE = 5.0
REPEAT = 3
#: How often the worker count is sampled, seconds.
SAMPLE_EVERY = 0.01

# -- (c): the supervised pool ---------------------------------------------------------------

MIN_WORKERS = 2
INTERVAL = 0.025
WINDOW = 2
#: The queue delay target, as a multiple of the mean base latency.
TARGET_FACTOR = 0.5
HOLD_DOWN = 0.5
LIMITER_ALGORITHM: Literal["vegas", "gradient2", "aimd"] = "vegas"
LIMITER_WINDOW = 10

FIXED_AVERAGE = "fixed_average"
FIXED_PEAK = "fixed_peak"
SUPERVISED = "supervised"
CONTENDERS = (FIXED_AVERAGE, FIXED_PEAK, SUPERVISED)
LABELS = {
    FIXED_AVERAGE: "(a) fixed, sized for the average",
    FIXED_PEAK: "(b) fixed, sized for the peak",
    SUPERVISED: "(c) supervised + limiter",
}

#: The bars, on (c) against (b): throughput, p99 and mean workers.
THROUGHPUT_BAR = 0.9
P99_BAR = 1.1
WORKERS_BAR = 0.5


@dataclass(frozen=True, slots=True)
class Scenario:
    """The upstream and the phases of offered load of one run."""

    concurrency: int = CONCURRENCY
    mean_latency: float = MEAN_LATENCY
    sigma: float = SIGMA
    loads: tuple[float, ...] = LOADS
    phases: tuple[float, ...] = PHASES
    seed: int = SEED

    @property
    def capacity(self) -> float:
        """Calls per second the upstream completes at its base latency."""
        return self.concurrency / self.mean_latency

    @property
    def duration(self) -> float:
        return sum(self.phases)

    @property
    def mean_load(self) -> float:
        """The time-weighted mean offered load, as a multiple of capacity."""
        return sum(load * s for load, s in zip(self.loads, self.phases, strict=True)) / sum(
            self.phases
        )

    @property
    def average_workers(self) -> int:
        """(a)'s size: the offered concurrency at the mean load."""
        return math.ceil(self.mean_load * self.concurrency)

    @property
    def peak_workers(self) -> int:
        """(b)'s size and (c)'s maximum: the offered concurrency at the peak."""
        return math.ceil(max(self.loads) * self.concurrency)


@dataclass(frozen=True, slots=True)
class Workload:
    """The seeded arrivals every contender faces: time and base latency per request."""

    arrivals: list[float]
    service: list[float]

    def __len__(self) -> int:
        return len(self.arrivals)


def make_workload(s: Scenario) -> Workload:
    """Poisson arrivals per phase at ``load x capacity``, a lognormal base latency each."""
    rng = random.Random(s.seed)
    mu = math.log(s.mean_latency) - s.sigma**2 / 2  # so that the mean is mean_latency
    arrivals: list[float] = []
    service: list[float] = []
    start = 0.0
    for load, seconds in zip(s.loads, s.phases, strict=True):
        t, end = start, start + seconds
        while True:
            t += rng.expovariate(load * s.capacity)
            if t >= end:
                break
            arrivals.append(t)
            service.append(rng.lognormvariate(mu, s.sigma))
        start = end
    return Workload(arrivals, service)


@dataclass(slots=True)
class Run:
    """What one run of one contender measured."""

    contender: str
    throughput: float
    p50_ms: float
    p99_ms: float
    peak_workers: int
    mean_workers: float
    peak_memory_kib: float
    upstream_peak: int
    duration_s: float
    #: From the start of the peak until the last request that arrived in it was answered.
    saturated_s: float
    events: dict[str, int] = field(default_factory=dict)

    def figures(self) -> dict[str, float]:
        """Every figure by name; the supervisor's event counts as ``events_<action>``."""
        data = {key: float(getattr(self, key)) for key, _unit, _higher in METRICS}
        for action, count in self.events.items():
            data[f"events_{action}"] = float(count)
        return data


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _make_pool(contender: str, s: Scenario) -> tuple[WorkerPool, Supervisor | None]:
    """The contender's pool, and its supervisor for (c)."""
    if contender == FIXED_AVERAGE:
        n = s.average_workers
        return WorkerPool(n, min_workers=n, max_pending=1_000_000, name="average"), None
    if contender == FIXED_PEAK:
        n = s.peak_workers
        return WorkerPool(n, min_workers=n, max_pending=1_000_000, name="peak"), None
    limiter = AdaptiveLimiter(
        LIMITER_ALGORITHM,
        initial=MIN_WORKERS,
        min_limit=1,
        max_limit=s.peak_workers,
        window=LIMITER_WINDOW,
    )
    pool = WorkerPool(
        MIN_WORKERS,
        idle_timeout=HOLD_DOWN,
        max_pending=1_000_000,
        limiter=limiter,
        name="supervised",
    )
    supervisor = Supervisor(interval=INTERVAL)
    policy = ScalingPolicy(
        min_workers=MIN_WORKERS,
        max_workers=s.peak_workers,
        target_queue_delay=TARGET_FACTOR * s.mean_latency,
        window=WINDOW,
        hold_down=HOLD_DOWN,
    )
    supervisor.watch(pool, policy=policy)
    return pool, supervisor


async def run_pool(contender: str, w: Workload, s: Scenario) -> Run:
    """Run one contender on the workload; every request must be answered."""
    n = len(w)
    upstream = Upstream(s.concurrency)
    service = w.service
    end = [math.nan] * n
    left = [n]
    done = asyncio.Event()
    pool, supervisor = _make_pool(contender, s)
    t0 = 0.0

    async def call(i: int) -> None:
        await upstream.call(service[i])
        end[i] = time.monotonic() - t0
        left[0] -= 1
        if not left[0]:
            done.set()

    counts: list[int] = []

    async def sample() -> None:
        while True:
            counts.append(pool.statistics().workers)
            await asyncio.sleep(SAMPLE_EVERY)

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(pool)
            sampler = asyncio.create_task(sample())
            stack.push_async_callback(_stop, sampler)
            if supervisor is not None:
                await stack.enter_async_context(supervisor)
            t0 = time.monotonic()
            for i, at in enumerate(w.arrivals):
                delay = at - (time.monotonic() - t0)
                if delay > 0:
                    await asyncio.sleep(delay)
                _ = pool.submit_nowait(call, i)
            async with asyncio.timeout(GRACE):
                await done.wait()
        stats = pool.statistics()
        peak_memory = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    if stats.completed != n or stats.submitted != n or any(math.isnan(e) for e in end):
        raise AssertionError(f"{LABELS[contender]}: {n} offered, {stats.completed} answered")
    latencies = sorted(e - a for e, a in zip(end, w.arrivals, strict=True))
    finished = max(end)
    peak = max(range(len(s.loads)), key=lambda p: s.loads[p])
    peak_start = sum(s.phases[:peak])
    peak_end = peak_start + s.phases[peak]
    saturated = max(
        (e for e, a in zip(end, w.arrivals, strict=True) if peak_start <= a < peak_end),
        default=peak_start,
    )
    events: dict[str, int] = {}
    if supervisor is not None:
        for event in supervisor.events:
            events[event.action] = events.get(event.action, 0) + 1
    return Run(
        contender=contender,
        throughput=n / finished,
        p50_ms=1e3 * quantile(latencies, 0.50),
        p99_ms=1e3 * quantile(latencies, 0.99),
        peak_workers=max(counts),
        mean_workers=statistics.fmean(counts),
        peak_memory_kib=peak_memory / 1024,
        upstream_peak=upstream.peak,
        duration_s=finished,
        saturated_s=saturated - peak_start,
        events=events,
    )


# -- the suite ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Store:
    """Per loop: the scenario, a workload per repetition, the figures of every timed run."""

    scenario: Scenario
    workloads: list[Workload]
    runs: dict[str, list[dict[str, float]]]


_STORES: dict[str, _Store] = {}


def _maker(contender: str, store: _Store) -> Callable[[], Coroutine[Any, Any, float]]:
    """The case's coroutine factory; the harness's first call is the warm-up (short phases)."""
    calls = 0
    warm = replace(store.scenario, phases=WARMUP_PHASES)
    warm_workload = make_workload(warm)

    async def measure() -> float:
        nonlocal calls
        calls += 1
        if calls == 1:
            run = await run_pool(contender, warm_workload, warm)
        else:
            rep = (calls - 2) % len(store.workloads)
            s = replace(store.scenario, seed=store.scenario.seed + rep)
            run = await run_pool(contender, store.workloads[rep], s)
            store.runs[contender].append(run.figures())
        return run.throughput

    return measure


def plan(config: Config, loop: LoopChoice) -> Plan:
    """One case per contender; repetition k of every contender replays the same arrivals."""
    s = Scenario(phases=QUICK_PHASES) if config.quick else Scenario()
    repeat = min(config.repeat, REPEAT)
    workloads = [make_workload(replace(s, seed=s.seed + k)) for k in range(repeat)]
    _STORES[loop] = _Store(s, workloads, {c: [] for c in CONTENDERS})
    result = Plan(cases=[])
    for contender in CONTENDERS:
        result.cases.append(
            Case(
                case=NAME,
                contender=contender,
                label=LABELS[contender],
                make=_maker(contender, _STORES[loop]),
                items=1,
                unit="answers/s",
                scale=1.0,
                raw_unit="answers/s",
                max_repeat=REPEAT,
                note="throughput: answers / seconds from the first arrival to the last answer",
            )
        )
    fewer = f", not {config.repeat}," if repeat < config.repeat else ""
    result.notes.append(
        f"{repeat} repetitions of each contender{fewer} as each run takes about "
        f"{s.duration:g} s; repetition k replays seed {s.seed}+k for every contender. "
        "--jobs does not apply."
    )
    result.notes.append(
        f"upstream: C={s.concurrency} at once, lognormal latency mean "
        f"{s.mean_latency * 1e3:g} ms (sigma {s.sigma:g}), capacity {s.capacity:,.0f}/s; "
        f"load {' -> '.join(f'{x:g}x' for x in s.loads)} for "
        f"{' / '.join(f'{x:g}' for x in s.phases)} s; ~{len(workloads[0]):,} requests a run. "
        f"(a) {s.average_workers} workers (mean load {s.mean_load:.2f}x), (b) "
        f"{s.peak_workers}, (c) {MIN_WORKERS}..{s.peak_workers}."
    )
    result.notes.append(_settings_line(s))
    return result


def _settings_line(s: Scenario) -> str:
    return (
        f"(c) settings: Supervisor(interval={INTERVAL * 1e3:g} ms), ScalingPolicy("
        f"min_workers={MIN_WORKERS}, max_workers={s.peak_workers}, target_queue_delay="
        f"{TARGET_FACTOR * s.mean_latency * 1e3:g} ms, window={WINDOW}, hold_down="
        f"{HOLD_DOWN:g} s); {LIMITER_ALGORITHM} limiter (window {LIMITER_WINDOW}, "
        f"1..{s.peak_workers}, from {MIN_WORKERS}); pool idle_timeout {HOLD_DOWN:g} s. "
        "tracemalloc is on in every run (for the memory figure)."
    )


class _Medians:
    def __init__(self, runs: list[dict[str, float]]) -> None:
        self.runs = runs

    def __call__(self, key: str) -> float:
        values = [run[key] for run in self.runs if key in run]
        return statistics.median(values) if values else math.nan


#: Figures per run: key, unit, higher is better.
METRICS = (
    ("throughput", "answers/s", True),
    ("p50_ms", "ms", False),
    ("p99_ms", "ms", False),
    ("peak_workers", "workers", False),
    ("mean_workers", "workers", False),
    ("peak_memory_kib", "KiB", False),
    ("upstream_peak", "calls", False),
    ("duration_s", "s", False),
    ("saturated_s", "s", False),
)


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    """Print the table of one loop, check the bars, and add every figure to the results."""
    store = _STORES[loop]
    s = store.scenario
    loop_name = results[0].loop if results else loop
    med = {c: _Medians(store.runs[c]) for c in CONTENDERS}
    b, c = med[FIXED_PEAK], med[SUPERVISED]
    bars: dict[str, Bar] = {
        "throughput": h.bar(
            NAME,
            loop_name,
            "throughput",
            SUPERVISED,
            f"throughput >= {THROUGHPUT_BAR:g}x the peak-sized pool's",
            c("throughput") / b("throughput"),
            ">=",
            THROUGHPUT_BAR,
        ),
        "p99_ms": h.bar(
            NAME,
            loop_name,
            "p99",
            SUPERVISED,
            f"p99 latency <= {P99_BAR:g}x the peak-sized pool's",
            c("p99_ms") / b("p99_ms"),
            "<=",
            P99_BAR,
        ),
        "mean_workers": h.bar(
            NAME,
            loop_name,
            "mean_workers",
            SUPERVISED,
            f"mean worker count <= {WORKERS_BAR:g}x the peak-sized pool's",
            c("mean_workers") / b("mean_workers"),
            "<=",
            WORKERS_BAR,
        ),
    }
    repeat = len(store.runs[SUPERVISED])
    table = Table(
        title=f"scaling: load {' -> '.join(f'{x:g}x' for x in s.loads)} of capacity — "
        f"loop {loop_name}",
        caption=f"median of {repeat} runs; capacity {s.capacity:,.0f}/s (C={s.concurrency}, "
        f"mean latency {s.mean_latency * 1e3:g} ms); x (b) = ratio to the peak-sized pool; "
        "throughput = answers / seconds to the last answer; latency = arrival to answer; "
        "workers = worker tasks alive (sampled every 10 ms); memory = tracemalloc peak "
        "during the run; bars in parentheses: the measured ratio",
    )
    table.add_column("pool")
    for column in (
        "answers/s",
        "x (b)",
        "p50 ms",
        "p99 ms",
        "x (b)",
        "peak wk",
        "mean wk",
        "x (b)",
        "peak KiB",
        "upstream peak",
    ):
        table.add_column(column, justify="right")
    table.add_column("bars")
    for contender in CONTENDERS:
        m = med[contender]
        cells: list[Text] = []
        if contender == SUPERVISED:
            cells = [Text.assemble(bar.cell(), f" ({bar.ratio:.2f})", " ") for bar in bars.values()]
        table.add_row(
            LABELS[contender],
            fmt(m("throughput")),
            f"{m('throughput') / b('throughput'):.2f}",
            fmt(m("p50_ms")),
            fmt(m("p99_ms")),
            f"{m('p99_ms') / b('p99_ms'):.2f}",
            f"{m('peak_workers'):.0f}",
            f"{m('mean_workers'):.1f}",
            f"{m('mean_workers') / b('mean_workers'):.2f}",
            fmt(m("peak_memory_kib")),
            f"{m('upstream_peak'):.0f}",
            Text("\n").join(cells),
        )
    h.console.print(table)
    events = {
        key.removeprefix("events_"): c(key)
        for key in sorted({k for run in store.runs[SUPERVISED] for k in run})
        if key.startswith("events_")
    }
    h.console.print(
        "(c) supervisor events per run (median): "
        + ", ".join(f"{action} {count:.0f}" for action, count in events.items())
        + f". Saturated (from the start of the peak until its last arrival is answered): "
        f"(b) {b('saturated_s'):.2f} s, (c) {c('saturated_s'):.2f} s of runs of "
        f"{b('duration_s'):.2f} s; (c)'s mean worker count depends on that share."
    )
    extra: list[Result] = []
    for contender in CONTENDERS:
        runs = store.runs[contender]
        for key, unit, higher in METRICS:
            values = [run[key] for run in runs if key in run]
            if not values:
                continue
            extra.append(
                Result.side_figure(
                    NAME,
                    key,
                    contender,
                    LABELS[contender],
                    loop_name,
                    unit,
                    values,
                    "median of the repetitions; best/worst = the best/worst repetition",
                    higher_is_better=higher,
                )
            )
    h.results.setdefault(NAME, []).extend(extra)
    settings = {
        "loop": loop_name,
        "scenario": asdict(s),
        "repeat": repeat,
        "supervised": _settings_line(s),
    }
    h.notes.setdefault(NAME, []).append("settings " + json.dumps(settings, sort_keys=True))


SUITE = Suite(
    name=NAME,
    description="Scaling: an open-loop load stepping 10% -> 300% -> 10% of a simulated "
    "upstream's capacity; a fixed pool sized for the average load, one sized for the peak, "
    "and a supervised pool with an adaptive limiter: throughput, p99 latency, peak and mean "
    "worker count, peak memory.",
    plan=plan,
    report=report,
)
