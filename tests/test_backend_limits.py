"""Contract suite of the shared limits: SemaphoreBackend and RateLimiterBackend.

Every contract test runs on each backend: "local" (LocalSemaphore, LocalRateLimiter
over asyncperf.RateLimiter; the rate tests on virtual time) and "redis"
(RedisSemaphore, RedisRateLimiter on the private test server, each "client" its own
connection pool, as another process would have). Behaviour only Redis has (leases,
failing open or closed) is tested on Redis alone, with the reason given.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as redis_asyncio

import asyncperf as ap
from asyncperf.abc import RateLimiterBackend, SemaphoreBackend
from asyncperf.backends._local import LocalRateLimiter, LocalSemaphore
from asyncperf.backends.redis._client import connect
from asyncperf.backends.redis._limits_support import round_trip
from asyncperf.backends.redis._rate import RedisRateLimiter
from asyncperf.backends.redis._semaphore import RedisSemaphore, RedisSemaphoreStatistics
from asyncperf.queues import RateLimiter
from asyncperf.testing import current_virtual_clock, wait_until
from tests.redis_server import RedisServer

# Network round trips take many loop passes: let wait_until run long enough for them.
MAX_YIELDS = 1_000_000
# A slack on the server's clock for waits computed in whole microseconds.
EPSILON = 0.002
UNREACHABLE = "redis://127.0.0.1:1/0"


class Limits:
    """Makes the limits of one backend for one test, and closes them after it.

    ``semaphore(name)`` and ``rate_limiter(name)`` give a new client each call
    on Redis (a new connection pool, as another process would have); in
    process the tasks of one loop share one object per name, so they give
    that object.
    """

    def __init__(self, kind: str, url: str | None) -> None:
        self.kind = kind
        self._url = url
        self._semaphores: dict[str, LocalSemaphore] = {}
        self._rate_limiters: dict[str, LocalRateLimiter] = {}
        self._closers: list[RedisSemaphore] = []
        self._clients: list[redis_asyncio.Redis] = []

    def _client(self) -> redis_asyncio.Redis:
        assert self._url is not None
        client = connect(self._url)
        self._clients.append(client)
        return client

    def semaphore(self, name: str, limit: int, **redis_options: Any) -> SemaphoreBackend:
        """A client of the semaphore ``name``; ``redis_options`` only apply on Redis."""
        if self.kind == "local":
            if name not in self._semaphores:
                self._semaphores[name] = LocalSemaphore(name, limit)
            return self._semaphores[name]
        semaphore = RedisSemaphore(self._client(), name, limit, **redis_options)
        self._closers.append(semaphore)
        return semaphore

    def rate_limiter(
        self, name: str, rate: float, per: float = 1.0, *, burst: int
    ) -> LocalRateLimiter | RedisRateLimiter:
        """A client of the rate limiter ``name`` (either kind is a RateLimiterBackend)."""
        if self.kind == "local":
            if name not in self._rate_limiters:
                limiter = RateLimiter(rate, per, burst=burst, clock=current_virtual_clock())
                self._rate_limiters[name] = LocalRateLimiter(limiter)
            return self._rate_limiters[name]
        return RedisRateLimiter(self._client(), name, rate, per, burst=burst)

    async def aclose(self) -> None:
        for semaphore in self._closers:
            await semaphore.aclose()
        for client in self._clients:
            await client.aclose()


@pytest_asyncio.fixture(params=["local", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Limits]:
    """The semaphore contract's backends."""
    kind: str = request.param
    url = request.getfixturevalue("redis_url") if kind == "redis" else None
    limits = Limits(kind, url)
    try:
        yield limits
    finally:
        await limits.aclose()


async def take(semaphore: SemaphoreBackend) -> str:
    """``await semaphore.acquire()`` as a coroutine, for create_task."""
    return await semaphore.acquire()


def blocked(semaphore: SemaphoreBackend) -> bool:
    """Whether a waiter of ``semaphore`` is parked (on Redis: blocked on the wake list)."""
    stats = semaphore.statistics()
    if isinstance(stats, RedisSemaphoreStatistics):
        return stats.blocked >= 1
    return stats.waiting >= 1


def accounted(semaphore: SemaphoreBackend) -> None:
    """Every slot handed out is held, given back, or was lost to its lease."""
    stats = semaphore.statistics()
    assert stats.acquired == stats.released + stats.held + stats.lost, stats


# -- semaphore contract --------------------------------------------------------------


async def test_limit_never_exceeded_under_concurrent_acquirers(backend: Limits) -> None:
    """12 tasks on 3 clients, 3 rounds each: never more than `limit` inside at once."""
    clients = [backend.semaphore("crowd", 3) for _ in range(3)]
    inside = peak = 0

    async def worker(semaphore: SemaphoreBackend) -> None:
        nonlocal inside, peak
        for _ in range(3):
            async with semaphore.acquire():
                inside += 1
                peak = max(peak, inside)
                assert await semaphore.in_use() <= 3
                await asyncio.sleep(0)  # let the others try to get in
                inside -= 1

    async with asyncio.TaskGroup() as group:
        for index in range(12):
            group.create_task(worker(clients[index % 3]))
    assert peak == 3
    assert await clients[0].in_use() == 0
    unique = {id(client): client for client in clients}.values()
    assert sum(client.statistics().acquired for client in unique) == 36
    assert sum(client.statistics().released for client in unique) == 36
    for client in unique:
        accounted(client)
        assert client.statistics().held == client.statistics().waiting == 0


async def test_release_wakes_a_waiter(backend: Limits) -> None:
    """A release hands the slot to a parked waiter (on Redis: by a wake-up, not the safety net)."""
    semaphore = backend.semaphore("wake", 1, wake_timeout=4.0)
    holder = await semaphore.acquire()
    waiter = asyncio.create_task(take(semaphore))
    await wait_until(lambda: blocked(semaphore), max_yields=MAX_YIELDS)
    assert not waiter.done()
    assert await semaphore.release(holder)
    second = await waiter
    assert await semaphore.in_use() == 1
    stats = semaphore.statistics()
    assert (stats.acquired, stats.released, stats.held, stats.waited) == (2, 1, 1, 1)
    if isinstance(stats, RedisSemaphoreStatistics):
        # Woken by the release's push, not by its 4 s safety net.
        assert (stats.wakeups, stats.rechecks) == (1, 0)
    assert await semaphore.release(second)
    assert not await semaphore.release(second)  # a second release changes nothing
    accounted(semaphore)


async def test_timeout_names_the_semaphore_and_holds_nothing(backend: Limits) -> None:
    semaphore = backend.semaphore("busy", 1)
    holder = await semaphore.acquire()
    with pytest.raises(TimeoutError, match=r"^semaphore 'busy': no slot free within 0.05 s"):
        await semaphore.acquire(timeout=0.05)
    with pytest.raises(TimeoutError, match=r"^semaphore 'busy': no slot free within 0 s"):
        await semaphore.acquire(timeout=0)  # one look, no wait
    stats = semaphore.statistics()
    assert (stats.timed_out, stats.waiting, stats.held) == (2, 0, 1)
    assert await semaphore.in_use() == 1
    await semaphore.release(holder)
    accounted(semaphore)


async def test_cancelled_waiters_leak_no_slot(backend: Limits) -> None:
    """Waiters cancelled at every stage of acquire hold nothing afterwards."""
    semaphore = backend.semaphore("cancel", 1, wake_timeout=0.3)
    holder = await semaphore.acquire()
    for steps in range(1, 41, 4):  # at least one step: the waiter has started
        waiter = asyncio.create_task(take(semaphore))
        for _ in range(steps):
            await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert semaphore.statistics().cancelled == 10
    assert await semaphore.in_use() == 1
    # A parked waiter (on Redis: blocked on the wake list) cancelled, then a release.
    waiter = asyncio.create_task(take(semaphore))
    await wait_until(lambda: blocked(semaphore), max_yields=MAX_YIELDS)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await semaphore.release(holder)
    assert await semaphore.in_use() == 0
    stats = semaphore.statistics()
    assert (stats.cancelled, stats.waiting, stats.held) == (11, 0, 0)
    accounted(semaphore)


async def test_cancelling_around_a_grant_leaks_no_slot(backend: Limits) -> None:
    """With a free slot, cancel acquire at each stage: granted or not, nothing stays taken."""
    semaphore = backend.semaphore("race", 1)
    outcomes = {"granted": 0, "cancelled": 0}
    for steps in range(0, 30, 2):
        attempt = asyncio.create_task(take(semaphore))
        for _ in range(steps):
            await asyncio.sleep(0)
        attempt.cancel()
        try:
            token = await attempt
        except asyncio.CancelledError:
            outcomes["cancelled"] += 1
        else:
            outcomes["granted"] += 1
            assert await semaphore.release(token)
        assert await semaphore.in_use() == 0, steps
    assert outcomes["cancelled"] >= 1  # steps=0 cancels before the first try
    assert sum(outcomes.values()) == 15
    accounted(semaphore)


async def test_clients_share_one_limit(backend: Limits) -> None:
    first, second = backend.semaphore("shared", 2), backend.semaphore("shared", 2)
    token_a = await first.acquire()
    token_b = await second.acquire()
    for client in (first, second):
        with pytest.raises(TimeoutError, match="'shared'"):
            await client.acquire(timeout=0)
        assert await client.in_use() == 2
    assert await first.release(token_a)
    token_c = await second.acquire(timeout=0)
    assert await first.in_use() == 2
    for token in (token_b, token_c):
        assert await second.release(token)
    assert await first.in_use() == 0


async def test_aclose_gives_back_the_held_slots(backend: Limits) -> None:
    semaphore = backend.semaphore("closing", 2)
    token = await semaphore.acquire()
    await semaphore.acquire()
    await semaphore.aclose()
    assert await semaphore.in_use() == 0
    assert not await semaphore.release(token)  # already given back
    assert semaphore.statistics().released == 2
    accounted(semaphore)


async def test_lease_expiry_returns_a_crashed_holders_slot(backend: Limits) -> None:
    """A holder that stops renewing (as a killed process does) loses its slot at lease end."""
    if backend.kind == "local":
        pytest.skip("in process a holder cannot crash without its process: no leases")
    crashed = backend.semaphore("lease", 1, lease=0.3, auto_renew=False)
    token = await crashed.acquire()
    survivor = backend.semaphore("lease", 1)
    # Waits for the lease to end (its block is bounded by the earliest lease), not polling.
    taken = await survivor.acquire(timeout=10)
    stats = survivor.statistics()
    assert stats.reclaimed == 1
    assert isinstance(stats, RedisSemaphoreStatistics)
    assert stats.wakeups == 0  # nobody released: the lease ended
    assert stats.rechecks >= 1
    assert isinstance(crashed, RedisSemaphore)
    assert not await crashed.renew(token)  # the crashed holder finds it lost
    assert not await crashed.release(token)
    crashed_stats = crashed.statistics()
    assert (crashed_stats.lost, crashed_stats.held, crashed_stats.released) == (1, 0, 0)
    accounted(crashed)
    assert await survivor.in_use() == 1
    assert await survivor.release(taken)


async def test_a_live_holder_keeps_its_slot_past_its_lease(backend: Limits) -> None:
    """Renewed in the background, a slot held for several leases is never taken away."""
    if backend.kind == "local":
        pytest.skip("in process there are no leases to renew")
    holder = backend.semaphore("renewed", 1, lease=0.5)
    other = backend.semaphore("renewed", 1)
    async with holder.acquire():
        with pytest.raises(TimeoutError, match="'renewed'"):
            await other.acquire(timeout=1.2)  # more than two leases
        assert holder.statistics().lost == 0
        assert await other.in_use() == 1
    assert holder.statistics().released == 1
    assert await other.in_use() == 0
    assert other.statistics().reclaimed == 0


# -- rate limiter contract -----------------------------------------------------------
# The in-process limiter runs on virtual time and Redis on its own clock, and a test
# function's loop is chosen once for all its parameters: so each contract below is
# a function run by two tests, one per backend.

RateContract = Callable[[Limits], Awaitable[None]]
RATE_CONTRACT: list[RateContract] = []


def rate_contract(check: RateContract) -> RateContract:
    """Add ``check`` to the rate limiter contract."""
    RATE_CONTRACT.append(check)
    return check


@rate_contract
async def rate_admits_the_burst_then_one_per_interval(limits: Limits) -> None:
    """4/s with burst 5: five at once, the sixth refused and told to wait at most 0.25 s."""
    limiter = limits.rate_limiter("api", 4, burst=5)
    assert [await limiter.try_acquire() for _ in range(6)] == [True] * 5 + [False]
    wait = await limiter.time_to_wait()
    assert 0 < wait <= 0.25 + EPSILON
    await limiter.acquire()  # sleeps the wait it is told, then is admitted
    assert not await limiter.try_acquire()  # the next unit is one interval away again
    assert 0 < await limiter.time_to_wait() <= 0.25 + EPSILON
    stats = limiter.statistics()
    assert (stats.admitted_calls, stats.refused, stats.waiting) == (6, 2, 0)


@rate_contract
async def rate_costs_draw_on_the_burst(limits: Limits) -> None:
    limiter = limits.rate_limiter("weighted", 2, burst=10)  # 0.5 s per unit
    assert await limiter.try_acquire(7)
    assert not await limiter.try_acquire(4)  # three units left
    assert 0.5 - EPSILON < await limiter.time_to_wait(4) <= 0.5 + EPSILON
    assert await limiter.try_acquire(3)
    assert not await limiter.try_acquire(0.5)


@rate_contract
async def rate_clients_share_one_limit(limits: Limits) -> None:
    first = limits.rate_limiter("shared", 1, burst=5)
    second = limits.rate_limiter("shared", 1, burst=5)
    assert [await first.try_acquire() for _ in range(3)] == [True] * 3
    assert [await second.try_acquire() for _ in range(3)] == [True, True, False]
    assert not await first.try_acquire()
    assert 0 < await second.time_to_wait() <= 1 + EPSILON


@rate_contract
async def rate_cancelled_acquire_consumes_nothing(limits: Limits) -> None:
    limiter = limits.rate_limiter("cancel", 4, burst=1)
    assert await limiter.try_acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await wait_until(
        lambda: limiter.statistics().waiting == 1,
        max_yields=MAX_YIELDS,
    )
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    # Had the cancelled call taken a unit, the next one would be two intervals away.
    assert 0 < await limiter.time_to_wait() <= 0.25 + EPSILON
    assert limiter.statistics().admitted_calls == 1


@pytest.mark.virtual_time
@pytest.mark.parametrize("check", RATE_CONTRACT, ids=lambda check: check.__name__)
async def test_rate_contract_local(check: RateContract) -> None:
    limits = Limits("local", None)
    try:
        await check(limits)
    finally:
        await limits.aclose()


@pytest.mark.parametrize("check", RATE_CONTRACT, ids=lambda check: check.__name__)
async def test_rate_contract_redis(check: RateContract, redis_url: str) -> None:
    limits = Limits("redis", redis_url)
    try:
        await check(limits)
    finally:
        await limits.aclose()


# -- bad arguments -------------------------------------------------------------------


async def test_bad_arguments_name_the_parameter(backend: Limits) -> None:
    with pytest.raises(ValueError, match=r"^limit must be >= 1, not 0$"):
        backend.semaphore("bad", 0)
    with pytest.raises(TypeError, match=r"^limit must be an int, not str$"):
        backend.semaphore("bad", "3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^name must not be empty$"):
        backend.semaphore("", 1)
    semaphore = backend.semaphore("bad", 1)
    assert isinstance(semaphore, SemaphoreBackend)
    with pytest.raises(ValueError, match=r"^timeout must be >= 0, not -1$"):
        await semaphore.acquire(timeout=-1)
    with pytest.raises(TypeError, match=r"^timeout must be a number, not str$"):
        await semaphore.acquire(timeout="1")  # type: ignore[arg-type]
    assert await semaphore.in_use() == 0


@pytest.mark.virtual_time
async def test_bad_rate_arguments_name_the_parameter() -> None:
    client = connect(UNREACHABLE)  # constructing connects nowhere
    try:
        limiters: list[RateLimiterBackend] = [
            LocalRateLimiter(RateLimiter(1, burst=2)),
            RedisRateLimiter(client, "bad", 1, burst=2),
        ]
        for limiter in limiters:
            assert isinstance(limiter, RateLimiterBackend)
            with pytest.raises(ValueError, match=r"^cost must be > 0, not 0$"):
                await limiter.try_acquire(0)
            with pytest.raises(ValueError, match=r"^cost must be <= burst \(2\), not 3$"):
                await limiter.acquire(3)
            with pytest.raises(TypeError, match=r"^cost must be a number, not str$"):
                await limiter.time_to_wait("1")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^limiter must be a RateLimiter, not int$"):
            LocalRateLimiter(5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^rate must be > 0, not 0$"):
            RedisRateLimiter(client, "bad", 0)
        with pytest.raises(ValueError, match=r"^per must be > 0, not -1$"):
            RedisRateLimiter(client, "bad", 1, -1)
        with pytest.raises(ValueError, match=r"^burst must be >= 1$"):
            RedisRateLimiter(client, "bad", 1, burst=0)
        with pytest.raises(TypeError, match=r"^burst must be an int, not float$"):
            RedisRateLimiter(client, "bad", 1, burst=2.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^fail must be 'open' or 'closed', not 'maybe'$"):
            RedisRateLimiter(client, "bad", 1, fail="maybe")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^name and namespace must be non-empty"):
            RedisRateLimiter(client, "a{b}", 1)
        with pytest.raises(TypeError, match=r"^client must be a redis.asyncio.Redis, not str$"):
            RedisRateLimiter("redis://", "bad", 1)  # type: ignore[arg-type]
    finally:
        await client.aclose()


async def test_bad_redis_semaphore_arguments_name_the_parameter() -> None:
    client = connect(UNREACHABLE, timeout=2.0)  # constructing connects nowhere
    try:
        with pytest.raises(ValueError, match=r"^lease must be > 0, not 0$"):
            RedisSemaphore(client, "bad", 1, lease=0)
        with pytest.raises(ValueError, match=r"^fail must be 'open' or 'closed', not 'never'$"):
            RedisSemaphore(client, "bad", 1, fail="never")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^wake_timeout must be below the client's timeout"):
            RedisSemaphore(client, "bad", 1, wake_timeout=2.0)
        with pytest.raises(ValueError, match=r"^wake_timeout must be > 0, not 0$"):
            RedisSemaphore(client, "bad", 1, wake_timeout=0)
        with pytest.raises(TypeError, match=r"^auto_renew must be a bool, not int$"):
            RedisSemaphore(client, "bad", 1, auto_renew=1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^name and namespace must be non-empty"):
            RedisSemaphore(client, "bad", 1, namespace="")
        with pytest.raises(
            TypeError, match=r"^client must be a redis.asyncio.Redis, not NoneType$"
        ):
            RedisSemaphore(None, "bad", 1)  # type: ignore[arg-type]
    finally:
        await client.aclose()


# -- Redis unreachable: fail closed (the default) or open --------------------------------
# Redis-only: an in-process limit has no backend to lose.


async def test_unreachable_redis_fails_closed_by_default() -> None:
    client = connect(UNREACHABLE, timeout=0.5)
    try:
        semaphore = RedisSemaphore(client, "down", 1)
        with pytest.raises(ap.BackendUnavailable, match=r"^semaphore 'down': acquire: Redis"):
            await semaphore.acquire()
        with pytest.raises(ap.BackendUnavailable):
            await semaphore.in_use()
        limiter = RedisRateLimiter(client, "down", 1)
        for call in (limiter.try_acquire, limiter.acquire, limiter.time_to_wait):
            with pytest.raises(ap.BackendUnavailable, match=r"^rate limiter 'down': Redis"):
                await call()
        assert semaphore.statistics().acquired == limiter.statistics().admitted_calls == 0
        assert semaphore.statistics().waiting == limiter.statistics().waiting == 0
    finally:
        await client.aclose()


async def test_unreachable_redis_fails_open_when_asked_and_counts_it() -> None:
    client = connect(UNREACHABLE, timeout=0.5)
    try:
        semaphore = RedisSemaphore(client, "down", 1, fail="open")
        async with semaphore.acquire():
            token = await semaphore.acquire()  # over the limit: Redis is not there to say no
        assert await semaphore.release(token)
        stats = semaphore.statistics()
        assert (stats.failed_open, stats.acquired, stats.released, stats.held) == (2, 2, 2, 0)
        with pytest.raises(ap.BackendUnavailable):
            await semaphore.in_use()  # an inspection never pretends
        limiter = RedisRateLimiter(client, "down", 1, fail="open")
        assert await limiter.try_acquire()
        assert await limiter.try_acquire()  # beyond the burst of 1
        await limiter.acquire()
        assert await limiter.time_to_wait() == 0.0
        rate_stats = limiter.statistics()
        assert (rate_stats.failed_open, rate_stats.admitted_calls, rate_stats.refused) == (3, 3, 0)
    finally:
        await client.aclose()


class Proxy:
    """A TCP relay to the test server that can be cut, as a network failure would."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._writers += [writer, upstream_writer]
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            pipe = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()


async def test_a_release_that_cannot_reach_redis_counts_the_slot_lost(
    redis_server: RedisServer, redis_url: str
) -> None:
    """The slot then comes back by its lease; the holder is not made to fail."""
    proxy = Proxy(redis_server.host, redis_server.port)
    port = await proxy.start()
    client = connect(redis_url.replace(f":{redis_server.port}/", f":{port}/"), timeout=0.5)
    try:
        semaphore = RedisSemaphore(client, "gone", 1, lease=0.5)
        token = await semaphore.acquire()
        await proxy.cut()
        assert not await semaphore.release(token)
        stats = semaphore.statistics()
        assert (stats.lost, stats.released, stats.held) == (1, 0, 0)
        accounted(semaphore)
    finally:
        await proxy.cut()
        await client.aclose()
    # The slot comes back by its lease, for a client that can still reach Redis.
    direct = connect(redis_url)
    try:
        survivor = RedisSemaphore(direct, "gone", 1)
        async with survivor.acquire(timeout=10):
            assert survivor.statistics().reclaimed == 1
    finally:
        await direct.aclose()


async def test_a_cancellation_swallowed_inside_the_client_is_raised() -> None:
    """On Python 3.11 redis-py's send (asyncio.wait_for) can drop a cancellation and return:
    round_trip raises it anyway, so a cancelled waiter stops."""
    started = asyncio.Event()

    async def swallowing_command() -> str:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "reply"  # what the buggy wait_for does when its inner future is done
        raise AssertionError("not cancelled")

    call = asyncio.create_task(round_trip("command", swallowing_command()))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # Without a cancellation, the reply comes through.
    assert await round_trip("command", asyncio.sleep(0, "reply")) == "reply"
