"""Layer 3: TieredCache: read-through and promotion, write modes, single-flight loads,
stale windows, negative caching, prewarm, capacity, the aiocache level, shutdown."""

from __future__ import annotations

import asyncio
import gc
import warnings
from pathlib import Path
from typing import Any

import pytest
from aiocache import SimpleMemoryCache
from aiocache.serializers import JsonSerializer, StringSerializer

from asyncperf._errors import CacheClosed
from asyncperf.cache._base import MISS, CacheLevel
from asyncperf.cache._disk import DiskCache
from asyncperf.cache._memory import MemoryCache
from asyncperf.cache._tiered import AiocacheLevel, TieredCache, TieredStatistics
from asyncperf.io import Batcher
from asyncperf.testing import VirtualClock, wait_until
from tests.cache_levels import FakeLevel, LevelFailure


class Loader:
    """A loader that counts its calls and, when gated, waits for ``release()``."""

    def __init__(self, value: Any = "loaded", *, gated: bool = False) -> None:
        self.value = value
        self.calls = 0
        self.running = 0
        self.peak = 0
        self.error: BaseException | None = None
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()

    def release(self) -> None:
        self.gate.set()

    async def __call__(self) -> Any:
        self.calls += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        if self.error is not None:
            raise self.error
        return self.value


def batcher(cache: TieredCache) -> Batcher[Any, bool] | None:
    """The tier's write-behind batcher (read through a call so type checkers do not pin it)."""
    return cache._wb_batcher


def two_levels(clock: VirtualClock | None = None, **kwargs: Any) -> tuple[FakeLevel, FakeLevel]:
    return FakeLevel("l1", clock=clock, **kwargs), FakeLevel("l2", clock=clock)


# -- construction and bad input ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"default_ttl": 0}, ValueError, r"^default_ttl must be > 0, not 0$"),
        ({"default_ttl": "1"}, TypeError, r"^default_ttl must be a number, not str$"),
        ({"jitter": 1.0}, ValueError, r"^jitter must be < 1, not 1.0$"),
        ({"jitter": -0.1}, ValueError, r"^jitter must be >= 0, not -0.1$"),
        ({"write": "around"}, ValueError, r"^write must be 'through' or 'behind', not 'around'$"),
        ({"write_behind_delay": -1}, ValueError, r"^write_behind_delay must be >= 0, not -1$"),
        ({"write_behind_batch": 0}, ValueError, r"^write_behind_batch must be >= 1, not 0$"),
        ({"write_behind_batch": 2.0}, TypeError, r"^write_behind_batch must be an int"),
        ({"stale_while_revalidate": -1}, ValueError, r"^stale_while_revalidate must be >= 0"),
        ({"stale_if_error": float("inf")}, ValueError, r"^stale_if_error must be finite"),
        ({"negative_ttl": 0.0}, ValueError, r"^negative_ttl must be > 0, not 0.0$"),
        ({"prewarm_concurrency": 0}, ValueError, r"^prewarm_concurrency must be >= 1, not 0$"),
        ({"clock": object()}, TypeError, r"^clock must be a Clock, not object$"),
    ],
)
def test_bad_arguments_name_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Each bad argument is refused with a message naming it."""
    with pytest.raises(error, match=message):
        TieredCache(FakeLevel(), **kwargs)


def test_levels_are_checked() -> None:
    """No level, a level that is not one, and the same level twice are refused."""
    with pytest.raises(ValueError, match=r"^levels must not be empty"):
        TieredCache()
    with pytest.raises(TypeError, match=r"^levels\[1\] must be a CacheLevel or an aiocache cache"):
        TieredCache(FakeLevel(), {})
    level = FakeLevel()
    with pytest.raises(ValueError, match=r"^levels\[1\] is given twice"):
        TieredCache(level, level)


async def test_bad_call_arguments_name_the_parameter() -> None:
    """ttl and concurrency are checked on every call that takes them."""
    async with TieredCache(FakeLevel()) as cache:
        with pytest.raises(ValueError, match=r"^ttl must be > 0, not -1$"):
            await cache.set("k", 1, ttl=-1)
        with pytest.raises(ValueError, match=r"^ttl must be > 0, not 0$"):
            await cache.get_or_load("k", Loader(), ttl=0)
        with pytest.raises(TypeError, match=r"^ttl must be a number, not str$"):
            await cache.get_or_load("k", Loader(), ttl="5")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^concurrency must be >= 1, not 0$"):
            await cache.prewarm(["k"], lambda key: Loader()(), concurrency=0)
        assert cache.statistics().loads == 0


# -- reading, promotion and TTL -------------------------------------------------------------


async def test_get_misses_with_the_sentinel_and_caches_none() -> None:
    """A miss returns MISS (or the default); None is a value like any other."""
    async with TieredCache(*two_levels()) as cache:
        assert await cache.get("k") is MISS
        assert await cache.get("k", default="d") == "d"
        await cache.set("k", None)
        assert await cache.get("k", default="d") is None
        stats = cache.statistics()
        assert (stats.hits, stats.misses) == (1, 2)
        assert stats.hit_ratio == pytest.approx(1 / 3)


async def test_a_top_hit_does_not_read_below() -> None:
    """Lookups go top-down and stop at the first level holding the key."""
    l1, l2 = two_levels()
    async with TieredCache(l1, l2) as cache:
        await cache.set("k", 1)
        l1.calls.clear()
        l2.calls.clear()
        assert await cache.get("k") == 1
        assert l1.ops("get_entry") == ["k"]
        assert l2.calls == []


@pytest.mark.virtual_time
async def test_a_hit_below_is_promoted_with_its_remaining_ttl(clock: VirtualClock) -> None:
    """A hit at level 2 is copied up with the TTL it has left, never a fresh one."""
    l1, l2, l3 = (
        FakeLevel("l1", clock=clock),
        FakeLevel("l2", clock=clock),
        FakeLevel("l3", clock=clock),
    )
    async with TieredCache(l1, l2, l3, clock=clock) as cache:
        await l3.set("k", "v", ttl=10.0)
        await l3.set("forever", "f")
        await clock.sleep(4.0)
        assert await cache.get("k") == "v"
        assert l1.remaining("k") == pytest.approx(6.0)
        assert l2.remaining("k") == pytest.approx(6.0)
        assert await cache.get("forever") == "f"
        assert l1.remaining("forever") is None
        stats = cache.statistics()
        assert stats.promotions == 4
        assert [level.hits for level in stats.levels] == [0, 0, 2]
        # Now the top level answers, and the copy expires when the original does.
        assert await cache.get("k") == "v"
        assert stats.levels[0].hits == 0
        assert cache.statistics().levels[0].hits == 1
        await clock.sleep(6.0)
        assert await cache.get("k") is MISS


@pytest.mark.parametrize("write", ["through", "behind"])
async def test_a_lookup_below_does_not_promote_over_a_later_delete_or_set(write: str) -> None:
    """A read of level 2 that overlaps a delete or set of the key returns what it read, but
    does not copy that older value to the top, where later gets would find it."""
    l1, l2 = MemoryCache(max_entries=10, policy="lru"), FakeLevel("l2")
    async with TieredCache(l1, l2, write=write) as cache:  # type: ignore[arg-type]
        await l2.set("gone", "old")
        await l2.set("replaced", "old")
        # Each read takes its value, then waits (as a read on another thread would).
        l2.gate, l2.gated, l2.snapshot_reads = asyncio.Event(), {"get_entry"}, True
        reading = [asyncio.create_task(cache.get(key)) for key in ("gone", "replaced")]
        await wait_until(lambda: len(l2.ops("get_entry")) == 2)
        l2.gated = {"get_entry", "set_many"}
        deleting = asyncio.create_task(cache.delete("gone"))
        await wait_until(lambda: l2.ops("delete") == ["gone"])
        assert await cache.set("replaced", "new") is True
        l2.gate.set()
        assert [await task for task in reading] == ["old", "old"]
        assert await deleting is True
        assert await cache.get("gone") is MISS
        assert await cache.get("replaced") == "new"
        assert cache.statistics().promotions == 0
        await cache.flush()
        assert "gone" not in l2.data
        assert l2.data["replaced"][0] == "new"
    assert cache._reads == {}


async def test_a_lookup_below_does_not_promote_over_a_load_that_stored() -> None:
    """A stale read of level 2 that overlaps a load storing the key leaves the loaded value on
    top."""
    l1, l2 = MemoryCache(max_entries=10, policy="lru"), FakeLevel("l2")
    async with TieredCache(l1, l2) as cache:
        await l2.set("k", "old")
        l2.gate, l2.gated, l2.snapshot_reads = asyncio.Event(), {"get_entry"}, True
        reading = asyncio.create_task(cache.get("k"))
        await wait_until(lambda: l2.ops("get_entry") == ["k"])
        await l2.delete("k")  # so the load's own lookup misses
        l2.gated = set()
        assert await cache.get_or_load("k", Loader("loaded")) == "loaded"
        l2.gate.set()
        assert await reading == "old"
        assert await cache.get("k") == "loaded"
        assert l1.get_nowait("k") == "loaded"


@pytest.mark.virtual_time
async def test_ttl_and_default_ttl_run_on_the_clock(clock: VirtualClock) -> None:
    """An entry lives its ttl (or default_ttl) at every level, on the tier's clock."""
    l1, l2 = two_levels(clock)
    async with TieredCache(l1, l2, default_ttl=30.0, clock=clock) as cache:
        await cache.set("short", 1, ttl=5.0)
        await cache.set("default", 2)
        assert l2.remaining("short") == 5.0
        assert l1.remaining("default") == 30.0
        await clock.sleep(5.0)
        assert await cache.get("short") is MISS
        assert await cache.get("default") == 2
        await clock.sleep(25.0)
        assert await cache.get("default") is MISS


@pytest.mark.virtual_time
async def test_jitter_cuts_ttls_within_its_fraction(clock: VirtualClock) -> None:
    """With jitter j, each TTL is in [ttl * (1 - j), ttl], and they differ."""
    level = FakeLevel(clock=clock)
    async with TieredCache(level, jitter=0.5, clock=clock) as cache:
        for n in range(50):
            await cache.set(n, n, ttl=10.0)
        ttls = [level.remaining(n) for n in range(50)]
    assert all(t is not None and 5.0 <= t <= 10.0 for t in ttls)
    assert len(set(ttls)) > 40


# -- writing ----------------------------------------------------------------------------------


async def test_write_through_writes_every_level() -> None:
    """set stores at every level before returning; False only if every level refused."""
    l1, l2 = two_levels()
    async with TieredCache(l1, l2) as cache:
        assert await cache.set("k", 1) is True
        assert l1.data["k"][0] == 1
        assert l2.data["k"][0] == 1
        l1.refuse.add("big")
        assert await cache.set("big", 2) is True  # only the lower level took it
        assert "big" not in l1.data
        assert "big" in l2.data
        l2.refuse.add("big")
        assert await cache.set("big", 3) is False


async def test_a_level_error_reaches_the_caller_of_set_and_get() -> None:
    """A level's exception in the caller's own set, get, delete or clear is raised to it."""
    l1, l2 = two_levels()
    async with TieredCache(l1, l2) as cache:
        l2.fail = {"set", "get_entry", "delete", "clear"}
        with pytest.raises(LevelFailure, match=r"^l2.set failed$"):
            await cache.set("k", 1)
        with pytest.raises(LevelFailure, match=r"^l2.get_entry failed$"):
            await cache.get("other")
        with pytest.raises(LevelFailure):
            await cache.delete("k")
        with pytest.raises(LevelFailure):
            await cache.clear()


async def test_delete_and_clear_reach_every_level() -> None:
    """delete removes the key everywhere and says whether any level held it."""
    l1, l2 = two_levels()
    async with TieredCache(l1, l2) as cache:
        await l2.set("low", 1)
        assert await cache.delete("low") is True
        assert await cache.delete("low") is False
        assert l1.ops("delete") == ["low", "low"]
        await cache.set("a", 1)
        await cache.clear()
        assert l1.data == {}
        assert l2.data == {}


@pytest.mark.virtual_time
async def test_write_behind_batches_lower_writes_after_the_delay(clock: VirtualClock) -> None:
    """The top level is written at once; lower levels get one set_many after the delay."""
    l1, l2 = two_levels(clock)
    async with TieredCache(l1, l2, write="behind", write_behind_delay=1.0, clock=clock) as cache:
        await cache.set("a", 1, ttl=100.0)
        await cache.set("b", 2)
        await cache.set("a", 3, ttl=100.0)  # the latest value wins
        assert l1.data["a"][0] == 3
        assert l2.data == {}
        assert cache.statistics().write_behind_pending == 2
        await clock.sleep(0.5)
        assert l2.ops("set_many") == []
        await clock.sleep(1.0)
        assert l2.ops("set_many") == [["a", "b"]]
        assert l2.ops("set") == []
        assert l2.data["a"][0] == 3
        assert l2.data["b"][0] == 2
        # The TTL kept running while the write waited: both levels expire it at 100 s.
        assert l2.remaining("a") == pytest.approx(100.0 - clock.now())
        assert l1.remaining("a") == pytest.approx(100.0 - clock.now())
        stats = cache.statistics()
        assert (stats.write_behind_pending, stats.write_behind_errors) == (0, 0)


@pytest.mark.virtual_time
async def test_write_behind_flushes_when_a_batch_is_full(clock: VirtualClock) -> None:
    """write_behind_batch pending writes are written without waiting for the delay."""
    l1, l2 = two_levels(clock)
    cache = TieredCache(
        l1, l2, write="behind", write_behind_delay=60.0, write_behind_batch=3, clock=clock
    )
    async with cache:
        for n in range(3):
            await cache.set(n, n)
        await wait_until(lambda: cache.statistics().write_behind_written == 3)
        assert clock.now() == 0.0
        assert l2.ops("set_many") == [[0, 1, 2]]
        await cache.set("late", 1)
        await cache.flush()
        assert l2.ops("set_many")[-1] == ["late"]
        assert clock.now() == 0.0


@pytest.mark.virtual_time
async def test_write_behind_is_flushed_by_aclose(clock: VirtualClock) -> None:
    """Closing writes what is pending to the lower levels, then closes them."""
    l1, l2 = two_levels(clock)
    cache = TieredCache(l1, l2, write="behind", write_behind_delay=60.0, clock=clock)
    await cache.set("k", "v")
    assert l2.data == {}
    await cache.aclose()
    assert l2.ops("set_many") == [["k"]]
    assert l2.data["k"][0] == "v"
    assert l2.calls[-1] == ("aclose", None)
    assert l1.closed
    assert cache.statistics().write_behind_written == 1
    assert clock.now() == 0.0


@pytest.mark.virtual_time
async def test_write_behind_to_a_slow_level_does_not_extend_ttls_below_it(
    clock: VirtualClock,
) -> None:
    """A batch written to level 2 for 4 s, then to level 3: level 3 gets the TTL left after
    those 4 s, so its copy expires when the others do."""
    l1, l2, l3 = (FakeLevel(name, clock=clock) for name in ("l1", "l2", "l3"))
    async with TieredCache(
        l1, l2, l3, write="behind", write_behind_delay=1.0, clock=clock
    ) as cache:
        l2.gate, l2.gated = asyncio.Event(), {"set_many"}
        await cache.set("k", "v", ttl=10.0)
        await clock.sleep(1.0)
        await wait_until(lambda: l2.ops("set_many") == [["k"]])
        await clock.sleep(4.0)
        l2.gate.set()
        await cache.flush()
        assert l1.remaining("k") == pytest.approx(5.0)
        assert l2.remaining("k") == pytest.approx(9.0)  # written at 1 s, released at 5 s
        assert l3.remaining("k") == pytest.approx(5.0)


@pytest.mark.virtual_time
async def test_write_behind_reads_see_pending_writes(clock: VirtualClock) -> None:
    """A write evicted from the top before its batch is written is still read, not an older one."""
    l1, l2 = FakeLevel("l1", clock=clock, max_entries=1), FakeLevel("l2", clock=clock)
    await l2.set("a", "old")
    async with TieredCache(l1, l2, write="behind", write_behind_delay=5.0, clock=clock) as cache:
        await cache.set("a", "new")
        await cache.set("b", "b")  # evicts a from l1
        assert "a" not in l1.data
        assert await cache.get("a") == "new"
        assert l1.data["a"][0] == "new"  # promoted from the pending write


@pytest.mark.virtual_time
async def test_delete_drops_a_pending_write(clock: VirtualClock) -> None:
    """A key deleted before its batch is written does not come back."""
    l1, l2 = two_levels(clock)
    async with TieredCache(l1, l2, write="behind", write_behind_delay=5.0, clock=clock) as cache:
        await cache.set("k", 1)
        assert await cache.delete("k") is True
        await cache.flush()
        await clock.sleep(10.0)
        assert l2.data == {}
        assert await cache.get("k") is MISS


@pytest.mark.virtual_time
async def test_delete_waits_for_the_batch_being_written(clock: VirtualClock) -> None:
    """A delete during a batch write of the key lands after it, so the key stays gone."""
    l1, l2 = two_levels(clock)
    async with TieredCache(l1, l2, write="behind", write_behind_delay=0.0, clock=clock) as cache:
        l2.gate = asyncio.Event()
        await cache.set("k", 1)
        await wait_until(lambda: l2.ops("set_many") == [["k"]])
        deleting = asyncio.create_task(cache.delete("k"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not deleting.done()
        assert l2.ops("delete") == []  # waiting for the batch
        l2.gate.set()
        assert await deleting is True
        assert l2.data == {}


@pytest.mark.virtual_time
@pytest.mark.allow_loop_errors
async def test_write_behind_errors_are_counted_and_reported(
    clock: VirtualClock, loop_errors: list[dict[str, Any]]
) -> None:
    """A failed batch is counted and reported, never raised into callers."""
    l1, l2 = two_levels(clock)
    async with TieredCache(l1, l2, write="behind", write_behind_delay=1.0, clock=clock) as cache:
        l2.fail = {"set_many"}
        await cache.set("a", 1)
        await cache.set("b", 2)
        await cache.flush()
        assert await cache.get("a") == 1  # callers carry on
        stats = cache.statistics()
        assert (stats.write_behind_errors, stats.write_behind_written) == (2, 0)
        assert len(loop_errors) == 1
        assert "write-behind of 2 entries to level 'l2' failed" in loop_errors[0]["message"]
        assert isinstance(loop_errors[0]["exception"], LevelFailure)


@pytest.mark.virtual_time
async def test_write_behind_bounds_what_it_holds(clock: VirtualClock) -> None:
    """Four batches sent (one being written, three queued behind it) and the next one full:
    a write of a new key then waits until those are written instead of growing the backlog;
    writes queued meanwhile keep their order, and a key already pending never waits."""
    l1, l2 = two_levels(clock)
    cache = TieredCache(
        l1, l2, write="behind", write_behind_batch=2, write_behind_delay=60.0, clock=clock
    )
    async with cache:
        l2.gate = asyncio.Event()
        for n in range(2):  # a full batch: sent at once, then blocked on l2
            await cache.set(n, n)
        await wait_until(lambda: l2.ops("set_many") == [[0, 1]])
        for n in range(2, 10):  # three batches queued behind it, and the next one full
            await cache.set(n, n)
        await cache.set(3, "3 again")  # already pending: no room needed
        assert cache.statistics().write_behind_pending == 10
        blocked = [asyncio.create_task(cache.set(n, n)) for n in (10, 11)]
        await wait_until(lambda: cache.statistics().write_behind_pending == 12)
        for _ in range(5):
            await asyncio.sleep(0)
        assert not any(task.done() for task in blocked)
        assert l2.ops("set_many") == [[0, 1]]  # one batch written at a time
        assert await cache.get(10) == 10  # read-your-writes while it waits
        l2.gate.set()
        assert await asyncio.gather(*blocked) == [True, True]
        await cache.flush()
        assert l2.ops("set_many") == [[n, n + 1] for n in range(0, 12, 2)]
        assert l2.data[3][0] == "3 again"
        stats = cache.statistics()
        assert (stats.write_behind_written, stats.write_behind_pending) == (12, 0)
        assert stats.write_behind_batches == 6
        assert clock.now() == 0.0


@pytest.mark.virtual_time
async def test_a_writer_cancelled_while_it_waits_for_room_still_has_its_write_written(
    clock: VirtualClock,
) -> None:
    """Cancelling a set that waits for room (backpressure) does not strand its write: the
    key stays pending, is read back, and is written in its turn, even if set again."""
    l1, l2 = two_levels(clock)
    cache = TieredCache(
        l1, l2, write="behind", write_behind_batch=1, write_behind_delay=60.0, clock=clock
    )
    async with cache:
        l2.gate = asyncio.Event()
        await cache.set("a", 1)  # being written, blocked on l2
        await wait_until(lambda: l2.ops("set_many") == [["a"]])
        for key in "bcde":  # three batches queued behind it, and the next one full
            await cache.set(key, 1)
        waiting = asyncio.create_task(cache.set("f", 1))
        await wait_until(lambda: cache.statistics().write_behind_pending == 6)
        waiting.cancel()
        await asyncio.wait([waiting])
        assert waiting.cancelled()
        assert await cache.set("f", 2) is True  # pending already: does not wait
        assert await cache.get("f") == 2
        l2.gate.set()
        await cache.flush()
        assert l2.ops("set_many") == [[key] for key in "abcdef"]
        assert l2.data["f"][0] == 2
        assert cache.statistics().write_behind_pending == 0


@pytest.mark.virtual_time
async def test_a_key_set_again_while_its_batch_is_written_goes_to_the_next_batch(
    clock: VirtualClock,
) -> None:
    """The batch being written keeps the value it took; the newer value is read back at
    once and lands in the next batch, so the lower level ends with the latest value."""
    l1, l2 = FakeLevel("l1", clock=clock, max_entries=1), FakeLevel("l2", clock=clock)
    async with TieredCache(l1, l2, write="behind", write_behind_delay=1.0, clock=clock) as cache:
        l2.gate = asyncio.Event()
        await cache.set("k", "old")
        await clock.sleep(1.0)
        await wait_until(lambda: l2.ops("set_many") == [["k"]])
        await cache.set("k", "new")
        await cache.set("other", 1)  # evicts k from l1: the read must come from the tier
        assert await cache.get("k") == "new"
        assert cache.statistics().write_behind_pending == 3  # old (writing), new, other
        l2.gate.set()
        await cache.flush()
        assert l2.ops("set_many") == [["k"], ["k", "other"]]
        assert l2.data["k"][0] == "new"
        stats = cache.statistics()
        assert (stats.write_behind_written, stats.write_behind_batches) == (3, 2)


@pytest.mark.virtual_time
async def test_flush_writes_now_and_waits_for_the_writes_made_before_it(
    clock: VirtualClock,
) -> None:
    """flush sends the pending batch without waiting for the delay, returns once it is
    written, and is a no-op when nothing is pending (or with write-through)."""
    l1, l2 = two_levels(clock)
    async with TieredCache(l1, l2, write="behind", write_behind_delay=60.0, clock=clock) as cache:
        await cache.flush()
        await cache.set("a", 1)
        await cache.set("b", 2)
        l2.gate = asyncio.Event()
        flushing = asyncio.create_task(cache.flush())
        await wait_until(lambda: l2.ops("set_many") == [["a", "b"]])
        assert not flushing.done()
        l2.gate.set()
        await flushing
        assert set(l2.data) == {"a", "b"}
        assert clock.now() == 0.0
    async with TieredCache(*two_levels(clock), write="through", clock=clock) as through:
        await through.flush()
        assert batcher(through) is None


@pytest.mark.virtual_time
async def test_flush_also_writes_the_writes_waiting_for_room(clock: VirtualClock) -> None:
    """A write waiting for room when flush is called is written before flush returns, and
    flush sends its batch at once rather than after write_behind_delay."""
    l1, l2 = two_levels(clock)
    cache = TieredCache(
        l1, l2, write="behind", write_behind_batch=2, write_behind_delay=60.0, clock=clock
    )
    async with cache:
        l2.gate = asyncio.Event()
        for n in range(10):  # one batch being written, three queued, the next one full
            await cache.set(n, n)
        waiting = asyncio.create_task(cache.set("last", 1))  # alone in its batch, later
        await wait_until(lambda: cache.statistics().write_behind_pending == 11)
        flushing = asyncio.create_task(cache.flush())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not flushing.done()
        l2.gate.set()
        await flushing
        assert l2.ops("set_many")[-1] == ["last"]
        assert cache.statistics().write_behind_pending == 0
        assert clock.now() == 0.0
        assert await waiting is True


async def test_write_behind_batcher_belongs_to_the_tier() -> None:
    """Write-behind over several levels has a batcher of the tier's settings, closed with the
    tier; a single level, or write-through, has none."""
    async with TieredCache(FakeLevel(), write="behind") as single:
        await single.set("k", 1)
        assert batcher(single) is None
        assert single.statistics().write_behind_batches == 0
    cache = TieredCache(*two_levels(), write="behind", write_behind_batch=7)
    owned = batcher(cache)
    assert owned is not None
    assert (owned.max_size, owned.max_delay, owned.max_concurrency) == (7, 0.05, 4)
    async with cache:
        await cache.set("k", 1)
        open_while_used = not owned.closed
    assert open_while_used
    assert owned.closed
    assert owned.statistics().outstanding == 0
    assert cache.statistics().write_behind_written == 1


# -- single-flight loads ------------------------------------------------------------------


async def test_get_or_load_loads_once_and_then_hits() -> None:
    """A miss calls the loader and stores the value at every level; the next call hits."""
    l1, l2 = two_levels()
    loader = Loader("v")
    async with TieredCache(l1, l2) as cache:
        assert await cache.get_or_load("k", loader) == "v"
        assert await cache.get_or_load("k", loader) == "v"
        assert loader.calls == 1
        assert l1.data["k"][0] == "v"
        assert l2.data["k"][0] == "v"
        stats = cache.statistics()
        assert (stats.hits, stats.misses, stats.loads, stats.coalesced) == (1, 1, 1, 0)


async def test_a_thousand_concurrent_callers_share_one_load() -> None:
    """1,000 callers of one key: exactly one loader call, and every caller gets its value."""
    loader = Loader(["value"], gated=True)
    async with TieredCache(*two_levels()) as cache:
        callers = [asyncio.create_task(cache.get_or_load("k", loader)) for _ in range(1000)]
        await wait_until(lambda: loader.calls == 1 and cache.statistics().coalesced == 999)
        loader.release()
        results = await asyncio.gather(*callers)
        assert loader.calls == 1
        assert all(result is loader.value for result in results)
        stats = cache.statistics()
        assert (stats.loads, stats.coalesced, stats.misses, stats.in_flight) == (1, 999, 1000, 0)


async def test_cancelled_callers_do_not_cancel_the_load() -> None:
    """Cancelling the first caller and half the others leaves the load running for the rest."""
    loader = Loader("v", gated=True)
    async with TieredCache(*two_levels()) as cache:
        callers = [asyncio.create_task(cache.get_or_load("k", loader)) for _ in range(1000)]
        await wait_until(lambda: loader.calls == 1)
        cancelled = [callers[0], *callers[1::2]]
        for task in cancelled:
            task.cancel()
        await asyncio.wait(cancelled)
        assert all(task.cancelled() for task in cancelled)
        loader.release()
        survivors = [task for task in callers if task not in cancelled]
        assert len(survivors) == 499
        assert await asyncio.gather(*survivors) == ["v"] * 499
        assert loader.calls == 1
        assert cache.statistics().in_flight == 0
        assert await cache.get("k") == "v"


async def test_the_load_completes_when_every_caller_has_gone() -> None:
    """With all callers cancelled the load still runs to the end and fills the cache."""
    loader = Loader("v", gated=True)
    l1, l2 = two_levels()
    async with TieredCache(l1, l2) as cache:
        caller = asyncio.create_task(cache.get_or_load("k", loader))
        await wait_until(lambda: loader.calls == 1)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert cache.statistics().in_flight == 1
        loader.release()
        await wait_until(lambda: cache.statistics().in_flight == 0)
        assert l2.data["k"][0] == "v"
        assert await cache.get_or_load("k", loader) == "v"
        assert loader.calls == 1


async def test_a_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    """Every waiter gets the loader's own exception object; the next call loads again."""
    loader = Loader(gated=True)
    error = KeyError("upstream down")
    loader.error = error
    async with TieredCache(*two_levels()) as cache:
        callers = [asyncio.create_task(cache.get_or_load("k", loader)) for _ in range(10)]
        await wait_until(lambda: loader.calls == 1)
        loader.release()
        results = await asyncio.gather(*callers, return_exceptions=True)
        assert all(result is error for result in results)
        loader.error = None
        assert await cache.get_or_load("k", loader) == "loaded"
        assert loader.calls == 2
        stats = cache.statistics()
        assert (stats.loads, stats.load_errors, stats.coalesced) == (2, 1, 9)


@pytest.mark.allow_loop_errors
async def test_a_failed_load_nobody_awaited_is_reported(loop_errors: list[dict[str, Any]]) -> None:
    """A load whose callers all left and which then fails goes to the exception handler."""
    loader = Loader(gated=True)
    loader.error = RuntimeError("boom")
    async with TieredCache(FakeLevel()) as cache:
        caller = asyncio.create_task(cache.get_or_load("k", loader))
        await wait_until(lambda: loader.calls == 1)
        caller.cancel()
        await asyncio.wait([caller])
        loader.release()
        await wait_until(lambda: cache.statistics().in_flight == 0)
        await asyncio.sleep(0)
        assert cache.statistics().load_errors == 1
    assert [context["exception"] for context in loop_errors] == [loader.error]
    assert "a load failed and no caller was waiting" in loop_errors[0]["message"]


@pytest.mark.allow_loop_errors
async def test_a_failed_store_still_returns_the_loaded_value(
    loop_errors: list[dict[str, Any]],
) -> None:
    """A level failing to store a loaded value is counted and reported; callers get the value."""
    l1, l2 = two_levels()
    l2.fail = {"set"}
    async with TieredCache(l1, l2) as cache:
        assert await cache.get_or_load("k", Loader("v")) == "v"
        assert l1.data["k"][0] == "v"
        assert cache.statistics().write_errors == 1
    assert len(loop_errors) == 1
    assert "storing a loaded value at level 'l2' failed" in loop_errors[0]["message"]


async def test_set_during_a_load_wins_over_the_loaded_value() -> None:
    """A set while a load runs: waiters get the loaded value, the cache keeps the set one."""
    loader = Loader("loaded", gated=True)
    l1, l2 = two_levels()
    async with TieredCache(l1, l2) as cache:
        waiter = asyncio.create_task(cache.get_or_load("k", loader))
        await wait_until(lambda: loader.calls == 1)
        await cache.set("k", "newer")
        loader.release()
        assert await waiter == "loaded"
        assert await cache.get("k") == "newer"
        assert l2.data["k"][0] == "newer"


async def test_delete_during_a_load_starts_a_new_one_for_new_callers() -> None:
    """After delete, new callers do not join the older load, and it stores nothing."""
    first, second = Loader("old", gated=True), Loader("new")
    level = FakeLevel()
    async with TieredCache(level) as cache:
        waiter = asyncio.create_task(cache.get_or_load("k", first))
        await wait_until(lambda: first.calls == 1)
        await cache.delete("k")
        assert await cache.get_or_load("k", second) == "new"
        first.release()
        assert await waiter == "old"
        assert level.data["k"][0] == "new"
        assert cache.statistics().loads == 2


async def test_a_lookup_overlapping_a_finished_load_does_not_load_again() -> None:
    """A caller whose slow read began before a load stored its value looks again: no 2nd load."""
    loader = Loader("v", gated=True)
    l1, l2 = two_levels()
    async with TieredCache(l1, l2) as cache:
        first = asyncio.create_task(cache.get_or_load("k", loader))
        await wait_until(lambda: loader.calls == 1)
        l2.gate, l2.gated, l2.snapshot_reads = asyncio.Event(), {"get_entry"}, True
        late = asyncio.create_task(cache.get_or_load("k", loader))
        await wait_until(lambda: len(l2.ops("get_entry")) == 2)  # read a miss, now parked
        loader.release()
        assert await first == "v"
        await wait_until(lambda: cache.statistics().in_flight == 0)
        l2.gate.set()
        assert await late == "v"
        assert loader.calls == 1
        assert cache.statistics().loads == 1


async def test_loads_of_different_keys_run_apart() -> None:
    """Single-flight is per key: two keys, two loads."""
    loader = Loader("v")
    async with TieredCache(FakeLevel()) as cache:
        results = await asyncio.gather(
            cache.get_or_load("a", loader), cache.get_or_load("b", loader)
        )
        assert list(results) == ["v", "v"]
        assert loader.calls == 2


# -- negative caching -----------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_negative_caching_remembers_a_failure(clock: VirtualClock) -> None:
    """A failure is raised again for negative_ttl without calling the loader, then forgotten."""
    loader = Loader("v")
    loader.error = LookupError("no such user")
    async with TieredCache(FakeLevel(clock=clock), negative_ttl=5.0, clock=clock) as cache:
        with pytest.raises(LookupError) as first:
            await cache.get_or_load("k", loader)
        await clock.sleep(4.0)
        with pytest.raises(LookupError) as again:
            await cache.get_or_load("k", loader)
        assert again.value is first.value
        assert loader.calls == 1
        assert cache.statistics().negative_hits == 1
        await clock.sleep(1.0)
        loader.error = None
        assert await cache.get_or_load("k", loader) == "v"
        assert loader.calls == 2


@pytest.mark.virtual_time
async def test_set_forgets_a_remembered_failure(clock: VirtualClock) -> None:
    """A value set for the key replaces the remembered failure at once."""
    loader = Loader()
    loader.error = LookupError("missing")
    async with TieredCache(FakeLevel(clock=clock), negative_ttl=60.0, clock=clock) as cache:
        with pytest.raises(LookupError):
            await cache.get_or_load("k", loader)
        await cache.set("k", "set")
        assert await cache.get_or_load("k", loader) == "set"
        await cache.delete("k")
        loader.error = None
        assert await cache.get_or_load("k", loader) == "loaded"
        assert cache.statistics().negative_hits == 0


async def test_failures_are_not_remembered_without_negative_ttl() -> None:
    """With negative_ttl None every miss calls the loader again."""
    loader = Loader()
    loader.error = LookupError("missing")
    async with TieredCache(FakeLevel()) as cache:
        for _ in range(3):
            with pytest.raises(LookupError):
                await cache.get_or_load("k", loader)
        assert loader.calls == 3


# -- stale windows ---------------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_stale_while_revalidate_serves_stale_and_refreshes_once(clock: VirtualClock) -> None:
    """Past its TTL but inside the window: the stale value at once, and one refresh."""
    l1, l2 = two_levels(clock)
    async with TieredCache(l1, l2, stale_while_revalidate=5.0, clock=clock) as cache:
        await cache.set("k", "old", ttl=10.0)
        assert l2.remaining("k") == 15.0  # stored with the window
        await clock.sleep(12.0)
        refresh = Loader("new", gated=True)
        start = clock.now()
        results = await asyncio.gather(
            *(cache.get_or_load("k", refresh, ttl=10.0) for _ in range(20))
        )
        assert results == ["old"] * 20
        assert clock.now() == start
        await wait_until(lambda: refresh.calls == 1)
        assert cache.statistics().in_flight == 1
        refresh.release()
        await wait_until(lambda: cache.statistics().in_flight == 0)
        assert await cache.get_or_load("k", refresh) == "new"
        assert refresh.calls == 1
        assert l2.remaining("k") == 15.0  # the refresh stored a full TTL
        stats = cache.statistics()
        assert (stats.stale_served, stats.refreshes, stats.loads, stats.hits) == (20, 1, 0, 1)


@pytest.mark.virtual_time
async def test_a_value_past_the_window_is_loaded(clock: VirtualClock) -> None:
    """After ttl + stale_while_revalidate the entry is gone and callers wait for a load."""
    async with TieredCache(FakeLevel(clock=clock), stale_while_revalidate=5.0, clock=clock) as c:
        await c.set("k", "old", ttl=10.0)
        await clock.sleep(15.0)
        assert await c.get_or_load("k", Loader("new")) == "new"
        assert c.statistics().stale_served == 0


@pytest.mark.virtual_time
async def test_get_treats_a_stale_entry_as_a_miss(clock: VirtualClock) -> None:
    """Plain get has no loader to refresh with: stale is a miss there."""
    async with TieredCache(FakeLevel(clock=clock), stale_while_revalidate=5.0, clock=clock) as c:
        await c.set("k", "v", ttl=10.0)
        await clock.sleep(9.0)
        assert await c.get("k") == "v"
        await clock.sleep(2.0)
        assert await c.get("k", default=None) is None
        assert (c.statistics().hits, c.statistics().misses) == (1, 1)


@pytest.mark.virtual_time
@pytest.mark.allow_loop_errors
async def test_a_failed_refresh_keeps_the_stale_value(
    clock: VirtualClock, loop_errors: list[dict[str, Any]]
) -> None:
    """A refresh that fails is counted and reported; the stale value is still served."""
    async with TieredCache(FakeLevel(clock=clock), stale_while_revalidate=5.0, clock=clock) as c:
        await c.set("k", "old", ttl=10.0)
        await clock.sleep(11.0)
        failing = Loader()
        failing.error = ConnectionError("down")
        assert await c.get_or_load("k", failing) == "old"
        await wait_until(lambda: c.statistics().in_flight == 0)
        assert await c.get_or_load("k", failing) == "old"
        await wait_until(lambda: c.statistics().in_flight == 0)
        stats = c.statistics()
        assert (stats.refreshes, stats.refresh_errors, stats.stale_served) == (2, 2, 2)
    assert [context["exception"] for context in loop_errors] == [failing.error] * 2


@pytest.mark.virtual_time
@pytest.mark.allow_loop_errors
async def test_negative_ttl_holds_back_refreshes(
    clock: VirtualClock, loop_errors: list[dict[str, Any]]
) -> None:
    """After a failed refresh, no new refresh starts while the failure is remembered."""
    cache = TieredCache(
        FakeLevel(clock=clock), stale_while_revalidate=30.0, negative_ttl=5.0, clock=clock
    )
    async with cache:
        await cache.set("k", "old", ttl=10.0)
        await clock.sleep(11.0)
        failing = Loader()
        failing.error = ConnectionError("down")
        assert await cache.get_or_load("k", failing) == "old"
        await wait_until(lambda: cache.statistics().in_flight == 0)
        assert await cache.get_or_load("k", failing) == "old"
        assert cache.statistics().in_flight == 0
        assert failing.calls == 1
        await clock.sleep(5.0)
        failing.error = None
        assert await cache.get_or_load("k", failing) == "old"
        await wait_until(lambda: cache.statistics().in_flight == 0)
        assert failing.calls == 2
        assert await cache.get("k") == "loaded"
        assert cache.statistics().refreshes == 2
    assert len(loop_errors) == 1


@pytest.mark.virtual_time
async def test_stale_if_error_serves_stale_when_the_load_fails(clock: VirtualClock) -> None:
    """Inside stale_if_error a failed load returns the stale value; past it, the error."""
    async with TieredCache(FakeLevel(clock=clock), stale_if_error=5.0, clock=clock) as cache:
        await cache.set("k", "old", ttl=10.0)
        await clock.sleep(12.0)
        failing = Loader()
        failing.error = TimeoutError("upstream timeout")
        assert await cache.get_or_load("k", failing) == "old"
        assert failing.calls == 1  # it did try to load
        stats = cache.statistics()
        assert (stats.stale_served, stats.misses, stats.load_errors) == (1, 1, 1)
        # A load that succeeds replaces the stale value.
        assert await cache.get_or_load("k", Loader("new")) == "new"
        await cache.set("k", "old", ttl=10.0)
        await clock.sleep(15.5)
        with pytest.raises(TimeoutError):
            await cache.get_or_load("k", failing)


@pytest.mark.virtual_time
async def test_stale_if_error_window_is_checked_when_the_load_fails(clock: VirtualClock) -> None:
    """A load that fails after the window has closed raises, though it started inside it."""
    async with TieredCache(FakeLevel(clock=clock), stale_if_error=5.0, clock=clock) as cache:
        await cache.set("k", "old", ttl=10.0)
        await clock.sleep(12.0)
        slow = Loader()
        slow.error = TimeoutError("slow")

        async def late_failure() -> Any:
            await clock.sleep(4.0)  # fails at 16 s: one second past the window
            return await slow()

        with pytest.raises(TimeoutError):
            await cache.get_or_load("k", late_failure)


@pytest.mark.virtual_time
async def test_stale_if_error_with_a_remembered_failure(clock: VirtualClock) -> None:
    """A remembered failure is an error too: the stale value is served in its place."""
    cache = TieredCache(FakeLevel(clock=clock), stale_if_error=10.0, negative_ttl=60.0, clock=clock)
    async with cache:
        failing = Loader()
        failing.error = OSError("down")
        with pytest.raises(OSError, match=r"^down$"):
            await cache.get_or_load("fresh-miss", failing)
        await cache.set("k", "old", ttl=1.0)
        await clock.sleep(2.0)
        assert await cache.get_or_load("k", failing) == "old"
        assert await cache.get_or_load("k", failing) == "old"
        assert failing.calls == 2
        assert cache.statistics().negative_hits == 1


# -- prewarm ---------------------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_prewarm_loads_with_bounded_concurrency(clock: VirtualClock) -> None:
    """prewarm runs at most `concurrency` loads at once and skips keys already fresh."""
    running = 0
    peak = 0

    async def load(key: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await clock.sleep(1.0)
        running -= 1
        return key * 10

    l1, l2 = two_levels(clock)
    async with TieredCache(l1, l2, clock=clock) as cache:
        await cache.set(0, "already")
        assert await cache.prewarm(range(50), load, ttl=60.0, concurrency=4) == 49
        assert peak == 4
        assert clock.now() == pytest.approx(13.0)  # ceil(49 / 4) rounds of one second
        assert await cache.get(7) == 70
        assert await cache.get(0) == "already"
        assert l2.remaining(7) == pytest.approx(49.0)  # stored at 2 s, in the second round
        assert cache.statistics().loads == 49
        assert await cache.prewarm(range(50), load) == 0


async def test_prewarm_uses_the_default_concurrency() -> None:
    """Without `concurrency`, prewarm_concurrency bounds the loads at once."""
    gate = Loader(gated=True)

    async def load(key: int) -> int:
        await gate()
        return key

    async with TieredCache(FakeLevel(), prewarm_concurrency=3) as cache:
        warming = asyncio.create_task(cache.prewarm(range(10), load))
        await wait_until(lambda: gate.calls == 3)
        await asyncio.sleep(0)
        assert gate.running == 3
        gate.release()
        assert await warming == 10
        assert gate.peak == 3


async def test_prewarm_raises_the_failures_together() -> None:
    """Failed keys do not stop the others; their exceptions come back as one group."""

    async def load(key: int) -> int:
        await asyncio.sleep(0)
        if key % 3 == 0:
            raise ValueError(f"key {key}")
        return key

    async with TieredCache(FakeLevel()) as cache:
        with pytest.raises(ExceptionGroup, match=r"^prewarm: 4 key\(s\) failed to load") as info:
            await cache.prewarm(range(10), load, concurrency=2)
        assert sorted(str(error) for error in info.value.exceptions) == [
            "key 0",
            "key 3",
            "key 6",
            "key 9",
        ]
        assert await cache.get(1) == 1
        assert await cache.get(3) is MISS


# -- capacity ---------------------------------------------------------------------------------


async def test_set_capacity_by_index_and_by_name() -> None:
    """set_capacity passes the bounds given, and only those, to the chosen level."""
    l1, l2 = two_levels()
    async with TieredCache(l1, l2) as cache:
        for n in range(5):
            await cache.set(n, n)
        cache.set_capacity(0, max_entries=2)
        assert l1.calls[-1] == ("set_capacity", (2, ...))
        assert list(l1.data) == [3, 4]
        cache.set_capacity("l2", max_bytes=1000)
        assert l2.calls[-1] == ("set_capacity", (..., 1000))
        cache.set_capacity(-1, max_entries=None)
        assert l2.max_entries is None
        assert cache.statistics().levels[0].max_entries == 2


async def test_set_capacity_refuses_what_it_cannot_do() -> None:
    """Unknown or ambiguous names, bad indexes, no bounds, and levels without capacity."""
    twin = FakeLevel("same"), FakeLevel("same")
    async with TieredCache(*twin, SimpleMemoryCache()) as cache:
        with pytest.raises(ValueError, match=r"^level 'nope' is not a level name \(the levels"):
            cache.set_capacity("nope", max_entries=1)
        with pytest.raises(ValueError, match=r"^level 'same' names 2 levels: use an index$"):
            cache.set_capacity("same", max_entries=1)
        with pytest.raises(IndexError, match=r"^level 3 is out of range \(3 levels\)$"):
            cache.set_capacity(3, max_entries=1)
        with pytest.raises(TypeError, match=r"^level must be an int, not float$"):
            cache.set_capacity(1.0, max_entries=1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^set_capacity needs max_entries or max_bytes$"):
            cache.set_capacity(0)
        with pytest.raises(TypeError, match=r"^level 'aiocache.memory' \(AiocacheLevel\) has no"):
            cache.set_capacity(2, max_entries=1)
        with pytest.raises(ValueError, match=r"^max_entries must be >= 1"):
            cache.set_capacity(0, max_entries=0)


# -- the aiocache level ----------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_an_aiocache_cache_is_a_level(clock: VirtualClock) -> None:
    """SimpleMemoryCache behind a memory level: promotion, TTLs, None values, closing."""
    top = FakeLevel("top", clock=clock)
    backend = SimpleMemoryCache()
    below = AiocacheLevel(backend, name="shared", clock=clock)
    async with TieredCache(top, below, clock=clock) as cache:
        assert isinstance(below, CacheLevel)
        await cache.set("k", None, ttl=10.0)
        await cache.set("forever", "f")
        top.data.clear()
        await clock.sleep(4.0)
        assert await cache.get("k", default="miss") is None
        assert top.remaining("k") == pytest.approx(6.0)
        assert await cache.get("forever") == "f"
        assert top.remaining("forever") is None
        await clock.sleep(6.0)
        top.data.clear()
        assert await cache.get("k") is MISS  # aiocache expired it too
        stats = cache.statistics().levels[1]
        assert (stats.name, stats.hits, stats.misses, stats.sets) == ("shared", 2, 1, 2)
        assert stats.hit_latency_p50 is not None
    assert below.closed


@pytest.mark.virtual_time
async def test_aiocache_level_reports_remaining_ttl_and_batches(clock: VirtualClock) -> None:
    """get_entry gives the seconds left; set_many and get_many round trip; delete and clear."""
    level = AiocacheLevel(SimpleMemoryCache(), clock=clock)
    assert level.name == "aiocache.memory"
    await level.set_many([("a", 1, 5.0), ("b", 2, None), ("c", 3, 5.0)])
    await clock.sleep(2.0)
    entries = await level.get_many(["a", "b", "missing"])
    assert entries["a"].value == 1
    assert entries["a"].ttl == pytest.approx(3.0)
    assert entries["b"].ttl is None
    assert "missing" not in entries
    assert await level.delete("a") is True
    assert await level.delete("a") is False
    await level.clear()
    assert await level.get_entry("b") is None
    await level.aclose()
    with pytest.raises(CacheClosed):
        await level.get_entry("b")
    await level.aclose()  # idempotent


async def test_aiocache_level_with_json_and_foreign_values() -> None:
    """A JSON serializer round-trips the envelope; values written by others have no expiry."""
    backend = SimpleMemoryCache(serializer=JsonSerializer())
    level = AiocacheLevel(backend)
    await level.set("k", {"a": [1, 2]}, ttl=30.0)
    entry = await level.get_entry("k")
    assert entry is not None
    assert entry.value == {"a": [1, 2]}
    assert entry.ttl is not None
    assert 29.0 < entry.ttl <= 30.0
    await backend.set("plain", "written by another client")
    assert await level.get_entry("plain") == ("written by another client", None)
    await level.aclose()


def test_aiocache_level_refuses_bad_arguments() -> None:
    """A non-aiocache object, a str-only serializer and a bad name are refused."""
    with pytest.raises(TypeError, match=r"^cache must be an aiocache cache, not dict$"):
        AiocacheLevel({})
    with pytest.raises(ValueError, match=r"^cache must have a serializer that keeps structure"):
        AiocacheLevel(SimpleMemoryCache(serializer=StringSerializer()))
    with pytest.raises(TypeError, match=r"^name must be a str, not int$"):
        AiocacheLevel(SimpleMemoryCache(), name=1)  # type: ignore[arg-type]


# -- statistics, close and misuse ------------------------------------------------------------


async def test_statistics_is_a_frozen_snapshot() -> None:
    """statistics() returns per-level figures and the tier's counters, frozen."""
    async with TieredCache(*two_levels()) as cache:
        stats = cache.statistics()
        assert isinstance(stats, TieredStatistics)
        assert [level.name for level in stats.levels] == ["l1", "l2"]
        assert stats.hit_ratio == 0.0
        with pytest.raises(AttributeError):
            stats.hits = 3  # type: ignore[misc]


async def test_aclose_closes_levels_and_refuses_later_use() -> None:
    """After aclose, every call raises CacheClosed; aclose is idempotent; levels are closed."""
    l1, l2 = two_levels()
    cache = TieredCache(l1, l2)
    assert "l1 > l2" in repr(cache)
    await cache.aclose()
    await cache.aclose()
    assert cache.closed
    assert l1.closed
    assert l2.closed
    assert l1.ops("aclose") == [None]
    assert "closed" in repr(cache)
    for call in (
        cache.get("k"),
        cache.set("k", 1),
        cache.delete("k"),
        cache.clear(),
        cache.get_or_load("k", Loader()),
        cache.prewarm(["k"], lambda key: Loader()()),
    ):
        with pytest.raises(CacheClosed, match=r"^Cannot use a TieredCache that has been closed\.$"):
            await call
    with pytest.raises(CacheClosed):
        async with cache:
            pass


async def test_entering_the_tier_enters_its_levels() -> None:
    """async with enters each level; if one fails to open, every level is closed."""
    l1, l2 = two_levels()
    async with TieredCache(l1, l2):
        assert l1.ops("aenter") == [None]
        assert l2.ops("aenter") == [None]
    l1, l2 = two_levels()
    l2.fail = {"aenter"}
    cache = TieredCache(l1, l2)
    with pytest.raises(LevelFailure, match=r"^l2.aenter failed$"):
        async with cache:
            pass
    assert cache.closed
    assert l1.closed
    assert l2.closed


async def test_aclose_cancels_loads_in_flight() -> None:
    """Callers waiting on a load when the tier closes get CacheClosed, not a bare cancel."""
    loader = Loader(gated=True)
    cache = TieredCache(FakeLevel())
    waiters = [asyncio.create_task(cache.get_or_load("k", loader)) for _ in range(3)]
    await wait_until(lambda: loader.calls == 1)
    await cache.aclose()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(result, CacheClosed) for result in results)
    assert cache.statistics().in_flight == 0


@pytest.mark.virtual_time
async def test_aclose_cancels_background_refreshes(clock: VirtualClock) -> None:
    """A refresh in flight is cancelled by aclose, and nothing is left running."""
    cache = TieredCache(FakeLevel(clock=clock), stale_while_revalidate=5.0, clock=clock)
    await cache.set("k", "old", ttl=1.0)
    await clock.sleep(2.0)
    refresh = Loader(gated=True)
    assert await cache.get_or_load("k", refresh) == "old"
    await wait_until(lambda: refresh.calls == 1)
    await cache.aclose()
    assert cache.statistics().in_flight == 0
    assert refresh.running == 0


async def test_aclose_closes_every_level_even_if_one_fails() -> None:
    """A level failing to close does not keep the others open; its error is raised."""
    l1, l2 = two_levels()
    l1.fail = {"aclose"}
    cache = TieredCache(l1, l2)
    with pytest.raises(LevelFailure, match=r"^l1.aclose failed$"):
        await cache.aclose()
    assert l2.closed


@pytest.mark.allow_loop_errors
async def test_an_interrupted_aclose_counts_the_writes_it_dropped(
    loop_errors: list[dict[str, Any]],
) -> None:
    """aclose cancelled mid-flush: the unwritten writes are counted and reported, flush waiters
    are released, and the levels are still closed."""
    l1, l2 = two_levels()
    cache = TieredCache(l1, l2, write="behind", write_behind_delay=60.0)
    l2.gate = asyncio.Event()
    await cache.set("k", 1)
    closing = asyncio.create_task(cache.aclose())
    await wait_until(lambda: l2.ops("set_many") == [["k"]])
    flushing = asyncio.create_task(cache.flush())
    await asyncio.sleep(0)
    closing.cancel()
    await asyncio.wait([closing])
    await flushing
    assert l1.closed
    assert l2.closed
    stats = cache.statistics()
    assert (stats.write_behind_errors, stats.write_behind_pending) == (1, 0)
    assert "1 write-behind writes were not written" in loop_errors[0]["message"]


async def test_aclose_cancelled_while_loads_end_has_written_behind_already() -> None:
    """aclose cancelled while it waits for a cancelled load to end: write-behind was flushed
    and its batcher closed before that wait (no write can join it once the tier is
    closed), so nothing is lost, and the levels are still closed."""
    l1, l2 = two_levels()
    cache = TieredCache(l1, l2, write="behind", write_behind_delay=60.0)
    await cache.set("k", 1)
    cleanup = asyncio.Event()
    started = asyncio.Event()

    async def slow_to_cancel() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await cleanup.wait()  # cleanup that outlasts the cancellation
        return "never"

    loading = asyncio.create_task(cache.get_or_load("other", slow_to_cancel))
    await started.wait()
    closing = asyncio.create_task(cache.aclose())
    owned = batcher(cache)
    assert owned is not None
    await wait_until(lambda: owned.closed and owned.in_flight == 0)
    assert l2.data["k"][0] == 1
    await asyncio.sleep(0)
    assert not closing.done()  # waiting for the load's cleanup
    closing.cancel()
    await asyncio.wait([closing])
    cleanup.set()
    assert isinstance((await asyncio.gather(loading, return_exceptions=True))[0], CacheClosed)
    assert [l1.closed, l2.closed] == [True, True]
    stats = cache.statistics()
    assert (stats.write_behind_errors, stats.write_behind_pending) == (0, 0)
    assert stats.write_behind_written == 1


async def test_aclose_writes_the_writes_that_waited_for_room() -> None:
    """Writes still waiting for room when the tier closes are written by aclose, after the
    batches already queued; their writers return normally."""
    l1, l2 = two_levels()
    cache = TieredCache(l1, l2, write="behind", write_behind_batch=1, write_behind_delay=60.0)
    l2.gate = asyncio.Event()
    await cache.set("a", 1)  # being written, blocked on l2
    await wait_until(lambda: l2.ops("set_many") == [["a"]])
    for key in "bcde":  # three batches queued behind it, and the next one full
        await cache.set(key, 2)
    waiting = [asyncio.create_task(cache.set(key, 3)) for key in "fg"]
    await wait_until(lambda: cache.statistics().write_behind_pending == 7)
    closing = asyncio.create_task(cache.aclose())
    await wait_until(lambda: cache.closed)
    l2.gate.set()
    await closing
    assert await asyncio.gather(*waiting) == [True, True]
    assert l2.ops("set_many") == [["a"], ["b"], ["c"], ["d"], ["e"], ["f", "g"]]
    assert [l2.data[key][0] for key in "abcdefg"] == [1, 2, 2, 2, 2, 3, 3]
    stats = cache.statistics()
    assert (stats.write_behind_written, stats.write_behind_errors) == (7, 0)
    assert stats.write_behind_pending == 0


@pytest.mark.allow_loop_errors
async def test_an_interrupted_aclose_counts_every_write_it_dropped(
    loop_errors: list[dict[str, Any]],
) -> None:
    """aclose cancelled while a batch is written, three are queued behind it, the next one is
    full and a write waits for room: all six writes are counted once, reported once, and
    nothing is left pending."""
    l1, l2 = two_levels()
    cache = TieredCache(l1, l2, write="behind", write_behind_batch=1, write_behind_delay=60.0)
    l2.gate = asyncio.Event()
    await cache.set("a", 1)
    await wait_until(lambda: l2.ops("set_many") == [["a"]])
    for key in "bcde":
        await cache.set(key, 2)
    waiting = asyncio.create_task(cache.set("f", 3))
    await wait_until(lambda: cache.statistics().write_behind_pending == 6)
    flushing = asyncio.create_task(cache.flush())
    closing = asyncio.create_task(cache.aclose())
    await wait_until(lambda: cache.closed)
    await asyncio.sleep(0)
    closing.cancel()
    await asyncio.wait([closing])
    assert closing.cancelled()
    assert await waiting is True  # queued at the top; the loss is counted, not raised
    await flushing  # released, though the batch it waited for was never sent
    assert l2.data == {}
    assert [l1.closed, l2.closed] == [True, True]
    stats = cache.statistics()
    assert (stats.write_behind_errors, stats.write_behind_pending) == (6, 0)
    assert stats.write_behind_written == 0
    assert len(loop_errors) == 1
    assert "6 write-behind writes were not written" in loop_errors[0]["message"]
    owned = batcher(cache)
    assert owned is not None
    assert owned.closed
    assert owned.statistics().outstanding == 0


async def test_a_write_behind_set_caught_by_aclose_says_so() -> None:
    """A set still writing the top level when the tier closes is not queued for a stopped
    writer: it raises CacheClosed and is counted, never silently lost."""
    l1, l2 = two_levels()
    cache = TieredCache(l1, l2, write="behind", write_behind_delay=60.0)
    await cache.set("early", 1)  # starts the write-behind task
    l1.gate, l1.gated = asyncio.Event(), {"set"}
    late = asyncio.create_task(cache.set("late", 2))
    await wait_until(lambda: ("set", "late") in l1.calls)
    await cache.aclose()
    l1.gate.set()
    with pytest.raises(CacheClosed):
        await late
    stats = cache.statistics()
    assert stats.write_behind_errors == 1
    assert stats.write_behind_pending == 0
    assert "late" not in l2.data
    assert l2.data["early"][0] == 1


async def test_prewarm_overtaken_by_aclose_raises_cache_closed() -> None:
    """The tier closing under a prewarm ends it with CacheClosed itself, not in a group."""
    l1, l2 = two_levels()
    cache = TieredCache(l1, l2)
    started = asyncio.Event()

    async def slow(key: int) -> int:
        started.set()
        await asyncio.Event().wait()
        return key

    warming = asyncio.create_task(cache.prewarm(range(100), slow, concurrency=4))
    await started.wait()
    await cache.aclose()
    with pytest.raises(CacheClosed):
        await warming


async def test_a_second_aclose_returns_once_the_levels_are_closed() -> None:
    """aclose called while another aclose runs waits for it instead of returning at once."""
    l1, l2 = two_levels()
    cache = TieredCache(l1, l2)
    cleanup = asyncio.Event()
    started = asyncio.Event()

    async def slow_to_cancel() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await cleanup.wait()
        return "never"

    loading = asyncio.create_task(cache.get_or_load("k", slow_to_cancel))
    await started.wait()
    first = asyncio.create_task(cache.aclose())
    await wait_until(lambda: cache.closed)
    second = asyncio.create_task(cache.aclose())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not second.done()
    assert not l1.closed
    cleanup.set()
    await asyncio.gather(first, second)
    assert [l1.closed, l2.closed] == [True, True]
    with pytest.raises(CacheClosed):
        await loading


async def test_a_loader_that_is_not_callable_is_refused() -> None:
    """get_or_load and prewarm name the loader when it cannot be called."""
    async with TieredCache(FakeLevel()) as cache:
        with pytest.raises(TypeError, match=r"^loader must be callable, not str$"):
            await cache.get_or_load("k", "load")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^loader must be callable, not NoneType$"):
            await cache.prewarm(["k"], None)  # type: ignore[arg-type]
        assert cache.statistics().loads == 0


async def test_dropping_unflushed_writes_warns() -> None:
    """A tier dropped with write-behind writes pending warns with ResourceWarning; once
    closed (the writes flushed), it does not."""
    cache = TieredCache(*two_levels(), write="behind", write_behind_delay=60.0)
    await cache.set("k", 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache.__del__()
    assert [w.category for w in caught] == [ResourceWarning]
    await cache.aclose()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache.__del__()
    assert caught == []
    del cache
    gc.collect()


# -- with the real levels: MemoryCache over DiskCache -----------------------------------------


def memory_over_disk(directory: Path, **kwargs: Any) -> TieredCache:
    return TieredCache(MemoryCache(max_entries=100), DiskCache(directory), **kwargs)


async def test_memory_over_disk_promotes_and_survives_a_restart(tmp_path: Path) -> None:
    """Values reach the disk, come back after a restart, and are promoted with their TTL left."""
    async with memory_over_disk(tmp_path / "cache") as cache:
        assert await cache.set("k", {"v": 1}, ttl=60.0) is True
        assert await cache.get_or_load("loaded", Loader(None)) is None
        memory, disk = cache.levels
        assert isinstance(disk, DiskCache)
        entry = await disk.get_entry("k")
        assert entry is not None
        assert entry.ttl is not None
        assert 59.0 < entry.ttl <= 60.0
    async with memory_over_disk(tmp_path / "cache") as cache:
        memory = cache.levels[0]
        assert await memory.get_entry("k") is None
        assert await cache.get("k") == {"v": 1}
        promoted = await memory.get_entry("k")
        assert promoted is not None
        assert promoted.ttl is not None
        assert promoted.ttl <= 60.0
        assert await cache.get("loaded", default="miss") is None
        stats = cache.statistics()
        assert stats.promotions == 2
        assert [level.name for level in stats.levels] == ["memory", "disk"]
        assert stats.levels[1].hits == 2
        assert stats.levels[1].hit_latency_p50 is not None


async def test_memory_over_disk_single_flight(tmp_path: Path) -> None:
    """Many callers, one load, even with the disk lookups yielding to the loop."""
    loader = Loader("v", gated=True)
    async with memory_over_disk(tmp_path / "cache") as cache:
        callers = [asyncio.create_task(cache.get_or_load("k", loader)) for _ in range(200)]
        # The disk answers from its own threads: allow it many loop passes.
        await wait_until(lambda: cache.statistics().misses == 200, max_yields=1_000_000)
        loader.release()
        assert await asyncio.gather(*callers) == ["v"] * 200
        assert loader.calls == 1
        assert await cache.levels[1].get_entry("k") == ("v", None)


async def test_memory_over_disk_write_behind_flushes_on_close(tmp_path: Path) -> None:
    """Write-behind batches reach the disk by aclose at the latest."""
    cache = memory_over_disk(tmp_path / "cache", write="behind", write_behind_delay=60.0)
    async with cache:
        for n in range(300):
            await cache.set(n, str(n))
        assert cache.statistics().levels[0].entries == 100
    assert cache.statistics().write_behind_written == 300
    async with DiskCache(tmp_path / "cache") as disk:
        assert await disk.count() == 300
        assert await disk.get(299) == "299"


async def test_memory_over_disk_capacity(tmp_path: Path) -> None:
    """set_capacity reaches the memory level by name and the disk level by index."""
    async with memory_over_disk(tmp_path / "cache") as cache:
        for n in range(50):
            await cache.set(n, n)
        cache.set_capacity("memory", max_entries=10)
        cache.set_capacity(1, max_bytes=1 << 20)
        stats = cache.statistics()
        assert stats.levels[0].max_entries == 10
        assert stats.levels[0].entries <= 10
        assert stats.levels[1].max_bytes == 1 << 20
        with pytest.raises(ValueError, match=r"^max_entries is not supported by DiskCache"):
            cache.set_capacity("disk", max_entries=10)
