"""The Compressor: every codec round trips, values outlive a change of codec, bad input is named.

Then the caches built on it (a DiskCache directory and a Redis namespace read
across compression settings) and the ``compression`` bench suite at a tiny size.
"""

from __future__ import annotations

import io
import json
import math
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import zstandard
from rich.console import Console

from asyncperf.backends.redis import connect, key_join
from asyncperf.backends.redis._cache import RedisCacheLevel
from asyncperf.cache import DiskCache
from asyncperf.cache._disk import encode_key
from asyncperf.cache._serializers import Codec
from asyncperf.io._compress import (
    LEVELS,
    LZ4,
    RAW,
    ZSTD,
    ZSTD_DICT,
    Compressor,
    CorruptValue,
    MissingDictionary,
    train_dictionary,
)
from asyncperf.tools.bench import compression
from asyncperf.tools.bench._harness import Config, Harness

# -- payloads ---------------------------------------------------------------------------


def chat_message(index: int) -> bytes:
    """A small JSON chat message, much like its neighbours: what dictionaries are for."""
    rng = random.Random(index)
    words = ["cache", "queue", "worker", "session", "reply", "prompt", "limit", "token"]
    text = " ".join(rng.choice(words) for _ in range(rng.randint(8, 30)))
    return json.dumps(
        {"role": "user", "session": index % 97, "content": text, "model": "simulated"}
    ).encode()


@pytest.fixture(scope="module")
def dictionary() -> bytes:
    return train_dictionary([chat_message(i) for i in range(400)], size=4_096)


@pytest.fixture(scope="module")
def other_dictionary() -> bytes:
    rows = [json.dumps({"kind": "row", "i": i, "xs": list(range(i % 13))}) for i in range(400)]
    return train_dictionary([row.encode() for row in rows], size=2_048)


COMPRESSIBLE = b"the quick brown fox jumps over the lazy dog; " * 200
RANDOM = random.Random(7).randbytes(2_000)  # zstd and lz4 cannot shrink it


def writers(dictionary: bytes) -> dict[str, Compressor]:
    """A Compressor of every codec (the dictionary one too), trying every payload."""
    return {
        "zstd": Compressor("zstd", threshold=0),
        "zstd-19": Compressor("zstd", threshold=0, level=19),
        "zstd+dict": Compressor("zstd", threshold=0, dictionary=dictionary),
        "lz4": Compressor("lz4", threshold=0),
        "lz4-hc": Compressor("lz4", threshold=0, level=9),
        "none": Compressor("none"),
    }


EXPECTED_HEADER = {
    "zstd": ZSTD,
    "zstd-19": ZSTD,
    "zstd+dict": ZSTD_DICT,
    "lz4": LZ4,
    "lz4-hc": LZ4,
    "none": RAW,
}


# -- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXPECTED_HEADER))
def test_every_codec_round_trips(name: str, dictionary: bytes) -> None:
    """Compressible, small, empty and incompressible payloads come back; headers say how."""
    compressor = writers(dictionary)[name]
    message = chat_message(3)
    for payload in (COMPRESSIBLE, message, b"", b"x", RANDOM):
        stored = compressor.encode(payload)
        assert compressor.decode(stored) == payload
        if payload in (b"", b"x", RANDOM):
            assert stored == b"\x00" + payload  # not smaller compressed: kept raw
    stored = compressor.encode(COMPRESSIBLE)
    assert stored[0] == EXPECTED_HEADER[name]
    if name != "none":
        assert len(stored) < len(COMPRESSIBLE) / 10


def test_a_value_written_under_any_codec_reads_under_every_other(dictionary: bytes) -> None:
    """Values written before a codec change read after it, whichever way it changes."""
    payloads = [COMPRESSIBLE, chat_message(1), chat_message(2) * 20, RANDOM, b""]
    written = {
        name: [compressor.encode(payload) for payload in payloads]
        for name, compressor in writers(dictionary).items()
    }
    # Readers of each codec; those without the dictionary get it to decode with only.
    readers = [
        Compressor("zstd", dictionaries=[dictionary]),
        Compressor("zstd", level=22, threshold=10_000, dictionary=dictionary),
        Compressor("lz4", dictionaries=[dictionary]),
        Compressor("lz4", level=16, dictionaries=[dictionary]),
        Compressor("none", dictionaries=[dictionary]),
    ]
    for reader in readers:
        for name, stored_values in written.items():
            assert [reader.decode(stored) for stored in stored_values] == payloads, (reader, name)
        assert reader.statistics().decoded == len(payloads) * len(written)


def test_values_of_the_codec_before_compressor_still_read() -> None:
    """The header bytes the disk cache always wrote (0x00 raw, 0x01 zstd) keep their meaning."""
    old_zstd = b"\x01" + zstandard.ZstdCompressor(level=3).compress(COMPRESSIBLE)
    old_raw = b"\x00" + COMPRESSIBLE
    for reader in (Compressor("lz4"), Compressor("none"), Compressor()):
        assert reader.decode(old_zstd) == COMPRESSIBLE
        assert reader.decode(old_raw) == COMPRESSIBLE
    # And the other way: what zstd writes now is one plain frame an older reader decodes.
    stored = Compressor("zstd").encode(COMPRESSIBLE)
    assert zstandard.ZstdDecompressor().decompress(stored[1:]) == COMPRESSIBLE


def test_the_level_bounds_are_the_libraries_own() -> None:
    """The bounds are written out (checking a level imports no codec); they match."""
    import lz4.frame  # type: ignore[import-untyped]

    assert LEVELS["zstd"][1] == zstandard.MAX_COMPRESSION_LEVEL
    assert LEVELS["lz4"][1] == lz4.frame.COMPRESSIONLEVEL_MAX


def test_the_codecs_are_imported_on_first_use() -> None:
    """A process that imports asyncperf, or makes a Compressor that stores raw, imports
    no codec; the first lz4 value imports lz4 only."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from asyncperf.io import Compressor\n"
        "seen = lambda: ','.join(m for m in ('zstandard', 'lz4') if m in sys.modules)\n"
        "raw = Compressor('none')\n"
        "assert raw.decode(raw.encode(b'x' * 500)) == b'x' * 500\n"
        "print(seen() or '-')\n"
        "fast = Compressor('lz4', threshold=0)\n"
        "assert fast.decode(fast.encode(b'x' * 500)) == b'x' * 500\n"
        "print(seen())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["-", "lz4"]


def test_threshold_keeps_small_payloads_raw() -> None:
    """At or below the threshold a payload is stored raw; one byte more and it is compressed."""
    compressor = Compressor("lz4", threshold=100)
    assert compressor.encode(b"a" * 100) == b"\x00" + b"a" * 100
    assert compressor.encode(b"a" * 101)[0] == LZ4
    assert compressor.threshold == 100
    assert compressor.level == 0
    assert Compressor().threshold == 256
    assert Compressor().level == 3


# -- dictionaries ---------------------------------------------------------------------


def test_a_dictionary_shrinks_small_similar_values(dictionary: bytes) -> None:
    """Messages unseen in training shrink more with the dictionary than without."""
    messages = [chat_message(i) for i in range(1_000, 1_100)]
    plain = Compressor(threshold=0)
    with_dictionary = Compressor(threshold=0, dictionary=dictionary)
    plain_size = sum(len(plain.encode(m)) for m in messages)
    dictionary_size = sum(len(with_dictionary.encode(m)) for m in messages)
    assert dictionary_size < plain_size * 0.7
    assert with_dictionary.statistics().ratio > 2.0


def test_the_frame_carries_the_dictionary_id(dictionary: bytes) -> None:
    """A dictionary value's frame names its dictionary, as train_dictionary made it."""
    compressor = Compressor(threshold=0, dictionary=zstandard.ZstdCompressionDict(dictionary))
    stored = compressor.encode(chat_message(5))
    assert stored[0] == ZSTD_DICT
    frame_id = zstandard.get_frame_parameters(stored[1:]).dict_id
    assert (
        frame_id == compressor.dictionary_id == zstandard.ZstdCompressionDict(dictionary).dict_id()
    )
    assert compressor.dictionary_ids == frozenset({frame_id})


def test_a_missing_dictionary_is_named(dictionary: bytes, other_dictionary: bytes) -> None:
    """Without its dictionary a value raises MissingDictionary naming the id; given it, reads."""
    writer = Compressor(threshold=0, dictionary=dictionary)
    stored = writer.encode(chat_message(9))
    for reader in (Compressor(), Compressor(dictionary=other_dictionary)):
        with pytest.raises(
            MissingDictionary, match=f"dictionary id {writer.dictionary_id}"
        ) as info:
            reader.decode(stored)
        assert info.value.dict_id == writer.dictionary_id
        assert isinstance(info.value, CorruptValue)
        assert reader.statistics().corrupt == 1
    # A retired dictionary in dictionaries= next to a new one: both kinds of value read.
    retrained = Compressor(dictionary=other_dictionary, dictionaries=[dictionary])
    assert retrained.decode(stored) == chat_message(9)
    newer = retrained.encode(COMPRESSIBLE)
    assert retrained.decode(newer) == COMPRESSIBLE


# -- corruption -----------------------------------------------------------------------


def test_corrupt_values_raise_corrupt_value(dictionary: bytes) -> None:
    """Empty bytes, unknown headers and damaged frames of every codec raise CorruptValue."""
    zstd_value = Compressor(threshold=0).encode(COMPRESSIBLE)
    lz4_value = Compressor("lz4", threshold=0).encode(COMPRESSIBLE)
    dict_value = Compressor(threshold=0, dictionary=dictionary).encode(chat_message(1))
    bad = [
        (b"", "empty"),
        (b"\x07abc", "unknown header byte 0x07"),
        (b"\x01not zstd", "bad zstd frame"),
        (zstd_value[:-5], "bad zstd frame"),
        (b"\x02not lz4", "bad lz4 frame"),
        (lz4_value[:-5], "bad lz4 frame"),
        (b"\x03not zstd", "bad zstd frame"),
        (dict_value[:-3], "bad zstd frame"),
        (b"\x03" + zstd_value[1:], "names no dictionary"),  # a plain frame under 0x03
    ]
    reader = Compressor(dictionaries=[dictionary])
    for stored, message in bad:
        with pytest.raises(CorruptValue, match=message):
            reader.decode(stored)
    stats = reader.statistics()
    assert (stats.corrupt, stats.decoded) == (len(bad), 0)


# -- statistics and threads -----------------------------------------------------------


def test_statistics_add_up() -> None:
    """encoded = compressed + stored raw; bytes in and out are what went through."""
    compressor = Compressor("zstd", threshold=50)
    payloads = [COMPRESSIBLE, b"short", RANDOM, chat_message(1) * 5]
    stored = [compressor.encode(payload) for payload in payloads]
    for value in stored:
        compressor.decode(value)
    stats = compressor.statistics()
    assert stats.encoded == 4
    assert (stats.compressed, stats.stored_raw) == (2, 2)
    assert stats.bytes_in == sum(map(len, payloads))
    assert stats.bytes_out == sum(map(len, stored))
    assert stats.ratio == stats.bytes_in / stats.bytes_out
    assert (stats.decoded, stats.corrupt) == (4, 0)
    assert (stats.codec, stats.level, stats.threshold, stats.dictionary_id) == ("zstd", 3, 50, None)
    assert Compressor().statistics().ratio == 1.0


def test_threads_share_a_compressor(dictionary: bytes) -> None:
    """Threads encode and decode at once with their own contexts; no count is lost."""
    compressor = Compressor(threshold=0, dictionary=dictionary)
    threads = 4
    per_thread = 200
    barrier = threading.Barrier(threads)

    def work(worker: int) -> int:
        barrier.wait()  # all at once
        for index in range(per_thread):
            payload = chat_message(worker * per_thread + index)
            assert compressor.decode(compressor.encode(payload)) == payload
        return per_thread

    with ThreadPoolExecutor(threads) as pool:
        assert sum(pool.map(work, range(threads))) == threads * per_thread
    stats = compressor.statistics()
    assert stats.encoded == stats.decoded == threads * per_thread
    assert stats.compressed + stats.stored_raw == stats.encoded


def test_counters_of_ended_threads_are_kept() -> None:
    """Threads that end have their counts folded in, not lost, and their state released."""
    compressor = Compressor("lz4", threshold=0)
    for _ in range(5):
        thread = threading.Thread(target=compressor.encode, args=(COMPRESSIBLE,))
        thread.start()
        thread.join()
    compressor.encode(COMPRESSIBLE)  # this thread's first call folds the ended ones
    assert compressor.statistics().encoded == 6
    assert len(compressor._threads) == 1  # only this thread's counters are still separate


# -- bad input ------------------------------------------------------------------------

BAD_COMPRESSORS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"codec": "gzip"}, ValueError, "^codec must be one of 'zstd', 'lz4', 'none', not 'gzip'"),
    ({"codec": "zstd", "level": 0}, ValueError, "^level must be between 1 and 22 for zstd"),
    ({"codec": "zstd", "level": 23}, ValueError, "^level must be between 1 and 22 for zstd"),
    ({"codec": "lz4", "level": 17}, ValueError, "^level must be between 0 and 16 for lz4"),
    ({"codec": "lz4", "level": -1}, ValueError, "^level must be between 0 and 16 for lz4"),
    ({"codec": "zstd", "level": 2.5}, TypeError, "^level must be an int"),
    ({"codec": "none", "level": 3}, ValueError, "^level must be None with codec 'none'"),
    ({"threshold": -1}, ValueError, "^threshold must be >= 0"),
    ({"threshold": "1"}, TypeError, "^threshold must be an int"),
    ({"dictionary": 42}, TypeError, "^dictionary must be bytes or a zstandard"),
    ({"dictionary": b"not a dictionary"}, ValueError, "^dictionary must be a trained zstd"),
    ({"dictionaries": b"one"}, TypeError, "^dictionaries must be an iterable of dictionaries"),
    ({"dictionaries": 5}, TypeError, "^dictionaries must be an iterable"),
    ({"dictionaries": [b"junk"]}, ValueError, r"^dictionaries\[0\] must be a trained zstd"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_COMPRESSORS)
def test_bad_arguments_are_named(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Compressor(**kwargs)


def test_a_dictionary_needs_zstd_and_ids_must_not_clash(dictionary: bytes) -> None:
    with pytest.raises(ValueError, match=r"^dictionary needs codec 'zstd', not 'lz4'"):
        Compressor("lz4", dictionary=dictionary)
    # The same id with other content (a forged or damaged copy) is refused.
    dict_id = Compressor(dictionary=dictionary).dictionary_id
    assert dict_id is not None
    samples: list[bytes | bytearray | memoryview] = [chat_message(i) + b"!" for i in range(400)]
    forged = zstandard.train_dictionary(4_096, samples, dict_id=dict_id).as_bytes()
    assert forged != dictionary
    with pytest.raises(ValueError, match=r"^dictionaries\[0\] has id \d+, as does a different"):
        Compressor(dictionary=dictionary, dictionaries=[forged])
    # The same dictionary twice is fine.
    assert Compressor(dictionary=dictionary, dictionaries=[dictionary]).dictionary_ids == (
        Compressor(dictionaries=[dictionary]).dictionary_ids
    )


TRAINING_ERRORS: list[tuple[Any, int, type[Exception], str]] = [
    ([b"x"] * 7, 1_024, ValueError, "^samples must hold at least 8 values"),
    ([b""] * 50, 1_024, ValueError, "^samples: zstd could not train a 1024-byte dictionary"),
    ([b"a", "b"] * 10, 1_024, TypeError, "^samples must hold bytes, not str"),
    (b"just bytes", 1_024, TypeError, "^samples must be an iterable of bytes values"),
    (42, 1_024, TypeError, "^samples must be an iterable of bytes, not int"),
    ([b"x"] * 10, 100, ValueError, "^size must be >= 256"),
]


@pytest.mark.parametrize(("samples", "size", "error", "message"), TRAINING_ERRORS)
def test_training_errors_name_the_argument(
    samples: Any, size: int, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        train_dictionary(samples, size)


def test_training_takes_any_iterable_of_bytes() -> None:
    """A generator of bytes, bytearrays and memoryviews trains a dictionary with an id."""
    samples = (
        bytearray(m) if i % 3 == 0 else memoryview(m) if i % 3 == 1 else m
        for i, m in enumerate(chat_message(i) for i in range(300))
    )
    trained = train_dictionary(samples, 1_024)
    assert 0 < len(trained) <= 1_024
    assert Compressor(dictionary=trained).dictionary_id


# -- the caches -----------------------------------------------------------------------


def test_codec_turns_cache_arguments_into_a_compressor(dictionary: bytes) -> None:
    """compression=None keeps the old meaning; names pick a codec; a Compressor is used as is."""
    assert Codec().threshold is None
    assert Codec().compressor.codec == "none"
    legacy = Codec(compress_threshold=10, compress_level=5)
    assert (legacy.compressor.codec, legacy.threshold, legacy.compressor.level) == ("zstd", 10, 5)
    lz4 = Codec(compression="lz4")
    assert (lz4.compressor.codec, lz4.threshold, lz4.compressor.level) == ("lz4", 256, 0)
    zstd = Codec(compress_threshold=0, compression="zstd", compress_level=9)
    assert (zstd.threshold, zstd.compressor.level) == (0, 9)
    given = Compressor(dictionary=dictionary)
    assert Codec(compression=given).compressor is given
    assert Codec(compression=Compressor("none")).threshold is None
    with pytest.raises(ValueError, match=r"^compression must be 'zstd', 'lz4', a Compressor"):
        Codec(compression="gzip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^compress_threshold and compress_level must be left"):
        Codec(compress_threshold=10, compression=given)
    with pytest.raises(ValueError, match=r"^compress_level must be between 0 and 16 for lz4"):
        Codec(compression="lz4", compress_level=17)
    with pytest.raises(ValueError, match=r"^compress_threshold must be >= 0"):
        Codec(compression="zstd", compress_threshold=-1)


async def test_a_disk_cache_reads_values_written_under_other_settings(
    tmp_path: Path, dictionary: bytes
) -> None:
    """One directory written with zstd, then lz4, then none, then a dictionary: all read."""
    directory = tmp_path / "cache"
    large = "compressible text " * 4_000  # above inline_threshold: its own file
    message = chat_message(77).decode()
    settings: list[dict[str, Any]] = [
        {"compression": "zstd", "compress_threshold": 0},
        {"compression": "lz4", "compress_threshold": 0},
        {},  # the default: none
        {"compression": Compressor(threshold=0, dictionary=dictionary)},
        {"compress_threshold": 100, "compress_level": 19},  # zstd the old way
    ]
    for index, setting in enumerate(settings):
        async with DiskCache(directory, serializer="msgpack", **setting) as cache:
            await cache.set(("small", index), message)
            await cache.set(("large", index), large)
    # A reader of each codec reads what every setting wrote (given the dictionary to
    # decode with).
    for codec in ("zstd", "lz4", "none"):
        reader = Compressor(codec, dictionaries=[dictionary])
        async with DiskCache(directory, serializer="msgpack", compression=reader) as cache:
            for index in range(len(settings)):
                assert await cache.get(("small", index)) == message, (codec, index)
                assert await cache.get(("large", index)) == large, (codec, index)
        assert reader.statistics().decoded == 2 * len(settings)
    async with DiskCache(directory, serializer="msgpack", compression="lz4") as cache:
        assert await cache.get(("small", 1)) == message
        # A dictionary value without its dictionary cannot be read: a miss, not an error,
        # and not a damaged entry either: it stays for the readers that have the dictionary.
        assert await cache.get(("small", 3), default=None) is None
        assert await cache.get(("large", 3), default=None) is None
    reader = Compressor(dictionaries=[dictionary])
    async with DiskCache(directory, serializer="msgpack", compression=reader) as cache:
        assert await cache.get(("small", 3)) == message
        assert await cache.get(("large", 3)) == large


async def test_compression_shrinks_what_the_disk_cache_stores(tmp_path: Path) -> None:
    """The stored volume follows the codec: none > lz4 > zstd on compressible values."""
    value = "the same words over and over " * 500
    volumes: dict[str, int] = {}
    settings: list[tuple[str, dict[str, Any]]] = [
        ("none", {}),
        ("lz4", {"compression": "lz4"}),
        ("zstd", {"compression": "zstd"}),
    ]
    for name, setting in settings:
        async with DiskCache(tmp_path / name, serializer="msgpack", **setting) as cache:
            await cache.set_many((("k", i), value, None) for i in range(20))
            volumes[name] = await cache.volume()
    assert volumes["none"] > 5 * volumes["lz4"]
    assert volumes["lz4"] > volumes["zstd"]


def test_disk_cache_compression_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^compression must be 'zstd', 'lz4', a Compressor"):
        DiskCache(tmp_path / "a", compression="brotli")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^compress_level must be between 0 and 16 for lz4"):
        DiskCache(tmp_path / "b", compression="lz4", compress_level=20)
    with pytest.raises(ValueError, match=r"^compress_threshold and compress_level must be left"):
        DiskCache(tmp_path / "c", compression=Compressor(), compress_level=3)


async def test_a_redis_level_reads_across_settings_and_keeps_others_dictionary_values(
    redis_url: str, dictionary: bytes
) -> None:
    """lz4, zstd and raw values read under any setting; a value whose dictionary this
    client lacks is a miss left in Redis for the clients that have it."""
    admin = connect(redis_url)
    with_dictionary = Compressor(threshold=0, dictionary=dictionary)
    message = chat_message(12).decode()
    try:
        settings: list[dict[str, Any]] = [
            {"compression": "lz4", "compress_threshold": 0},
            {"compress_threshold": 0},
            {},
        ]
        for index, setting in enumerate(settings):
            async with RedisCacheLevel(redis_url, **setting) as level:
                assert await level.set(("k", index), message)
        async with RedisCacheLevel(redis_url, compression=with_dictionary) as level:
            assert await level.set("dict", message)
            assert [await level.get(("k", i)) for i in range(3)] == [message] * 3
        async with RedisCacheLevel(redis_url, compression="lz4") as level:
            assert await level.get("dict", default=None) is None
            assert level.redis_statistics().corrupt == 0
        rkey = key_join("cache", "v").encode() + b":" + encode_key("dict")
        stored = await admin.get(rkey)
        assert isinstance(stored, bytes)
        assert stored[0] == ZSTD_DICT
        async with RedisCacheLevel(redis_url, compression=with_dictionary) as level:
            assert await level.get("dict") == message
    finally:
        await admin.aclose()


# -- the bench suite ------------------------------------------------------------------


def tiny_config(loops: tuple[Any, ...] = ("asyncio",)) -> Config:
    return Config(
        jobs=60,  # payloads per workload
        repeat=2,
        quick=True,
        loops=loops,
        memory_items=100,
        queue_depths=(10,),
    )


def test_the_compression_suite_runs_and_its_figures_agree() -> None:
    """One tiny run through the harness: every case timed, ratios consistent with the bytes."""
    config = tiny_config()
    h = Harness(config, Console(file=io.StringIO(), width=200))
    plan = compression.SUITE.plan(config, "asyncio")
    assert len(plan.cases) == len(compression.WORKLOADS) * 2 * len(compression.CODECS)
    results = h.run_cases(compression.SUITE.name, plan.cases, "asyncio")
    compression.SUITE.report(h, "asyncio", results)
    for result in results:
        assert result.repeat == 2
        assert all(math.isfinite(s) and s > 0 for s in result.samples), result
        assert result.best <= result.value <= result.worst
    sets = {s.name: s for s in compression._SETS["asyncio"]}
    assert list(sets) == list(compression.WORKLOADS)
    for payload_set in sets.values():
        assert len(payload_set.payloads) == 60
        # Every case measured the same bytes: items is the workload's payload total.
        assert {r.items for r in results if r.case.endswith(payload_set.name)} == {
            payload_set.total
        }
        # The raw baseline adds exactly one header byte per payload.
        assert payload_set.ratio("none") == payload_set.total / (
            payload_set.total + len(payload_set.payloads)
        )
        for codec in ("zstd", "zstd_dict", "lz4"):
            assert payload_set.ratio(codec) > 1.0, (payload_set.name, codec)
    # The simulator's requests are small and alike: the dictionary beats plain zstd.
    assert sets["requests"].ratio("zstd_dict") > sets["requests"].ratio("zstd")
    ratios = {(r.case, r.contender): r.value for r in h.results["compression"] if r.unit == "x"}
    assert ratios[("replies/ratio", "lz4")] == sets["replies"].ratio("lz4")
    table = h.console.file.getvalue()  # type: ignore[attr-defined]
    assert "compress MB/s" in table
    assert "zstd level 3 + trained dictionary" in table


def test_the_compression_suite_runs_on_one_loop_only() -> None:
    """CPU only: the second loop asked for gets no cases, only a note."""
    config = tiny_config(loops=("asyncio", "uvloop"))
    second = compression.SUITE.plan(config, "uvloop")
    assert second.cases == []
    assert "measured on asyncio only" in second.notes[0]
    h = Harness(config, Console(file=io.StringIO()))
    compression.SUITE.report(h, "uvloop", [])  # nothing measured: nothing printed
    assert h.console.file.getvalue() == ""  # type: ignore[attr-defined]


async def test_the_suite_catches_a_codec_that_returns_wrong_bytes() -> None:
    """The measurement checks its output: a damaged stored value is reported, not timed."""
    payload_set = compression.payload_sets(12)[0]
    codec = next(c for c in compression.CODECS if c.key == "lz4")
    stored = payload_set.encoded["lz4"]
    first = Compressor("none").encode(b"something else")
    payload_set.encoded["lz4"] = [first, *stored[1:]]
    with pytest.raises(AssertionError, match=r"lz4 decompressed requests #0 wrongly"):
        await compression.measure_decompress(payload_set, codec)
    with pytest.raises(AssertionError, match=r"lz4 compressed requests #0 wrongly"):
        await compression.measure_compress(payload_set, codec)


def test_payloads_come_from_the_simulator() -> None:
    """Requests are the simulator's JSON, replies its msgpack'd reply texts, sized as said."""
    requests, replies = compression.chat_payloads(200, seed=1)
    assert len(requests) == len(replies) == 200
    first = json.loads(requests[0])
    assert {"model", "session", "messages", "context", "prompt_tokens"} <= set(first)
    assert min(map(len, requests)) >= 150
    assert max(map(len, requests)) <= 4_500
    assert all(400 <= len(reply) <= 1_300 for reply in replies)
    varied = compression.varied_payloads(50, seed=1)
    assert len(set(varied)) == 50
    assert compression.varied_payloads(50, seed=1) == varied  # seeded
