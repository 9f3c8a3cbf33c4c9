"""Runtime: the pools, queues, limiters, cache and supervisor behind ``@runtime.handler``."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import inspect
import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, Literal, ParamSpec, Self, TypeVar, Unpack, cast, overload

from asyncperf._errors import DropReason, Rejected, RuntimeNotRunning
from asyncperf._validate import check_int, check_number
from asyncperf.abc import Clock, LeasedQueue, RateLimiterBackend, SemaphoreStatistics
from asyncperf.cache import DiskCache, MemoryCache, TieredCache, TieredStatistics
from asyncperf.cache._decorator import _KeyMaker
from asyncperf.cache._policies import PolicyName
from asyncperf.io import BatcherStatistics
from asyncperf.loop import SystemClock, loop_name
from asyncperf.observability._lag import LoopLagMonitor
from asyncperf.observability._metrics import Metrics
from asyncperf.observability._server import DashboardServer
from asyncperf.queues import (
    AdaptiveLimiter,
    Backoff,
    CoDel,
    DropStrategy,
    Level,
    PriorityQueue,
    RateLimiter,
)
from asyncperf.runtime._backend import Backend, SharedCacheLevel, open_backend
from asyncperf.runtime._config import PoolSettings, RuntimeConfig, RuntimeOptions
from asyncperf.runtime._handler import Handler, HandlerCore, HandlerStatistics
from asyncperf.supervisor import ScalingPolicy, Supervisor, SupervisorStatistics
from asyncperf.workers import PoolStatistics, WorkerPool

__all__ = ["Runtime", "RuntimeStatistics", "ShutdownReport"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

logger = logging.getLogger("asyncperf.runtime")

#: The shared pool of the handlers that name none and set no ``concurrency``.
DEFAULT_POOL = "default"
#: The fields of each handler's statistics read by the metrics' ``handlers`` source.
_HANDLER_READINGS = (
    "calls",
    "succeeded",
    "failed",
    "timed_out",
    "rejected",
    "dropped",
    "cancelled",
    "in_flight",
    "queued",
    "running",
    "cache_hits",
    "retries",
    "latency_p50",
    "latency_p99",
)
# The levels of every pool's queue: priority and weight (0 high, 1 normal, 2 low).
_LEVELS = ((0, 4), (1, 2), (2, 1))


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    DRAINING = "draining"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """How the runtime stopped: what was finished, and what was not.

    Attributes:
        drained: every queued and running call finished before the deadline.
        reason: ``drained``, ``drain_timeout`` (the deadline passed), or
            ``cancelled`` (closed at once: ``aclose()``, or ``async with`` left
            with an exception).
        duration: seconds from the start of the shutdown to its end.
        queued: per handler, calls still queued when the drain ended: they were
            dropped, and raised :class:`~asyncperf.Dropped` (reason ``shutdown``).
        running: per handler, calls still running then: they were cancelled, and
            raised :class:`~asyncperf.Dropped` (reason ``shutdown``) too.
        pending: per pool, jobs still queued then (the handlers' and any other).
    """

    drained: bool
    reason: str
    duration: float
    queued: Mapping[str, int]
    running: Mapping[str, int]
    pending: Mapping[str, int]

    @property
    def unfinished(self) -> int:
        """Calls the shutdown cut short (queued and running)."""
        return sum(self.queued.values()) + sum(self.running.values())


@dataclass(frozen=True, slots=True)
class RuntimeStatistics:
    """A snapshot of a :class:`Runtime`: every handler, pool, limiter, the cache, the supervisor.

    Attributes:
        state: ``new``, ``running``, ``draining`` or ``closed``.
        loop: the event loop the runtime runs on (``not started`` before).
        handlers: per handler, its calls and outcomes.
        pools: per pool, its workers and jobs.
        rate_limiters: per handler with a rate limit, the limiter's counters (a
            :class:`~asyncperf.RateLimiterStatistics` in process; on a Redis
            backend a ``RedisRateLimiterStatistics``, with ``failed_open``).
        global_limits: per handler with ``global_concurrency``, its limit's
            counters (this process's own; the limit is shared on Redis).
        batchers: per ``batch=`` handler, its batcher's counters (batches, sizes, waits).
        backend: where the shared parts live: ``local``, or the Redis URL
            (without its password).
        cache: the tiered cache's counters, per level.
        supervisor: the supervisor's decisions and readings (None without one).
        shutdown: how the last shutdown went (None while it has not happened).
    """

    state: str
    loop: str
    handlers: Mapping[str, HandlerStatistics]
    pools: Mapping[str, PoolStatistics]
    rate_limiters: Mapping[str, Any]
    global_limits: Mapping[str, SemaphoreStatistics]
    batchers: Mapping[str, BatcherStatistics]
    backend: str
    cache: TieredStatistics
    supervisor: SupervisorStatistics | None
    shutdown: ShutdownReport | None


def _exception_types(name: str, value: object) -> tuple[type[BaseException], ...]:
    kinds = (value,) if isinstance(value, type) else value
    if isinstance(kinds, tuple) and all(
        isinstance(kind, type) and issubclass(kind, BaseException) for kind in kinds
    ):
        return kinds
    raise TypeError(f"{name} must be an exception type or a tuple of them, not {value!r}")


class Runtime:
    """One runtime for a service's async handlers: bounded, prioritised, cached, scaled, measured.

    Decorate ``async def`` functions with :meth:`handler`; inside
    ``async with runtime:`` each call of a handler goes

    1. to the **cache**, when the handler has a ``cache_ttl``: a hit returns at
       once (no rate token, no worker), and concurrent misses of one key share
       one load (single-flight);
    2. through **admission**: the handler's rate limit (GCRA; a call the limit
       would not admit within the admission timeout is refused at once with
       :class:`RateLimited`), then room in its priority level of the pool's
       queue (a full ``block`` level is waited for, up to what is left of the
       admission timeout; a full ``reject`` level refuses at once);
    3. through the pool's **priority queue** (weighted 4:2:1 over the levels 0,
       1, 2; with a per-call ``deadline`` and optional CoDel) to a **worker**,
       which runs the **body** under the handler's ``timeout``;
    4. back, retried with backoff when it raised one of ``retry_on`` (each
       attempt is admitted and queued again, and has the whole ``timeout``).

    The cache comes before admission (DESIGN.md draws it inside the worker):
    so a hit costs no rate token and no worker, and N concurrent misses of a
    key make one upstream call, not N queued jobs. As with
    :meth:`TieredCache.get_or_load <asyncperf.cache.TieredCache.get_or_load>`,
    cancelling a caller of a cached handler leaves its load running (it fills
    the cache for the next caller); should that load fail with no caller left
    waiting, the failure goes to the loop's exception handler.

    Each call ends in exactly one of: its result; the body's own exception,
    unchanged; :class:`~asyncperf.JobTimeout`; :class:`~asyncperf.Rejected`
    (never accepted: rate limit, full level, shutting down) or
    :class:`~asyncperf.Dropped` (accepted, then shed: deadline, eviction,
    CoDel, shutdown; a call whose body the shutdown cancels is Dropped too, as
    its caller was not the one cancelled), each with its reason; or
    ``CancelledError`` when the caller is cancelled. Each is counted per
    handler in :meth:`statistics`. A call before ``async with`` or after it
    raises :class:`RuntimeNotRunning` and is not counted.

    Handlers share the ``default`` pool unless they set ``concurrency`` (a
    pool of their own, of that many workers) or ``pool="NAME"`` (a named pool,
    shared by every handler that names it; ``[pools.NAME]`` in the config
    sizes it).

    ``async with runtime:`` opens the cache, starts the pools, then the
    supervisor (which resizes the pools from their measured load); leaving it
    stops them in reverse order. Leaving normally drains: no new calls are
    admitted (they are rejected, reason ``shutdown``), and queued and running
    calls have ``drain_timeout`` seconds to finish; then what is still queued
    is dropped and what is still running cancelled, and both are reported in
    ``statistics().shutdown`` and logged (a warning on ``asyncperf.runtime``).
    Leaving with an exception closes at once, with the same report.

    Args:
        config: the settings (default :class:`RuntimeConfig`'s defaults).
        clock: the time source of every part (timeouts, rates, cache TTLs, the
            supervisor's ticks); default :class:`~asyncperf.SystemClock`.
        **options: settings that replace those of ``config`` (any field of
            :class:`RuntimeConfig`).

    Raises:
        TypeError: ``config`` is not a RuntimeConfig, ``clock`` not a Clock, or an
            unknown or mistyped option (the message names it).
        ValueError: an option out of range (the message names it).
    """

    def __init__(
        self,
        config: RuntimeConfig | None = None,
        /,
        *,
        clock: Clock | None = None,
        **options: Unpack[RuntimeOptions],
    ) -> None:
        if config is None:
            config = RuntimeConfig()
        elif not isinstance(config, RuntimeConfig):
            raise TypeError(f"config must be a RuntimeConfig, not {type(config).__name__}")
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be a Clock, not {type(clock).__name__}")
        self._config = config.replace(**options)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._state = _State.NEW
        # Mirrors `_state is RUNNING`: read once per call by every handler.
        self._accepting = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pools: dict[str, WorkerPool] = {}
        self._handlers: dict[str, HandlerCore] = {}
        config = self._config
        self._backend: Backend = open_backend(
            config.backend,
            namespace=config.namespace,
            password=config.redis_password,
            ssl_context=config.ssl_context(),
            fail=cast(Literal["closed", "open"], config.limits_fail),
        )
        self._shared_cache: SharedCacheLevel | None = None
        self._cache = self._make_cache()
        self._pool(DEFAULT_POOL, None, "")
        self._supervisor: Supervisor | None = None
        self._report: ShutdownReport | None = None
        self._closed = asyncio.Event()
        # Made on first use of `metrics` (or when the dashboard is on); the parts are
        # registered when the runtime starts, once every pool and the supervisor exist.
        self._metrics: Metrics | None = None
        self._metrics_registered = False
        self._lag_monitor: LoopLagMonitor | None = None
        self._dashboard: DashboardServer | None = None

    # -- parts --------------------------------------------------------------------

    @property
    def config(self) -> RuntimeConfig:
        """The settings in force (``config`` with the keyword options applied)."""
        return self._config

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def cache(self) -> TieredCache:
        """The cache of the handlers' results (memory, over disk with ``cache_dir``)."""
        return self._cache

    @property
    def backend(self) -> Backend:
        """Where the shared parts live (``config.backend``): this process, or a Redis server."""
        return self._backend

    @property
    def pools(self) -> Mapping[str, WorkerPool]:
        """The pools by name (read-only): ``default``, named ones, per-handler ones."""
        return MappingProxyType(self._pools)

    @property
    def supervisor(self) -> Supervisor | None:
        """The supervisor while the runtime runs with ``autoscale`` (else None)."""
        return self._supervisor

    @property
    def metrics(self) -> Metrics:
        """The metrics registry of every pool, queue, limiter, cache level and the supervisor.

        Made on first use. The runtime's parts are registered in it when the
        runtime starts (at once, if it is running already), along with a loop-lag
        monitor and a source ``handlers`` of each handler's counters; the
        dashboard (``dashboard=True``) serves it. Its values stay readable after
        the runtime stops.
        """
        if self._metrics is None:
            self._lag_monitor = LoopLagMonitor(interval=0.1, clock=self._clock)
            self._metrics = Metrics(lag_monitor=self._lag_monitor)
            if self._state is _State.RUNNING:
                self._register_metrics()
        return self._metrics

    @property
    def dashboard(self) -> DashboardServer | None:
        """The dashboard's server while the runtime serves it (``dashboard=True``), else None."""
        return self._dashboard

    @property
    def dashboard_url(self) -> str | None:
        """Where the dashboard is served (``http://127.0.0.1:PORT/``), or None when it is not."""
        server = self._dashboard
        return server.url if server is not None and server.serving else None

    def _register_metrics(self) -> None:
        """Register every part in :attr:`metrics` (once) and start its loop-lag monitor."""
        metrics = self.metrics
        if self._metrics_registered:
            return
        self._metrics_registered = True
        for name, pool in self._pools.items():
            metrics.add_pool(pool, name)  # with its queue and limiter
        metrics.add_cache(self._cache, "cache")
        if self._supervisor is not None:
            metrics.add_supervisor(self._supervisor)
        for name, core in self._handlers.items():
            limiter = core.rate_limiter
            if isinstance(limiter, RateLimiter):
                metrics.add_limiter(limiter, f"{name}.rate")
            elif limiter is not None:
                metrics.add_source(f"{name}.rate", functools.partial(_limiter_readings, limiter))
            if core.batcher is not None:
                metrics.add_source(
                    f"{name}.batch", functools.partial(_readings, core.batcher.statistics)
                )
        metrics.add_source("handlers", self._handler_readings)
        if self._lag_monitor is not None and not self._lag_monitor.running:
            self._lag_monitor.start()

    def _handler_readings(self) -> dict[str, float]:
        """Each handler's counters as ``NAME.FIELD`` readings (the ``handlers`` source)."""
        readings: dict[str, float] = {}
        for name, core in self._handlers.items():
            stats = core.statistics()
            for field in _HANDLER_READINGS:
                readings[f"{name}.{field}"] = float(getattr(stats, field))
        return readings

    @property
    def running(self) -> bool:
        """True between entering ``async with`` and the start of the shutdown."""
        return self._accepting

    def _make_cache(self) -> TieredCache:
        config = self._config
        memory = MemoryCache(
            config.cache_max_entries,
            policy=cast(PolicyName, config.cache_policy),
            clock=self._clock,
        )
        levels: list[Any] = [memory]
        if config.cache_dir is not None:
            levels.append(DiskCache(config.cache_dir, max_bytes=config.cache_max_bytes))
        shared = self._shared_cache = self._backend.cache_level()
        if shared is not None:
            # Last: a shared level answers slower than this machine's disk.
            levels.append(shared)
        write: Literal["behind", "through"] = (
            "behind" if config.cache_write == "behind" else "through"
        )
        return TieredCache(*levels, clock=self._clock, write=write)

    def _pool(self, name: str, concurrency: int | None, handler: str) -> WorkerPool:
        """The pool ``name``, made now if it does not exist (sized by ``concurrency``)."""
        pool = self._pools.get(name)
        if pool is not None:
            if concurrency is not None and concurrency != pool.max_workers:
                raise ValueError(
                    f"handler {handler!r} asks for concurrency={concurrency} in pool "
                    f"{name!r}, which has max_workers={pool.max_workers}"
                )
            return pool
        if self._state is not _State.NEW:
            raise RuntimeError(
                f"handler {handler!r} needs a new pool {name!r}, but pools start with the "
                "runtime: declare handlers before 'async with runtime:'"
            )
        config = self._config
        settings = config.pools.get(name, PoolSettings())
        if (
            concurrency is not None
            and settings.max_workers is not None
            and concurrency != settings.max_workers
        ):
            raise ValueError(
                f"handler {handler!r} asks for concurrency={concurrency} in pool {name!r}, "
                f"which pools.{name}.max_workers sets to {settings.max_workers}"
            )
        max_workers = next(
            n for n in (concurrency, settings.max_workers, config.max_workers) if n is not None
        )
        if settings.min_workers is not None:
            min_workers = settings.min_workers
            if min_workers > max_workers:
                raise ValueError(
                    f"pools.{name}.min_workers must be <= its max_workers "
                    f"({min_workers} > {max_workers})"
                )
        else:
            min_workers = min(config.min_workers, max_workers)
        idle_timeout = (
            settings.idle_timeout if settings.idle_timeout is not None else (config.idle_timeout)
        )
        max_pending = settings.max_pending or config.max_pending
        strategy = DropStrategy(settings.overflow or config.overflow)
        levels = [Level(priority, max_pending, strategy, weight) for priority, weight in _LEVELS]
        codel = None
        if config.codel_target is not None:
            codel = CoDel(config.codel_target, config.codel_interval)
        queue: PriorityQueue[Any] = PriorityQueue(levels, codel=codel, clock=self._clock)
        limiter = None
        if config.limiter is not None:
            limiter = AdaptiveLimiter(
                config.limiter,
                initial=max_workers,
                min_limit=1,
                max_limit=max_workers,
                clock=self._clock,
            )
        pool = WorkerPool(
            max_workers,
            min_workers=min_workers,
            idle_timeout=idle_timeout,
            queue=queue,
            limiter=limiter,
            clock=self._clock,
            name=name,
        )
        self._pools[name] = pool
        return pool

    # -- handlers -----------------------------------------------------------------

    @overload
    def handler(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Handler[P, R]: ...

    @overload
    def handler(
        self,
        fn: None = None,
        /,
        *,
        batch: int,
        batch_delay: float | None = None,
        name: str | None = None,
        priority: int = 1,
        timeout: float | None = None,
        concurrency: int | None = None,
        cache_ttl: float | None = None,
        cache_key: Callable[..., Any] | None = None,
        cache_namespace: str | None = None,
        rate: str | RateLimiter | RateLimiterBackend | None = None,
        burst: int = 1,
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        backoff: Backoff | None = None,
        pool: str | None = None,
        deadline: float | None = None,
        admission_timeout: float | None = None,
        global_concurrency: int | None = None,
    ) -> Callable[
        [Callable[[list[T]], Coroutine[Any, Any, Sequence[R | BaseException]]]], Handler[[T], R]
    ]: ...

    @overload
    def handler(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        priority: int = 1,
        timeout: float | None = None,
        concurrency: int | None = None,
        cache_ttl: float | None = None,
        cache_key: Callable[..., Any] | None = None,
        cache_namespace: str | None = None,
        rate: str | RateLimiter | RateLimiterBackend | None = None,
        burst: int = 1,
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        backoff: Backoff | None = None,
        pool: str | None = None,
        deadline: float | None = None,
        admission_timeout: float | None = None,
        global_concurrency: int | None = None,
        batch: None = None,
        batch_delay: None = None,
    ) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Handler[P, R]]: ...

    def handler(
        self,
        fn: Callable[P, Coroutine[Any, Any, R]] | None = None,
        /,
        *,
        name: str | None = None,
        priority: int = 1,
        timeout: float | None = None,
        concurrency: int | None = None,
        cache_ttl: float | None = None,
        cache_key: Callable[..., Any] | None = None,
        cache_namespace: str | None = None,
        rate: str | RateLimiter | RateLimiterBackend | None = None,
        burst: int = 1,
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        backoff: Backoff | None = None,
        pool: str | None = None,
        deadline: float | None = None,
        admission_timeout: float | None = None,
        global_concurrency: int | None = None,
        batch: int | None = None,
        batch_delay: float | None = None,
    ) -> Any:
        """Run an ``async def`` through this runtime; used as ``@runtime.handler(...)``.

        The decorated function keeps its name, docstring, signature and types;
        calling it runs the call path described on :class:`Runtime` and
        returns the body's result. It also has ``handler_name`` and
        ``statistics()``. A ``[handlers.NAME]`` section of the config replaces
        the arguments it sets.

        Args:
            name: the name it is counted and configured under (default: the
                function's ``__name__``); unique within the runtime.
            priority: the queue level: 0 (high), 1 (normal) or 2 (low).
            timeout: seconds one attempt's body may run before it is cancelled
                and the call raises :class:`~asyncperf.JobTimeout` (default:
                the config's ``default_timeout``).
            concurrency: give the handler its own pool of this many workers
                (with ``pool=``: the size of that named pool).
            cache_ttl: cache results this many seconds (None: no caching).
            cache_key: ``cache_key(*args, **kwargs) -> hashable`` (default: the
                handler's name and its arguments bound to its signature, as
                :func:`~asyncperf.cache.cached` builds them; every argument must
                then be hashable, and for a disk cache storable as a key).
            rate: a rate limit, ``"300/min"``, ``"5/s"``, ``"100/h"``, or a
                :class:`~asyncperf.RateLimiter` to share one limit between handlers
                (or any :class:`~asyncperf.abc.RateLimiterBackend`). A text rate on
                a Redis backend is one limit for every process of the namespace.
            burst: calls the rate limit admits at once after a quiet spell (with a text rate).
            retries: extra attempts after a ``retry_on`` error; each attempt
                goes through admission again, after a :class:`~asyncperf.Backoff` delay.
            retry_on: the exceptions worth a retry; default none when
                ``retries`` is 0, else ``(ConnectionError, TimeoutError)``
                (which covers :class:`~asyncperf.JobTimeout`). Only ``Exception``
                subclasses are ever retried, never cancellation.
            backoff: the delays between attempts (default ``Backoff()``: full
                jitter from 0.1 s, doubling, at most 10 s), slept on the runtime's clock.
            pool: the name of a shared pool (see :class:`Runtime`).
            deadline: seconds a call may wait in the queue; past it, it is dropped
                (:class:`~asyncperf.Dropped`, reason ``deadline``).
            admission_timeout: seconds a call may wait to be admitted (default:
                the config's); 0 refuses at once whatever would need a wait.
            cache_namespace: the first part of every cache key (default: the
                handler's name). Handlers given the same namespace (and the same
                key for the same call) share cached results, e.g. one function
                registered at several priorities.
            global_concurrency: at most this many bodies of the handler run at
                once, over every process sharing the runtime's ``backend`` (in
                this process alone with the local backend). A worker waits for
                a slot before it runs the body; the handler's ``timeout``
                bounds that wait too.
            batch: call the function with lists of up to this many items: it
                takes ``list[T]`` and returns one result (or exception) per item,
                in order, and the handler is called with one ``T`` and returns its
                own result. Calls are gathered by an :class:`~asyncperf.Batcher`
                (sent when full, or ``batch_delay`` after the first); each batch
                then takes the call path above as one call (one rate token, one
                worker, one ``timeout``, retried whole). A batch that fails as a
                whole fails each of its items with :class:`~asyncperf.BatchFailed`,
                chained to the cause (a ``Rejected`` or ``Dropped`` cause is
                counted as such). With ``cache_ttl``, each item is cached on its own.
            batch_delay: seconds the first item of a batch waits for more
                (default 0.005; needs ``batch``).

        Raises:
            TypeError: the function is not ``async def``, or an argument has the wrong type.
            ValueError: an argument out of range, a name already used, a priority
                with no level, a pool size that contradicts the pool's, or
                ``cache_key`` without ``cache_ttl``.
            RuntimeError: the handler needs a new pool and the runtime has started.
        """
        decorator_args: dict[str, Any] = {
            "priority": priority,
            "timeout": timeout,
            "concurrency": concurrency,
            "cache_ttl": cache_ttl,
            "rate": rate,
            "burst": burst,
            "retries": retries,
            "pool": pool,
            "deadline": deadline,
            "admission_timeout": admission_timeout,
            "cache_namespace": cache_namespace,
            "global_concurrency": global_concurrency,
            "batch": batch,
            "batch_delay": batch_delay,
        }

        def decorate(function: Callable[..., Coroutine[Any, Any, Any]]) -> Handler[..., Any]:
            return self._register(function, name, decorator_args, cache_key, retry_on, backoff)

        if fn is not None:
            return decorate(fn)
        return decorate

    def _register(
        self,
        fn: Callable[..., Coroutine[Any, Any, Any]],
        name: str | None,
        arguments: dict[str, Any],
        cache_key: Callable[..., Any] | None,
        retry_on: object,
        backoff: Backoff | None,
    ) -> Handler[..., Any]:
        if self._state is _State.CLOSED:
            raise RuntimeNotRunning("Cannot add a handler to a runtime that has been closed.")
        if not inspect.iscoroutinefunction(inspect.unwrap(fn)):
            raise TypeError(f"@runtime.handler needs an async function, not {fn!r}")
        if arguments["batch"] is not None:
            _check_batch_function(fn)
        given: object = name
        if given is None:
            name = getattr(fn, "__name__", None) or repr(fn)
        elif not isinstance(given, str) or not given:
            raise TypeError(f"name must be a non-empty str, not {given!r}")
        else:
            name = given
        if name in self._handlers:
            raise ValueError(f"a handler named {name!r} is already registered")
        settings = dict(arguments)
        section = self._config.handlers.get(name)
        if section is not None:
            settings.update(section.given())
        priority = check_int("priority", settings["priority"])
        timeout = settings["timeout"]
        timeout = self._config.default_timeout if timeout is None else timeout
        if timeout is not None:
            timeout = check_number("timeout", timeout)
        concurrency = settings["concurrency"]
        if concurrency is not None:
            check_int("concurrency", concurrency, minimum=1)
        cache_ttl = settings["cache_ttl"]
        if cache_ttl is not None:
            cache_ttl = check_number("cache_ttl", cache_ttl)
        if cache_key is not None and not callable(cache_key):
            raise TypeError(f"cache_key must be callable, not {type(cache_key).__name__}")
        if cache_key is not None and cache_ttl is None:
            raise ValueError("cache_key needs cache_ttl: without a TTL nothing is cached")
        namespace = settings["cache_namespace"]
        if namespace is not None and (not isinstance(namespace, str) or not namespace):
            raise TypeError(f"cache_namespace must be a non-empty str, not {namespace!r}")
        if namespace is not None and cache_ttl is None:
            raise ValueError("cache_namespace needs cache_ttl: without a TTL nothing is cached")
        retries = check_int("retries", settings["retries"], minimum=0)
        if retry_on is None:
            retry_types: tuple[type[BaseException], ...] = (
                (ConnectionError, TimeoutError) if retries else ()
            )
        else:
            retry_types = _exception_types("retry_on", retry_on)
        if backoff is None:
            backoff = Backoff()
        elif not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must be a Backoff, not {type(backoff).__name__}")
        deadline = settings["deadline"]
        if deadline is not None:
            deadline = check_number("deadline", deadline)
        admission = settings["admission_timeout"]
        admission = self._config.admission_timeout if admission is None else admission
        admission = check_number("admission_timeout", admission, strict=False)
        burst = check_int("burst", settings["burst"], minimum=1)
        rate = settings["rate"]
        limiter: RateLimiter | RateLimiterBackend | None
        if rate is None:
            limiter = None
        elif isinstance(rate, RateLimiter):
            limiter = rate
        elif isinstance(rate, str):
            limiter = RateLimiter.parse(rate, burst=burst, clock=self._clock)
            if self._backend.shared:
                limiter = self._backend.rate_limiter(
                    name, limiter.rate, limiter.per, limiter.burst, self._clock
                )
        elif isinstance(rate, RateLimiterBackend):
            limiter = rate
        else:
            raise TypeError(
                f"rate must be a str, a RateLimiter or a RateLimiterBackend, not "
                f"{type(rate).__name__}"
            )
        global_concurrency = settings["global_concurrency"]
        global_limit = None
        if global_concurrency is not None:
            check_int("global_concurrency", global_concurrency, minimum=1)
            global_limit = self._backend.semaphore(f"handler.{name}", global_concurrency)
        batch_size = settings["batch"]
        batch_delay = settings["batch_delay"]
        if batch_size is not None:
            batch_size = check_int("batch", batch_size, minimum=1)
            if arguments["batch"] is None:
                raise ValueError(
                    f"handlers.{name}.batch can only tune a handler declared with "
                    "@runtime.handler(batch=...): its function must take a list"
                )
            batch_delay = check_number(
                "batch_delay", 0.005 if batch_delay is None else batch_delay, strict=False
            )
        elif batch_delay is not None:
            raise ValueError("batch_delay needs batch: without a batch size nothing is batched")
        pool_name = settings["pool"]
        if pool_name is not None and (not isinstance(pool_name, str) or not pool_name):
            raise TypeError(f"pool must be a non-empty str, not {pool_name!r}")
        if pool_name is None:
            pool_name = name if concurrency is not None else DEFAULT_POOL
            if concurrency is not None and pool_name in self._pools:
                raise ValueError(
                    f"handler {name!r} with concurrency= needs a pool of its own named "
                    f"{name!r}, and a pool of that name exists: pass pool= to share it"
                )
        levels = [level for level, _ in _LEVELS]
        if priority not in levels:
            raise ValueError(f"priority must be one of {levels}, not {priority!r}")
        worker_pool = self._pool(pool_name, concurrency, name)

        make_key = None
        key_skip = 0
        if cache_ttl is not None:
            maker = _KeyMaker(fn, name if namespace is None else namespace, cache_key)
            make_key = maker
            key_skip = 1 if maker.is_method else 0

        core = HandlerCore(
            self,
            fn,
            name=name,
            pool=worker_pool,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
            admission_timeout=admission,
            cache_ttl=cache_ttl,
            make_key=make_key,
            key_skip=key_skip,
            rate=limiter,
            global_limit=global_limit,
            retries=retries,
            retry_on=retry_types,
            backoff=backoff,
            batch_size=batch_size,
            batch_delay=batch_delay,
        )
        self._handlers[name] = core
        call = core.call
        wrapper: Callable[..., Coroutine[Any, Any, Any]]
        if batch_size is None:

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return await call(args, kwargs)

        else:

            async def wrapper(item: Any) -> Any:
                return await call((item,), {})

        functools.update_wrapper(wrapper, fn)
        attributes = vars(wrapper)
        attributes["handler_name"] = name
        attributes["statistics"] = core.statistics
        attributes["runtime"] = self
        return cast(Handler[..., Any], wrapper)

    # -- queues -------------------------------------------------------------------

    def queue(
        self,
        name: str,
        *,
        levels: Iterable[Level] | None = None,
        default_priority: int | None = None,
        lease: float = 30.0,
        max_attempts: int = 5,
        dedupe_ttl: float = 3600.0,
    ) -> LeasedQueue[Any]:
        """The leased job queue ``name`` on the runtime's backend (made on first use).

        With the local backend it is a
        :class:`~asyncperf.backends.LocalLeasedQueue` of this process; on Redis a
        :class:`~asyncperf.backends.redis.RedisPriorityQueue` that every process
        of the namespace shares (its items must then be JSON values), and
        unreachable Redis raises :class:`~asyncperf.BackendUnavailable` from
        ``put`` and ``take``, never a silent local fallback. Either way delivery
        is at least once: a job whose lease runs out (its consumer died or
        stalled) is delivered again, up to ``max_attempts``, then dead-lettered.
        Consume with ``async with queue.lease() as job:`` or
        ``await queue.consume(handler, workers=N)``. The queue is closed with the runtime.

        Args:
            name: the queue's name; the same name gives the same queue.
            levels: its priority levels (default: three, 0 high to 2 low, unbounded).
            default_priority: the level of a ``put`` that names none.
            lease: seconds a taken job stays leased without renewal.
            max_attempts: deliveries of one job before it is dead-lettered.
            dedupe_ttl: seconds a ``dedupe_key`` is remembered.

        Raises:
            TypeError, ValueError: a bad argument (the message names it).
            RuntimeNotRunning: the runtime has been closed.
        """
        if self._state is _State.CLOSED:
            raise RuntimeNotRunning("Cannot open a queue on a runtime that has been closed.")
        given: object = name
        if not isinstance(given, str) or not given:
            raise TypeError(f"name must be a non-empty str, not {given!r}")
        return self._backend.queue(
            name,
            levels=levels,
            default_priority=default_priority,
            lease=lease,
            max_attempts=max_attempts,
            dedupe_ttl=dedupe_ttl,
            clock=self._clock,
        )

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Open the cache, start the pools, then the supervisor, then the dashboard (if on).

        Raises:
            RuntimeError: the runtime was entered before (create a new one).
            BackendUnavailable: the Redis ``backend`` cannot be reached (BackendError:
                it refused, e.g. a wrong password).
            OSError: the dashboard's address cannot be bound (e.g. its port is taken).
            ValueError: the config has a ``[handlers.NAME]`` section for no
                registered handler (a misspelt name would otherwise do nothing).
            Exception: what a part raised while starting (the parts already
                started are stopped first).
        """
        if self._state is not _State.NEW:
            raise RuntimeError("A Runtime can be entered only once; create a new one.")
        unknown = sorted(set(self._config.handlers) - set(self._handlers))
        if unknown:
            known = ", ".join(sorted(self._handlers)) or "none"
            raise ValueError(
                f"the config has settings for handler(s) {', '.join(map(repr, unknown))}, "
                f"but no handler of that name is registered (registered: {known})"
            )
        self._loop = asyncio.get_running_loop()
        started: list[WorkerPool] = []
        supervising = False
        try:
            await self._backend.start()
            await self._cache.__aenter__()
            for pool in self._pools.values():
                await pool.__aenter__()
                started.append(pool)
            self._supervisor = _supervise(self)
            if self._supervisor is not None:
                await self._supervisor.__aenter__()
                supervising = True
            if self._metrics is not None or self._config.dashboard:
                self._register_metrics()
            if self._config.dashboard:
                config = self._config
                self._dashboard = DashboardServer(
                    self.metrics,
                    host=config.dashboard_host,
                    port=config.dashboard_port,
                    token=config.dashboard_token,
                )
                await self._dashboard.start()
        except BaseException:
            self._state = _State.CLOSED
            await self._stop_observing()
            if supervising and self._supervisor is not None:
                await self._supervisor.__aexit__(None, None, None)
            for pool in started:
                await pool.aclose()
                await pool.__aexit__(None, None, None)
            await self._cache.aclose()
            await self._backend.aclose()
            self._closed.set()
            raise
        self._set_state(_State.RUNNING)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Drain (or, when leaving with an exception, close at once) and stop every part.

        Raises:
            PoolFailed: a pool's workers crashed beyond the restart intensity
                while the runtime ran (and the body raised nothing itself).
        """
        if exc is None:
            await self._shutdown(graceful=True, timeout=None, error=None)
        else:
            await self._shutdown(graceful=False, timeout=None, error=exc)

    async def drain(self, timeout: float | None = None) -> ShutdownReport:
        """Stop admitting calls, let queued and running ones finish, then stop everything.

        Calls still queued after ``timeout`` seconds are dropped and calls still
        running cancelled (both raise :class:`~asyncperf.Dropped`, reason
        ``shutdown``, to their callers), and the report says how many, per
        handler. Idempotent: a second call waits for the first and returns its report.

        Args:
            timeout: seconds to wait (default: the config's ``drain_timeout``).

        Raises:
            ValueError: ``timeout`` is not positive.
            PoolFailed: a pool failed while the runtime ran (see :meth:`__aexit__`).
        """
        if timeout is not None:
            check_number("timeout", timeout)
        return await self._shutdown(graceful=True, timeout=timeout, error=None)

    async def aclose(self) -> ShutdownReport:
        """Stop now: queued calls are dropped, running ones cancelled; report them. Idempotent.

        Raises:
            PoolFailed: a pool failed while the runtime ran.
        """
        return await self._shutdown(graceful=False, timeout=None, error=None)

    async def _shutdown(
        self, *, graceful: bool, timeout: float | None, error: BaseException | None
    ) -> ShutdownReport:
        """Stop the supervisor, drain the pools (or not), stop them, close the cache; report.

        Every part is stopped even when one raises; then the first error is
        raised, unless ``error`` (the body's own exception) is on its way out.
        """
        if self._state is _State.NEW:
            self._state = _State.CLOSED
            await self._cache.aclose()
            await self._backend.aclose()
            await self._stop_observing()
            self._closed.set()
        if self._state is not _State.RUNNING:
            await self._closed.wait()
            if self._report is None:
                self._report = ShutdownReport(True, "drained", 0.0, {}, {}, {})
            return self._report
        self._set_state(_State.DRAINING)
        clock = self._clock
        began = clock.now()
        pools = list(self._pools.values())
        errors: list[BaseException] = []
        drained = timed_out = False
        try:
            # The supervisor stops first: it must not resize pools while they drain.
            if self._supervisor is not None:
                try:
                    await self._supervisor.__aexit__(
                        None if error is None else type(error), error, None
                    )
                except Exception as exc:  # a pool failed while the runtime ran
                    errors.append(exc)
            if graceful:
                limit = self._config.drain_timeout if timeout is None else timeout
                try:
                    async with asyncio.timeout(limit):
                        # First the batches of accepted calls, while the pools still run them.
                        await self._close_batchers()
                        await asyncio.gather(*(pool.drain() for pool in pools))
                    drained = True
                except TimeoutError:
                    timed_out = True
        finally:
            # What the drain left: dropped and cancelled below, and reported.
            queued = {n: h.queued for n, h in self._handlers.items() if h.queued}
            running = {n: h.running for n, h in self._handlers.items() if h.running}
            pending = {n: p.queue.qsize() for n, p in self._pools.items() if p.queue.qsize()}
            for pool in reversed(pools):
                try:
                    if not drained:
                        await pool.aclose()
                    await pool.__aexit__(None, None, None)
                except Exception as exc:  # a failed pool raises its failure on exit
                    if not any(exc is seen for seen in errors):
                        errors.append(exc)
            # Items still pending now go to closed pools: each fails, and is counted.
            await self._close_batchers()
            try:
                await self._cache.aclose()
            except Exception as exc:
                errors.append(exc)
            try:
                # After the cache, whose shared level uses the backend's connection.
                await self._backend.aclose()
            except Exception as exc:
                errors.append(exc)
            # Last: the dashboard shows the drain to its end.
            await self._stop_observing()
            self._set_state(_State.CLOSED)
            reason = "drained" if drained else "drain_timeout" if timed_out else "cancelled"
            self._report = ShutdownReport(
                drained=drained,
                reason=reason,
                duration=clock.now() - began,
                queued=MappingProxyType(queued),
                running=MappingProxyType(running),
                pending=MappingProxyType(pending),
            )
            self._closed.set()
            _log_report(self._report)
        if errors and error is None:
            raise errors[0]
        return self._report

    async def _close_batchers(self) -> None:
        """Send what the batch handlers hold and wait for their batches to end."""
        batchers = [core.batcher for core in self._handlers.values() if core.batcher is not None]
        if batchers:
            await asyncio.gather(*(batcher.aclose() for batcher in batchers))

    async def _stop_observing(self) -> None:
        """Stop the dashboard's server, the loop-lag monitor and the metrics' hooks."""
        if self._dashboard is not None:
            await self._dashboard.aclose()
        if self._lag_monitor is not None:
            await self._lag_monitor.stop()
        if self._metrics is not None:
            self._metrics.close()

    def _is_draining(self) -> bool:
        return self._state is _State.DRAINING

    def _is_accepting(self) -> bool:
        """Whether calls are admitted now (a call, so type checkers do not pin its value)."""
        return self._accepting

    def _set_state(self, state: _State) -> None:
        self._state = state
        self._accepting = state is _State.RUNNING

    def _refusal(self, handler: str, priority: int) -> BaseException:
        """Why a call made while the runtime is not running is refused."""
        if self._state is _State.NEW:
            return RuntimeNotRunning(
                f"{handler}() was called before its runtime started: call handlers "
                "inside 'async with runtime:'."
            )
        if self._state is _State.DRAINING:
            return self._shutdown_rejection(handler, priority)
        return RuntimeNotRunning(
            f"{handler}() was called after its runtime was closed: call handlers "
            "inside 'async with runtime:'."
        )

    @staticmethod
    def _shutdown_rejection(handler: str, priority: int) -> Rejected:
        return Rejected(
            f"{handler}: the runtime is shutting down and admits no new calls",
            reason=DropReason.SHUTDOWN,
            priority=priority,
        )

    # -- statistics ---------------------------------------------------------------

    def statistics(self) -> RuntimeStatistics:
        """A frozen snapshot of every handler, pool, rate limiter, the cache and the supervisor."""
        rate_limiters = {
            name: _limiter_statistics(core.rate_limiter)
            for name, core in self._handlers.items()
            if core.rate_limiter is not None
        }
        global_limits = {
            name: core.global_limit.statistics()
            for name, core in self._handlers.items()
            if core.global_limit is not None
        }
        return RuntimeStatistics(
            state=self._state.value,
            loop=loop_name(self._loop) if self._loop is not None else "not started",
            handlers=MappingProxyType(
                {name: core.statistics() for name, core in self._handlers.items()}
            ),
            pools=MappingProxyType({name: pool.statistics() for name, pool in self._pools.items()}),
            rate_limiters=MappingProxyType(rate_limiters),
            global_limits=MappingProxyType(global_limits),
            batchers=MappingProxyType(
                {
                    name: core.batcher.statistics()
                    for name, core in self._handlers.items()
                    if core.batcher is not None
                }
            ),
            backend=self._backend.url,
            cache=self._cache.statistics(),
            supervisor=None if self._supervisor is None else self._supervisor.statistics(),
            shutdown=self._report,
        )

    def __repr__(self) -> str:
        in_flight = sum(core.in_flight for core in self._handlers.values())
        return (
            f"<Runtime {self._state.value}: {len(self._handlers)} handlers, "
            f"{len(self._pools)} pools, {in_flight} calls in flight>"
        )


def _check_batch_function(fn: Callable[..., Any]) -> None:
    """A batch handler's function takes exactly one argument: the list of items."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # no signature to read: trust the caller
        return
    kind = inspect.Parameter
    required = [
        p
        for p in parameters
        if p.default is p.empty and p.kind not in (kind.VAR_POSITIONAL, kind.VAR_KEYWORD)
    ]
    positional = (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)
    if len(required) != 1 or required[0].kind not in positional:
        raise TypeError(
            f"@runtime.handler(batch=...) needs a function of one argument, the list of "
            f"items, not {getattr(fn, '__name__', fn)!r}{inspect.signature(fn)}"
        )


def _limiter_statistics(limiter: RateLimiter | RateLimiterBackend) -> Any:
    """A rate limiter's statistics: each backend's own dataclass."""
    return limiter.statistics() if hasattr(limiter, "statistics") else None


def _limiter_readings(limiter: RateLimiterBackend) -> dict[str, float]:
    """The numeric fields of a shared rate limiter's statistics (a metrics source)."""
    return _readings(functools.partial(_limiter_statistics, limiter))


def _readings(statistics: Callable[[], Any]) -> dict[str, float]:
    """The numeric fields of a statistics dataclass, as a metrics source reads them."""
    stats = statistics()
    if stats is None:
        return {}
    return {
        field.name: float(getattr(stats, field.name))
        for field in dataclasses.fields(stats)
        if isinstance(getattr(stats, field.name), int | float)
    }


def _log_report(report: ShutdownReport) -> None:
    """Say what the shutdown cut short: a warning when anything was, else a debug line."""
    if not report.unfinished:
        logger.debug("runtime stopped: every call finished (%.3f s)", report.duration)
        return

    def listing(counts: Mapping[str, int]) -> str:
        return ", ".join(f"{name}: {count}" for name, count in sorted(counts.items())) or "none"

    why = {
        "drain_timeout": "the drain timed out",
        "cancelled": "the runtime was closed at once",
    }.get(report.reason, report.reason)
    logger.warning(
        "runtime stopped after %.3f s and %s: %d queued call(s) dropped (%s), "
        "%d running call(s) cancelled (%s); their callers got Dropped (reason 'shutdown')",
        report.duration,
        why,
        sum(report.queued.values()),
        listing(report.queued),
        sum(report.running.values()),
        listing(report.running),
    )


def _supervise(runtime: Runtime) -> Supervisor | None:
    """The supervisor that sizes every pool of ``runtime`` (None without ``autoscale``)."""
    config = runtime.config
    if not config.autoscale:
        return None
    supervisor = Supervisor(
        clock=runtime.clock,
        interval=config.tick,
        max_restarts=config.max_restarts,
        restart_window=config.restart_window,
        max_events=config.max_events,
    )
    for name, pool in runtime.pools.items():
        policy = ScalingPolicy(
            # A pool may keep no idle worker; the policy never sizes one below 1.
            min_workers=max(1, pool.min_workers),
            max_workers=pool.max_workers,
            target_queue_delay=config.target_queue_delay,
            scale_up_step=config.scale_up_step,
            hold_down=config.hold_down,
            window=config.window,
            max_loop_lag=config.max_loop_lag,
            max_cpu=config.max_cpu,
        )
        supervisor.watch(pool, policy=policy, limiter=pool.limiter, name=name)
    return supervisor
