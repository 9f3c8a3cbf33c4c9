"""@runtime.handler(batch=...): calls of one item each, sent to the function as lists."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import asyncperf as ap
from asyncperf.testing import VirtualClock, wait_until


def make_runtime(**options: Any) -> ap.Runtime:
    options.setdefault("autoscale", False)
    return ap.Runtime(**options)


class Upstream:
    """A list-taking upstream that records each batch and can be held at a gate."""

    def __init__(self, *, held: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        if not held:
            self.gate.set()

    async def double(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await self.gate.wait()
        return [ValueError(f"odd item {n}") if n < 0 else 2 * n for n in items]


async def test_calls_are_sent_in_batches_of_at_most_batch_items() -> None:
    upstream = Upstream()
    runtime = make_runtime()
    double = runtime.handler(name="double", batch=4, batch_delay=60)(upstream.double)
    async with runtime:
        results = await asyncio.gather(*(double(n) for n in range(8)))
    assert results == [2 * n for n in range(8)]
    assert upstream.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]
    stats = runtime.statistics()
    assert stats.batchers["double"].batches == 2
    assert stats.batchers["double"].flushes["size"] == 2
    handler = stats.handlers["double"]
    assert (handler.calls, handler.succeeded, handler.in_flight) == (8, 8, 0)
    # Each batch is one job of the pool: two jobs for eight calls.
    assert stats.pools["default"].completed == 2


@pytest.mark.virtual_time
async def test_a_partial_batch_goes_after_batch_delay(clock: VirtualClock) -> None:
    upstream = Upstream()
    runtime = make_runtime(clock=clock)
    double = runtime.handler(name="double", batch=10, batch_delay=0.25)(upstream.double)
    async with runtime:
        assert list(await asyncio.gather(double(1), double(2), double(3))) == [2, 4, 6]
        assert clock.now() == pytest.approx(0.25)
    assert upstream.batches == [[1, 2, 3]]
    assert runtime.statistics().batchers["double"].flushes["delay"] == 1


async def test_an_item_error_stays_with_its_caller() -> None:
    upstream = Upstream()
    runtime = make_runtime()
    double = runtime.handler(name="double", batch=3, batch_delay=60)(upstream.double)
    async with runtime:
        results = await asyncio.gather(double(1), double(-1), double(2), return_exceptions=True)
    assert results[0] == 2
    assert results[2] == 4
    assert isinstance(results[1], ValueError)
    handler = runtime.statistics().handlers["double"]
    assert (handler.succeeded, handler.failed) == (2, 1)


async def test_a_failed_batch_fails_each_item_with_the_cause_chained() -> None:
    runtime = make_runtime()

    @runtime.handler(batch=2, batch_delay=60)
    async def broken(items: list[int]) -> list[int]:
        raise ConnectionResetError("upstream went away")

    async with runtime:
        results = await asyncio.gather(broken(1), broken(2), return_exceptions=True)
    for error in results:
        assert isinstance(error, ap.BatchFailed)
        assert isinstance(error.__cause__, ConnectionResetError)
    assert results[0] is not results[1]  # each caller its own exception
    assert runtime.statistics().handlers["broken"].failed == 2


@pytest.mark.virtual_time
async def test_a_batch_takes_one_rate_token_and_a_refused_batch_counts_its_items(
    clock: VirtualClock,
) -> None:
    upstream = Upstream()
    runtime = make_runtime(clock=clock, admission_timeout=0)
    double = runtime.handler(name="double", batch=2, batch_delay=60, rate="1/min")(upstream.double)
    async with runtime:
        assert list(await asyncio.gather(double(1), double(2))) == [2, 4]
        refused = await asyncio.gather(double(3), double(4), return_exceptions=True)
    for error in refused:
        assert isinstance(error, ap.BatchFailed)
        assert isinstance(error.__cause__, ap.RateLimited)
    assert upstream.batches == [[1, 2]]
    handler = runtime.statistics().handlers["double"]
    assert (handler.succeeded, handler.rejected, handler.failed) == (2, 2, 0)
    assert handler.rejections == {"rate_limited": 2}


async def test_each_item_is_cached_on_its_own() -> None:
    upstream = Upstream()
    runtime = make_runtime()
    double = runtime.handler(name="double", batch=4, batch_delay=0, cache_ttl=60)(upstream.double)
    async with runtime:
        assert list(await asyncio.gather(double(1), double(2))) == [2, 4]
        assert list(await asyncio.gather(double(1), double(3))) == [2, 6]
    assert upstream.batches == [[1, 2], [3]]
    assert runtime.statistics().handlers["double"].cache_hits == 1


async def test_a_cancelled_caller_leaves_its_batch_intact() -> None:
    upstream = Upstream(held=True)
    runtime = make_runtime()
    double = runtime.handler(name="double", batch=3, batch_delay=60)(upstream.double)
    async with runtime:
        tasks = [asyncio.create_task(double(n)) for n in (1, 2, 3)]
        await wait_until(lambda: len(upstream.batches) == 1)
        tasks[1].cancel()
        upstream.gate.set()
        assert await tasks[0] == 2
        assert await tasks[2] == 6
        with pytest.raises(asyncio.CancelledError):
            await tasks[1]
    assert upstream.batches == [[1, 2, 3]]
    handler = runtime.statistics().handlers["double"]
    assert (handler.succeeded, handler.cancelled) == (2, 1)


async def test_leaving_the_runtime_flushes_what_is_pending() -> None:
    upstream = Upstream()
    runtime = make_runtime()
    double = runtime.handler(name="double", batch=100, batch_delay=3600)(upstream.double)
    async with runtime:
        tasks = [asyncio.create_task(double(n)) for n in range(3)]
        await wait_until(lambda: runtime.statistics().batchers["double"].pending == 3)
    # The drain sent the pending batch before it stopped the pools: nothing lost.
    assert [task.result() for task in tasks] == [0, 2, 4]
    stats = runtime.statistics()
    assert stats.batchers["double"].flushes["close"] == 1
    assert stats.shutdown is not None
    assert stats.shutdown.drained


async def test_closing_at_once_fails_pending_items_and_counts_them() -> None:
    upstream = Upstream()
    runtime = make_runtime()
    double = runtime.handler(name="double", batch=100, batch_delay=3600)(upstream.double)
    await runtime.__aenter__()
    tasks = [asyncio.create_task(double(n)) for n in range(3)]
    await wait_until(lambda: runtime.statistics().batchers["double"].pending == 3)
    await runtime.aclose()
    for task in tasks:
        error = task.exception()
        assert isinstance(error, ap.BatchFailed)
        assert isinstance(error.__cause__, ap.Rejected)
        assert error.__cause__.reason is ap.DropReason.SHUTDOWN
    assert upstream.batches == []
    handler = runtime.statistics().handlers["double"]
    assert (handler.calls, handler.rejected, handler.in_flight) == (3, 3, 0)


def test_bad_batch_settings_name_the_parameter(tmp_path: Path) -> None:
    runtime = make_runtime()

    async def items(values: list[int]) -> list[int]:
        return values

    async def two(values: list[int], extra: int) -> list[int]:
        return values

    with pytest.raises(ValueError, match="batch must be >= 1"):
        runtime.handler(batch=0)(items)
    with pytest.raises(ValueError, match="batch_delay must be"):
        runtime.handler(name="negative", batch=2, batch_delay=-1)(items)
    with pytest.raises(TypeError, match="needs a function of one argument"):
        runtime.handler(batch=2)(two)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_delay needs batch"):
        runtime.handler(name="alone", batch_delay=0.1)(items)  # type: ignore[call-overload]
    config = tmp_path / "asyncperf.toml"
    config.write_text("[handlers.plain]\nbatch = 8\n")
    tuned = ap.Runtime(ap.RuntimeConfig.from_toml(config), autoscale=False)

    async def plain(value: int) -> int:
        return value

    with pytest.raises(ValueError, match=r"handlers\.plain\.batch can only tune a handler"):
        tuned.handler(name="plain")(plain)


async def test_config_tunes_a_batch_handler(tmp_path: Path) -> None:
    upstream = Upstream()
    config = tmp_path / "asyncperf.toml"
    config.write_text("[handlers.double]\nbatch = 2\n")
    runtime = ap.Runtime(ap.RuntimeConfig.from_toml(config), autoscale=False)
    double = runtime.handler(name="double", batch=100, batch_delay=60)(upstream.double)
    async with runtime:
        assert list(await asyncio.gather(*(double(n) for n in range(4)))) == [0, 2, 4, 6]
    assert upstream.batches == [[0, 1], [2, 3]]
