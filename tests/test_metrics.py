"""Metrics: the figures equal the components' statistics, and the Prometheus text parses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

import asyncperf as ap
from asyncperf.observability._metrics import JOB_OUTCOMES, Histogram, Metrics
from asyncperf.testing import VirtualClock

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: bytes) -> tuple[dict[str, Any], Samples]:
    """The families by name, and every sample keyed by (sample name, labels)."""
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    samples: Samples = {}
    for family in families.values():
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = sample.value
    return families, samples


def instrument_of(pool: ap.WorkerPool) -> object:
    """The pool's hook (read through a function: mypy would narrow the attribute)."""
    return pool._instrument


def timing_every_job(pool: ap.WorkerPool) -> bool:
    return pool._time_every_job


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def block_until(event: asyncio.Event) -> None:
    await event.wait()


async def succeed() -> str:
    return "ok"


async def fail() -> None:
    raise ValueError("planned failure")


async def sleep_long(clock: VirtualClock) -> None:
    await clock.sleep(100.0)


@dataclass
class Workload:
    metrics: Metrics
    pool: ap.WorkerPool
    cache: ap.TieredCache
    memory: ap.MemoryCache
    limiter: ap.AdaptiveLimiter
    rate: ap.RateLimiter
    buffers: ap.BufferPool


@dataclass(frozen=True)
class FakeLag:
    last: float
    p99: float
    samples: int
    note: str = "strings are left out"


class FakeLagMonitor:
    def statistics(self) -> FakeLag:
        return FakeLag(last=0.002, p99=0.004, samples=7)


async def run_workload(clock: VirtualClock) -> AsyncIterator[Workload]:
    """One pool (1 worker) through every outcome; a cache, limiters and a buffer pool."""
    queue: ap.PriorityQueue[Any] = ap.PriorityQueue(
        [
            ap.Level(0, 1, ap.DropStrategy.REJECT, 1),
            ap.Level(1, 1, ap.DropStrategy.DROP_OLDEST, 1),
        ],
        clock=clock,
    )
    limiter = ap.AdaptiveLimiter(initial=4, min_limit=1, max_limit=16, clock=clock)
    metrics = Metrics(lag_monitor=FakeLagMonitor(), time_every_job=True)
    memory = ap.MemoryCache(max_entries=2, policy="lru", clock=clock)
    cache = ap.TieredCache(ap.MemoryCache(max_entries=10, clock=clock))
    rate = ap.RateLimiter(1, per=10.0, burst=2, clock=clock)
    buffers = ap.BufferPool((64, 256), name="io")
    async with ap.WorkerPool(1, queue=queue, limiter=limiter, clock=clock, name="work") as pool:
        metrics.add_pool(pool)
        metrics.add_cache(memory, "small")
        metrics.add_cache(cache, "tier")
        metrics.add_limiter(rate, "upstream")
        metrics.add_memory_pool(buffers)
        metrics.add_source("handlers", lambda: {"calls": 3, "note": "skipped"})  # type: ignore[dict-item]

        gate = asyncio.Event()
        held = await pool.submit(block_until, gate, priority=1)
        await clock.sleep(0)  # let the worker take the gate job
        first = await pool.submit(succeed, priority=0)  # level 0 full now
        with pytest.raises(ap.Rejected):
            _ = await pool.submit(succeed, priority=0)
        evicted = await pool.submit(succeed, priority=1)
        kept = await pool.submit(succeed, priority=1)  # evicts the one before
        gate.set()
        await held
        assert await first == "ok"
        assert await kept == "ok"
        with pytest.raises(ap.Dropped):
            await evicted
        with pytest.raises(ValueError, match=r"planned"):
            await pool.run(fail, priority=1)
        with pytest.raises(ap.JobTimeout):
            await pool.run(sleep_long, clock, priority=1, timeout=1.0)
        cancelled = await pool.submit(sleep_long, clock, priority=1)
        await clock.sleep(0.5)  # it runs now
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled

        await memory.set("a", 1)
        assert await memory.get("a") == 1
        assert await memory.get("b", None) is None
        await memory.set("b", 2)
        await memory.set("c", 3)  # evicts one
        assert await cache.get_or_load("k", succeed) == "ok"
        assert await cache.get_or_load("k", succeed) == "ok"
        limiter.limit = 7
        assert rate.try_acquire()
        assert rate.try_acquire()
        assert not rate.try_acquire()
        buffer = buffers.acquire(100)
        buffer.release()
        buffers.acquire(200).release()  # the same size class: a hit
        yield Workload(metrics, pool, cache, memory, limiter, rate, buffers)
    metrics.close()


@pytest.fixture
async def workload(clock: VirtualClock) -> AsyncIterator[Workload]:
    async for scripted in run_workload(clock):
        yield scripted


@pytest.mark.virtual_time
async def test_snapshot_equals_the_statistics(workload: Workload) -> None:
    snap = workload.metrics.snapshot()
    json.dumps(snap, allow_nan=False)  # JSON-ready, numbers only
    pool = workload.pool.statistics()
    got = snap["pools"]["work"]
    assert (got["completed"], got["failed"], got["timed_out"], got["cancelled"]) == (3, 1, 1, 1)
    assert (got["rejected"], got["dropped"], got["submitted"]) == (1, 1, 7)
    for key in ("completed", "failed", "timed_out", "cancelled", "rejected", "dropped", "idle"):
        assert got[key] == getattr(pool, key)
    assert got["instrumented"] is True
    level = workload.pool.queue.statistics().level(1)
    got_level = snap["queues"]["work"]["levels"]["1"]
    assert got_level["enqueued"] == level.enqueued == 6
    assert got_level["drops"]["evicted"] == level.drops[ap.DropReason.EVICTED] == 1
    assert snap["queues"]["work"]["levels"]["0"]["rejected"] == 1
    assert snap["limiters"]["work"]["limit"] == workload.limiter.limit == 7
    assert snap["limiters"]["upstream"]["refused"] == workload.rate.statistics().refused == 1
    small = workload.memory.statistics()
    assert snap["caches"]["small"]["levels"]["memory"]["hits"] == small.hits == 1
    assert snap["caches"]["small"]["levels"]["memory"]["misses"] == small.misses == 1
    assert snap["caches"]["small"]["levels"]["memory"]["evictions"]["capacity"] == 1
    tier = workload.cache.statistics()
    assert (snap["caches"]["tier"]["hits"], snap["caches"]["tier"]["misses"]) == (1, 1)
    assert snap["caches"]["tier"]["loads"] == tier.loads == 1
    buffers = workload.buffers.statistics()
    assert snap["memory_pools"]["io"]["hits"] == buffers.hits == 1
    assert snap["memory_pools"]["io"]["misses"] == buffers.misses == 1
    assert snap["sources"] == {"handlers": {"calls": 3}}
    assert snap["lag"] == {"last": 0.002, "p99": 0.004, "samples": 7}
    assert snap["process"]["tasks"] == len(asyncio.all_tasks())
    assert snap["loop"] == ap.loop_name()
    assert set(snap["gc"]) >= {"collections", "pause_total", "pause_p99"}


@pytest.mark.virtual_time
async def test_prometheus_families_match_the_statistics(workload: Workload) -> None:
    families, samples = parse(workload.metrics.prometheus_text())
    expected = {
        "asyncperf_info": ("gauge", {"loop", "version"}),
        "asyncperf_pool_jobs": ("counter", {"pool", "outcome"}),
        "asyncperf_pool_workers": ("gauge", {"pool", "state"}),
        "asyncperf_pool_job_wait_seconds": ("histogram", {"pool", "level"}),
        "asyncperf_pool_job_run_seconds": ("histogram", {"pool", "outcome"}),
        "asyncperf_queue_depth": ("gauge", {"queue", "level"}),
        "asyncperf_queue_dropped": ("counter", {"queue", "level", "reason"}),
        "asyncperf_cache_requests": ("counter", {"cache", "level", "result"}),
        "asyncperf_cache_bytes": ("gauge", {"cache", "level"}),
        "asyncperf_cache_evictions": ("counter", {"cache", "level", "reason"}),
        "asyncperf_limiter_limit": ("gauge", {"limiter"}),
        "asyncperf_rate_limiter_calls": ("counter", {"limiter", "result"}),
        "asyncperf_memory_pool_acquires": ("counter", {"pool", "kind", "result"}),
        "asyncperf_gc_collections": ("counter", {"generation"}),
        "asyncperf_gc_pause_seconds": ("counter", set()),
        "asyncperf_process_resident_memory_bytes": ("gauge", set()),
        "asyncperf_loop_lag_seconds": ("gauge", set()),
        "asyncperf_tasks": ("gauge", set()),
        "asyncperf_source_value": ("gauge", {"source", "key"}),
    }
    for name, (kind, labels) in expected.items():
        assert name in families, name
        assert families[name].type == kind, name
        for sample in families[name].samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
    for name, family in families.items():
        assert name.startswith("asyncperf_"), name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), name
    pool = workload.pool.statistics()
    for outcome in ("completed", "failed", "timed_out", "cancelled", "rejected", "dropped"):
        got = value(samples, "asyncperf_pool_jobs_total", pool="work", outcome=outcome)
        assert got == getattr(pool, outcome)
    assert value(
        samples, "asyncperf_queue_dropped_total", queue="work", level="1", reason="evicted"
    )
    assert value(samples, "asyncperf_limiter_limit", limiter="work") == 7
    small = workload.memory.statistics()
    for result, expected_count in (("hit", small.hits), ("miss", small.misses)):
        got = value(
            samples, "asyncperf_cache_requests_total", cache="small", level="memory", result=result
        )
        assert got == expected_count
    got_bytes = value(samples, "asyncperf_cache_bytes", cache="small", level="memory")
    assert got_bytes == small.bytes
    assert value(
        samples, "asyncperf_rate_limiter_calls_total", limiter="upstream", result="refused"
    )
    assert value(samples, "asyncperf_source_value", source="handlers", key="calls") == 3
    assert value(samples, "asyncperf_loop_lag_seconds") == 0.002
    info = families["asyncperf_info"].samples[0]
    assert info.labels == {"loop": ap.loop_name(), "version": ap.__version__}


@pytest.mark.virtual_time
async def test_histogram_counts_equal_the_jobs_that_ran(workload: Workload) -> None:
    _families, samples = parse(workload.metrics.prometheus_text())
    pool = workload.pool.statistics()
    for outcome in JOB_OUTCOMES:
        count = value(samples, "asyncperf_pool_job_run_seconds_count", pool="work", outcome=outcome)
        assert count == getattr(pool, outcome)
        inf = value(
            samples,
            "asyncperf_pool_job_run_seconds_bucket",
            pool="work",
            outcome=outcome,
            le="+Inf",
        )
        assert inf == count
    ran = pool.completed + pool.failed + pool.timed_out + pool.cancelled
    waits = [
        value(samples, "asyncperf_pool_job_wait_seconds_count", pool="work", level=level)
        for level in ("0", "1")
    ]
    assert waits == [1, ran - 1]  # one job ran from level 0, the rest from level 1
    # The timed-out job ran exactly its 1 s timeout on the virtual clock.
    timed_out_sum = value(
        samples, "asyncperf_pool_job_run_seconds_sum", pool="work", outcome="timed_out"
    )
    assert timed_out_sum == pytest.approx(1.0)


def test_histogram_buckets_are_upper_bound_inclusive_and_cumulative() -> None:
    histogram = Histogram((0.1, 1.0))
    for observation in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(observation)
    assert histogram.counts == [2, 2, 1]
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert histogram.count == 5
    assert histogram.total == pytest.approx(8.65)


async def test_by_default_the_histograms_take_the_pools_one_in_eight_sample() -> None:
    with Metrics() as metrics:
        async with ap.WorkerPool(1, name="one") as pool:
            metrics.add_pool(pool)
            for _ in range(17):
                await pool.run(succeed)
            snap = metrics.snapshot()
    hook = metrics.histograms()["one"]
    assert not hook.every_job
    assert hook.runs["completed"].count == 2  # the 8th and the 16th job of the one worker
    assert sum(h.count for h in hook.waits.values()) == 2
    assert snap["pools"]["one"]["observed"] == 2
    assert snap["pools"]["one"]["completed"] == 17


async def test_pool_without_metrics_has_no_instrument_and_close_unhooks() -> None:
    async with ap.WorkerPool(2, name="plain") as plain, ap.WorkerPool(2, name="seen") as seen:
        assert instrument_of(plain) is None
        metrics = Metrics(time_every_job=True)
        metrics.add_pool(seen)
        assert instrument_of(seen) is not None
        assert timing_every_job(seen)
        for _ in range(5):
            await seen.run(succeed)
        hook = metrics.histograms()["seen"]
        assert hook.runs["completed"].count == 5
        metrics.close()
        assert instrument_of(seen) is None
        assert not timing_every_job(seen)
        assert metrics.snapshot()["pools"]["seen"]["instrumented"] is False
        await seen.run(succeed)
        assert hook.runs["completed"].count == 5  # no longer fed
        metrics.close()  # idempotent
        with pytest.raises(RuntimeError, match=r"closed"):
            metrics.add_pool(plain)
        # The pool can be registered again by another registry.
        with Metrics(time_every_job=True) as again:
            again.add_pool(seen)
            await seen.run(succeed)
            assert again.histograms()["seen"].runs["completed"].count == 1
        assert instrument_of(seen) is None


async def test_bad_arguments_name_the_parameter() -> None:
    metrics = Metrics()
    try:
        with pytest.raises(TypeError, match=r"^pool must be a WorkerPool, not int"):
            metrics.add_pool(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^queue must be a PriorityQueue"):
            metrics.add_queue(ap.MemoryCache(), "q")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^limiter must be"):
            metrics.add_limiter(ap.MemoryCache(), "l")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^cache must be"):
            metrics.add_cache(ap.BufferPool(), "c")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^supervisor must be a Supervisor"):
            metrics.add_supervisor(object())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^pool must be a BufferPool or an ObjectPool"):
            metrics.add_memory_pool(ap.MemoryCache())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^read must be a callable"):
            metrics.add_source("s", {"a": 1})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^name must be a str"):
            metrics.add_cache(ap.MemoryCache(), 5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^name must not be empty"):
            metrics.add_cache(ap.MemoryCache(), "")

        async with ap.WorkerPool(1, name="p") as pool, ap.WorkerPool(1, name="p") as twin:
            metrics.add_pool(pool)
            with pytest.raises(ValueError, match=r"^pool: 'p' is already instrumented"):
                metrics.add_pool(pool, "other")
            with pytest.raises(ValueError, match=r"^name: a pool or queue named 'p'"):
                metrics.add_pool(twin)
            with pytest.raises(ValueError, match=r"^name: a queue named 'p'"):
                metrics.add_queue(ap.PriorityQueue(), "p")
            with pytest.raises(ValueError, match=r"^queue: this queue is already registered"):
                metrics.add_queue(pool.queue, "again")
        metrics.add_cache(ap.MemoryCache(), "c")
        with pytest.raises(ValueError, match=r"^name: a cache named 'c'"):
            metrics.add_cache(ap.MemoryCache(), "c")
        metrics.add_memory_pool(ap.BufferPool(name="b"))
        with pytest.raises(ValueError, match=r"^pool: a memory pool named 'b'"):
            metrics.add_memory_pool(ap.ObjectPool(object, name="b"))
        metrics.add_limiter(ap.RateLimiter(5), "r")
        with pytest.raises(ValueError, match=r"^name: a limiter named 'r'"):
            metrics.add_limiter(ap.AdaptiveLimiter(), "r")
        metrics.add_source("s", dict)
        with pytest.raises(ValueError, match=r"^name: a source named 's'"):
            metrics.add_source("s", dict)
    finally:
        metrics.close()
    with pytest.raises(ValueError, match=r"^namespace must be a Prometheus metric name"):
        Metrics(namespace="my-app")
    with pytest.raises(ValueError, match=r"^buckets must be strictly increasing"):
        Metrics(buckets=(1.0, 0.5))
    with pytest.raises(ValueError, match=r"^buckets must be a non-empty"):
        Metrics(buckets=())
    with pytest.raises(TypeError, match=r"^time_every_job must be a bool"):
        Metrics(time_every_job=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^max_decisions must be >= 0"):
        Metrics(max_decisions=-1)


@pytest.mark.virtual_time
async def test_supervisor_decisions_are_kept_with_their_reasons(clock: VirtualClock) -> None:
    class Doubling:
        def decide(self, readings: ap.ScalingReadings) -> ap.ScalingDecision:
            if readings.workers < 8:
                return ap.ScalingDecision(workers=readings.workers * 2, reason="doubling")
            return ap.ScalingDecision(load=2.0, reason="enough")

    supervisor = ap.Supervisor(clock=clock, interval=0.25)
    metrics = Metrics(max_decisions=3)
    async with ap.WorkerPool(1, clock=clock, name="scaled") as pool:
        supervisor.watch(pool, policy=Doubling())
        metrics.add_pool(pool)
        metrics.add_supervisor(supervisor)
        async with supervisor:
            await clock.sleep(0.25 * 5.5)
        snap = metrics.snapshot()
        _families, samples = parse(metrics.prometheus_text())
    metrics.close()
    events = supervisor.statistics().events
    assert [e.action for e in events] == ["grow", "grow", "grow", "adjust", "hold"]
    kept = snap["supervisor"]["decisions"]
    assert [(d["action"], d["reason"]) for d in kept] == [
        ("grow", "doubling"),
        ("adjust", "enough"),
        ("hold", "enough"),
    ]
    assert kept[0]["pool"] == "scaled"
    assert kept[0]["supervisor"] == "supervisor"
    assert (kept[0]["before"], kept[0]["after"]) == (4, 8)
    summary = snap["supervisor"]["supervisors"]["supervisor"]
    assert summary["decisions"] == {"grow": 3, "adjust": 1, "hold": 1}
    assert summary["pools"]["scaled"]["decisions"] == len(events)
    grow = value(
        samples,
        "asyncperf_supervisor_decisions_total",
        supervisor="supervisor",
        pool="scaled",
        action="grow",
    )
    assert grow == 3
    assert value(samples, "asyncperf_pool_max_workers", pool="scaled") == 8
    assert value(samples, "asyncperf_queue_load", queue="scaled") == 2.0
    assert value(samples, "asyncperf_supervisor_ticks_total", supervisor="supervisor") == 5
    assert supervisor._listeners == []  # close() removed the registry's listener


def test_outside_a_loop_the_task_count_is_unknown_and_nothing_is_global() -> None:
    before = set(REGISTRY._names_to_collectors)
    with Metrics(namespace="svc") as metrics:
        snap = metrics.snapshot()
        families, _samples = parse(metrics.prometheus_text())
    assert snap["process"]["tasks"] is None
    assert snap["loop"] == "none"
    assert "svc_tasks" not in families
    assert "svc_info" in families
    assert set(REGISTRY._names_to_collectors) == before
    assert Metrics.CONTENT_TYPE.startswith("text/plain")


async def test_the_bench_suite_measures_what_it_says() -> None:
    from asyncperf.tools.bench import metrics_overhead as suite
    from asyncperf.tools.bench._harness import Config
    from asyncperf.tools.bench.pool_overhead import WORKLOADS

    config = Config(
        jobs=40, repeat=1, quick=True, loops=("asyncio",), memory_items=10, queue_depths=(10,)
    )
    plan = suite.plan(config, "asyncio")
    assert {(c.case, c.contender) for c in plan.cases} >= {
        ("noop", suite.OFF),
        ("noop", suite.ON),
        ("yield_once", suite.EVERY_JOB),
        ("read", suite.SNAPSHOT),
    }
    for mode in (suite.OFF, suite.ON, suite.EVERY_JOB):
        assert await suite.bench_pool(WORKLOADS[1], 40, mode) > 0
    assert await suite.bench_reads(2, prometheus=True) > 0


async def test_write_behind_batches_are_exported() -> None:
    """A write-behind tier's batches, writes and pending count reach both outputs."""
    tier = ap.TieredCache(
        ap.MemoryCache(max_entries=10), ap.MemoryCache(max_entries=10), write="behind"
    )
    metrics = Metrics()
    metrics.add_cache(tier, "wb")
    try:
        for key in ("a", "b", "c"):
            await tier.set(key, 1)
        await tier.flush()
        stats = tier.statistics()
        assert (stats.write_behind_batches, stats.write_behind_written) == (1, 3)
        cache = metrics.snapshot()["caches"]["wb"]
        assert (cache["write_behind_batches"], cache["write_behind_written"]) == (1, 3)
        _families, samples = parse(metrics.prometheus_text())
        events = {
            event: samples[
                (
                    "asyncperf_cache_tier_events_total",
                    frozenset({"cache": "wb", "event": event}.items()),
                )
            ]
            for event in ("write_behind_batches", "write_behind_written", "write_behind_errors")
        }
        assert events == {
            "write_behind_batches": 1.0,
            "write_behind_written": 3.0,
            "write_behind_errors": 0.0,
        }
    finally:
        metrics.close()
        await tier.aclose()
