"""The free list both pools are made of: bounded, LIFO, with the time each entry was freed."""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Generic, TypeVar

from asyncperf._validate import check_int, check_number

__all__ = ["FreeList", "check_optimize_arguments"]

T = TypeVar("T")


class FreeList(Generic[T]):
    """Free entries and the counters of one size class (or of an object pool).

    ``free`` is a stack: the most recently released entry is reused first, as
    its memory is the most likely to still be in the CPU cache. ``since[i]`` is
    when ``free[i]`` was released, so ``since`` is non-decreasing and the
    idle entries are always at the front. The pools update the counters inline
    on their hot paths; the slower operations live here. Releases are not
    counted: every release lowers ``in_use``, so ``released`` is
    ``hits + misses - in_use`` (one increment fewer per release).
    """

    __slots__ = (
        "capacity",
        "dropped",
        "free",
        "high_water",
        "hits",
        "in_use",
        "max_capacity",
        "misses",
        "quarantined",
        "recycled",
        "reset_failures",
        "since",
        "trimmed",
        "window_high",
    )

    def __init__(self, max_capacity: int) -> None:
        self.free: list[T] = []
        self.since: list[float] = []
        self.capacity = max_capacity
        self.max_capacity = max_capacity
        self.hits = 0
        self.misses = 0
        self.in_use = 0
        self.high_water = 0
        # The peak of in_use since the last optimize(): the demand optimize() sizes for.
        self.window_high = 0
        self.dropped = 0
        self.recycled = 0
        self.trimmed = 0
        self.quarantined = 0
        self.reset_failures = 0

    @property
    def released(self) -> int:
        """Entries given back (kept, dropped, quarantined or failed to reset)."""
        return self.hits + self.misses - self.in_use

    def note_acquire(self) -> None:
        """Count one more in use and move the high-water marks (the pools inline this)."""
        self.in_use += 1
        if self.in_use > self.window_high:
            self.window_high = self.in_use
            if self.in_use > self.high_water:
                self.high_water = self.in_use

    def take_idle(self, cutoff: float) -> list[T]:
        """Remove and return the free entries released at or before ``cutoff``."""
        count = bisect_right(self.since, cutoff)
        taken = self.free[:count]
        del self.free[:count], self.since[:count]
        self.recycled += count
        return taken

    def resize(self, headroom: float, floor: int) -> tuple[int, int, int, list[T]]:
        """Apply the optimize rule; (old capacity, new capacity, window peak, trimmed entries).

        The rule: ``ceil(peak * (1 + headroom))`` where ``peak`` is the most in
        use at once since the previous call, at least ``floor``, at most
        ``max_capacity``. Free entries beyond the new capacity are removed,
        oldest first; the window starts again from the current in-use count.
        """
        old = self.capacity
        peak = self.window_high
        wanted = max(math.ceil(peak * (1.0 + headroom)), floor)
        self.capacity = min(wanted, self.max_capacity)
        excess = len(self.free) - self.capacity
        trimmed: list[T] = []
        if excess > 0:
            trimmed = self.free[:excess]
            del self.free[:excess], self.since[:excess]
            self.trimmed += excess
        self.window_high = self.in_use
        return old, self.capacity, peak, trimmed

    def clear(self) -> list[T]:
        """Remove and return every free entry (the pool is closing)."""
        taken = self.free
        self.free = []
        self.since = []
        return taken


def check_optimize_arguments(headroom: object, floor: object) -> tuple[float, int]:
    """Validate ``optimize(headroom=, floor=)``; the error names the parameter."""
    return check_number("headroom", headroom, strict=False), check_int("floor", floor, minimum=0)
