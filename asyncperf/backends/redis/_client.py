"""Connecting to Redis, and Redis errors told once in asyncperf's terms.

Every Redis primitive of this package takes a ``redis.asyncio.Redis`` made by
:func:`connect` (or the caller's own) and wraps each round trip in
:func:`translate_errors`, so users catch :class:`~asyncperf.BackendUnavailable`
and :class:`~asyncperf.BackendError`, never redis-py's exception tree.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from typing import Any

import redis.asyncio as redis_asyncio
from redis import exceptions as redis_errors

from asyncperf._errors import BackendError, BackendUnavailable

__all__ = ["connect", "key_join", "translate_errors"]


def connect(
    url: str,
    *,
    password: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 5.0,
    protocol: int = 2,
    **options: Any,
) -> redis_asyncio.Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` for TLS, ``unix://``).

    Args:
        url: where the server is; a password in the URL is used unless ``password`` is given.
        password: the server's password (``requirepass`` / ACL), overriding the URL's.
        ssl_context: TLS settings for a ``rediss://`` URL (certificates, verification).
        timeout: seconds for connecting and for each command before
            :class:`~asyncperf.BackendUnavailable` is raised.
        protocol: RESP version. 2 by default: client-side-caching invalidations
            arrive as pub/sub messages only on a RESP2 connection.
        options: passed on to ``redis.asyncio.Redis.from_url``.

    Raises:
        ValueError: ``url`` is not a Redis URL, or ``timeout`` is not positive.
    """
    if not str(url).startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"url must be a redis://, rediss:// or unix:// URL, not {url!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0, not {timeout!r}")
    if ssl_context is not None:
        if not url.startswith("rediss://"):
            raise ValueError("ssl_context needs a rediss:// url")
        options["ssl_context"] = ssl_context  # pragma: no cover - no TLS server in the tests
    client = redis_asyncio.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        protocol=protocol,
        decode_responses=False,
        **options,
    )
    if password is not None:
        # from_url lets the URL's own password win over a keyword: set it afterwards.
        client.connection_pool.connection_kwargs["password"] = password
    return client


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Raise Redis's errors inside the block as asyncperf's, naming ``what`` was being done.

    Connection failures and timeouts become :class:`~asyncperf.BackendUnavailable`;
    every other Redis error (a failed script, a wrong type, an auth error)
    becomes :class:`~asyncperf.BackendError`. The original is the cause.
    """
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
        if isinstance(exc, redis_errors.AuthenticationError):
            raise BackendError(f"{what}: Redis refused the credentials: {exc}") from exc
        raise BackendUnavailable(f"{what}: Redis is unreachable: {exc}") from exc
    except redis_errors.RedisError as exc:
        raise BackendError(f"{what}: Redis answered with an error: {exc}") from exc


def key_join(namespace: str, *parts: str) -> str:
    """One Redis key from a namespace and parts: ``asyncperf:{jobs}:ready``.

    The namespace is wrapped in a hash tag (``{...}``) so that every key of one
    primitive lands in the same Redis Cluster slot, which multi-key scripts need.
    """
    if not namespace or "{" in namespace or "}" in namespace:
        raise ValueError(f"namespace must be a non-empty string without braces, not {namespace!r}")
    return ":".join(("asyncperf", "{" + namespace + "}", *parts))
