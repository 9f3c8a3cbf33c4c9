"""Cache levels: one contract suite over memory, disk and Redis; then what only Redis does.

The Redis half (the "redis" parameter and every test taking ``redis_url``) runs
against the private server of tests/redis_server.py and is skipped when
redis-server is not installed (never in CI: ASYNCPERF_REQUIRE_REDIS=1).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as redis_asyncio

import asyncperf as ap
from asyncperf.backends.redis import connect, key_join
from asyncperf.backends.redis._cache import RedisCacheLevel
from asyncperf.cache import CacheLevel, DiskCache, MemoryCache, TieredCache
from asyncperf.cache._disk import encode_key
from asyncperf.testing import wait_until

#: Loop passes wait_until may take for a round trip through the Redis server (it
#: returns as soon as the condition holds; the bound only matters when it never does).
NETWORK_YIELDS = 2_000_000


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Run ``check`` until it is true: for real time to pass (a TTL running out)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition still false"
        await asyncio.sleep(0)


# -- the contract -------------------------------------------------------------------


@pytest_asyncio.fixture(params=["memory", "disk", "redis"])
async def level(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CacheLevel]:
    made: CacheLevel
    if request.param == "memory":
        made = MemoryCache(max_entries=100)
    elif request.param == "disk":
        made = await DiskCache(tmp_path / "cache", serializer="msgpack").__aenter__()
    else:
        url: str = request.getfixturevalue("redis_url")
        made = await RedisCacheLevel(url, namespace="contract", near_cache=100).__aenter__()
    try:
        yield made
    finally:
        await made.aclose()


async def test_a_level_is_a_cache_level(level: CacheLevel) -> None:
    assert isinstance(level, CacheLevel)


async def test_set_then_get_and_a_miss(level: CacheLevel) -> None:
    assert await level.set("a", {"x": [1, 2]}) is True
    entry = await level.get_entry("a")
    assert entry is not None
    assert entry.value == {"x": [1, 2]}
    assert entry.ttl is None
    assert await level.get_entry("absent") is None
    stats = level.statistics()
    assert (stats.hits, stats.misses, stats.sets) == (1, 1, 1)


async def test_none_is_a_value_not_a_miss(level: CacheLevel) -> None:
    assert await level.set("nothing", None)
    entry = await level.get_entry("nothing")
    assert entry is not None
    assert entry.value is None
    assert (await level.get_many(["nothing"]))["nothing"].value is None


async def test_keys_follow_python_equality_and_types(level: CacheLevel) -> None:
    assert await level.set(1, "one")
    assert await level.set(("t", 2), "tuple")
    assert (await level.get_entry(1.0)) == (await level.get_entry(1))
    assert await level.get_entry("1") is None  # a str is another key
    entry = await level.get_entry(("t", 2))
    assert entry is not None
    assert entry.value == "tuple"


async def test_overwrite_keeps_the_latest(level: CacheLevel) -> None:
    await level.set("k", "old")
    assert (await level.get_entry("k")) is not None
    await level.set("k", "new")
    entry = await level.get_entry("k")
    assert entry is not None
    assert entry.value == "new"


async def test_ttl_is_reported_and_runs_out(level: CacheLevel) -> None:
    assert await level.set("long", 1, ttl=60.0)
    entry = await level.get_entry("long")
    assert entry is not None
    assert entry.ttl is not None
    assert 0.0 < entry.ttl <= 60.0
    assert await level.set("short", 1, ttl=0.05)

    async def gone() -> bool:
        return await level.get_entry("short") is None

    await eventually(gone)
    assert await level.get_entry("long") is not None


async def test_delete_says_whether_it_was_there(level: CacheLevel) -> None:
    await level.set("k", 1)
    assert await level.delete("k") is True
    assert await level.delete("k") is False
    assert await level.get_entry("k") is None
    assert level.statistics().deletes == 1


async def test_set_many_and_get_many(level: CacheLevel) -> None:
    stored = await level.set_many([("a", 1, None), ("b", [2], 30.0), ("c", None, None)])
    assert stored == 3
    found = await level.get_many(["a", "b", "c", "absent"])
    assert sorted(found, key=str) == ["a", "b", "c"]
    assert found["a"].value == 1
    assert found["a"].ttl is None
    assert found["b"].value == [2]
    assert found["b"].ttl is not None
    assert 0.0 < found["b"].ttl <= 30.0
    assert await level.get_many([]) == {}
    stats = level.statistics()
    assert (stats.hits, stats.misses, stats.sets) == (3, 1, 3)


async def test_clear_removes_every_entry(level: CacheLevel) -> None:
    await level.set_many([(f"k{i}", i, None) for i in range(10)])
    await level.clear()
    assert await level.get_many([f"k{i}" for i in range(10)]) == {}


async def test_statistics_add_up(level: CacheLevel) -> None:
    await level.set_many([(i, i * i, None) for i in range(0, 20, 2)])
    lookups = hits = 0
    for key in range(20):
        lookups += 1
        entry = await level.get_entry(key)
        if entry is not None:
            hits += 1
            assert entry.value == key * key
    found = await level.get_many(range(20))
    lookups += 20
    hits += len(found)
    stats = level.statistics()
    assert stats.hits == hits == 20
    assert stats.hits + stats.misses == lookups
    assert stats.sets == 10
    assert stats.hit_ratio == pytest.approx(0.5)
    assert set(stats.evictions) == {reason.value for reason in ap.cache.EvictionReason}


async def test_a_bad_ttl_names_it(level: CacheLevel) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await level.set("k", 1, ttl=-1.0)
    with pytest.raises(ValueError, match="ttl"):
        await level.set_many([("k", 1, 0.0)])
    assert await level.get_entry("k") is None  # nothing stored by the refused batch


# -- Redis: construction and values ---------------------------------------------------


def test_bad_arguments_name_the_parameter() -> None:
    url = "redis://127.0.0.1:1/0"
    with pytest.raises(TypeError, match="client must be"):
        RedisCacheLevel(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="namespace must be"):
        RedisCacheLevel(url, namespace="a{b}")
    with pytest.raises(ValueError, match="needs hmac_key"):
        RedisCacheLevel(url, serializer="pickle")
    with pytest.raises(ValueError, match="near_cache must be >= 1"):
        RedisCacheLevel(url, near_cache=0)
    with pytest.raises(ValueError, match="lock_lease must be > 0"):
        RedisCacheLevel(url, lock_lease=0)
    with pytest.raises(ValueError, match="reconnect_delay must be"):
        RedisCacheLevel(url, reconnect_delay=(2.0, 1.0))
    with pytest.raises(TypeError, match="reconnect_delay must be a pair"):
        RedisCacheLevel(url, reconnect_delay=(1.0,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="serializer must be one of"):
        RedisCacheLevel(url, serializer="yaml")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="hmac_key must be bytes"):
        RedisCacheLevel(url, hmac_key="text")  # type: ignore[arg-type]


async def test_a_bad_key_names_it(redis_url: str) -> None:
    async with RedisCacheLevel(redis_url) as level:
        with pytest.raises(TypeError, match="key must be"):
            await level.get_entry(object())
        with pytest.raises(TypeError, match="key must be"):
            await level.set(["list"], 1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="loader must be callable"):
            await level.get_or_load("k", 42)  # type: ignore[arg-type]
    with pytest.raises(ap.CacheClosed):
        await level.get_entry("k")


async def test_pickle_with_hmac_and_a_tampered_value_reads_as_a_miss(redis_url: str) -> None:
    admin = connect(redis_url)
    async with RedisCacheLevel(redis_url, serializer="pickle", hmac_key=b"secret") as level:
        assert await level.set("k", {1: (2, 3)})
        entry = await level.get_entry("k")
        assert entry is not None
        assert entry.value == {1: (2, 3)}
        rkey = key_join("cache", "v").encode() + b":" + encode_key("k")
        stored = await admin.get(rkey)
        assert isinstance(stored, bytes)
        await admin.set(rkey, stored[:-1] + bytes([stored[-1] ^ 1]))
        assert await level.get_entry("k") is None
        assert level.redis_statistics().corrupt == 1
        # The damaged bytes are removed (compare-and-delete, in the background).
        await eventually(lambda: _absent(admin, rkey))
    await admin.aclose()


async def _absent(client: redis_asyncio.Redis, rkey: bytes) -> bool:
    return not await client.exists(rkey)


async def test_clear_removes_only_its_namespace(redis_url: str) -> None:
    admin = connect(redis_url)
    async with (
        RedisCacheLevel(redis_url, namespace="one") as one,
        RedisCacheLevel(redis_url, namespace="o*e") as glob_like,
    ):
        await one.set_many([(i, i, None) for i in range(700)])  # more than one UNLINK batch
        await glob_like.set("kept", 1)
        await admin.set("not-a-cache-key", b"x")
        assert await one.count() == 700
        await glob_like.clear()  # its pattern must not match "one"
        assert await one.count() == 700
        await one.clear()
        assert await one.count() == 0
        assert await admin.get("not-a-cache-key") == b"x"
    await admin.aclose()


# -- Redis: the near cache ------------------------------------------------------------


async def _command_calls(admin: redis_asyncio.Redis) -> int:
    """Commands the server has run, except INFO and PING (ours, and the listener's probe)."""
    stats = await admin.info("commandstats")
    return sum(
        int(entry["calls"])
        for name, entry in stats.items()
        if name not in ("cmdstat_info", "cmdstat_ping")
    )


async def test_a_near_cache_hit_never_touches_redis(redis_url: str) -> None:
    admin = connect(redis_url)
    async with RedisCacheLevel(redis_url, near_cache=16) as level:
        assert level.redis_statistics().near_active
        await level.set_many([(i, f"v{i}", 60.0) for i in range(4)])
        await wait_until(
            lambda: level.redis_statistics().invalidated_keys == 4, max_yields=NETWORK_YIELDS
        )
        assert len(await level.get_many(range(4))) == 4  # one round trip; fills the near cache
        assert level.redis_statistics().near_entries == 4
        before = await _command_calls(admin)
        for _ in range(25):
            for key in range(4):
                entry = await level.get_entry(key)
                assert entry is not None
                assert entry.value == f"v{key}"
                assert entry.ttl is not None
                assert 0.0 < entry.ttl <= 60.0
        assert len(await level.get_many(range(4))) == 4
        assert await _command_calls(admin) == before
        stats = level.redis_statistics()
        assert stats.near_hits == 104
        assert level.statistics().hits == 108
    await admin.aclose()


async def test_the_near_cache_is_bounded(redis_url: str) -> None:
    async with RedisCacheLevel(redis_url, near_cache=2) as level:
        await level.set_many([(i, i, None) for i in range(3)])
        await wait_until(
            lambda: level.redis_statistics().invalidated_keys == 3, max_yields=NETWORK_YIELDS
        )
        for key in range(3):
            assert await level.get_entry(key) is not None
        assert level.redis_statistics().near_entries == 2
        assert await level.get_entry(0) is not None  # evicted (least recently used): Redis
        assert level.redis_statistics().near_hits == 0


async def test_another_clients_write_invalidates_the_near_cache(redis_url: str) -> None:
    async with (
        RedisCacheLevel(redis_url, near_cache=16, name="reader") as reader,
        RedisCacheLevel(redis_url, name="writer") as writer,
    ):
        await writer.set("k", "first")
        await wait_until(
            lambda: reader.redis_statistics().invalidated_keys == 1, max_yields=NETWORK_YIELDS
        )
        assert (await reader.get_entry("k")) == ("first", None)  # from Redis, kept near
        assert (await reader.get_entry("k")) == ("first", None)
        assert reader.redis_statistics().near_hits == 1
        await writer.set("k", "second")
        await wait_until(
            lambda: reader.redis_statistics().near_entries == 0, max_yields=NETWORK_YIELDS
        )
        assert (await reader.get_entry("k")) == ("second", None)
        await writer.delete("k")
        await wait_until(
            lambda: reader.redis_statistics().invalidated_keys == 3, max_yields=NETWORK_YIELDS
        )
        assert await reader.get_entry("k") is None
        stats = reader.redis_statistics()
        assert stats.near_hits == 1
        assert stats.invalidation_messages == stats.invalidated_keys == 3


async def test_an_invalidation_during_a_read_keeps_the_old_value_out(redis_url: str) -> None:
    async with RedisCacheLevel(redis_url, near_cache=16) as level:
        await level.set("k", "old")
        await wait_until(
            lambda: level.redis_statistics().invalidated_keys == 1, max_yields=NETWORK_YIELDS
        )
        # The read's ticket is voided (as by an invalidation overtaking the reply): the
        # value it brings back must not be kept.
        reading = asyncio.ensure_future(level.get_entry("k"))
        await wait_until(lambda: bool(level._fills))
        level._forget(level._key("k"))
        assert (await reading) == ("old", None)
        assert level.redis_statistics().near_entries == 0


async def test_a_flush_empties_the_near_cache(redis_url: str) -> None:
    admin = connect(redis_url)
    async with RedisCacheLevel(redis_url, near_cache=16) as level:
        await level.set("k", 1)
        await wait_until(
            lambda: level.redis_statistics().invalidated_keys == 1, max_yields=NETWORK_YIELDS
        )
        assert await level.get_entry("k") is not None
        assert level.redis_statistics().near_entries == 1
        await admin.flushdb()
        await wait_until(lambda: level.redis_statistics().flushes == 1, max_yields=NETWORK_YIELDS)
        assert level.redis_statistics().near_entries == 0
        assert await level.get_entry("k") is None
    await admin.aclose()


async def test_a_dropped_listener_bypasses_the_near_cache_until_it_is_back(
    redis_url: str,
) -> None:
    admin = connect(redis_url)
    password = admin.connection_pool.connection_kwargs["password"]
    level = RedisCacheLevel(redis_url, near_cache=16, reconnect_delay=(0.02, 0.1))
    try:
        await admin.ping()  # authenticated now; stays so when the password changes
        assert await level.wait_tracking(10.0)
        await level.set("k", "v")
        await wait_until(
            lambda: level.redis_statistics().invalidated_keys == 1, max_yields=NETWORK_YIELDS
        )
        assert await level.get_entry("k") is not None
        assert level.redis_statistics().near_entries == 1
        # New connections are refused from here on, so the listener cannot come back.
        await admin.config_set("requirepass", "changed-" + password)
        listener = level.listener_id
        assert listener is not None
        assert await admin.client_kill_filter(_id=str(listener)) == 1
        await wait_until(
            lambda: level.redis_statistics().listener_drops == 1, max_yields=NETWORK_YIELDS
        )
        stats = level.redis_statistics()
        assert not stats.near_active
        assert stats.near_entries == 0
        before = await _command_calls(admin)
        for _ in range(3):
            assert (await level.get_entry("k")) == ("v", None)  # each one from Redis
        assert await _command_calls(admin) - before == 3 * 4  # MULTI, MGET, PTTL, EXEC
        assert level.redis_statistics().near_entries == 0  # bypassed: nothing kept
        await admin.config_set("requirepass", password)
        assert await level.wait_tracking(10.0)
        assert await level.get_entry("k") is not None
        assert await level.get_entry("k") is not None
        stats = level.redis_statistics()
        assert stats.near_hits == 1
        assert stats.near_entries == 1
        assert stats.listener_connects == 2
        assert stats.listener_drops == 1
    finally:
        await admin.config_set("requirepass", password)
        await level.aclose()
        await admin.aclose()


async def test_an_unreachable_server_is_a_miss_and_writes_return_false() -> None:
    client = connect("redis://127.0.0.1:1/0", timeout=0.5)
    level = RedisCacheLevel(client, near_cache=8, reconnect_delay=(0.05, 0.05))
    try:
        assert await level.get_entry("k") is None
        assert await level.get_many(["a", "b"]) == {}
        assert await level.set("k", 1) is False
        assert await level.set_many([("a", 1, None), ("b", 2, None)]) == 0
        with pytest.raises(ap.BackendUnavailable, match=r"^delete: Redis is unreachable"):
            await level.delete("k")
        with pytest.raises(ap.BackendUnavailable, match=r"^clear: Redis is unreachable"):
            await level.clear()

        async def load() -> str:
            return "loaded here"

        assert await level.get_or_load("k", load) == "loaded here"
        stats, redis_stats = level.statistics(), level.redis_statistics()
        assert (stats.hits, stats.misses, stats.sets) == (0, 4, 0)
        assert redis_stats.read_errors == 4  # get, get_many, get_or_load: its read and lock
        assert redis_stats.write_errors == 3  # set, set_many, and storing the load
        assert redis_stats.errors == 7
        assert redis_stats.loads == 1
        assert not redis_stats.near_active
    finally:
        await level.aclose()
        await client.aclose()  # the caller's client: the level leaves it open


# -- Redis: single-flight across processes ----------------------------------------------


class Loader:
    """A loader that counts its calls and holds each one until ``release`` is set."""

    def __init__(self, value: Any = "loaded") -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.value = value

    async def __call__(self) -> Any:
        self.calls += 1
        await self.release.wait()
        return self.value


async def test_two_processes_share_one_load(redis_url: str) -> None:
    # Two levels with their own clients and listeners stand for two processes.
    # The waiter's poll is far longer than the test: only the invalidation wakes it.
    async with (
        RedisCacheLevel(redis_url, name="first", near_cache=16) as first,
        RedisCacheLevel(redis_url, name="second", near_cache=16, lock_poll=60.0) as second,
    ):
        loader = Loader({"answer": 42})
        loading = asyncio.ensure_future(first.get_or_load("k", loader, ttl=30.0))
        await wait_until(lambda: loader.calls == 1, max_yields=NETWORK_YIELDS)
        waiting = asyncio.ensure_future(second.get_or_load("k", loader, ttl=30.0))
        await wait_until(
            lambda: second.redis_statistics().lock_waits == 1, max_yields=NETWORK_YIELDS
        )
        loader.release.set()
        results = await asyncio.wait_for(asyncio.gather(loading, waiting), 10.0)
        assert list(results) == [{"answer": 42}, {"answer": 42}]
        assert loader.calls == 1
        one, two = first.redis_statistics(), second.redis_statistics()
        assert (one.loads, two.loads, two.lock_takeovers) == (1, 0, 0)
        entry = await second.get_entry("k")
        assert entry is not None
        assert entry.ttl is not None
        assert 0.0 < entry.ttl <= 30.0
        lock = key_join("cache", "lock").encode() + b":" + encode_key("k")
        assert not await first.client.exists(lock)  # released


async def test_callers_in_one_process_share_one_flight(redis_url: str) -> None:
    async with RedisCacheLevel(redis_url) as level:
        loader = Loader()
        callers = [asyncio.ensure_future(level.get_or_load("k", loader)) for _ in range(5)]
        await wait_until(lambda: loader.calls == 1, max_yields=NETWORK_YIELDS)
        await wait_until(lambda: level.redis_statistics().coalesced == 4, max_yields=NETWORK_YIELDS)
        callers[0].cancel()  # one caller leaving does not cancel the load for the others
        loader.release.set()
        assert await asyncio.gather(*callers[1:]) == ["loaded"] * 4
        assert loader.calls == 1
        assert (await level.get_entry("k")) == ("loaded", None)


async def test_a_dead_holders_lease_expires_and_a_waiter_takes_over(redis_url: str) -> None:
    async with RedisCacheLevel(redis_url, near_cache=16, lock_poll=60.0) as level:
        lock = key_join("cache", "lock").encode() + b":" + encode_key("k")
        # A holder that took the lock and died: its lease is all that is left of it.
        assert await level.client.set(lock, b"dead-holder", px=200, nx=True)
        loader = Loader("mine")
        loader.release.set()
        value = await asyncio.wait_for(level.get_or_load("k", loader), 10.0)
        assert value == "mine"
        assert loader.calls == 1
        stats = level.redis_statistics()
        assert (stats.lock_waits, stats.lock_takeovers, stats.loads) == (1, 1, 1)
        assert not await level.client.exists(lock)


async def test_a_failed_load_releases_the_lock_and_is_not_cached(redis_url: str) -> None:
    async with RedisCacheLevel(redis_url) as level:
        calls = itertools.count(1)

        async def failing() -> str:
            raise RuntimeError(f"load {next(calls)} failed")

        with pytest.raises(RuntimeError, match="load 1 failed"):
            await level.get_or_load("k", failing)
        lock = key_join("cache", "lock").encode() + b":" + encode_key("k")
        assert not await level.client.exists(lock)
        with pytest.raises(RuntimeError, match="load 2 failed"):
            await level.get_or_load("k", failing)  # not waiting on a stale lock


async def test_the_holder_renews_its_lease_while_it_loads(redis_url: str) -> None:
    async with RedisCacheLevel(redis_url, lock_lease=0.15) as level:
        lock = key_join("cache", "lock").encode() + b":" + encode_key("k")
        loader = Loader()
        loading = asyncio.ensure_future(level.get_or_load("k", loader))
        await wait_until(lambda: loader.calls == 1, max_yields=NETWORK_YIELDS)

        # Held two leases after it was taken: only renewals explain it.
        start = asyncio.get_running_loop().time()
        await eventually(lambda: _held_after(level.client, lock, start + 0.3))
        assert level.redis_statistics().loads == 1
        loader.release.set()
        assert await loading == "loaded"
        assert level.redis_statistics().leases_lost == 0


async def _held_after(client: redis_asyncio.Redis, lock: bytes, when: float) -> bool:
    if asyncio.get_running_loop().time() < when:
        return False
    assert await client.exists(lock), "the lease ran out while the holder was loading"
    return True


# -- Redis: under a TieredCache ---------------------------------------------------------


async def test_a_tiered_cache_over_redis_end_to_end(redis_url: str) -> None:
    first = TieredCache(MemoryCache(max_entries=100), RedisCacheLevel(redis_url, near_cache=16))
    second = TieredCache(MemoryCache(max_entries=100), RedisCacheLevel(redis_url, near_cache=16))
    async with first, second:
        first_redis = first.levels[1]
        second_redis = second.levels[1]
        assert isinstance(first_redis, RedisCacheLevel)
        assert isinstance(second_redis, RedisCacheLevel)
        # A write in one process is read (and promoted to memory) in the other.
        assert await first.set("shared", [1, 2], ttl=60.0)
        assert await second.get("shared") == [1, 2]
        assert second.statistics().promotions == 1
        # Single-flight across both tiers: one loader call in all.
        loader = Loader("value")
        one = asyncio.ensure_future(
            first.get_or_load("k", first_redis.shared_loader("k", loader, 60.0), 60.0)
        )
        await wait_until(lambda: loader.calls == 1, max_yields=NETWORK_YIELDS)
        two = asyncio.ensure_future(
            second.get_or_load("k", second_redis.shared_loader("k", loader, 60.0), 60.0)
        )
        await wait_until(
            lambda: second_redis.redis_statistics().lock_waits == 1, max_yields=NETWORK_YIELDS
        )
        loader.release.set()
        assert list(await asyncio.gather(one, two)) == ["value", "value"]
        assert loader.calls == 1
        assert await second.get("k") == "value"  # from its memory level now
        # A delete through one tier reaches Redis.
        assert await first.delete("shared")
        assert await second_redis.get_entry("shared") is None
    assert first_redis.closed
    assert second_redis.closed


async def test_closing_ends_loads_and_waits_in_flight(redis_url: str) -> None:
    async with RedisCacheLevel(redis_url, name="holder") as holder:
        waiter = RedisCacheLevel(redis_url, name="waiter", near_cache=4, lock_poll=60.0)
        loader = Loader()
        loading = asyncio.ensure_future(holder.get_or_load("k", loader))
        await wait_until(lambda: loader.calls == 1, max_yields=NETWORK_YIELDS)
        waiting = asyncio.ensure_future(waiter.get_or_load("k", loader))
        await wait_until(
            lambda: waiter.redis_statistics().lock_waits == 1, max_yields=NETWORK_YIELDS
        )
        await waiter.aclose()  # wakes its waiter (no lost cancellation, no hang)
        with pytest.raises(ap.CacheClosed):
            await waiting
        await holder.aclose()  # cancels the loader it runs
        with pytest.raises(ap.CacheClosed):
            await loading
        lock = key_join("cache", "lock").encode() + b":" + encode_key("k")
        admin = connect(redis_url)
        assert not await admin.exists(lock)  # the cancelled holder released its lock
        await admin.aclose()


# -- Redis: single-key calls of concurrent tasks travel in batches -------------------------


def _rkey(key: Any, namespace: str = "cache") -> bytes:
    return key_join(namespace, "v").encode() + b":" + encode_key(key)


async def _calls_of(admin: redis_asyncio.Redis, *commands: str) -> dict[str, int]:
    """How many times the server has run each of ``commands`` (INFO commandstats)."""
    stats = await admin.info("commandstats")
    return {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in commands}


async def test_concurrent_gets_share_one_round_trip(redis_url: str) -> None:
    admin = connect(redis_url)
    async with RedisCacheLevel(redis_url) as level:
        assert await level.set_many([(i, {"n": i}, 60.0) for i in range(100)]) == 100
        before = await _calls_of(admin, "exec", "mget", "pttl", "get")
        entries = await asyncio.gather(*(level.get_entry(i) for i in range(100)))
        after = await _calls_of(admin, "exec", "mget", "pttl", "get")
        for key, entry in enumerate(entries):
            assert entry is not None
            assert entry.value == {"n": key}
            assert entry.ttl is not None
            assert 0.0 < entry.ttl <= 60.0
        stats = level.redis_statistics()
        # One pass of the loop, one batch: one MULTI/EXEC of one MGET and 100 PTTLs
        # (one at a time it was 100 transactions).
        assert (stats.read_batches, stats.batched_reads) == (1, 100)
        assert after["exec"] - before["exec"] == 1
        assert after["mget"] - before["mget"] == 1
        assert after["pttl"] - before["pttl"] == 100
        assert after["get"] == before["get"]
        assert (level.statistics().hits, level.statistics().misses) == (100, 0)
        # A lone get is a batch of one.
        assert await level.get_entry("absent") is None
        stats = level.redis_statistics()
        assert (stats.read_batches, stats.batched_reads) == (2, 101)
        assert level.statistics().misses == 1
    await admin.aclose()


async def test_concurrent_gets_of_one_key_are_sent_once_and_decoded_per_caller(
    redis_url: str,
) -> None:
    admin = connect(redis_url)
    async with RedisCacheLevel(redis_url) as level:
        assert await level.set("hot", [1, 2, 3])
        before = await _calls_of(admin, "pttl")
        entries = await asyncio.gather(*(level.get_entry("hot") for _ in range(20)))
        assert await _calls_of(admin, "pttl") == {"pttl": before["pttl"] + 1}
        values = [entry.value for entry in entries if entry is not None]
        assert values == [[1, 2, 3]] * 20
        # Each caller decoded its own copy: mutating one does not change another.
        assert len({id(value) for value in values}) == 20
        reads = level.batcher_statistics()["reads"]
        assert (reads.submitted, reads.items, reads.deduplicated) == (20, 1, 19)
        assert level.statistics().hits == 20  # counted per call
    await admin.aclose()


async def test_concurrent_sets_share_one_pipeline_and_the_last_value_wins(
    redis_url: str,
) -> None:
    admin = connect(redis_url)
    async with RedisCacheLevel(redis_url) as level:
        before = await _calls_of(admin, "set")
        stored = await asyncio.gather(
            *(level.set(i, f"v{i}", ttl=60.0) for i in range(100)),
            *(level.set("same", attempt) for attempt in range(3)),  # in arrival order
        )
        assert stored == [True] * 103
        assert await _calls_of(admin, "set") == {"set": before["set"] + 103}
        stats = level.redis_statistics()
        assert (stats.write_batches, stats.batched_writes) == (1, 103)
        assert level.statistics().sets == 103
        found = await level.get_many([*range(100), "same"])
        assert {key: entry.value for key, entry in found.items() if key != "same"} == {
            i: f"v{i}" for i in range(100)
        }
        assert found["same"] == (2, None)
        entries = await asyncio.gather(*(level.get_entry(i) for i in range(100)))
        assert [entry.value for entry in entries if entry is not None] == [
            f"v{i}" for i in range(100)
        ]
        assert level.redis_statistics().read_batches == 1
    await admin.aclose()


async def test_a_damaged_or_foreign_value_spoils_only_its_own_key(redis_url: str) -> None:
    admin = connect(redis_url)
    async with RedisCacheLevel(redis_url, hmac_key=b"secret") as level:
        assert await level.set_many([(i, i, None) for i in range(10)]) == 10
        stored = await admin.get(_rkey(3))
        assert isinstance(stored, bytes)
        await admin.set(_rkey(3), stored[:-1] + bytes([stored[-1] ^ 1]))  # bad signature
        await admin.delete(_rkey(5))
        await admin.hset(_rkey(5), "field", "a hash, not a string")  # another type
        entries = await asyncio.gather(*(level.get_entry(i) for i in range(10)))
        expected: list[int | None] = list(range(10))
        expected[3] = expected[5] = None
        assert [None if entry is None else entry.value for entry in entries] == expected
        stats = level.redis_statistics()
        assert (stats.read_batches, stats.corrupt, stats.read_errors) == (1, 1, 0)
        assert (level.statistics().hits, level.statistics().misses) == (8, 2)
        await eventually(lambda: _absent(admin, _rkey(3)))  # the damaged value is removed
        assert await admin.type(_rkey(5)) == b"hash"  # not ours to remove
    await admin.aclose()


async def test_a_cancelled_caller_does_not_disturb_its_batch(redis_url: str) -> None:
    admin = connect(redis_url)
    async with RedisCacheLevel(redis_url, near_cache=32) as level:
        await level.set_many([(i, f"v{i}", None) for i in range(10)])
        await wait_until(
            lambda: level.redis_statistics().invalidated_keys == 10, max_yields=NETWORK_YIELDS
        )
        getters = [asyncio.ensure_future(level.get_entry(i)) for i in range(10)]
        setters = [asyncio.ensure_future(level.set(f"w{i}", i)) for i in range(5)]
        await asyncio.sleep(0)  # every caller has submitted its key
        getters[3].cancel()
        setters[1].cancel()
        done = await asyncio.gather(*getters, *setters, return_exceptions=True)
        assert isinstance(done[3], asyncio.CancelledError)
        assert isinstance(done[10 + 1], asyncio.CancelledError)
        assert [entry.value for entry in done[:10] if isinstance(entry, ap.cache.CacheEntry)] == [
            f"v{i}" for i in range(10) if i != 3
        ]
        assert done[10:] == [True, done[11], True, True, True]
        reads = level.batcher_statistics()["reads"]
        writes = level.batcher_statistics()["writes"]
        for batcher in (reads, writes):
            assert batcher.cancelled == 1
            assert batcher.batches_failed == 0
            assert batcher.outstanding == 0
            assert batcher.submitted == batcher.succeeded
        # The cancelled write still landed (its key stayed in the batch) and was counted.
        assert await admin.exists(_rkey("w1")) == 1
        assert level.statistics().sets == 10 + 5
        # The cancelled read is not counted, and its fill ticket was returned: only
        # the nine answered reads are kept near.
        assert level.statistics().hits == 9
        assert not level._fills
        assert level.redis_statistics().near_entries == 9
    await admin.aclose()


async def test_an_unreachable_server_fails_every_key_of_a_batch_and_counts_each() -> None:
    client = connect("redis://127.0.0.1:1/0", timeout=0.5)
    level = RedisCacheLevel(client)
    try:
        entries = await asyncio.gather(*(level.get_entry(i) for i in range(20)))
        assert entries == [None] * 20
        stored = await asyncio.gather(*(level.set(i, i) for i in range(20)))
        assert stored == [False] * 20
        stats, redis_stats = level.statistics(), level.redis_statistics()
        assert (stats.hits, stats.misses, stats.sets) == (0, 20, 0)
        assert (redis_stats.read_errors, redis_stats.write_errors) == (20, 20)
        assert (redis_stats.read_batches, redis_stats.write_batches) == (1, 1)
        for batcher in level.batcher_statistics().values():
            # Redis failing is an answer per key (a miss, False), not a failed batch.
            assert (batcher.succeeded, batcher.batches_failed) == (20, 0)
    finally:
        await level.aclose()
        await client.aclose()


async def test_closing_sends_the_pending_batches_first(redis_url: str) -> None:
    admin = connect(redis_url)
    await admin.set(_rkey("old"), b"")  # replaced below, through the level
    level = RedisCacheLevel(redis_url, near_cache=8)
    assert await level.wait_tracking(10.0)
    assert await level.set_many([(i, i, None) for i in range(10)]) == 10
    getters = [asyncio.ensure_future(level.get_entry(i)) for i in range(10)]
    setters = [asyncio.ensure_future(level.set(f"new{i}", i)) for i in range(3)]
    # Queued right after the callers: aclose starts while their keys are pending (the
    # batches go at its request, or on their own a moment later on uvloop, where the
    # batcher's zero-delay timer runs before aclose's own tasks), and the client it
    # closes at the end was still open for them: every caller has its true answer.
    closing = asyncio.ensure_future(level.aclose())
    entries = await asyncio.gather(*getters)
    assert [entry.value for entry in entries if entry is not None] == list(range(10))
    assert await asyncio.gather(*setters) == [True] * 3
    await closing
    assert level.closed
    stats = level.redis_statistics()
    assert (stats.read_errors, stats.write_errors) == (0, 0)
    for batcher in level.batcher_statistics().values():
        assert batcher.batches == 1
        assert batcher.outstanding == batcher.pending == batcher.in_flight == 0
    assert [await admin.exists(_rkey(f"new{i}")) for i in range(3)] == [1, 1, 1]
    with pytest.raises(ap.CacheClosed):
        await level.get_entry(0)
    with pytest.raises(ap.CacheClosed):
        await level.set(0, 0)
    await admin.aclose()


async def test_a_cancelled_close_fails_the_batches_in_flight() -> None:
    # A server that accepts and never answers: the batch stays in flight until
    # aclose is cancelled, which must end it (and its callers) rather than hang.
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = connect(f"redis://127.0.0.1:{port}/0", timeout=30.0)
    level = RedisCacheLevel(client)
    try:
        getters = [asyncio.ensure_future(level.get_entry(i)) for i in range(5)]
        setter = asyncio.ensure_future(level.set("k", 1))
        await wait_until(
            lambda: all(batcher.in_flight == 1 for batcher in level.batcher_statistics().values())
        )
        closing = asyncio.ensure_future(level.aclose())
        await wait_until(lambda: level.closed)
        await asyncio.sleep(0)  # aclose waits for the batches now
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        for caller in [*getters, setter]:
            with pytest.raises(ap.CacheClosed):
                await caller
        for batcher in level.batcher_statistics().values():
            assert batcher.batches_failed == 1
            assert batcher.outstanding == batcher.in_flight == 0
        await level.aclose()  # closed already: nothing left to do
    finally:
        await level.aclose()
        await client.aclose()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_writes_redis_refuses_are_false_per_key_not_a_failed_batch(redis_url: str) -> None:
    admin = connect(redis_url)
    async with RedisCacheLevel(redis_url) as level:
        await admin.config_set("maxmemory", "1")  # every write is refused now: OOM
        try:
            stored = await asyncio.gather(*(level.set(i, i) for i in range(5)))
            alone = await level.set("alone", 1)
        finally:
            await admin.config_set("maxmemory", "0")
        assert stored == [False] * 5
        assert alone is False
        stats = level.redis_statistics()
        assert (stats.write_errors, stats.write_batches, stats.batched_writes) == (6, 2, 6)
        assert level.statistics().sets == 0
        # Redis answered: every key got its answer, no batch failed as a whole.
        assert level.batcher_statistics()["writes"].batches_failed == 0
        assert await level.set("after", 1) is True
        assert (await level.get_entry("after")) == (1, None)
    await admin.aclose()
