"""Memory pools: BufferPool and ObjectPool — reuse, bounds, statistics, optimize and
recycle on a virtual clock, socket/file/stream reads, debug mode (use after release,
leaks with the traceback of the acquire), assert_no_leaks, closing and bad input."""

from __future__ import annotations

import asyncio
import inspect
import io
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from asyncperf._errors import AsyncPerfError, ClosedError
from asyncperf.pools import (
    DEFAULT_SIZE_CLASSES,
    BufferPool,
    BufferReleasedError,
    MemoryPoolClosed,
    ObjectPool,
    PooledBuffer,
    PoolLeak,
    ReleaseError,
)
from asyncperf.testing import VirtualClock
from asyncperf.testing._leaks_pool import assert_no_leaks

KIB = 1024


def here() -> int:
    """The line number of the caller: where a test took a buffer."""
    frame = inspect.currentframe()
    assert frame is not None
    assert frame.f_back is not None
    return frame.f_back.f_lineno


@pytest.fixture
def pool_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger="asyncperf.pools"):
        yield caplog


def check_buffer_accounting(pool: BufferPool) -> None:
    """Every counter of every class agrees with the others."""
    stats = pool.statistics()
    for c in stats.classes:
        assert c.in_use == c.hits + c.misses - c.released
        # A buffer enters the free list on a kept release and leaves it on a hit,
        # a recycle or a trim (close empties it without counting).
        if not stats.closed:
            kept = c.released - c.dropped_on_release - c.quarantined
            assert c.free == kept - c.hits - c.recycled - c.trimmed
        assert 0 <= c.free <= c.capacity <= c.max_capacity
        assert c.bytes_held == c.free * c.size
        assert c.high_water >= c.in_use
    assert stats.acquires == stats.hits + stats.misses + stats.oversize_acquires


# -- BufferPool: sizes, reuse, bounds ---------------------------------------------------


@pytest.mark.parametrize(
    ("n", "size_class"),
    [(0, 1024), (1, 1024), (1024, 1024), (1025, 4096), (5000, 16384), (262144, 262144)],
)
def test_acquire_takes_the_smallest_class_that_fits(n: int, size_class: int) -> None:
    """The view is exactly n bytes of a buffer of the smallest class holding n."""
    pool = BufferPool()
    buffer = pool.acquire(n)
    assert len(buffer.view) == n == buffer.size
    assert buffer.capacity == size_class
    assert buffer.pooled
    assert isinstance(buffer.view.obj, bytearray)
    assert len(buffer.view.obj) == size_class
    buffer.release()
    (used,) = [c for c in pool.statistics().classes if c.misses]
    assert used.size == size_class


def test_with_gives_a_writable_view_and_returns_the_buffer() -> None:
    """The with-block yields the memoryview; on exit the buffer is pooled and reused."""
    pool = BufferPool(size_classes=(1024, 4096))
    with pool.acquire(3000) as view:
        assert isinstance(view, memoryview)
        assert not view.readonly
        view[:5] = b"hello"
        first = view.obj
    again = pool.acquire(4000)
    assert again.view.obj is first  # the same bytearray, not a new one
    assert bytes(again.view[:5]) == b"hello"  # pooled buffers are not cleared
    again.release()
    stats = pool.statistics()
    assert (stats.hits, stats.misses, stats.acquires) == (1, 1, 2)
    assert stats.classes[1].released == 2
    check_buffer_accounting(pool)


def test_most_recently_released_buffer_is_reused_first() -> None:
    pool = BufferPool(size_classes=(64,))
    a, b = pool.acquire(64), pool.acquire(64)
    a_obj, b_obj = a.view.obj, b.view.obj
    a.release()
    b.release()
    assert pool.acquire(64).view.obj is b_obj
    assert pool.acquire(64).view.obj is a_obj


def test_release_is_idempotent() -> None:
    """A second release (or leaving a with after an explicit release) counts nothing."""
    pool = BufferPool()
    buffer = pool.acquire(100)
    assert [buffer.released] == [False]
    buffer.release()
    buffer.release()
    assert buffer.released
    with pool.acquire(100) as _view:
        pass
    stats = pool.statistics()
    assert stats.classes[0].released == 2
    assert stats.free == 1
    assert stats.in_use == 0
    check_buffer_accounting(pool)


def test_view_after_release_raises_even_in_normal_mode() -> None:
    """The handle refuses to give out its view once released."""
    pool = BufferPool()
    buffer = pool.acquire(10)
    buffer.release()
    with pytest.raises(BufferReleasedError, match="released"):
        _ = buffer.view
    with pytest.raises(BufferReleasedError), buffer:
        pass
    assert issubclass(BufferReleasedError, ValueError)
    assert issubclass(BufferReleasedError, AsyncPerfError)


def test_oversize_requests_are_served_unpooled_and_counted() -> None:
    pool = BufferPool(size_classes=(1024, 4096))
    big = pool.acquire(10_000)
    assert not big.pooled
    assert len(big.view) == big.capacity == 10_000
    stats = pool.statistics()
    assert (stats.oversize_acquires, stats.oversize_in_use, stats.oversize_bytes) == (1, 1, 10_000)
    assert stats.in_use == 1
    assert stats.hits == stats.misses == 0
    assert stats.acquires == 1
    big.release()
    big.release()
    stats = pool.statistics()
    assert stats.oversize_in_use == 0
    assert stats.free == 0  # never pooled
    assert "unpooled" in repr(big)
    check_buffer_accounting(pool)


def test_free_list_is_bounded_and_drops_are_counted() -> None:
    """A class never holds more than max_per_class free buffers; the rest are dropped."""
    pool = BufferPool(size_classes=(1024,), max_per_class=2)
    buffers = [pool.acquire(1000) for _ in range(5)]
    assert len({id(b.view.obj) for b in buffers}) == 5
    for buffer in buffers:
        buffer.release()
    (c,) = pool.statistics().classes
    assert (c.free, c.dropped_on_release, c.released, c.in_use) == (2, 3, 5, 0)
    assert c.high_water == 5
    assert c.bytes_held == 2 * 1024
    check_buffer_accounting(pool)


def test_max_per_class_zero_pools_nothing() -> None:
    pool = BufferPool(max_per_class=0)
    for _ in range(3):
        with pool.acquire(100):
            pass
    stats = pool.statistics()
    assert (stats.hits, stats.misses, stats.free) == (0, 3, 0)
    assert stats.classes[0].dropped_on_release == 3


def test_max_per_class_per_size_class() -> None:
    pool = BufferPool(size_classes=(10, 20), max_per_class={10: 1, 20: 3})
    assert [c.capacity for c in pool.statistics().classes] == [1, 3]
    assert [c.max_capacity for c in pool.statistics().classes] == [1, 3]


def test_defaults_and_repr() -> None:
    pool = BufferPool()
    assert pool.size_classes == DEFAULT_SIZE_CLASSES == (1024, 4096, 16384, 65536, 262144)
    assert pool.name == "buffers"
    assert not pool.debug
    assert not pool.closed
    buffer = pool.acquire(5000)
    assert "5000 bytes" in repr(buffer)
    assert "in use" in repr(buffer)
    assert "1 in use" in repr(pool)
    buffer.release()
    assert "released" in repr(buffer)
    assert "1 free (16384 bytes)" in repr(pool)


# -- BufferPool: bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"size_classes": ()}, ValueError, "size_classes"),
        ({"size_classes": (4096, 1024)}, ValueError, "size_classes must be strictly increasing"),
        ({"size_classes": (1024, 1024)}, ValueError, "size_classes must be strictly increasing"),
        ({"size_classes": (0, 1024)}, ValueError, "size_classes must be >= 1"),
        ({"size_classes": (-5,)}, ValueError, "size_classes"),
        ({"size_classes": (1.5, 1024)}, TypeError, "size_classes must be an int"),
        ({"size_classes": 1024}, TypeError, "size_classes must be a sequence"),
        ({"size_classes": "1024"}, TypeError, "size_classes must be a sequence"),
        ({"max_per_class": -1}, ValueError, "max_per_class must be >= 0"),
        ({"max_per_class": 2.0}, TypeError, "max_per_class must be an int"),
        ({"max_per_class": {1024: 1}}, ValueError, "max_per_class has no entry for size class"),
        ({"max_per_class": {7: 1}}, ValueError, "max_per_class names 7"),
        ({"debug": 1}, TypeError, "debug must be a bool"),
        ({"clock": 5}, TypeError, "clock must be a Clock"),
        ({"name": 5}, TypeError, "name must be a str"),
    ],
)
def test_buffer_pool_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        BufferPool(**kwargs)


@pytest.mark.parametrize(
    ("n", "error"), [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("10", TypeError)]
)
def test_acquire_bad_size(n: Any, error: type[Exception]) -> None:
    pool = BufferPool()
    with pytest.raises(error, match=r"^n must"):
        pool.acquire(n)
    assert pool.statistics().acquires == 0


def test_optimize_and_recycle_bad_arguments() -> None:
    pool = BufferPool()
    with pytest.raises(ValueError, match="headroom must be >= 0"):
        pool.optimize(headroom=-0.5)
    with pytest.raises(ValueError, match="floor must be >= 0"):
        pool.optimize(floor=-1)
    with pytest.raises(TypeError, match="floor must be an int"):
        pool.optimize(floor=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="older_than must be >= 0"):
        pool.recycle_unused(-1)
    with pytest.raises(ValueError, match="older_than"):
        pool.recycle_unused(float("nan"))
    with pytest.raises(TypeError, match="older_than must be a number"):
        pool.recycle_unused("1")  # type: ignore[arg-type]


# -- BufferPool: optimize and recycle_unused ------------------------------------------------


def test_optimize_sizes_capacity_from_the_peak_and_trims() -> None:
    """capacity = ceil(peak * (1 + headroom)), within [floor, max_per_class]; extra freed."""
    pool = BufferPool(size_classes=(1024, 4096, 16384), max_per_class=10)
    # Peak of 3 in use for class 1024, 8 for 4096, none for 16384.
    for count, size in ((3, 1000), (8, 4000)):
        buffers = [pool.acquire(size) for _ in range(count)]
        for buffer in buffers:
            buffer.release()
    changes = {change.size_class: change for change in pool.optimize(headroom=0.25, floor=1)}
    assert changes[1024].old_capacity == 10
    assert changes[1024].new_capacity == 4  # ceil(3 * 1.25)
    assert (changes[1024].high_water, changes[1024].trimmed) == (3, 0)
    assert 4096 not in changes  # ceil(8 * 1.25) = 10: the bound already, nothing changed
    assert changes[16384].new_capacity == 1  # unused: the floor
    stats = pool.statistics()
    assert [c.capacity for c in stats.classes] == [4, 10, 1]
    check_buffer_accounting(pool)

    # A quiet window: the next optimize shrinks 4096 to the floor and frees the extra 7.
    with pool.acquire(4000):
        pass
    changes = {change.size_class: change for change in pool.optimize(headroom=0.25, floor=1)}
    assert changes[4096].high_water == 1
    assert changes[4096].new_capacity == 2  # ceil(1 * 1.25)
    assert changes[4096].trimmed == 6
    stats = pool.statistics()
    assert stats.classes[1].free == 2
    assert stats.classes[1].trimmed == 6
    assert stats.classes[1].high_water == 8  # the all-time mark stays
    check_buffer_accounting(pool)

    # Nothing changed since: nothing to report.
    pool.optimize(headroom=0.25, floor=1)
    assert pool.optimize(headroom=0.25, floor=1) == ()


def test_optimize_never_grows_past_max_per_class() -> None:
    pool = BufferPool(size_classes=(100,), max_per_class=3)
    buffers = [pool.acquire(100) for _ in range(50)]
    pool.optimize(headroom=1.0, floor=0)
    assert pool.statistics().classes[0].capacity == 3
    for buffer in buffers:
        buffer.release()
    assert pool.statistics().classes[0].free == 3
    pool.optimize(floor=0)  # window peak is still 50 (in use when the window started)
    pool.optimize(floor=0)  # now a window with nothing in use
    (c,) = pool.statistics().classes
    assert (c.capacity, c.free, c.trimmed) == (0, 0, 3)
    check_buffer_accounting(pool)


def test_recycle_unused_frees_buffers_idle_longer_than_given() -> None:
    """On a virtual clock: only buffers released long enough ago are freed."""
    clock = VirtualClock()
    pool = BufferPool(size_classes=(1024, 4096), clock=clock)
    old = [pool.acquire(1000), pool.acquire(1000), pool.acquire(4000)]
    recent = [pool.acquire(1000)]
    for buffer in old:
        buffer.release()
    clock.advance(10.0)
    for buffer in recent:
        buffer.release()
    clock.advance(2.0)
    assert pool.recycle_unused(older_than=5.0) == 3
    stats = pool.statistics()
    assert [c.free for c in stats.classes] == [1, 0]
    assert [c.recycled for c in stats.classes] == [2, 1]
    check_buffer_accounting(pool)
    assert pool.recycle_unused(older_than=5.0) == 0
    assert pool.recycle_unused(older_than=0) == 1
    assert pool.statistics().free == 0


def test_a_reused_buffer_counts_as_used_again() -> None:
    """A buffer taken and released again is not idle from its first release."""
    clock = VirtualClock()
    pool = BufferPool(size_classes=(64,), clock=clock)
    with pool.acquire(64):
        pass
    clock.advance(100.0)
    with pool.acquire(64):
        pass
    assert pool.recycle_unused(older_than=50.0) == 0


# -- BufferPool: reading into a buffer ------------------------------------------------------


def test_readinto_from_a_file() -> None:
    pool = BufferPool()
    source = io.BytesIO(b"x" * 3000)
    buffer = pool.acquire(2000)
    assert buffer.readinto(source) == 2000
    assert bytes(buffer.view) == b"x" * 2000
    assert buffer.readinto(source) == 1000
    buffer.release()


@pytest.mark.parametrize("debug", [False, True])
async def test_sock_recv_into_receives_straight_into_the_buffer(debug: bool) -> None:
    pool = BufferPool(debug=debug)
    left, right = socket.socketpair()
    with left, right:
        left.setblocking(False)
        right.setblocking(False)
        right.sendall(b"abcdef")
        buffer = pool.acquire(4)
        assert await buffer.sock_recv_into(left) == 4
        assert bytes(buffer.view) == b"abcd"
        buffer.release()
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(right, b"0123456789")
        right.shutdown(socket.SHUT_WR)
        buffer = pool.acquire(100)
        # fill=True keeps receiving until full or, as here, the peer closes.
        assert await buffer.sock_recv_into(left, fill=True) == 12
        assert bytes(buffer.view[:12]) == b"ef0123456789"
        buffer.release()
    # The loop kept no view of the buffer: debug mode pooled it again.
    assert pool.statistics().classes[0].quarantined == 0
    assert pool.statistics().free == 1


@pytest.mark.parametrize("debug", [False, True])
async def test_read_from_a_stream_reader(debug: bool) -> None:
    pool = BufferPool(debug=debug)
    reader = asyncio.StreamReader()
    reader.feed_data(b"hello ")
    reader.feed_data(b"world!")
    reader.feed_eof()
    buffer = pool.acquire(8)
    assert await buffer.read_from(reader) == 8
    assert bytes(buffer.view) == b"hello wo"
    buffer.release()
    buffer = pool.acquire(8)
    with pytest.raises(asyncio.IncompleteReadError) as raised:
        await buffer.read_from(reader)
    assert raised.value.partial == b"rld!"
    assert raised.value.expected == 8
    buffer.release()
    stats = pool.statistics()
    assert (stats.hits, stats.misses, stats.free, stats.classes[0].quarantined) == (1, 1, 1, 0)


async def test_read_from_without_exactly_returns_what_was_read() -> None:
    pool = BufferPool()
    reader = asyncio.StreamReader()
    reader.feed_data(b"abc")
    reader.feed_eof()
    buffer = pool.acquire(10)
    assert await buffer.read_from(reader, exactly=False) == 3
    assert bytes(buffer.view[:3]) == b"abc"
    buffer.release()


# -- BufferPool: debug mode, leaks, closing -------------------------------------------------


def test_debug_use_after_release_raises() -> None:
    """In debug mode the view is released with the buffer: any later use raises."""
    pool = BufferPool(debug=True)
    with pool.acquire(100) as view:
        view[0] = 1
    with pytest.raises(ValueError, match="released"):
        view[0] = 2
    with pytest.raises(ValueError, match="released"):
        bytes(view)
    buffer = pool.acquire(10)
    buffer.release()
    with pytest.raises(BufferReleasedError, match=r"released at:(.|\n)*test_pools\.py"):
        _ = buffer.view


def test_debug_does_not_repool_a_buffer_with_a_live_slice(
    pool_logs: pytest.LogCaptureFixture,
) -> None:
    """A slice outliving the release would share memory with the next user: quarantined."""
    pool = BufferPool(debug=True)
    buffer = pool.acquire(100)
    kept_slice = buffer.view[:10]
    first = buffer.view.obj
    buffer.release()
    assert "still alive" in pool_logs.text
    (c, *_) = pool.statistics().classes
    assert (c.quarantined, c.free, c.in_use, c.released) == (1, 0, 0, 1)
    other = pool.acquire(100)
    assert other.view.obj is not first
    kept_slice[0] = 7  # writes only to the quarantined buffer
    assert other.view[0] == 0
    other.release()
    assert pool.statistics().classes[0].free == 1
    check_buffer_accounting(pool)


def test_debug_leaks_report_where_each_buffer_was_taken() -> None:
    clock = VirtualClock(start=5.0)
    pool = BufferPool(debug=True, clock=clock, name="reads")
    kept = pool.acquire(5000)
    line = here() - 1
    unpooled = pool.acquire(1_000_000)
    with pool.acquire(10):
        pass
    leaks = pool.leaks()
    assert [leak.what for leak in leaks] == [
        "buffer of 5000 bytes (size class 16384)",
        "unpooled buffer of 1000000 bytes",
    ]
    first = leaks[0]
    assert isinstance(first, PoolLeak)
    assert first.pool == "reads"
    assert first.acquired_at == 5.0
    assert first.stack[-1].filename == __file__
    assert first.stack[-1].lineno == line
    assert first.stack[-1].name == "test_debug_leaks_report_where_each_buffer_was_taken"
    assert "never released" in str(first)
    assert f'{__file__}", line {line}' in first.format()
    kept.release()
    unpooled.release()
    assert pool.leaks() == ()


def test_leaks_needs_debug_mode() -> None:
    with pytest.raises(RuntimeError, match="debug=True"):
        BufferPool().leaks()
    with pytest.raises(RuntimeError, match="debug=True"):
        ObjectPool(dict).leaks()


def test_debug_close_reports_unreturned_buffers(pool_logs: pytest.LogCaptureFixture) -> None:
    pool = BufferPool(debug=True, name="uploads")
    buffer = pool.acquire(2000)
    line = here() - 1
    with pool.acquire(10):
        pass
    leaks = pool.close()
    assert len(leaks) == 1
    assert len(pool_logs.records) == 1
    assert "uploads: buffer of 2000 bytes (size class 4096) was never released" in pool_logs.text
    assert f"line {line}" in pool_logs.text
    assert pool.close() == ()  # idempotent, reports once
    assert len(pool_logs.records) == 1
    buffer.release()
    assert pool.statistics().in_use == 0


def test_normal_close_warns_with_the_count(pool_logs: pytest.LogCaptureFixture) -> None:
    pool = BufferPool()
    taken = [pool.acquire(10), pool.acquire(10**7)]
    assert pool.close() == ()
    assert "2 buffers were never released" in pool_logs.text
    for buffer in taken:
        buffer.release()
    with BufferPool() as clean, clean.acquire(10):
        pass
    assert clean.closed
    assert len(pool_logs.records) == 1


def test_closed_pool_refuses_acquire_and_drops_releases() -> None:
    pool = BufferPool(size_classes=(64,))
    out = pool.acquire(64)
    with pool.acquire(64):
        pass
    assert pool.statistics().free == 1
    pool.close()
    assert pool.closed
    stats = pool.statistics()
    assert stats.closed
    assert stats.free == 0
    assert stats.bytes_held == 0
    with pytest.raises(MemoryPoolClosed, match="closed"):
        pool.acquire(10)
    assert issubclass(MemoryPoolClosed, ClosedError)
    out.release()
    (c,) = pool.statistics().classes
    assert (c.in_use, c.free, c.dropped_on_release) == (0, 0, 1)


# -- assert_no_leaks ------------------------------------------------------------------------


def test_assert_no_leaks_passes_on_a_clean_pool() -> None:
    for pool in (BufferPool(), BufferPool(debug=True)):
        with pool.acquire(10):
            pass
        assert_no_leaks(pool)
    objects: ObjectPool[dict[str, int]] = ObjectPool(dict, debug=True)
    with objects.borrow():
        pass
    assert_no_leaks(objects)  # type: ignore[arg-type]


def test_assert_no_leaks_lists_each_leak_with_its_traceback() -> None:
    pool = BufferPool(debug=True)
    leaked = pool.acquire(300)
    line = here() - 1
    with pytest.raises(AssertionError) as raised:
        assert_no_leaks(pool)
    message = str(raised.value)
    assert "1 object(s) not released" in message
    assert "buffer of 300 bytes" in message
    assert f'{__file__}", line {line}' in message
    leaked.release()
    assert_no_leaks(pool)


def test_assert_no_leaks_in_normal_mode_gives_the_count() -> None:
    pool: ObjectPool[list[int]] = ObjectPool(list, name="lists")
    taken = [pool.acquire(), pool.acquire()]
    with pytest.raises(AssertionError, match=r"lists: 2 object\(s\) not released.*debug=True"):
        assert_no_leaks(pool)  # type: ignore[arg-type]
    for obj in taken:
        pool.release(obj)
    assert_no_leaks(pool)  # type: ignore[arg-type]


def test_assert_no_leaks_refuses_other_objects() -> None:
    with pytest.raises(TypeError, match="pool must be a BufferPool or an ObjectPool"):
        assert_no_leaks(object())  # type: ignore[arg-type]


# -- ObjectPool -----------------------------------------------------------------------------


class Session:
    """An object with costly set-up: the factory counts how many were built."""

    built = 0

    def __init__(self) -> None:
        Session.built += 1
        self.serial = Session.built
        self.messages: list[str] = []
        self.closed = False

    def clear(self) -> None:
        self.messages.clear()

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return f"<Session {self.serial}>"


def test_object_pool_reuses_reset_objects() -> None:
    pool = ObjectPool(Session, Session.clear, max_size=4)
    first = pool.acquire()
    first.messages.append("hi")
    pool.release(first)
    assert first.messages == []  # reset on release
    again = pool.acquire()
    assert again is first
    pool.release(again)
    stats = pool.statistics()
    assert (stats.hits, stats.misses, stats.acquires, stats.released) == (1, 1, 2, 2)
    assert (stats.in_use, stats.free, stats.high_water, stats.capacity) == (0, 1, 1, 4)
    assert stats.hit_ratio == 0.5
    assert "0 in use, 1 free of 4" in repr(pool)


def test_borrow_releases_even_when_the_block_raises() -> None:
    pool = ObjectPool(Session, Session.clear)
    with pytest.raises(KeyError), pool.borrow() as session:
        session.messages.append("x")
        raise KeyError("boom")
    stats = pool.statistics()
    assert (stats.in_use, stats.free, stats.released) == (0, 1, 1)
    assert session.messages == []
    with pool.borrow() as again:
        assert again is session


@pytest.mark.parametrize("debug", [False, True])
def test_releasing_twice_or_a_stranger_raises(debug: bool) -> None:
    pool = ObjectPool(Session, max_size=4, debug=debug)
    session = pool.acquire()
    pool.release(session)
    with pytest.raises(ReleaseError, match="released twice"):
        pool.release(session)
    with pytest.raises(ReleaseError, match="never handed out by this pool"):
        pool.release(Session())
    out = pool.acquire()
    other_pool = ObjectPool(Session, debug=debug)
    with pytest.raises(ReleaseError, match="never handed out"):
        other_pool.release(out)
    pool.release(out)
    stats = pool.statistics()
    assert (stats.in_use, stats.released, stats.free) == (0, 2, 1)
    assert issubclass(ReleaseError, ValueError)


def test_unhashable_objects_can_be_pooled() -> None:
    pool: ObjectPool[dict[str, int]] = ObjectPool(dict, dict.clear)
    first = pool.acquire()
    first["a"] = 1
    pool.release(first)
    assert pool.acquire() is first
    assert first == {}


def test_a_failing_reset_discards_the_object_and_propagates() -> None:
    disposed: list[Session] = []

    def bad_reset(session: Session) -> None:
        raise RuntimeError("cannot reset")

    pool = ObjectPool(Session, bad_reset, dispose=disposed.append)
    session = pool.acquire()
    with pytest.raises(RuntimeError, match="cannot reset"):
        pool.release(session)
    stats = pool.statistics()
    assert (stats.reset_failures, stats.in_use, stats.free, stats.released) == (1, 0, 0, 1)
    assert disposed == [session]
    assert pool.acquire() is not session


def test_object_pool_is_bounded_and_disposes_what_it_drops() -> None:
    disposed: list[Session] = []
    pool = ObjectPool(Session, Session.clear, max_size=2, dispose=Session.close)
    pool_with_list = ObjectPool(Session, max_size=1, dispose=disposed.append)
    sessions = [pool.acquire() for _ in range(5)]
    for session in sessions:
        pool.release(session)
    stats = pool.statistics()
    assert (stats.free, stats.dropped_on_release, stats.high_water) == (2, 3, 5)
    assert [s.closed for s in sessions] == [False, False, True, True, True]
    a, b = pool_with_list.acquire(), pool_with_list.acquire()
    pool_with_list.release(a)
    pool_with_list.release(b)
    assert disposed == [b]


def test_object_pool_of_size_zero_keeps_nothing() -> None:
    pool = ObjectPool(Session, max_size=0)
    for _ in range(3):
        with pool.borrow():
            pass
    stats = pool.statistics()
    assert (stats.misses, stats.hits, stats.free, stats.dropped_on_release) == (3, 0, 0, 3)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"factory": 5}, TypeError, "factory must be callable"),
        ({"factory": dict, "reset": 5}, TypeError, "reset must be callable"),
        ({"factory": dict, "dispose": "x"}, TypeError, "dispose must be callable"),
        ({"factory": dict, "max_size": -1}, ValueError, "max_size must be >= 0"),
        ({"factory": dict, "max_size": 1.0}, TypeError, "max_size must be an int"),
        ({"factory": dict, "debug": "yes"}, TypeError, "debug must be a bool"),
        ({"factory": dict, "clock": object()}, TypeError, "clock must be a Clock"),
        ({"factory": dict, "name": None}, TypeError, "name must be a str"),
    ],
)
def test_object_pool_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        ObjectPool(**kwargs)


def test_object_pool_optimize_and_recycle() -> None:
    clock = VirtualClock()
    pool = ObjectPool(Session, max_size=10, dispose=Session.close, clock=clock)
    sessions = [pool.acquire() for _ in range(4)]
    for session in sessions[:2]:
        pool.release(session)
    clock.advance(30.0)
    for session in sessions[2:]:
        pool.release(session)
    (change,) = pool.optimize(headroom=0.5, floor=2)
    assert (change.size_class, change.old_capacity, change.new_capacity) == (None, 10, 6)
    assert (change.high_water, change.trimmed) == (4, 0)
    clock.advance(10.0)
    assert pool.recycle_unused(older_than=20.0) == 2
    assert [s.closed for s in sessions] == [True, True, False, False]
    (change,) = pool.optimize(headroom=0.5, floor=0)  # a quiet window
    assert (change.new_capacity, change.trimmed) == (0, 2)
    assert all(s.closed for s in sessions)
    stats = pool.statistics()
    assert (stats.free, stats.recycled, stats.trimmed, stats.capacity) == (0, 2, 2, 0)
    with pytest.raises(ValueError, match="headroom"):
        pool.optimize(headroom=-1)
    with pytest.raises(ValueError, match="older_than"):
        pool.recycle_unused(-1.0)


def test_object_pool_close_and_debug_leaks(pool_logs: pytest.LogCaptureFixture) -> None:
    pool = ObjectPool(Session, Session.clear, dispose=Session.close, debug=True, name="sessions")
    kept = pool.acquire()
    line = here() - 1
    free = pool.acquire()
    pool.release(free)
    (leak,) = pool.leaks()
    assert leak.what == repr(kept)
    assert leak.stack[-1].lineno == line
    assert leak.stack[-1].filename == __file__
    with pool:
        pass
    assert pool.closed
    assert [free.closed, kept.closed] == [True, False]  # free ones are disposed at close
    assert f"sessions: {kept!r} was never released" in pool_logs.text
    assert f"line {line}" in pool_logs.text
    with pytest.raises(MemoryPoolClosed):
        pool.acquire()
    pool.release(kept)  # accepted after close, and let go
    assert kept.closed
    stats = pool.statistics()
    assert (stats.in_use, stats.dropped_on_release, stats.free) == (0, 1, 0)
    assert pool.leaks() == ()


def test_object_pool_normal_close_warns_with_the_count(
    pool_logs: pytest.LogCaptureFixture,
) -> None:
    pool = ObjectPool(Session, name="s")
    taken = pool.acquire()
    assert pool.close() == ()
    assert "s: 1 objects were never released" in pool_logs.text
    pool.release(taken)


def test_statistics_are_frozen_snapshots() -> None:
    pool = BufferPool()
    before = pool.statistics()
    with pool.acquire(10):
        pass
    assert before.acquires == 0
    with pytest.raises(AttributeError):
        before.name = "x"  # type: ignore[misc]
    assert pool.statistics().acquires == 1
    assert isinstance(pool.acquire(1), PooledBuffer)
