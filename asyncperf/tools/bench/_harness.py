"""What the suites share: cases, repetitions in fresh loops, medians, tables, bars and JSON.

A suite turns its workloads into :class:`Case` objects (one per contender and
workload) and hands them to :meth:`Harness.run_cases`, which runs a warm-up and
then the repetitions, each in a fresh event loop made by :func:`asyncperf.run`.
Repetitions are interleaved (every case once, then every case again) so that a
slow drift of the machine affects all contenders alike. The figure reported is
the median over the repetitions; the raw values go to the JSON file.
"""

from __future__ import annotations

import datetime
import gc
import importlib
import json
import math
import os
import platform
import statistics
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

import asyncperf as ap

__all__ = [
    "PEER_PACKAGES",
    "Bar",
    "Case",
    "Config",
    "Harness",
    "Plan",
    "Result",
    "Suite",
    "fmt",
    "import_peer",
    "keep_timed_runs",
    "peer_module",
    "quantile",
]

RunT = TypeVar("RunT")

LoopChoice = Literal["asyncio", "uvloop"]
#: The distributions whose versions go into the JSON metadata.
PEER_PACKAGES = ("asyncperf", "aiojobs", "aiometer", "anyio", "uvloop", "rich")


@dataclass(frozen=True, slots=True)
class Config:
    """The sizes and repetitions of one run of the harness."""

    jobs: int
    repeat: int
    quick: bool
    loops: tuple[LoopChoice, ...]
    memory_items: int
    queue_depths: tuple[int, ...]
    #: Only these peers (module names, ``async_lru`` style); None: every installed peer.
    vs: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Case:
    """One contender on one workload: ``make()`` returns a coroutine measuring it once.

    The coroutine returns the raw figure of one repetition (seconds, or bytes
    for the memory suite); ``value = median * scale / items`` is what the table shows.
    """

    case: str
    contender: str
    label: str
    make: Callable[[], Coroutine[Any, Any, float]]
    items: int
    unit: str
    scale: float
    #: The unit of the raw figure one repetition returns.
    raw_unit: str = "s"
    #: At most this many repetitions for this case (a slow peer); None: the configured count.
    max_repeat: int | None = None
    note: str = ""


@dataclass(slots=True)
class Result:
    """The figures of one case on one loop."""

    suite: str
    case: str
    contender: str
    label: str
    loop: str
    unit: str
    items: int
    #: Median over the repetitions, per item, in ``unit``.
    value: float
    #: Fastest (smallest) repetition, per item, in ``unit``.
    best: float
    #: Slowest (largest) repetition, per item, in ``unit``: with ``best``, the min-max range.
    worst: float
    repeat: int
    #: Raw figure of each repetition for all ``items``, in ``raw_unit``.
    samples: list[float]
    raw_unit: str
    warmup: float
    note: str = ""

    @classmethod
    def side_figure(
        cls,
        suite: str,
        case: str,
        contender: str,
        label: str,
        loop: str,
        unit: str,
        values: list[float],
        note: str,
        *,
        higher_is_better: bool = False,
    ) -> Result:
        """A figure a suite keeps beside its timed cases (one value per repetition).

        ``value`` is the median; ``best`` and ``worst`` are the best and worst
        repetitions in the metric's direction (the smallest and largest unless
        ``higher_is_better``).
        """
        low, high = min(values), max(values)
        return cls(
            suite=suite,
            case=case,
            contender=contender,
            label=label,
            loop=loop,
            unit=unit,
            items=1,
            value=statistics.median(values),
            best=high if higher_is_better else low,
            worst=low if higher_is_better else high,
            repeat=len(values),
            samples=values,
            raw_unit=unit,
            warmup=0.0,
            note=note,
        )


@dataclass(slots=True)
class Bar:
    """A target from DESIGN.md checked against the ratio measured in this run."""

    suite: str
    loop: str
    case: str
    contender: str
    name: str
    ratio: float
    op: Literal["<=", ">="]
    threshold: float

    @property
    def passed(self) -> bool:
        if self.op == "<=":
            return self.ratio <= self.threshold
        return self.ratio >= self.threshold

    def cell(self) -> Text:
        """``PASS`` or ``MISS`` with the target (``<=1.3x``), for a table cell."""
        verdict = "PASS" if self.passed else "MISS"
        style = "bold green" if self.passed else "bold red"
        return Text.assemble((verdict, style), f" {self.op}{self.threshold:g}x")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data


@dataclass(slots=True)
class Plan:
    """What a suite runs on one loop, and the notes for what it skips."""

    cases: list[Case]
    notes: list[str] = field(default_factory=list)

    def runs(self, repeat: int) -> int:
        """Loop runs this plan takes: a warm-up plus the repetitions of each case."""
        return sum(1 + _repeats(case, repeat) for case in self.cases)


@dataclass(frozen=True, slots=True)
class Suite:
    """A suite: builds its plan per loop and reports its results."""

    name: str
    description: str
    plan: Callable[[Config, LoopChoice], Plan]
    report: Callable[[Harness, LoopChoice, list[Result]], None]


def _repeats(case: Case, repeat: int) -> int:
    return repeat if case.max_repeat is None else min(repeat, case.max_repeat)


def peer_module(name: str) -> str:
    """The module name of a peer as given to ``--vs`` (``async-lru`` -> ``async_lru``)."""
    return name.strip().lower().replace("-", "_")


def import_peer(module: str, notes: list[str], vs: frozenset[str] | None = None) -> bool:
    """Whether an optional peer is wanted and imports; if not, a note says it is skipped.

    Args:
        module: the peer's module name.
        notes: the plan's notes, which get the reason it is skipped.
        vs: the peers asked for with ``--vs`` (None: all of them).
    """
    if vs is not None and module not in vs:
        notes.append(f"{module} is not in --vs; its contender is skipped.")
        return False
    try:
        importlib.import_module(module)
    except ImportError as exc:
        notes.append(
            f"{module} is not installed ({exc}); its contender is skipped "
            "(pip install 'asyncperf[peers]')."
        )
        return False
    return True


def keep_timed_runs(
    run: Callable[[], Awaitable[RunT]], figure: Callable[[RunT], float], runs: list[RunT]
) -> Callable[[], Coroutine[Any, Any, float]]:
    """A case's ``make`` that awaits ``run()`` and returns ``figure`` of its result.

    Suites whose runs carry side figures (latencies, GC counts) keep each run's
    result in ``runs``, except the first: the harness's first call is the warm-up.
    """
    calls = 0

    async def run_once() -> float:
        nonlocal calls
        calls += 1
        result = await run()
        if calls > 1:
            runs.append(result)
        return figure(result)

    return run_once


def quantile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values, interpolated between the closest ranks (NaN if none)."""
    if not ordered:
        return math.nan
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def fmt(value: float) -> str:
    """A figure with three significant digits (thousands separated)."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


async def _in_loop(make: Callable[[], Coroutine[Any, Any, float]]) -> tuple[float, str]:
    # The loop is named from inside: that is the loop the figure was measured on.
    name = ap.loop_name()
    return await make(), name


class Harness:
    """Runs cases with a progress bar, and collects results, bars and notes."""

    def __init__(self, config: Config, console: Console | None = None) -> None:
        self.config = config
        self.console = console if console is not None else Console()
        self.results: dict[str, list[Result]] = {}
        self.bars: dict[str, list[Bar]] = {}
        self.notes: dict[str, list[str]] = {}
        self.descriptions: dict[str, str] = {}
        self.started = datetime.datetime.now(datetime.UTC)
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    # -- progress -----------------------------------------------------------------

    def start_progress(self, total: int) -> Progress:
        """The progress bar over ``total`` loop runs; use it as a context manager."""
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._task = self._progress.add_task("benchmarks", total=total)
        return self._progress

    def _step(self, description: str | None = None, advance: int = 0) -> None:
        if self._progress is None or self._task is None:
            return
        if description is None:
            self._progress.advance(self._task, advance)
        else:
            self._progress.update(self._task, description=description, advance=advance)

    # -- running ------------------------------------------------------------------

    def run_once(
        self, make: Callable[[], Coroutine[Any, Any, float]], loop: LoopChoice
    ) -> tuple[float, str]:
        """Run one measurement in a fresh event loop; its figure and the loop's name."""
        gc.collect()  # garbage of the previous run is not charged to this one
        return ap.run(_in_loop(make), loop=loop)

    def run_cases(self, suite: str, cases: Sequence[Case], loop: LoopChoice) -> list[Result]:
        """Warm up every case, then run the repetitions interleaved; one result per case."""
        repeat = self.config.repeat
        warmups: list[float] = []
        loop_names: list[str] = []
        for case in cases:
            self._step(f"{suite} · {loop} · {case.label} ({case.case}) · warm-up")
            figure, name = self.run_once(case.make, loop)
            warmups.append(figure)
            loop_names.append(name)
            self._step(advance=1)
        samples: list[list[float]] = [[] for _ in cases]
        for rep in range(repeat):
            for index, case in enumerate(cases):
                if rep >= _repeats(case, repeat):
                    continue
                self._step(f"{suite} · {loop} · {case.label} ({case.case}) · {rep + 1}/{repeat}")
                figure, loop_names[index] = self.run_once(case.make, loop)
                samples[index].append(figure)
                self._step(advance=1)
        results = [
            Result(
                suite=suite,
                case=case.case,
                contender=case.contender,
                label=case.label,
                loop=loop_names[index],
                unit=case.unit,
                items=case.items,
                value=statistics.median(samples[index]) * case.scale / case.items,
                best=min(samples[index]) * case.scale / case.items,
                worst=max(samples[index]) * case.scale / case.items,
                repeat=len(samples[index]),
                samples=samples[index],
                raw_unit=case.raw_unit,
                warmup=warmups[index],
                note=case.note,
            )
            for index, case in enumerate(cases)
        ]
        self.results.setdefault(suite, []).extend(results)
        return results

    # -- recording ----------------------------------------------------------------

    def note(self, suite: str, text: str) -> None:
        """Record a note for the suite and print it."""
        notes = self.notes.setdefault(suite, [])
        if text not in notes:
            notes.append(text)
            self.console.print(f"[yellow]note[/yellow] ({suite}): {text}")

    def bar(
        self,
        suite: str,
        loop: str,
        case: str,
        contender: str,
        name: str,
        ratio: float,
        op: Literal["<=", ">="],
        threshold: float,
    ) -> Bar:
        """Record a bar check and return it (for the table cell)."""
        bar = Bar(suite, loop, case, contender, name, ratio, op, threshold)
        self.bars.setdefault(suite, []).append(bar)
        return bar

    def all_bars(self) -> list[Bar]:
        return [bar for bars in self.bars.values() for bar in bars]

    # -- output -------------------------------------------------------------------

    def metadata(self, suites: Iterable[str], elapsed: float) -> dict[str, Any]:
        config = self.config
        return {
            "date": self.started.isoformat(timespec="seconds"),
            "elapsed_seconds": round(elapsed, 3),
            "python": sys.version,
            "python_version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "available_loops": list(ap.available_loops()),
            "packages": {name: _version(name) for name in PEER_PACKAGES},
            "config": {
                "suites": list(suites),
                "loops": list(config.loops),
                "jobs": config.jobs,
                "repeat": config.repeat,
                "quick": config.quick,
                "memory_items": config.memory_items,
                "queue_depths": list(config.queue_depths),
                "vs": None if config.vs is None else sorted(config.vs),
                "statistic": "median over repetitions, each in a fresh event loop, "
                "after one warm-up run",
            },
        }

    def write_json(self, path: Path, suites: Sequence[str], elapsed: float) -> None:
        """Write every result (raw repetitions included), bar and note to ``path``."""
        data = {
            "metadata": self.metadata(suites, elapsed),
            "suites": {
                name: {
                    "description": self.descriptions.get(name, ""),
                    "results": [asdict(result) for result in self.results.get(name, [])],
                    "bars": [bar.to_json() for bar in self.bars.get(name, [])],
                    "notes": self.notes.get(name, []),
                }
                for name in suites
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
