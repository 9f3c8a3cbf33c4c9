"""find_leaks: run a coroutine round after round and report what keeps growing.

How a leak is told from noise:

1. Tracing starts, and ``warmup`` rounds run first, not judged: what the code
   allocates once (imports, caches, interned strings, free lists) is in the
   baseline, and a later round that frees some of it (a cache entry replaced)
   is seen to. Objects allocated before the check and replaced during it are
   the blind spot: their frees are not seen, their replacements are (a ring of
   samples filled before the check looks like growth until it has turned
   over once; more warm-up rounds cure it).
2. A baseline is measured; then each of ``rounds`` rounds runs
   the coroutine, lets the loop run once (so done-callbacks that drop finished
   tasks run), calls :func:`gc.collect` and measures: traced bytes and traced
   blocks (allocated objects) from a tracemalloc snapshot, and the asyncio tasks
   still alive (not done, the checking task aside).
3. Only memory allocated with a frame of the checked code on the stack counts
   (see :class:`_Judge`): not the snapshots, not the checker's own bookkeeping
   (its per-round series are arrays allocated before tracing), and not the event
   loop's own free lists and caches, which fill up by about one block per round
   for hundreds of rounds in a program that creates tasks, and would otherwise
   look exactly like a leak of one object per round.
4. A series *grows* when it rose in at least ``min_growth_fraction`` of the
   rounds **and** its typical growth per round (the Theil-Sen slope: the median
   of the slopes between every pair of rounds, which one odd round cannot move)
   is at least the threshold: ``threshold_bytes`` for bytes, half an object for
   blocks, half a task for tasks. A cache that fills up and stops, or memory
   that goes up and down, does not grow by this rule; one object kept per
   round does (its block count rises by one in every round).
5. The allocation sites that grew most between the baseline and the last round
   are reported, each charged to the caller's line rather than the library's
   (see :func:`_site_of`: a task leaked through ``asyncio.create_task`` is shown
   at the line that created it), with the tasks created during the rounds and
   still alive, grouped by coroutine and creation line.

Only coroutine factories are taken: a leak check of a sync function can wrap
it in an ``async def``. tracemalloc is process-wide, so one check runs at a time.
"""

from __future__ import annotations

import array
import asyncio
import gc
import inspect
import itertools
import linecache
import os
import sys
import sysconfig
import tracemalloc
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from types import FrameType
from typing import Any

from asyncperf._validate import check_int, check_number

__all__ = ["AllocationSite", "LeakReport", "LeakTrend", "LiveTaskGroup", "find_leaks"]

#: Frames to keep per allocation when this checker starts tracemalloc.
DEFAULT_FRAMES = 16

_ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep
# Frames in these files are never shown as the site of a leak: the allocation is
# charged to the nearest caller outside them.
_INTERNAL_FILES = frozenset(
    {
        os.path.normcase(os.path.abspath(tracemalloc.__file__)),
        os.path.normcase(os.path.abspath(__file__)),
        os.path.normcase(
            os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "testing")
        )
        + os.sep
        + "_leaks.py",
    }
)

_running = False  # tracemalloc is process-wide: one leak check at a time


@dataclass(frozen=True, slots=True)
class LeakTrend:
    """One measured series and the verdict on it.

    Attributes:
        values: the baseline (after warm-up) then the value after each round.
        rounds_grown: rounds in which the value rose above the previous one.
        per_round: the typical change per round (Theil-Sen slope).
        threshold: the ``per_round`` at or above which (with enough rounds
            grown) the series counts as growing.
        growing: the verdict: a steady rise, a leak.
    """

    values: tuple[int, ...]
    rounds_grown: int
    per_round: float
    threshold: float
    growing: bool

    @property
    def rounds(self) -> int:
        """Rounds measured (one less than the values)."""
        return len(self.values) - 1

    @property
    def total_growth(self) -> int:
        """The last value minus the baseline."""
        return self.values[-1] - self.values[0]

    def as_dict(self) -> dict[str, Any]:
        """The trend as plain JSON-ready values."""
        return {
            "values": list(self.values),
            "rounds_grown": self.rounds_grown,
            "per_round": self.per_round,
            "threshold": self.threshold,
            "growing": self.growing,
            "total_growth": self.total_growth,
        }


@dataclass(frozen=True, slots=True)
class AllocationSite:
    """Memory allocated at one line and still held, and its growth over the rounds.

    Attributes:
        filename: the file of the line (the first frame outside tracemalloc,
            asyncio and the checker, when the traceback has one).
        lineno: the line.
        size_diff: bytes held at the end minus bytes held at the baseline.
        count_diff: blocks (objects) held at the end minus at the baseline.
        size: bytes held at the end.
        count: blocks held at the end.
    """

    filename: str
    lineno: int
    size_diff: int
    count_diff: int
    size: int
    count: int

    @property
    def location(self) -> str:
        """``file:line``."""
        return f"{self.filename}:{self.lineno}"

    @property
    def source(self) -> str:
        """The text of the line, stripped (``""`` when the file cannot be read)."""
        return linecache.getline(self.filename, self.lineno).strip()

    def as_dict(self) -> dict[str, Any]:
        """The site as plain JSON-ready values."""
        return {
            "location": self.location,
            "filename": self.filename,
            "lineno": self.lineno,
            "size_diff": self.size_diff,
            "count_diff": self.count_diff,
            "size": self.size,
            "count": self.count,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class LiveTaskGroup:
    """Tasks created during the rounds and still not done at the end, by coroutine.

    Attributes:
        coroutine: the qualified name of the task's coroutine (or its repr).
        location: where that coroutine is defined (``file:line``), when known.
        created_at: the line that created the tasks (``file:line``, from the
            tracemalloc traceback of the Task object; the caller's line, not
            asyncio's), or ``""`` when tracemalloc did not see it.
        count: how many such tasks were alive.
    """

    coroutine: str
    location: str
    created_at: str
    count: int

    def as_dict(self) -> dict[str, Any]:
        """As plain JSON-ready values."""
        return {
            "coroutine": self.coroutine,
            "location": self.location,
            "created_at": self.created_at,
            "count": self.count,
        }


@dataclass(frozen=True, slots=True)
class LeakReport:
    """What :func:`find_leaks` found.

    Attributes:
        leaked: whether anything grew steadily: traced memory (bytes or
            blocks) or live tasks.
        rounds: rounds judged.
        warmup: rounds run before the baseline.
        traced_bytes: traced memory per round, in bytes.
        traced_blocks: traced memory blocks (allocated objects) per round.
        tasks: live asyncio tasks per round (the checking task aside).
        sites: the allocation sites that grew most, most first (at most ``top``).
        live_tasks: tasks created during the rounds and still alive at the end.
        min_growth_fraction: the share of rounds a series must have grown in.
        frames: frames tracemalloc kept per allocation.
        started_tracing: whether the check started (and so stopped) tracemalloc.
    """

    leaked: bool
    rounds: int
    warmup: int
    traced_bytes: LeakTrend
    traced_blocks: LeakTrend
    tasks: LeakTrend
    sites: tuple[AllocationSite, ...]
    live_tasks: tuple[LiveTaskGroup, ...]
    min_growth_fraction: float
    frames: int
    started_tracing: bool
    reasons: tuple[str, ...] = field(default=())

    @property
    def memory_leaked(self) -> bool:
        """Traced memory grew steadily (in bytes or in blocks)."""
        return self.traced_bytes.growing or self.traced_blocks.growing

    @property
    def tasks_leaked(self) -> bool:
        """The count of live tasks grew steadily."""
        return self.tasks.growing

    def format(self) -> str:
        """The report as plain text: the verdict, the three series, the sites, the tasks."""
        lines = [
            f"leak check: {'LEAK FOUND' if self.leaked else 'no leak found'} "
            f"({self.rounds} rounds after {self.warmup} warm-up rounds; "
            f"growth counts when in >= {self.min_growth_fraction:.0%} of rounds)"
        ]
        lines.extend(f"  - {reason}" for reason in self.reasons)
        for name, unit, trend in (
            ("traced memory", " B", self.traced_bytes),
            ("traced blocks", "", self.traced_blocks),
            ("live tasks", "", self.tasks),
        ):
            lines.append(
                f"{name}: {trend.values[0]:,}{unit} -> {trend.values[-1]:,}{unit}, "
                f"{trend.per_round:+,.1f}{unit}/round, rose in {trend.rounds_grown}/"
                f"{trend.rounds} rounds{'  <- GROWING' if trend.growing else ''}"
            )
        if self.sites:
            lines.append("top allocation sites by growth (baseline -> last round):")
            for site in self.sites:
                source = f"  {site.source}" if site.source else ""
                lines.append(
                    f"  {site.size_diff:+,} B  {site.count_diff:+,} blocks  {site.location}{source}"
                )
        if self.live_tasks:
            lines.append("tasks created during the rounds and still alive:")
            for group in self.live_tasks:
                where = f" ({group.location})" if group.location else ""
                created = f", created at {group.created_at}" if group.created_at else ""
                lines.append(f"  {group.count:,} x {group.coroutine}{where}{created}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """The whole report as plain JSON-ready values."""
        return {
            "leaked": self.leaked,
            "memory_leaked": self.memory_leaked,
            "tasks_leaked": self.tasks_leaked,
            "reasons": list(self.reasons),
            "rounds": self.rounds,
            "warmup": self.warmup,
            "min_growth_fraction": self.min_growth_fraction,
            "frames": self.frames,
            "started_tracing": self.started_tracing,
            "traced_bytes": self.traced_bytes.as_dict(),
            "traced_blocks": self.traced_blocks.as_dict(),
            "tasks": self.tasks.as_dict(),
            "sites": [site.as_dict() for site in self.sites],
            "live_tasks": [group.as_dict() for group in self.live_tasks],
        }


# -- the rounds ----------------------------------------------------------------------------


async def find_leaks(
    coro_factory: Callable[[], Awaitable[object]],
    *,
    rounds: int = 20,
    warmup: int = 2,
    top: int = 10,
    min_growth_fraction: float = 0.8,
    threshold_bytes: float = 1.0,
    frames: int = DEFAULT_FRAMES,
) -> LeakReport:
    """Await ``coro_factory()`` round after round and report what grows steadily.

    Args:
        coro_factory: called once per round with no arguments; returns the
            awaitable to run (an ``async def`` function, a lambda calling one...).
        rounds: rounds judged, at least 2 (20 finds one object kept per round).
        warmup: rounds run first, traced but not judged: what they allocate once
            is in the baseline.
        top: allocation sites to report at most (0: none).
        min_growth_fraction: the share of rounds a series must rise in to count
            as growing (0 < f <= 1).
        threshold_bytes: the growth per round of traced bytes (>= 0) from which
            memory counts as growing (blocks count from half an object per round).
        frames: frames tracemalloc keeps per allocation, when this function
            starts it (a tracemalloc started before keeps its own limit).

    Returns:
        The report; ``report.leaked`` is the verdict.

    Raises:
        TypeError: ``coro_factory`` is not callable or returned no awaitable, or
            an argument has the wrong type.
        ValueError: an argument is out of range (the message names it).
        RuntimeError: another leak check is running (tracemalloc is process-wide).
        Exception: whatever the coroutine raises, unchanged; tracing is stopped.
    """
    global _running
    if not callable(coro_factory):
        raise TypeError(f"coro_factory must be callable, not {type(coro_factory).__name__}")
    check_int("rounds", rounds, minimum=2)
    check_int("warmup", warmup, minimum=0)
    check_int("top", top, minimum=0)
    check_int("frames", frames, minimum=1)
    fraction = check_number("min_growth_fraction", min_growth_fraction)
    if fraction > 1:
        raise ValueError(f"min_growth_fraction must be <= 1, not {min_growth_fraction!r}")
    threshold = check_number("threshold_bytes", threshold_bytes, strict=False)
    if _running:
        raise RuntimeError("find_leaks is already running: tracemalloc is process-wide")
    _running = True
    try:
        judge = _Judge(_outer_frames())
        return await _check(coro_factory, judge, rounds, warmup, top, fraction, threshold, frames)
    finally:
        _running = False


async def _run_round(coro_factory: Callable[[], Awaitable[object]]) -> None:
    awaitable = coro_factory()
    if not inspect.isawaitable(awaitable):
        raise TypeError(
            f"coro_factory must return an awaitable (call an async def), "
            f"not {type(awaitable).__name__}"
        )
    await awaitable
    # Done-callbacks run on the next loop iteration: a task set emptied by
    # `task.add_done_callback(tasks.discard)` is empty only after it.
    await asyncio.sleep(0)


def _live_tasks() -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return [task for task in asyncio.all_tasks() if task is not current and not task.done()]


class _Judge:
    """Tells the traces of the checked code from the checker's and the event loop's own.

    A trace counts when its traceback has at least one frame of the checked
    code: a frame outside tracemalloc, asyncio and the checker, and not one of
    the frames that were already on the stack when the check began (the test
    or CLI around it, the loop running it). What is left out is allocated with
    no frame of the checked code on the stack: the snapshots, the checker's
    ``asyncio.sleep(0)``, and the event loop's own free lists and caches
    (asyncio's handles and tuples, uvloop's internals), which fill up slowly
    over hundreds of rounds and would otherwise look like a leak of one object
    per round.
    """

    def __init__(self, outer: frozenset[tuple[str, int]]) -> None:
        self._outer = outer
        self._verdicts: dict[tuple[tuple[str, int], ...], bool] = {}

    def counts(self, frames: tuple[tuple[str, int], ...]) -> bool:
        """Whether a trace with these (file, line) frames, in any order, is the checked code's."""
        verdict = self._verdicts.get(frames)
        if verdict is None:
            verdict = any(
                frame not in self._outer and not _is_internal(frame[0]) for frame in frames
            )
            self._verdicts[frames] = verdict
        return verdict

    def counts_traceback(self, traceback: tracemalloc.Traceback) -> bool:
        return self.counts(tuple((frame.filename, frame.lineno) for frame in traceback))


def _outer_frames() -> frozenset[tuple[str, int]]:
    """(file, line) of every frame on the stack now: the code around the check."""
    frames: set[tuple[str, int]] = set()
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        frames.add((frame.f_code.co_filename, frame.f_lineno))
        frame = frame.f_back
    return frozenset(frames)


def _snapshot() -> tracemalloc.Snapshot:
    gc.collect()
    return tracemalloc.take_snapshot()


def _totals(snapshot: tracemalloc.Snapshot, judge: _Judge) -> tuple[int, int]:
    """(bytes, blocks) traced in ``snapshot`` on behalf of the checked code."""
    # CPython keeps the raw traces as (domain, size, ((file, line), ...), ...) tuples:
    # reading them directly is ten times faster than grouping Trace objects, which
    # matters when tracemalloc was already tracing the whole process.
    raw = getattr(snapshot.traces, "_traces", None)
    if isinstance(raw, list | tuple) and (not raw or len(raw[0]) >= 3):
        # A verdict per distinct traceback, then one pass over the traces mostly in C:
        # a Python loop over each trace costs ten times more under tracing.
        counted = {frames for frames in set(map(itemgetter(2), raw)) if judge.counts(frames)}
        sizes = [trace[1] for trace in raw if trace[2] in counted]
        return sum(sizes), len(sizes)
    size = blocks = 0
    for stat in snapshot.statistics("traceback"):  # the public, slower way
        if judge.counts_traceback(stat.traceback):
            size += stat.size
            blocks += stat.count
    return size, blocks


async def _check(
    coro_factory: Callable[[], Awaitable[object]],
    judge: _Judge,
    rounds: int,
    warmup: int,
    top: int,
    fraction: float,
    threshold: float,
    frames: int,
) -> LeakReport:
    # Allocated before tracing: storing into them keeps no new object per round,
    # where a list of ints would (ints above 256 are objects of their own).
    sizes = array.array("q", [0] * (rounds + 1))
    blocks = array.array("q", [0] * (rounds + 1))
    task_counts = array.array("q", [0] * (rounds + 1))
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start(frames)
    try:
        # Traced, not judged: what the warm-up allocates is in the baseline, and
        # when a later round frees it (a cache entry replaced), tracemalloc sees
        # the free. Memory it never traced could only ever be seen growing back.
        for _ in range(warmup):
            await _run_round(coro_factory)
        before: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet(_live_tasks())
        baseline = _snapshot()
        sizes[0], blocks[0] = _totals(baseline, judge)
        task_counts[0] = len(_live_tasks())
        last = baseline
        for index in range(1, rounds + 1):
            await _run_round(coro_factory)
            del last  # the previous snapshot goes before the next one is taken
            last = _snapshot()
            sizes[index], blocks[index] = _totals(last, judge)
            task_counts[index] = len(_live_tasks())
        kept_frames = tracemalloc.get_traceback_limit()
        # While tracing: tracemalloc still knows where each Task was allocated.
        live_tasks = _new_live_tasks(before)
    finally:
        if started:
            tracemalloc.stop()
    # From here on nothing is measured: the analysis may allocate freely.
    bytes_trend = _trend(sizes, fraction, threshold)
    blocks_trend = _trend(blocks, fraction, 0.5)
    tasks_trend = _trend(task_counts, fraction, 0.5)
    reasons = []
    if bytes_trend.growing:
        reasons.append(f"traced memory grew {bytes_trend.per_round:,.1f} B per round")
    if blocks_trend.growing:
        reasons.append(f"traced blocks grew {blocks_trend.per_round:,.1f} per round")
    if tasks_trend.growing:
        reasons.append(f"live tasks grew {tasks_trend.per_round:,.1f} per round")
    return LeakReport(
        leaked=bool(reasons),
        rounds=rounds,
        warmup=warmup,
        traced_bytes=bytes_trend,
        traced_blocks=blocks_trend,
        tasks=tasks_trend,
        sites=_growth_sites(baseline, last, top, judge),
        live_tasks=live_tasks,
        min_growth_fraction=fraction,
        frames=kept_frames,
        started_tracing=started,
        reasons=tuple(reasons),
    )


# -- the judgement -------------------------------------------------------------------------


def theil_sen_slope(values: Sequence[int]) -> float:
    """The median of the slopes between every pair of points: a trend one outlier cannot move."""
    slopes = [
        (values[j] - values[i]) / (j - i)
        for i in range(len(values))
        for j in range(i + 1, len(values))
    ]
    # Imported here: statistics (with decimal and fractions) costs every process that
    # imports asyncperf half a MiB, and only a leak check needs it.
    import statistics

    return statistics.median(slopes) if slopes else 0.0


def _trend(values: Sequence[int], fraction: float, threshold: float) -> LeakTrend:
    series = tuple(values)
    grown = sum(1 for previous, value in itertools.pairwise(series) if value > previous)
    slope = theil_sen_slope(series)
    rounds = len(series) - 1
    growing = grown >= fraction * rounds and slope >= threshold and slope > 0
    return LeakTrend(series, grown, slope, threshold, growing)


def _is_internal(filename: str) -> bool:
    path = os.path.normcase(os.path.abspath(filename))
    return path in _INTERNAL_FILES or path.startswith(os.path.normcase(_ASYNCIO_DIR))


def _stdlib_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(
        os.path.normcase(os.path.abspath(paths[name])) + os.sep
        for name in ("stdlib", "platstdlib")
        if name in paths
    )


_STDLIB_DIRS = _stdlib_dirs()
_SITE_PACKAGES = ("site-packages", "dist-packages")


def _is_stdlib(filename: str) -> bool:
    if filename.startswith("<frozen "):
        return True
    path = os.path.normcase(os.path.abspath(filename))
    return path.startswith(_STDLIB_DIRS) and not any(part in path for part in _SITE_PACKAGES)


def _site_of(traceback: tracemalloc.Traceback) -> tuple[str, int]:
    """Where to charge a trace: the caller's line rather than the library's.

    The most recent frame of code that is neither the checker's, asyncio's nor
    the standard library's (a task's entry in asyncio's WeakSet is charged to
    the line that created the task); else the most recent frame outside the
    checker and asyncio; else the most recent frame.
    """
    frames = list(reversed(traceback))  # a Traceback runs from the oldest frame to the newest
    for frame in frames:
        if not _is_internal(frame.filename) and not _is_stdlib(frame.filename):
            return frame.filename, frame.lineno
    for frame in frames:
        if not _is_internal(frame.filename):
            return frame.filename, frame.lineno
    return frames[0].filename, frames[0].lineno


def _growth_sites(
    baseline: tracemalloc.Snapshot, last: tracemalloc.Snapshot, top: int, judge: _Judge
) -> tuple[AllocationSite, ...]:
    if top == 0:
        return ()
    # Grouped by whole traceback first, then charged to each traceback's site.
    grouped: dict[tuple[str, int], list[int]] = {}
    for diff in last.compare_to(baseline, "traceback"):
        if not judge.counts_traceback(diff.traceback):
            continue
        totals = grouped.setdefault(_site_of(diff.traceback), [0, 0, 0, 0])
        totals[0] += diff.size_diff
        totals[1] += diff.count_diff
        totals[2] += diff.size
        totals[3] += diff.count
    sites = [
        AllocationSite(filename, lineno, size_diff, count_diff, size, count)
        for (filename, lineno), (size_diff, count_diff, size, count) in grouped.items()
        if size_diff > 0 or count_diff > 0
    ]
    sites.sort(key=lambda site: (site.size_diff, site.count_diff), reverse=True)
    return tuple(sites[:top])


def _new_live_tasks(before: weakref.WeakSet[asyncio.Task[Any]]) -> tuple[LiveTaskGroup, ...]:
    groups: dict[tuple[str, str, str], int] = {}
    for task in _live_tasks():
        if task in before:
            continue
        coroutine = task.get_coro()
        code = getattr(coroutine, "cr_code", None) or getattr(coroutine, "gi_code", None)
        name = getattr(coroutine, "__qualname__", None) or repr(coroutine)
        location = f"{code.co_filename}:{code.co_firstlineno}" if code is not None else ""
        allocated = tracemalloc.get_object_traceback(task)
        created_at = "" if allocated is None else "{}:{}".format(*_site_of(allocated))
        key = (name, location, created_at)
        groups[key] = groups.get(key, 0) + 1
    ordered = sorted(groups.items(), key=lambda item: item[1], reverse=True)
    return tuple(LiveTaskGroup(*key, count) for key, count in ordered)
