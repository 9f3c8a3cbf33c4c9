"""Layer 7: @runtime.handler: each outcome counted, admission, priorities, cache, retries, pools."""

from __future__ import annotations

import asyncio
import inspect
import random
import re
from collections.abc import Callable
from typing import Any

import pytest

from asyncperf._errors import (
    Dropped,
    DropReason,
    JobTimeout,
    RateLimited,
    Rejected,
    RuntimeNotRunning,
)
from asyncperf.queues import Backoff, RateLimiter
from asyncperf.runtime import HandlerStatistics, Runtime
from asyncperf.testing import VirtualClock, wait_until


def accounted(stats: HandlerStatistics) -> int:
    """The right side of the accounting identity: every call is in exactly one place."""
    return (
        stats.succeeded
        + stats.failed
        + stats.timed_out
        + stats.rejected
        + stats.dropped
        + stats.cancelled
        + stats.in_flight
    )


def settled(stats: HandlerStatistics) -> HandlerStatistics:
    """Assert every call ended in one counted outcome; return the stats for more checks."""
    assert stats.in_flight == 0
    assert stats.queued == stats.running == 0
    assert stats.calls == accounted(stats)
    return stats


class Gate:
    """A body that parks until released, recording who started and how many ran at once."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.started: list[Any] = []
        self.running = 0
        self.peak = 0

    async def wait(self, tag: Any = None) -> Any:
        self.started.append(tag)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.open.wait()
        finally:
            self.running -= 1
        return tag


def make_runtime(**options: Any) -> Runtime:
    """A runtime without the supervisor (these tests look at the call path, not scaling)."""
    options.setdefault("autoscale", False)
    return Runtime(**options)


# -- the decorated function ----------------------------------------------------------------


def test_signature_name_and_docstring_are_preserved() -> None:
    """inspect sees the original signature; name, docstring and module are kept."""
    runtime = make_runtime()

    async def complete(session_id: str, prompt: str, *, temperature: float = 0.5) -> str:
        """Answer the prompt."""
        return prompt

    handler = runtime.handler(priority=0)(complete)
    assert inspect.signature(handler) == inspect.signature(complete)
    assert handler.__name__ == "complete"
    assert handler.__doc__ == "Answer the prompt."
    assert handler.__wrapped__ is complete  # type: ignore[attr-defined]
    assert handler.handler_name == "complete"
    assert inspect.iscoroutinefunction(handler)
    assert runtime.handler(name="other")(complete).handler_name == "other"


def test_decorator_without_parentheses() -> None:
    """@runtime.handler works bare, with the defaults."""
    runtime = make_runtime()

    @runtime.handler
    async def ping() -> str:
        return "pong"

    stats = ping.statistics()
    assert (stats.name, stats.pool, stats.priority) == ("ping", "default", 1)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"priority": 3}, ValueError, "priority must be one of [0, 1, 2], not 3"),
        ({"priority": "high"}, TypeError, "priority must be an int, not str"),
        ({"timeout": 0}, ValueError, "timeout must be > 0, not 0"),
        ({"concurrency": 0}, ValueError, "concurrency must be >= 1, not 0"),
        ({"cache_ttl": -1}, ValueError, "cache_ttl must be > 0, not -1"),
        ({"retries": -1}, ValueError, "retries must be >= 0, not -1"),
        ({"burst": 0}, ValueError, "burst must be >= 1, not 0"),
        ({"deadline": 0}, ValueError, "deadline must be > 0, not 0"),
        ({"admission_timeout": -1}, ValueError, "admission_timeout must be >= 0, not -1"),
        ({"rate": "fast"}, ValueError, "cannot parse rate 'fast'"),
        (
            {"rate": 5},
            TypeError,
            "rate must be a str, a RateLimiter or a RateLimiterBackend, not int",
        ),
        ({"retry_on": ValueError("x")}, TypeError, "retry_on must be an exception type"),
        ({"backoff": 0.1}, TypeError, "backoff must be a Backoff, not float"),
        ({"pool": ""}, TypeError, "pool must be a non-empty str, not ''"),
        ({"cache_key": len}, ValueError, "cache_key needs cache_ttl"),
        ({"cache_ttl": 1.0, "cache_key": "k"}, TypeError, "cache_key must be callable, not str"),
        ({"cache_namespace": "chat"}, ValueError, "cache_namespace needs cache_ttl"),
        (
            {"cache_ttl": 1.0, "cache_namespace": ""},
            TypeError,
            "cache_namespace must be a non-empty str, not ''",
        ),
    ],
)
def test_bad_arguments_name_the_parameter(
    kwargs: dict[str, Any], error: type, message: str
) -> None:
    """Each bad argument is refused when decorating, the message naming it."""
    runtime = make_runtime()

    async def fn() -> None:
        return None

    with pytest.raises(error, match="^" + re.escape(message)):
        # Keyword arguments typed Any match several overloads: mypy cannot pick one.
        decorate: Callable[[Any], object] = runtime.handler(**kwargs)
        decorate(fn)


def test_only_async_functions_and_unique_names() -> None:
    """A plain function is refused; so is a second handler with a name already used."""
    runtime = make_runtime()

    def sync() -> None:
        return None

    with pytest.raises(TypeError, match=r"^@runtime\.handler needs an async function"):
        runtime.handler(sync)  # type: ignore[arg-type]

    async def job() -> None:
        return None

    runtime.handler(job)
    with pytest.raises(ValueError, match=r"^a handler named 'job' is already registered$"):
        runtime.handler(job)


# -- outside the runtime -------------------------------------------------------------------


async def test_a_call_outside_the_runtime_fails_clearly() -> None:
    """Before `async with` and after it a call raises RuntimeNotRunning (a RuntimeError)."""
    runtime = make_runtime()

    @runtime.handler
    async def ping() -> str:
        return "pong"

    with pytest.raises(RuntimeNotRunning, match=r"^ping\(\) was called before its runtime"):
        await ping()
    async with runtime:
        assert await ping() == "pong"
    with pytest.raises(RuntimeError, match=r"^ping\(\) was called after its runtime was closed"):
        await ping()
    stats = settled(ping.statistics())
    assert (stats.calls, stats.succeeded) == (1, 1)  # misuse is not a call


async def test_a_handler_needing_a_new_pool_after_start_is_refused() -> None:
    """Pools start with the runtime: a handler that would need a new one later is refused."""
    runtime = make_runtime()
    async with runtime:

        async def late() -> None:
            return None

        with pytest.raises(RuntimeError, match="needs a new pool 'late'"):
            runtime.handler(concurrency=2)(late)
        shared = runtime.handler(name="shared_late")(late)  # the default pool exists: fine
        await shared()
    with pytest.raises(RuntimeNotRunning, match="closed"):
        runtime.handler(name="later")(late)


# -- outcomes ------------------------------------------------------------------------------


async def test_success_returns_the_result_and_counts_it() -> None:
    """A call returns its body's result; it is counted once, with a latency."""
    runtime = make_runtime()

    @runtime.handler
    async def add(a: int, b: int = 1, *, times: int = 1) -> int:
        await asyncio.sleep(0)
        return (a + b) * times

    async with runtime:
        assert await add(1, 2) == 3
        assert await add(1, times=3) == 6
    stats = settled(add.statistics())
    assert (stats.calls, stats.succeeded) == (2, 2)
    assert stats.latency_p99 >= stats.latency_p50 >= 0.0
    assert runtime.statistics().pools["default"].completed == 2


async def test_the_handlers_own_exception_is_raised_unchanged() -> None:
    """The body's exception reaches the caller as the same object, counted as failed."""
    runtime = make_runtime()
    error = LookupError("no such session")

    @runtime.handler
    async def lookup() -> None:
        await asyncio.sleep(0)
        raise error

    async with runtime:
        with pytest.raises(LookupError) as caught:
            await lookup()
    assert caught.value is error
    stats = settled(lookup.statistics())
    assert (stats.calls, stats.failed) == (1, 1)


async def test_an_asyncperf_error_raised_by_the_body_is_its_own() -> None:
    """A Rejected raised by the body (say, by a nested handler) counts as failed, not rejected."""
    runtime = make_runtime()
    inner = Rejected("upstream refused", reason=DropReason.REJECTED)

    @runtime.handler
    async def outer() -> None:
        raise inner

    async with runtime:
        with pytest.raises(Rejected) as caught:
            await outer()
    assert caught.value is inner
    stats = settled(outer.statistics())
    assert (stats.failed, stats.rejected) == (1, 0)


@pytest.mark.virtual_time
async def test_a_body_past_its_timeout_raises_jobtimeout(clock: VirtualClock) -> None:
    """timeout= bounds the body: it is cancelled and the call raises JobTimeout."""
    runtime = make_runtime(clock=clock)
    cancelled = asyncio.Event()

    @runtime.handler(timeout=1.5)
    async def slow() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with runtime:
        start = clock.now()
        with pytest.raises(JobTimeout, match=re.escape("timeout of 1.5 s")):
            await slow()
        assert clock.now() - start == pytest.approx(1.5)
    assert cancelled.is_set()
    stats = settled(slow.statistics())
    assert (stats.calls, stats.timed_out) == (1, 1)


@pytest.mark.virtual_time
async def test_default_timeout_applies_when_the_handler_sets_none(clock: VirtualClock) -> None:
    """The config's default_timeout is the timeout of handlers that give none."""
    runtime = make_runtime(clock=clock, default_timeout=0.25)

    @runtime.handler
    async def slow() -> None:
        await asyncio.sleep(60)

    async with runtime:
        with pytest.raises(JobTimeout):
            await slow()
        assert clock.now() == pytest.approx(0.25)


@pytest.mark.virtual_time
async def test_rate_limit_refuses_at_once_what_it_could_not_admit_in_time(
    clock: VirtualClock,
) -> None:
    """A call the rate limit would admit only after the admission timeout is RateLimited now."""
    runtime = make_runtime(clock=clock)

    @runtime.handler(rate="2/s", admission_timeout=1.0)
    async def call(tag: int) -> float:
        return clock.now()

    async with runtime:
        tasks = [asyncio.create_task(call(i)) for i in range(4)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
    # One admitted at once, then one every 0.5 s while the wait is within 1.0 s.
    assert results[:3] == [pytest.approx(0.0), pytest.approx(0.5), pytest.approx(1.0)]
    refused = results[3]
    assert isinstance(refused, RateLimited)
    assert isinstance(refused, Rejected)
    assert refused.reason is DropReason.RATE_LIMITED
    assert refused.retry_after == pytest.approx(1.5)
    assert re.match(
        r"^call: rate limit 2/s reached; the next call is admitted in 1\.5 s", str(refused)
    )
    stats = settled(call.statistics())
    assert (stats.succeeded, stats.rejected) == (3, 1)
    assert stats.rejections == {"rate_limited": 1}
    assert runtime.statistics().rate_limiters["call"].admitted_calls == 3


@pytest.mark.virtual_time
async def test_rate_limit_with_no_admission_wait(clock: VirtualClock) -> None:
    """admission_timeout=0: whatever the limit cannot admit now is refused, time stands still."""
    runtime = make_runtime(clock=clock, admission_timeout=0.0)

    @runtime.handler(rate="60/min", burst=2)
    async def call() -> None:
        return None

    async with runtime:
        await call()
        await call()  # the burst
        with pytest.raises(RateLimited) as caught:
            await call()
        assert clock.now() == 0.0
        assert caught.value.retry_after == pytest.approx(1.0)
        await asyncio.sleep(1.0)
        await call()
    assert settled(call.statistics()).rejections == {"rate_limited": 1}


async def test_a_rate_limiter_can_be_shared_between_handlers() -> None:
    """rate=RateLimiter(...) puts several handlers under one limit."""
    runtime = make_runtime(admission_timeout=0.0)
    upstream = RateLimiter(1, 3600.0, burst=2)

    @runtime.handler(rate=upstream)
    async def first() -> None:
        return None

    @runtime.handler(rate=upstream)
    async def second() -> None:
        return None

    async with runtime:
        await first()
        await second()
        with pytest.raises(RateLimited):
            await first()
    assert upstream.statistics().admitted_calls == 2
    assert second.statistics().succeeded == 1


async def test_a_full_reject_level_refuses_the_call() -> None:
    """With overflow='reject' a call meeting a full level is Rejected (reason 'rejected')."""
    runtime = make_runtime(max_workers=1, max_pending=1, overflow="reject")
    gate = Gate()

    @runtime.handler
    async def hold(tag: int) -> Any:
        return await gate.wait(tag)

    async with runtime:
        running = asyncio.create_task(hold(0))
        await wait_until(lambda: gate.running == 1)
        queued = asyncio.create_task(hold(1))
        await wait_until(lambda: hold.statistics().queued == 1)
        with pytest.raises(Rejected, match="priority level 1 of pool 'default' is full") as caught:
            await hold(2)
        assert caught.value.reason is DropReason.REJECTED
        gate.open.set()
        assert list(await asyncio.gather(running, queued)) == [0, 1]
    stats = settled(hold.statistics())
    assert (stats.calls, stats.succeeded, stats.rejected) == (3, 2, 1)
    assert stats.rejections == {"rejected": 1}


@pytest.mark.virtual_time
async def test_a_full_block_level_waits_for_the_admission_timeout(clock: VirtualClock) -> None:
    """overflow='block': a call waits for room, up to admission_timeout, then is Rejected."""
    runtime = make_runtime(
        clock=clock, max_workers=1, max_pending=1, overflow="block", admission_timeout=0.5
    )
    gate = Gate()

    @runtime.handler
    async def hold(tag: int) -> Any:
        return await gate.wait(tag)

    async with runtime:
        running = asyncio.create_task(hold(0))
        queued = asyncio.create_task(hold(1))
        await wait_until(lambda: hold.statistics().queued == 1 and gate.running == 1)
        with pytest.raises(
            Rejected, match=re.escape("stayed full for the admission timeout of 0.5 s")
        ):
            await hold(2)
        assert clock.now() == pytest.approx(0.5)
        # Room that frees within the wait admits the call.
        waiting = asyncio.create_task(hold(3))
        await asyncio.sleep(0.2)
        gate.open.set()
        assert list(await asyncio.gather(running, queued, waiting)) == [0, 1, 3]
    stats = settled(hold.statistics())
    assert (stats.succeeded, stats.rejected) == (3, 1)


@pytest.mark.virtual_time
async def test_a_call_past_its_queue_deadline_is_dropped(clock: VirtualClock) -> None:
    """deadline=: a call still queued after it is Dropped (reason 'deadline') at that time."""
    runtime = make_runtime(clock=clock, max_workers=1)
    gate = Gate()

    @runtime.handler(deadline=0.5)
    async def hold(tag: int) -> Any:
        return await gate.wait(tag)

    async with runtime:
        running = asyncio.create_task(hold(0))
        await wait_until(lambda: gate.running == 1)
        with pytest.raises(Dropped) as caught:
            await hold(1)
        assert caught.value.reason is DropReason.DEADLINE
        assert clock.now() == pytest.approx(0.5, abs=0.02)
        gate.open.set()
        await running
    stats = settled(hold.statistics())
    assert (stats.succeeded, stats.dropped) == (1, 1)
    assert stats.drops == {"deadline": 1}
    assert gate.started == [0]  # the dropped call never ran


async def test_an_evicted_call_is_dropped() -> None:
    """overflow='drop_oldest': a newer call evicts the oldest queued one (reason 'evicted')."""
    runtime = make_runtime(max_workers=1, max_pending=1, overflow="drop_oldest")
    gate = Gate()

    @runtime.handler
    async def hold(tag: int) -> Any:
        return await gate.wait(tag)

    async with runtime:
        running = asyncio.create_task(hold(0))
        await wait_until(lambda: gate.running == 1)
        oldest = asyncio.create_task(hold(1))
        await wait_until(lambda: hold.statistics().queued == 1)
        newest = asyncio.create_task(hold(2))
        with pytest.raises(Dropped) as caught:
            await oldest
        assert caught.value.reason is DropReason.EVICTED
        gate.open.set()
        assert list(await asyncio.gather(running, newest)) == [0, 2]
    assert settled(hold.statistics()).drops == {"evicted": 1}


async def test_a_cancelled_caller_is_counted_and_its_job_removed() -> None:
    """Cancelling a caller cancels its call, queued or running; both count as cancelled."""
    runtime = make_runtime(max_workers=1)
    gate = Gate()

    @runtime.handler
    async def hold(tag: int) -> Any:
        return await gate.wait(tag)

    async with runtime:
        running = asyncio.create_task(hold(0))
        await wait_until(lambda: gate.running == 1)
        queued = asyncio.create_task(hold(1))
        await wait_until(lambda: hold.statistics().queued == 1)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert hold.statistics().queued == 0
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        gate.open.set()
        assert await hold(2) == 2
    stats = settled(hold.statistics())
    assert (stats.calls, stats.cancelled, stats.succeeded) == (3, 2, 1)
    assert gate.started == [0, 2]  # the queued call never ran
    assert runtime.statistics().pools["default"].cancelled == 2


async def test_calls_during_the_drain_are_rejected_and_counted() -> None:
    """Once the runtime drains, new calls are Rejected (reason 'shutdown'), not lost."""
    runtime = make_runtime()
    gate = Gate()

    @runtime.handler
    async def hold(tag: int) -> Any:
        return await gate.wait(tag)

    await runtime.__aenter__()
    running = asyncio.create_task(hold(0))
    await wait_until(lambda: gate.running == 1)
    closing = asyncio.create_task(runtime.drain())
    await wait_until(lambda: runtime.statistics().state == "draining")
    with pytest.raises(Rejected, match="shutting down") as caught:
        await hold(1)
    assert caught.value.reason is DropReason.SHUTDOWN
    gate.open.set()
    report = await closing
    assert await running == 0
    assert report.drained
    stats = settled(hold.statistics())
    assert (stats.calls, stats.succeeded, stats.rejected) == (2, 1, 1)
    assert stats.rejections == {"shutdown": 1}


# -- priorities and pools ------------------------------------------------------------------


async def test_priorities_order_a_shared_single_worker_pool() -> None:
    """Handlers of one single-worker pool run by priority level, not by arrival."""
    runtime = make_runtime()
    gate = Gate()
    ran: list[str] = []

    @runtime.handler(pool="shared", concurrency=1, priority=1)
    async def block() -> Any:
        return await gate.wait("block")

    @runtime.handler(pool="shared", priority=2)
    async def low(tag: str) -> None:
        ran.append(tag)

    @runtime.handler(pool="shared", priority=0)
    async def high(tag: str) -> None:
        ran.append(tag)

    async with runtime:
        blocker = asyncio.create_task(block())
        await wait_until(lambda: gate.running == 1)
        lows = [asyncio.create_task(low(f"low{i}")) for i in range(3)]
        await wait_until(lambda: low.statistics().queued == 3)
        highs = [asyncio.create_task(high(f"high{i}")) for i in range(3)]
        await wait_until(lambda: high.statistics().queued == 3)
        gate.open.set()
        await asyncio.gather(blocker, *lows, *highs)
    assert ran == ["high0", "high1", "high2", "low0", "low1", "low2"]
    assert set(runtime.pools) == {"default", "shared"}
    assert runtime.pools["shared"].max_workers == 1


async def test_own_pools_and_shared_pools() -> None:
    """concurrency=N gives a pool of its own; pool='name' shares one; each bound holds."""
    runtime = make_runtime(max_workers=8, pools={"io": {"max_workers": 3}})
    gates = {name: Gate() for name in ("own", "io", "default")}

    @runtime.handler(concurrency=2)
    async def own(tag: int) -> Any:
        return await gates["own"].wait(tag)

    @runtime.handler(pool="io")
    async def fetch(tag: int) -> Any:
        return await gates["io"].wait(tag)

    @runtime.handler(pool="io")
    async def store(tag: int) -> Any:
        return await gates["io"].wait(tag)

    @runtime.handler
    async def plain(tag: int) -> Any:
        return await gates["default"].wait(tag)

    assert own.statistics().pool == "own"
    assert fetch.statistics().pool == store.statistics().pool == "io"
    assert plain.statistics().pool == "default"
    assert runtime.pools["own"].max_workers == 2
    assert runtime.pools["io"].max_workers == 3
    assert runtime.pools["default"].max_workers == 8

    async with runtime:
        tasks = [asyncio.create_task(fn(i)) for fn in (own, fetch, store, plain) for i in range(5)]
        await wait_until(lambda: gates["own"].running == 2 and gates["io"].running == 3)
        await wait_until(lambda: gates["default"].running == 5)
        for gate in gates.values():
            gate.open.set()
        await asyncio.gather(*tasks)
    assert (gates["own"].peak, gates["io"].peak, gates["default"].peak) == (2, 3, 5)
    assert set(runtime.statistics().pools) == {"own", "io", "default"}


def test_pool_sizes_that_contradict_are_refused() -> None:
    """Two handlers asking one pool for different sizes, or a name clash, are refused."""
    runtime = make_runtime(pools={"io": {"max_workers": 3}})

    async def fn() -> None:
        return None

    runtime.handler(name="a", pool="shared", concurrency=2)(fn)
    with pytest.raises(ValueError, match="concurrency=4 in pool 'shared', which has max_workers=2"):
        runtime.handler(name="b", pool="shared", concurrency=4)(fn)
    with pytest.raises(ValueError, match=re.escape("which pools.io.max_workers sets to 3")):
        runtime.handler(name="c", pool="io", concurrency=4)(fn)
    with pytest.raises(ValueError, match="needs a pool of its own named 'shared'"):
        runtime.handler(name="shared", concurrency=2)(fn)


@pytest.mark.virtual_time
async def test_a_config_section_overrides_the_decorator(clock: VirtualClock) -> None:
    """[handlers.NAME] settings replace the decorator's arguments."""
    runtime = make_runtime(
        clock=clock, handlers={"slow": {"timeout": 0.5, "priority": 0, "concurrency": 2}}
    )

    @runtime.handler(timeout=30.0)
    async def slow() -> None:
        await asyncio.sleep(10)

    assert (slow.statistics().priority, runtime.pools["slow"].max_workers) == (0, 2)
    async with runtime:
        with pytest.raises(JobTimeout):
            await slow()
        assert clock.now() == pytest.approx(0.5)


# -- cache ---------------------------------------------------------------------------------


async def test_cache_hits_skip_the_body_and_misses_share_one_load() -> None:
    """cache_ttl=: concurrent calls with the same arguments run the body once (single-flight)."""
    runtime = make_runtime()
    gate = Gate()

    @runtime.handler(cache_ttl=60.0)
    async def lookup(key: str, upper: bool = True) -> str:
        await gate.wait(key)
        return key.upper() if upper else key

    async with runtime:
        tasks = [asyncio.create_task(lookup("a")) for _ in range(5)]
        await wait_until(lambda: runtime.cache.statistics().coalesced == 4)
        gate.open.set()
        assert await asyncio.gather(*tasks) == ["A"] * 5
        assert await lookup("a", True) == "A"  # the same key: bound arguments, defaults applied
        assert await lookup(key="a") == "A"
        assert await lookup("a", upper=False) == "a"  # another key: the body runs
    assert gate.started == ["a", "a"]
    stats = settled(lookup.statistics())
    assert (stats.calls, stats.succeeded, stats.cache_hits) == (8, 8, 6)
    assert runtime.statistics().pools["default"].submitted == 2


async def test_handlers_with_one_cache_namespace_share_results() -> None:
    """cache_namespace=: one body registered at two priorities answers from one cache entry;
    a handler without it keeps its own entries even for the same arguments."""
    runtime = make_runtime()
    runs: list[str] = []

    async def answer(prompt: str) -> str:
        runs.append(prompt)
        return prompt.upper()

    urgent = runtime.handler(name="urgent", priority=0, cache_ttl=60.0, cache_namespace="chat")(
        answer
    )
    batch = runtime.handler(name="batch", priority=2, cache_ttl=60.0, cache_namespace="chat")(
        answer
    )
    alone = runtime.handler(name="alone", cache_ttl=60.0)(answer)
    async with runtime:
        assert await urgent("hi") == "HI"
        assert await batch("hi") == "HI"  # urgent's entry: the body does not run again
        assert await alone("hi") == "HI"  # its own namespace: a miss
    assert runs == ["hi", "hi"]
    assert settled(batch.statistics()).cache_hits == 1
    assert settled(alone.statistics()).cache_hits == 0


@pytest.mark.virtual_time
async def test_cached_results_expire_after_their_ttl(clock: VirtualClock) -> None:
    """A cached result lives cache_ttl seconds on the runtime's clock."""
    runtime = make_runtime(clock=clock)
    runs: list[float] = []

    @runtime.handler(cache_ttl=10.0, cache_key=lambda user, _request_id: user)
    async def profile(user: str, _request_id: int) -> str:
        runs.append(clock.now())
        return f"profile of {user}"

    async with runtime:
        assert await profile("ann", 1) == "profile of ann"
        assert await profile("ann", 2) == "profile of ann"  # cache_key ignores the request id
        await asyncio.sleep(10.5)
        assert await profile("ann", 3) == "profile of ann"
    assert runs == [0.0, pytest.approx(10.5)]
    assert settled(profile.statistics()).cache_hits == 1


@pytest.mark.virtual_time
async def test_a_cancelled_callers_load_carries_on_and_fills_the_cache(
    clock: VirtualClock,
) -> None:
    """Cancelling the only caller of a cached handler leaves its load running: the result
    is cached for the next caller (the caller itself counts as cancelled)."""
    runtime = make_runtime(clock=clock)
    runs: list[float] = []

    @runtime.handler(cache_ttl=60.0)
    async def render(page: str) -> str:
        runs.append(clock.now())
        await asyncio.sleep(1.0)
        return page.upper()

    async with runtime:
        call = asyncio.create_task(render("home"))
        await asyncio.sleep(0.5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.sleep(1.0)
        assert await render("home") == "HOME"
    assert runs == [0.0]
    stats = settled(render.statistics())
    assert (stats.cancelled, stats.succeeded, stats.cache_hits) == (1, 1, 1)


@pytest.mark.virtual_time
@pytest.mark.allow_loop_errors
async def test_a_failed_load_nobody_waits_for_is_reported(
    clock: VirtualClock, loop_errors: list[dict[str, Any]]
) -> None:
    """If that orphan load then fails, the failure goes to the loop's exception handler."""
    runtime = make_runtime(clock=clock)

    @runtime.handler(cache_ttl=60.0, timeout=0.3)
    async def slow() -> None:
        await asyncio.sleep(1.0)

    async with runtime:
        call = asyncio.create_task(slow())
        await asyncio.sleep(0.1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.sleep(1.0)
    [report] = loop_errors
    assert "a load failed and no caller was waiting for it" in report["message"]
    assert isinstance(report["exception"], JobTimeout)
    assert settled(slow.statistics()).cancelled == 1


async def test_a_method_handler_binds_self_and_keys_without_it() -> None:
    """A handler defined in a class binds like a method; instances share cache entries."""
    runtime = make_runtime()
    runs: list[str] = []

    class Pages:
        def __init__(self, prefix: str) -> None:
            self.prefix = prefix

        @runtime.handler(cache_ttl=60.0)
        async def render(self, page: str) -> str:
            runs.append(page)
            return self.prefix + page

    async with runtime:
        assert await Pages("/").render("home") == "/home"
        assert await Pages("~").render("home") == "/home"  # the same key: self is left out
        assert await Pages("~").render("about") == "~about"
    assert runs == ["home", "about"]


async def test_a_failed_load_is_not_cached() -> None:
    """An exception is not cached: the next call runs the body again."""
    runtime = make_runtime()
    failures = [ValueError("first")]

    @runtime.handler(cache_ttl=60.0)
    async def load(key: int) -> int:
        if failures:
            raise failures.pop()
        return key

    async with runtime:
        with pytest.raises(ValueError, match="first"):
            await load(1)
        assert await load(1) == 1
    stats = settled(load.statistics())
    assert (stats.failed, stats.succeeded, stats.cache_hits) == (1, 1, 0)


async def test_unhashable_arguments_of_a_cached_handler_fail_clearly() -> None:
    """A cached handler's arguments must make a key; the error names the argument."""
    runtime = make_runtime()

    @runtime.handler(cache_ttl=1.0)
    async def total(values: list[int]) -> int:
        return sum(values)

    async with runtime:
        with pytest.raises(TypeError, match=r"argument 'values' .* is unhashable"):
            await total([1, 2])
    assert settled(total.statistics()).failed == 1


# -- retries -------------------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_retries_wait_the_backoff_on_the_clock(clock: VirtualClock) -> None:
    """A retry_on error is retried after the backoff delay: 0.1 s, then 0.2 s."""
    runtime = make_runtime(clock=clock)
    attempts: list[float] = []

    @runtime.handler(retries=3, backoff=Backoff(initial=0.1, multiplier=2.0, jitter=0.0))
    async def flaky() -> str:
        attempts.append(clock.now())
        if len(attempts) < 3:
            raise ConnectionError("upstream reset")
        return "ok"

    async with runtime:
        assert await flaky() == "ok"
    assert attempts == [0.0, pytest.approx(0.1), pytest.approx(0.3)]
    stats = settled(flaky.statistics())
    assert (stats.calls, stats.succeeded, stats.retries) == (1, 1, 2)
    assert runtime.statistics().pools["default"].submitted == 3  # each attempt is a job


@pytest.mark.virtual_time
async def test_exhausted_retries_raise_the_last_error(clock: VirtualClock) -> None:
    """After `retries` retries the last error is raised, unchanged, and counted as failed."""
    runtime = make_runtime(clock=clock)
    errors: list[ConnectionError] = []

    @runtime.handler(retries=2, backoff=Backoff(initial=1.0, jitter=0.0))
    async def down() -> None:
        errors.append(ConnectionError(f"attempt {len(errors) + 1}"))
        raise errors[-1]

    async with runtime:
        with pytest.raises(ConnectionError) as caught:
            await down()
    assert caught.value is errors[-1]
    assert len(errors) == 3
    assert clock.now() == pytest.approx(3.0)  # 1 s, then 2 s of backoff
    stats = settled(down.statistics())
    assert (stats.failed, stats.retries) == (1, 2)


@pytest.mark.virtual_time
async def test_only_retry_on_errors_are_retried(clock: VirtualClock) -> None:
    """Other errors are raised at once; with retries=0 nothing is retried by default."""
    runtime = make_runtime(clock=clock)
    calls = {"wrong": 0, "once": 0}

    @runtime.handler(retries=3, retry_on=KeyError)
    async def wrong() -> None:
        calls["wrong"] += 1
        raise ConnectionError("not a KeyError")

    @runtime.handler
    async def once() -> None:
        calls["once"] += 1
        raise ConnectionError("no retries configured")

    async with runtime:
        with pytest.raises(ConnectionError):
            await wrong()
        with pytest.raises(ConnectionError):
            await once()
    assert calls == {"wrong": 1, "once": 1}
    assert wrong.statistics().retries == once.statistics().retries == 0


@pytest.mark.virtual_time
async def test_a_timed_out_attempt_is_retried(clock: VirtualClock) -> None:
    """JobTimeout is a TimeoutError, so the default retry_on retries it; then it is counted."""
    runtime = make_runtime(clock=clock)

    @runtime.handler(timeout=1.0, retries=1, backoff=Backoff(initial=0.5, jitter=0.0))
    async def stuck() -> None:
        await asyncio.sleep(60)

    async with runtime:
        with pytest.raises(JobTimeout):
            await stuck()
        assert clock.now() == pytest.approx(2.5)
    stats = settled(stuck.statistics())
    assert (stats.timed_out, stats.retries) == (1, 1)


# -- shutdown ------------------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_shutdown_drains_then_drops_and_cancels_and_reports(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Leaving `async with` waits drain_timeout, then drops queued calls, cancels running ones,
    and reports both (statistics and a warning); every caller hears Dropped('shutdown')."""
    runtime = make_runtime(clock=clock, max_workers=1, drain_timeout=2.0)

    @runtime.handler
    async def work(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    tasks: list[asyncio.Task[float]] = []
    with caplog.at_level("WARNING", logger="asyncperf.runtime"):
        async with runtime:
            tasks.append(asyncio.create_task(work(60)))
            await wait_until(lambda: work.statistics().running == 1)
            tasks += [asyncio.create_task(work(0.1)) for _ in range(2)]
            await wait_until(lambda: work.statistics().queued == 2)
    assert clock.now() == pytest.approx(2.0)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, Dropped) and r.reason is DropReason.SHUTDOWN for r in results)
    assert "cancelled while running" in str(results[0])
    report = runtime.statistics().shutdown
    assert report is not None
    assert (report.drained, report.reason) == (False, "drain_timeout")
    assert (dict(report.queued), dict(report.running)) == ({"work": 2}, {"work": 1})
    assert dict(report.pending) == {"default": 2}
    assert report.unfinished == 3
    assert report.duration == pytest.approx(2.0)
    stats = settled(work.statistics())
    assert (stats.calls, stats.dropped, stats.drops) == (3, 3, {"shutdown": 3})
    [record] = [r for r in caplog.records if r.name == "asyncperf.runtime"]
    assert record.levelname == "WARNING"
    assert "2 queued call(s) dropped (work: 2)" in record.getMessage()
    assert "1 running call(s) cancelled (work: 1)" in record.getMessage()


@pytest.mark.virtual_time
async def test_shutdown_within_the_deadline_finishes_everything(clock: VirtualClock) -> None:
    """Queued and running calls that finish within drain_timeout complete normally."""
    runtime = make_runtime(clock=clock, max_workers=1, drain_timeout=5.0)

    @runtime.handler
    async def work(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    async with runtime:
        tasks = [asyncio.create_task(work(1.0)) for _ in range(3)]
        await wait_until(lambda: work.statistics().queued == 2)
    assert await asyncio.gather(*tasks) == [1.0, 1.0, 1.0]
    assert clock.now() == pytest.approx(3.0)
    report = runtime.statistics().shutdown
    assert report is not None
    assert report.drained
    assert report.unfinished == 0
    assert settled(work.statistics()).succeeded == 3


# -- accounting under a mixed load ---------------------------------------------------------


@pytest.mark.virtual_time
@pytest.mark.parametrize("seed", range(8))
async def test_every_call_has_exactly_one_counted_outcome(clock: VirtualClock, seed: int) -> None:
    """Under overload with every kind of outcome, calls == the sum of the outcomes."""
    rng = random.Random(seed)
    runtime = make_runtime(
        clock=clock,
        max_workers=3,
        max_pending=4,
        overflow="drop_oldest",
        admission_timeout=0.2,
        drain_timeout=0.5,
    )

    @runtime.handler(timeout=0.3, rate="50/s", burst=5, deadline=0.4, cache_ttl=0.5)
    async def mixed(kind: str, tag: int) -> str:
        await asyncio.sleep(rng.uniform(0.0, 0.4))
        if kind == "fail":
            raise ValueError(tag)
        return kind

    async def caller(index: int) -> None:
        await asyncio.sleep(rng.uniform(0.0, 2.0))
        kind = rng.choice(["ok", "ok", "fail", "cached"])
        call = asyncio.create_task(mixed(kind, 0 if kind == "cached" else index))
        if rng.random() < 0.1:
            await asyncio.sleep(rng.uniform(0.0, 0.2))
            call.cancel()
        try:
            await call
        except (asyncio.CancelledError, Exception):
            pass

    async with runtime:
        await asyncio.gather(*(caller(i) for i in range(200)))
        # Some calls still in flight when the runtime stops.
        leftovers = [asyncio.create_task(mixed("ok", 1000 + i)) for i in range(6)]
        await wait_until(lambda: mixed.statistics().calls == 206)
    await asyncio.gather(*leftovers, return_exceptions=True)
    stats = settled(mixed.statistics())
    assert stats.calls == 206
    outcomes = [stats.succeeded, stats.failed, stats.timed_out, stats.rejected, stats.dropped]
    assert sum(1 for count in outcomes if count) >= 4  # the load produced most kinds
    assert stats.rejected == sum(stats.rejections.values())
    assert stats.dropped == sum(stats.drops.values())
