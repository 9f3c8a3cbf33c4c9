"""Layer 6-8: the dashboard's HTTP server, its auth, its JSON, the runtime's dashboard, the command.

Requests go over real sockets on 127.0.0.1 to a server on the test's own loop,
through a tiny raw HTTP client (one request per connection, as the server answers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import asyncperf as ap
from asyncperf.observability._metrics import Metrics
from asyncperf.observability._server import DashboardServer, is_loopback, jsonable
from asyncperf.runtime import RuntimeConfig
from asyncperf.tools._command import UsageError
from asyncperf.tools.dashboard import COMMAND, DashboardOptions, options_from_args, serve
from asyncperf.tools.simulate import SimulationConfig

Response = tuple[int, dict[str, str], bytes]


async def request(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> Response:
    """One request; the status, the headers (lower-case names) and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if raw is None:
            lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
            lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
            raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
        writer.write(raw)
        await writer.drain()
        data = await reader.read()  # the server closes the connection after its answer
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), parsed, body


async def get_json(port: int, path: str, **kwargs: Any) -> Any:
    status, headers, body = await request(port, path, **kwargs)
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    return json.loads(body)


class EventStream:
    """A reader of ``/api/stream``: each ``next()`` is the next snapshot the server sent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.headers = b""

    async def next(self) -> dict[str, Any]:
        while True:
            line = await self.reader.readline()
            if not line:
                raise EOFError("the stream ended")
            if line.startswith(b"data: "):
                data: dict[str, Any] = json.loads(line[len(b"data: ") :])
                return data


@contextlib.asynccontextmanager
async def event_stream(port: int, query: str = "") -> AsyncIterator[EventStream]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET /api/stream{query} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        stream = EventStream(reader, writer)
        stream.headers = await reader.readuntil(b"\r\n\r\n")
        yield stream
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.fixture
async def metrics() -> AsyncIterator[Metrics]:
    """A registry with one running pool, so snapshots hold a pool and its queue."""
    registry = Metrics()
    async with ap.WorkerPool(max_workers=2, name="jobs") as pool:
        registry.add_pool(pool)
        for value in range(5):
            assert await pool.run(asyncio.sleep, 0, value) == value
        yield registry
    registry.close()


# -- routes -------------------------------------------------------------------------------


async def test_every_route_answers_with_its_type_and_length(metrics: Metrics) -> None:
    async with DashboardServer(metrics) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/"
        expected = {
            "/": "text/html; charset=utf-8",
            "/static/dashboard.js": "text/javascript; charset=utf-8",
            "/static/dashboard.css": "text/css; charset=utf-8",
            "/metrics": Metrics.CONTENT_TYPE,
            "/api/stats": "application/json",
            "/api/history": "application/json",
        }
        for path, content_type in expected.items():
            status, headers, body = await request(server.port, path)
            assert status == 200, path
            assert headers["content-type"] == content_type, path
            assert int(headers["content-length"]) == len(body) > 0, path
            assert headers["connection"] == "close"
            assert "default-src 'self'" in headers["content-security-policy"]
        _, _, page = await request(server.port, "/")
        # Self-contained: the page loads its script and style from this server only.
        assert b'src="/static/dashboard.js"' in page
        assert b"http://" not in page
        assert b"https://" not in page


async def test_unknown_paths_methods_and_garbage_are_refused(metrics: Metrics) -> None:
    async with DashboardServer(metrics) as server:
        status, headers, body = await request(server.port, "/nope")
        assert (status, headers["content-type"]) == (404, "text/plain; charset=utf-8")
        assert b"/nope" in body
        status, headers, _ = await request(server.port, "/api/stats", method="POST")
        assert status == 405
        assert headers["allow"] == "GET, HEAD"
        status, _, _ = await request(server.port, "/", raw=b"NONSENSE\r\n\r\n")
        assert status == 400
        status, _, _ = await request(server.port, "/", raw=b"GET / SPDY/9\r\n\r\n")
        assert status == 400
        status, headers, body = await request(server.port, "/api/stats", method="HEAD")
        assert status == 200
        assert int(headers["content-length"]) > 0
        assert body == b""
        # A page elsewhere reaching 127.0.0.1 through DNS rebinding sends its own Host.
        status, _, _ = await request(
            server.port, "/api/stats", raw=b"GET /api/stats HTTP/1.1\r\nHost: evil.example\r\n\r\n"
        )
        assert status == 403
        assert server.requests == 6


async def test_stats_json_matches_the_pool(metrics: Metrics) -> None:
    async with DashboardServer(metrics) as server:
        stats = await get_json(server.port, "/api/stats")
        for key in ("time", "loop", "process", "gc", "lag", "pools", "queues", "caches", "seq"):
            assert key in stats
        assert stats["loop"] == ap.loop_name()
        pool = stats["pools"]["jobs"]
        assert pool["completed"] == 5
        assert pool["submitted"] == pool["completed"] + pool["pending"] + pool["active"]
        assert set(stats["queues"]["jobs"]["levels"]) == {"0", "1", "2"}
        assert stats["process"]["tasks"] >= 1


async def test_metrics_parse_as_prometheus_text(metrics: Metrics) -> None:
    async with DashboardServer(metrics) as server:
        _, _, body = await request(server.port, "/metrics")
    families = {family.name: family for family in text_string_to_metric_families(body.decode())}
    assert families, "no metric families"
    assert all(name.startswith("asyncperf_") for name in families)
    values = [
        sample.value
        for family in families.values()
        for sample in family.samples
        if sample.labels.get("pool") == "jobs"
    ]
    assert values, "no sample of the pool 'jobs'"


def test_snapshots_become_valid_json() -> None:
    """NaN and infinities (which JSON.parse refuses) become null; tuples become lists."""
    assert jsonable({"a": float("nan"), "b": (1.5, float("inf")), 3: [None, "x"]}) == {
        "a": None,
        "b": [1.5, None],
        "3": [None, "x"],
    }


# -- streaming and history -------------------------------------------------------------------


async def test_stream_delivers_fresh_snapshots_and_history_keeps_them(metrics: Metrics) -> None:
    async with (
        DashboardServer(metrics, interval=0.02, history=3) as server,
        event_stream(server.port) as stream,
    ):
        assert b"200 OK" in stream.headers
        assert b"text/event-stream" in stream.headers
        seqs = [(await stream.next())["seq"] for _ in range(5)]
        # The latest sample at once, then each new one, in order, none repeated.
        assert seqs == list(range(seqs[0], seqs[0] + 5))
        snapshot = await stream.next()
        assert snapshot["pools"]["jobs"]["completed"] == 5
        history = await get_json(server.port, "/api/history")
        assert history["interval"] == 0.02
        kept = [sample["seq"] for sample in history["snapshots"]]
        assert len(kept) == 3  # bounded by `history`
        assert kept == sorted(kept)
        assert kept[-1] >= snapshot["seq"]
        assert [s["seq"] for s in server.history] == kept


async def test_a_failing_snapshot_skips_a_sample_but_keeps_serving(metrics: Metrics) -> None:
    class Flaky:
        CONTENT_TYPE = Metrics.CONTENT_TYPE
        calls = 0

        def snapshot(self) -> dict[str, Any]:
            self.calls += 1
            if self.calls % 2 == 0:
                raise RuntimeError("source broke")
            return {"time": float(self.calls)}

        def prometheus_text(self) -> bytes:
            return b""

    flaky = Flaky()
    async with (
        DashboardServer(flaky, interval=0.01) as server,
        event_stream(server.port) as stream,
    ):
        times = [(await stream.next())["time"] for _ in range(3)]
    assert all(t % 2 == 1 for t in times)  # only the snapshots that worked
    assert times == sorted(times)


# -- auth ---------------------------------------------------------------------------------


async def test_a_token_is_required_on_every_route(metrics: Metrics) -> None:
    async with DashboardServer(metrics, token="s3cret") as server:
        for path in ("/", "/metrics", "/api/stats", "/api/history", "/api/stream"):
            status, headers, _ = await request(server.port, path)
            assert status == 401, path
            assert headers["www-authenticate"].startswith("Bearer")
        status, _, _ = await request(
            server.port, "/api/stats", headers={"Authorization": "Bearer wrong"}
        )
        assert status == 401
        status, _, _ = await request(server.port, "/api/stats?token=s3cre")
        assert status == 401
        status, _, _ = await request(
            server.port, "/api/stats", headers={"Authorization": "Bearer s3cret"}
        )
        assert status == 200
        status, _, _ = await request(server.port, "/api/stats?token=s3cret")
        assert status == 200
        async with event_stream(server.port, "?token=s3cret") as stream:
            assert "seq" in await stream.next()
        # With a token the Host header is not what guards it: any Host is answered.
        status, _, _ = await request(
            server.port,
            "/",
            raw=b"GET /?token=s3cret HTTP/1.1\r\nHost: dashboard.example\r\n\r\n",
        )
        assert status == 200


def test_a_host_others_can_reach_needs_a_token() -> None:
    metrics = Metrics()
    try:
        for host in ("0.0.0.0", "::", "192.168.1.20", "example.com"):
            with pytest.raises(ValueError, match="token"):
                DashboardServer(metrics, host=host)
        assert DashboardServer(metrics, host="0.0.0.0", token="t").host == "0.0.0.0"
        for host in ("127.0.0.1", "localhost", "::1", "127.8.9.10"):
            assert is_loopback(host)
        with pytest.raises(ValueError, match="token"):
            DashboardServer(metrics, token="")
        with pytest.raises(ValueError, match="port"):
            DashboardServer(metrics, port=70_000)
        with pytest.raises(ValueError, match="history"):
            DashboardServer(metrics, history=0)
        with pytest.raises(ValueError, match="interval"):
            DashboardServer(metrics, interval=0)
        with pytest.raises(TypeError, match="host"):
            DashboardServer(metrics, host=None)  # type: ignore[arg-type]
    finally:
        metrics.close()


# -- lifecycle ----------------------------------------------------------------------------


async def test_shutdown_closes_the_port_ends_streams_and_leaves_no_task(metrics: Metrics) -> None:
    before = asyncio.all_tasks()
    server = DashboardServer(metrics, interval=0.01)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port
    await server.start()
    port = server.port
    async with event_stream(port) as stream:
        await stream.next()
        await server.aclose()
        with pytest.raises(EOFError):
            while True:
                await stream.next()
    assert not server.serving
    assert asyncio.all_tasks() == before
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    await server.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="only once"):
        await server.start()


async def test_a_taken_port_fails_at_start(metrics: Metrics) -> None:
    async with DashboardServer(metrics) as first:
        with pytest.raises(OSError, match=r"(?i)address already in use"):
            await DashboardServer(metrics, port=first.port).start()


# -- the runtime ---------------------------------------------------------------------------


async def test_runtime_serves_its_pools_handlers_and_cache() -> None:
    runtime = ap.Runtime(dashboard=True, autoscale=True, tick=0.05)

    @runtime.handler(cache_ttl=60.0, rate="1000/s", burst=10)
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    @runtime.handler(concurrency=2)
    async def echo(x: int) -> int:
        return x

    not_started = runtime.dashboard_url
    assert not_started is None
    async with runtime:
        url = runtime.dashboard_url
        assert url is not None
        assert runtime.dashboard is not None
        port = runtime.dashboard.port
        assert url == f"http://127.0.0.1:{port}/"
        for x in (1, 2, 3, 1, 2, 3):
            assert await double(x) == 2 * x
        assert await asyncio.gather(*(echo(x) for x in range(4))) == [0, 1, 2, 3]
        stats = await get_json(port, "/api/stats")
        assert set(stats["pools"]) == {"default", "echo"}
        assert stats["pools"]["default"]["completed"] == 3  # three misses; three cache hits
        assert stats["pools"]["echo"]["completed"] == 4
        handlers = stats["sources"]["handlers"]
        assert handlers["double.calls"] == 6
        assert handlers["double.cache_hits"] == 3
        assert handlers["echo.succeeded"] == 4
        assert stats["limiters"]["double.rate"]["admitted_calls"] == 3  # hits take no token
        cache = stats["caches"]["cache"]
        assert (cache["hits"], cache["misses"]) == (3, 3)
        assert "decisions" in stats["supervisor"]
        assert stats["lag"] is not None
        assert runtime.metrics.snapshot()["pools"].keys() == stats["pools"].keys()
        status, _, text = await request(port, "/metrics")
        assert status == 200
        assert b'key="double.calls"' in text
    assert runtime.dashboard_url is None
    assert runtime.metrics.closed
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_runtime_metrics_without_a_dashboard() -> None:
    runtime = ap.Runtime(autoscale=False)

    @runtime.handler
    async def work() -> str:
        return "done"

    metrics = runtime.metrics  # before the start: registered when the runtime starts
    assert metrics.snapshot()["pools"] == {}
    async with runtime:
        assert await work() == "done"
        assert runtime.dashboard is None
        assert runtime.dashboard_url is None
        assert metrics.snapshot()["pools"]["default"]["completed"] == 1
        assert runtime.metrics is metrics


async def test_runtime_metrics_made_while_running_see_every_part() -> None:
    async with ap.Runtime() as runtime:
        snapshot = runtime.metrics.snapshot()
        assert set(snapshot["pools"]) == {"default"}
        assert "cache" in snapshot["caches"]


async def test_a_dashboard_that_cannot_bind_stops_the_runtime_cleanly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runtime = ap.Runtime(dashboard=True, dashboard_port=port)
        with pytest.raises(OSError, match=r"(?i)address already in use"):
            await runtime.__aenter__()
    assert not runtime.running
    assert runtime.statistics().state == "closed"


async def test_runtime_dashboard_with_a_token() -> None:
    async with ap.Runtime(dashboard=True, dashboard_token="abc") as runtime:
        assert runtime.dashboard is not None
        port = runtime.dashboard.port
        assert (await request(port, "/api/stats"))[0] == 401
        stats = await get_json(port, "/api/stats", headers={"Authorization": "Bearer abc"})
        assert "default" in stats["pools"]


def test_dashboard_settings_are_checked_and_named() -> None:
    with pytest.raises(ValueError, match="dashboard_token"):
        RuntimeConfig(dashboard=True, dashboard_host="0.0.0.0")
    config = RuntimeConfig(dashboard=True, dashboard_host="0.0.0.0", dashboard_token="t0k3n")
    assert "t0k3n" not in repr(config)  # a secret stays out of logs
    with pytest.raises(ValueError, match="dashboard_port"):
        RuntimeConfig(dashboard_port=65_536)
    with pytest.raises(ValueError, match="dashboard_port"):
        RuntimeConfig(dashboard_port=-1)
    with pytest.raises(TypeError, match="dashboard"):
        RuntimeConfig(dashboard="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dashboard_token"):
        RuntimeConfig(dashboard_token=" padded ")
    env = RuntimeConfig.from_env(
        {"ASYNCPERF_DASHBOARD": "true", "ASYNCPERF_DASHBOARD_PORT": "8321"}
    )
    assert (env.dashboard, env.dashboard_port, env.dashboard_host) == (True, 8321, "127.0.0.1")
    with pytest.raises(ValueError, match="ASYNCPERF_DASHBOARD_PORT"):
        RuntimeConfig.from_env({"ASYNCPERF_DASHBOARD_PORT": "many"})
    with pytest.raises(ValueError, match="dashboard_token"):
        ap.Runtime(dashboard=True, dashboard_host="10.0.0.1")


# -- the command ---------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    COMMAND.add_arguments(parser)
    return parser.parse_args(argv)


def test_command_options_are_checked_before_anything_starts() -> None:
    assert COMMAND.name == "dashboard"
    options = options_from_args(parse("--port", "0", "--simulate", "--quick", "--rounds", "2"))
    assert (options.port, options.simulate, options.rounds) == (0, True, 2)
    assert options.config.strategies == ("asyncperf",)
    assert not options.config.isolate
    bad = {
        ("--host", "0.0.0.0"): "--token",
        ("--port", "70000"): "--port",
        ("--duration", "0"): "--duration",
        ("--duration", "nan"): "--duration",
        ("--simulate", "--rounds", "0"): "--rounds",
        ("--rounds", "1"): "--simulate",
        ("--token", ""): "--token",
    }
    for argv, option in bad.items():
        with pytest.raises(UsageError, match=option):
            options_from_args(parse(*argv))


def test_command_reports_a_taken_port(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert COMMAND.run(parse("--port", str(port), "--loop", "asyncio")) == 1
    assert f"cannot serve on 127.0.0.1:{port}" in capsys.readouterr().out


async def test_serve_prints_the_url_and_stops_after_its_duration() -> None:
    lines: list[str] = []
    code = await serve(DashboardOptions(port=0, token="tk", duration=0.05), lines.append)
    assert code == 0
    assert lines[0].startswith("dashboard: http://127.0.0.1:")
    assert lines[0].endswith("/?token=tk")


async def test_serve_simulate_points_the_page_at_each_round_runtime() -> None:
    """A tiny simulator round runs behind the page; the page then shows its pools."""
    config = SimulationConfig.quick(
        strategies=("asyncperf",),
        isolate=False,
        disk_cache=False,
        sessions=40,
        warmup_seconds=0.05,
        steady_seconds=0.1,
        overload_seconds=0.2,
        recovery_seconds=0.05,
    )
    lines: list[str] = []
    round_done = asyncio.Event()

    def say(line: str) -> None:
        lines.append(line)
        if line.startswith("round 1 done"):
            round_done.set()

    serving = asyncio.create_task(
        serve(DashboardOptions(port=0, simulate=True, rounds=1, config=config), say)
    )
    try:
        await round_done.wait()
        port = int(lines[0].rsplit(":", 1)[1].strip("/"))
        stats = await get_json(port, "/api/stats")
        assert "upstream" in stats["pools"]  # the round's runtime, not the placeholder
        assert set(stats["sources"]["handlers"]) >= {"high.calls", "normal.calls", "low.calls"}
        calls = sum(stats["sources"]["handlers"][f"{k}.calls"] for k in ("high", "normal", "low"))
        assert calls > 0
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
