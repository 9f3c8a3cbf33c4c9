"""The Prometheus side of :class:`~asyncperf.observability.Metrics`: snapshot -> metric families.

A custom collector, registered in the registry's private ``CollectorRegistry``,
turns one fresh :meth:`Metrics.snapshot` (plus the pools' histograms) into metric
families at each scrape, so the JSON and the Prometheus figures always agree.
Names follow Prometheus' conventions: a ``<namespace>_`` prefix, base units in
the name (``_seconds``, ``_bytes``), ``_total`` on counters (prometheus_client
adds it), one family per quantity and labels for its dimensions.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

if TYPE_CHECKING:
    from asyncperf.observability._metrics import Metrics

__all__ = ["SnapshotCollector"]

_POOL_OUTCOMES = ("completed", "failed", "cancelled", "timed_out", "rejected", "dropped")
_TIER_EVENTS = (
    "loads",
    "load_errors",
    "coalesced",
    "stale_served",
    "refreshes",
    "refresh_errors",
    "negative_hits",
    "promotions",
    "write_errors",
    "write_behind_written",
    "write_behind_batches",
    "write_behind_errors",
)


class _Families:
    """Metric families by name, created on first use, emitted in that order."""

    def __init__(self, namespace: str) -> None:
        self._prefix = namespace + "_"
        self._families: dict[str, Metric] = {}

    def counter(self, name: str, doc: str, labels: Mapping[str, str], value: float | None) -> None:
        if value is None:
            return
        family = self._families.get(name)
        if family is None:
            family = CounterMetricFamily(self._prefix + name, doc, labels=list(labels))
            self._families[name] = family
        assert isinstance(family, CounterMetricFamily)  # one name, one kind
        family.add_metric(list(labels.values()), value)

    def gauge(self, name: str, doc: str, labels: Mapping[str, str], value: float | None) -> None:
        if value is None:
            return
        family = self._families.get(name)
        if family is None:
            family = GaugeMetricFamily(self._prefix + name, doc, labels=list(labels))
            self._families[name] = family
        assert isinstance(family, GaugeMetricFamily)  # one name, one kind
        family.add_metric(list(labels.values()), float(value))

    def histogram(
        self,
        name: str,
        doc: str,
        labels: Mapping[str, str],
        buckets: list[tuple[str, float]],
        total: float,
    ) -> None:
        family = self._families.get(name)
        if family is None:
            family = HistogramMetricFamily(self._prefix + name, doc, labels=list(labels))
            self._families[name] = family
        assert isinstance(family, HistogramMetricFamily)  # one name, one kind
        family.add_metric(list(labels.values()), buckets, total)

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._families.values())


class SnapshotCollector:
    """Builds every family from a fresh snapshot of ``metrics`` at each ``collect()``."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        metrics = self._metrics
        snap = metrics.snapshot()
        out = _Families(metrics.namespace)
        _process(out, snap)
        _pools(out, snap["pools"])
        for name, hook in metrics.histograms().items():
            for priority, histogram in hook.waits.items():
                out.histogram(
                    "pool_job_wait_seconds",
                    "Time jobs spent queued before a worker took them (the queue's sojourn "
                    "time), per level; of every job, or of the pool's 1-in-8 sample unless "
                    "Metrics(time_every_job=True).",
                    {"pool": name, "level": str(priority)},
                    histogram.cumulative(),
                    histogram.total,
                )
            for outcome, histogram in hook.runs.items():
                out.histogram(
                    "pool_job_run_seconds",
                    "Time jobs ran on a worker, per outcome; of every job, or of the pool's "
                    "1-in-8 sample unless Metrics(time_every_job=True).",
                    {"pool": name, "outcome": outcome},
                    histogram.cumulative(),
                    histogram.total,
                )
        _queues(out, snap["queues"])
        _limiters(out, snap["limiters"])
        _caches(out, snap["caches"])
        _memory_pools(out, snap["memory_pools"])
        _supervisors(out, snap["supervisor"]["supervisors"])
        for source, values in snap["sources"].items():
            for key, value in values.items():
                out.gauge(
                    "source_value",
                    "A figure read from a registered source (Metrics.add_source).",
                    {"source": source, "key": key},
                    value,
                )
        return out


def _version() -> str:
    # Read from the package already imported (this layer may not import the top level).
    return str(getattr(sys.modules.get("asyncperf"), "__version__", "unknown"))


def _process(out: _Families, snap: Mapping[str, Any]) -> None:
    out.gauge(
        "info",
        "The asyncperf version and the event loop in use (always 1).",
        {"loop": snap["loop"], "version": _version()},
        1,
    )
    process = snap["process"]
    out.gauge(
        "process_resident_memory_bytes",
        "Resident set size of the process.",
        {},
        process["rss_bytes"],
    )
    out.gauge(
        "process_peak_resident_memory_bytes",
        "The largest resident set size of the process so far.",
        {},
        process["peak_rss_bytes"],
    )
    out.gauge("tasks", "asyncio tasks alive in the event loop.", {}, process["tasks"])
    gc = snap["gc"]
    for generation, count in enumerate(gc["collections"]):
        out.counter(
            "gc_collections_total",
            "Garbage collections per generation (a collection of 2 also collects 0 and 1).",
            {"generation": str(generation)},
            count,
        )
    out.counter("gc_collected_objects_total", "Objects the collector freed.", {}, gc["collected"])
    out.counter(
        "gc_uncollectable_objects_total",
        "Objects found unreachable but not freed.",
        {},
        gc["uncollectable"],
    )
    out.counter(
        "gc_pause_seconds_total", "Time spent inside garbage collections.", {}, gc["pause_total"]
    )
    for quantile, key in (("0.5", "pause_p50"), ("0.99", "pause_p99"), ("1", "pause_max")):
        out.gauge(
            "gc_recent_pause_seconds",
            "Collection pause quantiles over the last 1,024 collections (1: the longest ever).",
            {"quantile": quantile},
            gc[key],
        )
    lag = snap["lag"]
    if lag is not None:
        out.gauge(
            "loop_lag_seconds",
            "How late the loop lag monitor's last wake-up was.",
            {},
            lag.get("last"),
        )
        for stat in ("mean", "p50", "p99", "max"):
            out.gauge(
                "loop_lag_stat_seconds",
                "Loop lag: mean and max since the start, p50 and p99 over the recent samples.",
                {"stat": stat},
                lag.get(stat),
            )
        out.counter("loop_lag_samples_total", "Loop lag samples taken.", {}, lag.get("samples"))
        out.counter(
            "loop_lag_over_threshold_total",
            "Loop lag samples above the monitor's threshold.",
            {},
            lag.get("over_threshold"),
        )


def _pools(out: _Families, pools: Mapping[str, Any]) -> None:
    for name, pool in pools.items():
        label = {"pool": name}
        out.counter(
            "pool_jobs_submitted_total", "Jobs the pool accepted.", label, pool["submitted"]
        )
        for outcome in _POOL_OUTCOMES:
            out.counter(
                "pool_jobs_total",
                "Jobs by how they ended (rejected: never accepted).",
                {"pool": name, "outcome": outcome},
                pool[outcome],
            )
        starting = pool["workers"] - pool["active"] - pool["idle"]
        for state, value in (("active", pool["active"]), ("idle", pool["idle"])):
            out.gauge(
                "pool_workers",
                "Worker tasks by state (starting: on their way to a job).",
                {"pool": name, "state": state},
                value,
            )
        out.gauge(
            "pool_workers",
            "Worker tasks by state (starting: on their way to a job).",
            {"pool": name, "state": "starting"},
            max(starting, 0),
        )
        out.gauge("pool_pending_jobs", "Jobs queued, waiting for a worker.", label, pool["pending"])
        out.gauge("pool_limit", "Jobs that may run at once now.", label, pool["limit"])
        out.gauge("pool_max_workers", "The pool's size (max_workers).", label, pool["max_workers"])
        out.gauge("pool_min_workers", "Workers kept alive when idle.", label, pool["min_workers"])


def _queues(out: _Families, queues: Mapping[str, Any]) -> None:
    for name, queue in queues.items():
        out.gauge(
            "queue_load", "The load last given to queue.adjust().", {"queue": name}, queue["load"]
        )
        out.gauge(
            "queue_standing",
            "1 while CoDel sees a standing queue.",
            {"queue": name},
            int(queue["standing"]),
        )
        for level, stats in queue["levels"].items():
            labels = {"queue": name, "level": level}
            out.gauge("queue_depth", "Items queued per level.", labels, stats["depth"])
            out.gauge("queue_bound", "The bound in force per level.", labels, stats["bound"])
            out.gauge(
                "queue_oldest_age_seconds",
                "Age of the oldest queued item per level (the sojourn time so far).",
                labels,
                stats["oldest_age"],
            )
            for key, doc in (
                ("enqueued", "Items enqueued per level."),
                ("dequeued", "Items taken from the queue per level."),
                ("rejected", "Items refused by a full level (REJECT strategy or put_nowait)."),
                ("removed", "Items taken out before a get (cancelled jobs)."),
            ):
                out.counter(f"queue_{key}_total", doc, labels, stats[key])
            for reason, count in stats["drops"].items():
                out.counter(
                    "queue_dropped_total",
                    "Items discarded from the queue, per level and reason.",
                    {"queue": name, "level": level, "reason": reason},
                    count,
                )


def _limiters(out: _Families, limiters: Mapping[str, Any]) -> None:
    for name, stats in limiters.items():
        label = {"limiter": name}
        if stats["kind"] == "adaptive":
            out.gauge("limiter_limit", "The adaptive limit in force.", label, stats["limit"])
            out.gauge("limiter_min_limit", "The adaptive limit's floor.", label, stats["min_limit"])
            out.gauge(
                "limiter_max_limit", "The adaptive limit's ceiling.", label, stats["max_limit"]
            )
            out.gauge("limiter_in_flight", "Calls holding a token.", label, stats["in_flight"])
            out.gauge("limiter_waiting", "Calls waiting for a token.", label, stats["waiting"])
            out.counter("limiter_samples_total", "Latencies recorded.", label, stats["samples"])
            out.counter("limiter_windows_total", "Decisions taken.", label, stats["windows"])
            out.counter(
                "limiter_drops_total", "Samples recorded as dropped.", label, stats["drops"]
            )
        else:
            out.gauge(
                "rate_limiter_rate",
                "Units admitted per second on average.",
                label,
                stats["rate"] / stats["per"],
            )
            out.gauge("rate_limiter_burst", "Units admitted at once.", label, stats["burst"])
            out.counter("rate_limiter_admitted_total", "Units admitted.", label, stats["admitted"])
            out.counter(
                "rate_limiter_calls_total",
                "Calls admitted or refused.",
                {"limiter": name, "result": "admitted"},
                stats["admitted_calls"],
            )
            out.counter(
                "rate_limiter_calls_total",
                "Calls admitted or refused.",
                {"limiter": name, "result": "refused"},
                stats["refused"],
            )
            out.gauge("rate_limiter_waiting", "acquire() calls waiting.", label, stats["waiting"])
            out.counter(
                "rate_limiter_wait_seconds_total",
                "Time admitted acquire() calls spent waiting.",
                label,
                stats["total_wait_seconds"],
            )


def _caches(out: _Families, caches: Mapping[str, Any]) -> None:
    for name, cache in caches.items():
        for level, stats in cache["levels"].items():
            labels = {"cache": name, "level": level}
            for result in ("hit", "miss"):
                out.counter(
                    "cache_requests_total",
                    "Lookups per cache level, by result.",
                    {"cache": name, "level": level, "result": result},
                    stats["hits" if result == "hit" else "misses"],
                )
            out.gauge("cache_entries", "Entries held per level.", labels, stats["entries"])
            out.gauge(
                "cache_bytes", "Bytes held per level, as it weighs them.", labels, stats["bytes"]
            )
            out.counter("cache_sets_total", "Entries stored per level.", labels, stats["sets"])
            out.counter(
                "cache_deletes_total", "Entries deleted per level.", labels, stats["deletes"]
            )
            for reason, count in stats["evictions"].items():
                out.counter(
                    "cache_evictions_total",
                    "Entries removed per level, by reason.",
                    {"cache": name, "level": level, "reason": reason},
                    count,
                )
            for quantile, key in (("0.5", "hit_latency_p50"), ("0.99", "hit_latency_p99")):
                out.gauge(
                    "cache_hit_latency_seconds",
                    "Time a hit takes per level, over the sampled recent hits.",
                    {"cache": name, "level": level, "quantile": quantile},
                    stats[key],
                )
        if "loads" in cache:
            label = {"cache": name}
            for result in ("hit", "miss"):
                out.counter(
                    "cache_tier_requests_total",
                    "Lookups of a tiered cache as a whole, by result.",
                    {"cache": name, "result": result},
                    cache["hits" if result == "hit" else "misses"],
                )
            for event in _TIER_EVENTS:
                out.counter(
                    "cache_tier_events_total",
                    "What a tiered cache did: loads, coalesced callers, stale values, ...",
                    {"cache": name, "event": event},
                    cache[event],
                )
            out.gauge("cache_loads_in_flight", "Loads running now.", label, cache["in_flight"])
            out.gauge(
                "cache_write_behind_pending",
                "Writes waiting for the next write-behind batch.",
                label,
                cache["write_behind_pending"],
            )


def _memory_pools(out: _Families, pools: Mapping[str, Any]) -> None:
    for name, stats in pools.items():
        label = {"pool": name, "kind": stats["kind"]}
        for result in ("hit", "miss", "oversize"):
            out.counter(
                "memory_pool_acquires_total",
                "Acquires by result (hit: from a free list; miss: allocated; oversize: unpooled).",
                {"pool": name, "kind": stats["kind"], "result": result},
                stats["hits" if result == "hit" else "misses" if result == "miss" else "oversize"],
            )
        out.gauge("memory_pool_in_use", "Buffers or objects handed out.", label, stats["in_use"])
        out.gauge("memory_pool_free", "Free buffers or objects held.", label, stats["free"])
        out.gauge(
            "memory_pool_free_bytes", "Bytes held by free buffers.", label, stats["free_bytes"]
        )
        out.counter("memory_pool_released_total", "Releases.", label, stats["released"])
        out.counter(
            "memory_pool_freed_total",
            "Free entries given up: dropped on release, recycled or trimmed.",
            label,
            stats["dropped_on_release"] + stats["recycled"] + stats["trimmed"],
        )


def _supervisors(out: _Families, supervisors: Mapping[str, Any]) -> None:
    for name, stats in supervisors.items():
        label = {"supervisor": name}
        out.counter("supervisor_ticks_total", "Supervisor ticks run.", label, stats["ticks"])
        out.gauge(
            "supervisor_loop_lag_seconds",
            "How late the supervisor's last tick woke.",
            label,
            stats["loop_lag"],
        )
        for pool, pool_stats in stats["pools"].items():
            labels = {"supervisor": name, "pool": pool}
            out.counter(
                "supervisor_restarts_total",
                "Crashed workers restarted.",
                labels,
                pool_stats["restarts"],
            )
            out.gauge(
                "supervisor_pool_failed",
                "1 once the pool was failed.",
                labels,
                pool_stats["failed"],
            )
        for pool, actions in stats["decisions_by_pool"].items():
            for action, count in actions.items():
                out.counter(
                    "supervisor_decisions_total",
                    "Supervisor events (grow, shrink, limit, adjust, hold, restart, fail).",
                    {"supervisor": name, "pool": pool, "action": action},
                    count,
                )
