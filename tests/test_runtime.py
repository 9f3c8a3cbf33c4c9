"""Layer 7: Runtime: lifecycle and its order, shutdown, statistics, cache, supervisor wiring."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from asyncperf._errors import Dropped, DropReason, PoolFailed, Rejected
from asyncperf.loop import loop_name
from asyncperf.queues import AdaptiveLimiter
from asyncperf.runtime import Runtime, RuntimeStatistics
from asyncperf.supervisor import Supervisor
from asyncperf.testing import VirtualClock, wait_until


def spy(
    monkeypatch: pytest.MonkeyPatch, owner: object, method: str, label: str, log: list[str]
) -> None:
    """Record in ``log`` each call of the async ``owner.method`` (an instance or a class)."""
    original: Callable[..., Awaitable[Any]] = getattr(owner, method)

    async def recorded(*args: Any, **kwargs: Any) -> Any:
        log.append(label)
        return await original(*args, **kwargs)

    monkeypatch.setattr(owner, method, recorded)


def cache_closed(runtime: Runtime) -> bool:
    """Whether the runtime's cache is closed (read through a call: it changes across awaits)."""
    return runtime.cache.closed


# -- lifecycle -----------------------------------------------------------------------------


async def test_parts_start_in_order_and_stop_in_reverse(monkeypatch: pytest.MonkeyPatch) -> None:
    """async with: cache, pools, supervisor; leaving: supervisor, pools (drained), cache."""
    runtime = Runtime(pools={"io": {"max_workers": 2}})

    @runtime.handler(pool="io")
    async def fetch() -> str:
        return "page"

    log: list[str] = []
    spy(monkeypatch, runtime.cache, "__aenter__", "cache open", log)
    spy(monkeypatch, runtime.cache, "aclose", "cache close", log)
    for name, pool in runtime.pools.items():
        spy(monkeypatch, pool, "__aenter__", f"{name} start", log)
        spy(monkeypatch, pool, "drain", f"{name} drain", log)
        spy(monkeypatch, pool, "__aexit__", f"{name} stop", log)
    spy(monkeypatch, Supervisor, "__aenter__", "supervisor start", log)
    spy(monkeypatch, Supervisor, "__aexit__", "supervisor stop", log)

    async with runtime:
        assert log == ["cache open", "default start", "io start", "supervisor start"]
        assert await fetch() == "page"
        assert not cache_closed(runtime)
        assert all(pool.running for pool in runtime.pools.values())
    stopping = log[4:]
    assert stopping[0] == "supervisor stop"
    assert stopping[1:3] == ["default drain", "io drain"]  # drained together, one deadline
    pool_stops = [entry for entry in stopping if entry in ("default stop", "io stop")]
    assert pool_stops == ["io stop", "default stop"]  # the reverse of the start
    assert stopping[-1] == "cache close"
    assert cache_closed(runtime)
    assert not any(pool.running for pool in runtime.pools.values())


async def test_a_runtime_is_entered_once() -> None:
    """A second `async with` (also after aclose) is refused: make a new runtime."""
    runtime = Runtime(autoscale=False)
    async with runtime:
        pass
    with pytest.raises(RuntimeError, match=r"^A Runtime can be entered only once"):
        async with runtime:
            pass
    closed = Runtime(autoscale=False)
    report = await closed.aclose()
    assert report.drained
    with pytest.raises(RuntimeError, match=r"^A Runtime can be entered only once"):
        async with closed:
            pass


async def test_shutdown_is_idempotent() -> None:
    """drain() and aclose() after a shutdown return its report; nothing runs twice."""
    runtime = Runtime(autoscale=False)
    async with runtime:
        pass
    first = runtime.statistics().shutdown
    assert first is not None
    assert await runtime.drain() is first
    assert await runtime.aclose() is first
    with pytest.raises(ValueError, match=r"^timeout must be > 0, not 0$"):
        await runtime.drain(timeout=0)


async def test_concurrent_shutdowns_share_one() -> None:
    """A drain() while another is in progress waits for it and returns the same report."""
    runtime = Runtime(autoscale=False)
    gate = asyncio.Event()

    @runtime.handler
    async def hold() -> None:
        await gate.wait()

    await runtime.__aenter__()
    call = asyncio.create_task(hold())
    await wait_until(lambda: hold.statistics().running == 1)
    first = asyncio.create_task(runtime.drain())
    second = asyncio.create_task(runtime.aclose())
    await wait_until(lambda: runtime.statistics().state == "draining")
    assert not second.done()
    gate.set()
    assert await first is await second
    await call


async def test_leaving_with_an_exception_closes_at_once() -> None:
    """The body's exception propagates unchanged; running calls are dropped at once."""
    runtime = Runtime(autoscale=False)
    started = asyncio.Event()

    @runtime.handler
    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    error = KeyError("boom")
    call: asyncio.Task[None] | None = None
    with pytest.raises(KeyError) as caught:
        async with runtime:
            call = asyncio.create_task(forever())
            await started.wait()
            raise error
    assert caught.value is error
    assert call is not None
    with pytest.raises(Dropped) as dropped:
        await call
    assert dropped.value.reason is DropReason.SHUTDOWN
    report = runtime.statistics().shutdown
    assert report is not None
    assert (report.drained, report.reason, dict(report.running)) == (
        False,
        "cancelled",
        {"forever": 1},
    )


@pytest.mark.virtual_time
async def test_a_cancelled_drain_still_stops_everything(clock: VirtualClock) -> None:
    """Cancelling the task that drains stops every part at once and reports it."""
    runtime = Runtime(clock=clock, autoscale=False, drain_timeout=60.0)

    @runtime.handler
    async def slow() -> None:
        await asyncio.sleep(30)

    await runtime.__aenter__()
    call = asyncio.create_task(slow())
    await wait_until(lambda: slow.statistics().running == 1)
    closing = asyncio.create_task(runtime.drain())
    await asyncio.sleep(1.0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    with pytest.raises(Dropped):
        await call
    report = runtime.statistics().shutdown
    assert report is not None
    assert (report.reason, dict(report.running)) == ("cancelled", {"slow": 1})
    assert runtime.cache.closed
    assert clock.now() == pytest.approx(1.0)


# -- statistics ----------------------------------------------------------------------------


async def test_statistics_cover_every_part() -> None:
    """statistics(): state, loop, handlers, pools, rate limiters, cache and supervisor."""
    runtime = Runtime(tick=0.05)

    @runtime.handler(rate="100/s", cache_ttl=5.0)
    async def lookup(key: str) -> str:
        return key

    before = runtime.statistics()
    assert isinstance(before, RuntimeStatistics)
    assert (before.state, before.loop, before.supervisor, before.shutdown) == (
        "new",
        "not started",
        None,
        None,
    )
    assert set(before.pools) == {"default"}
    async with runtime:
        await lookup("a")
        await lookup("a")
        stats = runtime.statistics()
        assert stats.state == "running"
        assert stats.loop == loop_name(asyncio.get_running_loop())
        assert stats.handlers["lookup"].cache_hits == 1
        assert stats.pools["default"].completed == 1
        assert stats.rate_limiters["lookup"].admitted_calls == 1
        assert stats.cache.hits == 1
        assert stats.supervisor is not None
        assert stats.supervisor.pool("default").name == "default"
        assert re.fullmatch(
            r"<Runtime running: 1 handlers, 1 pools, 0 calls in flight>", repr(runtime)
        )
    after = runtime.statistics()
    assert after.state == "closed"
    assert after.shutdown is not None
    assert after.shutdown.drained


async def test_autoscale_off_runs_no_supervisor() -> None:
    """autoscale=False: the pools keep their size; statistics have no supervisor."""
    runtime = Runtime(autoscale=False)
    async with runtime:
        assert runtime.supervisor is None
        assert runtime.statistics().supervisor is None


async def test_an_adaptive_limiter_per_pool() -> None:
    """limiter='aimd' gives each pool an AdaptiveLimiter bounded by its size."""
    runtime = Runtime(limiter="aimd", max_workers=6, autoscale=False)

    @runtime.handler(concurrency=3)
    async def own() -> int:
        return 1

    async with runtime:
        assert await own() == 1
    limiters = {name: pool.limiter for name, pool in runtime.pools.items()}
    assert all(isinstance(limiter, AdaptiveLimiter) for limiter in limiters.values())
    assert {name: lim.max_limit for name, lim in limiters.items() if lim is not None} == {
        "default": 6,
        "own": 3,
    }


@pytest.mark.virtual_time
async def test_codel_sheds_a_standing_queue(clock: VirtualClock) -> None:
    """codel_target: calls that sat in a standing queue are Dropped (reason 'codel')."""
    runtime = Runtime(
        clock=clock, autoscale=False, max_workers=1, codel_target=0.01, codel_interval=0.1
    )

    @runtime.handler
    async def step(index: int) -> int:
        await asyncio.sleep(0.05)
        return index

    async with runtime:
        results = await asyncio.gather(*(step(i) for i in range(20)), return_exceptions=True)
    shed = [r for r in results if isinstance(r, Dropped)]
    assert shed
    assert all(r.reason is DropReason.CODEL for r in shed)
    assert step.statistics().drops == {"codel": len(shed)}


# -- cache ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cache_write", ["behind", "through"])
async def test_a_disk_cache_keeps_results_across_runtimes(tmp_path: Path, cache_write: str) -> None:
    """With cache_dir, a result cached by one runtime is a hit for the next one, whether
    results reach the disk in write-behind batches (the default, flushed on exit) or
    before each caller is answered."""
    runs: list[str] = []

    def build() -> tuple[Runtime, Callable[[str], Awaitable[str]]]:
        runtime = Runtime(cache_dir=tmp_path / "cache", autoscale=False, cache_write=cache_write)

        @runtime.handler(cache_ttl=600.0)
        async def render(page: str) -> str:
            runs.append(page)
            return f"<h1>{page}</h1>"

        return runtime, render

    first, render = build()
    async with first:
        assert await render("home") == "<h1>home</h1>"
    assert len(first.statistics().cache.levels) == 2
    assert first.statistics().cache.write_behind_written == (1 if cache_write == "behind" else 0)
    second, render_again = build()
    async with second:
        assert await render_again("home") == "<h1>home</h1>"
    assert runs == ["home"]
    assert second.statistics().handlers["render"].cache_hits == 1


# -- supervisor ----------------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_the_supervisor_shrinks_an_idle_pool_and_grows_it_under_load(
    clock: VirtualClock,
) -> None:
    """With autoscale the pools are sized on the runtime's clock, from the config's policy."""
    runtime = Runtime(
        clock=clock,
        max_workers=8,
        min_workers=1,
        tick=0.25,
        window=2,
        hold_down=1.0,
        target_queue_delay=0.05,
    )

    @runtime.handler
    async def work(index: int) -> int:
        await asyncio.sleep(1.0)
        return index

    async with runtime:
        pool = runtime.pools["default"]
        await asyncio.sleep(2.0)
        assert pool.max_workers == 1  # idle past the hold-down: shrunk to min_workers
        calls = [asyncio.create_task(work(i)) for i in range(12)]
        await asyncio.sleep(0.6)  # two ticks of queue delay
        assert pool.max_workers == 8
        assert list(await asyncio.gather(*calls)) == list(range(12))
    supervisor = runtime.statistics().supervisor
    assert supervisor is not None
    actions = [event.action for event in supervisor.events]
    assert "shrink" in actions
    assert "grow" in actions


async def test_a_failed_pool_refuses_calls_and_fails_the_runtime_loudly() -> None:
    """A pool failed by its supervisor rejects calls (the failure chained) and the
    runtime raises the failure when it stops."""
    runtime = Runtime(autoscale=False)

    @runtime.handler
    async def ping() -> str:
        return "pong"

    failure = PoolFailed("default: workers crashed 6 times within 60 s")
    with pytest.raises(PoolFailed) as raised:
        async with runtime:
            assert await ping() == "pong"
            runtime.pools["default"]._fail(failure)
            with pytest.raises(Rejected, match="pool 'default' has failed") as caught:
                await ping()
            assert caught.value.reason is DropReason.SHUTDOWN
            assert caught.value.__cause__ is not None
            assert caught.value.__cause__.__cause__ is failure
    assert raised.value is failure
    report = runtime.statistics().shutdown
    assert report is not None
    assert runtime.cache.closed
    stats = ping.statistics()
    assert (stats.calls, stats.succeeded, stats.rejected) == (2, 1, 1)
