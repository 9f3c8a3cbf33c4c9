"""The three strategies, and one run of a strategy over the workload.

Every strategy serves the same messages through the same caller and the same
handler body; they differ only in what stands between the two:

- ``naive``: a task per message, no bound, no cache, straight to the upstream.
- ``semaphore``: a task per message (gathered at the end), an
  ``asyncio.Semaphore(slots)`` around the upstream call and a dict cache of
  prompt → reply.
- ``asyncperf``: an :class:`asyncperf.Runtime` with one shared pool for the
  upstream (``slots`` workers at most, a gradient2 adaptive limit, CoDel,
  levels that reject when full), three handlers (high, normal, low:
  priorities 0, 1, 2) with a queue deadline and ``cache_ttl``, the supervisor,
  and a tiered cache (memory over disk in a temporary directory; memory only
  with ``disk_cache=False``). The three handlers share one
  ``cache_namespace``, so a reply cached for one class serves the others, as
  the semaphore strategy's dict does.

The caller (one task per message: what a server does with each request it
accepts) gives up after the client timeout, counted from the instant the
message was scheduled. The handler body does the caller-side CPU work: it
serialises the session's recent history and the message's context into a JSON
request, calls the upstream and parses its JSON response. Sessions keep the
last ``history`` turns, which grow with each reply.

Both bounded strategies are given the upstream's slot count, as a user who
read its documentation would; neither is told the load in advance.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import asyncperf as ap
from asyncperf.abc import Clock
from asyncperf.tools.simulate._config import CLASSES, SimulationConfig
from asyncperf.tools.simulate._measure import (
    DROPPED,
    OK,
    OK_LATE,
    RATE_LIMITED,
    REJECTED,
    TIMED_OUT,
    UPSTREAM_ERROR,
    Recorder,
    Sampler,
    figures,
    max_rss_bytes,
    series,
)
from asyncperf.tools.simulate._upstream import Upstream, UpstreamError, UpstreamRateLimited
from asyncperf.tools.simulate._workload import Workload, context_text, prompt_text

__all__ = ["StrategyRun", "build_request", "count_tokens", "run_strategy"]

#: A tokenizer's estimate (words and punctuation): the CPU a real token count costs.
_TOKEN = re.compile(r"\w+|[^\w\s]")
Handle = Callable[[int], Coroutine[Any, Any, str]]
#: Called with the asyncperf strategy's runtime once it runs (``asyncperf dashboard --simulate``
#: serves its metrics); see :func:`run_strategy`.
RuntimeHook = Callable[[ap.Runtime], None]
#: Dispatch sleeps only when the next message is at least this far off (seconds).
_DISPATCH_SLACK = 0.0005
#: Seconds the drain waits beyond the client timeout before it cancels a caller.
_DRAIN_GRACE = 1.0
#: Seconds the asyncperf runtime's own drain may take at the end (callers have gone).
_RUNTIME_DRAIN = 0.5


def count_tokens(text: str) -> int:
    """Tokens of ``text`` (an estimate: words and punctuation marks)."""
    return len(_TOKEN.findall(text))


def build_request(workload: Workload, history: Iterable[tuple[int, str]], index: int) -> str:
    """The JSON request of message ``index``: its session's history, the prompt, the context.

    The new text (prompt and context) is tokenised first, to check it fits
    the model's context window, as a chat backend does before each call
    (the history's turns were counted when they were added).
    """
    messages: list[dict[str, str]] = []
    for asked, reply in history:
        messages.append({"role": "user", "content": prompt_text(asked)})
        messages.append({"role": "assistant", "content": reply})
    prompt = prompt_text(workload.prompt[index])
    context = context_text(workload.payload[index])
    messages.append({"role": "user", "content": prompt})
    return json.dumps(
        {
            "model": "simulated",
            "session": workload.session[index],
            "messages": messages,
            "context": context,
            "prompt_tokens": count_tokens(prompt) + count_tokens(context),
            "max_tokens": 256,
        }
    )


class StrategyRun:
    """The record of one strategy's run: the recorder, the sampler, the figures."""

    def __init__(
        self,
        strategy: str,
        recorder: Recorder,
        sampler: Sampler,
        result: dict[str, Any],
    ) -> None:
        self.strategy = strategy
        self.recorder = recorder
        self.sampler = sampler
        self.result = result


class _Simulation:
    """The shared parts of a run: workload, upstream, sessions, recorder, the body."""

    def __init__(
        self,
        config: SimulationConfig,
        workload: Workload,
        clock: Clock,
        on_runtime: RuntimeHook | None = None,
    ) -> None:
        self.config = config
        self.on_runtime = on_runtime
        self.workload = workload
        self.clock = clock
        self.upstream = Upstream(
            config.slots, config.rate_limit * workload.capacity, config.burst, clock
        )
        self.histories: list[deque[tuple[int, str]]] = [
            deque(maxlen=config.history) for _ in range(config.sessions)
        ]
        self.usage = [0] * config.sessions  # reply tokens per session (usage accounting)
        self.recorder = Recorder(len(workload), clock.now())
        # Messages whose body ran (asyncperf: a call answered without it was a cache hit).
        self.ran = [False] * len(workload)

    def build_request(self, index: int) -> str:
        """The JSON request of a message (see :func:`build_request`)."""
        workload = self.workload
        return build_request(workload, self.histories[workload.session[index]], index)

    async def body(self, index: int) -> str:
        """The handler body: serialise, call the upstream, parse; returns the reply text."""
        self.ran[index] = True
        request = self.build_request(index)
        workload = self.workload
        response = await self.upstream.call(
            request, workload.base_latency[index], workload.fails[index]
        )
        reply: str = json.loads(response)["text"]
        self.usage[workload.session[index]] += count_tokens(reply)
        return reply

    async def serve(self, index: int, handle: Handle) -> None:
        """The caller of one message: waits up to the client timeout, then settles it."""
        workload = self.workload
        recorder = self.recorder
        clock = self.clock
        sent = recorder.start + workload.send[index]
        deadline = sent + self.config.client_timeout
        loop = asyncio.get_running_loop()
        outcome = TIMED_OUT
        reply: str | None = None
        try:
            async with asyncio.timeout_at(loop.time() + (deadline - clock.now())):
                reply = await handle(index)
            now = clock.now()
            outcome = OK if now - sent <= self.config.slo else OK_LATE
        except TimeoutError:  # the client timeout, or a handler timeout (JobTimeout)
            outcome = TIMED_OUT
        except UpstreamRateLimited:
            outcome = RATE_LIMITED
        except UpstreamError:
            outcome = UPSTREAM_ERROR
        except ap.Dropped:
            outcome = DROPPED
        except ap.Rejected:
            outcome = REJECTED
        except asyncio.CancelledError:
            # Cut by the drain at the end of the run: the caller got nothing.
            now = clock.now()
            recorder.settle(index, TIMED_OUT, now, now - sent)
            raise
        now = clock.now()
        recorder.settle(index, outcome, now, now - sent)
        if reply is not None:
            self.histories[workload.session[index]].append((workload.prompt[index], reply))

    async def dispatch(self, handle: Handle, tasks: set[asyncio.Task[None]]) -> None:
        """Start one caller task per message at its scheduled instant."""
        workload = self.workload
        clock = self.clock
        start = self.recorder.start
        serve = self.serve
        for index, offset in enumerate(workload.send):
            delay = start + offset - clock.now()
            if delay > _DISPATCH_SLACK:
                await clock.sleep(delay)
            task = asyncio.create_task(serve(index, handle))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        # Sleep to the end of the last phase, so every run spans the same phases.
        rest = start + workload.duration - clock.now()
        if rest > 0:
            await clock.sleep(rest)

    async def drain(self, tasks: set[asyncio.Task[None]]) -> None:
        """Wait for the callers still out (each has its timeout), then cancel any left."""
        if tasks:
            await asyncio.wait(set(tasks), timeout=self.config.client_timeout + _DRAIN_GRACE)
        left = set(tasks)
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)


# -- the strategies ------------------------------------------------------------------


async def _naive(sim: _Simulation) -> dict[str, Any]:
    tasks: set[asyncio.Task[None]] = set()
    await sim.dispatch(sim.body, tasks)
    await sim.drain(tasks)
    return {}


async def _semaphore(sim: _Simulation) -> dict[str, Any]:
    semaphore = asyncio.Semaphore(sim.config.slots)
    cache: dict[int, str] = {}
    workload = sim.workload
    upstream = sim.upstream
    recorder = sim.recorder

    async def handle(index: int) -> str:
        prompt = workload.prompt[index]
        reply = cache.get(prompt)
        if reply is not None:
            recorder.cached[index] = True
            return reply
        sim.ran[index] = True
        request = sim.build_request(index)
        async with semaphore:
            response = await upstream.call(
                request, workload.base_latency[index], workload.fails[index]
            )
        reply = str(json.loads(response)["text"])
        sim.usage[workload.session[index]] += count_tokens(reply)
        cache[prompt] = reply
        return reply

    tasks: set[asyncio.Task[None]] = set()
    await sim.dispatch(handle, tasks)
    # gather + Semaphore: the callers still out are gathered at the end (each one
    # settles within its client timeout; the drain is the safety net).
    gathered = asyncio.gather(*tasks)
    await asyncio.wait({gathered}, timeout=sim.config.client_timeout + _DRAIN_GRACE)
    await sim.drain(tasks)
    await asyncio.gather(gathered, return_exceptions=True)
    return {"cache_entries": len(cache)}


def asyncperf_runtime(config: SimulationConfig, cache_dir: str | None, clock: Clock) -> ap.Runtime:
    """The runtime of the asyncperf strategy (see the module's docstring for its parts)."""
    capacity = config.capacity
    # Each level's bound: a queue a level can drain well within the SLO at full
    # capacity (the deadline sheds what still waits too long).
    max_pending = max(4, math.ceil(capacity * config.slo / 4))
    return ap.Runtime(
        clock=clock,
        max_workers=config.slots,
        min_workers=1,
        max_pending=max_pending,
        overflow="reject",
        codel_target=config.slo / 10,
        codel_interval=config.slo / 2,
        limiter="gradient2",
        admission_timeout=0.0,
        drain_timeout=_RUNTIME_DRAIN,
        autoscale=True,
        tick=0.1,
        hold_down=2.0,
        window=2,
        # The memory tier holds the hottest prompts (~5 MB of replies by default);
        # the disk tier below it keeps what it evicts.
        cache_max_entries=max(16, config.prompts // 20),
        cache_policy="tinylfu",
        cache_dir=cache_dir,
        pools={
            "upstream": ap.PoolSettings(
                max_workers=config.slots,
                min_workers=max(1, config.slots // 4),
                max_pending=max_pending,
            )
        },
    )


def queue_deadline(config: SimulationConfig) -> float:
    """Seconds a call may wait in asyncperf's queue: what leaves time to answer within the SLO."""
    return max(config.slo / 2, config.slo - 4 * config.latency)


async def _asyncperf(sim: _Simulation) -> dict[str, Any]:
    config = sim.config
    workload = sim.workload
    cache_dir = tempfile.mkdtemp(prefix="asyncperf-simulate-")
    try:
        runtime = asyncperf_runtime(config, cache_dir if config.disk_cache else None, sim.clock)

        def cache_key(index: int) -> str:
            return f"prompt:{workload.prompt[index]}"

        handlers: list[Handle] = [
            runtime.handler(
                name=name,
                priority=priority,
                pool="upstream",
                timeout=config.client_timeout,
                deadline=queue_deadline(config),
                cache_ttl=3_600.0,
                cache_key=cache_key,
                cache_namespace="chat",
            )(sim.body)
            for priority, name in enumerate(CLASSES)
        ]
        ran = sim.ran
        recorder = sim.recorder

        async def handle(index: int) -> str:
            reply = await handlers[workload.klass[index]](index)
            if not ran[index]:
                recorder.cached[index] = True
            return reply

        tasks: set[asyncio.Task[None]] = set()
        async with runtime:
            if sim.on_runtime is not None:
                sim.on_runtime(runtime)
            await sim.dispatch(handle, tasks)
            await sim.drain(tasks)
        stats = runtime.statistics()
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    handler_stats = {
        name: {
            "calls": h.calls,
            "succeeded": h.succeeded,
            "failed": h.failed,
            "timed_out": h.timed_out,
            "rejected": h.rejected,
            "dropped": h.dropped,
            "cancelled": h.cancelled,
            "cache_hits": h.cache_hits,
            "rejections": dict(h.rejections),
            "drops": dict(h.drops),
        }
        for name, h in stats.handlers.items()
    }
    supervisor = stats.supervisor
    return {
        "handlers": handler_stats,
        "supervisor_events": 0 if supervisor is None else len(supervisor.events),
        "shutdown": None if stats.shutdown is None else stats.shutdown.reason,
    }


_STRATEGIES: dict[str, Callable[[_Simulation], Coroutine[Any, Any, dict[str, Any]]]] = {
    "naive": _naive,
    "semaphore": _semaphore,
    "asyncperf": _asyncperf,
}


async def run_strategy(
    config: SimulationConfig,
    workload: Workload,
    strategy: str,
    *,
    clock: Clock | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_runtime: RuntimeHook | None = None,
) -> StrategyRun:
    """Run one strategy over the workload on the running loop; its record and figures.

    Args:
        config: the simulation's settings.
        workload: the schedule (:func:`make_workload` of the same config).
        strategy: ``naive``, ``semaphore`` or ``asyncperf``.
        clock: the time source (default :class:`asyncperf.SystemClock`; a
            :class:`~asyncperf.testing.VirtualClock` on virtual time).
        progress: called with (messages settled, messages) at each sample.
        on_runtime: called with the ``asyncperf`` strategy's runtime once it
            runs (e.g. to serve its ``metrics``); the other strategies have none.

    Raises:
        ValueError: an unknown strategy.
        RuntimeError: a message was settled twice, or never (a bug).
    """
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(_STRATEGIES)}, not {strategy!r}")
    clock = clock if clock is not None else ap.SystemClock()
    sim = _Simulation(config, workload, clock, on_runtime)
    recorder = sim.recorder
    total = len(workload)

    def tick() -> None:
        if progress is not None:
            progress(recorder.settled, total)

    sampler = Sampler(
        clock, recorder.start, config.sample_interval, lambda: sim.upstream.in_flight, tick
    )
    cpu_start = time.process_time()
    sampling = asyncio.create_task(sampler.run())
    try:
        extra = await _STRATEGIES[strategy](sim)
    finally:
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)
    sampler.sample()
    tick()
    cpu = time.process_time() - cpu_start
    end = clock.now() - recorder.start
    counts = recorder.counts()  # raises if a message was never settled
    if sum(counts.values()) != total:
        raise RuntimeError(f"{strategy}: outcomes sum to {sum(counts.values())}, not {total}")
    per_class = figures(workload, recorder, config.slo)
    # CPU per phase: the process's CPU time between the phase's bounds (nearest samples).
    for phase in workload.phases:
        messages = per_class["all"][phase.name]["messages"]
        seconds = sampler.cpu_between(phase.start, phase.end)
        per_class["all"][phase.name]["cpu_seconds"] = seconds
        per_class["all"][phase.name]["cpu_per_1000"] = (
            1000 * seconds / messages if messages else None
        )
    per_class["all"]["all"]["cpu_seconds"] = cpu
    per_class["all"]["all"]["cpu_per_1000"] = 1000 * cpu / total if total else None
    upstream = sim.upstream.statistics()
    result: dict[str, Any] = {
        "strategy": strategy,
        "loop": ap.loop_name(),
        "messages": total,
        "elapsed": end,
        "outcomes": counts,
        "classes": per_class,
        "peak_rss_bytes": max(sampler.rss),
        # The first sample: the interpreter, the modules and the workload, before any traffic.
        "start_rss_bytes": sampler.rss[0],
        "rss_growth_bytes": max(sampler.rss) - sampler.rss[0],
        "max_rss_bytes": max_rss_bytes(),
        "peak_tasks": max(sampler.tasks),
        "cpu_seconds": cpu,
        "cpu_per_1000": 1000 * cpu / total if total else None,
        "cache_hit_ratio": per_class["all"]["all"]["cache_hit_ratio"],
        "upstream": {
            "calls": upstream.calls,
            "completed": upstream.completed,
            "failed": upstream.failed,
            "rate_limited": upstream.rate_limited,
            "cancelled": upstream.cancelled,
            "peak_in_flight": upstream.peak_in_flight,
        },
        "series": series(recorder, sampler, config.window, config.slo, end),
        "details": extra,
        "codes": recorder.codes(),
    }
    return StrategyRun(strategy, recorder, sampler, result)
