"""Eviction policies of the memory cache: which key leaves when the cache is full.

A policy tracks keys and their weights only; the cache keeps the values. Each
policy bounds the number of entries (``max_entries``), the total weight
(``max_weight``, bytes as the cache's weigher counts them), or both, and
answers every insertion with the keys it evicted to stay within them. Only
W-TinyLFU may refuse the key being inserted (admission), so ``insert`` can
return that key itself.

The cache calls ``access`` on every hit, so each policy keeps that path to a
few dictionary operations.

Shared semantics, beyond the contract of :class:`EvictionPolicy`: ``insert``
never evicts the key it inserts except W-TinyLFU's admission, ``update`` is a
use of the key (it moves, counts or marks it as ``access`` would, except in
FIFO), and ``resize`` evicts in the policy's own order.
"""

from __future__ import annotations

import abc
import random
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import ClassVar, Final, Literal

from asyncperf._validate import check_int
from asyncperf.cache._sketch import MAX_FREQUENCY, FrequencySketch, Slots

__all__ = [
    "POLICIES",
    "EvictionPolicy",
    "FIFOPolicy",
    "LFUPolicy",
    "LRUPolicy",
    "PolicyName",
    "SievePolicy",
    "TinyLFUPolicy",
    "make_policy",
]

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
        # Both are checked before either is set, so a failed resize changes nothing.
        entries = None if max_entries is None else check_int("max_entries", max_entries, minimum=1)
        weight = None if max_weight is None else check_int("max_weight", max_weight, minimum=1)
        self.max_entries = entries
        self.max_weight = weight
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


class _NoKey:
    """The type of :data:`_NO_KEY`: stands for "no key" where ``None`` is a valid key."""

    __slots__ = ()


#: No key to keep (``None`` is a key like any other).
_NO_KEY: Final = _NoKey()


class _OrderedPolicy(EvictionPolicy):
    """A policy over one ordered dict of key → weight, front evicted first (LRU and FIFO).

    Subclasses say what a hit and an update do to the order, and how the front is
    evicted (``_evict``, which never evicts ``keep``).
    """

    def __init__(self, max_entries: int | None = None, max_weight: int | None = None) -> None:
        super().__init__(max_entries, max_weight)
        self._order: OrderedDict[Hashable, int] = OrderedDict()

    def insert(self, key: Hashable, weight: int) -> list[Hashable]:
        self._order[key] = weight
        self.weight += weight
        return self._evict(_NO_KEY)

    def remove(self, key: Hashable) -> None:
        self.weight -= self._order.pop(key)

    def clear(self) -> None:
        self._order.clear()
        self.weight = 0

    def resize(self, max_entries: int | None, max_weight: int | None) -> list[Hashable]:
        EvictionPolicy.__init__(self, max_entries, max_weight)
        self.weight = sum(self._order.values())
        return self._evict(_NO_KEY)

    @abc.abstractmethod
    def _evict(self, keep: Hashable) -> list[Hashable]:
        """Evict from the front until within the bounds, never ``keep``; the keys evicted."""

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._order

    def items(self) -> Iterator[tuple[Hashable, int]]:
        return iter(list(self._order.items()))


class LRUPolicy(_OrderedPolicy):
    """Least recently used: a hit moves the key to the end; the front is evicted."""

    name = "lru"

    def __init__(self, max_entries: int | None = None, max_weight: int | None = None) -> None:
        super().__init__(max_entries, max_weight)
        # The hit path: one bound-method call, no attribute lookups.
        self.access = self._order.move_to_end  # type: ignore[method-assign]

    def access(self, key: Hashable) -> None:
        self._order.move_to_end(key)

    def update(self, key: Hashable, weight: int) -> list[Hashable]:
        order = self._order
        self.weight += weight - order[key]
        order[key] = weight
        order.move_to_end(key)
        return self._evict(key)

    def _evict(self, keep: Hashable) -> list[Hashable]:
        # The key just inserted or updated (``keep``) is at the end: it is reached only
        # once it is alone, and alone it fits (a key heavier than the bound is never
        # passed in), so it needs no check here.
        evicted: list[Hashable] = []
        order = self._order
        while self._over(len(order)):
            key, weight = order.popitem(last=False)
            self.weight -= weight
            evicted.append(key)
        return evicted


class FIFOPolicy(_OrderedPolicy):
    """First in, first out: hits and updates change nothing; the oldest insertion goes."""

    name = "fifo"

    def access(self, key: Hashable) -> None:
        return None

    def update(self, key: Hashable, weight: int) -> list[Hashable]:
        order = self._order
        self.weight += weight - order[key]
        order[key] = weight
        return self._evict(key)

    def _evict(self, keep: Hashable) -> list[Hashable]:
        evicted: list[Hashable] = []
        order = self._order
        held: tuple[Hashable, int] | None = None  # ``keep`` while it is out of the queue
        while self._over(len(order) + (held is not None)):
            key, weight = order.popitem(last=False)
            if held is None and (key is keep or key == keep):
                held = key, weight
                continue
            self.weight -= weight
            evicted.append(key)
        if held is not None:  # back to its place at the front: an update keeps its age
            order[held[0]] = held[1]
            order.move_to_end(held[0], last=False)
        return evicted


class _Bucket:
    """The keys used ``count`` times, least recently used first; a link in the bucket list."""

    __slots__ = ("count", "higher", "keys", "lower")

    def __init__(self, count: int, lower: _Bucket | None, higher: _Bucket | None) -> None:
        self.count = count
        self.keys: OrderedDict[Hashable, None] = OrderedDict()
        self.lower = lower
        self.higher = higher


class LFUPolicy(EvictionPolicy):
    """Least frequently used, ties broken by least recently used; O(1) per operation.

    The keys sit in buckets by use count, and the buckets in a linked list by
    count (the O(1) LFU of Shah, Mitra and Matani): a hit moves a key to the next
    bucket, eviction takes the front of the lowest one. Counts are kept for
    resident keys only, and start at 1 on insertion, which never evicts the new key.
    """

    name = "lfu"

    def __init__(self, max_entries: int | None = None, max_weight: int | None = None) -> None:
        super().__init__(max_entries, max_weight)
        self._weights: dict[Hashable, int] = {}
        self._where: dict[Hashable, _Bucket] = {}
        self._lowest: _Bucket | None = None

    def insert(self, key: Hashable, weight: int) -> list[Hashable]:
        self.weight += weight
        # Room is made first, so the newcomer (the least used key) is not the victim.
        evicted = self._evict(len(self._weights) + 1, _NO_KEY)
        self._weights[key] = weight
        lowest = self._lowest
        if lowest is None or lowest.count != 1:
            lowest = self._lowest = _Bucket(1, None, lowest)
            if lowest.higher is not None:
                lowest.higher.lower = lowest
        lowest.keys[key] = None
        self._where[key] = lowest
        return evicted

    def access(self, key: Hashable) -> None:
        where = self._where
        bucket = where[key]
        higher = bucket.higher
        count = bucket.count + 1
        if higher is None or higher.count != count:
            if len(bucket.keys) == 1:
                bucket.count = count  # alone in its bucket: the bucket moves up with it
                return
            higher = bucket.higher = _Bucket(count, bucket, higher)
            if higher.higher is not None:
                higher.higher.lower = higher
        keys = bucket.keys
        del keys[key]
        higher.keys[key] = None
        where[key] = higher
        if not keys:
            self._unlink(bucket)

    def _unlink(self, bucket: _Bucket) -> None:
        lower, higher = bucket.lower, bucket.higher
        if higher is not None:
            higher.lower = lower
        if lower is None:
            self._lowest = higher
        else:
            lower.higher = higher

    def update(self, key: Hashable, weight: int) -> list[Hashable]:
        self.weight += weight - self._weights[key]
        self._weights[key] = weight
        self.access(key)
        return self._evict(len(self._weights), key)

    def remove(self, key: Hashable) -> None:
        self.weight -= self._weights.pop(key)
        bucket = self._where.pop(key)
        del bucket.keys[key]
        if not bucket.keys:
            self._unlink(bucket)

    def clear(self) -> None:
        self._weights.clear()
        self._where.clear()
        self._lowest = None
        self.weight = 0

    def resize(self, max_entries: int | None, max_weight: int | None) -> list[Hashable]:
        EvictionPolicy.__init__(self, max_entries, max_weight)
        self.weight = sum(self._weights.values())
        return self._evict(len(self._weights), _NO_KEY)

    def _evict(self, entries: int, keep: Hashable) -> list[Hashable]:
        """Evict until ``entries`` keys (the current ones, maybe plus a newcomer) fit."""
        evicted: list[Hashable] = []
        while self._over(entries):
            bucket = self._lowest
            assert bucket is not None, "over a bound with no keys: a weight exceeds the bound"
            victim = next(iter(bucket.keys))
            if victim is keep or victim == keep:
                # An update never evicts its own key: take the next one in order.
                victim = self._after(bucket, keep)
            self.remove(victim)
            evicted.append(victim)
            entries -= 1
        return evicted

    def _after(self, bucket: _Bucket, keep: Hashable) -> Hashable:
        if len(bucket.keys) > 1:
            keys = iter(bucket.keys)
            next(keys)
            return next(keys)
        assert bucket.higher is not None, "the updated key alone exceeds a bound"
        return next(iter(bucket.higher.keys))

    def __len__(self) -> int:
        return len(self._weights)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._weights

    def items(self) -> Iterator[tuple[Hashable, int]]:
        order: list[tuple[Hashable, int]] = []
        bucket = self._lowest
        while bucket is not None:
            order.extend((key, self._weights[key]) for key in bucket.keys)
            bucket = bucket.higher
        return iter(order)


class _SieveNode:
    __slots__ = ("key", "newer", "older", "visited", "weight")

    def __init__(self, key: Hashable, weight: int, older: _SieveNode | None) -> None:
        self.key = key
        self.weight = weight
        self.visited = False
        self.older = older
        self.newer: _SieveNode | None = None


class SievePolicy(EvictionPolicy):
    """SIEVE (Zhang et al., NSDI '24): a FIFO queue, a visited bit, and a moving hand.

    A hit only sets the key's visited bit. To evict, the hand walks from where it
    stopped toward newer keys (wrapping to the oldest), clearing visited bits,
    and evicts the first unvisited key. New keys go in at the newest end.
    """

    name = "sieve"

    def __init__(self, max_entries: int | None = None, max_weight: int | None = None) -> None:
        super().__init__(max_entries, max_weight)
        self._nodes: dict[Hashable, _SieveNode] = {}
        self._newest: _SieveNode | None = None
        self._oldest: _SieveNode | None = None
        #: Where the next eviction looks first; None: at the oldest key.
        self._hand: _SieveNode | None = None

    def insert(self, key: Hashable, weight: int) -> list[Hashable]:
        self.weight += weight
        evicted = self._evict(len(self._nodes) + 1, None)
        node = _SieveNode(key, weight, self._newest)
        if self._newest is None:
            self._oldest = node
        else:
            self._newest.newer = node
        self._newest = node
        self._nodes[key] = node
        return evicted

    def access(self, key: Hashable) -> None:
        self._nodes[key].visited = True

    def update(self, key: Hashable, weight: int) -> list[Hashable]:
        node = self._nodes[key]
        self.weight += weight - node.weight
        node.weight = weight
        node.visited = True
        return self._evict(len(self._nodes), node)

    def remove(self, key: Hashable) -> None:
        node = self._nodes.pop(key)
        self.weight -= node.weight
        if self._hand is node:
            self._hand = node.newer
        if node.older is None:
            self._oldest = node.newer
        else:
            node.older.newer = node.newer
        if node.newer is None:
            self._newest = node.older
        else:
            node.newer.older = node.older

    def clear(self) -> None:
        self._nodes.clear()
        self._newest = self._oldest = self._hand = None
        self.weight = 0

    def resize(self, max_entries: int | None, max_weight: int | None) -> list[Hashable]:
        EvictionPolicy.__init__(self, max_entries, max_weight)
        self.weight = sum(node.weight for node in self._nodes.values())
        return self._evict(len(self._nodes), None)

    def _evict(self, entries: int, keep: _SieveNode | None) -> list[Hashable]:
        evicted: list[Hashable] = []
        while self._over(entries):
            node = self._hand or self._oldest
            assert node is not None, "over a bound with no keys: a weight exceeds the bound"
            while node.visited or node is keep:
                node.visited = False
                node = node.newer or self._oldest
                assert node is not None
            self._hand = node
            self.remove(node.key)  # moves the hand on to the next newer key
            evicted.append(node.key)
            entries -= 1
        return evicted

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._nodes

    def items(self) -> Iterator[tuple[Hashable, int]]:
        # The hand's order, unvisited keys first: roughly the order SIEVE evicts in.
        order: list[_SieveNode] = []
        node = self._hand or self._oldest
        while node is not None:
            order.append(node)
            node = node.newer
        if self._hand is not None:  # then the older keys, which the hand reaches after wrapping
            node = self._oldest
            while node is not self._hand:
                assert node is not None, "the hand is a node of the queue"
                order.append(node)
                node = node.newer
        order.sort(key=lambda n: n.visited)
        return iter([(n.key, n.weight) for n in order])


class _Entry:
    """A key's bookkeeping in W-TinyLFU."""

    __slots__ = ("seq", "slots", "uses", "weight")

    def __init__(self, weight: int, slots: Slots) -> None:
        self.weight = weight
        #: When it last entered probation (probation is first in, first out).
        self.seq = 0
        #: Uses since the last ageing that the sketch has not been told of.
        self.uses = 0
        #: The key's place in the sketch, found once when it came in.
        self.slots = slots


class TinyLFUPolicy(EvictionPolicy):
    """W-TinyLFU with an adaptive window, after Caffeine (Einziger, Friedman, Manes).

    New keys enter a small LRU *window*. What the window pushes out becomes a
    *candidate* for the *main* region, a segmented LRU (a probation segment, and
    a protected one holding 80% of main: a hit in probation promotes the key to
    protected, whose overflow is demoted back to probation). When the cache is
    full the candidate competes with the main region's *victim*, the front of
    probation, and the one a frequency sketch (:class:`FrequencySketch`:
    count-min with a doorkeeper and periodic ageing) estimates as less popular
    is evicted. The candidate must beat the victim by more than one count: its
    count includes the request that just brought it in, so with equal
    popularity it would win half the time and the main region would churn
    (a loop over more keys than fit keeps nothing). One-off keys (a scan) pass
    through the window without displacing popular ones.

    The window starts at 1% of the capacity, and a hill climber moves the split
    between window and main. Over each sample of five times the capacity in
    requests it counts what one step (6.25% of the capacity) more window would
    have hit: refused candidates asked for again within a step's worth of window
    departures (a *ghost* list of their hashes); and what a step more of main
    would have hit, or a step less would have lost, whichever is more: victims
    asked for again within a step's worth of main's evictions (a second ghost),
    and hits on the step of probation nearest eviction. It then steps the split
    toward the larger count, and stands still when the two differ by less than
    their noise (three, and one standard deviation). The step decays by 2% per
    move and is restored when the hit rate jumps by 5 points between samples.
    Caffeine's climber instead compares the hit rate of a sample with the
    previous one; on real traces that comparison follows the shifts of the
    workload itself more than the effect of its last move, while both counts
    here come from the same sample. A recency-biased workload thus grows the
    window toward an LRU, and a frequency-biased one keeps it small. Like any
    hill climber it follows the local gain: after an abrupt change of workload
    the split may settle away from the best one.

    With ``max_weight`` set, regions, steps and ghosts are measured in weight
    rather than entries. A hit only counts a use on its entry (the hit path is
    two dictionary operations); the sketch learns the uses when the key leaves,
    and admission adds them to the sketch's estimate.

    Args:
        max_entries: the bound on the number of keys.
        max_weight: the bound on the total weight.
        seed: seeds the random admission of popular candidates that would
            otherwise lose (a defence against keys flooding the victim's
            counters); a fixed seed makes a simulation reproducible.
    """

    name = "tinylfu"

    # Slots: every call reads and writes these, and slot access is the fastest
    # there is (a dictionary of this many keys would not be shared between
    # instances, which slows each access).
    __slots__ = (
        "_age_at",
        "_capacity",
        "_climb_at",
        "_departed",
        "_door_limit",
        "_full_step",
        "_ghost_count",
        "_ghost_limit",
        "_ghost_main",
        "_ghost_main_hits",
        "_ghost_main_units",
        "_ghost_window",
        "_ghost_window_hits",
        "_haunted_at",
        "_hits",
        "_last_key",
        "_last_slots",
        "_main_edge_hits",
        "_misses",
        "_previous_rate",
        "_probation",
        "_probation_floor",
        "_probation_seq",
        "_protected",
        "_protected_max",
        "_protected_size",
        "_random",
        "_sample_hits",
        "_sample_misses",
        "_sketch",
        "_step",
        "_weighted",
        "_window",
        "_window_max",
        "_window_size",
    )

    #: The window's share of the capacity at the start.
    WINDOW_SHARE: ClassVar[float] = 0.01
    #: The protected segment's share of the main region.
    PROTECTED_SHARE: ClassVar[float] = 0.8
    #: The climber's full step, and the size of each ghost list, as a share of the capacity.
    STEP_SHARE: ClassVar[float] = 0.0625
    #: Each step is this much of the previous one while the hit rate holds.
    STEP_DECAY: ClassVar[float] = 0.98
    #: The step never decays below this share of the full step.
    STEP_FLOOR: ClassVar[float] = 0.1
    #: A change of the hit rate between samples this big restores the full step.
    RESTART_THRESHOLD: ClassVar[float] = 0.05
    #: Requests per sample of the climber, per entry of capacity.
    SAMPLE_FACTOR: ClassVar[int] = 5
    #: The ghost counts must differ by at least this much for the climber to move, ...
    GHOST_MARGIN: ClassVar[int] = 3
    #: ... and by this many standard deviations of their difference (Poisson counts).
    GHOST_Z: ClassVar[float] = 1.0
    #: A candidate is admitted when its frequency exceeds the victim's by more than this.
    ADMIT_MARGIN: ClassVar[int] = 1
    #: A losing candidate this popular is still admitted with probability 1/128.
    ADMIT_RANDOM_FROM: ClassVar[int] = 6

    def __init__(
        self,
        max_entries: int | None = None,
        max_weight: int | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        super().__init__(max_entries, max_weight)
        # The three queues are never replaced, so bound methods of them stay valid.
        self._window: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._probation: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._protected: OrderedDict[Hashable, _Entry] = OrderedDict()
        # Hashes of the last keys out: the window's with the departure count when they
        # left, main's with their units.
        self._ghost_window: OrderedDict[int, int] = OrderedDict()
        self._ghost_main: OrderedDict[int, int] = OrderedDict()
        self._random = random.Random(seed)
        self._configure(None)
        self._restart()
        self.access = self._make_access()  # type: ignore[method-assign,assignment]

    # -- configuration ----------------------------------------------------------

    def _units(self) -> int | None:
        """The capacity in the units regions are measured in (None: unbounded)."""
        return self.max_weight if self.max_weight is not None else self.max_entries

    def _configure(self, previous: int | None) -> None:
        """Size the regions for the current bounds (keeping the split on a resize)."""
        self._weighted = self.max_weight is not None
        capacity = self._units()
        self._capacity = capacity
        if capacity is None:
            # Unbounded: everything stays in the window, an LRU that never evicts.
            self._window_max = self._protected_max = 1 << 62
        elif previous is None:
            self._window_max = max(1, capacity - int((1 - self.WINDOW_SHARE) * capacity))
            self._protected_max = int(self.PROTECTED_SHARE * (capacity - self._window_max))
        else:
            scale = capacity / previous
            self._window_max = max(1, round(self._window_max * scale))
            self._protected_max = min(
                round(self._protected_max * scale), max(0, capacity - self._window_max)
            )
        self._full_step = self.STEP_SHARE * capacity if capacity is not None else 0.0
        self._ghost_limit = max(1, int(self._full_step))
        # A cap on the ghosts' lengths, for keys of weight zero (entries: one step).
        self._ghost_count = max(16, int(self.STEP_SHARE * (self.max_entries or 1 << 16)))
        unit = self._unit
        self._window_size = sum(unit(e) for e in self._window.values())
        self._protected_size = sum(unit(e) for e in self._protected.values())

    def _unit(self, entry: _Entry) -> int:
        return entry.weight if self._weighted else 1

    def _sketch_capacity(self) -> int:
        if self.max_entries is not None:
            return self.max_entries
        return max(64, 2 * len(self))

    def _restart(self) -> None:
        """A fresh sketch, ghosts and climber (at construction and on clear)."""
        self._sketch = FrequencySketch(self._sketch_capacity())
        self._hits = 0
        self._misses = 0
        #: The key of the last miss and its slots, until an insertion of it takes
        #: them (None: no miss pending).
        self._last_key: Hashable = _NO_KEY
        self._last_slots: Slots | None = None
        self._ghost_window.clear()
        self._ghost_main.clear()
        self._ghost_main_units = 0
        #: Units that have left the window since the start: the window ghost's clock.
        self._departed = 0
        #: ``_departed`` at the last eviction: window ghosts a step older are dead.
        self._haunted_at = 0
        self._ghost_window_hits = self._ghost_main_hits = 0
        self._main_edge_hits = 0
        self._probation_seq = 0
        #: At most the number of probation's front (which never decreases).
        self._probation_floor = 0
        self._sample_hits = self._sample_misses = 0
        self._previous_rate = 0.0
        self._step = self._full_step
        self._schedule()

    def _schedule(self) -> None:
        """Set when the sketch ages next, and when the climber's sample ends."""
        period = self._sketch.sample_size
        # Aging counts the sketch's changes from its ``recorded`` now: a new sketch
        # starts again from zero.
        self._age_at = self._hits + self._sketch.recorded + period
        self._door_limit = period
        self._climb_at = self._hits + self._misses + self.SAMPLE_FACTOR * self._sketch.capacity

    # -- the calls of the cache -------------------------------------------------

    def access(self, key: Hashable) -> None:
        self._hits += 1
        self._use(key)

    def _make_access(self) -> Callable[[Hashable], None]:
        """The hit path as a closure over the queues and their bound methods (no
        attribute lookups): protected first, where most hits land, then probation,
        then the window. A promotion out of probation (``_promoted``, written out
        for entries) is a closure of its own, so that the frame of every hit, whose
        setup and teardown grow with its variables, stays small."""
        protected = self._protected
        protected_get = protected.get
        protected_touch = protected.move_to_end
        protected_oldest = protected.popitem
        probation = self._probation
        probation_pop = probation.pop
        window = self._window
        window_touch = window.move_to_end
        policy = self

        def promote(key: Hashable, entry: _Entry) -> None:
            # Near the old end of probation? The front's number only grows, so a
            # past one bounds it: most hits are decided without finding the front.
            seq, edge = entry.seq, policy._ghost_limit
            if seq - policy._probation_floor < edge or not probation:
                policy._main_edge_hits += 1
            else:
                floor = policy._probation_floor = probation[next(iter(probation))].seq
                if seq - floor < edge:
                    policy._main_edge_hits += 1
            protected[key] = entry
            size = policy._protected_size + 1
            limit = policy._protected_max
            if size > limit:  # protected's oldest go back (``_demote``)
                seq = policy._probation_seq
                while size > limit:
                    oldest, demoted = protected_oldest(False)
                    probation[oldest] = demoted
                    demoted.seq = seq
                    seq += 1
                    size -= 1
                policy._probation_seq = seq
            policy._protected_size = size

        def access(key: Hashable) -> None:
            entry = protected_get(key)
            if entry is not None:
                entry.uses += 1
                protected_touch(key)
                policy._hits += 1
                return
            entry = probation_pop(key, None)
            if entry is None:
                entry = window[key]  # KeyError: not a present key
                entry.uses += 1
                window_touch(key)
            else:
                entry.uses += 1
                if policy._weighted:
                    policy._promoted(key, entry)
                else:
                    promote(key, entry)
            policy._hits += 1

        return access

    def miss(self, key: Hashable) -> None:
        self._misses += 1
        key_hash = hash(key)
        sketch = self._sketch
        self._last_slots = sketch.record(key_hash)
        self._last_key = key
        departed = self._ghost_window.pop(key_hash, None)
        if departed is not None:
            if departed >= self._departed - self._ghost_limit:
                self._ghost_window_hits += 1
        elif key_hash in self._ghost_main:
            self._ghost_main_units -= self._ghost_main.pop(key_hash)
            self._ghost_main_hits += 1
        hits = self._hits
        if (
            hits + sketch.recorded >= self._age_at
            or hits + self._misses >= self._climb_at
            or sketch.door_additions >= self._door_limit
        ):
            self._tick()

    def insert(self, key: Hashable, weight: int) -> list[Hashable]:
        slots = self._last_slots
        if slots is not None and (key is (last := self._last_key) or key == last):
            # ``miss`` recorded this request already.
            self._last_key, self._last_slots = _NO_KEY, None
        else:
            sketch = self._sketch
            slots = sketch.record(hash(key))
            if (
                self._hits + sketch.recorded >= self._age_at
                or sketch.door_additions >= self._door_limit
            ):
                self._tick()
        window = self._window
        window[key] = _Entry(weight, slots)
        self.weight += weight
        if self._weighted:
            self._window_size += weight
        elif self._window_size == self._window_max:  # and bounded by entries only
            return self._evict_one()
        else:
            self._window_size += 1
        max_entries, max_weight = self.max_entries, self.max_weight
        if (
            self._window_size > self._window_max
            or (max_entries is not None and len(self) > max_entries)
            or (max_weight is not None and self.weight > max_weight)
        ):
            return self._evict(None)
        return []

    def _evict_one(self) -> list[Hashable]:
        """``_evict(None)`` when the window, of a cache bounded by entries only, is
        one entry over: the steady state of a full cache, made shorter. Its one candidate
        competes with the front of probation, or has no one to beat when probation
        is empty; a refused candidate never enters probation (it would leave it at
        once) but takes its number there all the same."""
        window, probation = self._window, self._probation
        candidate_key, candidate = window.popitem(last=False)
        self._departed += 1
        seq = self._probation_seq
        candidate.seq = seq
        self._probation_seq = seq + 1
        max_entries = self.max_entries
        # With the candidate, the cache holds one entry more than the queues.
        if max_entries is None or len(window) + len(probation) + len(self._protected) < max_entries:
            probation[candidate_key] = candidate
            return []
        if probation:
            victim_key = next(iter(probation))
            victim = probation[victim_key]
            if self._admit(candidate, victim):
                del probation[victim_key]
                probation[candidate_key] = candidate
                self.weight -= victim.weight
                if victim.uses:
                    self._sketch.add(victim.slots, victim.uses)
                self._haunt(False, victim_key, 1)
                return [victim_key]
        self.weight -= candidate.weight
        if candidate.uses:
            self._sketch.add(candidate.slots, candidate.uses)
        self._haunt(True, candidate_key, 1)
        return [candidate_key]

    def update(self, key: Hashable, weight: int) -> list[Hashable]:
        entry = self._use(key)
        delta = weight - entry.weight
        entry.weight = weight
        self.weight += delta
        if self._weighted:
            if key in self._window:
                self._window_size += delta
            elif key in self._protected:
                self._protected_size += delta
                self._demote()
        if self._window_size > self._window_max or self._over(len(self)):
            return self._evict(entry)
        return []

    def remove(self, key: Hashable) -> None:
        for queue in (self._protected, self._probation, self._window):
            entry = queue.pop(key, None)
            if entry is not None:
                self._forget(queue, entry)
                return
        raise KeyError(key)

    def clear(self) -> None:
        self._window.clear()
        self._probation.clear()
        self._protected.clear()
        self.weight = 0
        self._configure(None)
        self._restart()

    def resize(self, max_entries: int | None, max_weight: int | None) -> list[Hashable]:
        previous = self._units()
        weighted = self._weighted
        self._bury_ghosts()  # while the step is the one they died by
        EvictionPolicy.__init__(self, max_entries, max_weight)
        self.weight = sum(e.weight for e in self._entries())
        same_units = weighted == (self.max_weight is not None)
        self._configure(previous if same_units and previous is not None else None)
        self._step = self._full_step
        self._trim_ghosts()
        self._resize_sketch()
        self._demote()
        return self._evict(None)

    def __len__(self) -> int:
        return len(self._window) + len(self._probation) + len(self._protected)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._protected or key in self._probation or key in self._window

    def items(self) -> Iterator[tuple[Hashable, int]]:
        # Probation first (the next victims), then the window, then what proved popular.
        order = [
            (key, entry.weight)
            for queue in (self._probation, self._window, self._protected)
            for key, entry in queue.items()
        ]
        return iter(order)

    # -- inspection (tests and benchmarks) ----------------------------------------

    @property
    def window_max(self) -> int:
        """The window's current target size (entries, or weight with ``max_weight``)."""
        return self._window_max

    @property
    def protected_max(self) -> int:
        """The protected segment's current target size."""
        return self._protected_max

    def frequency(self, key: Hashable) -> int:
        """The estimated recent popularity of ``key`` (0 to 15), as admission sees it."""
        entry = self._find(key)
        if entry is None:
            return self._sketch.frequency(self._sketch.locate(key))
        return self._estimate(entry)

    # -- internals ----------------------------------------------------------------

    def _entries(self) -> Iterator[_Entry]:
        yield from self._window.values()
        yield from self._probation.values()
        yield from self._protected.values()

    def _find(self, key: Hashable) -> _Entry | None:
        for queue in (self._protected, self._probation, self._window):
            entry = queue.get(key)
            if entry is not None:
                return entry
        return None

    def _use(self, key: Hashable) -> _Entry:
        """Count a use of a present key and move it as a hit does."""
        for queue in (self._protected, self._window):
            entry = queue.get(key)
            if entry is not None:
                queue.move_to_end(key)
                entry.uses += 1
                return entry
        entry = self._promote(key)
        entry.uses += 1
        return entry

    def _promote(self, key: Hashable) -> _Entry:
        """A hit in probation: the key moves to protected, whose overflow goes back."""
        entry = self._probation.pop(key)
        self._promoted(key, entry)
        return entry

    def _promoted(self, key: Hashable, entry: _Entry) -> None:
        """``entry``, just taken out of probation by a hit, goes to protected."""
        probation = self._probation
        # Probation is first in, first out (a hit leaves it), so entry numbers bound
        # how far from its old end a key is: a hit this close is one that a step
        # less of main would have lost. The numbers rise from the old end, so with
        # the key gone the front is the old front, or a later entry when the key
        # was the front.
        if not probation or entry.seq - probation[next(iter(probation))].seq < self._edge(1):
            self._main_edge_hits += 1
        self._protected[key] = entry
        self._protected_size += entry.weight if self._weighted else 1
        if self._protected_size > self._protected_max:
            self._demote()

    def _edge(self, absent: int = 0) -> int:
        """One step, in entries (with weights, at the average weight); ``absent``:
        entries out of the queues for the moment."""
        if self._weighted:
            entries = len(self) + absent
            return max(1, round(self._ghost_limit * entries / max(1, self.weight)))
        return self._ghost_limit

    def _demote(self) -> None:
        protected, probation = self._protected, self._probation
        while self._protected_size > self._protected_max and protected:
            key, entry = protected.popitem(last=False)
            probation[key] = entry
            entry.seq = self._probation_seq
            self._probation_seq += 1
            self._protected_size -= entry.weight if self._weighted else 1

    def _estimate(self, entry: _Entry) -> int:
        count = self._sketch.frequency(entry.slots) + entry.uses
        return MAX_FREQUENCY if count > MAX_FREQUENCY else count

    def _admit(self, candidate: _Entry, victim: _Entry) -> bool:
        """Whether the candidate should replace the victim (TinyLFU's admission)."""
        frequency = self._sketch.frequency
        candidate_frequency = frequency(candidate.slots) + candidate.uses
        if (
            candidate_frequency <= self.ADMIT_MARGIN
            and candidate_frequency < self.ADMIT_RANDOM_FROM
        ):
            return False  # it beats no victim and is not drawn: no need of the victim's
        if candidate_frequency > MAX_FREQUENCY:
            candidate_frequency = MAX_FREQUENCY
        victim_frequency = frequency(victim.slots) + victim.uses
        if victim_frequency > MAX_FREQUENCY:
            victim_frequency = MAX_FREQUENCY
        if candidate_frequency > victim_frequency + self.ADMIT_MARGIN:
            return True
        # A popular candidate losing may be an attack colliding with the victim's
        # counters; a rare random admission keeps such a victim from holding forever.
        return candidate_frequency >= self.ADMIT_RANDOM_FROM and self._random.random() < 1 / 128

    def _forget(self, queue: OrderedDict[Hashable, _Entry], entry: _Entry) -> None:
        """Account for ``entry`` having left ``queue``; the sketch keeps its uses."""
        weight = entry.weight
        self.weight -= weight
        if queue is self._window:
            self._window_size -= weight if self._weighted else 1
        elif queue is self._protected:
            self._protected_size -= weight if self._weighted else 1
        if entry.uses:
            self._sketch.add(entry.slots, entry.uses)

    def _victim(self, keep: _Entry | None) -> tuple[OrderedDict[Hashable, _Entry], Hashable]:
        """The queue and key to evict from main (or, with main empty, from the window)."""
        for queue in (self._probation, self._protected, self._window):
            for key, entry in queue.items():
                if entry is not keep:
                    return queue, key
        raise AssertionError("over a bound with only the kept key: it exceeds the bound")

    def _evict(self, keep: _Entry | None) -> list[Hashable]:
        """Move the window's overflow to probation as candidates, then evict until the
        bounds hold, each candidate against the front of probation (Caffeine's
        ``evictFromMain``). ``keep`` (an updated entry) is never evicted."""
        window, probation, protected = self._window, self._probation, self._protected
        weighted = self._weighted
        candidates: list[Hashable] = []
        window_size, window_max = self._window_size, self._window_max
        if window_size > window_max and window:
            seq, departed = self._probation_seq, self._departed
            while window_size > window_max and window:
                key, entry = window.popitem(last=False)
                units = entry.weight if weighted else 1
                window_size -= units
                departed += units
                probation[key] = entry
                entry.seq = seq
                seq += 1
                candidates.append(key)
            self._window_size, self._probation_seq, self._departed = window_size, seq, departed
        evicted: list[Hashable] = []
        max_entries, max_weight = self.max_entries, self.max_weight
        entries = len(window) + len(probation) + len(protected)
        if not (
            (max_entries is not None and entries > max_entries)
            or (max_weight is not None and self.weight > max_weight)
        ):
            return evicted
        pending = iter(candidates)
        while True:
            if probation and keep is None:
                queue, victim = probation, next(iter(probation))
            else:
                queue, victim = self._victim(keep)
            by_window = queue is window
            candidate: Hashable = _NO_KEY
            for candidate in pending:
                if candidate in probation:  # not already evicted as a victim
                    break
            else:
                candidate = _NO_KEY
            if candidate is victim:
                by_window = True  # probation holds only undecided candidates
            elif candidate is not _NO_KEY:
                entry = probation[candidate]
                if entry is not keep and not self._admit(entry, queue[victim]):
                    queue, victim, by_window = probation, candidate, True  # refused
            entry = queue.pop(victim)
            self._forget(queue, entry)
            self._haunt(by_window, victim, entry.weight if weighted else 1)
            evicted.append(victim)
            entries -= 1
            if not (
                (max_entries is not None and entries > max_entries)
                or (max_weight is not None and self.weight > max_weight)
            ):
                return evicted

    def _haunt(self, by_window: bool, key: Hashable, units: int) -> None:
        """Remember an evicted key's hash in the ghost list of the way it left."""
        ghost = hash(key)
        # A key set again without a miss may still be in a ghost: it moves to the end.
        ghost_window, ghost_main = self._ghost_window, self._ghost_main
        ghost_window.pop(ghost, None)
        if ghost_main:
            gone = ghost_main.pop(ghost, 0)
            if gone:
                self._ghost_main_units -= gone
        departed = self._departed
        if by_window:
            ghost_window[ghost] = departed
            count = self._ghost_count
            while len(ghost_window) > count:  # by length only: see ``_trim_ghosts``
                ghost_window.popitem(last=False)
        else:
            ghost_main[ghost] = units
            main_units = self._ghost_main_units + units
            limit, count = self._ghost_limit, self._ghost_count
            while ghost_main and (main_units > limit or len(ghost_main) > count):
                main_units -= ghost_main.popitem(last=False)[1]
            self._ghost_main_units = main_units
        self._haunted_at = departed

    def _bury_ghosts(self) -> None:
        """Drop the window ghosts that died by the last eviction (see ``_trim_ghosts``)."""
        ghost = self._ghost_window
        cutoff = self._haunted_at - self._ghost_limit
        while ghost and next(iter(ghost.values())) < cutoff:
            ghost.popitem(last=False)

    def _trim_ghosts(self) -> None:
        """Keep each ghost to one step: of window departures, and of main's evictions.

        A window ghost more than a step of departures old is dead: a miss on it does
        not count. An eviction trims that ghost by length only, so the dead (which
        departed first) may stay at its front; ``_bury_ghosts`` drops them, as of
        the last eviction, before a resize changes the step, so that a longer step
        does not bring them back.
        """
        limit, count = self._ghost_limit, self._ghost_count
        ghost = self._ghost_window
        oldest = self._departed - limit
        while ghost and (next(iter(ghost.values())) < oldest or len(ghost) > count):
            ghost.popitem(last=False)
        self._haunted_at = self._departed
        ghost = self._ghost_main
        while ghost and (self._ghost_main_units > limit or len(ghost) > count):
            self._ghost_main_units -= ghost.popitem(last=False)[1]

    def _resize_sketch(self) -> None:
        capacity = self._sketch_capacity()
        if capacity == self._sketch.capacity:
            return
        # A new table forgets the counts (Caffeine does the same when it grows); the
        # entries keep their own uses, and their slots move to the new table (those
        # of a bigger one would index past the end of a smaller one).
        sketch = self._sketch = FrequencySketch(capacity)
        locate = sketch.locate
        for queue in (self._window, self._probation, self._protected):
            for key, entry in queue.items():
                entry.slots = locate(key)
        if self._last_slots is not None:
            self._last_slots = locate(self._last_key)
        self._schedule()

    def _tick(self) -> None:
        """Age the sketch and let the climber step when their periods have elapsed."""
        if self.max_entries is None and len(self) > self._sketch.capacity // 2:
            self._resize_sketch()  # sized by entries, which only a weight bound leaves open
            return
        sketch = self._sketch
        if (
            self._hits + sketch.recorded >= self._age_at
            or sketch.door_additions >= self._door_limit
        ):
            sketch.age()
            for entry in self._entries():
                entry.uses >>= 1
            self._age_at = self._hits + sketch.recorded + sketch.sample_size
        if self._hits + self._misses >= self._climb_at:
            self._climb()
            self._climb_at = self._hits + self._misses + self.SAMPLE_FACTOR * sketch.capacity

    def _climb(self) -> None:
        """End a sample: step the split toward the side whose ghost missed more."""
        hits = self._hits - self._sample_hits
        misses = self._misses - self._sample_misses
        self._sample_hits, self._sample_misses = self._hits, self._misses
        # Main's side: what a step more of it would have hit (its ghost), or what a
        # step less would have lost (hits at the old end of probation), whichever is more.
        main_side = max(self._ghost_main_hits, self._main_edge_hits)
        toward_window = self._ghost_window_hits - main_side
        noise = (self._ghost_window_hits + main_side) ** 0.5  # Poisson counts
        self._ghost_window_hits = self._ghost_main_hits = 0
        self._main_edge_hits = 0
        if self._capacity is None or not hits + misses:
            return
        rate = hits / (hits + misses)
        if abs(rate - self._previous_rate) >= self.RESTART_THRESHOLD:
            self._step = self._full_step  # the workload changed: big steps again
        self._previous_rate = rate
        if abs(toward_window) < max(self.GHOST_MARGIN, self.GHOST_Z * noise):
            return
        step = int(self._step)
        self._move_split(step if toward_window > 0 else -step)
        self._step = max(self._step * self.STEP_DECAY, self._full_step * self.STEP_FLOOR)

    def _move_split(self, amount: int) -> None:
        """Grow the window by ``amount`` units (shrink it when negative), from protected."""
        if amount > 0:
            quota = min(amount, self._protected_max)
            self._protected_max -= quota
            self._window_max += quota
            self._demote()
        elif amount < 0:
            quota = min(-amount, max(0, self._window_max - 1))
            self._window_max -= quota
            self._protected_max += quota
        # The window's overflow leaves at the next insertion, through admission.


#: Policy classes by name; ``make_policy`` builds one.
POLICIES: dict[str, type[EvictionPolicy]] = {
    "lru": LRUPolicy,
    "fifo": FIFOPolicy,
    "lfu": LFUPolicy,
    "sieve": SievePolicy,
    "tinylfu": TinyLFUPolicy,
}


def make_policy(
    name: str, max_entries: int | None = None, max_weight: int | None = None
) -> EvictionPolicy:
    """A new policy called ``name`` with these bounds.

    Raises:
        ValueError: ``name`` is not one of :data:`POLICIES` (the message lists them),
            or a bound is below 1.
        TypeError: a bound is not an int.
    """
    try:
        cls = POLICIES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"policy must be one of {', '.join(sorted(POLICIES))}, not {name!r}"
        ) from None
    return cls(max_entries, max_weight)
