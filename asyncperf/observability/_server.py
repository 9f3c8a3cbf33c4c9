"""DashboardServer: the live dashboard, ``/metrics`` and the JSON API over plain asyncio streams.

A deliberately small HTTP/1.1 server (``asyncio.start_server``, one request per
connection, ``Connection: close``): the runtime should not pull a web framework
into every service that wants a status page. Routes:

- ``GET /``                 the dashboard page (HTML, with its JS and CSS under ``/static/``)
- ``GET /metrics``          the Prometheus text format (``Metrics.prometheus_text()``)
- ``GET /api/stats``        a JSON snapshot taken now (``Metrics.snapshot()``)
- ``GET /api/history``      the last ``history`` snapshots of the sampler, oldest first
- ``GET /api/stream``       Server-Sent Events: each new sample (about one a second)

A sampler task takes one snapshot per ``interval`` seconds, keeps the last
``history`` of them (the page draws its charts from them at once on load) and
pushes each to the open event streams. Each snapshot gets ``seq``, its number
since the server started, so a reader can tell a fresh one from one it has seen.

Security: the server binds to 127.0.0.1 by default. Binding any other address
needs a ``token``; with a token every request must carry it, as
``Authorization: Bearer TOKEN`` or ``?token=TOKEN`` (the page passes the one it
was opened with on to its API calls), compared in constant time. Without a
token, requests whose ``Host`` header is not a loopback name are refused (403),
so a web page elsewhere cannot read the metrics through DNS rebinding.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.resources
import ipaddress
import json
import logging
import math
import time
from collections import deque
from collections.abc import Mapping
from http import HTTPStatus
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import parse_qs, urlsplit

from asyncperf._validate import check_int, check_number

__all__ = ["DashboardServer", "MetricsSource"]

logger = logging.getLogger("asyncperf.observability.dashboard")

#: The page's files (package data under ``asyncperf/observability/dashboard/``) by route.
_STATIC: Mapping[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
# Everything the page needs comes from this server; nothing may load from elsewhere.
_SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
#: The largest request head (request line and headers) read, bytes.
_MAX_HEAD = 16 * 1024
#: Seconds a client has to send its request head.
_HEAD_TIMEOUT = 10.0
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


class MetricsSource(Protocol):
    """What the server reads: :class:`~asyncperf.observability.Metrics` has this shape."""

    @property
    def CONTENT_TYPE(self) -> str:
        """The Content-Type of :meth:`prometheus_text`."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """Every metric now, as JSON-able values."""
        ...

    def prometheus_text(self) -> bytes:
        """Every metric now, in the Prometheus text exposition format."""
        ...


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 maybe in brackets) is this machine only."""
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _check_host(host: object) -> str:
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    if not host:
        raise ValueError("host must not be empty (use 127.0.0.1, or 0.0.0.0 with a token)")
    return host


def _host_of(header: str) -> str:
    """The host part of a ``Host`` header (drops the port; keeps IPv6 brackets out)."""
    header = header.strip()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def jsonable(value: Any) -> Any:
    """``value`` with NaN and infinities as None (browsers' JSON.parse refuses them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


def _encode(value: Any) -> bytes:
    return json.dumps(jsonable(value), separators=(",", ":"), default=str).encode()


class _HttpError(Exception):
    """Answer the request with ``status`` and ``message`` (plain text)."""

    def __init__(
        self, status: HTTPStatus, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class DashboardServer:
    """Serves the live dashboard, ``/metrics`` and the JSON API of a :class:`Metrics`.

    Use it as an async context manager (or :meth:`start` and :meth:`aclose`)::

        metrics = Metrics()
        metrics.add_pool(pool)
        async with DashboardServer(metrics, port=8321) as server:
            print("dashboard at", server.url)
            ...

    Args:
        metrics: what is served (anything with ``snapshot()``, ``prometheus_text()``
            and ``CONTENT_TYPE``); :attr:`metrics` may be replaced while serving.
        host: the address to bind (default 127.0.0.1: this machine only).
        port: the TCP port (0: any free one; :attr:`port` says which).
        token: a secret every request must carry (``Authorization: Bearer TOKEN``
            or ``?token=TOKEN``); required when ``host`` is not a loopback address.
        history: samples kept for ``/api/history`` (one per ``interval``).
        interval: seconds between two samples (and two events of ``/api/stream``).

    Raises:
        ValueError: ``host`` is not loopback and no ``token`` is given, an empty
            ``token``, or ``history``/``interval`` out of range (each names the parameter).
        TypeError: a parameter of the wrong type.
    """

    def __init__(
        self,
        metrics: MetricsSource,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        history: int = 300,
        interval: float = 1.0,
    ) -> None:
        host = _check_host(host)
        port = check_int("port", port, minimum=0)
        if port > 65_535:
            raise ValueError(f"port must be <= 65535, not {port}")
        if token is not None:
            if not isinstance(token, str):
                raise TypeError(f"token must be a str or None, not {type(token).__name__}")
            if not token or token != token.strip():
                raise ValueError("token must be a non-empty str without surrounding spaces")
        if token is None and not is_loopback(host):
            raise ValueError(
                f"host {host!r} is reachable from other machines: pass a token "
                "(token=... / --token) that every request must carry, or bind 127.0.0.1"
            )
        self.metrics = metrics
        self._host = host
        self._requested_port = port
        self._token = None if token is None else token.encode()
        self._history_size = check_int("history", history, minimum=1)
        self._interval = check_number("interval", interval)
        self._history: deque[tuple[dict[str, Any], bytes]] = deque(maxlen=self._history_size)
        self._seq = 0
        self._server: asyncio.Server | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._streams: set[asyncio.Queue[bytes]] = set()
        self._files: dict[str, bytes] = {}
        self._closed = False
        #: Requests received (one per connection), answered or refused.
        self.requests = 0

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Bind, take the first sample and start the sampler.

        Raises:
            RuntimeError: the server was started before (create a new one).
            OSError: the address cannot be bound (e.g. the port is taken).
        """
        if self._server is not None or self._closed:
            raise RuntimeError("a DashboardServer can be started only once; create a new one")
        # Read the page's files once: a missing one is a packaging bug, found at start.
        package = importlib.resources.files("asyncperf.observability") / "dashboard"
        for route, (name, _) in _STATIC.items():
            self._files[route] = package.joinpath(name).read_bytes()
        self._server = await asyncio.start_server(
            self._serve_connection, self._host, self._requested_port, limit=_MAX_HEAD
        )
        self._sample()
        self._sampler = asyncio.create_task(self._sample_every_interval(), name="dashboard-sampler")
        logger.info("dashboard serving at %s", self.url)

    async def aclose(self) -> None:
        """Stop sampling, close the listening socket and every open connection. Idempotent."""
        self._closed = True
        tasks: list[asyncio.Task[Any]] = []
        if self._sampler is not None:
            self._sampler.cancel()
            tasks.append(self._sampler)
        if self._server is not None:
            self._server.close()
        # Event streams never end on their own; the rest are cut short too.
        for connection in list(self._connections):
            connection.cancel()
            tasks.append(connection)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def serving(self) -> bool:
        """True from :meth:`start` until :meth:`aclose`."""
        return self._server is not None and not self._closed

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound TCP port.

        Raises:
            RuntimeError: the server has not been started.
        """
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the server is not started: no port is bound yet")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """The page's address (``http://127.0.0.1:PORT/``); add ``?token=`` when it needs one."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/"

    @property
    def history(self) -> list[dict[str, Any]]:
        """The samples kept, oldest first."""
        return [snapshot for snapshot, _ in self._history]

    # -- sampling -----------------------------------------------------------------

    def _sample(self) -> None:
        """Take one snapshot, keep it, and push it to every open event stream."""
        try:
            snapshot = dict(self.metrics.snapshot())
        except Exception:
            # A failing source must not stop the page; the next sample may work.
            logger.exception("the dashboard's snapshot failed")
            return
        self._seq += 1
        snapshot["seq"] = self._seq
        snapshot.setdefault("time", time.time())
        encoded = _encode(snapshot)
        self._history.append((snapshot, encoded))
        for stream in self._streams:
            if stream.full():  # a slow reader loses its oldest sample, not the newest
                stream.get_nowait()
            stream.put_nowait(encoded)

    async def _sample_every_interval(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            # Ticks on a fixed grid, so a slow snapshot does not drift the series.
            next_at += self._interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if loop.time() - next_at > self._interval:
                next_at = loop.time()  # the loop was blocked for a while: skip, don't burst
            self._sample()

    # -- HTTP ---------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: nothing to answer
        except asyncio.CancelledError:
            if not self._closed:
                raise
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        try:
            method, path, query, headers = await self._read_head(reader)
            self._authorize(headers, query)
            if method not in ("GET", "HEAD"):
                raise _HttpError(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"{method} is not allowed: use GET",
                    (("Allow", "GET, HEAD"),),
                )
            if path == "/api/stream" and method == "GET":
                await self._stream(writer)
                return
            status, content_type, body = self._route(path)
        except _HttpError as error:
            status, content_type = error.status, _TEXT
            body = f"{error.status.value} {error.status.phrase}: {error.message}\n".encode()
            self._respond(writer, status, content_type, body, error.headers, head=False)
        else:
            self._respond(writer, status, content_type, body, (), head=method == "HEAD")
        await writer.drain()

    async def _read_head(
        self, reader: asyncio.StreamReader
    ) -> tuple[str, str, dict[str, list[str]], dict[str, str]]:
        """The method, path, query and headers (lower-case names) of the request."""
        try:
            async with asyncio.timeout(_HEAD_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise _HttpError(HTTPStatus.BAD_REQUEST, "request head too large") from None
        except TimeoutError:
            raise _HttpError(HTTPStatus.BAD_REQUEST, "request head not received in time") from None
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise _HttpError(HTTPStatus.BAD_REQUEST, "malformed request line") from None
        if not version.startswith("HTTP/1.") or not target.startswith("/"):
            raise _HttpError(HTTPStatus.BAD_REQUEST, "expected 'METHOD /path HTTP/1.x'")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise _HttpError(HTTPStatus.BAD_REQUEST, f"malformed header line {line[:40]!r}")
            headers[name.lower()] = value.strip()
        parts = urlsplit(target)
        return method, parts.path, parse_qs(parts.query), headers

    def _authorize(self, headers: Mapping[str, str], query: Mapping[str, list[str]]) -> None:
        """Check the token (when there is one), else that the Host is a loopback name."""
        if self._token is None:
            host = headers.get("host")
            if host is not None and not is_loopback(_host_of(host)):
                raise _HttpError(
                    HTTPStatus.FORBIDDEN,
                    f"Host {host!r} is not allowed: this dashboard answers loopback names only",
                )
            return
        offered = ""
        authorization = headers.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer":
            offered = credentials.strip()
        elif "token" in query:
            offered = query["token"][-1]
        if not hmac.compare_digest(offered.encode(), self._token):
            raise _HttpError(
                HTTPStatus.UNAUTHORIZED,
                "a valid token is needed: 'Authorization: Bearer TOKEN' or '?token=TOKEN'",
                (("WWW-Authenticate", 'Bearer realm="asyncperf"'),),
            )

    def _route(self, path: str) -> tuple[HTTPStatus, str, bytes]:
        if path in _STATIC:
            return HTTPStatus.OK, _STATIC[path][1], self._files[path]
        if path == "/metrics":
            return HTTPStatus.OK, self.metrics.CONTENT_TYPE, self.metrics.prometheus_text()
        if path == "/api/stats":
            snapshot = dict(self.metrics.snapshot())
            snapshot["seq"] = self._seq
            return HTTPStatus.OK, _JSON, _encode(snapshot)
        if path == "/api/history":
            samples = b",".join(encoded for _, encoded in self._history)
            body = b'{"interval":%s,"snapshots":[%s]}' % (
                json.dumps(self._interval).encode(),
                samples,
            )
            return HTTPStatus.OK, _JSON, body
        raise _HttpError(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    @staticmethod
    def _respond(
        writer: asyncio.StreamWriter,
        status: HTTPStatus,
        content_type: str,
        body: bytes,
        extra: tuple[tuple[str, str], ...],
        *,
        head: bool,
    ) -> None:
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in (*_SECURITY_HEADERS, *extra)),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head:
            writer.write(body)

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        """Server-Sent Events: the latest sample at once, then each new one."""
        head = [
            "HTTP/1.1 200 OK",
            "Content-Type: text/event-stream",
            "Connection: close",
            *(f"{name}: {value}" for name, value in _SECURITY_HEADERS),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        # Reconnect after 2 s if the connection drops (EventSource does so by itself).
        writer.write(b"retry: 2000\n\n")
        stream: asyncio.Queue[bytes] = asyncio.Queue(maxsize=8)
        if self._history:
            stream.put_nowait(self._history[-1][1])
        self._streams.add(stream)
        try:
            while True:
                data = await stream.get()
                writer.write(b"data: " + data + b"\n\n")
                await writer.drain()
        finally:
            self._streams.discard(stream)
