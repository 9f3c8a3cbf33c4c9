"""Statistics snapshots of the memory pools, and what ``optimize()`` changed."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BufferPoolStatistics",
    "CapacityChange",
    "ObjectPoolStatistics",
    "SizeClassStatistics",
]


@dataclass(frozen=True, slots=True)
class SizeClassStatistics:
    """One size class of a :class:`~asyncperf.pools.BufferPool` (a snapshot).

    ``hits + misses`` is the number of acquires served by this class, and
    ``in_use == hits + misses - released``.
    """

    #: Bytes in each buffer of this class.
    size: int
    #: Free buffers the class may keep (``optimize()`` moves it, never above ``max_capacity``).
    capacity: int
    #: The bound ``capacity`` never exceeds (the pool's ``max_per_class`` for this class).
    max_capacity: int
    #: Free buffers held now.
    free: int
    #: Bytes held by the free buffers (``free * size``).
    bytes_held: int
    #: Buffers handed out and not yet released.
    in_use: int
    #: The most buffers of this class in use at once, since the pool was created.
    high_water: int
    #: Acquires served from the free list.
    hits: int
    #: Acquires that had to allocate a new buffer.
    misses: int
    #: Buffers given back (whether kept or dropped).
    released: int
    #: Released buffers dropped because the free list was at capacity (or the pool closed).
    dropped_on_release: int
    #: Free buffers freed by ``recycle_unused()``.
    recycled: int
    #: Free buffers freed because ``optimize()`` lowered the capacity.
    trimmed: int
    #: Debug mode: released buffers not pooled again because a view of them was still
    #: alive (a sub-view or an export), so reusing them would share memory.
    quarantined: int

    @property
    def acquires(self) -> int:
        """Acquires served by this class: ``hits + misses``."""
        return self.hits + self.misses


@dataclass(frozen=True, slots=True)
class BufferPoolStatistics:
    """A snapshot of a :class:`~asyncperf.pools.BufferPool`: per class, plus totals."""

    #: The pool's name.
    name: str
    debug: bool
    closed: bool
    #: One entry per size class, smallest first.
    classes: tuple[SizeClassStatistics, ...]
    #: Requests larger than the largest class: served by a fresh, unpooled bytearray.
    oversize_acquires: int
    #: Oversize buffers not yet released.
    oversize_in_use: int
    #: Bytes of the oversize requests, in all.
    oversize_bytes: int

    @property
    def hits(self) -> int:
        """Acquires served from a free list, over all classes."""
        return sum(c.hits for c in self.classes)

    @property
    def misses(self) -> int:
        """Acquires that allocated a pooled-size buffer, over all classes."""
        return sum(c.misses for c in self.classes)

    @property
    def acquires(self) -> int:
        """Every acquire: ``hits + misses + oversize_acquires``."""
        return self.hits + self.misses + self.oversize_acquires

    @property
    def in_use(self) -> int:
        """Buffers handed out and not released (pooled and oversize)."""
        return sum(c.in_use for c in self.classes) + self.oversize_in_use

    @property
    def free(self) -> int:
        """Free buffers held, over all classes."""
        return sum(c.free for c in self.classes)

    @property
    def bytes_held(self) -> int:
        """Bytes held by the free buffers, over all classes."""
        return sum(c.bytes_held for c in self.classes)

    @property
    def hit_ratio(self) -> float:
        """hits / acquires (oversize requests count as misses); 0.0 before the first."""
        return self.hits / self.acquires if self.acquires else 0.0


@dataclass(frozen=True, slots=True)
class ObjectPoolStatistics:
    """A snapshot of an :class:`~asyncperf.pools.ObjectPool`.

    ``hits + misses`` is the number of acquires, ``misses`` the number of
    objects the factory built, and ``in_use == hits + misses - released``.
    """

    name: str
    debug: bool
    closed: bool
    #: Free objects the pool may keep (``optimize()`` moves it, never above ``max_size``).
    capacity: int
    #: The bound ``capacity`` never exceeds.
    max_size: int
    #: Free objects held now.
    free: int
    #: Objects handed out and not yet released.
    in_use: int
    #: The most objects in use at once, since the pool was created.
    high_water: int
    #: Acquires served from the free list.
    hits: int
    #: Acquires that called the factory.
    misses: int
    #: Objects given back (whether kept, dropped or failed to reset).
    released: int
    #: Released objects dropped because the free list was at capacity (or the pool closed).
    dropped_on_release: int
    #: Released objects discarded because ``reset`` raised.
    reset_failures: int
    #: Free objects freed by ``recycle_unused()``.
    recycled: int
    #: Free objects freed because ``optimize()`` lowered the capacity.
    trimmed: int

    @property
    def acquires(self) -> int:
        """Every acquire: ``hits + misses``."""
        return self.hits + self.misses

    @property
    def hit_ratio(self) -> float:
        """hits / acquires; 0.0 before the first."""
        return self.hits / self.acquires if self.acquires else 0.0


@dataclass(frozen=True, slots=True)
class CapacityChange:
    """What ``optimize()`` did to one free list."""

    #: The size class (bytes) of a BufferPool; None for an ObjectPool.
    size_class: int | None
    old_capacity: int
    new_capacity: int
    #: The most in use at once since the previous ``optimize()``: what the rule read.
    high_water: int
    #: Free entries freed because they no longer fit the new capacity.
    trimmed: int
