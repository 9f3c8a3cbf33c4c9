"""BufferPool: size-classed, reusable bytearrays handed out as memoryviews."""

from __future__ import annotations

import asyncio
import socket
import traceback
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from itertools import pairwise
from types import TracebackType
from typing import Final, Protocol

from asyncperf._validate import check_int, check_number
from asyncperf.abc import Clock
from asyncperf.loop import SystemClock
from asyncperf.pools._debug import (
    BufferReleasedError,
    MemoryPoolClosed,
    PoolLeak,
    capture_stack,
    logger,
    report_leaks,
)
from asyncperf.pools._freelist import FreeList, check_optimize_arguments
from asyncperf.pools._stats import BufferPoolStatistics, CapacityChange, SizeClassStatistics

__all__ = ["DEFAULT_SIZE_CLASSES", "BufferPool", "PooledBuffer", "SupportsReadinto"]

#: 1 KiB to 256 KiB in steps of 4: a request wastes less than three quarters of its buffer.
DEFAULT_SIZE_CLASSES: Final = (1024, 4096, 16384, 65536, 262144)

#: Free buffers kept per class unless told otherwise: at most 32 x 341 KiB (~11 MiB)
#: with the default classes.
DEFAULT_MAX_PER_CLASS: Final = 32


class SupportsReadinto(Protocol):
    """A binary file or stream with ``readinto`` (``io.BufferedReader``, ``io.BytesIO``...)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class PooledBuffer:
    """One buffer taken from a :class:`BufferPool`; give it back with :meth:`release`.

    ``with pool.acquire(n) as view:`` gives the :class:`memoryview` of exactly
    ``n`` bytes and releases the buffer when the block ends. Outside a
    ``with``, use :attr:`view` and call :meth:`release` (idempotent) when done.

    The rule: once released, neither the view nor any slice of it may be
    used, as the memory may already belong to the next acquirer. Debug mode
    enforces it for the view itself (it is released, so any use raises
    ``ValueError``) and refuses to pool a buffer again while a slice of it
    is alive; normal mode leaves it to the caller, for speed.

    The contents are whatever the previous user left: pooled buffers are not
    cleared.
    """

    # ``_full`` is the pool's own memoryview of the whole buffer: it lives in the free list
    # with the buffer and is never handed out (so no user can release it); ``_view`` is
    # the slice of it the holder gets. ``_released_at`` is only set by debug mode.
    __slots__ = ("_full", "_pool", "_released_at", "_size_class", "_view", "size")

    _released_at: traceback.StackSummary

    def __init__(
        self,
        pool: BufferPool,
        size_class: FreeList[memoryview] | None,
        full: memoryview,
        view: memoryview,
        size: int,
    ) -> None:
        self._pool: BufferPool | None = pool
        self._size_class = size_class
        self._full = full
        self._view = view
        #: Bytes asked for: the length of :attr:`view`.
        self.size = size

    @property
    def view(self) -> memoryview:
        """The writable memoryview of exactly :attr:`size` bytes.

        Raises:
            BufferReleasedError: the buffer was released.
        """
        if self._pool is None:
            where = ""
            released_at: traceback.StackSummary | None = getattr(self, "_released_at", None)
            if released_at is not None:
                where = "; released at:\n" + "".join(released_at.format()).rstrip()
            raise BufferReleasedError(f"this pooled buffer was released{where}")
        return self._view

    @property
    def capacity(self) -> int:
        """Bytes in the underlying buffer: the size class (or :attr:`size` when oversize)."""
        return self._full.nbytes

    @property
    def pooled(self) -> bool:
        """False for a request larger than the largest class (served unpooled)."""
        return self._size_class is not None

    @property
    def released(self) -> bool:
        """True once :meth:`release` has run."""
        return self._pool is None

    def release(self) -> None:
        """Give the buffer back to its pool; a second call does nothing."""
        pool = self._pool
        if pool is None:
            return
        self._pool = None
        size_class = self._size_class
        if pool._slow_release or size_class is None:
            pool._give_back(self)
            return
        # The common case inline (also in __exit__): a method call is a tenth of the cost.
        # ``released`` is not counted here: statistics derive it (acquires - in_use).
        size_class.in_use -= 1
        free = size_class.free
        if len(free) < size_class.capacity:
            free.append(self._full)
            size_class.since.append(pool._now())
        else:
            size_class.dropped += 1

    def __enter__(self) -> memoryview:
        if self._pool is None:
            return self.view  # raises BufferReleasedError
        return self._view

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # release(), inlined: the with-statement is the path users take most.
        pool = self._pool
        if pool is None:
            return
        self._pool = None
        size_class = self._size_class
        if pool._slow_release or size_class is None:
            pool._give_back(self)
            return
        # ``released`` is not counted here: statistics derive it (acquires - in_use).
        size_class.in_use -= 1
        free = size_class.free
        if len(free) < size_class.capacity:
            free.append(self._full)
            size_class.since.append(pool._now())
        else:
            size_class.dropped += 1

    def readinto(self, file: SupportsReadinto) -> int | None:
        """``file.readinto(view)``: fill the buffer from a binary file, with no extra copy.

        Returns what ``readinto`` returns: the bytes read (0 at end of file),
        or None from a non-blocking raw stream with no data ready.
        """
        return file.readinto(self.view)

    async def sock_recv_into(self, sock: socket.socket, *, fill: bool = False) -> int:
        """Receive from a non-blocking socket straight into the buffer (zero-copy).

        Uses ``loop.sock_recv_into``. With ``fill=False`` one receive, which may
        return fewer bytes than :attr:`size`; with ``fill=True`` receives until
        the buffer is full or the peer closes. Returns the bytes received
        (0: the peer closed the connection).
        """
        loop = asyncio.get_running_loop()
        view = self.view
        if not fill:
            return await loop.sock_recv_into(sock, view)
        total = 0
        while total < len(view):
            received = await loop.sock_recv_into(sock, view[total:])
            if not received:
                break
            total += received
        return total

    async def read_from(self, reader: asyncio.StreamReader, *, exactly: bool = True) -> int:
        """Fill the buffer from an ``asyncio.StreamReader``; returns the bytes read.

        Not zero-copy: ``StreamReader`` has no ``readinto``, so each chunk is
        copied out of the reader's own buffer into a ``bytes`` and then into
        this one. What the pool saves here is the destination allocation, not
        copying; for zero-copy reads use :meth:`sock_recv_into` or an
        ``asyncio.BufferedProtocol``.

        Raises:
            asyncio.IncompleteReadError: ``exactly`` and the stream ended before
                the buffer was full (``partial`` holds what was read).
        """
        view = self.view
        wanted = len(view)
        total = 0
        while total < wanted:
            chunk = await reader.read(wanted - total)
            if not chunk:
                break
            view[total : total + len(chunk)] = chunk
            total += len(chunk)
        if exactly and total < wanted:
            raise asyncio.IncompleteReadError(bytes(view[:total]), wanted)
        return total

    def __repr__(self) -> str:
        state = "released" if self._pool is None else "in use"
        kind = f"class {self._full.nbytes}" if self._size_class is not None else "unpooled"
        return f"<PooledBuffer {self.size} bytes ({kind}), {state}>"


class BufferPool:
    """Size-classed pool of ``bytearray`` buffers, handed out as memoryviews.

    ``acquire(n)`` takes a buffer of the smallest class that holds ``n``
    bytes (a request above the largest class gets a fresh, unpooled
    bytearray and is counted as oversize) and returns a :class:`PooledBuffer`::

        bufs = BufferPool(size_classes=(1024, 4096, 16384, 65536, 262144))
        with bufs.acquire(5000) as view:      # 5000 bytes of a 16 KiB buffer
            n = sock.recv_into(view)

    The pool is a bounded cache of free buffers, not a limiter: ``acquire``
    never waits and never fails for lack of buffers (an empty class
    allocates), and a release into a class whose free list is at capacity
    drops the buffer and counts it. So the pool never holds more than
    ``capacity * size`` bytes per class; what is *in use* is up to the caller.

    Where it pays in CPython: for large buffers (256 KiB and up, which the
    allocator maps and unmaps each time) and where the memory would otherwise
    be re-faulted; for buffers of a few KiB, ``bytearray(n)`` is cheaper than
    a pool round trip (see the README for figures).

    Not thread-safe: use a pool from one event loop (one thread).

    Args:
        size_classes: buffer sizes in bytes, strictly increasing, each at least 1.
        max_per_class: the most free buffers kept per class: one int for every
            class, or a mapping from each size class to its bound. ``optimize()``
            moves each class's capacity between ``floor`` and this bound.
            0 keeps nothing (every acquire allocates: a baseline).
        debug: record where each buffer was taken (report unreleased ones at
            :meth:`close` and in :meth:`leaks`), release the view on release so a
            later use raises ``ValueError``, and never re-pool a buffer a slice
            of which is still alive. Costs microseconds per acquire.
        clock: the time source for :meth:`recycle_unused` (default: monotonic).
        name: shown in statistics, reprs and leak reports.
    """

    __slots__ = (
        "_classes",
        "_clock",
        "_closed",
        "_debug",
        "_largest",
        "_live",
        "_name",
        "_now",
        "_oversize_acquires",
        "_oversize_bytes",
        "_oversize_in_use",
        "_sizes",
        "_slow_release",
    )

    def __init__(
        self,
        size_classes: Sequence[int] = DEFAULT_SIZE_CLASSES,
        *,
        max_per_class: int | Mapping[int, int] = DEFAULT_MAX_PER_CLASS,
        debug: bool = False,
        clock: Clock | None = None,
        name: str = "buffers",
    ) -> None:
        self._sizes = _check_size_classes(size_classes)
        bounds = _check_max_per_class(max_per_class, self._sizes)
        if not isinstance(debug, bool):
            raise TypeError(f"debug must be a bool, not {type(debug).__name__}")
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be a Clock (with now()), not {type(clock).__name__}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        self._classes: list[FreeList[memoryview]] = [FreeList(bound) for bound in bounds]
        self._largest = self._sizes[-1]
        self._debug = debug
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._now = self._clock.now
        self._name = name
        self._closed = False
        # Handles take the inline release path unless this is set (debug mode, or closed).
        self._slow_release = debug
        # Debug mode only: every handle out, with when and where it was taken.
        self._live: dict[PooledBuffer, tuple[float, traceback.StackSummary]] = {}
        self._oversize_acquires = 0
        self._oversize_in_use = 0
        self._oversize_bytes = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def debug(self) -> bool:
        return self._debug

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def size_classes(self) -> tuple[int, ...]:
        """The buffer sizes, smallest first."""
        return tuple(self._sizes)

    def acquire(self, n: int) -> PooledBuffer:
        """A buffer of at least ``n`` bytes whose :attr:`~PooledBuffer.view` is exactly ``n``.

        Never waits: a class with no free buffer allocates one (a miss).

        Raises:
            TypeError: ``n`` is not an int.
            ValueError: ``n`` is negative.
            MemoryPoolClosed: the pool is closed.
        """
        if type(n) is not int or n < 0:
            n = check_int("n", n, minimum=0)
        # A closed pool sets _largest to -1, so this one test also sends every request
        # after close() to the slow path, which raises.
        if n > self._largest:
            return self._acquire_oversize(n)
        index = bisect_left(self._sizes, n)
        size_class = self._classes[index]
        free = size_class.free
        if free:
            full = free.pop()
            size_class.since.pop()
            size_class.hits += 1
        else:
            full = memoryview(bytearray(self._sizes[index]))
            size_class.misses += 1
        in_use = size_class.in_use = size_class.in_use + 1
        if in_use > size_class.window_high:
            size_class.window_high = in_use
            if in_use > size_class.high_water:
                size_class.high_water = in_use
        # The handle is built here rather than through __init__: a Python call frame
        # is a sizeable share of the round trip. Every slot but _released_at is set.
        handle = _new_handle(PooledBuffer)
        handle._pool = self
        handle._size_class = size_class
        handle._full = full
        # One slice of the pool's own full view: the holder gets a view object of its
        # own (releasing it cannot affect the next holder), whatever n is.
        handle._view = full[:n]
        handle.size = n
        if self._debug:
            self._live[handle] = (self._now(), capture_stack())
        return handle

    def _acquire_oversize(self, n: int) -> PooledBuffer:
        if self._closed:
            raise MemoryPoolClosed(f"buffer pool {self._name!r} is closed")
        self._oversize_acquires += 1
        self._oversize_in_use += 1
        self._oversize_bytes += n
        full = memoryview(bytearray(n))
        handle = PooledBuffer(self, None, full, full[:], n)
        if self._debug:
            self._live[handle] = (self._now(), capture_stack())
        return handle

    def _give_back(self, handle: PooledBuffer) -> None:
        """Release's slow path: debug mode, an oversize buffer, or a closed pool."""
        size_class = handle._size_class
        reusable = True
        if self._debug:
            reusable = self._retire_view(handle)
        if size_class is None:
            self._oversize_in_use -= 1
            return
        size_class.in_use -= 1
        if not reusable:
            size_class.quarantined += 1
        elif len(size_class.free) < size_class.capacity and not self._closed:
            size_class.free.append(handle._full)
            size_class.since.append(self._now())
        else:
            size_class.dropped += 1

    def _retire_view(self, handle: PooledBuffer) -> bool:
        """Debug mode: release the handle's view; False if the buffer is still exported."""
        self._live.pop(handle, None)
        handle._released_at = capture_stack()
        buffer = handle._full.obj
        assert isinstance(buffer, bytearray)
        try:
            handle._view.release()
        except BufferError:  # something holds a buffer export of the view itself
            exported = True
        else:
            # The pool's own full view holds an export too: let it go before asking.
            handle._full.release()
            exported = _is_exported(buffer)
        # A new full view for the free list (or just for ``capacity`` if quarantined).
        handle._full = memoryview(buffer)
        if exported and handle._size_class is not None:
            logger.warning(
                "%s: a %d-byte buffer was released while a view of it is still alive "
                "(a slice of the view, or an object exporting it); it will not be pooled again",
                self._name,
                handle.size,
            )
        return not exported

    def statistics(self) -> BufferPoolStatistics:
        """A snapshot of the counters, per size class and in total."""
        return BufferPoolStatistics(
            name=self._name,
            debug=self._debug,
            closed=self._closed,
            classes=tuple(
                SizeClassStatistics(
                    size=size,
                    capacity=c.capacity,
                    max_capacity=c.max_capacity,
                    free=len(c.free),
                    bytes_held=len(c.free) * size,
                    in_use=c.in_use,
                    high_water=c.high_water,
                    hits=c.hits,
                    misses=c.misses,
                    released=c.hits + c.misses - c.in_use,
                    dropped_on_release=c.dropped,
                    recycled=c.recycled,
                    trimmed=c.trimmed,
                    quarantined=c.quarantined,
                )
                for size, c in zip(self._sizes, self._classes, strict=True)
            ),
            oversize_acquires=self._oversize_acquires,
            oversize_in_use=self._oversize_in_use,
            oversize_bytes=self._oversize_bytes,
        )

    def optimize(self, *, headroom: float = 0.25, floor: int = 1) -> tuple[CapacityChange, ...]:
        """Size each class's capacity from its demand since the previous call.

        The rule, per class: ``capacity = ceil(peak * (1 + headroom))``, at least
        ``floor`` and at most the class's ``max_per_class``, where ``peak`` is the
        most buffers of the class in use at once since the previous
        ``optimize()`` (or since the pool was created). Free buffers beyond the
        new capacity are freed, oldest first. Call it periodically (e.g. every
        minute) so the pool follows the load. Returns the classes whose
        capacity changed or that freed buffers.

        Raises:
            ValueError, TypeError: ``headroom`` < 0 or ``floor`` < 0.
        """
        headroom, floor = check_optimize_arguments(headroom, floor)
        changes: list[CapacityChange] = []
        for size, size_class in zip(self._sizes, self._classes, strict=True):
            old, new, peak, trimmed = size_class.resize(headroom, floor)
            if old != new or trimmed:
                changes.append(CapacityChange(size, old, new, peak, len(trimmed)))
        return tuple(changes)

    def recycle_unused(self, older_than: float) -> int:
        """Free the free buffers not used for ``older_than`` seconds; returns how many.

        Raises:
            ValueError, TypeError: ``older_than`` is negative or not a number.
        """
        older_than = check_number("older_than", older_than, strict=False)
        cutoff = self._now() - older_than
        return sum(len(size_class.take_idle(cutoff)) for size_class in self._classes)

    def leaks(self) -> tuple[PoolLeak, ...]:
        """Debug mode: the buffers taken and not released, oldest first, each with its traceback.

        Raises:
            RuntimeError: the pool is not in debug mode (it does not track handles).
        """
        if not self._debug:
            raise RuntimeError(
                f"buffer pool {self._name!r} does not track buffers: create it with debug=True"
            )
        leaks: list[PoolLeak] = []
        for handle, (taken_at, stack) in self._live.items():
            if handle._size_class is not None:
                what = f"buffer of {handle.size} bytes (size class {handle.capacity})"
            else:
                what = f"unpooled buffer of {handle.size} bytes"
            leaks.append(PoolLeak(self._name, what, taken_at, stack))
        return tuple(leaks)

    def close(self) -> tuple[PoolLeak, ...]:
        """Free every pooled buffer and refuse new acquires; idempotent.

        Buffers still out may be released later (they are dropped, not pooled).
        In debug mode, each of them is reported (a WARNING with its traceback on
        the ``asyncperf.pools`` logger) and returned; in normal mode a single
        warning gives their count.
        """
        if self._closed:
            return ()
        self._closed = True
        self._slow_release = True
        self._largest = -1  # every acquire now takes the slow path, which raises
        for size_class in self._classes:
            size_class.clear()
        if self._debug:
            leaks = self.leaks()
            report_leaks(leaks)
            return leaks
        in_use = sum(c.in_use for c in self._classes) + self._oversize_in_use
        if in_use:
            logger.warning(
                "%s: %d buffers were never released (create the pool with debug=True "
                "to see where they were taken)",
                self._name,
                in_use,
            )
        return ()

    def __enter__(self) -> BufferPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        stats = self.statistics()
        state = "closed" if self._closed else "open"
        return (
            f"<BufferPool {self._name!r} {state}: {stats.in_use} in use, "
            f"{stats.free} free ({stats.bytes_held} bytes), debug={self._debug}>"
        )


#: Makes a handle without calling ``__init__`` (``acquire`` sets its slots itself).
_new_handle = object.__new__


def _is_exported(buffer: bytearray) -> bool:
    """True while some view of ``buffer`` is alive: a bytearray with exports cannot resize."""
    try:
        buffer.append(0)
    except BufferError:
        return True
    del buffer[-1]
    return False


def _check_size_classes(size_classes: object) -> list[int]:
    if isinstance(size_classes, str | bytes) or not isinstance(size_classes, Sequence):
        raise TypeError(
            f"size_classes must be a sequence of ints, not {type(size_classes).__name__}"
        )
    if not size_classes:
        raise ValueError("size_classes must name at least one size")
    sizes = [check_int("size_classes", size, minimum=1) for size in size_classes]
    for smaller, larger in pairwise(sizes):
        if larger <= smaller:
            raise ValueError(
                f"size_classes must be strictly increasing (sorted, no repeats), "
                f"not {tuple(sizes)!r}"
            )
    return sizes


def _check_max_per_class(max_per_class: object, sizes: list[int]) -> list[int]:
    if isinstance(max_per_class, Mapping):
        unknown = [size for size in max_per_class if size not in sizes]
        if unknown:
            raise ValueError(
                f"max_per_class names {unknown[0]!r}, which is not one of size_classes {sizes}"
            )
        missing = [size for size in sizes if size not in max_per_class]
        if missing:
            raise ValueError(f"max_per_class has no entry for size class {missing[0]}")
        return [check_int("max_per_class", max_per_class[size], minimum=0) for size in sizes]
    bound = check_int("max_per_class", max_per_class, minimum=0)
    return [bound] * len(sizes)
