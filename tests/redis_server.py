"""The private Redis server of the tests (re-exported: it lives in asyncperf.testing,
where the benchmarks can import it too)."""

from asyncperf.testing._redis_server import RedisServer, start_redis

__all__ = ["RedisServer", "start_redis"]
