"""A handler: one decorated async function and the path each of its calls takes."""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, Self, TypeVar, overload

from asyncperf._errors import (
    BackendUnavailable,
    BatchFailed,
    CacheClosed,
    Dropped,
    DropReason,
    JobTimeout,
    PoolClosed,
    QueueFull,
    RateLimited,
    Rejected,
)
from asyncperf._samples import LatencySamples
from asyncperf.abc import RateLimiterBackend, SemaphoreBackend
from asyncperf.io import Batcher
from asyncperf.queues import Backoff, RateLimiter
from asyncperf.workers import WorkerPool

if TYPE_CHECKING:
    from asyncperf.runtime._runtime import Runtime

__all__ = ["Handler", "HandlerStatistics"]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R_co = TypeVar("R_co", covariant=True)
S = TypeVar("S")

#: The key of a refusal by the handler's rate limit in ``HandlerStatistics.rejections``.
RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class HandlerStatistics:
    """A snapshot of one handler's calls.

    Every call counted in ``calls`` ends in exactly one outcome, so
    ``calls == succeeded + failed + timed_out + rejected + dropped + cancelled + in_flight``.
    ``cache_hits`` are successful calls answered without running the body for
    them (a cached value, or a load another call of the same key ran);
    ``retries`` are extra attempts. ``queued`` and ``running`` split the calls
    in flight that are in a pool. Latencies are from the call to its result,
    over the last 1,024 successful calls, in seconds.

    Attributes:
        rejections: ``rejected`` by reason: ``rate_limited``, or a
            :class:`~asyncperf.DropReason` value (``rejected``: a full queue
            level; ``shutdown``: the runtime was draining;
            ``backend_unavailable``: a shared limit could not reach Redis and
            fails closed).
        drops: ``dropped`` by :class:`~asyncperf.DropReason` value.
    """

    name: str
    pool: str
    priority: int
    calls: int
    succeeded: int
    failed: int
    timed_out: int
    rejected: int
    dropped: int
    cancelled: int
    in_flight: int
    queued: int
    running: int
    cache_hits: int
    retries: int
    latency_p50: float
    latency_p99: float
    rejections: Mapping[str, int]
    drops: Mapping[str, int]


class Handler(Protocol[P, R_co]):
    """What ``@runtime.handler`` returns: the async function, same signature and types,
    whose calls go through the runtime; plus its name and :meth:`statistics`."""

    __name__: str

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co]: ...

    @property
    def handler_name(self) -> str:
        """The name the handler is registered and counted under."""
        ...

    def statistics(self) -> HandlerStatistics:
        """A snapshot of this handler's calls (as in ``runtime.statistics().handlers``)."""
        ...

    # Typing only: accessed on an instance, a method loses its first parameter.
    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(
        self: Handler[Concatenate[S, P2], R_co], instance: S, owner: type[Any] | None = None
    ) -> Handler[P2, R_co]: ...


def _rate_text(limiter: RateLimiter | RateLimiterBackend) -> str:
    """``300/min``, ``5/s``, ``100/h``, or ``2/30s``: a rate as users write it."""
    unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(limiter.per, f"{limiter.per:g}s")
    return f"{limiter.rate:g}/{unit}"


class _CallRecord:
    """One call's trace through its attempts: what tells its outcomes apart."""

    __slots__ = ("error", "loaded", "started")

    def __init__(self) -> None:
        # The exception the body raised in the last attempt: the handler's own
        # exception is told from the runtime's (a JobTimeout, Rejected, Dropped
        # the body itself raised counts as `failed`) by identity.
        self.error: BaseException | None = None
        # This call ran its attempts (False: the cache, or another call's load, answered).
        self.loaded = False
        # The current attempt's job was taken by a worker (else it is queued).
        self.started = False


class HandlerCore:
    """The settings, counters and call path of one handler (the wrapper calls :meth:`call`)."""

    __slots__ = (
        "_admission_timeout",
        "_backoff",
        "_batcher",
        "_cache_hits",
        "_cache_ttl",
        "_calls",
        "_cancelled",
        "_deadline",
        "_dropped",
        "_drops",
        "_failed",
        "_fn",
        "_global",
        "_in_flight",
        "_key_skip",
        "_latency",
        "_make_key",
        "_now",
        "_pool",
        "_priority",
        "_queued",
        "_rate",
        "_rate_text",
        "_rejected",
        "_rejections",
        "_retried",
        "_retries",
        "_retry_on",
        "_running",
        "_runtime",
        "_shared_rate",
        "_sleep",
        "_succeeded",
        "_timed_out",
        "_timeout",
        "name",
    )

    def __init__(
        self,
        runtime: Runtime,
        fn: Callable[..., Coroutine[Any, Any, Any]],
        *,
        name: str,
        pool: WorkerPool,
        priority: int,
        timeout: float | None,
        deadline: float | None,
        admission_timeout: float,
        cache_ttl: float | None,
        make_key: Callable[[tuple[Any, ...], dict[str, Any]], Hashable] | None,
        key_skip: int,
        rate: RateLimiter | RateLimiterBackend | None,
        global_limit: SemaphoreBackend | None,
        retries: int,
        retry_on: tuple[type[BaseException], ...],
        backoff: Backoff,
        batch_size: int | None = None,
        batch_delay: float = 0.005,
    ) -> None:
        self._runtime = runtime
        self._fn = fn
        self.name = name
        self._pool = pool
        self._priority = priority
        self._timeout = timeout
        self._deadline = deadline
        self._admission_timeout = admission_timeout
        self._cache_ttl = cache_ttl
        self._make_key = make_key
        self._key_skip = key_skip
        # An in-process RateLimiter answers without awaiting (the hot path); a
        # shared one (Redis) answers over the network.
        self._rate = rate if isinstance(rate, RateLimiter) else None
        self._shared_rate = None if isinstance(rate, RateLimiter) else rate
        self._rate_text = "" if rate is None else _rate_text(rate)
        self._global = global_limit
        # A batch handler's calls (one item each) meet in the batcher; each batch
        # it sends takes the call path below as one call of the function.
        self._batcher: Batcher[Any, Any] | None = None
        if batch_size is not None:
            self._batcher = Batcher(
                self._run_batch,
                max_size=batch_size,
                max_delay=batch_delay,
                # As many batches in flight as the pool has workers: more would only queue.
                max_concurrency=pool.max_workers,
                clock=runtime.clock,
                name=f"{name}.batch",
            )
        self._retries = retries
        self._retry_on = retry_on
        self._backoff = backoff
        clock = runtime.clock
        self._now = clock.now
        self._sleep = clock.sleep
        self._calls = 0
        self._succeeded = 0
        self._failed = 0
        self._timed_out = 0
        self._rejected = 0
        self._dropped = 0
        self._cancelled = 0
        self._in_flight = 0
        self._queued = 0
        self._running = 0
        self._cache_hits = 0
        self._retried = 0
        self._rejections: dict[str, int] = {}
        self._drops: dict[str, int] = {}
        # Latency percentiles come from the last 1,024 successful calls.
        self._latency = LatencySamples()

    @property
    def pool(self) -> WorkerPool:
        return self._pool

    @property
    def rate_limiter(self) -> RateLimiter | RateLimiterBackend | None:
        return self._rate if self._rate is not None else self._shared_rate

    @property
    def batcher(self) -> Batcher[Any, Any] | None:
        """The batcher of a ``batch=`` handler (None for the others)."""
        return self._batcher

    @property
    def global_limit(self) -> SemaphoreBackend | None:
        """The ``global_concurrency`` limit (shared by every process on a Redis backend)."""
        return self._global

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def running(self) -> int:
        return self._running

    # -- the call path ------------------------------------------------------------

    async def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One call: cache → (admission → queue → worker → body), retried as configured."""
        runtime = self._runtime
        if not runtime._accepting:
            refusal = runtime._refusal(self.name, self._priority)
            if isinstance(refusal, Rejected):  # draining: a refusal users are told about
                self._calls += 1
                self._count_rejected(refusal)
            raise refusal
        self._calls += 1
        self._in_flight += 1
        started = self._now()
        record = _CallRecord()
        try:
            if self._cache_ttl is None or self._make_key is None:
                result = await self._attempts(args, kwargs, record)
            else:
                # The cache comes first: a hit costs no rate token and no worker, and
                # concurrent misses of one key share one load (and one job).
                key = self._make_key(args[self._key_skip :], kwargs)
                loader: Callable[[], Awaitable[Any]]
                loader = functools.partial(self._attempts, args, kwargs, record)
                shared = runtime._shared_cache
                if shared is not None:
                    # One load per key across the processes sharing the backend too.
                    loader = shared.shared_loader(key, loader, self._cache_ttl)
                result = await runtime.cache.get_or_load(key, loader, self._cache_ttl)
                if not record.loaded:
                    self._cache_hits += 1
        except BaseException as exc:
            self._in_flight -= 1
            own, record.error = record.error, None
            replacement = self._count_error(exc, own)
            if replacement is not None:
                raise replacement from exc
            raise
        self._in_flight -= 1
        self._succeeded += 1
        self._latency.add(self._now() - started)
        return result

    async def _attempts(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], record: _CallRecord
    ) -> Any:
        """The first attempt and the retries: a ``retry_on`` error waits the backoff and retries."""
        record.loaded = True
        if self._batcher is not None:
            return await self._batcher.submit(args[0])
        return await self._retried_attempts(args, kwargs, record, flushing=False)

    async def _run_batch(self, items: list[Any]) -> Any:
        """One batch of a ``batch=`` handler: one call of the function with the items."""
        return await self._retried_attempts((items,), {}, _CallRecord(), flushing=True)

    async def _retried_attempts(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], record: _CallRecord, *, flushing: bool
    ) -> Any:
        attempt = 1
        while True:
            try:
                return await self._attempt(args, kwargs, record, flushing=flushing)
            except self._retry_on as exc:
                if (
                    attempt > self._retries
                    or not isinstance(exc, Exception)
                    or not self._runtime._accepting
                ):
                    raise
                delay = self._backoff.delay(attempt, random.random())
            # Sleep outside the except block: the next error must not chain this one.
            self._retried += 1
            await self._sleep(delay)
            attempt += 1

    async def _attempt(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        record: _CallRecord,
        *,
        flushing: bool = False,
    ) -> Any:
        """One attempt: admission (rate limit, room in the queue), the job, its outcome.

        ``flushing``: a batch of calls accepted earlier, which the drain still runs.
        """
        runtime = self._runtime
        # A retry, or a cache load, that outlived the runtime (batches of accepted
        # calls are flushed while the runtime drains).
        if not runtime._accepting and not (flushing and runtime._is_draining()):
            raise runtime._shutdown_rejection(self.name, self._priority)
        budget = self._admission_timeout
        if self._rate is not None:
            budget = await self._admit_rate(budget)
        elif self._shared_rate is not None:
            budget = await self._admit_shared_rate(budget)
        pool = self._pool
        record.started = False
        record.error = None
        try:
            if budget > 0 and pool.queue.full(self._priority):
                # Only a full level makes submit wait (BLOCK): bound that wait. The
                # timer is armed only here, not on every call.
                async with asyncio.timeout(budget):
                    job = await pool.submit(
                        self._run,
                        args,
                        kwargs,
                        record,
                        priority=self._priority,
                        timeout=self._timeout,
                        deadline=self._deadline,
                    )
            else:
                job = pool.submit_nowait(
                    self._run,
                    args,
                    kwargs,
                    record,
                    priority=self._priority,
                    timeout=self._timeout,
                    deadline=self._deadline,
                )
        except PoolClosed as exc:
            if pool.failure is None:
                raise runtime._shutdown_rejection(self.name, self._priority) from None
            # The supervisor failed the pool (its workers kept crashing): say so.
            raise Rejected(
                f"{self.name}: pool {pool.name!r} has failed and admits no calls: {pool.failure}",
                reason=DropReason.SHUTDOWN,
                priority=self._priority,
            ) from exc
        except Rejected as exc:
            # The queue's refusal, told in the handler's terms (the queue's is the cause).
            raise Rejected(
                f"{self.name}: priority level {self._priority} of pool {pool.name!r} is full "
                f"and rejects new calls",
                reason=exc.reason,
                priority=self._priority,
            ) from exc
        except QueueFull:
            raise Rejected(
                f"{self.name}: priority level {self._priority} of pool {pool.name!r} is full",
                reason=DropReason.REJECTED,
                priority=self._priority,
            ) from None
        except TimeoutError:
            raise Rejected(
                f"{self.name}: priority level {self._priority} of pool {pool.name!r} stayed "
                f"full for the admission timeout of {budget:g} s",
                reason=DropReason.REJECTED,
                priority=self._priority,
            ) from None
        self._queued += 1
        try:
            return await job
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if runtime._is_accepting() or (task is not None and task.cancelling()):
                raise
            # Not this caller's cancellation: the runtime cancelled the job when its
            # drain timed out. The caller is told so, not handed a stray cancellation.
            raise Dropped(
                f"{self.name}: cancelled while running, as the runtime shut down "
                f"(drain_timeout {runtime.config.drain_timeout:g} s)",
                reason=DropReason.SHUTDOWN,
                priority=self._priority,
            ) from None
        finally:
            if not record.started:
                self._queued -= 1

    async def _admit_rate(self, budget: float) -> float:
        """Wait for the rate limit, or refuse at once if the wait would exceed ``budget``.

        GCRA knows the exact wait up front, so a call that could not be admitted
        in time is refused without waiting. Returns what is left of the budget.
        """
        limiter = self._rate
        assert limiter is not None  # only called for handlers with a rate
        wait = limiter.time_to_wait(1)
        if wait > budget:
            raise RateLimited(
                f"{self.name}: rate limit {self._rate_text} reached; the next call is "
                f"admitted in {wait:.3g} s, beyond the admission timeout of {budget:g} s",
                retry_after=wait,
                priority=self._priority,
            )
        if not wait:
            await limiter.acquire()  # returns at once, without yielding
            return budget
        before = self._now()
        await limiter.acquire()
        return max(0.0, budget - (self._now() - before))

    async def _admit_shared_rate(self, budget: float) -> float:
        """:meth:`_admit_rate` for a shared limiter: one round trip when a token is free.

        A limiter that cannot reach its backend and fails closed refuses the
        call (:class:`Rejected`, reason ``backend_unavailable``).
        """
        limiter = self._shared_rate
        assert limiter is not None  # only called for handlers with a shared rate
        try:
            if await limiter.try_acquire(1):
                return budget
            wait = await limiter.time_to_wait(1)
            if wait > budget:
                raise RateLimited(
                    f"{self.name}: shared rate limit {self._rate_text} reached; the next call "
                    f"is admitted in {wait:.3g} s, beyond the admission timeout of {budget:g} s",
                    retry_after=wait,
                    priority=self._priority,
                )
            before = self._now()
            await limiter.acquire()
        except BackendUnavailable as exc:
            raise self._unavailable("rate limit", exc) from exc
        return max(0.0, budget - (self._now() - before))

    def _unavailable(self, what: str, exc: BackendUnavailable) -> Rejected:
        return Rejected(
            f"{self.name}: its shared {what} cannot reach the backend, and fails closed: {exc}",
            reason=DropReason.BACKEND_UNAVAILABLE,
            priority=self._priority,
        )

    async def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any], record: _CallRecord) -> Any:
        """The job a worker runs: the body (in a slot of its ``global_concurrency`` limit)."""
        record.started = True
        self._queued -= 1
        self._running += 1
        try:
            if self._global is None:
                try:
                    return await self._fn(*args, **kwargs)
                except BaseException as exc:
                    record.error = exc
                    raise
            return await self._run_in_slot(self._global, args, kwargs, record)
        finally:
            self._running -= 1

    async def _run_in_slot(
        self,
        limit: SemaphoreBackend,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        record: _CallRecord,
    ) -> Any:
        """Hold a slot of the global limit while the body runs. The wait for it is
        part of the job, so the handler's ``timeout`` bounds it too."""
        try:
            token = await limit.acquire()
        except BackendUnavailable as exc:
            raise self._unavailable("concurrency limit", exc) from exc
        try:
            return await self._fn(*args, **kwargs)
        except BaseException as exc:
            record.error = exc
            raise
        finally:
            await limit.release(token)

    # -- counting -----------------------------------------------------------------

    def _count_error(self, exc: BaseException, own: BaseException | None) -> BaseException | None:
        """Count a call that raised; returns the exception to raise instead, if any."""
        if isinstance(exc, BatchFailed) and isinstance(
            exc.__cause__, Rejected | Dropped | JobTimeout
        ):
            # The item's batch was refused, shed or timed out as one call: count the
            # item as that (the caller still gets BatchFailed, with the cause).
            exc = exc.__cause__
        if exc is own:
            self._failed += 1
        elif isinstance(exc, asyncio.CancelledError):
            self._cancelled += 1
        elif isinstance(exc, JobTimeout):
            self._timed_out += 1
        elif isinstance(exc, Rejected):
            self._count_rejected(exc)
        elif isinstance(exc, Dropped):
            self._count_dropped(exc.reason)
        elif isinstance(exc, CacheClosed) and not self._runtime._accepting:
            # The cache closed under a load at shutdown: the call was not served.
            self._count_dropped(DropReason.SHUTDOWN)
            return Dropped(
                f"{self.name}: the runtime shut down while the call was loading",
                reason=DropReason.SHUTDOWN,
                priority=self._priority,
            )
        else:
            self._failed += 1
        return None

    def _count_rejected(self, exc: Rejected) -> None:
        self._rejected += 1
        key = RATE_LIMITED if isinstance(exc, RateLimited) else exc.reason.value
        self._rejections[key] = self._rejections.get(key, 0) + 1

    def _count_dropped(self, reason: DropReason) -> None:
        self._dropped += 1
        self._drops[reason.value] = self._drops.get(reason.value, 0) + 1

    def statistics(self) -> HandlerStatistics:
        """A frozen snapshot of the handler's counters and latencies."""
        p50, p99 = self._latency.percentiles()
        return HandlerStatistics(
            name=self.name,
            pool=self._pool.name,
            priority=self._priority,
            calls=self._calls,
            succeeded=self._succeeded,
            failed=self._failed,
            timed_out=self._timed_out,
            rejected=self._rejected,
            dropped=self._dropped,
            cancelled=self._cancelled,
            in_flight=self._in_flight,
            queued=self._queued,
            running=self._running,
            cache_hits=self._cache_hits,
            retries=self._retried,
            latency_p50=p50 if p50 is not None else 0.0,  # 0.0 before the first call ends
            latency_p99=p99 if p99 is not None else 0.0,
            rejections=dict(self._rejections),
            drops=dict(self._drops),
        )

    def __repr__(self) -> str:
        return (
            f"<Handler {self.name} on {self._pool.name}: {self._in_flight} in flight, "
            f"{self._calls} calls>"
        )
