"""Property tests: random acquire/release/optimize/recycle/close sequences on the pools.

Whatever the sequence, nothing is handed out twice while in use, free lists stay
within their capacity and the capacity within its bound, and the statistics add
up to what was done (a model counts every operation).
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from asyncperf.pools import BufferPool, MemoryPoolClosed, ObjectPool, PooledBuffer, ReleaseError
from asyncperf.testing import VirtualClock

SIZE_CLASSES = (16, 64, 256)
MAX_PER_CLASS = {16: 3, 64: 2, 256: 1}

# Sizes around each class boundary, and above the largest (served unpooled).
sizes = st.sampled_from([0, 1, 15, 16, 17, 63, 64, 65, 200, 256, 257, 1000])

SETTINGS = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def size_class_of(n: int) -> int | None:
    return next((size for size in SIZE_CLASSES if n <= size), None)


class BufferPoolMachine(RuleBasedStateMachine):
    """Drives a BufferPool and a model of what it should count."""

    debug = False

    def __init__(self) -> None:
        super().__init__()
        self.clock = VirtualClock()
        self.pool = BufferPool(
            SIZE_CLASSES, max_per_class=MAX_PER_CLASS, debug=self.debug, clock=self.clock
        )
        self.live: list[PooledBuffer] = []
        self.acquires: Counter[int | None] = Counter()
        self.releases: Counter[int | None] = Counter()
        self.closed = False

    @precondition(lambda self: not self.closed)
    @rule(n=sizes)
    def acquire(self, n: int) -> None:
        buffer = self.pool.acquire(n)
        assert len(buffer.view) == n
        assert buffer.pooled == (size_class_of(n) is not None)
        # Nothing handed out twice: no buffer in use shares this one's memory.
        memory = buffer.view.obj
        assert all(other.view.obj is not memory for other in self.live)
        self.live.append(buffer)
        self.acquires[size_class_of(n)] += 1

    @precondition(lambda self: self.live)
    @rule(data=st.data(), twice=st.booleans())
    def release(self, data: st.DataObject, twice: bool) -> None:
        index = data.draw(st.integers(0, len(self.live) - 1))
        buffer = self.live.pop(index)
        if data.draw(st.booleans()):
            buffer.release()
        else:
            with buffer:
                pass
        if twice:
            buffer.release()  # idempotent: counted once
        self.releases[size_class_of(buffer.size)] += 1
        with pytest.raises(ValueError, match="released"):
            _ = buffer.view

    @rule(headroom=st.sampled_from([0.0, 0.25, 1.0]), floor=st.integers(0, 3))
    def optimize(self, headroom: float, floor: int) -> None:
        before = {c.size: c for c in self.pool.statistics().classes}
        for change in self.pool.optimize(headroom=headroom, floor=floor):
            assert change.size_class is not None
            bound = before[change.size_class].max_capacity
            wanted = max(math.ceil(change.high_water * (1 + headroom)), floor)
            assert change.new_capacity == min(wanted, bound)
            assert change.trimmed == max(0, before[change.size_class].free - change.new_capacity)

    @rule(seconds=st.sampled_from([0.0, 1.0, 5.0]), older_than=st.sampled_from([0.0, 2.0, 10.0]))
    def recycle(self, seconds: float, older_than: float) -> None:
        self.clock.advance(seconds)
        free_before = self.pool.statistics().free
        freed = self.pool.recycle_unused(older_than=older_than)
        assert 0 <= freed <= free_before
        if older_than == 0.0:
            assert self.pool.statistics().free == 0

    @precondition(lambda self: not self.closed)
    @rule(dice=st.integers(0, 7))
    def close(self, dice: int) -> None:
        if dice:  # close rarely, or most runs would end early
            return
        self.pool.close()
        self.closed = True
        with pytest.raises(MemoryPoolClosed):
            self.pool.acquire(1)

    @invariant()
    def statistics_add_up(self) -> None:
        stats = self.pool.statistics()
        for c in stats.classes:
            assert c.hits + c.misses == self.acquires[c.size]
            assert c.released == self.releases[c.size]
            assert c.in_use == self.acquires[c.size] - self.releases[c.size]
            assert 0 <= c.free <= c.capacity <= c.max_capacity == MAX_PER_CLASS[c.size]
            assert c.bytes_held == c.free * c.size
            assert c.high_water >= c.in_use
            assert c.quarantined == 0  # no slice outlives a release here
            if not self.closed:
                kept = c.released - c.dropped_on_release - c.quarantined
                assert c.free == kept - c.hits - c.recycled - c.trimmed
            else:
                assert c.free == 0
        assert stats.oversize_acquires == self.acquires[None]
        assert stats.oversize_in_use == self.acquires[None] - self.releases[None]
        assert stats.in_use == len(self.live)
        assert stats.acquires == sum(self.acquires.values())

    @invariant()
    def debug_mode_knows_what_is_out(self) -> None:
        if self.debug:
            assert len(self.pool.leaks()) == len(self.live)

    def teardown(self) -> None:
        for buffer in self.live:
            buffer.release()
        assert self.pool.statistics().in_use == 0


class DebugBufferPoolMachine(BufferPoolMachine):
    debug = True


class Item:
    """A pooled object with an identity and a dirty flag that reset must clear."""

    def __init__(self) -> None:
        self.dirty = False


def reset_item(item: Item) -> None:
    item.dirty = False


class ObjectPoolMachine(RuleBasedStateMachine):
    """Drives an ObjectPool, with misuse (double and foreign releases) mixed in."""

    debug = False

    def __init__(self) -> None:
        super().__init__()
        self.clock = VirtualClock()
        self.disposed: list[Item] = []
        self.pool = ObjectPool(
            Item,
            reset_item,
            max_size=3,
            dispose=self.disposed.append,
            debug=self.debug,
            clock=self.clock,
        )
        self.live: list[Item] = []
        self.released: list[Item] = []
        self.acquires = 0
        self.releases = 0

    @rule()
    def acquire(self) -> None:
        item = self.pool.acquire()
        assert not item.dirty  # reset ran before it was kept
        assert all(item is not other for other in self.live)  # never handed out twice
        assert all(item is not gone for gone in self.disposed)
        item.dirty = True
        self.live.append(item)
        self.acquires += 1

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        item = self.live.pop(data.draw(st.integers(0, len(self.live) - 1)))
        self.pool.release(item)
        self.released.append(item)
        self.releases += 1

    @precondition(lambda self: self.released)
    @rule(data=st.data())
    def release_again(self, data: st.DataObject) -> None:
        item = data.draw(st.sampled_from(self.released))
        if any(item is other for other in self.live):
            return  # taken again since: releasing it now would be legitimate
        with pytest.raises(ReleaseError):
            self.pool.release(item)

    @rule()
    def release_a_stranger(self) -> None:
        with pytest.raises(ReleaseError):
            self.pool.release(Item())

    @rule(headroom=st.sampled_from([0.0, 0.5]), floor=st.integers(0, 2))
    def optimize(self, headroom: float, floor: int) -> None:
        self.pool.optimize(headroom=headroom, floor=floor)

    @rule(seconds=st.sampled_from([0.0, 3.0]), older_than=st.sampled_from([0.0, 2.0]))
    def recycle(self, seconds: float, older_than: float) -> None:
        self.clock.advance(seconds)
        self.pool.recycle_unused(older_than=older_than)

    @invariant()
    def statistics_add_up(self) -> None:
        stats = self.pool.statistics()
        assert stats.hits + stats.misses == self.acquires
        assert stats.released == self.releases
        assert stats.in_use == len(self.live) == self.acquires - self.releases
        assert 0 <= stats.free <= stats.capacity <= stats.max_size == 3
        assert stats.free == (
            stats.released
            - stats.dropped_on_release
            - stats.reset_failures
            - stats.hits
            - stats.recycled
            - stats.trimmed
        )
        # Every object let go was disposed exactly once, and none is still pooled or out.
        let_go = stats.dropped_on_release + stats.recycled + stats.trimmed
        assert len(self.disposed) == let_go
        assert len({id(item) for item in self.disposed}) == len(self.disposed)
        if self.debug:
            assert len(self.pool.leaks()) == len(self.live)


class DebugObjectPoolMachine(ObjectPoolMachine):
    debug = True


TestBufferPool = BufferPoolMachine.TestCase
TestBufferPool.settings = SETTINGS
TestDebugBufferPool = DebugBufferPoolMachine.TestCase
TestDebugBufferPool.settings = SETTINGS
TestObjectPool = ObjectPoolMachine.TestCase
TestObjectPool.settings = SETTINGS
TestDebugObjectPool = DebugObjectPoolMachine.TestCase
TestDebugObjectPool.settings = SETTINGS
