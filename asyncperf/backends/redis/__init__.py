"""Redis backends (the extra ``asyncperf[redis]``): redis-py's asyncio client.

- :func:`connect` makes a client (RESP2, a password, TLS options, timeouts);
  :func:`translate_errors` turns Redis's errors into
  :class:`~asyncperf.BackendUnavailable` / :class:`~asyncperf.BackendError`.
- :class:`RedisCacheLevel`: a cache level for :class:`~asyncperf.TieredCache`,
  with a near cache kept fresh by client-side-caching invalidations and a
  cross-process single-flight lock.
- :class:`RedisPriorityQueue`: jobs as leases (at-least-once), priorities,
  per-level bounds and drop strategies, dead letters, dedupe keys.
- :class:`RedisSemaphore`: a concurrency limit across processes, held as leases
  that a crashed holder's slots come back from.
- :class:`RedisRateLimiter`: GCRA in one Lua script on the server's clock,
  exact across processes.
"""

from asyncperf.backends.redis._cache import RedisCacheLevel, RedisCacheStatistics
from asyncperf.backends.redis._client import connect, key_join, translate_errors
from asyncperf.backends.redis._queue import RedisPriorityQueue
from asyncperf.backends.redis._rate import RedisRateLimiter, RedisRateLimiterStatistics
from asyncperf.backends.redis._semaphore import RedisSemaphore, RedisSemaphoreStatistics

__all__ = [
    "RedisCacheLevel",
    "RedisCacheStatistics",
    "RedisPriorityQueue",
    "RedisRateLimiter",
    "RedisRateLimiterStatistics",
    "RedisSemaphore",
    "RedisSemaphoreStatistics",
    "connect",
    "key_join",
    "translate_errors",
]
