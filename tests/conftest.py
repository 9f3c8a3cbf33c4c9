"""Shared fixtures: every async test runs on asyncio and uvloop (or on virtual time),
and fails if the loop's exception handler fires or a task is left pending."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import pytest
import pytest_asyncio

from asyncperf.testing import VirtualClock, VirtualEventLoop, current_virtual_clock
from tests.redis_server import RedisServer, start_redis

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


# -- Redis ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private Redis server for the whole session; skipped without redis-server,
    unless ASYNCPERF_REQUIRE_REDIS=1 (CI), where a missing server is a failure."""
    try:
        server = start_redis()
    except FileNotFoundError as exc:
        if os.environ.get("ASYNCPERF_REQUIRE_REDIS") == "1":
            pytest.fail(f"ASYNCPERF_REQUIRE_REDIS=1 but {exc}")
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, emptied (FLUSHALL) before the test."""
    with socket.create_connection((redis_server.host, redis_server.port), timeout=5) as sock:
        sock.sendall(f"AUTH {redis_server.password}\r\nFLUSHALL\r\n".encode())
        reply = b""
        while reply.count(b"\r\n") < 2:
            chunk = sock.recv(64)
            if not chunk:
                break
            reply += chunk
        assert reply == b"+OK\r\n+OK\r\n", reply
    return redis_server.url
