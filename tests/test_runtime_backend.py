"""Runtime(backend=...): the handlers' shared parts in process or on Redis.

The Redis tests run two runtimes in one test, each with its own connection
pool, as two processes of one service would: what one admits, holds or caches,
the other sees. Unreachable Redis is made real by pointing a running
runtime's connection pool at a closed port.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

import asyncperf as ap
from asyncperf.backends import LocalBackend, RedisBackend, open_backend
from asyncperf.testing import wait_until
from tests.redis_server import RedisServer

# Network round trips take many loop passes.
MAX_YIELDS = 1_000_000


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def runtime(**options: Any) -> ap.Runtime:
    """A small runtime without the supervisor (no timers the tests do not need)."""
    return ap.Runtime(autoscale=False, max_workers=8, **options)


class Peak:
    """Counts bodies running at once, and holds them until ``gate`` is set."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0
        self.entered = 0
        self.gate = asyncio.Event()

    async def run(self, value: int) -> int:
        self.active += 1
        self.entered += 1
        self.peak = max(self.peak, self.active)
        try:
            await self.gate.wait()
        finally:
            self.active -= 1
        return value


# -- configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"backend": "http://example.com"}, ValueError, "backend must be 'local' or a redis://"),
        ({"backend": 5}, TypeError, "backend must be a str"),
        ({"namespace": "a{b}"}, ValueError, "namespace must not hold braces"),
        ({"namespace": ""}, ValueError, "namespace must not be empty"),
        ({"redis_password": "x"}, ValueError, "redis_password needs a Redis backend"),
        (
            {"backend": "redis://127.0.0.1:6379/0", "redis_tls_ca_file": "ca.pem"},
            ValueError,
            "redis_tls_ca_file needs a rediss:// backend URL",
        ),
        (
            {"backend": "rediss://127.0.0.1:6379/0", "redis_tls_key_file": "key.pem"},
            ValueError,
            "redis_tls_key_file needs redis_tls_cert_file",
        ),
        ({"limits_fail": "maybe"}, ValueError, "limits_fail must be one of"),
        ({"backend": "redis://"}, None, None),  # accepted: a URL, checked when connecting
    ],
)
def test_backend_settings_are_checked(
    options: dict[str, Any], error: type[Exception] | None, message: str | None
) -> None:
    if error is None:
        assert ap.RuntimeConfig(**options).backend == options["backend"]
        return
    with pytest.raises(error, match=message):
        ap.RuntimeConfig(**options)


def test_password_is_kept_out_of_repr_and_errors() -> None:
    config = ap.RuntimeConfig(backend="redis://127.0.0.1:6379/0", redis_password="s3cret")
    assert "s3cret" not in repr(config)
    with pytest.raises(ValueError, match="backend must be") as caught:
        ap.RuntimeConfig(backend="http://user:s3cret@host/")
    assert "s3cret" not in str(caught.value)
    assert "user:***@host" in str(caught.value)


def test_backend_settings_from_env_and_toml(tmp_path: Path) -> None:
    config = ap.RuntimeConfig.from_env(
        {
            "ASYNCPERF_BACKEND": "rediss://127.0.0.1:6380/0",
            "ASYNCPERF_NAMESPACE": "svc",
            "ASYNCPERF_REDIS_PASSWORD": "pw",
            "ASYNCPERF_LIMITS_FAIL": "open",
        }
    )
    assert (config.backend, config.namespace, config.redis_password, config.limits_fail) == (
        "rediss://127.0.0.1:6380/0",
        "svc",
        "pw",
        "open",
    )
    with pytest.raises(ValueError, match=r"^ASYNCPERF_BACKEND must be"):
        ap.RuntimeConfig.from_env({"ASYNCPERF_BACKEND": "memcached://x"})
    file = tmp_path / "asyncperf.toml"
    file.write_text(
        'backend = "rediss://127.0.0.1:6380/0"\n'
        'redis_tls_ca_file = "certs/ca.pem"\n'
        "[handlers.call]\nglobal_concurrency = 3\n"
    )
    config = ap.RuntimeConfig.from_toml(file)
    assert config.redis_tls_ca_file == str(tmp_path / "certs" / "ca.pem")
    assert config.handlers["call"].global_concurrency == 3
    # The CA file does not exist: that is said when the TLS context is made.
    with pytest.raises(FileNotFoundError, match="No such file"):
        config.ssl_context()


def test_open_backend_chooses_by_url() -> None:
    assert isinstance(open_backend("local", namespace="svc"), LocalBackend)
    with pytest.raises(ValueError, match="backend must be 'local' or a redis://"):
        open_backend("tcp://x", namespace="svc")
    with pytest.raises(ValueError, match="need a Redis backend URL"):
        open_backend("local", namespace="svc", password="pw")
    with pytest.raises(ValueError, match="namespace must be non-empty"):
        open_backend("local", namespace="{x}")


def test_global_concurrency_is_checked() -> None:
    rt = runtime()

    async def call() -> None:
        return None

    with pytest.raises(ValueError, match="global_concurrency must be >= 1"):
        rt.handler(global_concurrency=0)(call)
    with pytest.raises(TypeError, match="global_concurrency must be an int"):
        rt.handler(global_concurrency=1.5)(call)  # type: ignore[call-overload]


# -- the local backend -----------------------------------------------------------------


async def test_local_global_concurrency_bounds_bodies_within_the_process() -> None:
    peak = Peak()
    rt = runtime()
    call = rt.handler(name="call", concurrency=6, global_concurrency=2)(peak.run)
    async with rt:
        assert rt.statistics().backend == "local"
        tasks = [asyncio.create_task(call(i)) for i in range(6)]
        await wait_until(lambda: rt.statistics().global_limits["call"].waiting == 4)
        assert peak.active == 2
        peak.gate.set()
        assert await asyncio.gather(*tasks) == list(range(6))
    assert peak.peak == 2
    limits = rt.statistics().global_limits["call"]
    assert (limits.acquired, limits.released, limits.held) == (6, 6, 0)


async def test_local_queue_is_leased_and_closed_with_the_runtime() -> None:
    rt = runtime()
    async with rt:
        jobs = rt.queue("jobs")
        assert rt.queue("jobs") is jobs
        assert isinstance(jobs, ap.abc.LeasedQueue)
        await jobs.put({"n": 1}, priority=2)
        await jobs.put({"n": 0}, priority=0)
        async with jobs.lease() as job:
            assert job.item == {"n": 0}
        stats = await jobs.statistics()
        assert stats.acked == 1
    with pytest.raises(ap.QueueClosed):
        await jobs.put({"n": 2})
    with pytest.raises(ap.RuntimeNotRunning):
        rt.queue("other")


# -- Redis -----------------------------------------------------------------------------


async def test_unreachable_redis_fails_the_start_and_says_where() -> None:
    url = f"redis://:s3cret@127.0.0.1:{closed_port()}/0"
    rt = runtime(backend=url)
    with pytest.raises(ap.BackendUnavailable, match=r"connecting to redis://:\*\*\*@127") as caught:
        async with rt:
            pass
    assert "s3cret" not in str(caught.value)
    assert rt.statistics().state == "closed"


async def test_wrong_password_is_a_backend_error(redis_server: RedisServer) -> None:
    rt = runtime(backend=redis_server.url, redis_password="wrong")
    with pytest.raises(ap.BackendError, match=r"credentials|WRONGPASS|invalid"):
        async with rt:
            pass


async def test_rate_limit_is_shared_by_runtimes_of_one_namespace(redis_url: str) -> None:
    async def call() -> str:
        return "ok"

    first, second, other = (
        runtime(backend=redis_url, namespace=namespace, admission_timeout=0)
        for namespace in ("svc", "svc", "elsewhere")
    )
    handlers = [rt.handler(name="call", rate="2/min", burst=2)(call) for rt in (first, second)]
    elsewhere = other.handler(name="call", rate="2/min", burst=2)(call)
    async with first, second, other:
        assert first.statistics().backend == redis_url.replace(
            redis_url.split("@")[0], "redis://:***"
        )
        assert await handlers[0]() == "ok"
        assert await handlers[1]() == "ok"
        with pytest.raises(ap.RateLimited, match="shared rate limit 2/min") as caught:
            await handlers[0]()
        assert caught.value.retry_after > 0
        assert await elsewhere() == "ok"  # another namespace, another limit
        assert first.statistics().handlers["call"].rejections == {"rate_limited": 1}
        assert first.statistics().rate_limiters["call"].admitted_calls == 1


async def test_global_concurrency_holds_across_runtimes(redis_url: str) -> None:
    peak = Peak()
    runtimes = [runtime(backend=redis_url, namespace="svc") for _ in range(2)]
    calls = [rt.handler(name="call", global_concurrency=1)(peak.run) for rt in runtimes]
    async with runtimes[0], runtimes[1]:
        first = asyncio.create_task(calls[0](1))
        await wait_until(lambda: peak.entered == 1, max_yields=MAX_YIELDS)
        second = asyncio.create_task(calls[1](2))
        await wait_until(
            lambda: runtimes[1].statistics().global_limits["call"].waiting == 1,
            max_yields=MAX_YIELDS,
        )
        assert peak.active == 1  # the second runtime's body waits for the first's slot
        peak.gate.set()
        assert (await first, await second) == (1, 2)
    assert peak.peak == 1
    for rt in runtimes:
        limits = rt.statistics().global_limits["call"]
        assert (limits.acquired, limits.released, limits.lost) == (1, 1, 0)


async def test_cache_is_shared_and_loads_once_across_runtimes(redis_url: str) -> None:
    loads: list[int] = []
    release = asyncio.Event()

    async def square(n: int) -> int:
        loads.append(n)
        await release.wait()
        return n * n

    runtimes = [runtime(backend=redis_url, namespace="svc") for _ in range(2)]
    calls = [rt.handler(name="square", cache_ttl=60)(square) for rt in runtimes]
    async with runtimes[0], runtimes[1]:
        first = asyncio.create_task(calls[0](7))
        await wait_until(lambda: loads == [7], max_yields=MAX_YIELDS)
        # The second runtime misses its own levels, finds the first's load under way
        # (its lock on Redis), and waits for its value instead of loading again.
        second = asyncio.create_task(calls[1](7))
        await wait_until(lambda: runtimes[1].statistics().cache.misses == 1, max_yields=MAX_YIELDS)
        release.set()
        assert (await first, await second) == (49, 49)
        assert await calls[1](7) == 49  # from its own memory level now
    assert loads == [7]
    stats = runtimes[1].statistics().handlers["square"]
    assert (stats.succeeded, stats.cache_hits) == (2, 2)
    assert [level.name for level in runtimes[0].statistics().cache.levels][-1] == "redis"


async def test_queue_is_shared_by_runtimes(redis_url: str) -> None:
    producer, consumer = (runtime(backend=redis_url, namespace="svc") for _ in range(2))
    async with producer, consumer:
        assert await producer.queue("jobs").put({"n": 1}, priority=2) is not None
        assert await producer.queue("jobs").put({"n": 0}, priority=0) is not None
        jobs = consumer.queue("jobs")
        taken = []
        for _ in range(2):
            async with jobs.lease(timeout=5) as job:
                taken.append(job.item)
        assert taken == [{"n": 0}, {"n": 1}]
        assert (await jobs.statistics()).acked == 2


async def cut_off(rt: ap.Runtime) -> None:
    """Point the runtime's Redis connections at a closed port: Redis becomes unreachable."""
    backend = rt.backend
    assert isinstance(backend, RedisBackend)
    pool = backend.client.connection_pool
    await pool.disconnect()
    pool.reset()  # type: ignore[no-untyped-call]  # new connections use the settings below
    pool.connection_kwargs["port"] = closed_port()
    pool.connection_kwargs["socket_connect_timeout"] = 0.5


@pytest.mark.parametrize("fail", ["closed", "open"])
async def test_unreachable_redis_limits_fail_as_configured(redis_url: str, fail: str) -> None:
    ran: list[str] = []

    async def limited() -> str:
        ran.append("limited")
        return "ok"

    async def bounded() -> str:
        ran.append("bounded")
        return "ok"

    rt = runtime(backend=redis_url, namespace="svc", limits_fail=fail)
    limited_call = rt.handler(name="limited", rate="100/s", burst=10)(limited)
    bounded_call = rt.handler(name="bounded", global_concurrency=2)(bounded)
    async with rt:
        assert await limited_call() == "ok"  # reachable: admitted by Redis
        await cut_off(rt)
        if fail == "closed":
            for call in (limited_call, bounded_call):
                with pytest.raises(ap.Rejected, match="fails closed") as caught:
                    await call()
                assert caught.value.reason is ap.DropReason.BACKEND_UNAVAILABLE
                assert isinstance(caught.value.__cause__, ap.BackendUnavailable)
            assert ran == ["limited"]
        else:
            assert (await limited_call(), await bounded_call()) == ("ok", "ok")
            assert ran == ["limited", "limited", "bounded"]
    stats = rt.statistics()
    if fail == "closed":
        for name in ("limited", "bounded"):
            assert stats.handlers[name].rejections == {"backend_unavailable": 1}
    else:
        assert stats.rate_limiters["limited"].failed_open == 1
        assert stats.global_limits["bounded"].failed_open == 1


async def test_unreachable_redis_cache_is_a_miss(redis_url: str) -> None:
    loads: list[int] = []

    async def double(n: int) -> int:
        loads.append(n)
        return 2 * n

    rt = runtime(backend=redis_url, namespace="svc", cache_write="through")
    call = rt.handler(name="double", cache_ttl=60)(double)
    async with rt:
        await cut_off(rt)
        assert await call(4) == 8  # the Redis level misses and the body runs
        assert await call(4) == 8  # from memory
    assert loads == [4]
    assert rt.statistics().cache.levels[-1].name == "redis"
    backend = rt.backend
    assert isinstance(backend, RedisBackend)
    assert backend.cache_level().redis_statistics().errors >= 1
