"""A dict-backed cache level for tests: TTL on a clock, a call log, failures and gates on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable
from types import EllipsisType
from typing import Any

from asyncperf._errors import CacheClosed
from asyncperf.abc import Clock
from asyncperf.cache._base import CacheEntry, CacheStatistics, EvictionReason
from asyncperf.loop import SystemClock

__all__ = ["FakeLevel", "LevelFailure"]


class LevelFailure(Exception):
    """Raised by a FakeLevel operation listed in ``fail``."""


class FakeLevel:
    """A :class:`~asyncperf.cache.CacheLevel` over a dict, for the tier's tests.

    - ``calls`` logs every operation as ``(name, key or keys)``.
    - ``fail`` names the operations that raise :class:`LevelFailure`.
    - ``gate``: when set to an unset ``asyncio.Event``, the operations in ``gated``
      (default: every one) wait for it; with ``snapshot_reads``, ``get_entry`` reads
      before it waits, as a store whose reads run elsewhere (a thread) may.
    - ``max_entries`` evicts the oldest entry beyond the bound; ``refuse`` lists keys
      whose ``set`` returns False.
    """

    def __init__(
        self,
        name: str = "fake",
        *,
        clock: Clock | None = None,
        max_entries: int | None = None,
    ) -> None:
        self._name = name
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.data: dict[Hashable, tuple[Any, float | None]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.fail: set[str] = set()
        self.refuse: set[Hashable] = set()
        self.gate: asyncio.Event | None = None
        self.gated: set[str] | None = None
        self.snapshot_reads = False
        self.max_entries = max_entries
        self.max_bytes: int | None = None
        self.closed = False
        self.hits = 0
        self.misses = 0
        self.sets = 0
        self.deletes = 0
        self.evicted = 0

    @property
    def name(self) -> str:
        return self._name

    async def _enter(self, operation: str, argument: Any) -> None:
        self.calls.append((operation, argument))
        if self.closed:
            raise CacheClosed("closed")
        if self.gate is not None and (self.gated is None or operation in self.gated):
            await self.gate.wait()
        if operation in self.fail:
            raise LevelFailure(f"{self._name}.{operation} failed")

    def ops(self, operation: str) -> list[Any]:
        """The arguments of every logged call of ``operation``."""
        return [argument for name, argument in self.calls if name == operation]

    def remaining(self, key: Hashable) -> float | None:
        """Seconds ``key`` has left (None: no expiry); KeyError when absent."""
        expires = self.data[key][1]
        return None if expires is None else expires - self.clock.now()

    def _read(self, key: Hashable) -> CacheEntry | None:
        stored = self.data.get(key)
        if stored is None:
            self.misses += 1
            return None
        value, expires = stored
        if expires is None:
            self.hits += 1
            return CacheEntry(value, None)
        left = expires - self.clock.now()
        if left <= 0:
            del self.data[key]
            self.misses += 1
            return None
        self.hits += 1
        return CacheEntry(value, left)

    def _write(self, key: Hashable, value: Any, ttl: float | None) -> bool:
        if ttl is not None and not ttl > 0:
            raise ValueError(f"ttl must be > 0, not {ttl!r}")
        self.sets += 1
        if key in self.refuse:
            self.data.pop(key, None)
            return False
        self.data.pop(key, None)
        self.data[key] = (value, None if ttl is None else self.clock.now() + ttl)
        self._evict()
        return True

    def _evict(self) -> None:
        while self.max_entries is not None and len(self.data) > self.max_entries:
            del self.data[next(iter(self.data))]
            self.evicted += 1

    async def get_entry(self, key: Hashable) -> CacheEntry | None:
        if self.snapshot_reads:
            found = self._read(key)
            await self._enter("get_entry", key)
            return found
        await self._enter("get_entry", key)
        return self._read(key)

    async def get_many(self, keys: Iterable[Hashable]) -> dict[Hashable, CacheEntry]:
        wanted = list(keys)
        await self._enter("get_many", wanted)
        found = {key: self._read(key) for key in wanted}
        return {key: entry for key, entry in found.items() if entry is not None}

    async def set(self, key: Hashable, value: Any, ttl: float | None = None) -> bool:
        await self._enter("set", key)
        return self._write(key, value, ttl)

    async def set_many(self, items: Iterable[tuple[Hashable, Any, float | None]]) -> int:
        batch = list(items)
        await self._enter("set_many", [key for key, _, _ in batch])
        return sum(self._write(key, value, ttl) for key, value, ttl in batch)

    async def delete(self, key: Hashable) -> bool:
        await self._enter("delete", key)
        self.deletes += 1
        return self.data.pop(key, None) is not None

    async def clear(self) -> None:
        await self._enter("clear", None)
        self.data.clear()

    def set_capacity(
        self,
        *,
        max_entries: int | EllipsisType | None = ...,
        max_bytes: int | EllipsisType | None = ...,
    ) -> None:
        self.calls.append(("set_capacity", (max_entries, max_bytes)))
        if not isinstance(max_entries, EllipsisType):
            if max_entries is not None and max_entries < 1:
                raise ValueError(f"max_entries must be >= 1, not {max_entries!r}")
            self.max_entries = max_entries
        if not isinstance(max_bytes, EllipsisType):
            self.max_bytes = max_bytes
        self._evict()

    def statistics(self) -> CacheStatistics:
        evictions = dict.fromkeys((reason.value for reason in EvictionReason), 0)
        evictions[EvictionReason.CAPACITY.value] = self.evicted
        return CacheStatistics(
            name=self._name,
            policy="fifo",
            entries=len(self.data),
            bytes=0,
            max_entries=self.max_entries,
            max_bytes=self.max_bytes,
            hits=self.hits,
            misses=self.misses,
            sets=self.sets,
            deletes=self.deletes,
            evictions=evictions,
        )

    async def __aenter__(self) -> FakeLevel:
        await self._enter("aenter", None)
        return self

    async def aclose(self) -> None:
        self.calls.append(("aclose", None))
        self.closed = True
        if "aclose" in self.fail:
            raise LevelFailure(f"{self._name}.aclose failed")
