"""MemoryCache: values and misses, bounds under every policy, TTL and sweep, switching
policies and capacity, statistics, bad input, closing."""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Hashable
from typing import Any, ClassVar, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncperf._errors import CacheClosed
from asyncperf.cache._base import MISS, CacheEntry, CacheLevel, EvictionReason
from asyncperf.cache._memory import MemoryCache, default_weigher
from asyncperf.cache._policies import POLICIES, LRUPolicy, PolicyName
from asyncperf.testing import VirtualClock

ALL_POLICIES = sorted(POLICIES)
REASONS = {reason.value for reason in EvictionReason}


def policy_name(name: str) -> PolicyName:
    return cast(PolicyName, name)


# -- values, misses, defaults ---------------------------------------------------------


async def test_none_is_a_value_and_a_miss_returns_miss() -> None:
    """None is stored and returned; an absent key returns MISS, or the default given."""
    cache = MemoryCache(10, policy="lru")
    assert await cache.set("k", None) is True
    assert await cache.get("k") is None
    assert cache.get_nowait("k", default="other") is None
    assert await cache.get("absent") is MISS
    assert cache.get_nowait("absent") is MISS
    assert await cache.get("absent", default=None) is None
    assert cache.get_nowait("absent", 7) == 7
    assert "k" in cache
    assert "absent" not in cache
    stats = cache.statistics()
    assert (stats.hits, stats.misses, stats.sets) == (2, 4, 1)


async def test_overwrite_replaces_the_value() -> None:
    """A second set of a key replaces the value and keeps one entry."""
    cache = MemoryCache(10, policy="lru")
    await cache.set("k", 1)
    await cache.set("k", 2)
    assert await cache.get("k") == 2
    assert len(cache) == 1


async def test_delete() -> None:
    """delete says whether the key was there, and counts only real removals."""
    cache = MemoryCache(10, policy="lru")
    await cache.set("k", 1)
    assert await cache.delete("k") is True
    assert await cache.delete("k") is False
    assert cache.delete_nowait("never") is False
    assert await cache.get("k") is MISS
    assert cache.statistics().deletes == 1


async def test_clear_removes_everything() -> None:
    """clear empties the cache; it is not counted as deletes or evictions."""
    cache = MemoryCache(10, max_bytes=100, policy="lru")
    for i in range(5):
        await cache.set(i, b"abc", ttl=30.0)
    await cache.clear()
    assert len(cache) == 0
    assert cache.size == 0
    assert cache.expire() == 0
    stats = cache.statistics()
    assert stats.deletes == 0
    assert sum(stats.evictions.values()) == 0
    await cache.set("again", 1)
    assert await cache.get("again") == 1


async def test_is_a_cache_level() -> None:
    """MemoryCache satisfies the level protocol TieredCache stacks."""
    cache = MemoryCache(10, policy="lru")
    assert isinstance(cache, CacheLevel)
    assert cache.name == "memory"
    assert MemoryCache(10, policy="lru", name="l1").name == "l1"


@pytest.mark.skipif("tinylfu" not in POLICIES, reason="the tinylfu policy is not available")
def test_default_policy_is_tinylfu() -> None:
    """W-TinyLFU is the default policy."""
    assert MemoryCache().policy == "tinylfu"
    assert MemoryCache().max_entries == 10_000


def test_default_weigher() -> None:
    """Lengths for bytes-like and str values, sys.getsizeof for anything else."""
    assert default_weigher(b"abcd") == 4
    assert default_weigher(bytearray(7)) == 7
    assert default_weigher(memoryview(b"abcdef")[1:3]) == 2
    assert default_weigher("héllo") == 5
    assert default_weigher([1, 2, 3]) == sys.getsizeof([1, 2, 3])


async def test_hits_refresh_recency_through_the_policy() -> None:
    """A hit reaches the policy: under LRU the key read last survives the next eviction."""
    cache = MemoryCache(2, policy="lru")
    await cache.set("a", 1)
    await cache.set("b", 2)
    assert await cache.get("a") == 1
    await cache.set("c", 3)
    assert "a" in cache
    assert "b" not in cache
    assert cache.statistics().evictions["capacity"] == 1


async def test_contains_has_no_effect() -> None:
    """``in`` counts nothing and changes no recency."""
    cache = MemoryCache(2, policy="lru")
    await cache.set("a", 1)
    await cache.set("b", 2)
    assert "a" in cache
    await cache.set("c", 3)  # "a" is still the least recently used
    assert "a" not in cache
    stats = cache.statistics()
    assert (stats.hits, stats.misses) == (0, 0)


# -- bounds under every policy ----------------------------------------------------------


@pytest.mark.parametrize("policy", ALL_POLICIES)
async def test_max_entries_is_respected(policy: str) -> None:
    """However many keys are written, the cache holds at most max_entries."""
    cache = MemoryCache(50, policy=policy_name(policy))
    stored = 0
    for i in range(500):
        stored += await cache.set(i, i)
        await cache.get(i // 2)
        assert len(cache) <= 50
    stats = cache.statistics()
    assert stats.entries == len(cache) <= 50
    # Nothing vanished uncounted: every key is held, was evicted, or was not admitted.
    assert stats.evictions["capacity"] == 500 - len(cache)
    assert stats.sets == stored
    for i in range(500):
        value = cache.get_nowait(i)
        assert value is MISS or value == i


@pytest.mark.parametrize("policy", ALL_POLICIES)
async def test_max_bytes_is_respected(policy: str) -> None:
    """The bytes held stay within max_bytes, as the weigher counts them."""
    cache = MemoryCache(None, max_bytes=1_000, policy=policy_name(policy))
    for i in range(300):
        await cache.set(i, b"x" * (i % 40))
        assert cache.size <= 1_000
    held = [i for i in range(300) if i in cache]
    assert cache.size == sum(i % 40 for i in held)
    assert cache.statistics().bytes == cache.size


@pytest.mark.parametrize("policy", ALL_POLICIES)
async def test_too_large_is_refused_and_keeps_the_others(policy: str) -> None:
    """A value heavier than max_bytes is refused; the key ends absent; nothing else leaves."""
    cache = MemoryCache(None, max_bytes=10, policy=policy_name(policy))
    assert await cache.set("a", b"12345") is True
    assert await cache.set("b", b"123") is True
    assert await cache.set("c", b"x" * 11) is False
    assert "c" not in cache
    assert await cache.set("a", b"y" * 11) is False  # the older value goes too
    assert "a" not in cache
    assert await cache.get("b") == b"123"
    assert cache.size == 3
    evictions = cache.statistics().evictions
    assert evictions["too_large"] == 2
    assert evictions["capacity"] == 0


# Few keys, so that writes, reads and deletes of one key meet often.
KEYS = range(5)
KEY = st.sampled_from(KEYS)
OPS = st.one_of(
    st.tuples(
        st.just("set"),
        KEY,
        st.binary(max_size=12),
        st.one_of(st.none(), st.sampled_from([0.5, 1.0, 3.0])),
    ),
    st.tuples(st.just("get"), KEY),
    st.tuples(st.just("delete"), KEY),
    st.tuples(st.just("advance"), st.sampled_from([0.3, 1.0, 2.5])),
    st.tuples(st.just("expire")),
    st.tuples(
        st.just("capacity"),
        st.one_of(st.none(), st.integers(1, 6)),
        st.one_of(st.none(), st.integers(1, 30)),
    ),
    st.tuples(st.just("policy"), st.sampled_from(ALL_POLICIES)),
)


@pytest.mark.parametrize("policy", ALL_POLICIES)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_entries=st.one_of(st.none(), st.integers(1, 6)),
    max_bytes=st.one_of(st.none(), st.integers(1, 30)),
    ops=st.lists(OPS, max_size=60),
)
def test_random_operations_match_a_model(
    policy: str, max_entries: int | None, max_bytes: int | None, ops: list[tuple[Any, ...]]
) -> None:
    """Against what was last set: a held key has its last value, never expired, within bounds."""
    if max_entries is None and max_bytes is None:
        max_entries = 4
    clock = VirtualClock()
    cache = MemoryCache(max_entries, max_bytes=max_bytes, policy=policy_name(policy), clock=clock)
    model: dict[Hashable, tuple[bytes, float]] = {}  # key -> (value, expires)

    def alive(key: Hashable) -> bool:
        return key in model and model[key][1] > clock.now()

    for op in ops:
        kind = op[0]
        alive_before = {key for key in model if alive(key)}
        capacity_before = cache.statistics().evictions["capacity"]
        if kind == "set":
            _, key, value, ttl = op
            stored = cache.set_nowait(key, value, ttl)
            alive_before.discard(key)
            if stored:
                model[key] = (value, math.inf if ttl is None else clock.now() + ttl)
                assert key in cache
            else:
                model.pop(key, None)
                assert key not in cache
        elif kind == "get":
            found = cache.get_nowait(op[1])
            if found is MISS:
                assert not alive(op[1])
                assert op[1] not in cache
            else:
                assert alive(op[1])
                assert found == model[op[1]][0]
        elif kind == "delete":
            expected = alive(op[1])
            assert cache.delete_nowait(op[1]) is expected
            assert op[1] not in cache
            model.pop(op[1], None)
            alive_before.discard(op[1])
        elif kind == "advance":
            clock.advance(op[1])
        elif kind == "expire":
            cache.expire()
        elif kind == "capacity":
            entries, nbytes = op[1], op[2]
            if entries is None and nbytes is None:
                entries = 3
            cache.set_capacity(max_entries=entries, max_bytes=nbytes)
        else:
            cache.set_eviction_policy(policy_name(op[1]))
            assert cache.policy == op[1]
        # Nothing alive leaves uncounted: each one gone was a capacity eviction.
        lost = {key for key in alive_before if alive(key) and key not in cache}
        assert cache.statistics().evictions["capacity"] - capacity_before >= len(lost)
        for key in lost:
            del model[key]
        for key in KEYS:
            if key in cache:
                assert alive(key)
        stats = cache.statistics()
        assert stats.entries == len(cache)
        assert stats.bytes == cache.size
        if stats.max_entries is not None:
            assert len(cache) <= stats.max_entries
        if stats.max_bytes is not None:
            assert cache.size <= stats.max_bytes
        else:
            assert cache.size == 0
    cache.expire()  # now every entry held is alive, so ``in`` sees them all
    held = [key for key in KEYS if key in cache]
    assert len(held) == len(cache)
    for key in held:
        assert cache.get_nowait(key) == model[key][0]
    if cache.max_bytes is not None:
        assert cache.size == sum(len(model[key][0]) for key in held)


# -- admission --------------------------------------------------------------------------


class RefuseNewKeys(LRUPolicy):
    """A policy that admits nothing new once it holds one key (as W-TinyLFU may refuse)."""

    name = cast(Any, "refuse")  # a test-only name, outside PolicyName

    def insert(self, key: Hashable, weight: int) -> list[Hashable]:
        if len(self):
            return [key]
        return super().insert(key, weight)


async def test_a_value_not_admitted_is_counted_and_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the policy refuses the inserted key, set returns False and counts a capacity miss."""
    monkeypatch.setitem(POLICIES, "refuse", RefuseNewKeys)
    cache = MemoryCache(10, policy=policy_name("refuse"))
    assert await cache.set("first", 1) is True
    assert await cache.set("second", 2) is False
    assert "second" not in cache
    assert await cache.set("first", 3) is True  # an update is always admitted
    assert await cache.get("first") == 3
    stats = cache.statistics()
    assert stats.evictions["capacity"] == 1
    assert stats.sets == 2
    assert len(cache) == 1


class RecordingPolicy(LRUPolicy):
    """LRU that records which of its calls the cache made."""

    name = cast(Any, "recording")  # a test-only name, outside PolicyName
    made: ClassVar[list[RecordingPolicy]] = []

    def __init__(self, max_entries: int | None = None, max_weight: int | None = None) -> None:
        super().__init__(max_entries, max_weight)
        self.calls: list[tuple[str, Hashable]] = []
        RecordingPolicy.made.append(self)
        self.access = lambda key: self.calls.append(("access", key))  # type: ignore[method-assign]

    def miss(self, key: Hashable) -> None:
        self.calls.append(("miss", key))

    def insert(self, key: Hashable, weight: int) -> list[Hashable]:
        self.calls.append(("insert", key))
        return super().insert(key, weight)

    def update(self, key: Hashable, weight: int) -> list[Hashable]:
        self.calls.append(("update", key))
        return super().update(key, weight)

    def remove(self, key: Hashable) -> None:
        self.calls.append(("remove", key))
        super().remove(key)


@pytest.mark.virtual_time
async def test_the_policy_hears_every_event(
    monkeypatch: pytest.MonkeyPatch, clock: VirtualClock
) -> None:
    """Misses, hits, writes, overwrites, deletes and expiries each reach the policy once."""
    monkeypatch.setitem(POLICIES, "recording", RecordingPolicy)
    monkeypatch.setattr(RecordingPolicy, "made", [])
    cache = MemoryCache(10, policy=policy_name("recording"), clock=clock)
    await cache.get("a")
    await cache.set("a", 1)
    await cache.get("a")
    await cache.get_entry("a")
    await cache.set("a", 2, ttl=1.0)
    assert "a" in cache  # no call: ``in`` is silent
    clock.advance(1.0)
    await cache.get("a")  # expired: removed, then a miss
    await cache.set("b", 1)
    await cache.delete("b")
    [policy] = RecordingPolicy.made
    assert policy.calls == [
        ("miss", "a"),
        ("insert", "a"),
        ("access", "a"),
        ("access", "a"),
        ("update", "a"),
        ("remove", "a"),
        ("miss", "a"),
        ("insert", "b"),
        ("remove", "b"),
    ]


# -- TTL, sweep, jitter -----------------------------------------------------------------


@pytest.mark.virtual_time
async def test_ttl_lazy_expiry(clock: VirtualClock) -> None:
    """An entry past its TTL reads as a miss and is removed, counted as expired."""
    cache = MemoryCache(10, policy="lru", clock=clock)
    await cache.set("k", "v", ttl=5.0)
    await cache.set("forever", "v")
    clock.advance(4.9)
    assert await cache.get("k") == "v"
    clock.advance(0.2)
    assert "k" not in cache
    assert await cache.get("k", default="gone") == "gone"
    assert len(cache) == 1
    assert await cache.get("forever") == "v"
    stats = cache.statistics()
    assert stats.evictions["expired"] == 1
    assert (stats.hits, stats.misses) == (2, 1)


@pytest.mark.virtual_time
async def test_default_ttl_and_override(clock: VirtualClock) -> None:
    """default_ttl applies when set is given none; ttl= overrides it; rewriting resets it."""
    cache = MemoryCache(10, policy="lru", default_ttl=10.0, clock=clock)
    await cache.set("default", 1)
    await cache.set("short", 2, ttl=1.0)
    await cache.set("long", 3, ttl=100.0)
    clock.advance(2.0)
    assert await cache.get("short") is MISS
    assert await cache.get("default") == 1
    clock.advance(9.0)
    assert await cache.get("default") is MISS
    assert await cache.get("long") == 3
    await cache.set("long", 4)  # rewritten: the default TTL again, from now
    entry = await cache.get_entry("long")
    assert entry == CacheEntry(4, 10.0)


@pytest.mark.virtual_time
async def test_rewrite_without_ttl_removes_the_expiry(clock: VirtualClock) -> None:
    """Overwriting a key with no TTL (and no default) makes it permanent."""
    cache = MemoryCache(10, policy="lru", clock=clock)
    await cache.set("k", 1, ttl=1.0)
    await cache.set("k", 2)
    clock.advance(50.0)
    assert cache.expire() == 0
    assert await cache.get("k") == 2


@pytest.mark.virtual_time
async def test_sweep_removes_entries_nobody_reads(clock: VirtualClock) -> None:
    """Writes sweep expired keys in bounded batches, without anyone reading them."""
    cache = MemoryCache(1_000, policy="lru", clock=clock)
    for i in range(200):
        await cache.set(i, i, ttl=1.0)
    clock.advance(3.0)
    await cache.set("trigger", 0)
    # Bounded work: one write does not sweep the whole backlog...
    assert 1 < len(cache) < 201
    for i in range(5):
        await cache.set(f"more{i}", i)
    # ...but a few writes do, and every removal is counted.
    assert len(cache) == 6
    stats = cache.statistics()
    assert stats.evictions["expired"] == 200
    assert stats.misses == 0


@pytest.mark.virtual_time
async def test_reads_of_live_entries_sweep_too(clock: VirtualClock) -> None:
    """A hit on an entry with a TTL also sweeps expired buckets."""
    cache = MemoryCache(100, policy="lru", clock=clock)
    await cache.set("live", 1, ttl=100.0)
    for i in range(20):
        await cache.set(i, i, ttl=1.0)
    clock.advance(2.0)
    assert await cache.get("live") == 1
    assert len(cache) == 1
    assert cache.statistics().evictions["expired"] == 20


@pytest.mark.virtual_time
async def test_expire_sweeps_everything_due(clock: VirtualClock) -> None:
    """expire() removes every expired entry, including those of the current second."""
    cache = MemoryCache(100, policy="lru", clock=clock)
    await cache.set("a", 1, ttl=0.2)
    await cache.set("b", 2, ttl=0.8)
    await cache.set("c", 3, ttl=30.0)
    clock.advance(0.5)
    assert cache.expire() == 1
    assert sorted(str(k) for k in ("a", "b", "c") if k in cache) == ["b", "c"]
    clock.advance(100.0)
    assert cache.expire() == 2
    assert len(cache) == 0
    assert cache.statistics().evictions["expired"] == 3


@pytest.mark.virtual_time
async def test_delete_of_an_expired_key(clock: VirtualClock) -> None:
    """Deleting an entry whose TTL passed reports False and counts it as expired."""
    cache = MemoryCache(10, policy="lru", clock=clock)
    await cache.set("k", 1, ttl=1.0)
    clock.advance(1.0)
    assert await cache.delete("k") is False
    stats = cache.statistics()
    assert (stats.deletes, stats.evictions["expired"], stats.entries) == (0, 1, 0)


@pytest.mark.virtual_time
async def test_jitter_shortens_ttls_within_bounds(clock: VirtualClock) -> None:
    """With jitter j, each stored TTL is in [ttl * (1 - j), ttl] and they differ."""
    cache = MemoryCache(1_000, policy="lru", jitter=0.5, clock=clock)
    await cache.set_many((i, i, 10.0) for i in range(200))
    found = await cache.get_many(range(200))
    ttls = [entry.ttl for entry in found.values()]
    assert len(ttls) == 200
    assert all(t is not None and 5.0 <= t <= 10.0 for t in ttls)
    assert len(set(ttls)) > 100
    plain = MemoryCache(10, policy="lru", clock=clock)
    await plain.set("k", 1, ttl=10.0)
    assert await plain.get_entry("k") == CacheEntry(1, 10.0)


@pytest.mark.virtual_time
async def test_get_entry_get_many_set_many(clock: VirtualClock) -> None:
    """Entries report the time they have left; set_many counts what was stored."""
    cache = MemoryCache(10, max_bytes=30, policy="lru", clock=clock)  # None weighs 16
    stored = await cache.set_many([("a", b"1", 10.0), ("b", None, None), ("big", b"x" * 31, None)])
    assert stored == 2
    clock.advance(4.0)
    assert await cache.get_entry("a") == CacheEntry(b"1", 6.0)
    assert await cache.get_entry("b") == CacheEntry(None, None)
    assert await cache.get_entry("big") is None
    assert await cache.get_many(["a", "b", "big", "c"]) == {
        "a": CacheEntry(b"1", 6.0),
        "b": CacheEntry(None, None),
    }
    clock.advance(6.0)
    assert await cache.get_many(["a"]) == {}
    stats = cache.statistics()
    assert (stats.hits, stats.misses) == (4, 4)
    assert stats.evictions["expired"] == 1


async def test_set_many_checks_every_ttl_first() -> None:
    """A bad ttl anywhere in set_many stores nothing."""
    cache = MemoryCache(10, policy="lru")
    with pytest.raises(ValueError, match=r"^ttl must be > 0, not -1"):
        await cache.set_many([("a", 1, None), ("b", 2, -1)])
    assert len(cache) == 0


# -- switching policy and capacity --------------------------------------------------------


@pytest.mark.parametrize("target", ALL_POLICIES)
@pytest.mark.parametrize("source", ALL_POLICIES)
async def test_switch_policy_on_a_live_cache(source: str, target: str) -> None:
    """Switching policy keeps the entries and their values, within the bounds."""
    cache = MemoryCache(20, max_bytes=200, policy=policy_name(source))
    for i in range(60):
        await cache.set(i, bytes(i % 15))
        await cache.get(i % 7)
    before = {i: cache.get_nowait(i) for i in range(60) if i in cache}
    size = cache.size
    cache.set_eviction_policy(policy_name(target))
    assert cache.policy == target
    assert cache.statistics().policy == target
    after = {i: cache.get_nowait(i) for i in range(60) if i in cache}
    assert after == before  # same bounds: the new policy has room for all of them
    assert cache.size == size
    for i in range(60, 120):
        await cache.set(i, bytes(i % 15))
        assert len(cache) <= 20
        assert cache.size <= 200


async def test_switch_policy_moves_the_hit_path() -> None:
    """After a switch, hits reach the new policy (recency still decides under LRU)."""
    cache = MemoryCache(2, policy="lru")
    await cache.set("a", 1)
    await cache.set("b", 2)
    cache.set_eviction_policy("lru")
    assert await cache.get("a") == 1
    await cache.set("c", 3)
    assert "a" in cache
    assert "b" not in cache


@pytest.mark.parametrize("policy", ALL_POLICIES)
async def test_set_capacity_shrinks_at_once(policy: str) -> None:
    """Lowering max_entries evicts down to it at once, counted as capacity evictions."""
    cache = MemoryCache(100, policy=policy_name(policy))
    for i in range(100):
        await cache.set(i, i)
    assert len(cache) == 100
    cache.set_capacity(max_entries=10)
    assert len(cache) == 10
    assert cache.max_entries == 10
    assert cache.statistics().evictions["capacity"] == 90
    for i in range(100):
        assert cache.get_nowait(i) in (MISS, i)


async def test_set_capacity_by_bytes() -> None:
    """Starting, shrinking and stopping the byte bound weighs, evicts and forgets weights."""
    cache = MemoryCache(100, policy="lru")
    for i in range(10):
        await cache.set(i, b"x" * 10)
    assert cache.size == 0
    cache.set_capacity(max_bytes=1_000)  # starts weighing: every entry is weighed now
    assert (cache.size, len(cache), cache.max_entries) == (100, 10, 100)
    cache.set_capacity(max_bytes=55)
    assert cache.size == 50
    assert len(cache) == 5
    assert [i for i in range(10) if i in cache] == [5, 6, 7, 8, 9]  # LRU kept the newest
    await cache.set("big", b"y" * 40)  # evicts 5, 6, 7 and 8 to fit
    assert cache.size == 50
    cache.set_capacity(max_bytes=30)  # "big" alone is over the new bound
    assert "big" not in cache
    assert [i for i in range(10) if i in cache] == [9]
    cache.set_capacity(max_bytes=None)
    assert cache.size == 0
    assert cache.max_bytes is None
    assert cache.statistics().evictions["capacity"] == 5 + 4 + 1
    with pytest.raises(ValueError, match=r"^max_entries or max_bytes must be set"):
        cache.set_capacity(max_entries=None)


# -- statistics ---------------------------------------------------------------------------


async def test_statistics_counts() -> None:
    """Every counter moves with the operation it counts; every reason is present."""
    cache = MemoryCache(3, max_bytes=100, policy="lru", name="l1")
    for i in range(5):
        await cache.set(i, b"ab")
    for _ in range(40):
        await cache.get(4)
    await cache.get(0)
    await cache.set("huge", b"z" * 101)
    await cache.delete(3)
    stats = cache.statistics()
    assert stats.name == "l1"
    assert stats.policy == "lru"
    assert (stats.entries, stats.bytes) == (2, 4)
    assert (stats.max_entries, stats.max_bytes) == (3, 100)
    assert (stats.hits, stats.misses, stats.sets, stats.deletes) == (40, 1, 5, 1)
    assert set(stats.evictions) == REASONS
    assert stats.evictions == {"capacity": 2, "expired": 0, "too_large": 1, "corrupt": 0}
    assert stats.hit_ratio == pytest.approx(40 / 41)
    assert stats.hit_latency_p50 is not None
    assert stats.hit_latency_p99 is not None
    assert 0 < stats.hit_latency_p50 <= stats.hit_latency_p99


def test_no_latency_before_any_hit() -> None:
    """The latency percentiles are None until a sampled hit."""
    stats = MemoryCache(3, policy="lru").statistics()
    assert (stats.hit_latency_p50, stats.hit_latency_p99) == (None, None)
    assert stats.evictions == dict.fromkeys(REASONS, 0)


def test_repr_shows_state() -> None:
    """repr names the cache, its policy and its fill."""
    cache = MemoryCache(10, max_bytes=100, policy="lru")
    cache.set_nowait("a", b"abc")
    assert repr(cache) == "<MemoryCache 'memory' lru 1/10 entries, 3/100 bytes>"


# -- never yields -------------------------------------------------------------------------


async def test_async_calls_never_yield() -> None:
    """get, set, delete and the rest complete without letting another task run."""
    cache = MemoryCache(10, policy="lru")
    started = asyncio.Event()

    async def other() -> None:
        started.set()

    task = asyncio.create_task(other())
    await cache.set("k", 1)
    for _ in range(40):  # past a latency sample
        assert await cache.get("k") == 1
        assert await cache.get("absent") is MISS
        await cache.get_entry("k")
    await cache.get_many(["k", "absent"])
    await cache.set_many([("j", 2, None)])
    await cache.delete("j")
    await cache.clear()
    assert not started.is_set()
    await task
    assert started.is_set()


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_entries": 0}, ValueError, r"^max_entries must be >= 1, not 0$"),
        ({"max_entries": "10"}, TypeError, r"^max_entries must be an int, not str$"),
        ({"max_entries": 10.0}, TypeError, r"^max_entries must be an int"),
        ({"max_bytes": 0}, ValueError, r"^max_bytes must be >= 1, not 0$"),
        ({"max_bytes": True}, TypeError, r"^max_bytes must be an int, not bool$"),
        ({"max_entries": None}, ValueError, r"^max_entries or max_bytes must be set"),
        ({"policy": "mru"}, ValueError, r"^policy must be one of .*lru.*, not 'mru'$"),
        ({"policy": ["lru"]}, ValueError, r"^policy must be one of"),
        ({"default_ttl": 0}, ValueError, r"^default_ttl must be > 0, not 0$"),
        ({"default_ttl": math.inf}, ValueError, r"^default_ttl must be finite"),
        ({"default_ttl": math.nan}, ValueError, r"^default_ttl must be > 0"),
        ({"default_ttl": "5"}, TypeError, r"^default_ttl must be a number, not str$"),
        ({"jitter": 1.0}, ValueError, r"^jitter must be < 1, not 1.0$"),
        ({"jitter": -0.1}, ValueError, r"^jitter must be >= 0, not -0.1$"),
        ({"jitter": None}, TypeError, r"^jitter must be a number"),
        ({"weigher": 3}, TypeError, r"^weigher must be callable, not int$"),
        ({"name": 3}, TypeError, r"^name must be a str, not int$"),
    ],
)
def test_bad_arguments_name_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Each bad constructor argument raises an error naming it."""
    arguments: dict[str, Any] = {"policy": "lru", **kwargs}
    with pytest.raises(error, match=message):
        MemoryCache(**arguments)


@pytest.mark.parametrize(
    ("ttl", "error", "message"),
    [
        (0, ValueError, r"^ttl must be > 0, not 0$"),
        (-1.5, ValueError, r"^ttl must be > 0, not -1.5$"),
        (math.inf, ValueError, r"^ttl must be finite, not inf$"),
        (math.nan, ValueError, r"^ttl must be > 0, not nan$"),
        ("1", TypeError, r"^ttl must be a number, not str$"),
    ],
)
async def test_bad_ttl_names_ttl(ttl: Any, error: type[Exception], message: str) -> None:
    """A bad ttl raises, names ttl, and stores nothing."""
    cache = MemoryCache(10, policy="lru")
    with pytest.raises(error, match=message):
        await cache.set("k", 1, ttl=ttl)
    with pytest.raises(error, match=message):
        cache.set_nowait("k", 1, ttl=ttl)
    assert len(cache) == 0


async def test_bad_weigher_result() -> None:
    """A weigher returning a negative or non-int weight is reported, naming the weigher."""
    negative = MemoryCache(10, max_bytes=100, policy="lru", weigher=lambda value: -1)
    with pytest.raises(ValueError, match=r"^weigher\(value\) must be >= 0, not -1$"):
        await negative.set("k", 1)
    fractional = MemoryCache(10, max_bytes=100, policy="lru", weigher=cast(Any, lambda v: 1.5))
    with pytest.raises(TypeError, match=r"^weigher\(value\) must be an int, not float$"):
        await fractional.set("k", 1)
    assert len(negative) == len(fractional) == 0


async def test_custom_weigher() -> None:
    """A custom weigher decides the weight of each value."""
    cache = MemoryCache(None, max_bytes=10, policy="lru", weigher=lambda value: value["w"])
    await cache.set("a", {"w": 4})
    await cache.set("b", {"w": 5})
    assert cache.size == 9
    assert await cache.set("c", {"w": 11}) is False


async def test_bad_policy_and_capacity_changes() -> None:
    """Switching to an unknown policy or a bad bound raises and changes nothing."""
    cache = MemoryCache(10, policy="lru")
    await cache.set("k", 1)
    with pytest.raises(ValueError, match=r"^policy must be one of"):
        cache.set_eviction_policy(policy_name("nope"))
    with pytest.raises(ValueError, match=r"^max_entries must be >= 1"):
        cache.set_capacity(max_entries=0)
    with pytest.raises(TypeError, match=r"^max_bytes must be an int"):
        cache.set_capacity(max_bytes=cast(int, "1k"))
    assert (cache.policy, cache.max_entries, cache.max_bytes) == ("lru", 10, None)
    assert await cache.get("k") == 1


async def test_unhashable_key() -> None:
    """An unhashable key raises TypeError and stores nothing."""
    cache = MemoryCache(10, policy="lru")
    with pytest.raises(TypeError, match="unhashable"):
        await cache.set(cast(Hashable, ["list"]), 1)
    assert len(cache) == 0


# -- closing ------------------------------------------------------------------------------


async def test_closed_cache_raises() -> None:
    """After aclose every operation raises CacheClosed; statistics still answer."""
    cache = MemoryCache(10, policy="lru")
    await cache.set("k", 1)
    await cache.aclose()
    await cache.aclose()  # idempotent
    assert cache.closed
    assert len(cache) == 0
    assert "k" not in cache
    message = r"^Cannot use a cache that has been closed\.$"
    with pytest.raises(CacheClosed, match=message):
        await cache.get("k")
    with pytest.raises(CacheClosed, match=message):
        cache.get_nowait("k")
    for _ in range(20):  # the sampled path too
        with pytest.raises(CacheClosed):
            await cache.get("k")
    with pytest.raises(CacheClosed):
        await cache.get_entry("k")
    with pytest.raises(CacheClosed):
        await cache.get_many([])
    with pytest.raises(CacheClosed):
        await cache.set("k", 1)
    with pytest.raises(CacheClosed):
        cache.set_nowait("k", 1)
    with pytest.raises(CacheClosed):
        await cache.set_many([])
    with pytest.raises(CacheClosed):
        await cache.delete("k")
    with pytest.raises(CacheClosed):
        await cache.clear()
    with pytest.raises(CacheClosed):
        cache.expire()
    with pytest.raises(CacheClosed):
        cache.set_capacity(max_entries=5)
    with pytest.raises(CacheClosed):
        cache.set_eviction_policy("lru")
    assert isinstance(cache.statistics().hits, int)
    assert "closed" in repr(cache)


async def test_async_with_closes() -> None:
    """``async with`` returns the cache and closes it on exit; a closed one cannot re-enter."""
    async with MemoryCache(10, policy="lru") as cache:
        await cache.set("k", 1)
        assert await cache.get("k") == 1
    assert cache.closed
    with pytest.raises(CacheClosed):
        async with cache:
            pass
