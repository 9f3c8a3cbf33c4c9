"""The demo behind ``asyncperf demo``: a WorkerPool under a burst, and what it counted.

A producer submits a burst of jobs over three priority levels at once. Each job
stands for a call to a slow upstream (a seeded lognormal latency, a small error
rate, a short timeout on a few of them). The high level rejects when full, the
normal level drops its oldest job, the low level blocks the producer
(backpressure). Mid-burst the pool is resized up, later back down. At the end
the demo prints the pool's and the queue's statistics next to the outcomes it
observed itself, and checks that the two agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import asyncperf as ap

__all__ = [
    "PRIORITIES",
    "Check",
    "DemoEvent",
    "DemoOptions",
    "DemoResult",
    "Outcome",
    "UpstreamError",
    "demo",
    "print_report",
]


class _LevelPlan(NamedTuple):
    priority: int
    share: float  # of the burst's jobs
    strategy: ap.DropStrategy
    weight: int
    size: float  # the level's bound, as a share of the burst's jobs


#: With the default 20,000 jobs the bounds are 200, 2,000 and 5,000: the burst
#: overflows the first two levels, and the producer waits for room in the third.
#: The bounds scale with ``jobs``, so a smaller burst shows the same.
_LEVELS = (
    _LevelPlan(0, 0.10, ap.DropStrategy.REJECT, 8, 0.01),
    _LevelPlan(1, 0.30, ap.DropStrategy.DROP_OLDEST, 2, 0.10),
    _LevelPlan(2, 0.60, ap.DropStrategy.BLOCK, 1, 0.25),
)
_BY_PRIORITY = {plan.priority: plan for plan in _LEVELS}
_BLOCKING = tuple(plan.priority for plan in _LEVELS if plan.strategy is ap.DropStrategy.BLOCK)
#: The priority levels of the demo, most important first.
PRIORITIES = tuple(plan.priority for plan in _LEVELS)
# The shares of the burst's jobs ended when the pool is resized up, then back down.
_RESIZE_UP_AT = 0.15
_RESIZE_DOWN_AT = 0.60
_REFRESH_INTERVAL = 0.1


class Outcome(enum.StrEnum):
    """How one job of the demo ended, as the demo saw it."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    DROPPED = "dropped"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class UpstreamError(Exception):
    """The simulated upstream failed the call."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What the demo runs.

    Args:
        jobs: how many jobs the burst submits.
        workers: the pool's ``max_workers``; the pool is resized to twice this
            mid-burst and back later.
        min_workers: the pool's ``min_workers`` (at most ``workers``).
        seed: seeds the latencies, errors, priorities and timeouts.
        median_latency: the median of the upstream's lognormal latency, seconds.
        latency_sigma: the sigma of that lognormal.
        error_rate: the share of calls the upstream fails.
        timeout_every: one job in this many gets ``short_timeout``.
        short_timeout: seconds those jobs may run.

    Raises:
        ValueError: an option is out of range (the message names it).
    """

    jobs: int = 20_000
    workers: int = 32
    min_workers: int = 4
    seed: int = 1
    median_latency: float = 0.005
    latency_sigma: float = 0.5
    error_rate: float = 0.01
    timeout_every: int = 50
    short_timeout: float = 0.010

    def __post_init__(self) -> None:
        for name in ("jobs", "workers", "timeout_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0 <= self.min_workers <= self.workers:
            raise ValueError("min_workers must be >= 0 and <= workers")
        for name in ("median_latency", "short_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.latency_sigma < 0:
            raise ValueError("latency_sigma must be >= 0")
        if not 0 <= self.error_rate <= 1:
            raise ValueError("error_rate must be between 0 and 1")

    def level_size(self, priority: int) -> int:
        """The bound of the level ``priority`` for this many jobs."""
        return max(1, int(self.jobs * _BY_PRIORITY[priority].size))


@dataclass(frozen=True, slots=True)
class DemoEvent:
    """Something the demo did to the pool while the burst ran."""

    at: float  # seconds since the burst started
    message: str


@dataclass(frozen=True, slots=True)
class Check:
    """One comparison of the pool's own figures with what the demo observed."""

    name: str
    pool: int
    demo: int

    @property
    def ok(self) -> bool:
        return self.pool == self.demo


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What a demo run observed, and the pool's and queue's statistics at its end."""

    options: DemoOptions
    loop: str
    elapsed: float
    #: Outcome counts per priority level, as the demo observed them.
    outcomes: dict[int, Counter[Outcome]]
    #: Submission-to-result latency (p50, p99) in seconds of the OK jobs, per level.
    latency: dict[int, tuple[float, float]]
    #: Seconds the producer spent waiting in ``submit`` for room in the BLOCK level.
    backpressure_wait: float
    events: tuple[DemoEvent, ...]
    pool: ap.PoolStatistics
    queue: ap.QueueStatistics
    checks: tuple[Check, ...]

    @property
    def consistent(self) -> bool:
        """Whether every count the demo observed agrees with the statistics."""
        return all(check.ok for check in self.checks)

    def total(self, outcome: Outcome) -> int:
        """How many jobs ended in ``outcome`` over all levels."""
        return sum(counts[outcome] for counts in self.outcomes.values())


@dataclass(slots=True)
class _Tracked:
    """One accepted job, and when it was submitted and when it ended."""

    priority: int
    job: ap.Job[float]
    submitted_at: float
    ended_at: float = 0.0


async def _upstream_call(latency: float, fail: bool) -> float:
    """A call to the simulated upstream: waits ``latency`` seconds, then answers or fails."""
    await asyncio.sleep(latency)
    if fail:
        raise UpstreamError("upstream answered 503")
    return latency


@dataclass(frozen=True, slots=True)
class _Call:
    priority: int
    latency: float
    fail: bool
    timeout: float | None


def _plan(options: DemoOptions) -> list[_Call]:
    """The burst: one seeded draw per job of its level, latency, failure and timeout."""
    rng = random.Random(options.seed)
    mu = math.log(options.median_latency)
    weights = [plan.share for plan in _LEVELS]
    priorities = rng.choices(PRIORITIES, weights=weights, k=options.jobs)
    return [
        _Call(
            priority=priority,
            latency=rng.lognormvariate(mu, options.latency_sigma),
            fail=rng.random() < options.error_rate,
            timeout=options.short_timeout if index % options.timeout_every == 0 else None,
        )
        for index, priority in enumerate(priorities, start=1)
    ]


def _percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return (0.0, 0.0)
    values.sort()
    last = len(values) - 1
    return (values[round(0.50 * last)], values[round(0.99 * last)])


class _Run:
    """The mutable state of one demo run, and the operator that resizes the pool."""

    def __init__(self, options: DemoOptions, pool: ap.WorkerPool, console: Console | None) -> None:
        self.options = options
        self.pool = pool
        self.tracked: list[_Tracked] = []
        self.outcomes: dict[int, Counter[Outcome]] = {p: Counter() for p in PRIORITIES}
        self.events: list[DemoEvent] = []
        self.started = time.perf_counter()
        self.backpressure_wait = 0.0
        self.ended = 0  # accepted jobs over, as their done callbacks report
        self.resized_up = self.resized_down = False
        self.print: Callable[[str], None] = console.print if console is not None else _ignore

    def event(self, message: str, note: str = "") -> None:
        stats = self.pool.statistics()
        event = DemoEvent(time.perf_counter() - self.started, message)
        self.events.append(event)
        self.print(
            f"[cyan]{event.at:6.2f}s[/cyan]  {message}\n"
            f"         [dim]workers {stats.workers}, active {stats.active}, "
            f"pending {stats.pending:,}{note}[/dim]"
        )

    def job_ended(self, tracked: _Tracked, job: asyncio.Future[float]) -> None:
        """Done callback of every accepted job: times it, and resizes the pool on cue."""
        tracked.ended_at = time.perf_counter()
        if not job.cancelled():
            # Mark the error as seen: the collector awaits every job, but not the
            # ones the pool drops when an interrupted demo closes it early.
            job.exception()
        self.ended += 1
        jobs = self.options.jobs
        if self.pool.closed:
            return
        if not self.resized_up and self.ended >= jobs * _RESIZE_UP_AT:
            self.resize_up()
        elif not self.resized_down and self.ended >= max(jobs * _RESIZE_DOWN_AT, 2):
            self.resize_down()

    def resize_up(self) -> None:
        self.resized_up = True
        workers = self.options.workers
        self.pool.max_workers = 2 * workers
        self.event(f"resize up: max_workers {workers} -> {2 * workers}")

    def resize_down(self) -> None:
        self.resized_down = True
        workers = self.options.workers
        self.pool.max_workers = workers
        self.event(
            f"resize down: max_workers {2 * workers} -> {workers}",
            note="; busy ones retire after their job",
        )

    def settled(self, stats: ap.PoolStatistics) -> int:
        """Jobs that are over: ended in the pool, or never accepted."""
        rejected = sum(counts[Outcome.REJECTED] for counts in self.outcomes.values())
        ended = stats.completed + stats.failed + stats.cancelled + stats.timed_out + stats.dropped
        return ended + rejected


def _ignore(_message: str) -> None:
    pass


async def _produce(run: _Run, calls: list[_Call]) -> None:
    """Submit the burst: ``submit`` (waits for room) at the BLOCK level, else ``submit_nowait``."""
    pool = run.pool
    for call in calls:
        try:
            if call.priority in _BLOCKING:
                before = time.perf_counter()
                job = await pool.submit(
                    _upstream_call,
                    call.latency,
                    call.fail,
                    priority=call.priority,
                    timeout=call.timeout,
                )
                submitted_at = time.perf_counter()
                run.backpressure_wait += submitted_at - before
            else:
                job = pool.submit_nowait(
                    _upstream_call,
                    call.latency,
                    call.fail,
                    priority=call.priority,
                    timeout=call.timeout,
                )
                submitted_at = time.perf_counter()
        except (ap.Rejected, ap.QueueFull):
            run.outcomes[call.priority][Outcome.REJECTED] += 1
            continue
        tracked = _Tracked(call.priority, job, submitted_at)
        job.add_done_callback(functools.partial(run.job_ended, tracked))
        run.tracked.append(tracked)
    run.event(f"burst submitted: {len(run.tracked):,} of {len(calls):,} jobs accepted")


async def _collect(run: _Run) -> dict[int, tuple[float, float]]:
    """Await every accepted job, classify how it ended, and time the OK ones."""
    latencies: dict[int, list[float]] = {p: [] for p in PRIORITIES}
    for tracked in run.tracked:
        try:
            await tracked.job
        except ap.JobTimeout:
            outcome = Outcome.TIMEOUT
        except ap.Dropped:
            outcome = Outcome.DROPPED
        except UpstreamError:
            outcome = Outcome.ERROR
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this task is being cancelled (which cancels the job too)
            outcome = Outcome.CANCELLED
        else:
            outcome = Outcome.OK
            latencies[tracked.priority].append(tracked.ended_at - tracked.submitted_at)
        run.outcomes[tracked.priority][outcome] += 1
    if run.resized_up and not run.resized_down:
        run.resize_down()  # a burst too small to reach the cue: restore the size anyway
    return {p: _percentiles(values) for p, values in latencies.items()}


def _update_bar(run: _Run, bar: Progress) -> None:
    stats = run.pool.statistics()
    bar.update(
        bar.task_ids[0],
        completed=run.settled(stats),
        status=(
            f"workers {stats.workers:>3}/{stats.max_workers:<3} "
            f"active {stats.active:>3}  pending {stats.pending:>6,}"
        ),
    )
    bar.refresh()


async def _show_progress(run: _Run, bar: Progress) -> None:
    """Refresh the progress bar and the pool's live figures until cancelled."""
    while True:
        _update_bar(run, bar)
        await asyncio.sleep(_REFRESH_INTERVAL)


def _checks(run: _Run, pool: ap.PoolStatistics, queue: ap.QueueStatistics) -> tuple[Check, ...]:
    seen: Counter[Outcome] = Counter()
    for counts in run.outcomes.values():
        seen.update(counts)
    ended = pool.completed + pool.failed + pool.cancelled + pool.timed_out + pool.dropped
    checks = [
        Check("submitted == completed+failed+cancelled+timed_out+dropped", pool.submitted, ended),
        Check("pending + active (all jobs over)", pool.pending + pool.active, 0),
        Check("submitted == jobs accepted", pool.submitted, len(run.tracked)),
        Check("completed == ok", pool.completed, seen[Outcome.OK]),
        Check("failed == error", pool.failed, seen[Outcome.ERROR]),
        Check("timed_out == timeout", pool.timed_out, seen[Outcome.TIMEOUT]),
        Check("dropped == dropped", pool.dropped, seen[Outcome.DROPPED]),
        Check("cancelled == cancelled", pool.cancelled, seen[Outcome.CANCELLED]),
        Check("rejected == rejected", pool.rejected, seen[Outcome.REJECTED]),
    ]
    accepted = Counter(tracked.priority for tracked in run.tracked)
    for level in queue.levels:
        counts = run.outcomes[level.priority]
        name = f"level {level.priority}"
        # A job cancelled while queued is counted as removed, one cancelled while running
        # as dequeued: together they are the jobs that were not dropped.
        taken = counts.total() - counts[Outcome.DROPPED] - counts[Outcome.REJECTED]
        checks += [
            Check(f"{name} enqueued == accepted", level.enqueued, accepted[level.priority]),
            Check(
                f"{name} dequeued + removed == ok+error+timeout+cancelled",
                level.dequeued + level.removed,
                taken,
            ),
            Check(f"{name} dropped == dropped", level.dropped, counts[Outcome.DROPPED]),
            Check(f"{name} rejected == rejected", level.rejected, counts[Outcome.REJECTED]),
        ]
    return tuple(checks)


async def demo(
    options: DemoOptions | None = None,
    *,
    console: Console | None = None,
    progress: bool = True,
) -> DemoResult:
    """Run the demo on the running loop and return what it observed.

    Args:
        options: what to run; default :class:`DemoOptions()`.
        console: where to print the header, events, progress and the report;
            None prints nothing.
        progress: show a live progress bar while the burst runs (only with a console).

    Returns:
        The outcomes the demo observed, the pool's and queue's statistics, and
        the checks that compare them (``result.consistent``).
    """
    options = options if options is not None else DemoOptions()
    levels = [
        ap.Level(plan.priority, options.level_size(plan.priority), plan.strategy, plan.weight)
        for plan in _LEVELS
    ]
    pool = ap.WorkerPool(
        options.workers,
        min_workers=options.min_workers,
        queue=ap.PriorityQueue(levels, default_priority=1),
        name="demo",
    )
    run = _Run(options, pool, console)
    loop = ap.loop_name()
    run.print(
        f"[bold]asyncperf demo[/bold]: {options.jobs:,} jobs on [bold]{loop}[/bold], "
        f"{options.workers} workers (min {options.min_workers}), seed {options.seed}"
    )
    for lv in levels:
        run.print(
            f"  level {lv.priority}: {lv.strategy.value}, max {lv.max_size:,}, "
            f"weight {lv.weight}, {_BY_PRIORITY[lv.priority].share:.0%} of the jobs"
        )
    calls = _plan(options)
    bar = (
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            auto_refresh=False,  # refreshed from the loop: no thread writes to the console
        )
        if console is not None and progress
        else None
    )
    with contextlib.ExitStack() as stack:
        if bar is not None:
            bar.add_task("burst", total=options.jobs, status="")
            stack.enter_context(bar)  # stops the live display however the demo ends
        async with pool:
            async with asyncio.TaskGroup() as tasks:
                monitor = tasks.create_task(_show_progress(run, bar)) if bar else None
                run.started = time.perf_counter()
                try:
                    await _produce(run, calls)
                    latency = await _collect(run)
                finally:
                    if monitor is not None:
                        monitor.cancel()
                elapsed = time.perf_counter() - run.started
            # Every job is over: the snapshot is final, taken before the pool drains.
            pool_stats = pool.statistics()
            queue_stats = pool.queue.statistics()
            if bar is not None:
                _update_bar(run, bar)
    result = DemoResult(
        options=options,
        loop=loop,
        elapsed=elapsed,
        outcomes=run.outcomes,
        latency=latency,
        backpressure_wait=run.backpressure_wait,
        events=tuple(run.events),
        pool=pool_stats,
        queue=queue_stats,
        checks=_checks(run, pool_stats, queue_stats),
    )
    if console is not None:
        print_report(result, console)
    return result


def _format_stat(name: str, value: object) -> str:
    if isinstance(value, float):
        return f"{value * 1000:,.2f} ms"  # the float fields are all durations
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(title: str, *headings: str) -> Table:
    """A compact table: headings after the first are right-aligned (numbers)."""
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
        show_edge=False,
    )
    for index, heading in enumerate(headings):
        table.add_column(heading, justify="left" if index == 0 else "right")
    return table


def print_report(result: DemoResult, console: Console) -> None:
    """Print the statistics tables, the outcomes and the consistency checks."""
    ended = sum(result.total(o) for o in Outcome if o is not Outcome.REJECTED)
    rate = ended / result.elapsed if result.elapsed > 0 else 0.0
    blocking = ", ".join(str(priority) for priority in _BLOCKING)
    console.print()
    console.print(f"loop          [bold]{result.loop}[/bold]")
    console.print(
        f"elapsed       [bold]{result.elapsed:.2f} s[/bold] for {result.options.jobs:,} jobs "
        f"({rate:,.0f} accepted jobs ended per second)"
    )
    console.print(
        f"backpressure  the producer waited {result.backpressure_wait:.2f} s in submit() "
        f"for room at level {blocking}"
    )
    console.print()

    pool_table = _table("pool.statistics()", "field", "value", "field", "value")
    fields = [field.name for field in dataclasses.fields(result.pool)]
    half = (len(fields) + 1) // 2
    for left, right in itertools.zip_longest(fields[:half], fields[half:]):
        cells = [left, _format_stat(left, getattr(result.pool, left))]
        if right is not None:
            cells += [right, _format_stat(right, getattr(result.pool, right))]
        pool_table.add_row(*cells)
    pool_table.columns[2].justify = "left"
    console.print(pool_table)
    console.print()

    level_table = _table(
        "pool.queue.statistics()",
        "level",
        "strategy",
        "max",
        "depth",
        "enqueued",
        "dequeued",
        "dropped",
        "rejected",
    )
    for level in result.queue.levels:
        level_table.add_row(
            str(level.priority),
            level.strategy.value,
            *(
                f"{value:,}"
                for value in (
                    level.max_size,
                    level.depth,
                    level.enqueued,
                    level.dequeued,
                    level.dropped,
                    level.rejected,
                )
            ),
        )
    level_table.columns[1].justify = "left"
    console.print(level_table)
    console.print()

    outcome_table = _table(
        "outcomes the demo observed", "outcome", *(f"level {p}" for p in PRIORITIES), "total"
    )
    for outcome in Outcome:
        outcome_table.add_row(
            outcome.value,
            *(f"{result.outcomes[p][outcome]:,}" for p in PRIORITIES),
            f"{result.total(outcome):,}",
        )
    for name, index in (("ok latency p50", 0), ("ok latency p99", 1)):
        outcome_table.add_row(
            name, *(f"{result.latency[p][index] * 1000:,.1f} ms" for p in PRIORITIES), ""
        )
    console.print(outcome_table)
    console.print()

    check_table = _table("the demo's counts against the statistics", "check", "pool", "demo", "")
    for check in result.checks:
        check_table.add_row(
            check.name,
            f"{check.pool:,}",
            f"{check.demo:,}",
            "[green]OK[/green]" if check.ok else "[bold red]MISMATCH[/bold red]",
        )
    console.print(check_table)
    console.print()
    if result.consistent:
        console.print("consistency: [bold green]OK[/bold green]")
    else:
        failed = sum(1 for check in result.checks if not check.ok)
        console.print(f"consistency: [bold red]MISMATCH[/bold red] ({failed} checks failed)")
