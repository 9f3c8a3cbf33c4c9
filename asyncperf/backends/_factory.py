"""The two backends a :class:`~asyncperf.Runtime` can run its shared parts on.

``Runtime(backend="local")`` (the default) builds :class:`LocalBackend`: the
limits and queues live in this process. ``Runtime(backend="redis://...")``
builds :class:`RedisBackend`: every process given the same URL and namespace
shares them, and the cache gains a Redis level. The handlers' code does not
change; what changes when the server cannot be reached is documented on
:class:`RedisBackend`.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from asyncperf.abc import Clock, LeasedQueue, RateLimiterBackend, SemaphoreBackend
from asyncperf.backends._local import LocalRateLimiter, LocalSemaphore
from asyncperf.backends._local_queue import LocalLeasedQueue
from asyncperf.queues import Level, RateLimiter
from asyncperf.runtime._backend import Backend, FailMode, redact_url

if TYPE_CHECKING:
    import redis.asyncio as redis_asyncio

    from asyncperf.backends.redis import RedisCacheLevel

__all__ = ["LocalBackend", "RedisBackend", "open_backend"]

_SCHEMES = ("redis://", "rediss://", "unix://")


def _check_namespace(namespace: object) -> str:
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, not {type(namespace).__name__}")
    if not namespace or "{" in namespace or "}" in namespace:
        raise ValueError(f"namespace must be non-empty and without braces, not {namespace!r}")
    return namespace


class LocalBackend:
    """Shared parts in this process: an ``asyncio`` semaphore, a GCRA limiter, a leased queue.

    Nothing here is seen by another process; ``start`` and the parts never fail
    for want of a server. There is no shared cache level (the runtime's memory
    and disk levels are the cache).
    """

    def __init__(self, namespace: str = "asyncperf") -> None:
        self._namespace = _check_namespace(namespace)
        self._semaphores: dict[str, LocalSemaphore] = {}
        self._limiters: dict[str, LocalRateLimiter] = {}
        self._queues: dict[str, LocalLeasedQueue[Any]] = {}

    @property
    def url(self) -> str:
        return "local"

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def shared(self) -> bool:
        return False

    async def start(self) -> None:
        """Nothing to reach: returns at once."""

    def semaphore(self, name: str, limit: int) -> SemaphoreBackend:
        semaphore = self._semaphores.get(name)
        if semaphore is None:
            semaphore = self._semaphores[name] = LocalSemaphore(name, limit)
        return semaphore

    def rate_limiter(
        self, name: str, rate: float, per: float, burst: int, clock: Clock
    ) -> RateLimiterBackend:
        limiter = self._limiters.get(name)
        if limiter is None:
            limiter = LocalRateLimiter(RateLimiter(rate, per, burst=burst, clock=clock))
            self._limiters[name] = limiter
        return limiter

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
        queue = self._queues.get(name)
        if queue is None:
            queue = LocalLeasedQueue(
                levels,
                default_priority=default_priority,
                lease=lease,
                max_attempts=max_attempts,
                dedupe_ttl=dedupe_ttl,
                clock=clock,
            )
            self._queues[name] = queue
        return queue

    def cache_level(self) -> None:
        return None

    async def aclose(self) -> None:
        for semaphore in self._semaphores.values():
            await semaphore.aclose()
        for queue in self._queues.values():
            await queue.aclose()

    def __repr__(self) -> str:
        return f"<LocalBackend namespace={self._namespace!r}>"


class RedisBackend:
    """Shared parts on one Redis server, for every process with the same URL and namespace.

    - **limits**: :class:`~asyncperf.backends.redis.RedisSemaphore` and
      :class:`~asyncperf.backends.redis.RedisRateLimiter`. When Redis cannot be
      reached they fail as ``fail`` says: ``"closed"`` (the default) refuses
      the call (the runtime raises :class:`~asyncperf.Rejected`, reason
      ``backend_unavailable``), ``"open"`` admits it without the limit and
      counts it as ``failed_open``.
    - **queues**: :class:`~asyncperf.backends.redis.RedisPriorityQueue`
      (at-least-once). Unreachable: ``put`` and ``take`` raise
      :class:`~asyncperf.BackendUnavailable`, never a silent local fallback.
    - **cache**: a :class:`~asyncperf.backends.redis.RedisCacheLevel` below the
      runtime's own levels, and one load per key across processes for cached
      handlers. Unreachable: a read is a miss and a write is skipped (both counted).

    Keys are ``asyncperf:{NAMESPACE:...}``: two services on one server stay
    apart by namespace. The connection is made on first use;
    :meth:`start` checks it. The client is closed by :meth:`aclose`.

    Args:
        url: ``redis://``, ``rediss://`` (TLS) or ``unix://``; a password in it is used
            unless ``password`` is given.
        namespace: the prefix of every key.
        password: the server's password (``requirepass`` or an ACL user's).
        ssl_context: TLS settings (certificates, verification) for a ``rediss://`` URL.
        fail: what the limits do when Redis cannot be reached, ``"closed"`` or ``"open"``.

    Raises:
        ValueError: a bad URL, namespace or fail mode, or ``ssl_context`` without ``rediss://``.
        ModuleNotFoundError: redis-py is not installed (``pip install 'asyncperf[redis]'``).
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "asyncperf",
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        fail: FailMode = "closed",
    ) -> None:
        self._namespace = _check_namespace(namespace)
        if fail not in ("closed", "open"):
            raise ValueError(f"fail must be 'closed' or 'open', not {fail!r}")
        self._fail: FailMode = fail
        self._url = redact_url(url)
        try:
            from asyncperf.backends.redis import connect
        except ModuleNotFoundError as exc:  # pragma: no cover - the extra is in dev
            raise ModuleNotFoundError(
                f"backend {self._url!r} needs redis-py: pip install 'asyncperf[redis]'"
            ) from exc
        self._client: redis_asyncio.Redis = connect(url, password=password, ssl_context=ssl_context)
        self._semaphores: dict[str, SemaphoreBackend] = {}
        self._limiters: dict[str, RateLimiterBackend] = {}
        self._queues: dict[str, LeasedQueue[Any]] = {}
        self._cache: RedisCacheLevel | None = None
        self._closed = False

    @property
    def url(self) -> str:
        return self._url

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def shared(self) -> bool:
        return True

    @property
    def client(self) -> redis_asyncio.Redis:
        """The redis-py client every part of this backend uses."""
        return self._client

    async def start(self) -> None:
        from asyncperf.backends.redis import translate_errors

        with translate_errors(f"connecting to {self._url}"):
            await self._client.ping()

    def semaphore(self, name: str, limit: int) -> SemaphoreBackend:
        from asyncperf.backends.redis import RedisSemaphore

        semaphore = self._semaphores.get(name)
        if semaphore is None:
            semaphore = RedisSemaphore(
                self._client, name, limit, namespace=self._namespace, fail=self._fail
            )
            self._semaphores[name] = semaphore
        return semaphore

    def rate_limiter(
        self, name: str, rate: float, per: float, burst: int, clock: Clock
    ) -> RateLimiterBackend:
        # The server's clock decides, for every process alike: ``clock`` is not used.
        from asyncperf.backends.redis import RedisRateLimiter

        limiter = self._limiters.get(name)
        if limiter is None:
            limiter = RedisRateLimiter(
                self._client,
                name,
                rate,
                per,
                burst=burst,
                namespace=self._namespace,
                fail=self._fail,
            )
            self._limiters[name] = limiter
        return limiter

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
        from asyncperf.backends.redis import RedisPriorityQueue

        queue = self._queues.get(name)
        if queue is None:
            queue = RedisPriorityQueue(
                self._client,
                f"{self._namespace}:queue:{name}",
                levels=levels,
                default_priority=default_priority,
                lease=lease,
                max_attempts=max_attempts,
                dedupe_ttl=dedupe_ttl,
            )
            self._queues[name] = queue
        return queue

    def cache_level(self) -> RedisCacheLevel:
        from asyncperf.backends.redis import RedisCacheLevel

        if self._cache is None:
            self._cache = RedisCacheLevel(self._client, namespace=f"{self._namespace}:cache")
        return self._cache

    async def aclose(self) -> None:
        """Give back held slots, close the cache level and the client. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            for semaphore in self._semaphores.values():
                await semaphore.aclose()
            if self._cache is not None:
                await self._cache.aclose()
        finally:
            await self._client.aclose()

    def __repr__(self) -> str:
        return f"<RedisBackend {self._url} namespace={self._namespace!r}>"


def open_backend(
    url: str,
    *,
    namespace: str = "asyncperf",
    password: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    fail: FailMode = "closed",
) -> Backend:
    """:class:`LocalBackend` for ``"local"``, :class:`RedisBackend` for a Redis URL.

    Raises:
        ValueError: ``url`` is neither (the password of a URL is not repeated in the message).
    """
    if not isinstance(url, str):
        raise TypeError(f"backend must be a str, not {type(url).__name__}")
    if url == "local":
        if password is not None or ssl_context is not None:
            raise ValueError("a password or TLS settings need a Redis backend URL, not 'local'")
        return LocalBackend(namespace)
    if url.startswith(_SCHEMES):
        return RedisBackend(
            url, namespace=namespace, password=password, ssl_context=ssl_context, fail=fail
        )
    raise ValueError(
        f"backend must be 'local' or a redis://, rediss:// or unix:// URL, not {redact_url(url)!r}"
    )
