"""Eviction policies of the memory cache: which key leaves when the cache is full.

A policy tracks keys and their weights only; the cache keeps the values. Each
policy bounds the number of entries (``max_entries``), the total weight
(``max_weight``, bytes as the cache's weigher counts them), or both, and
answers every insertion with the keys it evicted to stay within them. Only
W-TinyLFU may refuse the key being inserted (admission), so ``insert`` can
return that key itself.

The cache calls ``access`` on every hit, so each policy keeps that path to a
few dictionary operations.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import ClassVar, Literal

from asyncperf._validate import check_int

__all__ = ["POLICIES", "EvictionPolicy", "LRUPolicy", "PolicyName", "make_policy"]

PolicyName = Literal["lru", "lfu", "fifo", "sieve", "tinylfu"]


class EvictionPolicy(abc.ABC):
    """The bookkeeping of one eviction policy.

    Contract, relied on by the cache and checked against reference models in
    the tests:

    - ``insert`` is called only for a key not present; ``access``, ``update``
      and ``remove`` only for a present one.
    - After every call, ``len(policy) <= max_entries`` and
      ``policy.weight <= max_weight`` (where set); a key whose weight alone
      exceeds ``max_weight`` is never passed in (the cache refuses it first).
    - Returned keys are gone from the policy; the cache deletes their values.
    """

    name: ClassVar[PolicyName]

    def __init__(self, max_entries: int | None = None, max_weight: int | None = None) -> None:
        self.max_entries = (
            None if max_entries is None else check_int("max_entries", max_entries, minimum=1)
        )
        self.max_weight = (
            None if max_weight is None else check_int("max_weight", max_weight, minimum=1)
        )
        self.weight = 0

    def _over(self, entries: int) -> bool:
        """Whether ``entries`` keys with the current weight exceed a bound."""
        return (self.max_entries is not None and entries > self.max_entries) or (
            self.max_weight is not None and self.weight > self.max_weight
        )

    @abc.abstractmethod
    def insert(self, key: Hashable, weight: int) -> list[Hashable]:
        """Add ``key``; the keys evicted to make room (``key`` itself if it was not admitted)."""

    @abc.abstractmethod
    def access(self, key: Hashable) -> None:
        """Record a hit on ``key``."""

    def miss(self, key: Hashable) -> None:  # noqa: B027 - most policies ignore misses on purpose
        """Record a lookup of an absent key (frequency-based policies count it)."""

    @abc.abstractmethod
    def update(self, key: Hashable, weight: int) -> list[Hashable]:
        """``key`` was overwritten with a value of ``weight``; the keys evicted (never ``key``)."""

    @abc.abstractmethod
    def remove(self, key: Hashable) -> None:
        """Forget ``key`` (deleted or expired)."""

    @abc.abstractmethod
    def clear(self) -> None:
        """Forget every key."""

    @abc.abstractmethod
    def resize(self, max_entries: int | None, max_weight: int | None) -> list[Hashable]:
        """Change the bounds; the keys evicted to fit the new ones."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __contains__(self, key: Hashable) -> bool: ...

    @abc.abstractmethod
    def items(self) -> Iterator[tuple[Hashable, int]]:
        """``(key, weight)`` from the first to be evicted to the last (best effort).

        Switching policies on a live cache replays this order into the new
        policy, so it keeps what the old one valued most.
        """


class LRUPolicy(EvictionPolicy):
    """Least recently used: a hit moves the key to the end; the front is evicted."""

    name = "lru"

    def __init__(self, max_entries: int | None = None, max_weight: int | None = None) -> None:
        super().__init__(max_entries, max_weight)
        self._order: OrderedDict[Hashable, int] = OrderedDict()
        # The hit path: one bound-method call, no attribute lookups.
        self.access = self._order.move_to_end  # type: ignore[method-assign]

    def insert(self, key: Hashable, weight: int) -> list[Hashable]:
        self._order[key] = weight
        self.weight += weight
        return self._evict()

    def access(self, key: Hashable) -> None:
        self._order.move_to_end(key)

    def update(self, key: Hashable, weight: int) -> list[Hashable]:
        order = self._order
        self.weight += weight - order[key]
        order[key] = weight
        order.move_to_end(key)
        return self._evict(keep=key)

    def remove(self, key: Hashable) -> None:
        self.weight -= self._order.pop(key)

    def clear(self) -> None:
        self._order.clear()
        self.weight = 0

    def resize(self, max_entries: int | None, max_weight: int | None) -> list[Hashable]:
        EvictionPolicy.__init__(self, max_entries, max_weight)
        self.weight = sum(self._order.values())
        return self._evict()

    def _evict(self, keep: Hashable | None = None) -> list[Hashable]:
        evicted: list[Hashable] = []
        order = self._order
        while self._over(len(order)):
            key, weight = order.popitem(last=False)
            if key == keep and order:  # an update never evicts the key it updated
                order[key] = weight
                continue
            self.weight -= weight
            evicted.append(key)
        return evicted

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._order

    def items(self) -> Iterator[tuple[Hashable, int]]:
        return iter(list(self._order.items()))


#: Policy classes by name; ``make_policy`` builds one.
POLICIES: dict[str, type[EvictionPolicy]] = {"lru": LRUPolicy}


def make_policy(
    name: str, max_entries: int | None = None, max_weight: int | None = None
) -> EvictionPolicy:
    """A new policy called ``name`` with these bounds.

    Raises:
        ValueError: ``name`` is not one of :data:`POLICIES` (the message lists them).
    """
    try:
        cls = POLICIES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"policy must be one of {', '.join(sorted(POLICIES))}, not {name!r}"
        ) from None
    return cls(max_entries, max_weight)
