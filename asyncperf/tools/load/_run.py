"""The runner behind ``asyncperf load``: a concurrency sweep or fixed arrival rates.

A **concurrency step** runs N workers, each calling the target back to back
(closed loop: a new call starts when the previous one ends). A **rate step**
starts calls at fixed times, ``rate`` per second, whether or not earlier calls
have answered (open loop), with at most ``max_in_flight`` outstanding: a call
due while that many are outstanding is *skipped*, and counted. Latency runs from
the call to its result in both; a rate step also reports its *start lag*, how
late calls started on their schedule (a loop too busy to keep up shows there).

Each step warms up first (calls started then are counted apart, as
``warmup_calls``), then measures for ``duration`` seconds. At the end of the
window no call starts any more, and the calls still running are cancelled and
counted as *unfinished*: every call started ends in exactly one outcome.

Time is read from a :class:`~asyncperf.abc.Clock` (``time.monotonic`` by
default), so the runner runs on :class:`asyncperf.testing.VirtualEventLoop`
when given its clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import inspect
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

import asyncperf as ap
from asyncperf._validate import check_int, check_number
from asyncperf.abc import Clock
from asyncperf.tools.load._results import (
    LatencySummary,
    LoadReport,
    Mode,
    StepResult,
    find_knee,
    format_level,
)
from asyncperf.tools.load._target import (
    ArgumentsError,
    ArgumentSource,
    Call,
    GeneratorArguments,
    NoArguments,
    Target,
    TargetError,
)

__all__ = ["DEFAULT_CONCURRENCY", "DEFAULT_MAX_IN_FLIGHT", "run_load"]

#: The sweep run when neither concurrency nor rate is given.
DEFAULT_CONCURRENCY = (1, 8, 64, 256)
#: Outstanding calls a rate step allows before it skips calls.
DEFAULT_MAX_IN_FLIGHT = 1_000
_REFRESH_INTERVAL = 0.1
# Outcomes of a call besides a result and an exception's type name (no type is named so).
_TIMED_OUT = "<timed out>"
_CANCELLED = "<cancelled>"


class _Tally:
    """The counts of one phase (warm-up or measured window) of one step.

    A call is counted when it starts (``started``, ``in_flight``) and once
    more when it ends. ``close()`` freezes the counts: the calls still in
    flight become ``unfinished``, and whatever they do afterwards is ignored.
    """

    __slots__ = (
        "cancelled",
        "closed",
        "errors",
        "in_flight",
        "lags",
        "latencies",
        "ok",
        "skipped",
        "started",
        "timed_out",
        "unfinished",
    )

    def __init__(self) -> None:
        self.started = self.ok = self.timed_out = self.cancelled = 0
        self.in_flight = self.unfinished = self.skipped = 0
        self.errors: Counter[str] = Counter()
        self.latencies = array("d")
        self.lags = array("d")  # of a rate step's calls: start time minus scheduled time
        self.closed = False

    def begin(self) -> None:
        self.started += 1
        self.in_flight += 1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.unfinished = self.in_flight
            self.in_flight = 0


class _Runner:
    """One load run: the target, the argument stream, the settings, the live state."""

    def __init__(
        self,
        target: Callable[..., Awaitable[Any]],
        name: str,
        calls: Iterator[Call],
        arguments: str,
        *,
        duration: float,
        warmup: float,
        timeout: float | None,
        max_in_flight: int,
        clock: Clock,
    ) -> None:
        self.target = target
        self.name = name
        self.calls = calls
        self.arguments = arguments
        self.duration = duration
        self.warmup = warmup
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.clock = clock
        self.notes: list[str] = []
        # The live state, read by the progress bar.
        self.warm = _Tally()
        self.measure = _Tally()
        self.step_label = ""
        self.step_started = 0.0
        self.fatal: BaseException | None = None
        self._stop: asyncio.Future[None] | None = None

    # -- one call -------------------------------------------------------------------

    def next_call(self) -> Call:
        """The next arguments from the stream; a failing source stops the run."""
        try:
            return next(self.calls)
        except ArgumentsError:
            raise
        except StopIteration:
            raise ArgumentsError(f"the argument source {self.arguments} ran out") from None
        except Exception as exc:
            raise ArgumentsError(
                f"the argument source {self.arguments} raised {type(exc).__name__}: {exc}"
            ) from exc

    def fail(self, exc: BaseException) -> None:
        """Stop the step at once because of ``exc`` (raised by the run once it stopped)."""
        if self.fatal is None:
            self.fatal = exc
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(None)

    async def invoke(self, tally: _Tally, call: Call, begun: float) -> None:
        """Make one call (already counted as started) and count its outcome in ``tally``."""
        args, kwargs = call
        # None: a result; else _TIMED_OUT, _CANCELLED or the exception's type name.
        outcome: str | None = None
        try:
            if self.timeout is None:
                await self.target(*args, **kwargs)
            else:
                scope = asyncio.timeout(self.timeout)
                try:
                    async with scope:
                        await self.target(*args, **kwargs)
                except TimeoutError:
                    if not scope.expired():
                        raise  # the target's own TimeoutError: an error like any other
                    outcome = _TIMED_OUT
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if tally.closed or (task is not None and task.cancelling()):
                raise  # the runner ended the step (the call is unfinished), or the run stops
            outcome = _CANCELLED
        except Exception as exc:
            outcome = type(exc).__qualname__
        ended = self.clock.now()
        if tally.closed:
            return  # counted as unfinished when the step closed
        tally.in_flight -= 1
        if outcome is None:
            tally.ok += 1
            tally.latencies.append(ended - begun)
        elif outcome == _TIMED_OUT:
            tally.timed_out += 1
        elif outcome == _CANCELLED:
            tally.cancelled += 1
        else:
            tally.errors[outcome] += 1

    async def scheduled_call(self, tally: _Tally, call: Call, scheduled: float) -> None:
        """A rate step's call, in its own task: notes how late it starts, then makes it."""
        begun = self.clock.now()
        tally.lags.append(begun - scheduled)
        await self.invoke(tally, call, begun)

    async def probe(self) -> None:
        """One call before any step: checks that the target returns an awaitable.

        Its outcome is not counted; an error is noted in the report, since every
        call will likely meet it.

        Raises:
            TargetError: the call returned something not awaitable.
        """
        args, kwargs = self.next_call()
        try:
            awaitable = self.target(*args, **kwargs)
        except Exception as exc:
            self.notes.append(f"the first call raised {type(exc).__qualname__}: {exc}")
            return
        if not inspect.isawaitable(awaitable):
            raise TargetError(
                f"{self.name} returned {type(awaitable).__name__}, not an awaitable: "
                "load-test an async function (or a callable returning an awaitable)"
            )
        bound = self.timeout if self.timeout is not None else self.duration
        try:
            async with asyncio.timeout(bound):
                await awaitable
        except TimeoutError:
            self.notes.append(f"the first call did not answer within {bound:g} s")
        except Exception as exc:
            self.notes.append(f"the first call raised {type(exc).__qualname__}: {exc}")

    # -- steps ----------------------------------------------------------------------

    def _begin_step(self, mode: Mode, level: float) -> tuple[float, float, float]:
        self.warm, self.measure = _Tally(), _Tally()
        self.step_label = format_level(mode, level)
        start = self.clock.now()
        self.step_started = start
        self._stop = asyncio.get_running_loop().create_future()
        measure_from = start + self.warmup
        return start, measure_from, measure_from + self.duration

    async def _wait_until(self, deadline: float) -> None:
        """Sleep until ``deadline`` on the clock, or until :meth:`fail` stops the step."""
        stop = self._stop
        assert stop is not None
        timer = self.clock.call_later(
            max(0.0, deadline - self.clock.now()),
            lambda: None if stop.done() else stop.set_result(None),
        )
        try:
            await stop
        finally:
            timer.cancel()

    async def _end_step(
        self, tasks: Iterable[asyncio.Task[None]], mode: Mode, level: float, measure_from: float
    ) -> StepResult:
        """Close the counts, cancel what still runs, and sum the step up."""
        stopped = self.clock.now()
        warm, measure = self.warm, self.measure
        warm.close()
        measure.close()
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        results = await asyncio.gather(*pending, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):  # a bug of the runner: never hide it
                raise result
        if self.fatal is not None:
            raise self.fatal
        return StepResult(
            mode=mode,
            level=level,
            elapsed=max(stopped - measure_from, 0.0),
            started=measure.started,
            ok=measure.ok,
            errors=dict(measure.errors),
            timed_out=measure.timed_out,
            cancelled=measure.cancelled,
            unfinished=measure.unfinished,
            skipped=measure.skipped,
            warmup_calls=warm.started,
            latency=LatencySummary.of(measure.latencies),
            start_lag=LatencySummary.of(measure.lags) if mode == "rate" else None,
        )

    async def _worker(self, measure_from: float, deadline: float) -> None:
        """Call the target back to back until the deadline."""
        now = self.clock.now
        while True:
            begun = now()
            if begun >= deadline:
                return
            try:
                call = self.next_call()
            except ArgumentsError as exc:
                self.fail(exc)
                return
            tally = self.measure if begun >= measure_from else self.warm
            tally.begin()
            await self.invoke(tally, call, begun)
            # Between calls the worker lets the loop run, as a request arriving over the
            # network would: a call that never suspends (a fast failure) would otherwise
            # hold the loop, and the timers of every other call would fire late.
            await asyncio.sleep(0)

    async def concurrency_step(self, workers: int) -> StepResult:
        """Run ``workers`` workers for the warm-up and the measured window."""
        _start, measure_from, deadline = self._begin_step("concurrency", workers)
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._worker(measure_from, deadline)) for _ in range(workers)]
        try:
            await self._wait_until(deadline)
        finally:
            # Cancelled from outside too: no worker outlives the step.
            result = await self._end_step(tasks, "concurrency", workers, measure_from)
        return result

    async def rate_step(self, rate: float) -> StepResult:
        """Start ``rate`` calls per second, at fixed times, through the warm-up and the window."""
        start, measure_from, deadline = self._begin_step("rate", rate)
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        interval = 1.0 / rate
        issued = 0
        try:
            while self.fatal is None:
                now = self.clock.now()
                scheduled = start + issued * interval
                # Every call due by now starts now: after a late wake-up, a burst.
                while scheduled <= now and scheduled < deadline:
                    issued += 1
                    tally = self.measure if scheduled >= measure_from else self.warm
                    if self.warm.in_flight + self.measure.in_flight >= self.max_in_flight:
                        tally.skipped += 1
                    else:
                        try:
                            call = self.next_call()
                        except ArgumentsError as exc:
                            self.fail(exc)
                            break
                        tally.begin()
                        task = loop.create_task(self.scheduled_call(tally, call, scheduled))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    scheduled = start + issued * interval
                if scheduled >= deadline or self.fatal is not None:
                    await self._wait_until(deadline)
                    break
                await self.clock.sleep(scheduled - now)
        finally:
            result = await self._end_step(list(tasks), "rate", rate, measure_from)
        return result


def _check_levels(name: str, values: Sequence[float], *, integer: bool) -> tuple[float, ...]:
    if isinstance(values, str | bytes) or not values:
        raise ValueError(f"{name} must be a non-empty sequence of numbers")
    for value in values:
        if integer:
            check_int(name, value, minimum=1)
        else:
            check_number(name, value)
    return tuple(sorted(set(values)))


async def _show_progress(runner: _Runner, bar: Progress, step_seconds: float) -> None:
    """Refresh the progress bar with the current step's counts until cancelled."""
    task = bar.task_ids[0]
    while True:
        measure = runner.measure
        errors = sum(measure.errors.values()) + measure.timed_out
        within = min(max(runner.clock.now() - runner.step_started, 0.0), step_seconds)
        bar.update(
            task,
            completed=bar.tasks[0].fields["done"] + within,
            status=(f"{measure.ok:,} ok, {errors:,} failed, {measure.in_flight:,} in flight"),
        )
        bar.refresh()
        await runner.clock.sleep(_REFRESH_INTERVAL)


def _loop_clock() -> Clock:
    """The running loop's own clock when it has one (a VirtualEventLoop), else the system's."""
    clock = getattr(asyncio.get_running_loop(), "clock", None)
    return clock if isinstance(clock, Clock) else ap.SystemClock()


async def run_load(
    target: Target | Callable[..., Awaitable[Any]],
    *,
    concurrency: Sequence[int] | None = None,
    rate: Sequence[float] | None = None,
    duration: float = 10.0,
    warmup: float = 1.0,
    timeout: float | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    arguments: ArgumentSource | Callable[[], Iterable[object]] | None = None,
    clock: Clock | None = None,
    console: Console | None = None,
    progress: bool = True,
) -> LoadReport:
    """Load-test ``target`` on the running loop, one step per concurrency or rate.

    Before the first step one call, not counted, checks that ``target`` returns
    an awaitable. Then each level runs ``warmup`` seconds (counted apart) and
    ``duration`` measured seconds; see the module's documentation for how calls
    start, end and are counted.

    Args:
        target: an async function (or a callable returning an awaitable), or a
            :class:`Target` from :func:`resolve_target`.
        concurrency: workers calling back to back, one step per value (sorted,
            duplicates dropped). Default ``(1, 8, 64, 256)`` when ``rate`` is not given.
        rate: calls per second started at fixed times, one step per value.
            Excludes ``concurrency``.
        duration: seconds each step measures.
        warmup: seconds each step runs before it measures.
        timeout: seconds a call may take before it is cancelled and counted as
            ``timed_out`` (None: no limit).
        max_in_flight: outstanding calls a rate step allows; a call due beyond
            that is skipped (and counted).
        arguments: where each call's arguments come from: an
            :class:`ArgumentSource`, or a function returning an iterable of items
            (see :func:`as_call`); None calls the target without arguments.
        clock: the source of time; default: the running loop's ``clock`` when it
            has one (a :class:`~asyncperf.testing.VirtualEventLoop`), else
            ``time.monotonic``.
        console: where to show a progress bar (None: nothing is shown).
        progress: show the progress bar (only with a console).

    Returns:
        The report: a :class:`StepResult` per level, and the knee.

    Raises:
        ValueError: a setting is out of range, or both ``concurrency`` and
            ``rate`` are given (the message names the parameter).
        TypeError: a setting has the wrong type.
        TargetError: the target's first call returned no awaitable.
        ArgumentsError: the argument source failed (a bad item, no items).
    """
    mode: Mode
    if concurrency is not None and rate is not None:
        raise ValueError("give concurrency or rate, not both")
    if rate is not None:
        mode, levels = "rate", _check_levels("rate", rate, integer=False)
    else:
        mode = "concurrency"
        levels = _check_levels(
            "concurrency", DEFAULT_CONCURRENCY if concurrency is None else concurrency, integer=True
        )
    duration = check_number("duration", duration)
    warmup = check_number("warmup", warmup, strict=False)
    if timeout is not None:
        timeout = check_number("timeout", timeout)
    check_int("max_in_flight", max_in_flight, minimum=1)

    if isinstance(target, Target):
        function, name = target.function, target.name
    elif callable(target):
        function = target
        name = getattr(target, "__qualname__", None) or repr(target)
    else:
        raise TypeError(f"target must be an async callable, not {type(target).__name__}")
    source: ArgumentSource
    if arguments is None:
        source = NoArguments()
    elif callable(arguments):
        source = GeneratorArguments(arguments, getattr(arguments, "__qualname__", "arguments"))
    else:
        source = arguments

    runner = _Runner(
        function,
        name,
        source.calls(),
        source.description,
        duration=duration,
        warmup=warmup,
        timeout=timeout,
        max_in_flight=max_in_flight,
        clock=clock if clock is not None else _loop_clock(),
    )
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    await runner.probe()

    step_seconds = warmup + duration
    bar = (
        Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            transient=True,
            auto_refresh=False,  # refreshed from the loop: no thread writes to the console
        )
        if console is not None and progress
        else None
    )
    steps: list[StepResult] = []
    with contextlib.ExitStack() as stack:
        monitor: asyncio.Task[None] | None = None
        if bar is not None:
            bar.add_task(
                f"step 1/{len(levels)}", total=step_seconds * len(levels), status="", done=0.0
            )
            stack.enter_context(bar)
            monitor = asyncio.get_running_loop().create_task(
                _show_progress(runner, bar, step_seconds)
            )
        try:
            for index, level in enumerate(levels):
                if bar is not None:
                    bar.update(
                        bar.task_ids[0],
                        done=index * step_seconds,
                        description=f"step {index + 1}/{len(levels)}: "
                        + format_level(mode, level)
                        + (" workers" if mode == "concurrency" else ""),
                    )
                if mode == "concurrency":
                    steps.append(await runner.concurrency_step(int(level)))
                else:
                    steps.append(await runner.rate_step(level))
        finally:
            if monitor is not None:
                monitor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await monitor
    return LoadReport(
        target=name,
        mode=mode,
        loop=ap.loop_name(),
        arguments=source.description,
        duration=duration,
        warmup=warmup,
        timeout=timeout,
        max_in_flight=max_in_flight if mode == "rate" else None,
        steps=tuple(steps),
        knee=find_knee(steps),
        started_at=started_at,
        notes=tuple(runner.notes),
    )
