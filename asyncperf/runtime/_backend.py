"""Backend: where a runtime's shared parts live, in this process or on Redis.

The runtime knows backends only through the :class:`Backend` protocol below.
The implementations are in ``asyncperf.backends`` (layer 9, above the
runtime: they plug into it), which the runtime reaches by name through
:func:`open_backend`, the one place where a lower layer looks a higher one up,
as it would an entry point. So ``import asyncperf`` never loads a Redis client,
and a runtime that needs no shared part never loads the backends at all.
"""

from __future__ import annotations

import importlib
import ssl
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from asyncperf.abc import Clock, LeasedQueue, RateLimiterBackend, SemaphoreBackend
from asyncperf.cache._base import CacheLevel
from asyncperf.queues import Level

__all__ = ["Backend", "FailMode", "SharedCacheLevel", "open_backend", "redact_url"]

V = TypeVar("V")

#: What a shared limit does when its backend cannot be reached: refuse, or admit.
FailMode = Literal["closed", "open"]


@runtime_checkable
class SharedCacheLevel(CacheLevel, Protocol):
    """A cache level shared by processes, which can also make their loads of a key one."""

    def shared_loader(
        self, key: Hashable, loader: Callable[[], Awaitable[V]], ttl: float | None = None
    ) -> Callable[[], Awaitable[V]]:
        """``loader`` wrapped so that one process loads ``key`` while the others wait for it."""
        ...


@runtime_checkable
class Backend(Protocol):
    """The factory of a runtime's shared parts: limits, leased queues, a shared cache level.

    ``asyncperf.backends.LocalBackend`` keeps them in this process (one event
    loop); ``asyncperf.backends.RedisBackend`` puts them on a Redis server, so
    every process given the same URL and namespace shares them. Parts are made
    once per name and closed by :meth:`aclose`.
    """

    @property
    def url(self) -> str:
        """``"local"``, or the server's URL with any password replaced by ``***``."""
        ...

    @property
    def namespace(self) -> str:
        """The prefix of every shared name: runtimes share parts only within one namespace."""
        ...

    @property
    def shared(self) -> bool:
        """Whether other processes can share these parts (False in process)."""
        ...

    async def start(self) -> None:
        """Check that the backend answers.

        Raises:
            BackendUnavailable: it cannot be reached.
            BackendError: it refused (bad credentials, an error reply).
        """
        ...

    def semaphore(self, name: str, limit: int) -> SemaphoreBackend:
        """The concurrency limit ``name`` (the same object for the same name)."""
        ...

    def rate_limiter(
        self, name: str, rate: float, per: float, burst: int, clock: Clock
    ) -> RateLimiterBackend:
        """The rate limit ``name`` (the same object for the same name)."""
        ...

    def queue(
        self,
        name: str,
        *,
        levels: Iterable[Level] | None,
        default_priority: int | None,
        lease: float,
        max_attempts: int,
        dedupe_ttl: float,
        clock: Clock,
    ) -> LeasedQueue[Any]:
        """The leased queue ``name`` (the same object for the same name)."""
        ...

    def cache_level(self) -> SharedCacheLevel | None:
        """A cache level every sharing process reads and writes (None in process)."""
        ...

    async def aclose(self) -> None:
        """Give back held slots, close the queues and the connection. Idempotent."""
        ...


def open_backend(
    url: str,
    *,
    namespace: str,
    password: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    fail: FailMode = "closed",
) -> Backend:
    """The backend for ``url``: ``"local"``, or a ``redis://``, ``rediss://`` or ``unix://`` URL.

    Raises:
        ValueError: ``url`` is neither, or ``namespace`` is empty or holds braces.
        ModuleNotFoundError: a Redis URL without the ``asyncperf[redis]`` extra installed.
    """
    backends = importlib.import_module("asyncperf.backends")
    backend: Backend = backends.open_backend(
        url, namespace=namespace, password=password, ssl_context=ssl_context, fail=fail
    )
    return backend


def redact_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``."""
    scheme, separator, rest = url.partition("://")
    if not separator or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user, colon, _password = credentials.partition(":")
    hidden = f"{user}:***" if colon else "***"
    return f"{scheme}://{hidden}@{host}"
