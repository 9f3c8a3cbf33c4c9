"""What a run records and what is computed from it.

- :class:`Recorder`: one outcome per message, settled exactly once (a second
  settlement raises), with the time it settled and, for a reply, its latency.
- :class:`Sampler`: a coroutine that samples, every ``sample_interval``
  seconds, the process's RSS (``/proc/self/statm``, resident pages; where that
  file does not exist, ``resource.getrusage().ru_maxrss``), its task count
  (``len(asyncio.all_tasks())``), its CPU time (``time.process_time()``, all
  threads) and the upstream's requests in flight.
- :func:`figures`: per class and per phase, the figures of the report.

Latency is measured from the instant a message was scheduled to be sent (a
strategy too busy to accept it on time pays for it). Percentiles are over the
replies (``ok`` and ``ok_late``) and the messages whose caller gave up
(``timed_out``, counted at the time it waited); refusals and errors answer at
once or nearly and are counted per outcome instead.
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from asyncperf.abc import Clock
from asyncperf.tools.simulate._config import CLASSES
from asyncperf.tools.simulate._workload import Workload

__all__ = [
    "CODES",
    "OUTCOMES",
    "PENDING",
    "Recorder",
    "Sampler",
    "figures",
    "max_rss_bytes",
    "percentile",
    "rss_bytes",
    "series",
]

#: Every message ends in exactly one of these: the answer its caller got.
OUTCOMES = (
    "ok",  # a reply within the SLO
    "ok_late",  # a reply after the SLO, before the caller gave up
    "rate_limited",  # the upstream's 429
    "upstream_error",  # the upstream's 5xx
    "rejected",  # asyncperf refused it (Rejected, RateLimited): "busy, try later", at once
    "dropped",  # asyncperf shed it from its queue (Dropped): deadline, CoDel, eviction
    "timed_out",  # the caller gave up after the client timeout (or a handler timeout)
)
OK, OK_LATE, RATE_LIMITED, UPSTREAM_ERROR, REJECTED, DROPPED, TIMED_OUT = range(len(OUTCOMES))
PENDING = -1
#: One character per outcome in the compact form a child sends back.
CODES = "olrejdt"

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """The process's resident set size now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def max_rss_bytes() -> int:
    """The process's peak resident set size (``ru_maxrss``), in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class Recorder:
    """The outcome of every message of a run; each is settled exactly once."""

    __slots__ = ("cached", "finish", "latency", "outcome", "settled", "start")

    def __init__(self, count: int, start: float) -> None:
        self.start = start
        self.outcome = [PENDING] * count
        self.finish = [math.nan] * count
        self.latency = [math.nan] * count
        self.cached = [False] * count
        self.settled = 0

    def settle(self, index: int, outcome: int, now: float, latency: float) -> None:
        """Record how message ``index`` ended.

        Raises:
            RuntimeError: the message was settled before (a bug in a strategy).
        """
        if self.outcome[index] != PENDING:
            raise RuntimeError(
                f"message {index} settled twice: {OUTCOMES[self.outcome[index]]} "
                f"then {OUTCOMES[outcome]}"
            )
        self.outcome[index] = outcome
        self.finish[index] = now - self.start
        self.latency[index] = latency
        self.settled += 1

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(OUTCOMES, 0)
        for outcome in self.outcome:
            if outcome == PENDING:
                raise RuntimeError("a message was never settled")
            counts[OUTCOMES[outcome]] += 1
        return counts

    def codes(self) -> str:
        """One character per message (see :data:`CODES`); ``?`` for one never settled."""
        return "".join(CODES[o] if o != PENDING else "?" for o in self.outcome)


class Sampler:
    """Samples RSS, tasks, CPU time and upstream load every ``interval`` seconds."""

    def __init__(
        self,
        clock: Clock,
        start: float,
        interval: float,
        in_flight: Callable[[], int],
        tick: Callable[[], None] | None = None,
    ) -> None:
        self._clock = clock
        self._start = start
        self._interval = interval
        self._in_flight = in_flight
        self._tick = tick
        self.t: list[float] = []
        self.rss: list[int] = []
        self.tasks: list[int] = []
        self.cpu: list[float] = []
        self.upstream: list[int] = []

    def sample(self) -> None:
        self.t.append(self._clock.now() - self._start)
        self.rss.append(rss_bytes())
        self.tasks.append(len(asyncio.all_tasks()))
        self.cpu.append(time.process_time())
        self.upstream.append(self._in_flight())

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            self.sample()
            if self._tick is not None:
                self._tick()
            await self._clock.sleep(self._interval)

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds used between two instants of the run (the nearest samples)."""
        if not self.t:
            return 0.0
        return self.cpu[self._nearest(end)] - self.cpu[self._nearest(start)]

    def _nearest(self, at: float) -> int:
        return min(range(len(self.t)), key=lambda k: abs(self.t[k] - at))


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The q-quantile of sorted values (nearest rank, interpolated); None if none."""
    if not ordered:
        return None
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _group(
    indexes: Sequence[int], recorder: Recorder, seconds: float, slo: float
) -> dict[str, Any]:
    """The figures of one group of messages (a class in a phase, or any union)."""
    outcomes = dict.fromkeys(OUTCOMES, 0)
    waits: list[float] = []
    hits = 0
    for i in indexes:
        outcome = recorder.outcome[i]
        outcomes[OUTCOMES[outcome]] += 1
        if outcome in (OK, OK_LATE, TIMED_OUT):
            waits.append(recorder.latency[i])
        if recorder.cached[i]:
            hits += 1
    waits.sort()
    messages = len(indexes)
    completed = outcomes["ok"] + outcomes["ok_late"]
    p50, p95, p99 = (percentile(waits, q) for q in (0.50, 0.95, 0.99))
    return {
        "messages": messages,
        "outcomes": outcomes,
        "completed_per_s": completed / seconds if seconds > 0 else 0.0,
        "goodput_per_s": outcomes["ok"] / seconds if seconds > 0 else 0.0,
        "goodput_share": outcomes["ok"] / messages if messages else 0.0,
        "latency_p50": p50,
        "latency_p95": p95,
        "latency_p99": p99,
        "cache_hits": hits,
        "cache_hit_ratio": hits / messages if messages else 0.0,
        "slo": slo,
    }


def figures(workload: Workload, recorder: Recorder, slo: float) -> dict[str, dict[str, Any]]:
    """Figures per class (``all``, ``high``...) and phase (``all``, ``warmup``...).

    A message belongs to the phase it was sent in; rates are per second of that phase.
    """
    phases = workload.phases
    result: dict[str, dict[str, Any]] = {}
    for klass in ("all", *CLASSES):
        per_phase: dict[str, Any] = {}
        for phase_index, phase in enumerate([None, *phases]):
            indexes = [
                i
                for i in range(len(workload))
                if (klass == "all" or workload.klass[i] == CLASSES.index(klass))
                and (phase is None or workload.phase[i] == phase_index - 1)
            ]
            seconds = workload.duration if phase is None else phase.seconds
            per_phase["all" if phase is None else phase.name] = _group(
                indexes, recorder, seconds, slo
            )
        result[klass] = per_phase
    return result


def series(
    recorder: Recorder, sampler: Sampler, window: float, slo: float, end: float
) -> dict[str, list[float | None]]:
    """The time series of a run, one point per ``window`` seconds (by completion time)."""
    count = max(1, math.ceil(end / window))
    completed = [0] * count
    good = [0] * count
    waits: list[list[float]] = [[] for _ in range(count)]
    for i, outcome in enumerate(recorder.outcome):
        if outcome not in (OK, OK_LATE, TIMED_OUT):
            continue
        k = min(count - 1, max(0, int(recorder.finish[i] / window)))
        waits[k].append(recorder.latency[i])
        if outcome != TIMED_OUT:
            completed[k] += 1
        if outcome == OK:
            good[k] += 1
    p99: list[float | None] = [percentile(sorted(w), 0.99) for w in waits]
    t = [(k + 0.5) * window for k in range(count)]
    rss: list[float | None] = []
    tasks: list[float | None] = []
    cpu: list[float | None] = []
    for k in range(count):
        inside = [s for s, ts in enumerate(sampler.t) if k * window <= ts < (k + 1) * window]
        rss.append(max(sampler.rss[s] for s in inside) if inside else None)
        tasks.append(max(sampler.tasks[s] for s in inside) if inside else None)
        cpu.append(sampler.cpu[inside[-1]] - sampler.cpu[inside[0]] if len(inside) > 1 else None)
    return {
        "t": list(t),
        "completed_per_s": [c / window for c in completed],
        "goodput_per_s": [g / window for g in good],
        "latency_p99": p99,
        "rss_bytes": rss,
        "tasks": tasks,
        "cpu_seconds": cpu,
    }
