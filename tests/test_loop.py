"""Layer 0: loop selection, run(), the clocks."""

from __future__ import annotations

import asyncio
import inspect
import time

import pytest

import asyncperf as ap
from asyncperf.abc import Clock
from asyncperf.testing import VirtualClock, VirtualEventLoop, current_virtual_clock


async def _running_loop_name() -> str:
    return ap.loop_name()


def test_run_auto_prefers_uvloop() -> None:
    """loop='auto' runs on uvloop when it is installed."""
    assert ap.available_loops()[0] == "uvloop"
    assert ap.run(_running_loop_name()) == "uvloop"


@pytest.mark.parametrize("choice", ["asyncio", "uvloop"])
def test_run_named_loop(choice: ap.loop.LoopChoice) -> None:
    """run() uses the loop it is asked for, and loop_name() says which."""
    assert ap.run(_running_loop_name(), loop=choice) == choice


def test_run_returns_result_and_propagates_errors() -> None:
    """run() returns the coroutine's value and raises its exception."""

    async def fails() -> None:
        raise KeyError("boom")

    async def value() -> int:
        return 7

    assert ap.run(value(), loop="asyncio") == 7
    with pytest.raises(KeyError, match="boom"):
        ap.run(fails(), loop="asyncio")


def test_run_debug_flag() -> None:
    """debug=True turns on the loop's debug mode."""

    async def debug_on() -> bool:
        return asyncio.get_running_loop().get_debug()

    assert ap.run(debug_on(), loop="asyncio", debug=True) is True
    assert ap.run(debug_on(), loop="asyncio", debug=False) is False


def test_run_rejects_unknown_loop_and_closes_coroutine() -> None:
    """An unknown loop name is a ValueError naming the parameter; the coroutine is closed."""
    coro = _running_loop_name()
    with pytest.raises(ValueError, match=r"^loop must be one of 'auto', 'uvloop', 'asyncio'"):
        ap.run(coro, loop="trio")  # type: ignore[arg-type]
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # no "never awaited" warning


def test_uvloop_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without uvloop, 'auto' falls back to asyncio and 'uvloop' says how to install it."""
    import sys

    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert ap.available_loops() == ("asyncio",)
    assert ap.run(_running_loop_name(), loop="auto") == "asyncio"
    with pytest.raises(RuntimeError, match="pip install uvloop"):
        ap.new_event_loop("uvloop")


def test_new_event_loop() -> None:
    """new_event_loop() builds the chosen loop with the debug flag set."""
    loop = ap.new_event_loop("asyncio", debug=True)
    try:
        assert ap.loop_name(loop) == "asyncio"
        assert loop.get_debug()
    finally:
        loop.close()


def test_loop_name_without_running_loop() -> None:
    """loop_name() with no argument outside a loop is a RuntimeError."""
    with pytest.raises(RuntimeError):
        ap.loop_name()


def test_system_clock_is_monotonic_seconds() -> None:
    """SystemClock.now() reads time.monotonic and satisfies the Clock protocol."""
    clock = ap.SystemClock()
    assert isinstance(clock, Clock)
    before = time.monotonic()
    now = clock.now()
    assert before <= now <= time.monotonic()


async def test_system_clock_call_later_and_sleep() -> None:
    """SystemClock schedules on the running loop."""
    clock = ap.SystemClock()
    fired = asyncio.Event()
    clock.call_later(0, fired.set)
    await fired.wait()
    await clock.sleep(0)


def test_virtual_loop_reports_its_name() -> None:
    """The virtual loop names itself in loop_name()."""
    loop = VirtualEventLoop()
    try:
        assert ap.loop_name(loop) == "asyncio (virtual time)"
    finally:
        loop.close()


@pytest.mark.virtual_time
async def test_virtual_clock_jumps_only_when_idle(clock: VirtualClock) -> None:
    """Time does not pass while callbacks are ready, and jumps to the next timer when idle."""
    start = clock.now()
    for _ in range(100):
        await asyncio.sleep(0)
    assert clock.now() == start
    order: list[float] = []

    async def sleeper(delay: float) -> None:
        await clock.sleep(delay)
        order.append(clock.now() - start)

    async with asyncio.TaskGroup() as tg:
        for delay in (30.0, 10.0, 20.0):
            tg.create_task(sleeper(delay))
    assert order == [10.0, 20.0, 30.0]


@pytest.mark.virtual_time
async def test_virtual_clock_timeouts(clock: VirtualClock) -> None:
    """asyncio.timeout fires at the virtual deadline."""
    start = clock.now()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(5):
            await asyncio.sleep(60)
    assert clock.now() - start == pytest.approx(5)


@pytest.mark.virtual_time
async def test_virtual_clock_call_later(clock: VirtualClock) -> None:
    """call_later runs the callback at the virtual time asked for."""
    fired = asyncio.Event()
    start = clock.now()
    clock.call_later(42.0, fired.set)
    await fired.wait()
    assert clock.now() - start == pytest.approx(42.0)


@pytest.mark.virtual_time
async def test_virtual_clock_advance(clock: VirtualClock) -> None:
    """advance() moves the clock by hand and refuses to go back."""
    start = clock.now()
    clock.advance(2.5)
    assert clock.now() == start + 2.5
    with pytest.raises(ValueError, match=r"^seconds must be >= 0$"):
        clock.advance(-1)


async def test_virtual_clock_refuses_a_foreign_loop() -> None:
    """A VirtualClock used on a loop it does not drive says so."""
    with pytest.raises(RuntimeError, match="not the clock of the running loop"):
        await VirtualClock().sleep(1)
    with pytest.raises(RuntimeError, match="needs a running VirtualEventLoop"):
        current_virtual_clock()
