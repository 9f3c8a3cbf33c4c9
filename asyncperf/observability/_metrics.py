"""Metrics: one registry that reads every registered component, as JSON or Prometheus text.

Most figures are *pulled*: :meth:`Metrics.snapshot` and :meth:`Metrics.prometheus_text`
call each component's ``statistics()`` at that moment, so a registered pool, queue,
limiter or cache pays nothing between two reads. Only what needs one observation per
event is *pushed*: the wait and run time histograms of a worker pool, fed by a
:class:`PoolHook` that the registry plugs into the pool (``pool._instrument``). A
pool without one pays a single ``is not None`` test per job. By default the hook
sees the jobs the pool times anyway (one in eight per worker), so the histograms
are a sample: their ``_count`` is the sampled jobs, while ``pool_jobs_total``
counts every job. ``Metrics(time_every_job=True)`` times every job instead
(exact counts, at a measured cost; see the ``metrics`` bench suite).

The JSON snapshot (the dashboard reads it every second) has these keys; every
leaf is a number, a string, a bool or null (unknown), never a dataclass:

``time``
    wall-clock seconds since the epoch (``time.time()``).
``loop``
    the event loop in use (``uvloop``, ``asyncio``, ...), or ``"none"`` before any
    snapshot was taken inside a running loop.
``process``
    ``rss_bytes``, ``peak_rss_bytes`` (null where the platform cannot tell) and
    ``tasks`` (``len(asyncio.all_tasks())``; null when the snapshot is taken
    outside the loop's thread: call it from the loop for a task count).
``gc``
    ``collections`` (a list per generation), ``collected``, ``uncollectable``,
    ``pause_total``, ``pause_p50``, ``pause_p99``, ``pause_max``, ``elapsed``.
``lag``
    the loop lag monitor's numeric statistics (seconds and counts), or null without one.
``pools``
    per pool: the fields of :class:`~asyncperf.PoolStatistics` (numbers) plus
    ``instrumented`` (its histograms are fed) and ``observed`` (jobs counted in
    its run time histograms: all that ran with ``time_every_job``, else the sample).
``queues``
    per queue (a pool's queue has the pool's name): ``depth``, ``load``,
    ``standing``, ``closed`` and ``levels`` keyed by the priority as a string,
    each with ``depth``, ``bound``, ``max_size``, ``enqueued``, ``dequeued``,
    ``dropped``, ``rejected``, ``removed``, ``oldest_age`` and ``drops`` by reason.
``limiters``
    per limiter: ``kind`` (``adaptive`` or ``rate``) and its counters.
``caches``
    per cache: ``hits``, ``misses``, ``hit_ratio`` (of the whole cache) and
    ``levels`` keyed by level name, each with ``hits``, ``misses``, ``hit_ratio``,
    ``entries``, ``bytes``, ``sets``, ``deletes``, ``evictions`` by reason and
    ``hit_latency_p50``/``hit_latency_p99``; a tiered cache adds its counters
    (``loads``, ``coalesced``, ``stale_served``, ...).
``memory_pools``
    per buffer or object pool: ``kind``, ``hits``, ``misses``, ``in_use``, ``free``, ...
``supervisor``
    ``decisions`` (the last ``max_decisions`` events of every registered
    supervisor, oldest first: ``time``, ``supervisor``, ``pool``, ``action``,
    ``before``, ``after``, ``reason``, ``readings``) and ``supervisors`` (per
    supervisor: ``ticks``, ``loop_lag``, ``max_loop_lag``, ``decisions`` by
    action, ``decisions_by_pool`` (pool -> action -> count), and ``pools``: per
    pool ``workers``, ``live``, ``limit``, ``decisions``, ``restarts``, ``failed``).
``sources``
    per source added with :meth:`Metrics.add_source`: what its reader returned.

Nothing here is thread-safe beyond what the GIL gives: read it from the loop's thread.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields, is_dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

from asyncperf._errors import DropReason
from asyncperf._validate import check_bool
from asyncperf.cache import CacheLevel, CacheStatistics, TieredCache
from asyncperf.loop import loop_name
from asyncperf.observability._gc import GcMonitor
from asyncperf.observability._memory import peak_rss_bytes, rss_bytes
from asyncperf.pools import BufferPool, ObjectPool
from asyncperf.queues import AdaptiveLimiter, PriorityQueue, RateLimiter
from asyncperf.supervisor import ScalingEvent, Supervisor
from asyncperf.workers import WorkerPool

__all__ = [
    "DEFAULT_BUCKETS",
    "JOB_OUTCOMES",
    "Histogram",
    "Metrics",
    "PoolHook",
    "SupportsStatistics",
]

#: Histogram bounds in seconds: from 10 µs (a no-op job's run time) to a minute.
DEFAULT_BUCKETS: Final[tuple[float, ...]] = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
#: How a job a worker ran can end (the ``outcome`` of the run time histogram).
JOB_OUTCOMES: Final = ("completed", "failed", "timed_out", "cancelled")
#: Queue drop reasons every level reports (zero included, so the series exist
#: from the start); REJECTED is counted apart, as ``rejected``. A queue never
#: drops for a rate limit or an unreachable backend: those refuse at admission.
_QUEUE_DROP_REASONS: Final = tuple(
    reason.value
    for reason in DropReason
    if reason not in (DropReason.REJECTED, DropReason.RATE_LIMITED, DropReason.BACKEND_UNAVAILABLE)
)
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")


class SupportsStatistics(Protocol):
    """Anything with a ``statistics()`` method: a loop lag monitor, for one."""

    def statistics(self) -> Any: ...


class Histogram:
    """Fixed buckets fed one observation at a time: plain ints, no locks (one thread).

    ``counts[i]`` holds the observations ``<= bounds[i]`` and above the bound
    before it; the last slot holds those above every bound (``+Inf``).
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in its bucket and add it to the sum."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        """Observations in all."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, observations <= le)`` per bound and ``+Inf``: Prometheus' buckets."""
        running = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            buckets.append((_bound_text(bound), running))
        buckets.append(("+Inf", running + self.counts[-1]))
        return buckets


def _bound_text(bound: float) -> str:
    return repr(float(bound))


class PoolHook:
    """The instrument a :class:`Metrics` plugs into a :class:`~asyncperf.WorkerPool`.

    It keeps a wait time (sojourn) histogram per queue level and a run time
    histogram per outcome. The pool calls :meth:`job_done` for the jobs it
    samples (one in eight per worker), or for every job a worker ran when
    ``every_job`` is set (see :class:`asyncperf.workers._pool.PoolInstrument`).
    """

    __slots__ = ("_bounds", "_wait_of", "every_job", "runs", "waits")

    def __init__(
        self,
        priorities: Sequence[int],
        default_priority: int,
        bounds: tuple[float, ...],
        every_job: bool,
    ) -> None:
        #: Fed with every job (else with the pool's sample of one in eight).
        self.every_job = every_job
        self._bounds = bounds
        #: Time queued, per level (the priority the job was submitted to).
        self.waits: dict[int, Histogram] = {p: Histogram(bounds) for p in priorities}
        # The same, with None (submitted without a priority) for the default level:
        # one lookup on the per-job path instead of a test and a lookup.
        self._wait_of: dict[int | None, Histogram] = {None: self.waits[default_priority]}
        for priority, histogram in self.waits.items():
            self._wait_of[priority] = histogram
        #: Time running, per outcome.
        self.runs: dict[str, Histogram] = {o: Histogram(bounds) for o in JOB_OUTCOMES}

    def job_done(self, priority: int | None, wait: float, run: float, outcome: str) -> None:
        """Count one job: the per-job path, so ``Histogram.observe`` is inlined."""
        bounds = self._bounds
        waits = self._wait_of[priority]
        waits.counts[bisect_left(bounds, wait)] += 1
        waits.total += wait
        runs = self.runs[outcome]
        runs.counts[bisect_left(bounds, run)] += 1
        runs.total += run


def _check_name(parameter: str, name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{parameter} must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError(f"{parameter} must not be empty")
    return name


def _wrong_type(parameter: str, expected: str, value: object) -> TypeError:
    return TypeError(f"{parameter} must be {expected}, not {type(value).__name__}")


def _numbers(stats: object) -> dict[str, Any]:
    """The int, float and bool fields of a dataclass (or an object's attributes)."""
    if is_dataclass(stats) and not isinstance(stats, type):
        items: Iterator[tuple[str, Any]] = ((f.name, getattr(stats, f.name)) for f in fields(stats))
    else:
        items = iter(vars(stats).items()) if hasattr(stats, "__dict__") else iter(())
    return {
        key: _number(value) if isinstance(value, float) else value
        for key, value in items
        if isinstance(value, int | float)
    }


def _ratio(hits: int, misses: int) -> float:
    lookups = hits + misses
    return hits / lookups if lookups else 0.0


def _number(value: float | None) -> float | None:
    """None for an unknown figure, and for NaN (JSON has no NaN)."""
    if value is None or math.isnan(value):
        return None
    return value


class _PoolEntry:
    __slots__ = ("hook", "pool")

    def __init__(self, pool: WorkerPool, hook: PoolHook) -> None:
        self.pool = pool
        self.hook = hook


class _PrometheusContentType:
    """``Metrics.CONTENT_TYPE``: read from prometheus_client when first asked for.

    prometheus_client is imported only by users who read metrics, not by
    ``import asyncperf`` (it costs milliseconds and megabytes to import).
    """

    def __get__(self, instance: object, owner: type[Any] | None = None) -> str:
        from prometheus_client import CONTENT_TYPE_LATEST

        content_type: str = CONTENT_TYPE_LATEST
        return content_type


class Metrics:
    """One registry of every component's counters, gauges and histograms.

    Register components, then read them as JSON (:meth:`snapshot`, for the
    dashboard's ``/api/stats``) or in the Prometheus text format
    (:meth:`prometheus_text`, for ``/metrics``)::

        metrics = Metrics()
        metrics.add_pool(pool)                  # also its queue and limiter
        metrics.add_cache(cache, "pages")
        body = metrics.prometheus_text()        # served as metrics.CONTENT_TYPE
        metrics.close()                         # unhooks the pools, stops the GC monitor

    The registry owns a :class:`GcMonitor`, started here and stopped by
    :meth:`close`. Read it from the event loop's thread (the task count needs
    the running loop).

    Args:
        namespace: the prefix of every Prometheus metric name.
        lag_monitor: a :class:`~asyncperf.observability.LoopLagMonitor` (or any
            object with ``statistics()``) whose figures are reported; settable later
            through :attr:`lag_monitor`.
        buckets: the histograms' upper bounds in seconds, increasing.
        time_every_job: feed the pools' histograms with every job (their
            ``_count`` then equals the jobs run) instead of the pool's own sample
            of one job in eight per worker. Timing every job costs two clock
            reads and a histogram update per job: about 30% of a no-op job's
            overhead, against under 5% for the sample (measured by the
            ``metrics`` bench suite).
        max_decisions: the supervisor events kept in the snapshot.

    Raises:
        TypeError, ValueError: a parameter is wrong (the message names it).
    """

    #: The ``Content-Type`` of :meth:`prometheus_text` (prometheus_client's own).
    #: The media type of :meth:`prometheus_text` (prometheus_client's CONTENT_TYPE_LATEST).
    CONTENT_TYPE = _PrometheusContentType()

    def __init__(
        self,
        *,
        namespace: str = "asyncperf",
        lag_monitor: SupportsStatistics | None = None,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        time_every_job: bool = False,
        max_decisions: int = 50,
    ) -> None:
        given: object = namespace  # checked at run time: callers may not be typed
        if not isinstance(given, str) or not _METRIC_NAME.match(given):
            raise ValueError(
                f"namespace must be a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), "
                f"not {namespace!r}"
            )
        bounds = tuple(float(b) for b in buckets)
        if not bounds or any(not math.isfinite(b) for b in bounds):
            raise ValueError("buckets must be a non-empty sequence of finite numbers")
        if any(low >= high for low, high in itertools.pairwise(bounds)):
            raise ValueError("buckets must be strictly increasing")
        check_bool("time_every_job", time_every_job)
        if isinstance(max_decisions, bool) or not isinstance(max_decisions, int):
            raise TypeError(f"max_decisions must be an int, not {type(max_decisions).__name__}")
        if max_decisions < 0:
            raise ValueError("max_decisions must be >= 0")
        self.lag_monitor = lag_monitor
        self._namespace = namespace
        self._bounds = bounds
        self._time_every_job = time_every_job
        self._max_decisions = max_decisions
        self._pools: dict[str, _PoolEntry] = {}
        self._queues: dict[str, PriorityQueue[Any]] = {}
        self._limiters: dict[str, AdaptiveLimiter | RateLimiter] = {}
        self._caches: dict[str, TieredCache | CacheLevel] = {}
        self._supervisors: dict[str, Supervisor] = {}
        # Events per supervisor, pool and action, counted as they happen (the
        # supervisor's own log keeps only its last max_events).
        self._decision_counts: dict[str, dict[tuple[str, str], int]] = {}
        self._listeners: dict[str, Callable[[ScalingEvent], None]] = {}
        self._memory_pools: dict[str, BufferPool | ObjectPool[Any]] = {}
        self._sources: dict[str, Callable[[], Mapping[str, float]]] = {}
        self._loop = "none"
        self._closed = False
        self._gc = GcMonitor()
        self._gc.start()
        self._registry: CollectorRegistry | None = None  # made on first use

    # -- registration -------------------------------------------------------------

    @property
    def namespace(self) -> str:
        """The prefix of the Prometheus metric names."""
        return self._namespace

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("Metrics is closed: create a new one to register components")

    def add_pool(self, pool: WorkerPool, name: str | None = None) -> None:
        """Register a worker pool, its queue (under the same name) and its adaptive limiter.

        The pool's wait and run time histograms are fed from now on.

        Raises:
            TypeError: ``pool`` is not a WorkerPool, or ``name`` not a str.
            ValueError: ``name`` (default ``pool.name``) is taken by a pool or a
                queue, or ``pool`` is already instrumented (by this or another registry).
        """
        self._check_open()
        if not isinstance(pool, WorkerPool):
            raise _wrong_type("pool", "a WorkerPool", pool)
        name = _check_name("name", pool.name if name is None else name)
        if name in self._pools or name in self._queues:
            raise ValueError(f"name: a pool or queue named {name!r} is already registered")
        if pool._instrument is not None:
            raise ValueError(f"pool: {pool.name!r} is already instrumented by a Metrics")
        limiter = pool.limiter
        if limiter is not None and name in self._limiters:
            raise ValueError(f"name: a limiter named {name!r} is already registered")
        queue = pool.queue
        hook = PoolHook(
            queue.priorities, queue.default_priority, self._bounds, self._time_every_job
        )
        pool._set_instrument(hook, every_job=self._time_every_job)
        self._pools[name] = _PoolEntry(pool, hook)
        self._queues[name] = queue
        if limiter is not None:
            self._limiters[name] = limiter

    def add_queue(self, queue: PriorityQueue[Any], name: str) -> None:
        """Register a queue on its own (a pool's queue comes with :meth:`add_pool`).

        Its sojourn time is reported as the age of the oldest item per level; a
        histogram of it exists for pool queues only (the pool times each job).

        Raises:
            TypeError: ``queue`` is not a PriorityQueue.
            ValueError: ``name`` is taken.
        """
        self._check_open()
        if not isinstance(queue, PriorityQueue):
            raise _wrong_type("queue", "a PriorityQueue", queue)
        name = _check_name("name", name)
        if name in self._queues:
            raise ValueError(f"name: a queue named {name!r} is already registered")
        if any(q is queue for q in self._queues.values()):
            raise ValueError("queue: this queue is already registered")
        self._queues[name] = queue

    def add_limiter(self, limiter: AdaptiveLimiter | RateLimiter, name: str) -> None:
        """Register an adaptive or a rate limiter.

        Raises:
            TypeError: ``limiter`` is neither.
            ValueError: ``name`` is taken.
        """
        self._check_open()
        if not isinstance(limiter, AdaptiveLimiter | RateLimiter):
            raise _wrong_type("limiter", "an AdaptiveLimiter or a RateLimiter", limiter)
        name = _check_name("name", name)
        if name in self._limiters:
            raise ValueError(f"name: a limiter named {name!r} is already registered")
        self._limiters[name] = limiter

    def add_cache(self, cache: TieredCache | CacheLevel, name: str) -> None:
        """Register a cache: a TieredCache, or one level (MemoryCache, DiskCache, ...).

        Raises:
            TypeError: ``cache`` is neither.
            ValueError: ``name`` is taken.
        """
        self._check_open()
        if not isinstance(cache, TieredCache | CacheLevel):
            raise _wrong_type("cache", "a TieredCache, MemoryCache or DiskCache", cache)
        name = _check_name("name", name)
        if name in self._caches:
            raise ValueError(f"name: a cache named {name!r} is already registered")
        self._caches[name] = cache

    def add_supervisor(self, supervisor: Supervisor, name: str = "supervisor") -> None:
        """Register a supervisor: its ticks, restarts and decisions (with their reasons).

        Decisions are counted per action from now on (seeded with the events
        still in the supervisor's log); the snapshot keeps the last ``max_decisions``.

        Raises:
            TypeError: ``supervisor`` is not a Supervisor.
            ValueError: ``name`` is taken.
        """
        self._check_open()
        if not isinstance(supervisor, Supervisor):
            raise _wrong_type("supervisor", "a Supervisor", supervisor)
        name = _check_name("name", name)
        if name in self._supervisors:
            raise ValueError(f"name: a supervisor named {name!r} is already registered")
        counts: dict[tuple[str, str], int] = {}

        def count(event: ScalingEvent) -> None:
            key = (event.pool, str(event.action))
            counts[key] = counts.get(key, 0) + 1

        for event in supervisor.statistics().events:
            count(event)
        supervisor.add_listener(count)
        self._supervisors[name] = supervisor
        self._decision_counts[name] = counts
        self._listeners[name] = count

    def add_memory_pool(self, pool: BufferPool | ObjectPool[Any]) -> None:
        """Register a buffer or object pool, under its ``name``.

        Raises:
            TypeError: ``pool`` is neither.
            ValueError: a memory pool of that name is registered.
        """
        self._check_open()
        if not isinstance(pool, BufferPool | ObjectPool):
            raise _wrong_type("pool", "a BufferPool or an ObjectPool", pool)
        name = pool.name
        if name in self._memory_pools:
            raise ValueError(f"pool: a memory pool named {name!r} is already registered")
        self._memory_pools[name] = pool

    def add_source(self, name: str, read: Callable[[], Mapping[str, float]]) -> None:
        """Register a reader of named figures (the runtime's handlers, say).

        ``read()`` runs at each snapshot; its numbers go to ``sources[name]`` and
        to the gauge ``<namespace>_source_value{source=name,key=...}``. Values
        that are not numbers are left out.

        Raises:
            TypeError: ``read`` is not callable.
            ValueError: ``name`` is taken.
        """
        self._check_open()
        name = _check_name("name", name)
        if not callable(read):
            raise _wrong_type("read", "a callable", read)
        if name in self._sources:
            raise ValueError(f"name: a source named {name!r} is already registered")
        self._sources[name] = read

    def close(self) -> None:
        """Unhook the pools and supervisors and stop the GC monitor; idempotent.

        A snapshot can still be read afterwards; registering raises.
        """
        if self._closed:
            return
        self._closed = True
        for entry in self._pools.values():
            if entry.pool._instrument is entry.hook:
                entry.pool._set_instrument(None)
        for name, supervisor in self._supervisors.items():
            supervisor.remove_listener(self._listeners[name])
        self._listeners.clear()
        self._gc.stop()

    def __enter__(self) -> Metrics:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<Metrics {self._namespace} {len(self._pools)} pools, {len(self._queues)} queues, "
            f"{len(self._caches)} caches, {state}>"
        )

    # -- reading ------------------------------------------------------------------

    def histograms(self) -> dict[str, PoolHook]:
        """The hooks of the registered pools, by name (their histograms, live)."""
        return {name: entry.hook for name, entry in self._pools.items()}

    def snapshot(self) -> dict[str, Any]:
        """Every registered component's figures now, as JSON-ready values (see the module doc)."""
        return {
            "time": time.time(),
            "loop": self._loop_name(),
            "process": self._process(),
            "gc": self._gc.statistics().as_dict(),
            "lag": self._lag(),
            "pools": {name: self._pool(entry) for name, entry in self._pools.items()},
            "queues": {name: _queue(queue) for name, queue in self._queues.items()},
            "limiters": {name: _limiter(limiter) for name, limiter in self._limiters.items()},
            "caches": {name: _cache(cache) for name, cache in self._caches.items()},
            "memory_pools": {name: _memory_pool(p) for name, p in self._memory_pools.items()},
            "supervisor": self._supervisor(),
            "sources": {name: self._source(read) for name, read in self._sources.items()},
        }

    def prometheus_text(self) -> bytes:
        """The Prometheus text exposition of a fresh snapshot and the histograms."""
        from prometheus_client import generate_latest

        return generate_latest(self._prometheus_registry())

    def _prometheus_registry(self) -> CollectorRegistry:
        # A private registry: nothing lands in prometheus_client's global REGISTRY.
        if self._registry is None:
            # Imported here: _prom imports this module for its types, and prometheus_client
            # is imported only by users who read metrics.
            from prometheus_client import CollectorRegistry

            from asyncperf.observability._prom import SnapshotCollector

            registry = CollectorRegistry(auto_describe=False)
            registry.register(SnapshotCollector(self))
            self._registry = registry
        return self._registry

    def _loop_name(self) -> str:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._loop  # the last loop seen: a scrape from another thread
        self._loop = loop_name()
        return self._loop

    @staticmethod
    def _process() -> dict[str, Any]:
        try:
            tasks: int | None = len(asyncio.all_tasks())
        except RuntimeError:
            tasks = None  # no running loop in this thread
        return {"rss_bytes": rss_bytes(), "peak_rss_bytes": peak_rss_bytes(), "tasks": tasks}

    def _lag(self) -> dict[str, Any] | None:
        if self.lag_monitor is None:
            return None
        return _numbers(self.lag_monitor.statistics())

    @staticmethod
    def _pool(entry: _PoolEntry) -> dict[str, Any]:
        data = _numbers(entry.pool.statistics())
        data["instrumented"] = entry.pool._instrument is entry.hook
        data["observed"] = sum(h.count for h in entry.hook.runs.values())
        return data

    def _supervisor(self) -> dict[str, Any]:
        decisions: list[dict[str, Any]] = []
        supervisors: dict[str, Any] = {}
        for name, supervisor in self._supervisors.items():
            stats = supervisor.statistics()
            for event in stats.events:
                decisions.append(
                    {
                        "time": event.time,
                        "supervisor": name,
                        "pool": event.pool,
                        "action": str(event.action),
                        "before": event.before,
                        "after": event.after,
                        "reason": event.reason,
                        "readings": {k: _number(v) for k, v in event.readings.items()},
                    }
                )
            by_action: dict[str, int] = {}
            by_pool: dict[str, dict[str, int]] = {}
            for (pool, action), count in self._decision_counts[name].items():
                by_action[action] = by_action.get(action, 0) + count
                by_pool.setdefault(pool, {})[action] = count
            supervisors[name] = {
                "ticks": stats.ticks,
                "loop_lag": stats.loop_lag,
                "max_loop_lag": stats.max_loop_lag,
                "decisions": by_action,
                "decisions_by_pool": by_pool,
                "pools": {
                    p.name: {
                        "workers": p.workers,
                        "live": p.live,
                        "limit": p.limit,
                        "decisions": p.decisions,
                        "restarts": p.restarts,
                        "failed": p.failed,
                    }
                    for p in stats.pools
                },
            }
        decisions.sort(key=lambda d: d["time"])  # stable: one supervisor's order is kept
        kept = decisions[len(decisions) - self._max_decisions :] if self._max_decisions else []
        return {"decisions": kept, "supervisors": supervisors}

    def decision_counts(self) -> dict[str, dict[tuple[str, str], int]]:
        """Events seen per supervisor, keyed by ``(pool, action)``."""
        return {name: dict(counts) for name, counts in self._decision_counts.items()}

    @staticmethod
    def _source(read: Callable[[], Mapping[str, float]]) -> dict[str, float]:
        values: Mapping[str, object] = read()  # a user's reader: check what it gave
        return {
            str(key): value
            for key, value in values.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }


def _queue(queue: PriorityQueue[Any]) -> dict[str, Any]:
    stats = queue.statistics()
    levels: dict[str, Any] = {}
    for level in stats.levels:
        drops = dict.fromkeys(_QUEUE_DROP_REASONS, 0)
        for reason, count in level.drops.items():
            drops[reason.value] = count
        levels[str(level.priority)] = {
            "depth": level.depth,
            "bound": level.bound,
            "max_size": level.max_size,
            "weight": level.weight,
            "enqueued": level.enqueued,
            "dequeued": level.dequeued,
            "dropped": level.dropped,
            "rejected": level.rejected,
            "removed": level.removed,
            "oldest_age": level.oldest_age,
            "waiting_putters": level.waiting_putters,
            "drops": drops,
        }
    return {
        "depth": stats.depth,
        "load": stats.load,
        "standing": stats.standing,
        "closed": stats.closed,
        "waiting_getters": stats.waiting_getters,
        "levels": levels,
    }


def _limiter(limiter: AdaptiveLimiter | RateLimiter) -> dict[str, Any]:
    if isinstance(limiter, AdaptiveLimiter):
        stats = limiter.statistics()
        return {
            "kind": "adaptive",
            "algorithm": stats.algorithm,
            "limit": stats.limit,
            "min_limit": stats.min_limit,
            "max_limit": stats.max_limit,
            "in_flight": stats.in_flight,
            "waiting": stats.waiting,
            "samples": stats.samples,
            "windows": stats.windows,
            "drops": stats.drops,
            "last_change": stats.history[-1].reason if stats.history else None,
        }
    rate = limiter.statistics()
    return {
        "kind": "rate",
        "rate": rate.rate,
        "per": rate.per,
        "burst": rate.burst,
        "admitted": rate.admitted,
        "admitted_calls": rate.admitted_calls,
        "refused": rate.refused,
        "waiting": rate.waiting,
        "total_wait_seconds": rate.total_wait_seconds,
        "next_free_in": rate.next_free_in,
    }


def _cache_level(stats: CacheStatistics) -> dict[str, Any]:
    return {
        "policy": stats.policy,
        "hits": stats.hits,
        "misses": stats.misses,
        "hit_ratio": stats.hit_ratio,
        "entries": stats.entries,
        "bytes": stats.bytes,
        "max_entries": stats.max_entries,
        "max_bytes": stats.max_bytes,
        "sets": stats.sets,
        "deletes": stats.deletes,
        "evictions": dict(stats.evictions),
        "hit_latency_p50": stats.hit_latency_p50,
        "hit_latency_p99": stats.hit_latency_p99,
    }


def _level_names(levels: Sequence[CacheStatistics]) -> list[str]:
    """Level names, made unique (``memory``, ``memory#2``) so each is one label value."""
    seen: dict[str, int] = {}
    names = []
    for stats in levels:
        seen[stats.name] = seen.get(stats.name, 0) + 1
        names.append(stats.name if seen[stats.name] == 1 else f"{stats.name}#{seen[stats.name]}")
    return names


def _cache(cache: TieredCache | CacheLevel) -> dict[str, Any]:
    if isinstance(cache, TieredCache):
        tier = cache.statistics()
        levels = tier.levels
        data: dict[str, Any] = {
            "hits": tier.hits,
            "misses": tier.misses,
            "hit_ratio": _ratio(tier.hits, tier.misses),
            "loads": tier.loads,
            "load_errors": tier.load_errors,
            "coalesced": tier.coalesced,
            "stale_served": tier.stale_served,
            "refreshes": tier.refreshes,
            "refresh_errors": tier.refresh_errors,
            "negative_hits": tier.negative_hits,
            "promotions": tier.promotions,
            "write_errors": tier.write_errors,
            "write_behind_pending": tier.write_behind_pending,
            "write_behind_written": tier.write_behind_written,
            "write_behind_batches": tier.write_behind_batches,
            "write_behind_errors": tier.write_behind_errors,
            "in_flight": tier.in_flight,
        }
    else:
        level = cache.statistics()
        levels = (level,)
        data = {"hits": level.hits, "misses": level.misses, "hit_ratio": level.hit_ratio}
    data["levels"] = {
        name: _cache_level(stats) for name, stats in zip(_level_names(levels), levels, strict=True)
    }
    return data


def _memory_pool(pool: BufferPool | ObjectPool[Any]) -> dict[str, Any]:
    if isinstance(pool, BufferPool):
        stats = pool.statistics()
        classes = stats.classes
        return {
            "kind": "buffer",
            "closed": stats.closed,
            "hits": stats.hits,
            "misses": stats.misses,
            "oversize": stats.oversize_acquires,
            "acquires": stats.acquires,
            "in_use": stats.in_use,
            "free": stats.free,
            "free_bytes": sum(c.bytes_held for c in classes),
            "released": sum(c.released for c in classes),
            "dropped_on_release": sum(c.dropped_on_release for c in classes),
            "recycled": sum(c.recycled for c in classes),
            "trimmed": sum(c.trimmed for c in classes),
        }
    objects = pool.statistics()
    return {
        "kind": "object",
        "closed": objects.closed,
        "hits": objects.hits,
        "misses": objects.misses,
        "oversize": 0,
        "acquires": objects.acquires,
        "in_use": objects.in_use,
        "free": objects.free,
        "free_bytes": None,  # objects are not weighed
        "released": objects.released,
        "dropped_on_release": objects.dropped_on_release,
        "recycled": objects.recycled,
        "trimmed": objects.trimmed,
    }
