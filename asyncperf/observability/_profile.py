"""``asyncperf.profile``: where time, memory and the loop go while a block of async code runs.

::

    async with ap.profile(output_dir="profiles") as p:
        await serve_for_a_while()
    p.report["cpu"]["top_functions"], p.html_path, p.json_path

Four sections, each optional:

- **cpu**: pyinstrument's statistical profiler in async mode (time spent
  awaiting shows as ``[await]`` under the awaiting function), sampling every
  ``sample_rate`` seconds. Its HTML is the report's first part; the summary has
  the top functions by self time. Async mode follows the context of the task
  that entered the profile, and the tasks it creates (they copy its context):
  CPU time of tasks created *before* the profile started is not attributed to
  their functions, it shows as time the profiled code spent awaiting.
- **memory**: tracemalloc (started when it is not already tracing, then
  stopped again), a snapshot at the start and one at the end: the lines holding
  most memory at the end, and the lines whose memory grew most.
- **tasks**: every asyncio task with its coroutine, its suspended stack (the
  chain of awaits, innermost last), its state and its age, at the end and every
  ``task_dump_interval`` seconds. Python does not record when a task was
  created, so the age is the time since the profiler first saw the task (at
  the start or at a periodic dump): a lower bound for tasks older than that.
- **block**: a :class:`BlockDetector` (a watchdog thread that captures the
  loop thread's stack when the loop is held past ``block_threshold``) and a
  :class:`LoopLagMonitor` (how late the loop wakes a sleeping coroutine).

On exit (also when the block raises) it writes ``<name>.html`` and
``<name>.json`` to ``output_dir`` and keeps the summary in ``report``. Each file
is written off the loop and atomically (a temp file renamed into place, through
:class:`asyncperf.io.FileIO`), so a reader never finds half a report.
Everything user-supplied that goes into the HTML is escaped.

tracemalloc and the sampling profiler are process-wide, so one profile runs at
a time (a second one raises ``RuntimeError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import linecache
import os
import sys
import time
import traceback as traceback_module
import tracemalloc
import weakref
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from types import CoroutineType, FrameType, GeneratorType, TracebackType
from typing import Any, Final, Self

from asyncperf._validate import check_bool, check_int, check_number
from asyncperf.io._files import FileIO
from asyncperf.loop import loop_name
from asyncperf.observability._blocking import BlockDetector, StackFrame
from asyncperf.observability._lag import LoopLagMonitor

__all__ = ["OVERHEAD_NOTES", "REPORT_KEYS", "Profile", "profile"]

#: The top-level keys of the JSON summary (and of :attr:`Profile.report`).
REPORT_KEYS: Final = (
    "name",
    "started",
    "duration",
    "outcome",
    "loop",
    "sections",
    "cpu",
    "memory",
    "tasks",
    "blocking",
    "overhead",
    "html_path",
    "json_path",
)

#: What each section costs the code under it, measured (medians of 5, Python 3.11,
#: 100 tasks) on two workloads: "service-like" (each task computes a little, then
#: awaits a 2 ms sleep) and "tiny steps" (each task computes a little, allocates a
#: little, and yields with sleep(0), 200 times). The README has the full table.
OVERHEAD_NOTES: Final = {
    "cpu": (
        "pyinstrument's hook runs on every Python call and return (async mode about "
        "doubles its cost; sample_rate barely changes it): +8% (uvloop) / +45% (asyncio) "
        "service-like, 2.5x (uvloop) / 5.7x (asyncio) with tiny task steps."
    ),
    "memory": (
        "tracemalloc records every allocation: 4.6-5.3x service-like, 8.8-9.6x "
        "allocation-heavy; the memory figures are exact, timings taken under it are "
        "not (profile CPU and memory in separate runs)."
    ),
    "tasks": (
        "within noise (<= 4%) with a dump of 100 tasks every 50 ms; the final dump "
        "runs after the profiled code."
    ),
    "block": (
        "within noise (<= 3%): a heartbeat callback every block_threshold/4 and a "
        "lag-monitor wake-up every 50 ms on the loop, a watchdog thread waking as often."
    ),
}

#: Seconds between the lag monitor's wake-ups in the blocking section.
LAG_INTERVAL: Final = 0.05
#: Periodic task dumps kept (the oldest are dropped past it; the final dump is always kept).
MAX_TASK_DUMPS: Final = 50
#: Frames kept per task stack.
TASK_STACK_LIMIT: Final = 30
#: Writes the reports (and makes output_dir) off the loop. Two at once: one profile runs
#: at a time and writes two files, so this never waits in practice; it is a ceiling.
_REPORT_FILES: Final = FileIO(max_concurrency=2)

_active: Profile | None = None  # tracemalloc and the sampler are process-wide


def profile(
    cpu: bool = True,
    memory: bool = True,
    tasks: bool = True,
    block: bool = True,
    sample_rate: float = 0.001,
    output_dir: str | os.PathLike[str] = "profiles",
    block_threshold: float = 0.1,
    task_dump_interval: float | None = None,
    top: int = 20,
    name: str | None = None,
) -> Profile:
    """A profile of the code in an ``async with`` block; see the module's documentation.

    Args:
        cpu: profile CPU time with pyinstrument.
        memory: trace allocations with tracemalloc (top and growth per line).
        tasks: dump every asyncio task with its stack at the end (and periodically).
        block: catch loop blocks past ``block_threshold`` and measure the loop's lag.
        sample_rate: pyinstrument's sampling interval in seconds (> 0).
        output_dir: where ``<name>.html`` and ``<name>.json`` are written (created).
        block_threshold: seconds the loop must be held to count as a block (> 0).
        task_dump_interval: seconds between periodic task dumps (> 0), or None
            for the final dump only.
        top: entries in each top list (functions, memory lines), at least 1.
        name: the report files' name without extension (default: ``profile-`` and
            the local start time); letters, digits, ``-``, ``_`` and ``.``.

    Raises:
        TypeError, ValueError: a bad argument (the message names it).
    """
    return Profile(
        cpu=cpu,
        memory=memory,
        tasks=tasks,
        block=block,
        sample_rate=sample_rate,
        output_dir=output_dir,
        block_threshold=block_threshold,
        task_dump_interval=task_dump_interval,
        top=top,
        name=name,
    )


def _check_name(name: object) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str):
        raise TypeError(f"name must be a str or None, not {type(name).__name__}")
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    if not name or name.startswith(".") or not set(name) <= allowed:
        raise ValueError(
            f"name must be non-empty letters, digits, '-', '_' or '.' "
            f"(not starting with '.'), not {name!r}"
        )
    return name


class Profile:
    """One profiling run: an async context manager; use :func:`profile` to make one.

    Attributes:
        report: the summary (the JSON's content) once the block has been left;
            None before.
        html_path: the HTML report written on exit (None before).
        json_path: the JSON summary written on exit (None before).
    """

    def __init__(
        self,
        *,
        cpu: bool,
        memory: bool,
        tasks: bool,
        block: bool,
        sample_rate: float,
        output_dir: str | os.PathLike[str],
        block_threshold: float,
        task_dump_interval: float | None,
        top: int,
        name: str | None,
    ) -> None:
        self.cpu = check_bool("cpu", cpu)
        self.memory = check_bool("memory", memory)
        self.tasks = check_bool("tasks", tasks)
        self.block = check_bool("block", block)
        self.sample_rate = check_number("sample_rate", sample_rate)
        if not isinstance(output_dir, str | os.PathLike):
            raise TypeError(f"output_dir must be a str or a path, not {type(output_dir).__name__}")
        self.output_dir = Path(output_dir)
        self.block_threshold = check_number("block_threshold", block_threshold)
        self.task_dump_interval = (
            None
            if task_dump_interval is None
            else check_number("task_dump_interval", task_dump_interval)
        )
        self.top = check_int("top", top, minimum=1)
        self.name = _check_name(name)
        self.report: dict[str, Any] | None = None
        self.html_path: Path | None = None
        self.json_path: Path | None = None
        self._used = False
        self._started_wall = 0.0
        self._started = 0.0
        self._profiler: Any = None  # pyinstrument.Profiler
        self._started_tracing = False
        self._memory_before: tracemalloc.Snapshot | None = None
        self._detector: BlockDetector | None = None
        self._lag: LoopLagMonitor | None = None
        self._first_seen: weakref.WeakKeyDictionary[asyncio.Task[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self._own_tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self._dumps: deque[dict[str, Any]] = deque(maxlen=MAX_TASK_DUMPS)
        self._dumps_taken = 0
        self._dumper: asyncio.Task[None] | None = None

    @property
    def sections(self) -> list[str]:
        """The sections turned on, in report order."""
        on = {"cpu": self.cpu, "memory": self.memory, "tasks": self.tasks, "block": self.block}
        return [section for section, enabled in on.items() if enabled]

    # -- entering and leaving -----------------------------------------------------------

    async def __aenter__(self) -> Self:
        global _active
        if self._used:
            raise RuntimeError("a Profile runs once; call profile() again for another run")
        if _active is not None:
            raise RuntimeError(
                "another asyncperf.profile is running (tracemalloc and the sampler are "
                "process-wide)"
            )
        self._used = True
        _active = self
        try:
            self._start_sections()
        except BaseException:
            await self._stop_sections()
            _active = None
            raise
        return self

    def _start_sections(self) -> None:
        # Everything the sections need is made (and imported) before tracemalloc
        # starts, so none of it shows as growth in the memory section.
        profiler: Any = None
        if self.cpu:
            from pyinstrument import Profiler

            profiler = Profiler(interval=self.sample_rate, async_mode="enabled")
        if self.block:
            self._detector = BlockDetector(self.block_threshold)
            self._lag = LoopLagMonitor(LAG_INTERVAL, threshold=self.block_threshold)
        self._started_wall = time.time()
        self._started = time.monotonic()
        if self.memory:
            if not tracemalloc.is_tracing():
                tracemalloc.start(1)
                self._started_tracing = True
            self._memory_before = tracemalloc.take_snapshot()
        if self.tasks:
            self._see_tasks(time.monotonic())
            if self.task_dump_interval is not None:
                self._dumper = asyncio.get_running_loop().create_task(
                    self._dump_periodically(self.task_dump_interval),
                    name="asyncperf-profile-task-dump",
                )
                self._own_tasks.add(self._dumper)
        if self._detector is not None and self._lag is not None:
            self._detector.start()
            self._lag.start()
            if self._lag.task is not None:
                self._own_tasks.add(self._lag.task)
        if profiler is not None:
            # The caller of `async with` is where the profile starts: the HTML's root.
            try:
                caller: FrameType | None = sys._getframe(2)
            except ValueError:
                caller = None
            profiler.start(caller_frame=caller)
            self._profiler = profiler

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        global _active
        try:
            sections = await self._stop_sections()
            ended = time.monotonic()
            if exc is None:
                outcome = "ok"
            elif isinstance(exc, asyncio.CancelledError):
                outcome = "cancelled"
            else:
                outcome = f"error: {type(exc).__name__}: {exc}"
            await self._write(sections, ended - self._started, outcome)
        finally:
            _active = None

    async def _stop_sections(self) -> dict[str, Any]:
        """Stop every section that started (the last started first); their summaries."""
        cpu_html = ""
        summaries: dict[str, Any] = {"cpu": None, "memory": None, "tasks": None, "blocking": None}
        if self._profiler is not None and self._profiler.is_running:
            session = self._profiler.stop()
            summaries["cpu"] = _cpu_summary(session, self.sample_rate, self.top)
            cpu_html = self._profiler.output_html()
        if self._dumper is not None:
            self._dumper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dumper
            self._dumper = None
        if self.tasks:
            final = self._dump_tasks(time.monotonic())
            summaries["tasks"] = {
                "age_note": (
                    "age is the time since the profiler first saw the task (at the start "
                    "or at a periodic dump), a lower bound of its true age"
                ),
                "dumps_taken": self._dumps_taken,
                "dumps": list(self._dumps),
                "final": final,
            }
        if self._lag is not None:
            await self._lag.stop()
        if self._detector is not None:
            self._detector.stop()
        if self._detector is not None and self._lag is not None:
            summaries["blocking"] = {
                "threshold": self.block_threshold,
                "heartbeat_interval": self._detector.interval,
                "total_blocks": self._detector.total_blocks,
                "blocks": [block.as_dict() for block in self._detector.blocks()],
                "lag": self._lag.statistics().as_dict(),
            }
        if self._memory_before is not None:
            after = tracemalloc.take_snapshot()
            summaries["memory"] = _memory_summary(self._memory_before, after, self.top)
            summaries["memory"]["started_tracing"] = self._started_tracing
            self._memory_before = None
        if self._started_tracing:
            tracemalloc.stop()
            self._started_tracing = False
        summaries["cpu_html"] = cpu_html
        return summaries

    # -- tasks --------------------------------------------------------------------------

    def _see_tasks(self, now: float) -> list[asyncio.Task[Any]]:
        found = [task for task in asyncio.all_tasks() if task not in self._own_tasks]
        for task in found:
            self._first_seen.setdefault(task, now)
        return found

    def _dump_tasks(self, now: float) -> dict[str, Any]:
        tasks = self._see_tasks(now)
        current = asyncio.current_task()
        described = [
            _describe_task(task, now - self._first_seen.get(task, now), task is current)
            for task in tasks
        ]
        described.sort(key=lambda item: (-item["age"], item["name"]))
        self._dumps_taken += 1
        return {"at": now - self._started, "count": len(described), "tasks": described}

    async def _dump_periodically(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self._dumps.append(self._dump_tasks(time.monotonic()))

    # -- the files ----------------------------------------------------------------------

    async def _write(self, sections: dict[str, Any], duration: float, outcome: str) -> None:
        name = self.name or time.strftime("profile-%Y%m%d-%H%M%S", time.localtime())
        await _REPORT_FILES.mkdir(self.output_dir, parents=True, exist_ok=True)
        stem, suffix = name, 1
        # Two runs in the same second (or a reused name in a loop) keep both reports.
        while (self.output_dir / f"{stem}.json").exists() or (
            self.output_dir / f"{stem}.html"
        ).exists():
            suffix += 1
            stem = f"{name}-{suffix}"
        self.html_path = self.output_dir / f"{stem}.html"
        self.json_path = self.output_dir / f"{stem}.json"
        try:
            loop = loop_name()
        except RuntimeError:
            loop = ""
        report: dict[str, Any] = {
            "name": stem,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self._started_wall)),
            "duration": duration,
            "outcome": outcome,
            "loop": loop,
            "sections": self.sections,
            "cpu": sections["cpu"],
            "memory": sections["memory"],
            "tasks": sections["tasks"],
            "blocking": sections["blocking"],
            "overhead": {section: OVERHEAD_NOTES[section] for section in self.sections},
            "html_path": str(self.html_path),
            "json_path": str(self.json_path),
        }
        files = [
            (self.json_path, (json.dumps(report, indent=2) + "\n").encode("utf-8")),
            (self.html_path, _render_html(report, sections["cpu_html"]).encode("utf-8")),
        ]
        # Its own task: a cancellation arriving now (a second Ctrl-C, a timeout around
        # the block) must not lose the report of the run it ended, so it is finished
        # first and the cancellation goes on afterwards.
        writing = asyncio.ensure_future(_write_reports(files))
        try:
            await asyncio.shield(writing)
        except asyncio.CancelledError:
            while not writing.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait((writing,))
            if not writing.cancelled() and writing.exception() is None:
                self.report = report
            raise
        self.report = report

    def __repr__(self) -> str:
        state = "done" if self.report is not None else ("running" if self._used else "new")
        return f"<Profile {state} sections={','.join(self.sections)} output_dir={self.output_dir}>"


async def _write_reports(files: list[tuple[Path, bytes]]) -> None:
    """Write each report atomically: a reader (the dashboard, a CI step) never sees half of one.

    No fsync: a report lost to a power cut is made again by another run; what
    matters is that a crash or a cancellation mid-write leaves no torn file.
    """
    for path, data in files:
        await _REPORT_FILES.write_atomic(path, data, fsync=False)


# -- CPU ------------------------------------------------------------------------------


def _cpu_summary(session: Any, sample_rate: float, top: int) -> dict[str, Any]:
    """Session totals and the top functions by self time, from pyinstrument's frame tree."""
    self_times: dict[tuple[str, str, int], float] = {}
    total_times: dict[tuple[str, str, int], float] = {}
    await_time = 0.0
    out_of_context_time = 0.0
    root = session.root_frame()

    def walk(frame: Any, on_path: frozenset[tuple[str, str, int]]) -> None:
        nonlocal await_time, out_of_context_time
        children = frame.children
        if frame.is_synthetic:
            if frame.identifier == "[await]":
                await_time += frame.time
            elif frame.identifier == "[out-of-context]":
                out_of_context_time += frame.time
            return
        key = (str(frame.function), str(frame.file_path or ""), int(frame.line_no or 0))
        # A [self] child is this frame's own time; [await] is time spent awaiting and
        # [out-of-context] time other tasks (outside the profile's context) ran.
        own = frame.time - sum(child.time for child in children if child.identifier != "[self]")
        self_times[key] = self_times.get(key, 0.0) + max(own, 0.0)
        if key not in on_path:  # a recursive call is counted once in the total
            total_times[key] = total_times.get(key, 0.0) + frame.time
        for child in children:
            walk(child, on_path | {key})

    if root is not None:
        walk(root, frozenset())
    ranked = sorted(
        ((key, seconds) for key, seconds in self_times.items() if seconds > 0.0),
        key=lambda item: item[1],
        reverse=True,
    )[:top]
    return {
        "sample_interval": sample_rate,
        "samples": int(session.sample_count),
        "duration": float(session.duration),
        "cpu_time": float(session.cpu_time),
        "await_time": await_time,
        "out_of_context_time": out_of_context_time,
        "top_functions": [
            {
                "function": function,
                "file": file,
                "line": line,
                "self_time": self_time,
                "total_time": total_times.get((function, file, line), 0.0),
            }
            for (function, file, line), self_time in ranked
        ],
    }


# -- memory ---------------------------------------------------------------------------


def _memory_filters() -> list[tracemalloc.Filter]:
    """Leave out the profiler's own allocations: tracemalloc, imports, this package's
    observability modules and pyinstrument's sampler."""
    observability = os.path.dirname(os.path.abspath(__file__))
    filters: list[tracemalloc.Filter] = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
        tracemalloc.Filter(False, "<unknown>"),
        tracemalloc.Filter(False, os.path.join(observability, "_profile.py")),
        tracemalloc.Filter(False, os.path.join(observability, "_blocking.py")),
        tracemalloc.Filter(False, os.path.join(observability, "_lag.py")),
        tracemalloc.Filter(False, linecache.__file__),
        # The block detector's stacks (traceback.extract_stack keeps the source lines).
        tracemalloc.Filter(False, traceback_module.__file__),
    ]
    with contextlib.suppress(ImportError):
        import pyinstrument

        filters.append(
            tracemalloc.Filter(False, os.path.join(os.path.dirname(pyinstrument.__file__), "*"))
        )
    return filters


def _memory_summary(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, top: int
) -> dict[str, Any]:
    filters = _memory_filters()
    before = before.filter_traces(filters)
    after = after.filter_traces(filters)
    totals = after.statistics("lineno")
    growth = [diff for diff in after.compare_to(before, "lineno") if diff.size_diff > 0]
    growth.sort(key=lambda diff: diff.size_diff, reverse=True)
    return {
        "traceback_limit": tracemalloc.get_traceback_limit(),
        "traced_bytes_start": sum(stat.size for stat in before.statistics("filename")),
        "traced_bytes_end": sum(stat.size for stat in totals),
        "top": [
            {
                **_site(stat.traceback),
                "size": stat.size,
                "count": stat.count,
            }
            for stat in totals[:top]
        ],
        "growth": [
            {
                **_site(diff.traceback),
                "size_diff": diff.size_diff,
                "count_diff": diff.count_diff,
                "size": diff.size,
                "count": diff.count,
            }
            for diff in growth[:top]
        ],
    }


def _site(traceback: tracemalloc.Traceback) -> dict[str, Any]:
    frame = traceback[0]
    return {
        "filename": frame.filename,
        "lineno": frame.lineno,
        "line": linecache.getline(frame.filename, frame.lineno).strip(),
    }


# -- tasks ----------------------------------------------------------------------------


def _await_chain(task: asyncio.Task[Any]) -> tuple[list[StackFrame], str]:
    """The suspended stack of ``task`` (outermost first) and what its innermost await waits on.

    ``Task.get_stack()`` shows only the outermost coroutine of a suspended task;
    following ``cr_await`` from coroutine to coroutine gives the whole chain.
    """
    frames: list[StackFrame] = []
    awaited: object = task.get_coro()
    for _ in range(TASK_STACK_LIMIT):
        frame: FrameType | None
        if isinstance(awaited, CoroutineType):
            frame, following = awaited.cr_frame, awaited.cr_await
        elif isinstance(awaited, GeneratorType):
            frame, following = awaited.gi_frame, awaited.gi_yieldfrom
        else:
            break
        if frame is None:  # finished, or not started yet
            break
        frames.append(_frame(frame))
        awaited = following
    if not frames:  # not a coroutine we can walk: whatever asyncio knows
        frames = [_frame(frame) for frame in task.get_stack(limit=TASK_STACK_LIMIT)]
    if awaited is None or not frames:
        waiting_on = ""
    elif type(awaited).__name__ == "FutureIter":
        # `await future` on asyncio's C futures: the iterator hides the future itself.
        waiting_on = "an asyncio Future"
    else:
        waiting_on = _short_repr(awaited)
    return frames, waiting_on


def _frame(frame: FrameType) -> StackFrame:
    code = frame.f_code
    lineno = frame.f_lineno or 0
    return StackFrame(
        code.co_filename,
        lineno,
        code.co_qualname,
        linecache.getline(code.co_filename, lineno).strip(),
    )


def _short_repr(obj: object, limit: int = 200) -> str:
    try:
        text = repr(obj)
    except Exception as exc:  # a broken __repr__ must not break the report
        text = f"<{type(obj).__name__}: repr failed: {exc!r}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_task(task: asyncio.Task[Any], age: float, current: bool) -> dict[str, Any]:
    coro = task.get_coro()
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    if task.cancelled():
        state = "cancelled"
    elif task.done():
        state = "done"
    else:
        state = "running" if current else "pending"
    stack, waiting_on = ([], "") if task.done() else _await_chain(task)
    return {
        "name": task.get_name(),
        "coroutine": code.co_qualname if code is not None else _short_repr(coro),
        "defined_at": f"{code.co_filename}:{code.co_firstlineno}" if code is not None else "",
        "state": state,
        "age": age,
        "waiting_on": waiting_on,
        "stack": [frame.as_dict() for frame in stack],
    }


# -- HTML -----------------------------------------------------------------------------

_STYLE: Final = """
.asyncperf-section { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
.asyncperf-section table { border-collapse: collapse; font-size: 13px; }
.asyncperf-section td, .asyncperf-section th { border: 1px solid #ccc; padding: 3px 8px;
  text-align: left; vertical-align: top; }
.asyncperf-section pre { background: #f6f6f6; padding: 6px; font-size: 12px; overflow-x: auto; }
"""


def _e(value: object) -> str:
    # Imported here: html brings its entity table (half a MiB) into every process
    # that imports asyncperf, and only a report being written needs it.
    import html

    return html.escape(str(value), quote=True)


def _table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{_e(header)}</th>" for header in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _stack_text(stack: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    for frame in stack:
        lines.append(
            f'  File "{frame["filename"]}", line {frame["lineno"]}, in {frame["function"]}'
        )
        if frame["line"]:
            lines.append(f"    {frame['line']}")
    return "<pre>" + _e("\n".join(lines) or "(no stack)") + "</pre>"


def _sections_html(report: dict[str, Any]) -> Iterator[str]:
    yield (
        '<section class="asyncperf-section" id="asyncperf-summary"><h2>asyncperf profile '
        f"{_e(report['name'])}</h2><p>started {_e(report['started'])}, "
        f"{report['duration']:.3f} s on {_e(report['loop'])}; outcome: {_e(report['outcome'])}; "
        f"sections: {_e(', '.join(report['sections']) or 'none')}</p>"
        "<h3>Overhead</h3>"
        + _table(["section", "note"], [[key, note] for key, note in report["overhead"].items()])
        + "</section>"
    )
    cpu = report["cpu"]
    if cpu is not None:
        yield (
            '<section class="asyncperf-section" id="asyncperf-cpu"><h2>CPU: top functions by '
            f"self time</h2><p>{cpu['samples']} samples, CPU time {cpu['cpu_time']:.3f} s, "
            f"awaiting {cpu['await_time']:.3f} s, in tasks outside the profile's context "
            f"{cpu['out_of_context_time']:.3f} s</p>"
            + _table(
                ["self s", "total s", "function", "where"],
                [
                    [
                        f"{item['self_time']:.4f}",
                        f"{item['total_time']:.4f}",
                        item["function"],
                        f"{item['file']}:{item['line']}",
                    ]
                    for item in cpu["top_functions"]
                ],
            )
            + "</section>"
        )
    memory = report["memory"]
    if memory is not None:
        yield (
            '<section class="asyncperf-section" id="asyncperf-memory"><h2>Memory</h2>'
            f"<p>traced {memory['traced_bytes_start']:,} B at the start, "
            f"{memory['traced_bytes_end']:,} B at the end</p><h3>Growth by line</h3>"
            + _table(
                ["bytes", "blocks", "held at the end", "where", "line"],
                [
                    [
                        f"{item['size_diff']:+,}",
                        f"{item['count_diff']:+,}",
                        f"{item['size']:,} B",
                        f"{item['filename']}:{item['lineno']}",
                        item["line"],
                    ]
                    for item in memory["growth"]
                ],
            )
            + "<h3>Top allocations at the end</h3>"
            + _table(
                ["bytes", "blocks", "where", "line"],
                [
                    [
                        f"{item['size']:,}",
                        item["count"],
                        f"{item['filename']}:{item['lineno']}",
                        item["line"],
                    ]
                    for item in memory["top"]
                ],
            )
            + "</section>"
        )
    tasks = report["tasks"]
    if tasks is not None:
        final = tasks["final"]
        parts = [
            '<section class="asyncperf-section" id="asyncperf-tasks">'
            f"<h2>Tasks at the end: {final['count']}</h2><p>{_e(tasks['age_note'])}; "
            f"{tasks['dumps_taken']} dumps taken</p>"
        ]
        for task in final["tasks"]:
            parts.append(
                f"<h4>{_e(task['name'])}: {_e(task['coroutine'])} ({_e(task['state'])}, "
                f"age &ge; {task['age']:.3f} s)</h4>"
                + (f"<p>waiting on {_e(task['waiting_on'])}</p>" if task["waiting_on"] else "")
                + _stack_text(task["stack"])
            )
        for dump in tasks["dumps"]:
            parts.append(
                f"<p>dump at {dump['at']:.3f} s: {dump['count']} tasks: "
                + _e(", ".join(f"{t['name']} ({t['coroutine']})" for t in dump["tasks"]))
                + "</p>"
            )
        parts.append("</section>")
        yield "".join(parts)
    blocking = report["blocking"]
    if blocking is not None:
        lag = blocking["lag"]
        parts = [
            '<section class="asyncperf-section" id="asyncperf-blocking">'
            f"<h2>Blocking: {blocking['total_blocks']} blocks over "
            f"{blocking['threshold'] * 1000:.0f} ms</h2>"
            f"<p>loop lag (every {lag['interval'] * 1000:.0f} ms, {lag['samples']} samples): "
            f"last {lag['last'] * 1000:.2f} ms, mean {lag['mean'] * 1000:.2f} ms, "
            f"p99 {lag['p99'] * 1000:.2f} ms, max {lag['max'] * 1000:.2f} ms</p>"
        ]
        for block in blocking["blocks"]:
            parts.append(
                f"<h4>{block['duration'] * 1000:.1f} ms"
                + (f" in task {_e(block['task'])}" if block["task"] else "")
                + ("" if block["ended"] else " (still blocked when the profile ended)")
                + "</h4>"
                + _stack_text(block["stack"])
            )
        parts.append("</section>")
        yield "".join(parts)


def _render_html(report: dict[str, Any], cpu_html: str) -> str:
    sections = f"<style>{_STYLE}</style>" + "".join(_sections_html(report))
    if cpu_html:
        index = cpu_html.rfind("</body>")
        if index != -1:
            return cpu_html[:index] + sections + cpu_html[index:]
        return cpu_html + sections
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>asyncperf profile {_e(report['name'])}</title></head><body>"
        + sections
        + "</body></html>"
    )
