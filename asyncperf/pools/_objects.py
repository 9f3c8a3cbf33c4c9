"""ObjectPool: reuse objects whose set-up is costly, reset between users."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Final, Generic, TypeVar

from asyncperf._errors import AsyncPerfError
from asyncperf._validate import check_int, check_number
from asyncperf.abc import Clock
from asyncperf.loop import SystemClock
from asyncperf.pools._debug import MemoryPoolClosed, PoolLeak, capture_stack, logger, report_leaks
from asyncperf.pools._freelist import FreeList, check_optimize_arguments
from asyncperf.pools._stats import CapacityChange, ObjectPoolStatistics

__all__ = ["Borrowed", "ObjectPool", "ReleaseError"]

T = TypeVar("T")

#: Free objects kept unless told otherwise.
DEFAULT_MAX_SIZE: Final = 64


class ReleaseError(AsyncPerfError, ValueError):
    """An object was given back twice, or was never handed out by this pool."""


class Borrowed(Generic[T]):
    """``with pool.borrow() as obj:``: acquire on entry, release on exit (even on error)."""

    __slots__ = ("_obj", "_pool")

    def __init__(self, pool: ObjectPool[T]) -> None:
        self._pool = pool

    def __enter__(self) -> T:
        self._obj = self._pool.acquire()
        return self._obj

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pool.release(self._obj)


class ObjectPool(Generic[T]):
    """A bounded pool of reusable objects: for objects whose set-up is costly.

    ::

        objs = ObjectPool(factory=Message, reset=Message.clear, max_size=1024)
        with objs.borrow() as message:        # acquire(), then release() at the end
            ...
        message = objs.acquire(); ...; objs.release(message)

    ``acquire()`` takes the most recently released free object, or calls
    ``factory()`` when there is none (a miss); it never waits. ``release(obj)``
    calls ``reset(obj)`` and keeps the object for the next acquire, unless the
    free list is at capacity: then the object is dropped (passed to
    ``dispose``, if given) and counted. Objects in use are not bounded: the
    pool is a cache of free objects, not a limiter.

    In CPython pooling pays only when set-up is costly (a compiled parser, a
    large preallocated buffer, a connection); for a small plain object,
    ``factory()`` is about as cheap as a pool round trip and the pool only
    adds work.

    Giving back an object twice, or one this pool never handed out, raises
    :class:`ReleaseError`. In normal mode the pool knows the objects out by
    ``id()``, without holding them (an object never released is not kept
    alive); debug mode holds them, so the check is exact, and records where
    each was taken for :meth:`leaks` and :meth:`close`.

    Not thread-safe: use a pool from one event loop (one thread).

    Args:
        factory: makes a new object (called with no arguments).
        reset: puts a released object back in a clean state before it is kept.
            If it raises, the object is discarded (counted as a reset failure,
            and disposed of) and the exception propagates out of ``release``.
        max_size: the most free objects kept; ``optimize()`` moves the capacity
            between its ``floor`` and this bound. 0 keeps none.
        dispose: called with each object the pool lets go of (dropped at
            capacity, trimmed, recycled, after a failed reset, or freed at close),
            to close what it holds.
        debug: track where each object was taken (see :meth:`leaks`).
        clock: the time source for :meth:`recycle_unused` (default: monotonic).
        name: shown in statistics, reprs and leak reports.
    """

    __slots__ = (
        "_clock",
        "_closed",
        "_debug",
        "_dispose",
        "_factory",
        "_free_list",
        "_live",
        "_name",
        "_now",
        "_out",
        "_out_add",
        "_out_remove",
        "_reset",
    )

    def __init__(
        self,
        factory: Callable[[], T],
        reset: Callable[[T], object] | None = None,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        dispose: Callable[[T], object] | None = None,
        debug: bool = False,
        clock: Clock | None = None,
        name: str = "objects",
    ) -> None:
        if not callable(factory):
            raise TypeError(f"factory must be callable, not {type(factory).__name__}")
        if reset is not None and not callable(reset):
            raise TypeError(f"reset must be callable or None, not {type(reset).__name__}")
        if dispose is not None and not callable(dispose):
            raise TypeError(f"dispose must be callable or None, not {type(dispose).__name__}")
        max_size = check_int("max_size", max_size, minimum=0)
        if not isinstance(debug, bool):
            raise TypeError(f"debug must be a bool, not {type(debug).__name__}")
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be a Clock (with now()), not {type(clock).__name__}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        self._factory = factory
        self._reset = reset
        self._dispose = dispose
        self._free_list: FreeList[T] = FreeList(max_size)
        self._debug = debug
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._now = self._clock.now
        self._name = name
        self._closed = False
        # Normal mode: id() of each object out. Debug mode: the objects themselves,
        # with when and where each was taken.
        self._out: set[int] = set()
        # Bound once: the hot paths call them without looking the method up each time.
        self._out_add = self._out.add
        self._out_remove = self._out.remove
        self._live: dict[int, tuple[T, float, traceback.StackSummary]] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def debug(self) -> bool:
        return self._debug

    @property
    def closed(self) -> bool:
        return self._closed

    def acquire(self) -> T:
        """A free object, or a new one from ``factory()``; give it back with :meth:`release`.

        Raises:
            MemoryPoolClosed: the pool is closed.
        """
        if self._closed:
            raise MemoryPoolClosed(f"object pool {self._name!r} is closed")
        free_list = self._free_list
        free = free_list.free
        if free:
            obj = free.pop()
            free_list.since.pop()
            free_list.hits += 1
        else:
            obj = self._factory()
            free_list.misses += 1
        in_use = free_list.in_use = free_list.in_use + 1
        if in_use > free_list.window_high:
            free_list.window_high = in_use
            if in_use > free_list.high_water:
                free_list.high_water = in_use
        if self._debug:
            self._live[id(obj)] = (obj, self._now(), capture_stack())
        else:
            self._out_add(id(obj))
        return obj

    def borrow(self) -> Borrowed[T]:
        """``with pool.borrow() as obj:`` acquires on entry and releases on exit."""
        # Built without calling __init__: a Python call frame less per borrow.
        borrowed: Borrowed[T] = _new_borrowed(Borrowed)
        borrowed._pool = self
        return borrowed

    def release(self, obj: T) -> None:
        """Give ``obj`` back: reset and keep it, or drop it when the pool is full or closed.

        Raises:
            ReleaseError: ``obj`` was already released, or not handed out by this pool.
            Exception: whatever ``reset`` raised (the object is then discarded).
        """
        key = id(obj)
        if self._debug:
            entry = self._live.pop(key, None)
            if entry is None or entry[0] is not obj:
                if entry is not None:
                    self._live[key] = entry
                raise self._release_error(obj)
        else:
            try:
                self._out_remove(key)
            except KeyError:
                raise self._release_error(obj) from None
        free_list = self._free_list
        free_list.in_use -= 1  # ``released`` is derived from it (FreeList.released)
        if self._closed or len(free_list.free) >= free_list.capacity:
            free_list.dropped += 1
            self._let_go(obj)
            return
        if self._reset is not None:
            try:
                self._reset(obj)
            except BaseException:
                free_list.reset_failures += 1
                self._let_go(obj)
                raise
        free_list.free.append(obj)
        free_list.since.append(self._now())

    def _release_error(self, obj: T) -> ReleaseError:
        if any(free is obj for free in self._free_list.free):
            return ReleaseError(f"{obj!r} was released twice to object pool {self._name!r}")
        return ReleaseError(
            f"{obj!r} is not in use from object pool {self._name!r}: "
            "it was never handed out by this pool, or was already released"
        )

    def _let_go(self, obj: T) -> None:
        if self._dispose is not None:
            self._dispose(obj)

    def _let_go_all(self, objects: list[T]) -> None:
        for obj in objects:
            self._let_go(obj)

    def statistics(self) -> ObjectPoolStatistics:
        """A snapshot of the counters."""
        free_list = self._free_list
        return ObjectPoolStatistics(
            name=self._name,
            debug=self._debug,
            closed=self._closed,
            capacity=free_list.capacity,
            max_size=free_list.max_capacity,
            free=len(free_list.free),
            in_use=free_list.in_use,
            high_water=free_list.high_water,
            hits=free_list.hits,
            misses=free_list.misses,
            released=free_list.released,
            dropped_on_release=free_list.dropped,
            reset_failures=free_list.reset_failures,
            recycled=free_list.recycled,
            trimmed=free_list.trimmed,
        )

    def optimize(self, *, headroom: float = 0.25, floor: int = 1) -> tuple[CapacityChange, ...]:
        """Size the capacity from the demand since the previous call.

        The rule: ``capacity = ceil(peak * (1 + headroom))``, at least ``floor``
        and at most ``max_size``, where ``peak`` is the most objects in use at
        once since the previous ``optimize()`` (or since the pool was created).
        Free objects beyond it are let go, oldest first. Returns one
        :class:`CapacityChange` if the capacity changed or objects were freed.

        Raises:
            ValueError, TypeError: ``headroom`` < 0 or ``floor`` < 0.
        """
        headroom, floor = check_optimize_arguments(headroom, floor)
        old, new, peak, trimmed = self._free_list.resize(headroom, floor)
        self._let_go_all(trimmed)
        if old == new and not trimmed:
            return ()
        return (CapacityChange(None, old, new, peak, len(trimmed)),)

    def recycle_unused(self, older_than: float) -> int:
        """Let go of the free objects not used for ``older_than`` seconds; returns how many.

        Raises:
            ValueError, TypeError: ``older_than`` is negative or not a number.
        """
        older_than = check_number("older_than", older_than, strict=False)
        idle = self._free_list.take_idle(self._now() - older_than)
        self._let_go_all(idle)
        return len(idle)

    def leaks(self) -> tuple[PoolLeak, ...]:
        """Debug mode: the objects taken and not released, oldest first, each with its traceback.

        Raises:
            RuntimeError: the pool is not in debug mode (it does not record where).
        """
        if not self._debug:
            raise RuntimeError(
                f"object pool {self._name!r} does not record where objects were taken: "
                "create it with debug=True"
            )
        return tuple(
            PoolLeak(self._name, _describe(obj), taken_at, stack)
            for obj, taken_at, stack in self._live.values()
        )

    def close(self) -> tuple[PoolLeak, ...]:
        """Let go of every free object and refuse new acquires; idempotent.

        Objects still out may be released later (they are dropped). In debug
        mode each of them is reported (a WARNING with its traceback on the
        ``asyncperf.pools`` logger) and returned; in normal mode a single
        warning gives their count.
        """
        if self._closed:
            return ()
        self._closed = True
        self._let_go_all(self._free_list.clear())
        if self._debug:
            leaks = self.leaks()
            report_leaks(leaks)
            return leaks
        if self._free_list.in_use:
            logger.warning(
                "%s: %d objects were never released (create the pool with debug=True "
                "to see where they were taken)",
                self._name,
                self._free_list.in_use,
            )
        return ()

    def __enter__(self) -> ObjectPool[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        free_list = self._free_list
        state = "closed" if self._closed else "open"
        return (
            f"<ObjectPool {self._name!r} {state}: {free_list.in_use} in use, "
            f"{len(free_list.free)} free of {free_list.capacity}, debug={self._debug}>"
        )


#: Makes a Borrowed without calling ``__init__`` (``borrow`` sets its slot itself).
_new_borrowed = object.__new__


def _describe(obj: object) -> str:
    text = repr(obj)
    return text if len(text) <= 120 else text[:117] + "..."
