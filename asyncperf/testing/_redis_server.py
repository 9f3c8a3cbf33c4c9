"""A private Redis server for tests and benchmarks: 127.0.0.1, a free port, a password,
no persistence.

Started once per test session by the ``redis_server`` fixture (tests/conftest.py),
and by ``python -m bench.redis_queue``; stopped by its process id. Without
``redis-server`` on the PATH the Redis tests are skipped, except where
``ASYNCPERF_REQUIRE_REDIS=1`` (CI) makes that a failure: there the Makefile
installs it (scripts/install-redis.sh).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RedisServer", "start_redis"]


@dataclass(frozen=True, slots=True)
class RedisServer:
    """A running server: where it listens, its password, its process."""

    host: str
    port: int
    password: str
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/0"

    def stop(self) -> None:
        """Stop it by its process id (SIGTERM, then SIGKILL after 5 s) and remove its files."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(binary: str = "redis-server", timeout: float = 10.0) -> RedisServer:
    """Start a server and wait until it answers PING.

    Raises:
        FileNotFoundError: ``binary`` is not installed.
        RuntimeError: it did not come up within ``timeout`` seconds.
    """
    path = shutil.which(binary)
    if path is None:
        raise FileNotFoundError(f"{binary} is not installed (scripts/install-redis.sh)")
    directory = Path(tempfile.mkdtemp(prefix="asyncperf-redis-"))
    password = secrets.token_hex(16)
    for _attempt in range(5):  # a free port can be taken between the check and the bind
        port = _free_port()
        process = subprocess.Popen(
            [
                path,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--requirepass",
                password,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(port, password):
                return RedisServer("127.0.0.1", port, password, process, directory)
            time.sleep(0.05)  # start-up poll of an external process, not a test's settle
        if process.poll() is None:
            process.kill()
            process.wait()
    shutil.rmtree(directory, ignore_errors=True)
    raise RuntimeError("redis-server did not start (5 attempts on free ports)")


def _answers(port: int, password: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            reply = b""
            while b"PONG" not in reply:
                chunk = sock.recv(64)
                if not chunk:
                    return False
                reply += chunk
            return True
    except OSError:
        return False
