"""Shared fixtures: every async test runs on asyncio and uvloop (or on virtual time),
and fails if the loop's exception handler fires or a task is left pending."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
import pytest_asyncio

from asyncperf.testing import VirtualClock, VirtualEventLoop, current_virtual_clock

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def _real_loops() -> dict[str, LoopFactory]:
    loops: dict[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop installs on every CI platform
        return loops
    loops["uvloop"] = uvloop.new_event_loop
    return loops


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    """Real loops for every async test; virtual time for tests marked ``virtual_time``."""
    if item.get_closest_marker("virtual_time") is not None:
        return {"virtual": VirtualEventLoop}
    return _real_loops()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("asyncio") is not None:
            item.add_marker(pytest.mark.usefixtures("loop_guard"))


@pytest_asyncio.fixture
async def loop_guard(request: pytest.FixtureRequest) -> AsyncIterator[list[dict[str, Any]]]:
    """Record calls of the loop's exception handler; fail on them and on leftover tasks."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    # Unretrieved exceptions of futures are reported when they are collected.
    gc.collect()
    current = asyncio.current_task()
    leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for task in leftover:
        task.cancel()
    if leftover:
        await asyncio.gather(*leftover, return_exceptions=True)
    loop.set_exception_handler(None)
    assert not leftover, f"tasks left pending: {leftover}"
    if request.node.get_closest_marker("allow_loop_errors") is None:
        assert not errors, f"the loop's exception handler was called: {errors}"


@pytest.fixture
def loop_errors(loop_guard: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the loop's exception handler received (use with ``allow_loop_errors``)."""
    return loop_guard


@pytest_asyncio.fixture
async def clock() -> VirtualClock:
    """The virtual clock of the running VirtualEventLoop (tests marked ``virtual_time``)."""
    return current_virtual_clock()
