"""Suite ``backpressure``: goodput, latency and shedding when offered load is 2-3x capacity.

A simulated upstream takes ``C`` calls at once at its base latency (lognormal,
seeded) and slows down for everyone in proportion to the calls in flight beyond
``C``. An open-loop Poisson arrival process (arrivals are scheduled by time and
never wait for answers) steps through 0.5x, 2x, 3x and 0.5x of the upstream's
capacity (``C / mean base latency`` calls per second). Three priority classes
(10% high, 30% normal, 60% low), and every request has a deadline of 10x the
mean base latency: an answer after it is useless, so goodput counts only
answers within it (per second of the phase they are delivered in). Three
strategies face the identical arrival sequence:

(a) ``gather + Semaphore``: a task per request, ``async with Semaphore(C)``
    around the upstream call, all gathered at the end;
(b) ``WorkerPool``, static: ``max_workers=C``, the default three BLOCK levels
    (weights 4:2:1) with generous bounds, ``await submit(priority=...)``;
(c) ``WorkerPool`` with the overload features: the same ``C`` as a maximum, an
    ``AdaptiveLimiter``, a queue with CoDel, ``max_total`` with guaranteed shares
    per class, a per-request ``deadline=``, ``adjust(load)`` driven by the
    measured arrival and completion rates, and ``submit_nowait`` (a refused
    caller hears at once).

Every request ends in exactly one of answered (on time or late), shed (refused
or dropped before it ran) or failed (an error, or still unfinished when the run
is cut ``grace`` seconds after the last arrival); this is asserted per run,
and the pools' own counters are checked against it.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import json
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from rich.table import Table
from rich.text import Text

import asyncperf as ap
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

__all__ = ["SUITE", "Scenario", "Workload", "analyse", "make_workload", "run_strategy"]

NAME = "backpressure"

# -- the scenario -----------------------------------------------------------------------

#: Calls the upstream takes at once at its base latency (and every strategy's bound).
CONCURRENCY = 32
#: Mean base latency of one upstream call, seconds (lognormal).
MEAN_LATENCY = 0.020
#: The lognormal's sigma: median 17.6 ms, p99 56 ms for a 20 ms mean.
SIGMA = 0.5
#: A request's deadline as a multiple of the mean base latency.
DEADLINE_FACTOR = 10.0
#: Offered load of each phase, as a multiple of the upstream's capacity.
LOADS = (0.5, 2.0, 3.0, 0.5)
PHASE_SECONDS = 1.5
QUICK_PHASE_SECONDS = 0.25
#: The warm-up run before the repetitions: the same scenario with short phases.
WARMUP_PHASE_SECONDS = 0.1
#: Share of the requests in each class, most important first.
CLASS_MIX = (0.1, 0.3, 0.6)
CLASSES = ("high", "normal", "low")
SEED = 20_240_917
#: Seconds after the last arrival the run waits for outstanding answers before it is cut.
GRACE = 0.25
QUICK_GRACE = 0.1
#: Repetitions of each strategy (fewer than the micro suites: each run takes seconds).
REPEAT = 3
#: Width of the arrival windows of the recovery measurement, seconds.
RECOVERY_WINDOW = 0.1
#: A window of arrivals is healthy when at least this share is answered within the deadline.
HEALTHY = 0.99
#: Step of the grid on which the requests in the system are counted, seconds.
DRAIN_STEP = 0.01

# -- strategy (c): the overload settings ------------------------------------------------

LIMITER_ALGORITHM: Literal["vegas", "gradient2", "aimd"] = "gradient2"
LIMITER_WINDOW = 50
#: CoDel target and interval as multiples of the mean base latency.
CODEL_TARGET_FACTOR = 1.0
CODEL_INTERVAL_FACTOR = 5.0
#: The queue's bound on all levels together, as a multiple of C.
MAX_TOTAL_FACTOR = 2
#: Guaranteed share of ``max_total`` per class (high, normal, low).
SHARES = (0.25, 0.45, 0.2)
#: A job must start this many mean base latencies before the request's deadline.
START_MARGIN = 2.0
#: How often the supervisor calls ``queue.adjust(load)``, and over what it measures.
ADJUST_EVERY = 0.05
ADJUST_OVER = 0.25
ADJUST_FULL_LOAD = 4.0
#: (b)'s per-level bound: generous, so ``submit`` never waits.
STATIC_PENDING = 100_000
WEIGHTS = (4, 2, 1)

# Outcomes of a request.
PENDING, ANSWERED, REJECTED, DROPPED, FAILED, UNFINISHED = range(6)
_OUTCOMES = ("pending", "answered", "rejected", "dropped", "failed", "unfinished")

SEMAPHORE = "gather_semaphore"
STATIC = "pool_static"
OVERLOAD = "pool_overload"
STRATEGIES = (SEMAPHORE, STATIC, OVERLOAD)
LABELS = {
    SEMAPHORE: "(a) gather + Semaphore",
    STATIC: "(b) WorkerPool, static",
    OVERLOAD: "(c) WorkerPool + overload",
}
SHORT = {SEMAPHORE: "(a)", STATIC: "(b)", OVERLOAD: "(c)"}


@dataclass(frozen=True, slots=True)
class Scenario:
    """The upstream, the phases of offered load, the classes and the deadline of one run."""

    concurrency: int = CONCURRENCY
    mean_latency: float = MEAN_LATENCY
    sigma: float = SIGMA
    deadline_factor: float = DEADLINE_FACTOR
    loads: tuple[float, ...] = LOADS
    phase_seconds: float = PHASE_SECONDS
    mix: tuple[float, ...] = CLASS_MIX
    seed: int = SEED
    grace: float = GRACE
    recovery_window: float = RECOVERY_WINDOW

    @property
    def capacity(self) -> float:
        """Calls per second the upstream completes at its base latency."""
        return self.concurrency / self.mean_latency

    @property
    def deadline(self) -> float:
        """Seconds from arrival after which an answer is useless."""
        return self.deadline_factor * self.mean_latency

    @property
    def duration(self) -> float:
        """Seconds of the arrival schedule (all phases)."""
        return len(self.loads) * self.phase_seconds

    def phase_names(self) -> list[str]:
        """``p1 0.5x``, ``p2 2x``, ...: unique names of the phases, in order."""
        return [f"p{index + 1} {load:g}x" for index, load in enumerate(self.loads)]

    def settings(self) -> dict[str, Any]:
        """Everything that defines the run, for the JSON file."""
        data = asdict(self)
        data.update(
            capacity_per_s=self.capacity,
            deadline_s=self.deadline,
            classes=list(CLASSES),
            phases=[
                {"name": name, "load": load, "start_s": i * self.phase_seconds}
                for i, (name, load) in enumerate(zip(self.phase_names(), self.loads, strict=True))
            ],
            latency="lognormal base latency x max(1, in_flight / concurrency) at call start",
            arrivals="open-loop Poisson, rate = load x capacity per phase",
        )
        return data


@dataclass(frozen=True, slots=True)
class Workload:
    """The seeded arrival sequence every strategy faces: one entry per request."""

    #: Arrival time, seconds from the start of the run (ascending).
    arrivals: list[float]
    #: Class of the request: 0 high, 1 normal, 2 low.
    classes: list[int]
    #: Base latency of the request's upstream call, seconds.
    service: list[float]
    #: Phase the request arrived in.
    phases: list[int]

    def __len__(self) -> int:
        return len(self.arrivals)


def make_workload(s: Scenario) -> Workload:
    """The arrival sequence of ``s``: Poisson per phase, class and base latency per request."""
    rng = random.Random(s.seed)
    mu = math.log(s.mean_latency) - s.sigma**2 / 2  # so that the mean is mean_latency
    cumulative = [sum(s.mix[: i + 1]) for i in range(len(s.mix))]
    arrivals: list[float] = []
    classes: list[int] = []
    service: list[float] = []
    phases: list[int] = []
    for index, load in enumerate(s.loads):
        t = index * s.phase_seconds
        end = t + s.phase_seconds
        rate = load * s.capacity
        while True:
            t += rng.expovariate(rate)
            if t >= end:
                break
            arrivals.append(t)
            pick = rng.random() * cumulative[-1]
            classes.append(bisect.bisect_right(cumulative, pick))
            service.append(rng.lognormvariate(mu, s.sigma))
            phases.append(index)
    return Workload(arrivals, classes, service, phases)


# -- running one strategy -----------------------------------------------------------------


class Upstream:
    """A simulated upstream: base latency while at most ``capacity`` calls are in flight.

    Beyond that, every call that starts takes ``base * in_flight / capacity``:
    pushed past capacity it gets slower for everyone, and completes no more.
    """

    __slots__ = ("calls", "capacity", "in_flight", "peak")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_flight = 0
        self.peak = 0
        self.calls = 0

    async def call(self, base: float) -> None:
        """One call: sleeps its base latency, stretched by concurrency beyond capacity."""
        self.in_flight += 1
        self.calls += 1
        in_flight = self.in_flight
        if in_flight > self.peak:
            self.peak = in_flight
        try:
            await asyncio.sleep(base * max(1.0, in_flight / self.capacity))
        finally:
            self.in_flight -= 1


class Recorder:
    """The outcome and end time of every request; each request is settled exactly once."""

    __slots__ = ("end", "left", "outcome", "reasons", "t0")

    def __init__(self, n: int) -> None:
        self.outcome = [PENDING] * n
        self.end = [0.0] * n
        self.left = n
        self.t0 = 0.0
        self.reasons: Counter[str] = Counter()

    def settle(self, i: int, outcome: int) -> None:
        if self.outcome[i] != PENDING:
            raise AssertionError(
                f"request {i} ended twice: {_OUTCOMES[self.outcome[i]]}, then {_OUTCOMES[outcome]}"
            )
        self.outcome[i] = outcome
        self.end[i] = time.monotonic() - self.t0
        self.left -= 1


@dataclass(slots=True)
class Run:
    """What one run of one strategy recorded (times in seconds from the start)."""

    strategy: str
    outcome: list[int]
    end: list[float]
    lag: list[float]
    cut: float
    reasons: dict[str, int]
    upstream_peak: int
    #: (time, limit) each time the limit in force changed (only (c)).
    limits: list[tuple[float, int]] = field(default_factory=list)
    #: The pool's own counters at the end (only (b) and (c)), checked against the outcomes.
    checks: dict[str, int] = field(default_factory=dict)


Issue = Callable[[int], Awaitable[None] | None]


async def _drive(w: Workload, rec: Recorder, issue: Issue) -> list[float]:
    """Issue every request at its arrival time (open loop); how late each one was issued."""
    arrivals = w.arrivals
    now = time.monotonic
    t0 = rec.t0
    lag = [0.0] * len(arrivals)
    for i, at in enumerate(arrivals):
        elapsed = now() - t0
        if at > elapsed:
            await asyncio.sleep(at - elapsed)
            elapsed = now() - t0
        lag[i] = elapsed - at
        pending = issue(i)
        if pending is not None:
            await pending
    return lag


async def _wait_settled(rec: Recorder, seconds: float) -> None:
    """Wait until every request has ended, or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while rec.left and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


async def _await_callbacks(rec: Recorder) -> None:
    """Let the jobs' done callbacks run; a request still pending after that was lost."""
    for _ in range(100):
        if not rec.left:
            return
        await asyncio.sleep(0)
    lost = [i for i, outcome in enumerate(rec.outcome) if outcome == PENDING]
    raise AssertionError(f"{len(lost)} request(s) never ended (first: {lost[:5]}): a lost job")


def _job_done(rec: Recorder, i: int, job: asyncio.Future[None]) -> None:
    """Settle a pool job that did not answer (the job itself records an answer)."""
    if job.cancelled():
        rec.settle(i, UNFINISHED)  # cancelled by aclose() at the cut
        return
    exc = job.exception()
    if exc is None:
        if rec.outcome[i] != ANSWERED:
            raise AssertionError(f"request {i}: the job succeeded but no answer was recorded")
    elif isinstance(exc, ap.Dropped):
        if exc.reason is ap.DropReason.SHUTDOWN:
            rec.settle(i, UNFINISHED)
        else:
            rec.reasons[exc.reason.value] += 1
            rec.settle(i, DROPPED)
    else:
        rec.reasons[type(exc).__name__] += 1
        rec.settle(i, FAILED)


async def run_semaphore(w: Workload, s: Scenario) -> Run:
    """(a) A task per request, ``async with asyncio.Semaphore(C)`` around the call, gathered."""
    rec = Recorder(len(w))
    upstream = Upstream(s.concurrency)
    sem = asyncio.Semaphore(s.concurrency)
    service = w.service
    tasks: list[asyncio.Task[None]] = []

    async def handle(i: int) -> None:
        try:
            async with sem:
                await upstream.call(service[i])
        except asyncio.CancelledError:
            rec.settle(i, UNFINISHED)
            raise
        rec.settle(i, ANSWERED)

    def issue(i: int) -> None:
        tasks.append(asyncio.create_task(handle(i)))

    rec.t0 = time.monotonic()
    lag = await _drive(w, rec, issue)
    await _wait_settled(rec, s.grace)
    cut = time.monotonic() - rec.t0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await _await_callbacks(rec)
    return Run(SEMAPHORE, rec.outcome, rec.end, lag, cut, dict(rec.reasons), upstream.peak)


def _check_pool(run: Run, stats: ap.PoolStatistics) -> None:
    """The pool's counters must agree with what the callers saw."""
    counts = Counter(run.outcome)
    checks = {
        "submitted": stats.submitted,
        "completed": stats.completed,
        "rejected": stats.rejected,
        "dropped": stats.dropped,
        "cancelled": stats.cancelled,
        "failed": stats.failed,
        "timed_out": stats.timed_out,
    }
    run.checks = checks
    settled = (
        stats.pending
        + stats.active
        + stats.completed
        + stats.failed
        + stats.cancelled
        + stats.timed_out
        + stats.dropped
    )
    problems = []
    if stats.submitted != settled:
        problems.append(f"pool: submitted {stats.submitted} != sum of its outcomes {settled}")
    if stats.completed != counts[ANSWERED]:
        problems.append(f"completed {stats.completed} != answered {counts[ANSWERED]}")
    if stats.rejected != counts[REJECTED]:
        problems.append(f"pool rejected {stats.rejected} != callers refused {counts[REJECTED]}")
    if stats.dropped + stats.cancelled != counts[DROPPED] + counts[UNFINISHED]:
        problems.append(
            f"dropped {stats.dropped} + cancelled {stats.cancelled} != "
            f"dropped {counts[DROPPED]} + unfinished {counts[UNFINISHED]} seen by callers"
        )
    if stats.failed + stats.timed_out != counts[FAILED]:
        problems.append(f"failed {stats.failed} + timed out {stats.timed_out} != {counts[FAILED]}")
    if stats.submitted + stats.rejected != len(run.outcome):
        problems.append(
            f"submitted {stats.submitted} + rejected {stats.rejected} != offered {len(run.outcome)}"
        )
    if problems:
        raise AssertionError(f"{LABELS[run.strategy]}: accounting mismatch: " + "; ".join(problems))


async def run_static_pool(w: Workload, s: Scenario) -> Run:
    """(b) ``WorkerPool(max_workers=C)``, three BLOCK levels, ``await submit(priority=)``."""
    rec = Recorder(len(w))
    upstream = Upstream(s.concurrency)
    service = w.service
    classes = w.classes
    levels = [
        ap.Level(priority=p, max_size=STATIC_PENDING, weight=WEIGHTS[p]) for p in range(len(s.mix))
    ]
    queue: ap.PriorityQueue[ap.Job[Any]] = ap.PriorityQueue(levels)

    async def work(i: int) -> None:
        await upstream.call(service[i])
        rec.settle(i, ANSWERED)

    async with ap.WorkerPool(max_workers=s.concurrency, queue=queue) as pool:

        async def issue(i: int) -> None:
            job = await pool.submit(work, i, priority=classes[i])
            job.add_done_callback(functools.partial(_job_done, rec, i))

        rec.t0 = time.monotonic()
        lag = await _drive(w, rec, issue)
        await _wait_settled(rec, s.grace)
        cut = time.monotonic() - rec.t0
        await pool.aclose()
        await _await_callbacks(rec)
        stats = pool.statistics()
    run = Run(STATIC, rec.outcome, rec.end, lag, cut, dict(rec.reasons), upstream.peak)
    _check_pool(run, stats)
    return run


def overload_queue(s: Scenario) -> ap.PriorityQueue[ap.Job[Any]]:
    """(c)'s queue: DROP_OLDEST levels, CoDel, ``max_total`` with guaranteed shares."""
    total = MAX_TOTAL_FACTOR * s.concurrency
    levels = [
        ap.Level(
            priority=p,
            max_size=total,
            strategy=ap.DropStrategy.DROP_OLDEST,
            weight=WEIGHTS[p],
            share=SHARES[p],
        )
        for p in range(len(s.mix))
    ]
    codel = ap.CoDel(
        target=CODEL_TARGET_FACTOR * s.mean_latency,
        interval=CODEL_INTERVAL_FACTOR * s.mean_latency,
    )
    return ap.PriorityQueue(levels, codel=codel, max_total=total, full_load=ADJUST_FULL_LOAD)


def overload_limiter(s: Scenario) -> ap.AdaptiveLimiter:
    """(c)'s limiter: at most C, starting at C."""
    return ap.AdaptiveLimiter(
        LIMITER_ALGORITHM,
        initial=s.concurrency,
        min_limit=max(1, s.concurrency // 4),
        max_limit=s.concurrency,
        window=LIMITER_WINDOW,
    )


async def run_overload_pool(
    w: Workload,
    s: Scenario,
    *,
    limiter: ap.AdaptiveLimiter | None = None,
    adjust: bool = True,
    max_workers: int | None = None,
) -> Run:
    """(c) WorkerPool + limiter + CoDel + max_total shares + deadlines, ``submit_nowait``."""
    # limiter, adjust and max_workers (default C) are for experiments; the suite
    # runs the defaults.
    rec = Recorder(len(w))
    upstream = Upstream(s.concurrency)
    service = w.service
    classes = w.classes
    arrivals = w.arrivals
    start_by = s.deadline - START_MARGIN * s.mean_latency
    queue = overload_queue(s)
    if limiter is None:
        limiter = overload_limiter(s)
    limits: list[tuple[float, int]] = []
    offered = [0]
    answered = [0]

    async def work(i: int) -> None:
        await upstream.call(service[i])
        answered[0] += 1
        rec.settle(i, ANSWERED)

    async def supervise() -> None:
        # load = offered / completed over the last ADJUST_OVER seconds: the
        # measured overload factor while the pool is saturated.
        history: list[tuple[int, int]] = []
        steps = max(1, round(ADJUST_OVER / ADJUST_EVERY))
        while True:
            await asyncio.sleep(ADJUST_EVERY)
            history.append((offered[0], answered[0]))
            if len(history) <= steps:
                continue
            (off0, ans0), (off1, ans1) = history[-steps - 1], history[-1]
            completed = max(ans1 - ans0, 1)
            queue.adjust(min((off1 - off0) / completed, 100.0))

    bound = s.concurrency if max_workers is None else max_workers
    async with ap.WorkerPool(max_workers=bound, queue=queue, limiter=limiter) as pool:
        rec.t0 = time.monotonic()
        limits.append((0.0, pool.limit))

        def on_limit(_limit: int) -> None:
            limits.append((time.monotonic() - rec.t0, pool.limit))

        limiter.add_listener(on_limit)

        def issue(i: int) -> None:
            offered[0] += 1
            remaining = arrivals[i] + start_by - (time.monotonic() - rec.t0)
            if remaining <= 0:
                rec.reasons["late_issue"] += 1
                rec.settle(i, REJECTED)
                return
            try:
                job = pool.submit_nowait(work, i, priority=classes[i], deadline=remaining)
            except (ap.Rejected, ap.QueueFull):
                rec.reasons["rejected"] += 1
                rec.settle(i, REJECTED)
                return
            job.add_done_callback(functools.partial(_job_done, rec, i))

        supervisor = asyncio.create_task(supervise()) if adjust else None
        try:
            lag = await _drive(w, rec, issue)
            await _wait_settled(rec, s.grace)
        finally:
            if supervisor is not None:
                supervisor.cancel()
                await asyncio.gather(supervisor, return_exceptions=True)
        cut = time.monotonic() - rec.t0
        await pool.aclose()
        await _await_callbacks(rec)
        stats = pool.statistics()
        limiter.remove_listener(on_limit)
    run = Run(OVERLOAD, rec.outcome, rec.end, lag, cut, dict(rec.reasons), upstream.peak, limits)
    late_issue = run.reasons.get("late_issue", 0)
    _check_pool(run, replace(stats, rejected=stats.rejected + late_issue))
    return run


RUNNERS: dict[str, Callable[[Workload, Scenario], Coroutine[Any, Any, Run]]] = {
    SEMAPHORE: run_semaphore,
    STATIC: run_static_pool,
    OVERLOAD: run_overload_pool,
}


async def run_strategy(strategy: str, w: Workload, s: Scenario) -> Run:
    """Run one strategy on the workload and check that every request ended exactly once."""
    run = await RUNNERS[strategy](w, s)
    counts = Counter(run.outcome)
    ended = sum(counts[o] for o in (ANSWERED, REJECTED, DROPPED, FAILED, UNFINISHED))
    if counts[PENDING] or ended != len(w):
        raise AssertionError(
            f"{LABELS[strategy]}: {len(w)} offered but {ended} ended "
            f"({counts[PENDING]} never ended): a lost request"
        )
    return run


# -- analysis -------------------------------------------------------------------------------


#: Metrics per phase and class: (key, unit, higher is better).
GROUP_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("offered", "requests", True),
    ("offered_per_s", "requests/s", True),
    ("goodput_per_s", "answers/s", True),
    ("goodput_pct_capacity", "%", True),
    ("answered", "requests", True),
    ("on_time", "requests", True),
    ("late", "requests", False),
    ("late_pct", "%", False),
    ("rejected", "requests", False),
    ("dropped", "requests", False),
    ("shed", "requests", False),
    ("shed_pct", "%", False),
    ("failed", "requests", False),
    ("unfinished", "requests", False),
    ("unfinished_pct", "%", False),
    ("p50_ms", "ms", False),
    ("p99_ms", "ms", False),
    ("wait_p99_ms", "ms", False),
)
#: Metrics per run: (key, unit, higher is better).
RUN_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("high_p99_ratio", "x", False),
    ("recovery_s", "s", False),
    ("recovered", "bool", True),
    ("drain_s", "s", False),
    ("drained", "bool", True),
    ("backlog", "requests", False),
    ("issue_lag_p99_ms", "ms", False),
    ("issue_lag_max_ms", "ms", False),
    ("upstream_peak", "calls", False),
    ("base_p50_ms", "ms", False),
    ("base_p99_ms", "ms", False),
    ("duration_s", "s", False),
)

ALL = "all"
OVERALL = "overall"


def _group(
    s: Scenario,
    w: Workload,
    run: Run,
    members: list[int],
    seconds: float,
    delivered: int,
) -> dict[str, float]:
    """The figures of one group of requests (a class in a phase, by arrival).

    ``delivered`` is the on-time answers of the group's class delivered during
    the group's time span (goodput is counted when the answer comes); every
    other figure is about the requests that arrived in it.
    """
    deadline = s.deadline
    arrivals = w.arrivals
    counts = Counter(run.outcome[i] for i in members)
    on_time = 0
    latencies: list[float] = []
    waits: list[float] = []
    for i in members:
        outcome = run.outcome[i]
        if outcome == ANSWERED:
            latency = run.end[i] - arrivals[i]
            latencies.append(latency)
            waits.append(latency - w.service[i])
            if latency <= deadline:
                on_time += 1
        elif outcome == UNFINISHED:
            # Admitted and never answered: its latency is at least this long.
            latencies.append(run.end[i] - arrivals[i])
    latencies.sort()
    waits.sort()
    offered = len(members)
    shed = counts[REJECTED] + counts[DROPPED]
    late = counts[ANSWERED] - on_time
    goodput = delivered / seconds
    return {
        "offered": offered,
        "offered_per_s": offered / seconds,
        "goodput_per_s": goodput,
        "goodput_pct_capacity": 100.0 * goodput / s.capacity,
        "answered": counts[ANSWERED],
        "on_time": on_time,
        "late": late,
        "late_pct": 100.0 * late / offered if offered else 0.0,
        "rejected": counts[REJECTED],
        "dropped": counts[DROPPED],
        "shed": shed,
        "shed_pct": 100.0 * shed / offered if offered else 0.0,
        "failed": counts[FAILED] + counts[UNFINISHED],
        "unfinished": counts[UNFINISHED],
        "unfinished_pct": 100.0 * counts[UNFINISHED] / offered if offered else 0.0,
        "p50_ms": 1e3 * quantile(latencies, 0.50),
        "p99_ms": 1e3 * quantile(latencies, 0.99),
        "wait_p99_ms": 1e3 * quantile(waits, 0.99),
    }


def _recovery(s: Scenario, w: Workload, run: Run) -> tuple[float, bool]:
    """Seconds from the start of the last phase until every later arrival window is healthy.

    The last phase is cut into windows of ``recovery_window`` seconds by
    arrival time. A window is healthy when at least 99% of the requests that
    arrived in it were answered within the deadline (a shed, failed,
    unfinished or late request counts against it; an empty window is
    healthy): the p99 of the latency callers see, counting no answer as an
    infinite one, is within the deadline. The recovery time is the start of
    the first window from which every window to the end of the phase is
    healthy; when the last window is not, the run did not recover within the
    phase and the phase length is returned with False.
    """
    last = len(s.loads) - 1
    start = last * s.phase_seconds
    width = s.recovery_window
    count = max(1, math.ceil(s.phase_seconds / width - 1e-9))
    total = [0] * count
    good = [0] * count
    for i, at in enumerate(w.arrivals):
        if w.phases[i] != last:
            continue
        index = min(int((at - start) / width), count - 1)
        total[index] += 1
        if run.outcome[i] == ANSWERED and run.end[i] - at <= s.deadline:
            good[index] += 1
    recovered_from: int | None = None
    for index in range(count - 1, -1, -1):
        if total[index] and good[index] < HEALTHY * total[index]:
            break
        recovered_from = index
    if recovered_from is None:
        return s.phase_seconds, False
    return recovered_from * width, True


def _drain(s: Scenario, w: Workload, run: Run) -> tuple[float, bool, int]:
    """Seconds from the start of the last phase until no more than C requests are in the system.

    Counted every 10 ms: requests arrived and not yet ended (answered, shed,
    failed or cut), so at most C means nothing waits for an upstream slot.
    When it never gets there within the phase: the phase length, and False.
    The third figure is the count in the system when the last phase starts.
    """
    start = (len(s.loads) - 1) * s.phase_seconds
    ends = sorted(run.end)
    arrivals = w.arrivals

    def in_system(t: float) -> int:
        return bisect.bisect_right(arrivals, t) - bisect.bisect_right(ends, t)

    backlog = in_system(start)
    steps = round(s.phase_seconds / DRAIN_STEP)
    for step in range(steps + 1):
        if in_system(start + step * DRAIN_STEP) <= s.concurrency:
            return step * DRAIN_STEP, True, backlog
    return s.phase_seconds, False, backlog


def analyse(s: Scenario, w: Workload, run: Run) -> dict[str, float]:
    """Every figure of one run, flat: ``"<phase>/<class>/<metric>"`` and ``"run/<metric>"``."""
    figures: dict[str, float] = {}
    names = s.phase_names()
    by_phase_class: dict[tuple[int, int], list[int]] = {}
    for i, (phase, cls) in enumerate(zip(w.phases, w.classes, strict=True)):
        by_phase_class.setdefault((phase, cls), []).append(i)
    # On-time answers per class by the phase they were delivered in; the last
    # row counts all of them (answers in the grace period too) for "overall".
    delivered = [[0] * len(CLASSES) for _ in range(len(names) + 1)]
    for i, outcome in enumerate(run.outcome):
        if outcome == ANSWERED and run.end[i] - w.arrivals[i] <= s.deadline:
            cls = w.classes[i]
            delivered[-1][cls] += 1
            phase = int(run.end[i] / s.phase_seconds)
            if phase < len(names):
                delivered[phase][cls] += 1
    groups: list[tuple[str, float, list[int], int]] = []
    for p, name in enumerate(names):
        phase_all: list[int] = []
        for c, cls_name in enumerate(CLASSES):
            members = by_phase_class.get((p, c), [])
            phase_all.extend(members)
            groups.append((f"{name}/{cls_name}", s.phase_seconds, members, delivered[p][c]))
        groups.append((f"{name}/{ALL}", s.phase_seconds, sorted(phase_all), sum(delivered[p])))
    for c, cls_name in enumerate(CLASSES):
        members = [i for i, cls in enumerate(w.classes) if cls == c]
        groups.append((f"{OVERALL}/{cls_name}", s.duration, members, delivered[-1][c]))
    groups.append((f"{OVERALL}/{ALL}", s.duration, list(range(len(w))), sum(delivered[-1])))
    for key, seconds, members, good in groups:
        for metric, value in _group(s, w, run, members, seconds, good).items():
            figures[f"{key}/{metric}"] = value
    peak = names[max(range(len(s.loads)), key=lambda p: s.loads[p])]
    figures["run/high_p99_ratio"] = (
        figures[f"{peak}/{CLASSES[0]}/p99_ms"] / figures[f"{names[0]}/{CLASSES[0]}/p99_ms"]
    )
    recovery, recovered = _recovery(s, w, run)
    drain, drained, backlog = _drain(s, w, run)
    lags = sorted(run.lag)
    first = [w.service[i] for i in range(len(w)) if w.phases[i] == 0]
    first.sort()
    figures.update(
        {
            "run/recovery_s": recovery,
            "run/recovered": float(recovered),
            "run/drain_s": drain,
            "run/drained": float(drained),
            "run/backlog": backlog,
            "run/issue_lag_p99_ms": 1e3 * quantile(lags, 0.99),
            "run/issue_lag_max_ms": 1e3 * (lags[-1] if lags else 0.0),
            "run/upstream_peak": run.upstream_peak,
            "run/base_p50_ms": 1e3 * quantile(first, 0.50),
            "run/base_p99_ms": 1e3 * quantile(first, 0.99),
            "run/duration_s": run.cut,
        }
    )
    for reason, count in run.reasons.items():
        figures[f"run/shed_{reason}"] = count
    for counter, count in run.checks.items():
        figures[f"run/pool_{counter}"] = count
    if run.limits:
        for p, name in enumerate(names):
            figures[f"{name}/{ALL}/limit_mean"] = _mean_limit(
                run.limits, p * s.phase_seconds, (p + 1) * s.phase_seconds
            )
        figures["run/limit_min"] = min(limit for _, limit in run.limits)
        figures["run/limit_final"] = run.limits[-1][1]
        figures["run/limit_changes"] = len(run.limits) - 1
    return figures


def _mean_limit(limits: list[tuple[float, int]], start: float, end: float) -> float:
    """The time-weighted mean of the limit in force between ``start`` and ``end``."""
    total = 0.0
    for index, (t, limit) in enumerate(limits):
        until = limits[index + 1][0] if index + 1 < len(limits) else math.inf
        overlap = min(until, end) - max(t, start)
        if overlap > 0:
            total += overlap * limit
    return total / (end - start)


# -- the suite ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Store:
    """Per loop: the scenario, a workload per repetition, the figures of every timed run."""

    scenario: Scenario
    #: Repetition k replays workloads[k] (seed + k) for every strategy.
    workloads: list[Workload]
    runs: dict[str, list[dict[str, float]]]


_STORES: dict[str, _Store] = {}


def _scenario(config: Config) -> Scenario:
    """The default scenario, or the short one of ``--quick``."""
    if config.quick:
        return Scenario(phase_seconds=QUICK_PHASE_SECONDS, grace=QUICK_GRACE, recovery_window=0.05)
    return Scenario()


def _figure(s: Scenario, figures: dict[str, float]) -> float:
    """The repetition's headline: goodput over the overload phases, answers per second."""
    overload = [name for name, load in zip(s.phase_names(), s.loads, strict=True) if load > 1]
    return statistics.fmean(figures[f"{name}/{ALL}/goodput_per_s"] for name in overload)


def _maker(strategy: str, store: _Store) -> Callable[[], Coroutine[Any, Any, float]]:
    """The case's coroutine factory: the harness's first call is the warm-up (short phases)."""
    calls = 0
    warm_scenario = replace(
        store.scenario, phase_seconds=WARMUP_PHASE_SECONDS, grace=WARMUP_PHASE_SECONDS
    )
    warm_workload = make_workload(warm_scenario)

    async def measure() -> float:
        nonlocal calls
        calls += 1
        if calls == 1:
            s, w = warm_scenario, warm_workload
        else:
            rep = (calls - 2) % len(store.workloads)
            s = replace(store.scenario, seed=store.scenario.seed + rep)
            w = store.workloads[rep]
        run = await run_strategy(strategy, w, s)
        figures = analyse(s, w, run)
        if calls > 1:
            store.runs[strategy].append(figures)
        return _figure(s, figures)

    return measure


def _settings_line(s: Scenario) -> str:
    """(c)'s settings in one printed line."""
    return (
        f"(c) settings: {LIMITER_ALGORITHM} limiter (window {LIMITER_WINDOW}, limit "
        f"{max(1, s.concurrency // 4)}..{s.concurrency}, from {s.concurrency}); CoDel target "
        f"{CODEL_TARGET_FACTOR * s.mean_latency * 1e3:g} ms, interval "
        f"{CODEL_INTERVAL_FACTOR * s.mean_latency * 1e3:g} ms, adaptive LIFO; DROP_OLDEST "
        f"levels, weights {':'.join(map(str, WEIGHTS))}, max_total "
        f"{MAX_TOTAL_FACTOR * s.concurrency} with shares "
        f"{'/'.join(f'{x:.0%}' for x in SHARES)}; deadline= "
        f"{(s.deadline - START_MARGIN * s.mean_latency) * 1e3:g} ms to start; adjust(load) "
        f"every {ADJUST_EVERY * 1e3:g} ms from submitted/completed over "
        f"{ADJUST_OVER * 1e3:g} ms (full_load {ADJUST_FULL_LOAD:g}); submit_nowait."
    )


def plan(config: Config, loop: LoopChoice) -> Plan:
    """One case per strategy; repetition k of every strategy replays the same arrivals."""
    s = _scenario(config)
    repeat = min(config.repeat, REPEAT)
    workloads = [make_workload(replace(s, seed=s.seed + k)) for k in range(repeat)]
    store = _Store(s, workloads, {strategy: [] for strategy in STRATEGIES})
    _STORES[loop] = store
    result = Plan(cases=[])
    for strategy in STRATEGIES:
        result.cases.append(
            Case(
                case=NAME,
                contender=strategy,
                label=LABELS[strategy],
                make=_maker(strategy, store),
                items=1,
                unit="answers/s",
                scale=1.0,
                raw_unit="answers/s",
                max_repeat=REPEAT,
                note="goodput over the overload phases; the warm-up figure is from a run "
                f"with {WARMUP_PHASE_SECONDS:g} s phases",
            )
        )
    fewer = f", not {config.repeat}," if repeat < config.repeat else ""
    result.notes.append(
        f"{repeat} repetitions of each strategy{fewer} as each run takes "
        f"{s.duration:g} s of arrivals plus up to {s.grace:g} s of grace. Repetition k "
        f"replays seed {s.seed}+k for every strategy; the warm-up uses "
        f"{WARMUP_PHASE_SECONDS:g} s phases. --jobs does not apply."
    )
    result.notes.append(
        f"upstream: C={s.concurrency} at once, lognormal base latency mean "
        f"{s.mean_latency * 1e3:g} ms (sigma {s.sigma:g}), capacity {s.capacity:,.0f}/s; "
        f"phases {' -> '.join(f'{x:g}x' for x in s.loads)} of {s.phase_seconds:g} s; "
        f"~{len(workloads[0]):,} requests a run, classes {'/'.join(CLASSES)} "
        f"{'/'.join(f'{m:.0%}' for m in s.mix)}, deadline {s.deadline * 1e3:g} ms."
    )
    result.notes.append(_settings_line(s))
    return result


def _median(values: list[float]) -> float:
    """The median, NaN for no values."""
    return statistics.median(values) if values else math.nan


class _Medians:
    """Median over the repetitions of each figure of one strategy."""

    def __init__(self, runs: list[dict[str, float]]) -> None:
        self.runs = runs

    def samples(self, key: str) -> list[float]:
        return [run[key] for run in self.runs if key in run and not math.isnan(run[key])]

    def __call__(self, key: str) -> float:
        return _median(self.samples(key))


def _ms(value: float, censored: bool = False) -> str:
    """A latency cell, ``≥`` in front when it is a lower bound."""
    if math.isnan(value):
        return "-"
    return ("≥" if censored else "") + fmt(value)


def _seconds(value: float, reached: float, phase: float) -> str:
    """A recovery or drain cell: ``> phase`` when the run never got there."""
    if math.isnan(value):
        return "-"
    if reached < 0.5:
        return f"> {phase:g}"
    return f"{value:.2f}"


def _metric_specs() -> dict[str, tuple[str, bool]]:
    """Unit and direction (higher is better) of every metric."""
    specs = {metric: (unit, higher) for metric, unit, higher in GROUP_METRICS}
    specs.update({metric: (unit, higher) for metric, unit, higher in RUN_METRICS})
    specs["limit_mean"] = ("calls", True)
    specs["limit_min"] = ("calls", True)
    specs["limit_final"] = ("calls", True)
    specs["limit_changes"] = ("changes", False)
    return specs


def _json_results(loop: str, store: _Store) -> list[Result]:
    """Every figure as a result: case ``<phase>/<class>/<metric>`` or ``run/<metric>``."""
    specs = _metric_specs()
    results: list[Result] = []
    for strategy in STRATEGIES:
        runs = store.runs[strategy]
        keys = sorted({key for run in runs for key in run})
        for key in keys:
            metric = key.rsplit("/", 1)[-1]
            unit, higher = specs.get(metric, ("requests", False))
            clean = [run[key] for run in runs if key in run and not math.isnan(run[key])]
            if not clean:
                continue
            results.append(
                Result.side_figure(
                    NAME,
                    key,
                    strategy,
                    LABELS[strategy],
                    loop,
                    unit,
                    clean,
                    "median of the repetitions; best/worst = the best/worst repetition",
                    higher_is_better=higher,
                )
            )
    return results


def _bar_cell(bar: Bar | None) -> Text:
    """A bar's verdict with the measured ratio, for a table cell."""
    if bar is None:
        return Text("")
    return Text.assemble(bar.cell(), f" ({bar.ratio:.2f})")


def _versus(goodput: float, base: float, strategy: str) -> str:
    """Goodput as a multiple of (a)'s: ``∞`` where (a) had none."""
    if strategy == SEMAPHORE or math.isnan(goodput):
        return "-"
    if base > 0:
        return f"{goodput / base:.1f}x"
    return "∞" if goodput > 0 else "-"


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    """Print the tables of one loop, check the bars, and add every figure to the results."""
    store = _STORES[loop]
    s = store.scenario
    loop_name = results[0].loop if results else loop
    med = {strategy: _Medians(store.runs[strategy]) for strategy in STRATEGIES}
    names = s.phase_names()
    first, last = names[0], names[-1]
    overload = [name for name, load in zip(names, s.loads, strict=True) if load > 1]
    peak = names[max(range(len(s.loads)), key=lambda p: s.loads[p])]
    top = CLASSES[0]
    repeat = len(store.runs[OVERLOAD])

    # The bars, on (c): the high class's p99 at the peak within 2x its unloaded p99
    # (the ratio of each run, median over the runs), and goodput >= 90% of capacity
    # in every overload phase.
    c = med[OVERLOAD]
    bars: dict[tuple[str, str], Bar] = {}
    bars[(peak, top)] = h.bar(
        NAME,
        loop_name,
        f"{peak}/{top}",
        OVERLOAD,
        f"{top} p99 at {peak} <= 2x its unloaded p99 ({first}, same run)",
        c("run/high_p99_ratio"),
        "<=",
        2.0,
    )
    for name in overload:
        bars[(name, ALL)] = h.bar(
            NAME,
            loop_name,
            f"{name}/{ALL}",
            OVERLOAD,
            f"goodput at {name} >= 0.9x capacity",
            c(f"{name}/{ALL}/goodput_pct_capacity") / 100.0,
            ">=",
            0.9,
        )

    table = Table(
        title=f"overload: goodput and latency per class — loop {loop_name}",
        caption=f"median of {repeat} runs; capacity {s.capacity:,.0f}/s (C={s.concurrency}, "
        f"mean base latency {s.mean_latency * 1e3:g} ms); deadline {s.deadline * 1e3:g} ms. "
        "goodput = answers within the deadline per second; x (a) = goodput / (a)'s; "
        "p50/p99 = arrival to answer of admitted requests (≥: includes requests still "
        "unanswered at the cut, as lower bounds); shed = refused + dropped before running; "
        "late = answered after the deadline; cut = unanswered when the run was cut "
        f"({s.grace:g} s after the last arrival; counted as failed). Bars in parentheses: "
        "the measured ratio.",
    )
    for column in ("phase", "class", "strategy"):
        table.add_column(column)
    for column in (
        "offered/s",
        "goodput/s",
        "% cap",
        "x (a)",
        "p50 ms",
        "p99 ms",
        "shed %",
        "late %",
        "cut %",
    ):
        table.add_column(column, justify="right")
    table.add_column("bar")
    for phase in [*overload, OVERALL]:
        for cls in (ALL, *CLASSES):
            key = f"{phase}/{cls}"
            base_goodput = med[SEMAPHORE](f"{key}/goodput_per_s")
            for strategy in STRATEGIES:
                m = med[strategy]
                goodput = m(f"{key}/goodput_per_s")
                censored = m(f"{key}/unfinished") > 0
                table.add_row(
                    phase,
                    cls,
                    SHORT[strategy],
                    fmt(m(f"{key}/offered_per_s")),
                    fmt(goodput),
                    f"{m(f'{key}/goodput_pct_capacity'):.0f}",
                    _versus(goodput, base_goodput, strategy),
                    _ms(m(f"{key}/p50_ms"), censored),
                    _ms(m(f"{key}/p99_ms"), censored),
                    f"{m(f'{key}/shed_pct'):.1f}",
                    f"{m(f'{key}/late_pct'):.1f}",
                    f"{m(f'{key}/unfinished_pct'):.1f}",
                    _bar_cell(bars.get((phase, cls)) if strategy == OVERLOAD else None),
                )
            table.add_section()
    h.console.print(table)

    side = Table(
        title=f"overload: unloaded, recovery and accounting — loop {loop_name}",
        caption=f"median of {repeat} runs. unloaded = {first}: p50/p99 of all, p99 of "
        f"{top}; {top} wait p99 = the {top} class's p99 of time spent outside the upstream "
        f"call at {peak}; recovery = from the start of {last} until every later "
        f"{s.recovery_window * 1e3:g} ms window of arrivals has >= 99% answered within the "
        f"deadline; backlog = requests in the system (arrived, not ended) when {last} starts; "
        f"drain = from then until <= C are (> {s.phase_seconds:g}: not within the phase); "
        "counts over the whole run; lag = how "
        "late the open-loop generator issued arrivals; peak = most calls in flight at the "
        f"upstream; limit = the pool's limit in force, mean over {peak} / lowest",
    )
    side.add_column("strategy")
    for column in (
        "unloaded ms",
        f"{top} p99",
        f"{top} wait p99",
        f"{last} gp %",
        "recovery s",
        "backlog",
        "drain s",
        "offered",
        "on time",
        "late",
        "shed",
        "cut",
        "lag p99/max ms",
        "peak",
        "limit",
    ):
        side.add_column(column, justify="right")
    for strategy in STRATEGIES:
        m = med[strategy]
        limit = (
            f"{m(f'{peak}/{ALL}/limit_mean'):.1f}/{m('run/limit_min'):.0f}"
            if m.samples("run/limit_min")
            else "-"
        )
        side.add_row(
            LABELS[strategy],
            f"{_ms(m(f'{first}/{ALL}/p50_ms'))}/{_ms(m(f'{first}/{ALL}/p99_ms'))}",
            _ms(m(f"{first}/{top}/p99_ms")),
            _ms(m(f"{peak}/{top}/wait_p99_ms")),
            f"{m(f'{last}/{ALL}/goodput_pct_capacity'):.0f}",
            _seconds(m("run/recovery_s"), m("run/recovered"), s.phase_seconds),
            f"{m('run/backlog'):,.0f}",
            _seconds(m("run/drain_s"), m("run/drained"), s.phase_seconds),
            f"{m(f'{OVERALL}/{ALL}/offered'):,.0f}",
            f"{m(f'{OVERALL}/{ALL}/on_time'):,.0f}",
            f"{m(f'{OVERALL}/{ALL}/late'):,.0f}",
            f"{m(f'{OVERALL}/{ALL}/shed'):,.0f}",
            f"{m(f'{OVERALL}/{ALL}/unfinished'):,.0f}",
            f"{fmt(m('run/issue_lag_p99_ms'))}/{fmt(m('run/issue_lag_max_ms'))}",
            f"{m('run/upstream_peak'):.0f}",
            limit,
        )
    h.console.print(side)

    for strategy in STRATEGIES:
        keys = sorted(_reason_keys(store, strategy))
        if keys:
            h.console.print(
                f"{SHORT[strategy]} shed by reason (median per run): "
                + ", ".join(
                    f"{key.removeprefix('run/shed_')} {med[strategy](key):,.0f}" for key in keys
                )
            )
    a = med[SEMAPHORE]
    lag_max = max(med[strategy]("run/issue_lag_max_ms") for strategy in STRATEGIES)
    h.console.print(
        f"sanity ({loop_name}): at {first}, (a) answers in p50 {fmt(a(f'{first}/{ALL}/p50_ms'))}"
        f" / p99 {fmt(a(f'{first}/{ALL}/p99_ms'))} ms against base latencies of p50 "
        f"{fmt(a('run/base_p50_ms'))} / p99 {fmt(a('run/base_p99_ms'))} ms; the generator "
        f"issued arrivals at most {fmt(lag_max)} ms late (median run). Accounting: every "
        "request ended exactly once as answered, shed or failed in every run (asserted), and "
        "the pools' own counters agree."
    )
    h.results.setdefault(NAME, []).extend(_json_results(loop_name, store))
    settings = {
        "loop": loop_name,
        "scenario": s.settings(),
        "seeds": [s.seed + k for k in range(len(store.workloads))],
        "repeat": repeat,
        "strategies": _strategy_settings(s),
        "definitions": DEFINITIONS,
    }
    h.notes.setdefault(NAME, []).append("settings " + json.dumps(settings, sort_keys=True))


def _reason_keys(store: _Store, strategy: str) -> set[str]:
    """The ``run/shed_<reason>`` keys any run of the strategy recorded."""
    return {key for run in store.runs[strategy] for key in run if key.startswith("run/shed_")}


DEFINITIONS = {
    "goodput_per_s": "answers within the deadline (arrival to answer) delivered during the "
    "phase, per second (overall: all of them over the arrival schedule's length)",
    "goodput_pct_capacity": "goodput_per_s / (C / mean base latency)",
    "offered, on_time, late, shed, failed, unfinished": "counts of the requests that "
    "arrived in the phase; offered = on_time + late + shed + failed",
    "p50_ms/p99_ms": "arrival to answer of admitted requests; requests unanswered at the cut "
    "count with their time until the cut (a lower bound)",
    "wait_p99_ms": "p99 of arrival to answer minus the request's base latency, answered only",
    "shed_pct": "(refused at admission + dropped from the queue) / offered",
    "failed": "an error, or unfinished when the run is cut grace seconds after the last "
    "arrival (unfinished)",
    "recovery_s": "from the start of the last phase until every later arrival window "
    "(recovery_window) has >= 99% answered within the deadline; the phase length when it "
    "never does (recovered = 0)",
    "backlog": "requests in the system (arrived, not yet ended) when the last phase starts",
    "drain_s": "from the start of the last phase until <= C requests are in the system, on a "
    "10 ms grid; the phase length when it never does (drained = 0)",
    "high_p99_ratio": "p99 of the high class at the peak phase / its p99 in the first phase, "
    "same run",
    "limit_mean": "the pool's limit in force, time-weighted mean over the phase (c only)",
    "issue_lag": "how late the open-loop generator issued an arrival",
}


def _strategy_settings(s: Scenario) -> dict[str, Any]:
    """Every strategy's settings, for the JSON file."""
    total = MAX_TOTAL_FACTOR * s.concurrency
    return {
        SEMAPHORE: {"semaphore": s.concurrency, "task_per_request": True},
        STATIC: {
            "max_workers": s.concurrency,
            "levels": [
                {
                    "priority": p,
                    "max_size": STATIC_PENDING,
                    "strategy": "block",
                    "weight": WEIGHTS[p],
                }
                for p in range(len(s.mix))
            ],
            "submit": "await pool.submit(fn, i, priority=class)",
        },
        OVERLOAD: {
            "max_workers": s.concurrency,
            "limiter": {
                "algorithm": LIMITER_ALGORITHM,
                "initial": s.concurrency,
                "min_limit": max(1, s.concurrency // 4),
                "max_limit": s.concurrency,
                "window": LIMITER_WINDOW,
            },
            "codel": {
                "target_s": CODEL_TARGET_FACTOR * s.mean_latency,
                "interval_s": CODEL_INTERVAL_FACTOR * s.mean_latency,
                "adaptive_lifo": True,
            },
            "max_total": total,
            "levels": [
                {
                    "priority": p,
                    "max_size": total,
                    "strategy": "drop_oldest",
                    "weight": WEIGHTS[p],
                    "share": SHARES[p],
                }
                for p in range(len(s.mix))
            ],
            "deadline_s": s.deadline - START_MARGIN * s.mean_latency,
            "adjust": {
                "every_s": ADJUST_EVERY,
                "over_s": ADJUST_OVER,
                "load": "submitted / completed over the last over_s",
                "full_load": ADJUST_FULL_LOAD,
            },
            "submit": "pool.submit_nowait(fn, i, priority=class, deadline=start-by)",
        },
    }


SUITE = Suite(
    name=NAME,
    description="Overload: an open-loop Poisson arrival process at 0.5x, 2x, 3x, 0.5x of a "
    "simulated upstream's capacity, three priority classes, a deadline per request; "
    "gather + Semaphore against a static WorkerPool and a WorkerPool with an adaptive "
    "limiter, CoDel, priority shedding and deadlines. Goodput, latency per class, shed "
    "ratio and time to recover.",
    plan=plan,
    report=report,
)
