"""DiskCache: round trips, TTL, restart, eviction, corruption, safety, concurrency, processes."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from asyncperf._errors import CacheClosed, CacheError, UnsafeCacheDirectory
from asyncperf.cache import _disk, _presence
from asyncperf.cache._base import MISS, CacheEntry, CacheLevel, EvictionReason
from asyncperf.cache._disk import DiskCache, encode_key
from asyncperf.cache._serializers import (
    Codec,
    CorruptValue,
    JsonSerializer,
    MsgpackSerializer,
    PickleSerializer,
    make_serializer,
)
from asyncperf.testing import wait_until
from tests._disk_worker import CHURN_KEYS, check_value, value_for

REPO = Path(__file__).resolve().parent.parent
LARGE = b"L" * 50_000  # above the default inline threshold: stored in its own file


class FakeTime:
    """A wall clock the test moves by hand (read from the cache's threads too)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


MakeCache = Callable[..., DiskCache]


@pytest_asyncio.fixture
async def make_cache(tmp_path: Path) -> AsyncIterator[MakeCache]:
    """Open DiskCaches (in tmp_path/"cache" unless told) and close them all at the end."""
    caches: list[DiskCache] = []

    def make(directory: Path | None = None, **options: Any) -> DiskCache:
        cache = DiskCache(directory or tmp_path / "cache", **options)
        caches.append(cache)
        return cache

    yield make
    for cache in caches:
        await cache.aclose()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def value_files(directory: Path) -> list[Path]:
    return sorted(p for p in (directory / "values").rglob("*") if p.is_file())


def corrupt_row(directory: Path, key: Any, assignment: str) -> None:
    """Change the row of ``key`` behind the cache's back (another connection, as damage would)."""
    with sqlite3.connect(directory / "index.sqlite3") as conn:
        conn.execute(f"UPDATE entries SET {assignment} WHERE key = ?", (encode_key(key),))
    conn.close()


def files_under(directory: Path) -> list[Path]:
    return [p.resolve() for p in directory.rglob("*") if p.is_file()]


def write_garbage_index(directory: Path) -> None:
    directory.mkdir(mode=0o700)
    (directory / "index.sqlite3").write_bytes(b"not a database" * 100)


# -- round trips ----------------------------------------------------------------------

VALUES: dict[str, list[Any]] = {
    "pickle": [0, -7, 2**80, 1.5, "text ✓", b"\x00bytes", [1, (2, 3)], {"a": {1, 2}}, None],
    "json": [0, -7, 2**80, 1.5, "text ✓", [1, [2, 3]], {"a": [1, None]}, True, None],
    "msgpack": [0, -7, 1.5, "text ✓", b"\x00bytes", [1, [2, 3]], {"a": b"x", 1: 2}, None],
}


@pytest.mark.parametrize("serializer", ["pickle", "json", "msgpack"])
@pytest.mark.parametrize("compress", [None, 0])
async def test_round_trip_every_serializer(
    make_cache: MakeCache, serializer: str, compress: int | None
) -> None:
    """Each serializer returns what was stored, inline and in a file, compressed or not."""
    cache = make_cache(serializer=serializer, compress_threshold=compress, inline_threshold=64)
    values = [*VALUES[serializer], os.urandom(3_000).hex()]  # the last one goes to a file
    for index, value in enumerate(values):
        assert await cache.set(("k", index), value) is True
    for index, value in enumerate(values):
        assert await cache.get(("k", index)) == value
    assert len(value_files(cache.directory)) >= 1
    assert cache.statistics().sets == len(values)


async def test_sync_mode_round_trip(cache_dir: Path) -> None:
    """sync=True (fsync of files, directories and commits) stores and reads the same."""
    async with DiskCache(cache_dir, sync=True) as cache:
        assert await cache.set_many([("inline", 1, None), ("file", LARGE, None)]) == 2
    async with DiskCache(cache_dir, sync=True) as cache:
        assert await cache.get_many(["inline", "file"]) == {
            "inline": CacheEntry(1, None),
            "file": CacheEntry(LARGE, None),
        }


async def test_compression_shrinks_and_reads_across_settings(cache_dir: Path) -> None:
    """Compressed values take less room and read back under any compression setting."""
    text = "compressible " * 2_000
    async with DiskCache(cache_dir, compress_threshold=100) as cache:
        await cache.set("inline", text[:1_000])
        await cache.set("file", text * 4)
        compressed = await cache.volume()
    async with DiskCache(cache_dir, compress_threshold=None) as cache:
        assert await cache.get("inline") == text[:1_000]
        assert await cache.get("file") == text * 4
        await cache.set("inline", text[:1_000])
        await cache.set("file", text * 4)
        raw = await cache.volume()
    async with DiskCache(cache_dir, compress_threshold=0, compress_level=19) as cache:
        assert await cache.get("file") == text * 4
    assert compressed < raw / 10


async def test_none_is_a_value_and_miss_is_not(make_cache: MakeCache) -> None:
    """None is stored and returned; a miss returns MISS, or the default given."""
    cache = make_cache()
    await cache.set("none", None)
    assert await cache.get("none") is None
    assert await cache.get("none", default="d") is None
    assert await cache.get("absent") is MISS
    assert await cache.get("absent", default="d") == "d"
    assert await cache.get_entry("none") == CacheEntry(None, None)
    assert await cache.get_entry("absent") is None
    stats = cache.statistics()
    assert (stats.hits, stats.misses) == (3, 3)
    assert stats.hit_latency_p50 is not None
    assert stats.hit_latency_p99 is not None


async def test_many_delete_and_clear(make_cache: MakeCache) -> None:
    """set_many/get_many in one batch; delete says whether the key was there; clear empties."""
    cache = make_cache()
    assert await cache.set_many([("a", 1, None), ("b", LARGE, 60.0), ("c", None, None)]) == 3
    found = await cache.get_many(["a", "b", "c", "zz"])
    assert set(found) == {"a", "b", "c"}
    assert found["a"] == CacheEntry(1, None)
    assert found["b"].value == LARGE
    assert found["b"].ttl is not None
    assert 59 < found["b"].ttl <= 60
    assert await cache.delete("a") is True
    assert await cache.delete("a") is False
    assert await cache.count() == 2
    assert len(value_files(cache.directory)) == 1
    await cache.clear()
    assert await cache.count() == 0
    assert await cache.volume() == 0
    assert value_files(cache.directory) == []
    assert cache.statistics().deletes == 1


async def test_set_many_checks_every_item_first(make_cache: MakeCache) -> None:
    """A bad item in set_many raises before anything is stored."""
    cache = make_cache(serializer="json")
    unhashable: Any = [1]
    with pytest.raises(TypeError, match=r"^key must be"):
        await cache.set_many([("a", 1, None), (unhashable, 2, None)])
    with pytest.raises(TypeError):
        await cache.set_many([("a", 1, None), ("b", object(), None)])
    with pytest.raises(ValueError, match="ttl must be"):
        await cache.set_many([("a", 1, None), ("b", 2, -1.0)])
    assert await cache.count() == 0


async def test_replacing_a_file_value_removes_the_old_file(make_cache: MakeCache) -> None:
    """A new value replaces the old one: inline to file, file to file, file to inline."""
    cache = make_cache()
    await cache.set("k", "small")
    await cache.set("k", LARGE)
    first = value_files(cache.directory)
    await cache.set("k", LARGE + b"2")
    second = value_files(cache.directory)
    assert len(first) == len(second) == 1
    assert first != second
    assert await cache.get("k") == LARGE + b"2"
    await cache.set("k", "small again")
    assert value_files(cache.directory) == []
    assert await cache.get("k") == "small again"
    assert await cache.count() == 1


# -- TTL and restart ------------------------------------------------------------------


async def test_a_value_file_that_cannot_be_moved_in_leaves_no_temp_file(
    make_cache: MakeCache,
) -> None:
    """A value file whose place under values/ cannot be made fails its set with CacheError,
    and its temp file is removed at once, not left for a later open's cleanup."""
    cache = make_cache()
    async with cache:
        prefix = _disk._key_hash(encode_key("k")).hex()[:2]
        (cache.directory / "values" / prefix).write_bytes(b"in the way")
        with pytest.raises(CacheError, match=r"^Disk cache write of a value file failed"):
            await cache.set("k", LARGE)
        assert await cache.set("other", 1) is True  # the writer carries on
        assert list((cache.directory / "tmp").iterdir()) == []
        assert await cache.get("k") is MISS


async def test_ttl_expires_on_the_injected_clock(make_cache: MakeCache) -> None:
    """An entry is a miss once its TTL has passed; get_entry reports the time left."""
    clock = FakeTime()
    cache = make_cache(time=clock, default_ttl=100.0)
    await cache.set("short", 1, ttl=10)
    await cache.set("default", 2)
    await cache.set("file", LARGE, ttl=10)
    clock.now += 4
    entry = await cache.get_entry("short")
    assert entry is not None
    assert entry.value == 1
    assert entry.ttl == pytest.approx(6.0)
    default_entry = await cache.get_entry("default")
    assert default_entry is not None
    assert default_entry.ttl == pytest.approx(96.0)
    clock.now += 6
    assert await cache.get("short") is MISS
    assert await cache.get("file") is MISS
    assert await cache.get("default") == 2
    assert await cache.expire() == 2
    assert cache.statistics().evictions[EvictionReason.EXPIRED] == 2
    assert await cache.count() == 1
    assert value_files(cache.directory) == []


async def test_writes_cull_expired_entries(make_cache: MakeCache) -> None:
    """A write removes expired entries (a bounded number per write), counted as EXPIRED."""
    clock = FakeTime()
    cache = make_cache(time=clock)
    for index in range(3):
        await cache.set(index, index, ttl=1.0)
    clock.now += 2
    await cache.set("fresh", 1)
    assert await cache.count() == 1
    assert cache.statistics().evictions[EvictionReason.EXPIRED] == 3


async def test_restart_keeps_values_and_wall_clock_ttls(cache_dir: Path) -> None:
    """Close and reopen: the values are there; TTLs kept running while it was closed."""
    clock = FakeTime()
    async with DiskCache(cache_dir, time=clock) as cache:
        await cache.set("forever", {"v": 1})
        await cache.set("file", LARGE)
        await cache.set("ttl", 3, ttl=50)
        assert cache.size > 0
    assert repr(cache).startswith("<DiskCache 'disk' closed")
    clock.now += 20
    async with DiskCache(cache_dir, time=clock) as cache:
        assert await cache.get("forever") == {"v": 1}
        assert await cache.get("file") == LARGE
        entry = await cache.get_entry("ttl")
        assert entry is not None
        assert entry.ttl == pytest.approx(30.0)
        assert cache.statistics().entries == 3
    clock.now += 31
    async with DiskCache(cache_dir, time=clock) as cache:
        assert await cache.get("ttl") is MISS
        assert await cache.get("forever") == {"v": 1}


# -- bounds and eviction --------------------------------------------------------------


def entry_size(key: str, value: bytes) -> int:
    # Encoded key + header byte + the pickle of a bytes value (its length plus a few bytes).
    return len(encode_key(key)) + 1 + len(PickleSerializer().dumps(value))


@pytest.mark.parametrize(("eviction", "survivor"), [("lrs", "b"), ("lru", "a")])
async def test_eviction_by_bytes(make_cache: MakeCache, eviction: str, survivor: str) -> None:
    """Over max_bytes the oldest stored entry goes (lrs), or the oldest read one (lru)."""
    value = b"v" * 1_000
    cache = make_cache(max_bytes=3 * entry_size("a", value), eviction=eviction)
    for key in "abc":
        await cache.set(key, value)
    assert await cache.get("a") == value  # a read: moves "a" up under lru only
    assert await cache.count() == 3  # the touch of the read is written before this answer
    await cache.set("d", value)
    remaining = {key for key in "abcd" if await cache.get(key) is not MISS}
    assert remaining == {survivor, "c", "d"}
    stats = cache.statistics()
    assert stats.evictions[EvictionReason.CAPACITY] == 1
    assert stats.policy == eviction
    assert stats.max_bytes == cache.max_bytes
    assert stats.bytes <= cache.max_bytes


async def test_too_large_is_refused_and_counted(make_cache: MakeCache) -> None:
    """A value bigger than max_bytes is refused (False, TOO_LARGE) and the old one removed."""
    cache = make_cache(max_bytes=10_000)
    await cache.set("k", "small")
    await cache.set("other", "kept")
    assert await cache.set("k", b"x" * 20_000) is False
    assert await cache.get("k") is MISS
    assert await cache.get("other") == "kept"
    assert await cache.set_many([("big", b"x" * 20_000, None), ("ok", 1, None)]) == 1
    stats = cache.statistics()
    assert stats.evictions[EvictionReason.TOO_LARGE] == 2
    assert stats.evictions[EvictionReason.CAPACITY] == 0
    assert await cache.count() == 2
    assert value_files(cache.directory) == []


async def test_set_capacity(make_cache: MakeCache) -> None:
    """Shrinking max_bytes evicts down to it; max_entries is refused by name."""
    cache = make_cache()
    for index in range(10):
        await cache.set(index, b"v" * 1_000)
    cache.set_capacity(max_bytes=3_100)
    assert await cache.count() == 3
    assert await cache.volume() <= 3_100
    assert [await cache.get(i) is not MISS for i in range(10)] == [False] * 7 + [True] * 3
    assert cache.statistics().evictions[EvictionReason.CAPACITY] == 7
    with pytest.raises(ValueError, match=r"^max_entries is not supported"):
        cache.set_capacity(max_entries=10)
    with pytest.raises(ValueError, match=r"^max_bytes must be >= 1"):
        cache.set_capacity(max_bytes=0)
    cache.set_capacity()
    cache.set_capacity(max_bytes=1 << 20)
    assert cache.max_bytes == 1 << 20


# -- damage ---------------------------------------------------------------------------


async def test_corrupted_inline_value_is_a_miss_and_removed(make_cache: MakeCache) -> None:
    """A row whose bytes fail the checksum reads as a miss, is deleted, counts as CORRUPT."""
    cache = make_cache()
    await cache.set("k", "value")
    await cache.set("other", "fine")
    corrupt_row(cache.directory, "k", "value = value || X'00'")
    assert await cache.get("k") is MISS
    assert await cache.count() == 1
    assert await cache.get("other") == "fine"
    assert cache.statistics().evictions[EvictionReason.CORRUPT] == 1


async def test_damaged_key_column_is_a_miss(make_cache: MakeCache) -> None:
    """A row whose stored key does not match is treated as damage, not returned."""
    cache = make_cache()
    await cache.set("k", "value")
    corrupt_row(cache.directory, "k", "key = X'00'")
    assert await cache.get("k") is MISS
    assert cache.statistics().evictions[EvictionReason.CORRUPT] == 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "remove"])
async def test_damaged_value_file_is_a_miss_and_removed(make_cache: MakeCache, damage: str) -> None:
    """A flipped byte, a truncated or a missing value file: a miss, removed, CORRUPT."""
    cache = make_cache()
    await cache.set("k", LARGE)
    (path,) = value_files(cache.directory)
    data = path.read_bytes()
    if damage == "flip":
        path.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.unlink()
    assert await cache.get("k") is MISS
    assert await cache.count() == 0
    assert value_files(cache.directory) == []
    assert cache.statistics().evictions[EvictionReason.CORRUPT] == 1
    assert await cache.set("k", LARGE) is True
    assert await cache.get("k") == LARGE


async def test_undecodable_value_is_a_miss(cache_dir: Path) -> None:
    """Checksummed bytes that the serializer cannot load (another serializer's) are removed."""
    async with DiskCache(cache_dir, serializer="pickle") as cache:
        await cache.set("k", {1, 2})
    async with DiskCache(cache_dir, serializer="json") as cache:
        assert await cache.get("k") is MISS
        assert cache.statistics().evictions[EvictionReason.CORRUPT] == 1


async def test_hmac_signs_and_a_wrong_key_reads_a_miss(cache_dir: Path) -> None:
    """With hmac_key values verify; under another key they are misses, removed as CORRUPT."""
    async with DiskCache(cache_dir, hmac_key=b"secret", inline_threshold=100) as cache:
        await cache.set("inline", [1, 2])
        await cache.set("file", "x" * 1_000)
        assert await cache.get("inline") == [1, 2]
        assert await cache.get("file") == "x" * 1_000
    async with DiskCache(cache_dir, hmac_key=b"other") as cache:
        assert await cache.get("inline") is MISS
        assert await cache.get("file") is MISS
        assert cache.statistics().evictions[EvictionReason.CORRUPT] == 2
        assert await cache.count() == 0


async def test_garbage_index_raises_cache_error(cache_dir: Path) -> None:
    """An index that is not an SQLite database: every call raises CacheError."""
    write_garbage_index(cache_dir)
    cache = DiskCache(cache_dir)
    try:
        with pytest.raises(CacheError, match=r"^Disk cache open of .* failed"):
            await cache.get("k")
        with pytest.raises(CacheError, match=r"^Disk cache open of .* failed"):
            await cache.set("k", 1)
    finally:
        await cache.aclose()
    second = DiskCache(cache_dir)
    with pytest.raises(CacheError, match=r"^Disk cache open of .* failed"):
        async with second:
            pytest.fail("opened a garbage index")
    with pytest.raises(CacheClosed):  # closed on the way out of the failed `async with`
        await second.get("k")


async def test_a_failed_batch_leaves_no_unretrieved_exception(
    cache_dir: Path, loop_errors: list[dict[str, Any]]
) -> None:
    """get_many and set_many over a failing database raise once, and the other requests of
    the call do not end as "exception was never retrieved" reports."""
    write_garbage_index(cache_dir)
    cache = DiskCache(cache_dir)
    try:
        with pytest.raises(CacheError, match=r"^Disk cache open of .* failed"):
            await cache.get_many(["a", "b", "c"])
        with pytest.raises(CacheError, match=r"^Disk cache open of .* failed"):
            await cache.set_many([("a", 1, None), ("b", 2, None), ("c", 3, None)])
    finally:
        await cache.aclose()
    gc.collect()
    assert [error["message"] for error in loop_errors] == []


async def test_orphans_are_removed_on_open(cache_dir: Path) -> None:
    """Old temp files and value files without a row go on open; recent ones may be in use."""
    async with DiskCache(cache_dir) as cache:
        await cache.set("k", LARGE)
    (kept,) = value_files(cache_dir)
    old = 1_000_000_000.0
    stale_tmp = cache_dir / "tmp" / "abc.tmp"
    fresh_tmp = cache_dir / "tmp" / "def.tmp"
    stale_value = cache_dir / "values" / "ff" / "ff00-1.val"
    fresh_value = cache_dir / "values" / "ff" / "ff00-2.val"
    stale_value.parent.mkdir(exist_ok=True)
    for path in (stale_tmp, fresh_tmp, stale_value, fresh_value):
        path.write_bytes(b"x")
    os.utime(kept, (old, old))
    for path in (stale_tmp, stale_value):
        os.utime(path, (old, old))
    async with DiskCache(cache_dir) as cache:
        assert await cache.get("k") == LARGE
    assert not stale_tmp.exists()
    assert not stale_value.exists()
    assert fresh_tmp.exists()
    assert fresh_value.exists()
    assert kept.exists()


# -- safety of the directory and of keys ---------------------------------------------


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
async def test_pickle_refused_where_others_can_write(tmp_path: Path, mode: int) -> None:
    """Pickle with no HMAC key is refused in a group/world-writable directory."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(UnsafeCacheDirectory, match="can write to it"):
        DiskCache(shared)
    with pytest.raises(PermissionError):  # UnsafeCacheDirectory is one
        DiskCache(shared, serializer="pickle")
    for options in ({"hmac_key": b"k"}, {"serializer": "json"}, {"serializer": "msgpack"}):
        async with DiskCache(shared, **options) as cache:
            assert await cache.set("k", [1]) is True
            assert await cache.get("k") == [1]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_pickle_refused_in_a_directory_of_another_user(tmp_path: Path) -> None:
    """Pickle with no HMAC key is refused in a directory another user owns."""
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 12345, 12345)
    with pytest.raises(UnsafeCacheDirectory, match="owned by another user"):
        DiskCache(foreign)


async def test_new_directory_is_private(make_cache: MakeCache, tmp_path: Path) -> None:
    """The cache creates its directory 0700, parents included."""
    cache = make_cache(tmp_path / "a" / "b")
    assert await cache.set("k", 1)
    assert (tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o700


async def test_directory_that_is_a_file(tmp_path: Path) -> None:
    """A path that is a file cannot hold a cache."""
    path = tmp_path / "file"
    path.write_bytes(b"")
    with pytest.raises(CacheError, match="is not a directory"):
        DiskCache(path)


def test_key_encoding_is_type_tagged_and_deterministic() -> None:
    """1, "1" and b"1" are different keys; tuples nest without ambiguity."""
    keys = [1, "1", b"1", 1.5, None, 0, ("1",), (1,), ((1,),), ("a", "b"), ("ab",)]
    encoded = [encode_key(key) for key in keys]
    assert len(set(encoded)) == len(keys)
    assert encode_key(("a", 1, b"\x00", None)) == encode_key(("a", 1, b"\x00", None))
    assert encode_key(("a", "b")) != encode_key(("a", "b", ""))


@pytest.mark.parametrize("key", [[1], {"a": 1}, object(), ("ok", [1]), {1}])
def test_unsupported_keys_raise_type_error_naming_key(key: Any) -> None:
    """Keys outside str/bytes/int/float/bool/None/tuples raise TypeError naming key."""
    with pytest.raises(TypeError, match=r"^key must be str, bytes, int, float, bool, None"):
        encode_key(key)


def test_keys_equal_in_python_are_one_key() -> None:
    """As in a dict (and so in MemoryCache): 1 == 1.0 == True, 0 == 0.0 == -0.0 == False."""
    assert encode_key(1) == encode_key(1.0) == encode_key(True)
    assert encode_key(0) == encode_key(0.0) == encode_key(-0.0) == encode_key(False)
    assert encode_key((1, "a")) == encode_key((True, "a")) == encode_key((1.0, "a"))
    assert encode_key(2**70) == encode_key(float(2**70))
    assert encode_key(1.5) != encode_key(1)
    assert encode_key(float("inf")) != encode_key(float("-inf"))
    # The same rule a dict applies, checked against one.
    keys: list[Any] = [1, 1.0, True, 0, -0.0, False, 2.5, "1", (1,), (1.0,)]
    seen: dict[Any, bytes] = {}
    for key in keys:
        assert seen.setdefault(key, encode_key(key)) == encode_key(key)


async def test_similar_keys_do_not_collide(make_cache: MakeCache) -> None:
    """Values under 1, "1", b"1", 1.5 and ("1",) stay apart; long keys work."""
    cache = make_cache()
    keys: list[Any] = [1, "1", b"1", 1.5, ("1",)]
    for index, key in enumerate(keys):
        await cache.set(key, index)
    assert [await cache.get(key) for key in keys] == list(range(len(keys)))
    long_key = "k" * 200_000
    await cache.set(long_key, "long")
    assert await cache.get(long_key) == "long"
    assert await cache.get(long_key[:-1]) is MISS
    unhashable: Any = [1]
    with pytest.raises(TypeError, match=r"^key must be"):
        await cache.get(unhashable)
    with pytest.raises(TypeError, match=r"^key must be"):
        await cache.set(frozenset("a"), 1)
    with pytest.raises(TypeError, match=r"^key must be"):
        await cache.delete(object())


async def test_path_like_keys_stay_inside_the_directory(
    make_cache: MakeCache, tmp_path: Path
) -> None:
    """Keys that look like paths name no file: value files are named by the key's hash."""
    cache = make_cache()
    keys = ["../../etc/passwd", "/etc/passwd", "..", "a/../../b", "\x00", "nul\\x"]
    for key in keys:
        await cache.set(key, LARGE)
    assert [await cache.get(key) == LARGE for key in keys] == [True] * len(keys)
    assert all(cache.directory.resolve() in p.parents for p in files_under(tmp_path))
    names = [p.name for p in value_files(cache.directory)]
    assert len(names) == len(keys)
    assert all(set(name) <= set("0123456789abcdef-.val") for name in names)


# -- arguments, protocol, closing -----------------------------------------------------

BAD_ARGUMENTS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"max_bytes": 0}, ValueError, "^max_bytes must be >= 1"),
    ({"max_bytes": "1"}, TypeError, "^max_bytes must be an int"),
    ({"inline_threshold": -1}, ValueError, "^inline_threshold must be >= 0"),
    ({"compress_threshold": -1}, ValueError, "^compress_threshold must be >= 0"),
    ({"compress_level": 0}, ValueError, "^compress_level must be between 1 and 22"),
    ({"compress_level": 1.5}, TypeError, "^compress_level must be an int"),
    ({"eviction": "lfu"}, ValueError, "^eviction must be 'lrs' or 'lru'"),
    ({"default_ttl": 0}, ValueError, "^default_ttl must be > 0"),
    ({"serializer": "yaml"}, ValueError, "^serializer must be one of"),
    ({"serializer": object()}, TypeError, "^serializer must be a name or an object"),
    ({"hmac_key": "secret"}, TypeError, "^hmac_key must be bytes"),
    ({"hmac_key": b""}, ValueError, "^hmac_key must not be empty"),
    ({"sync": 1}, TypeError, "^sync must be a bool"),
    ({"name": ""}, ValueError, "^name must not be empty"),
    ({"name": 3}, TypeError, "^name must be a str"),
    ({"time": 5.0}, TypeError, "^time must be callable"),
]


@pytest.mark.parametrize(("options", "error", "message"), BAD_ARGUMENTS)
def test_bad_arguments_name_the_parameter(
    cache_dir: Path, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Each bad argument raises the built-in error with a message naming it."""
    with pytest.raises(error, match=message):
        DiskCache(cache_dir, **options)
    with pytest.raises(TypeError, match=r"^directory must be a str or a path"):
        DiskCache(42)  # type: ignore[arg-type]


async def test_bad_ttl_names_ttl(make_cache: MakeCache) -> None:
    """set's ttl must be a positive number of seconds."""
    cache = make_cache()
    with pytest.raises(ValueError, match=r"^ttl must be > 0"):
        await cache.set("k", 1, ttl=0)
    with pytest.raises(TypeError, match=r"^ttl must be a number"):
        await cache.set("k", 1, ttl="1")  # type: ignore[arg-type]
    assert await cache.count() == 0


async def test_custom_serializer_and_the_level_protocol(make_cache: MakeCache) -> None:
    """A user's Serializer works; DiskCache satisfies the CacheLevel protocol."""

    class Upper:
        name = "upper"

        def dumps(self, value: Any) -> bytes:
            return str(value).upper().encode()

        def loads(self, data: bytes) -> Any:
            return data.decode()

    cache = make_cache(serializer=Upper(), name="l2")
    await cache.set("k", "hello")
    assert await cache.get("k") == "HELLO"
    assert isinstance(cache, CacheLevel)
    assert cache.name == cache.statistics().name == "l2"


def test_serializers_and_codec() -> None:
    """Built-in serializers by name; the codec's header tells raw from zstd, rejects others."""
    assert isinstance(make_serializer("json"), JsonSerializer)
    assert isinstance(make_serializer("msgpack"), MsgpackSerializer)
    codec = Codec(compress_threshold=10)
    assert codec.encode(b"short")[0] == 0
    squeezed = codec.encode(b"a" * 1_000)
    assert squeezed[0] == 1
    assert len(squeezed) < 100
    assert codec.decode(squeezed) == b"a" * 1_000
    random = os.urandom(1_000)
    assert codec.encode(random) == b"\x00" + random  # kept raw: zstd would not shrink it
    for bad in (b"", b"\x07abc", b"\x01not zstd"):
        with pytest.raises(CorruptValue):
            codec.decode(bad)


async def test_closed_cache_raises_cache_closed(cache_dir: Path) -> None:
    """After aclose every call raises CacheClosed; aclose is idempotent."""
    cache = DiskCache(cache_dir)
    await cache.set("k", 1)
    await cache.aclose()
    await cache.aclose()
    calls = [
        cache.get("k"),
        cache.get_entry("k"),
        cache.get_many(["k"]),
        cache.set("k", 1),
        cache.set_many([("k", 1, None)]),
        cache.delete("k"),
        cache.clear(),
        cache.expire(),
        cache.count(),
    ]
    for call in calls:
        with pytest.raises(CacheClosed, match="closed"):
            await call
    with pytest.raises(CacheClosed):
        cache.set_capacity(max_bytes=10)
    store = cache._store
    assert store is not None
    assert [thread.is_alive() for thread in store.threads] == [False] * len(store.threads)


async def test_requests_queued_before_aclose_complete(cache_dir: Path) -> None:
    """Gets and sets made before aclose are answered, not dropped."""
    cache = DiskCache(cache_dir)
    await cache.set("k", 1)
    sets = [asyncio.ensure_future(cache.set(i, i)) for i in range(20)]
    gets = [asyncio.ensure_future(cache.get("k")) for _ in range(20)]
    await asyncio.sleep(0)  # the tasks start and queue their requests
    await cache.aclose()
    assert await asyncio.gather(*sets) == [True] * 20
    assert await asyncio.gather(*gets) == [1] * 20


def test_unclosed_cache_warns_and_stops_its_threads(cache_dir: Path) -> None:
    """A cache dropped without aclose warns (ResourceWarning) and its threads exit."""
    cache = DiskCache(cache_dir)
    threads = list(cache._store.threads)  # type: ignore[union-attr]
    with pytest.warns(ResourceWarning, match="unclosed <DiskCache"):
        del cache  # the last reference: collected at once
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()


# -- concurrency ----------------------------------------------------------------------


async def test_concurrent_gets_and_sets_are_right(make_cache: MakeCache) -> None:
    """200 concurrent sets then 200 concurrent gets (and a mix) through the batches."""
    cache = make_cache(inline_threshold=500)
    values = {i: ("v" * (i * 5), i) for i in range(200)}  # some go to files
    assert await asyncio.gather(*(cache.set(k, v) for k, v in values.items())) == [True] * 200
    got = await asyncio.gather(*(cache.get(k) for k in values))
    assert got == list(values.values())
    mixed = await asyncio.gather(
        *(cache.set(k, "new") if k % 2 else cache.get(k) for k in range(200))
    )
    assert mixed == [True if k % 2 else values[k] for k in range(200)]
    after = await asyncio.gather(*(cache.get(k) for k in range(200)))
    assert after == ["new" if k % 2 else values[k] for k in range(200)]
    assert cache.statistics().hits == 500


async def test_cancelled_get_does_not_disturb_others(make_cache: MakeCache) -> None:
    """Cancelling some gets, queued or in flight, leaves the others' answers right."""
    cache = make_cache()
    await cache.set_many((i, i * 10, None) for i in range(50))
    tasks = [asyncio.ensure_future(cache.get(i)) for i in range(50)]
    await asyncio.sleep(0)  # started: their requests are queued or being read
    for task in tasks[::3]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for index, result in enumerate(results):
        if index % 3 == 0:
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result == index * 10
    assert await cache.get(0) == 0  # the reader is still serving


async def test_cancelled_set_stores_all_or_nothing(make_cache: MakeCache) -> None:
    """A set cancelled after it was queued may still be stored, but whole or not at all."""
    cache = make_cache()
    await cache.set("k", "old")
    task = asyncio.ensure_future(cache.set("k", "new"))
    await asyncio.sleep(0)  # queued for the writer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await cache.get("k") in ("old", "new")
    assert await cache.set("k", "newer") is True
    assert await cache.get("k") == "newer"


def test_results_for_a_closed_loop_are_dropped() -> None:
    """A thread answering a loop that has closed meanwhile drops the results quietly."""
    loop = asyncio.new_event_loop()
    fut = loop.create_future()
    loop.close()
    _disk._send([(fut, "value", None)])  # no RuntimeError: nobody is left to answer
    assert not fut.done()


async def test_busy_database_raises_cache_error_and_recovers(
    make_cache: MakeCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write lock held past the busy timeout fails the write with CacheError; reads go on."""
    monkeypatch.setattr(_disk, "BUSY_TIMEOUT", 0.05)
    cache = make_cache()
    async with cache:
        await cache.set("k", "before")
        blocker = sqlite3.connect(cache.directory / "index.sqlite3", isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(CacheError, match="database is locked"):
                await cache.set("k", "during")
            assert await cache.get("k") == "before"  # WAL: readers do not wait for writers
        finally:
            blocker.close()
        assert await cache.set("k", "after") is True
        assert await cache.get("k") == "after"


async def test_cancelled_large_set_leaves_no_temp_file(cache_dir: Path) -> None:
    """A set cancelled while its value file is written stores nothing and leaves no file."""
    cache = DiskCache(cache_dir)
    await cache.set("warm", 1)
    task = asyncio.ensure_future(cache.set("k", LARGE))
    await asyncio.sleep(0)  # started: the temp file is being written
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await cache.aclose()  # waits for the write to settle and the writer to remove the file
    assert list((cache_dir / "tmp").iterdir()) == []
    async with DiskCache(cache_dir) as reopened:
        assert await reopened.get("k") is MISS


@pytest.mark.timeout(30)
async def test_concurrent_acloses_during_a_file_write_both_return(cache_dir: Path) -> None:
    """Two aclose calls while a value file is being written: the second waits for the first
    (it must not join threads nobody has stopped yet), and both return."""
    cache = DiskCache(cache_dir)
    await cache.set("warm", 1)
    setting = asyncio.ensure_future(cache.set("k", LARGE))
    await wait_until(lambda: bool(cache._file_writes))
    closes = [asyncio.ensure_future(cache.aclose()) for _ in range(2)]
    await asyncio.gather(*closes)
    with pytest.raises(CacheClosed):  # closed before its value reached the writer
        await setting
    store = cache._store
    assert store is not None
    assert [thread.is_alive() for thread in store.threads] == [False] * len(store.threads)


@pytest.mark.timeout(30)
async def test_an_aclose_cancelled_during_a_file_write_still_stops_the_threads(
    cache_dir: Path,
) -> None:
    """aclose cancelled while it waits for a value file: the threads still stop, and a later
    aclose returns."""
    cache = DiskCache(cache_dir)
    await cache.set("warm", 1)
    setting = asyncio.ensure_future(cache.set("k", LARGE))
    await wait_until(lambda: bool(cache._file_writes))
    closing = asyncio.ensure_future(cache.aclose())
    await asyncio.sleep(0)
    closing.cancel()
    await asyncio.gather(closing, setting, return_exceptions=True)
    await cache.aclose()
    store = cache._store
    assert store is not None
    assert [thread.is_alive() for thread in store.threads] == [False] * len(store.threads)


async def test_two_instances_on_one_directory(cache_dir: Path) -> None:
    """Two caches on one directory (as two loops or libraries would) see each other's writes."""
    async with DiskCache(cache_dir) as first, DiskCache(cache_dir) as second:
        await first.set("from-first", LARGE)
        await second.set("from-second", 2)
        assert await second.get("from-first") == LARGE
        assert await first.get("from-second") == 2
        await asyncio.gather(*(first.set(i, "a") for i in range(50)))
        await asyncio.gather(*(second.set(i, "b") for i in range(50)))
        assert await first.get_many(range(50)) == {i: CacheEntry("b", None) for i in range(50)}


async def test_one_instance_used_from_another_event_loop(make_cache: MakeCache) -> None:
    """One instance serves a second event loop running in another thread."""
    cache = make_cache()
    await cache.set("k", "from main loop")

    def other_loop() -> Any:
        async def use() -> Any:
            await cache.set("other", "from thread loop")
            return await cache.get("k")

        return asyncio.run(use())

    assert await asyncio.to_thread(other_loop) == "from main loop"
    assert await cache.get("other") == "from thread loop"


# -- several processes ----------------------------------------------------------------


def _worker(mode: str, directory: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests._disk_worker", mode, str(directory)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ask(proc: subprocess.Popen[str], command: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(command) + "\n")
    proc.stdin.flush()


def _answer(proc: subprocess.Popen[str]) -> Any:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else "no answer"
    return json.loads(line)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Worker processes, killed at the end if still running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


@pytest.mark.timeout(30)
def test_two_processes_see_each_others_writes(
    cache_dir: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """Two processes write at once to one directory; each then reads the other's keys."""
    first, second = _worker("serve", cache_dir), _worker("serve", cache_dir)
    processes += [first, second]
    _ask(first, {"op": "write", "prefix": "a", "n": 60})
    _ask(second, {"op": "write", "prefix": "b", "n": 60})
    assert _answer(first) == {"stored": 60}
    assert _answer(second) == {"stored": 60}
    _ask(first, {"op": "read", "prefix": "b", "n": 60})
    _ask(second, {"op": "read", "prefix": "a", "n": 60})
    assert len(_answer(first)["found"]) == 60
    assert len(_answer(second)["found"]) == 60
    for proc in (first, second):
        _ask(proc, {"op": "quit"})
        assert proc.wait(timeout=10) == 0

    async def read_here() -> int:
        async with DiskCache(cache_dir) as cache:
            found = await cache.get_many(f"{p}{i}" for p in "ab" for i in range(60))
            assert all(entry.value == value_for(str(k), 1) for k, entry in found.items())
            return len(found)

    assert asyncio.run(read_here()) == 120


@pytest.mark.timeout(30)
def test_sigkill_mid_write_leaves_only_complete_values(
    cache_dir: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """A writer killed with SIGKILL mid-write: every key reads an old or new complete value."""

    async def read_all() -> list[int]:
        async with DiskCache(cache_dir) as cache:
            versions = []
            for key, size in CHURN_KEYS:
                value = await cache.get(key)
                assert value is not MISS, f"{key} is missing"
                versions.append(check_value(key, value, size))
            assert cache.statistics().evictions[EvictionReason.CORRUPT] == 0
            return versions

    # Three kills at different points; each new writer starts over at version 1.
    for rounds in (2, 3, 5):
        churn = _worker("churn", cache_dir)
        processes.append(churn)
        assert churn.stdout is not None
        for expected in range(1, rounds + 1):
            line = churn.stdout.readline()
            assert line == f"round {expected}\n", line + (
                churn.stderr.read() if churn.stderr else ""
            )
        # The next round is being written now: temp files, renames, a transaction.
        churn.send_signal(signal.SIGKILL)
        assert churn.wait(timeout=10) == -signal.SIGKILL
        # Every key was stored at `rounds` at least; later versions may have landed.
        assert min(asyncio.run(read_all())) >= rounds


# -- the presence filter --------------------------------------------------------------


class CountingQueue:
    """Wraps a store's read queue: counts the request batches handed to the reader threads."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.requests = 0

    def put(self, item: Any) -> None:
        if isinstance(item, list):
            self.requests += len(item)
        self.inner.put(item)

    def get(self) -> Any:
        return self.inner.get()

    def get_nowait(self) -> Any:
        return self.inner.get_nowait()


def count_reads(cache: DiskCache) -> CountingQueue:
    """Count from now on the lookups that reach ``cache``'s reader threads."""
    store = cache._store
    assert store is not None
    counter = CountingQueue(store.reads)
    store.reads = counter  # type: ignore[assignment]
    return counter


def blake(key: Any) -> bytes:
    return _disk._key_hash(encode_key(key))


async def test_a_miss_for_a_key_never_stored_makes_no_thread_hop(make_cache: MakeCache) -> None:
    """get, get_entry and get_many of never-stored keys are answered on the loop; a stored key
    still goes to a reader and is found."""
    cache = make_cache(time=FakeTime())
    async with cache:
        await cache.set_many((f"k{i}", i, None) for i in range(20))
        reads = count_reads(cache)
        assert await asyncio.gather(*(cache.get(f"new{i}") for i in range(50))) == [MISS] * 50
        assert await cache.get_entry("new-entry") is None
        assert await cache.get_many(f"other{i}" for i in range(10)) == {}
        assert reads.requests == 0
        assert cache.presence_statistics().skips == 61
        assert cache.statistics().misses == 61
        found = await cache.get_many(["k3", "absent", "k7"])
        assert found == {"k3": CacheEntry(3, None), "k7": CacheEntry(7, None)}
        assert reads.requests == 2  # only the stored keys were looked up
        assert cache.statistics().hits == 2
        assert cache.statistics().misses == 62


async def test_a_stored_key_is_found_however_the_get_races_the_set(
    make_cache: MakeCache,
) -> None:
    """A get after set returns finds the value; a get issued while the set is in flight is
    never answered "absent" by the filter (it asks SQLite: old value or new, never a lie)."""
    cache = make_cache(time=FakeTime(), inline_threshold=500)
    async with cache:
        for i in range(40):
            value = "x" * (i * 30)  # some go to files
            assert await cache.set(i, value) is True
            assert await cache.get(i) == value
        skips = cache.presence_statistics().skips
        for i in range(100, 140):
            before, stored, during = await asyncio.gather(
                cache.get(i), cache.set(i, i), cache.get(i)
            )
            assert before is MISS  # ran before the set began: the filter may answer it
            assert stored is True
            assert during in (MISS, i)
            assert await cache.get(i) == i
        assert cache.presence_statistics().skips == skips + 40  # only the `before` gets


async def test_a_set_queued_across_a_rebuild_stays_findable(make_cache: MakeCache) -> None:
    """A filter replaced between a set's queueing and its commit (what a rebuild on the
    writer does) would lack the key: the writer adds it again before committing."""
    clock = FakeTime()
    cache = make_cache(time=clock)
    async with cache:
        await cache.set("warm", 0)
        presence = cache._presence
        assert presence is not None
        setting = asyncio.ensure_future(cache.set("k", 1))
        await asyncio.sleep(0)  # the set has added its key and queued its op, not yet flushed
        view = presence.view
        assert blake("k") in view.bits
        presence.replace(_presence.BloomFilter(64), 0, view.watermark, clock())
        assert blake("k") not in presence.view.bits
        assert await setting is True
        assert blake("k") in presence.view.bits
        assert await cache.get("k") == 1


async def test_rebuilds_keep_every_stored_key_findable(
    make_cache: MakeCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a tiny design capacity the filter is rebuilt many times while 20 tasks store
    keys batch after batch; every key is found, and absent keys are still skipped."""
    monkeypatch.setattr(_presence, "MIN_CAPACITY", 16)
    cache = make_cache(time=FakeTime())
    async with cache:

        async def store(task: int) -> None:
            for i in range(25):
                assert await cache.set((task, i), i) is True

        await asyncio.gather(*(store(task) for task in range(20)))
        await cache.count()  # a writer round trip: the rebuild after the last batch is done
        stats = cache.presence_statistics()
        assert stats.rebuilds >= 4  # the open's build, then 16 -> 32 -> ... -> 500 keys
        assert stats.capacity >= 500
        assert stats.load <= stats.capacity
        keys = [(task, i) for task in range(20) for i in range(25)]
        found = await cache.get_many(keys)
        assert found == {key: CacheEntry(key[1], None) for key in keys}
        reads = count_reads(cache)
        assert await cache.get_many((99, i) for i in range(30)) == {}
        assert reads.requests <= 2  # ~1% false positives at most


async def test_deletions_make_the_filter_rebuild(
    make_cache: MakeCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once over half of its keys are known deleted, the filter is rebuilt without them."""
    monkeypatch.setattr(_presence, "MIN_CAPACITY", 16)
    cache = make_cache(time=FakeTime())
    async with cache:
        await cache.set_many((i, i, None) for i in range(30))
        rebuilds = cache.presence_statistics().rebuilds
        for i in range(25):
            assert await cache.delete(i) is True
        stats = cache.presence_statistics()
        assert stats.rebuilds > rebuilds
        assert stats.load <= 30
        assert await cache.get_many(range(30)) == {i: CacheEntry(i, None) for i in range(25, 30)}


def test_bloom_filter_false_positive_rate_is_near_its_design() -> None:
    """A filter loaded to its capacity: every key found, about 1% of 20,000 others."""
    bloom = _presence.BloomFilter(10_000)
    assert bloom.probes == 4
    assert bloom.capacity >= 10_000
    assert bloom.size & (bloom.size - 1) == 0  # a power of two
    assert bloom.add(blake("in:0")) is True
    assert bloom.add(blake("in:0")) is False  # nothing new: counted once
    for i in range(bloom.capacity):
        bloom.add(blake(f"in:{i}"))
    assert all(blake(f"in:{i}") in bloom for i in range(bloom.capacity))
    false_positives = sum(blake(f"out:{i}") in bloom for i in range(20_000))
    assert 0.005 < false_positives / 20_000 < 0.016
    with pytest.raises(ValueError, match=r"^capacity must be >= 1"):
        _presence.BloomFilter(0)
    with pytest.raises(ValueError, match=r"^error_rate must be between 0 and 1"):
        _presence.BloomFilter(10, error_rate=1.0)


async def test_another_instances_writes_are_seen_at_once(cache_dir: Path) -> None:
    """A store by another instance stamps index.seq: this filter, which said "absent",
    looks again at the next get."""
    clock = FakeTime()
    async with (
        DiskCache(cache_dir, time=clock) as reader,
        DiskCache(cache_dir, time=clock) as writer,
    ):
        assert await reader.get_many(range(30)) == {}
        assert reader.presence_statistics().skips == 30
        await writer.set_many((i, i * 2, None) for i in range(30))
        assert await reader.get_many(range(30)) == {i: CacheEntry(i * 2, None) for i in range(30)}
        assert reader.presence_statistics().refreshes == 1  # done before those answers
        skips = reader.presence_statistics().skips
        assert await reader.get("never") is MISS
        assert reader.presence_statistics().skips == skips + 1


async def test_unstamped_writes_are_seen_after_presence_refresh(cache_dir: Path) -> None:
    """A writer that does not stamp index.seq (an older version) is seen once
    presence_refresh seconds have passed on the cache's clock; 0 never trusts the filter."""
    clock = FakeTime()
    async with (
        DiskCache(cache_dir, time=clock, presence_refresh=5.0) as reader,
        DiskCache(cache_dir, time=clock, presence_refresh=0) as eager,
        DiskCache(cache_dir) as writer,
    ):
        assert writer._store is not None
        writer._store.seq_file = None  # writes as a version without the presence filter would
        assert await reader.get("x") is MISS
        assert await writer.set("x", 1) is True
        assert await reader.get("x") is MISS  # a lost hit, for up to presence_refresh
        assert await eager.get("x") == 1
        assert eager.presence_statistics().skips == 0
        clock.now += 5.0
        assert await reader.get("x") == 1
        assert reader.presence_statistics().refreshes == 1
        skips = reader.presence_statistics().skips
        assert await reader.get("y") is MISS
        assert reader.presence_statistics().skips == skips + 1


@pytest.mark.timeout(30)
async def test_another_processes_writes_are_seen_at_once(
    cache_dir: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """A cache whose filter said "absent" finds the keys a second process stores next."""
    async with DiskCache(cache_dir, time=FakeTime()) as cache:
        keys = [f"p{i}" for i in range(40)]
        assert await cache.get_many(keys) == {}
        assert cache.presence_statistics().skips == 40
        other = _worker("serve", cache_dir)
        processes.append(other)
        _ask(other, {"op": "write", "prefix": "p", "n": 40})
        assert await asyncio.to_thread(_answer, other) == {"stored": 40}
        found = await cache.get_many(keys)
        assert {k: entry.value for k, entry in found.items()} == {k: value_for(k, 1) for k in keys}
        _ask(other, {"op": "quit"})
        assert await asyncio.to_thread(other.wait, 10) == 0


async def test_clear_empties_the_filter(make_cache: MakeCache) -> None:
    """clear() resets the filter; keys stored after it are found, cleared ones skipped."""
    cache = make_cache(time=FakeTime())
    async with cache:
        await cache.set_many((i, i, None) for i in range(50))
        assert cache.presence_statistics().load == 50
        await cache.clear()
        await cache.set("after", 1)
        assert await cache.get("after") == 1
        assert await cache.get_many(range(50)) == {}
        assert cache.presence_statistics().load == 1


async def test_presence_filter_off_behaves_as_before(make_cache: MakeCache) -> None:
    """presence_filter=False: every get reaches a reader; results and counters as before."""
    cache = make_cache(presence_filter=False)
    async with cache:
        await cache.set_many((i, i, None) for i in range(10))
        reads = count_reads(cache)
        assert await cache.get_many(range(20)) == {i: CacheEntry(i, None) for i in range(10)}
        assert await cache.get("absent") is MISS
        assert reads.requests == 21
        stats = cache.statistics()
        assert (stats.hits, stats.misses) == (10, 11)
        assert cache.presence_statistics() == _presence.PresenceStatistics(
            enabled=False, capacity=0, bits=0, load=0, skips=0, rebuilds=0, refreshes=0
        )


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"presence_filter": 1}, TypeError, "^presence_filter must be a bool"),
        ({"presence_refresh": -1}, ValueError, "^presence_refresh must be >= 0"),
        ({"presence_refresh": "1"}, TypeError, "^presence_refresh must be a number"),
        ({"presence_refresh": float("inf")}, ValueError, "^presence_refresh must be finite"),
        ({"page_cache": 1024}, ValueError, "^page_cache must be >= 65536"),
    ],
)
def test_bad_presence_arguments_name_the_parameter(
    cache_dir: Path, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        DiskCache(cache_dir, **options)


async def test_each_connection_gets_the_page_cache_it_was_given(cache_dir: Path) -> None:
    """page_cache= bounds SQLite's private page cache of every connection (in KiB)."""
    async with DiskCache(cache_dir, page_cache=256 * 1024) as cache:
        await cache.set("k", "v")
        assert cache._store is not None
        conn = cache._store._connect()
        try:
            assert conn.execute("PRAGMA cache_size").fetchone()[0] == -256
        finally:
            conn.close()
