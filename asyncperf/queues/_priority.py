"""PriorityQueue: bounded levels, drop strategies, weighted fair dequeue, and shedding."""

from __future__ import annotations

import asyncio
import enum
import math
import sys
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from asyncperf._errors import DropReason, QueueClosed, QueueEmpty, QueueFull, Rejected
from asyncperf._validate import check_int, check_number
from asyncperf.abc import Cancellable, Clock
from asyncperf.loop import SystemClock
from asyncperf.queues._codel import CoDel

__all__ = [
    "DEFAULT_LEVELS",
    "DropStrategy",
    "Level",
    "LevelStatistics",
    "PriorityQueue",
    "QueueStatistics",
]

T = TypeVar("T")
DropListener = Callable[[T, DropReason], None]

# Sweeps for expired deadlines run at most this often (seconds): callers hear
# of a passed deadline within this long, and a long queue is scanned at most
# this often.
_DEADLINE_SWEEP_GAP = 0.01


class DropStrategy(enum.Enum):
    """What a full level does with one more item."""

    #: ``put`` waits for room; ``put_nowait`` raises :class:`~asyncperf.QueueFull`.
    BLOCK = "block"
    #: The incoming item is refused with :class:`~asyncperf.Rejected`.
    REJECT = "reject"
    #: The oldest queued item of the level is dropped to make room.
    DROP_OLDEST = "drop_oldest"
    #: The youngest queued item of the level is dropped to make room.
    DROP_NEWEST = "drop_newest"


@dataclass(frozen=True, slots=True)
class Level:
    """One priority level of a :class:`PriorityQueue`.

    Args:
        priority: the level's number; lower numbers are more important.
        max_size: how many items the level holds at most (bounded by default: a
            queue is where memory goes in a burst).
        strategy: what happens when the level is full.
        weight: the level's share of dequeues while other levels also have
            items (deficit round robin): weights 8, 2, 1 give 8 of every 11 gets
            to the first level, and no level with items ever starves.
        share: the fraction of the queue's ``max_total`` kept for this level
            when the queue is full as a whole (see :class:`PriorityQueue`);
            while there is room, any level may use more.

    Raises:
        TypeError: ``priority``, ``max_size`` or ``weight`` is not an int, or
            ``strategy`` is not a DropStrategy.
        ValueError: ``max_size`` or ``weight`` is below 1, or ``share`` is
            not between 0 and 1.
    """

    priority: int
    max_size: int = 1_000
    strategy: DropStrategy = DropStrategy.BLOCK
    weight: int = 1
    share: float = 0.0

    def __post_init__(self) -> None:
        check_int("priority", self.priority)
        check_int("max_size", self.max_size, minimum=1)
        check_int("weight", self.weight, minimum=1)
        if not isinstance(self.strategy, DropStrategy):
            raise TypeError(f"strategy must be a DropStrategy, not {type(self.strategy).__name__}")
        if isinstance(self.share, bool) or not isinstance(self.share, int | float):
            raise TypeError(f"share must be a number, not {type(self.share).__name__}")
        if not 0 <= self.share <= 1:
            raise ValueError("share must be between 0 and 1")


#: Three levels (0 high, 1 normal, 2 low) with weights 4:2:1, all BLOCK.
DEFAULT_LEVELS = (
    Level(priority=0, max_size=10_000, weight=4),
    Level(priority=1, max_size=10_000, weight=2),
    Level(priority=2, max_size=10_000, weight=1),
)


@dataclass(frozen=True, slots=True)
class LevelStatistics:
    """A snapshot of one level.

    ``enqueued == dequeued + dropped + removed + depth`` always holds;
    ``rejected`` items were never enqueued. ``drops`` splits ``dropped`` by
    reason. ``bound`` is the bound in force: ``max_size`` unless
    :meth:`PriorityQueue.adjust` has tightened it.
    """

    priority: int
    max_size: int
    bound: int
    strategy: DropStrategy
    weight: int
    depth: int
    enqueued: int
    dequeued: int
    dropped: int
    rejected: int
    removed: int
    drops: dict[DropReason, int]
    oldest_age: float
    waiting_putters: int


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    """A snapshot of a whole :class:`PriorityQueue`.

    ``load`` is the last value given to :meth:`PriorityQueue.adjust`;
    ``standing`` says whether CoDel sees a standing queue (not empty for a
    whole interval), in which case it sheds and serves newest first.
    """

    levels: tuple[LevelStatistics, ...]
    depth: int
    waiting_getters: int
    waiting_putters: int
    closed: bool
    load: float
    standing: bool

    def level(self, priority: int) -> LevelStatistics:
        """The statistics of the level ``priority``.

        Raises:
            KeyError: there is no such level.
        """
        for level in self.levels:
            if level.priority == priority:
                return level
        raise KeyError(priority)


class _LevelState(Generic[T]):
    """The mutable side of a level. Hot-path object: slots, plain attributes."""

    __slots__ = (
        "drops",
        "enqueued",
        "expiries",
        "guaranteed",
        "items",
        "level",
        "limit",
        "max_size",
        "priority",
        "putters",
        "rejected",
        "removed",
        "strategy",
        "times",
        "weight",
    )

    def __init__(self, level: Level) -> None:
        self.level = level
        self.priority = level.priority
        self.max_size = level.max_size
        # The bound in force; adjust() moves it between a floor and max_size.
        self.limit = level.max_size
        self.strategy = level.strategy
        self.weight = level.weight
        self.items: deque[T] = deque()
        # Enqueue times, parallel to ``items``: the age of the oldest item and
        # each item's time in the queue come from here.
        self.times: deque[float] = deque()
        # Absolute deadlines, parallel to ``items`` (None for items without
        # one); created when the level gets its first item with a deadline,
        # so queues that never use deadlines pay nothing for them.
        self.expiries: deque[float | None] | None = None
        self.putters: deque[asyncio.Future[None]] = deque()
        # Items this level keeps when the whole queue is full (share * max_total).
        self.guaranteed = 0
        self.enqueued = 0
        self.rejected = 0
        self.removed = 0
        self.drops: dict[DropReason, int] = {}

    def pop_left(self) -> tuple[T, float, float | None]:
        expiry = self.expiries.popleft() if self.expiries is not None else None
        return self.items.popleft(), self.times.popleft(), expiry

    def pop_right(self) -> tuple[T, float, float | None]:
        expiry = self.expiries.pop() if self.expiries is not None else None
        return self.items.pop(), self.times.pop(), expiry


def _wake_one(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


class PriorityQueue(Generic[T]):
    """A bounded multi-level queue with drop strategies, weighted fair dequeue and shedding.

    Each :class:`Level` has its own bound and :class:`DropStrategy`. ``get``
    serves the levels by deficit round robin over their weights, so important
    levels get most of the service and no level with items starves. Every item
    that is refused or dropped is counted per level and reported to ``on_drop``
    (the pool turns that into :class:`~asyncperf.Dropped` for the job's caller).

    Under overload the queue sheds early instead of serving late:

    - an item put with ``deadline=`` is dropped (:attr:`DropReason.DEADLINE`)
      if it is still queued when its deadline passes: its caller has given up;
    - with ``codel=`` (see :class:`CoDel`), a queue that stays non-empty for a
      whole interval drops items that have waited past the sojourn limit
      (:attr:`DropReason.CODEL`) and serves the newest first;
    - :meth:`adjust` tightens the bounds of the lower levels first as the
      load rises, and relaxes them as it falls;
    - with ``max_total=``, the levels share one bound as well as their own.
      While the queue has room any level may burst into it; once it is full,
      an incoming item takes the place of the oldest item of the least
      important level that holds more than its guaranteed ``share``
      (:attr:`DropReason.SHED`), looking first at levels less important than
      its own and, if its own level is below its share, at any level. With no
      such place, the item's own level strategy decides (wait, refuse, or
      evict within the level).

    Expired items are dropped when a get reaches them and by a sweep timer,
    so their callers hear of it promptly even while nothing is dequeued.

    ``put_nowait`` and ``get_nowait`` never yield to the loop; ``put`` and
    ``get`` wait only when they must (a full BLOCK level, an empty queue), and
    are cancellation-safe: a cancelled waiter takes nothing and passes on a
    wake-up it was given.

    Args:
        levels: the levels (distinct priorities); default :data:`DEFAULT_LEVELS`.
        default_priority: the level used when ``put`` names none; default the
            middle level (priority 1 of the default levels).
        on_drop: called as ``on_drop(item, reason)`` for every item refused or
            dropped; an exception it raises goes to the loop's exception handler.
        codel: CoDel shedding and adaptive LIFO; off by default.
        max_total: a bound on all levels together, with priority shedding
            when it is reached (see above); None for per-level bounds only.
        shrink_to: the fraction of ``max_size`` :meth:`adjust` may shrink a
            level's bound to (never below one item).
        full_load: the load at which :meth:`adjust` has shrunk every level to
            ``shrink_to``.
        clock: the time source for ages, deadlines and CoDel (default
            :class:`~asyncperf.SystemClock`).

    Raises:
        ValueError: no levels, two levels with one priority, an unknown
            ``default_priority``, ``shrink_to``/``full_load``/``max_total`` out
            of range, or shares that add up to more than 1.
        TypeError: a level is not a :class:`Level`, or ``codel`` not a :class:`CoDel`.
    """

    def __init__(
        self,
        levels: Iterable[Level] | None = None,
        *,
        default_priority: int | None = None,
        on_drop: DropListener[T] | None = None,
        codel: CoDel | None = None,
        max_total: int | None = None,
        shrink_to: float = 0.1,
        full_load: float = 3.0,
        clock: Clock | None = None,
    ) -> None:
        level_list = list(DEFAULT_LEVELS if levels is None else levels)
        if not level_list:
            raise ValueError("levels must not be empty")
        for level in level_list:
            if not isinstance(level, Level):
                raise TypeError(f"levels must hold Level objects, not {type(level).__name__}")
        level_list.sort(key=lambda level: level.priority)
        priorities = [level.priority for level in level_list]
        if len(set(priorities)) != len(priorities):
            raise ValueError(f"levels must have distinct priorities, got {priorities}")
        if codel is not None and not isinstance(codel, CoDel):
            raise TypeError(f"codel must be a CoDel, not {type(codel).__name__}")
        if not 0 < shrink_to <= 1:
            raise ValueError("shrink_to must be > 0 and <= 1")
        if not 1 < full_load < math.inf:
            raise ValueError("full_load must be > 1 and finite")
        if max_total is not None:
            check_int("max_total", max_total, minimum=1)
            if sum(level.share for level in level_list) > 1 + 1e-9:
                raise ValueError("the shares of the levels must add up to 1 at most")
        self._levels: list[_LevelState[T]] = [_LevelState(level) for level in level_list]
        # sys.maxsize stands for "no total bound": the hot path makes one comparison.
        self._max_total = max_total if max_total is not None else sys.maxsize
        for state in self._levels:
            state.guaranteed = int(state.level.share * max_total) if max_total else 0
        self._by_priority = {state.priority: state for state in self._levels}
        if default_priority is None:
            default_priority = priorities[len(priorities) // 2]
        if default_priority not in self._by_priority:
            raise ValueError(
                f"default_priority must be one of {priorities}, not {default_priority!r}"
            )
        self._default = self._by_priority[default_priority]
        self._drop_listeners: list[DropListener[T]] = [] if on_drop is None else [on_drop]
        self._clock = clock if clock is not None else SystemClock()
        self._now = self._clock.now
        self._size = 0
        self._closed = False
        self._getters: deque[asyncio.Future[None]] = deque()
        # Deficit round robin state: the level being served and how many more
        # items it may give before the turn passes on. Whenever the queue runs
        # empty, the next round starts again at the most important level.
        self._current = len(self._levels) - 1
        self._deficit = 0
        #: Enqueue time of the item the last get_nowait() returned (read by the pool).
        self._last_enqueued_at = 0.0
        # When the queue last went from empty to non-empty: CoDel's standing-queue test.
        self._nonempty_since = 0.0
        self._codel = codel
        # True once puts and gets must do more than append and pop: check ages
        # or deadlines, or shed and wake across levels under the total bound
        # (CoDel on, max_total set, or a deadline seen). Until then both paths
        # stay free of those checks.
        self._policing = codel is not None or max_total is not None
        self._sweep_handle: Cancellable | None = None
        self._sweep_at = math.inf
        # No queued deadline is earlier than this (it may be stale-early: the
        # item may have left); a sweep scans for expired items only after it.
        self._earliest_expiry = math.inf
        self._shrink_to = shrink_to
        self._full_load = full_load
        self._load = 1.0

    # -- inspection ---------------------------------------------------------------

    @property
    def priorities(self) -> tuple[int, ...]:
        """The level priorities, most important first."""
        return tuple(state.priority for state in self._levels)

    @property
    def default_priority(self) -> int:
        return self._default.priority

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def codel(self) -> CoDel | None:
        return self._codel

    def qsize(self) -> int:
        """Items queued over all levels."""
        return self._size

    def __len__(self) -> int:
        return self._size

    def empty(self) -> bool:
        return self._size == 0

    def full(self, priority: int | None = None) -> bool:
        """Whether the level ``priority`` (default level if None) is at its bound."""
        state = self._level(priority)
        return len(state.items) >= state.limit

    def _standing(self, now: float) -> bool:
        codel = self._codel
        return codel is not None and self._size > 0 and now - self._nonempty_since > codel.interval

    def statistics(self) -> QueueStatistics:
        """A frozen snapshot of the queue and each level."""
        now = self._now()
        levels = tuple(
            LevelStatistics(
                priority=s.priority,
                max_size=s.max_size,
                bound=s.limit,
                strategy=s.strategy,
                weight=s.weight,
                depth=len(s.items),
                enqueued=s.enqueued,
                dequeued=s.enqueued - sum(s.drops.values()) - s.removed - len(s.items),
                dropped=sum(s.drops.values()),
                rejected=s.rejected,
                removed=s.removed,
                drops=dict(s.drops),
                oldest_age=(now - s.times[0]) if s.times else 0.0,
                waiting_putters=sum(1 for f in s.putters if not f.done()),
            )
            for s in self._levels
        )
        return QueueStatistics(
            levels=levels,
            depth=self._size,
            waiting_getters=sum(1 for f in self._getters if not f.done()),
            waiting_putters=sum(level.waiting_putters for level in levels),
            closed=self._closed,
            load=self._load,
            standing=self._standing(now),
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<PriorityQueue {len(self._levels)} levels, {self._size} queued, {state}>"

    # -- putting ------------------------------------------------------------------

    def _level(self, priority: int | None) -> _LevelState[T]:
        if priority is None:
            return self._default
        state = self._by_priority.get(priority)
        if state is None:
            raise self._unknown_priority(priority)
        return state

    def _unknown_priority(self, priority: object) -> ValueError:
        return ValueError(f"priority must be one of {list(self._by_priority)}, not {priority!r}")

    def put_nowait(
        self, item: T, priority: int | None = None, *, deadline: float | None = None
    ) -> None:
        """Queue ``item`` at once, applying the level's strategy if it is full.

        Args:
            item: what to queue.
            priority: its level; default the queue's default level.
            deadline: seconds from now by which the item must have been taken;
                if it is still queued then, it is dropped and reported
                (:attr:`DropReason.DEADLINE`).

        Raises:
            ValueError: ``priority`` names no level, or ``deadline`` is not positive.
            QueueClosed: the queue is closed.
            QueueFull: the level is full and its strategy is BLOCK.
            Rejected: the level is full and its strategy is REJECT.
        """
        if not self._offer(item, priority, deadline):
            state = self._level(priority)
            raise QueueFull(f"level {state.priority} is full ({state.limit} items)")

    def offer(self, item: T, priority: int | None = None, *, deadline: float | None = None) -> bool:
        """Queue ``item`` if it can be done without waiting; False if its BLOCK level is full.

        The form of :meth:`put_nowait` for hot paths that expect a full queue:
        no exception is built when it is full.

        Raises:
            ValueError: ``priority`` names no level, or ``deadline`` is not positive.
            QueueClosed: the queue is closed.
            Rejected: the level is full and its strategy is REJECT.
        """
        return self._offer(item, priority, deadline)

    def _offer(self, item: T, priority: int | None, deadline: float | None) -> bool:
        """offer() with positional arguments only.

        This is the per-item path of the queue and the pool: keyword-only
        defaults are looked up in a dict on every call, positional ones are not.
        """
        if priority is None:
            state = self._default
        else:
            found = self._by_priority.get(priority)
            if found is None:
                raise self._unknown_priority(priority)
            state = found
        if self._closed:
            raise QueueClosed("Cannot put into a closed queue.")
        items = state.items
        if len(items) >= state.limit:
            if state.strategy is DropStrategy.BLOCK:
                return False
            self._overflow(state, item)
        if self._policing or deadline is not None:
            return self._offer_policed(state, item, deadline)
        items.append(item)
        state.times.append(self._now())
        state.enqueued += 1
        self._size += 1
        if self._getters:
            _wake_one(self._getters)
        return True

    def _offer_policed(self, state: _LevelState[T], item: T, deadline: float | None) -> bool:
        """The rest of _offer when a total bound, deadlines or CoDel are in play."""
        if self._size >= self._max_total and not self._make_room(state, item):
            return False
        now = self._now()
        if deadline is not None or state.expiries is not None:
            self._add_expiry(state, now, deadline)
        state.items.append(item)
        state.times.append(now)
        state.enqueued += 1
        if self._codel is not None and not self._size:
            self._nonempty_since = now
            self._arm_sweep(now + self._codel.interval)
        self._size += 1
        if self._getters:
            _wake_one(self._getters)
        return True

    def _add_expiry(self, state: _LevelState[T], now: float, deadline: float | None) -> None:
        """Record the deadline of the item about to be appended to ``state``."""
        expiry = None
        if deadline is not None:
            expiry = now + check_number("deadline", deadline)
            self._policing = True
            if expiry < self._earliest_expiry:
                self._earliest_expiry = expiry
            self._arm_sweep(expiry)
        if state.expiries is None:
            state.expiries = deque([None] * len(state.items))
        state.expiries.append(expiry)

    def _overflow(self, state: _LevelState[T], item: T) -> None:
        """Make room in a full non-BLOCK level or refuse ``item``; returns only with room."""
        strategy = state.strategy
        if strategy is DropStrategy.REJECT:
            state.rejected += 1
            self._report_drop(item, DropReason.REJECTED)
            raise Rejected(
                f"level {state.priority} is full ({state.limit} items) and rejects new items",
                reason=DropReason.REJECTED,
                priority=state.priority,
            )
        victim = (state.pop_left() if strategy is DropStrategy.DROP_OLDEST else state.pop_right())[
            0
        ]
        self._size -= 1
        self._count_drop(state, victim, DropReason.EVICTED)

    def _make_room(self, state: _LevelState[T], item: T) -> bool:
        """The queue is full as a whole: shed for ``item`` of ``state``, or refuse it.

        Returns False when the item's level BLOCKs (its putter waits for room).

        Raises:
            Rejected: no place can be taken and the level does not block or evict.
        """
        victim_level = None
        # Least important first, among the levels less important than the item's...
        for other in reversed(self._levels):
            if other is state:
                break
            if len(other.items) > other.guaranteed:
                victim_level = other
                break
        # ...or among all levels when the item's own level is below its share.
        if victim_level is None and len(state.items) < state.guaranteed:
            for other in reversed(self._levels):
                if other is not state and len(other.items) > other.guaranteed:
                    victim_level = other
                    break
        if victim_level is not None:
            victim = victim_level.pop_left()[0]
            self._size -= 1
            self._count_drop(victim_level, victim, DropReason.SHED)
            return True
        strategy = state.strategy
        if strategy is DropStrategy.BLOCK:
            return False
        if strategy is not DropStrategy.REJECT and state.items:
            self._overflow(state, item)  # evict within its own level, as when the level is full
            return True
        state.rejected += 1
        self._report_drop(item, DropReason.REJECTED)
        raise Rejected(
            f"the queue is full ({self._max_total} items) and level {state.priority} "
            "has no lower level to shed",
            reason=DropReason.REJECTED,
            priority=state.priority,
        )

    def _after_removal(self, state: _LevelState[T]) -> None:
        """An item left ``state``: let a putter waiting for that room in."""
        if state.putters:
            _wake_one(state.putters)
        elif self._max_total != sys.maxsize:
            self._wake_for_room()

    def _wake_for_room(self) -> None:
        """An item left a full queue: wake the most important putter whose level has room."""
        for state in self._levels:
            if state.putters and len(state.items) < state.limit:
                _wake_one(state.putters)
                return

    def _count_drop(self, state: _LevelState[T], item: T, reason: DropReason) -> None:
        """Count and report an item already taken out of ``state``."""
        state.drops[reason] = state.drops.get(reason, 0) + 1
        self._report_drop(item, reason)

    def _report_drop(self, item: T, reason: DropReason) -> None:
        for listener in self._drop_listeners:
            try:
                listener(item, reason)
            except Exception as exc:
                # A failing hook must not undo the queue operation; it is reported.
                asyncio.get_running_loop().call_exception_handler(
                    {
                        "message": "PriorityQueue on_drop hook failed",
                        "exception": exc,
                        "queue": self,
                    }
                )

    async def put(
        self, item: T, priority: int | None = None, *, deadline: float | None = None
    ) -> None:
        """Queue ``item``, waiting for room if its level is full and BLOCKs.

        Levels with another strategy never wait (see :meth:`put_nowait`).
        Cancellation-safe: a cancelled ``put`` has queued nothing. The
        ``deadline`` counts from when the item is queued, not from the call.

        Raises:
            ValueError: ``priority`` names no level, or ``deadline`` is not positive.
            QueueClosed: the queue is (or becomes, while waiting) closed.
            Rejected: the level is full and its strategy is REJECT.
        """
        state = self._level(priority)
        while True:
            if self._offer(item, state.priority, deadline):
                return
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            state.putters.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                try:
                    state.putters.remove(waiter)
                except ValueError:
                    pass  # already taken off the list by the wake-up
                if not waiter.cancelled() and len(state.items) < state.limit:
                    # We were woken but will not use the room: pass the wake-up on.
                    self._after_removal(state)
                raise

    # -- getting ------------------------------------------------------------------

    def get_nowait(self) -> T:
        """Take the next item by weighted round robin over the levels.

        Raises:
            QueueEmpty: no item is queued (or every queued item had expired
                and was dropped).
        """
        if not self._size:
            raise QueueEmpty("the queue is empty")
        if self._policing:
            return self._get_policed()
        state = self._levels[self._current]
        items = state.items
        if items and self._deficit > 0:
            self._deficit -= 1
        elif items and len(items) == self._size:
            # The only level with items keeps the turn: no scan needed.
            self._deficit = state.weight - 1
        else:
            state = self._next_turn()
            items = state.items
        self._last_enqueued_at = state.times.popleft()
        self._size -= 1
        if not self._size:
            self._current = len(self._levels) - 1
            self._deficit = 0
        if state.putters:
            _wake_one(state.putters)
        return items.popleft()

    def _choose(self) -> _LevelState[T]:
        """The level whose turn it is (the same choice as the fast path of get_nowait)."""
        state = self._levels[self._current]
        if state.items and self._deficit > 0:
            self._deficit -= 1
        elif state.items and len(state.items) == self._size:
            self._deficit = state.weight - 1
        else:
            state = self._next_turn()
        return state

    def _get_policed(self) -> T:
        """get_nowait when ages or deadlines matter: shed what expired, then serve."""
        now = self._now()
        lifo = False
        codel = self._codel
        if codel is not None and self._standing(now):
            lifo = codel.adaptive_lifo
            self._shed_old(now - 2 * codel.target)
        elif codel is not None:
            self._shed_old(now - codel.interval)
        while self._size:
            state = self._choose()
            item, enqueued_at, expiry = state.pop_right() if lifo else state.pop_left()
            self._size -= 1
            self._after_removal(state)
            if expiry is not None and expiry <= now:
                self._count_drop(state, item, DropReason.DEADLINE)
                continue
            self._last_enqueued_at = enqueued_at
            if not self._size:
                self._current = len(self._levels) - 1
                self._deficit = 0
            return item
        self._current = len(self._levels) - 1
        self._deficit = 0
        raise QueueEmpty("every queued item had expired")

    def _shed_old(self, cutoff: float) -> None:
        """CoDel: drop the items of every level enqueued before ``cutoff``."""
        for state in self._levels:
            times = state.times
            while times and times[0] < cutoff:
                item = state.pop_left()[0]
                self._size -= 1
                self._count_drop(state, item, DropReason.CODEL)
                self._after_removal(state)

    def _next_turn(self) -> _LevelState[T]:
        """Pass the turn to the next level with items, which may give `weight` items in a row."""
        levels = self._levels
        index = self._current
        count = len(levels)
        while True:
            index += 1
            if index == count:
                index = 0
            state = levels[index]
            if state.items:
                self._current = index
                self._deficit = state.weight - 1
                return state

    async def get(self) -> T:
        """Take the next item, waiting for one if the queue is empty.

        Cancellation-safe: a cancelled ``get`` has taken nothing.

        Raises:
            QueueClosed: the queue is closed and empty.
        """
        while True:
            while not self._size:
                if self._closed:
                    raise QueueClosed("the queue is closed and empty")
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._getters.append(waiter)
                try:
                    await waiter
                except BaseException:
                    waiter.cancel()
                    try:
                        self._getters.remove(waiter)
                    except ValueError:
                        pass
                    # qsize(), not _size: the loop condition would narrow _size to 0.
                    if self.qsize() and not waiter.cancelled():
                        _wake_one(self._getters)
                    raise
            try:
                return self.get_nowait()
            except QueueEmpty:
                continue  # everything left had expired: wait for the next item

    # -- expiry sweeps ------------------------------------------------------------

    def _arm_sweep(self, when: float) -> None:
        """Make sure a sweep runs at ``when`` at the latest (needs a running loop)."""
        if when >= self._sweep_at:
            return
        try:
            handle = self._clock.call_later(max(when - self._now(), 0.0), self._sweep)
        except RuntimeError:
            return  # no running loop: expired items are still dropped when reached
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        self._sweep_handle = handle
        self._sweep_at = when

    def _sweep(self) -> None:
        """Drop what has expired although no get reached it, then re-arm for what is next.

        Deadlines are looked for only once the earliest one has passed, and a
        level is rebuilt in one pass, so a mass expiry costs O(n), not O(n²);
        passes are at least ``_DEADLINE_SWEEP_GAP`` apart. CoDel's shedding of
        old items repeats every quarter interval while the queue is not empty,
        so callers hear of it even when every worker is busy.
        """
        self._sweep_handle = None
        self._sweep_at = math.inf
        now = self._now()
        codel = self._codel
        if codel is not None and self._size:
            limit = 2 * codel.target if self._standing(now) else codel.interval
            self._shed_old(now - limit)
        if now >= self._earliest_expiry:
            self._earliest_expiry = self._drop_expired(now)
        upcoming = self._earliest_expiry
        if upcoming < math.inf:
            upcoming = max(upcoming, now + _DEADLINE_SWEEP_GAP)
        if codel is not None and self._size:
            upcoming = min(upcoming, now + codel.interval / 4)
        if upcoming < math.inf:
            self._arm_sweep(upcoming)

    def _drop_expired(self, now: float) -> float:
        """Drop every queued item whose deadline has passed; returns the earliest one left."""
        earliest = math.inf
        for state in self._levels:
            expiries = state.expiries
            if expiries is None:
                continue
            kept_items: deque[T] = deque()
            kept_times: deque[float] = deque()
            kept_expiries: deque[float | None] = deque()
            for item, enqueued_at, expiry in zip(state.items, state.times, expiries, strict=True):
                if expiry is not None:
                    if expiry <= now:
                        self._size -= 1
                        self._count_drop(state, item, DropReason.DEADLINE)
                        continue
                    earliest = min(earliest, expiry)
                kept_items.append(item)
                kept_times.append(enqueued_at)
                kept_expiries.append(expiry)
            if len(kept_items) != len(state.items):
                freed = len(state.items) - len(kept_items)
                state.items, state.times, state.expiries = kept_items, kept_times, kept_expiries
                for _ in range(freed):
                    self._after_removal(state)
        return earliest

    # -- load ---------------------------------------------------------------------

    def adjust(self, load: float) -> None:
        """Tighten the lower levels' bounds as ``load`` rises above 1; relax them as it falls.

        ``load`` is offered work over capacity (1.0 = just saturated). Between
        1 and ``full_load`` the levels shrink in turn, least important first,
        each down to ``shrink_to`` of its ``max_size``; the most important
        level shrinks last. At 1 or below every level has its ``max_size``.
        The bounds depend only on ``load`` (calling it twice changes nothing),
        queued items are never dropped by it (a shrunk level just refuses or
        blocks new ones until it drains), and the bound in force shows in
        ``statistics()`` as ``bound``.

        Raises:
            ValueError: ``load`` is negative or not finite.
        """
        self._load = load = check_number("load", load, strict=False)
        pressure = min(max((load - 1) / (self._full_load - 1), 0.0), 1.0)
        count = len(self._levels)
        # Rank 0 is the least important level: it takes the first share of the pressure.
        for rank, state in enumerate(reversed(self._levels)):
            share = min(max(pressure * count - rank, 0.0), 1.0)
            bound = round(state.max_size * (1 - share * (1 - self._shrink_to)))
            state.limit = max(1, min(state.max_size, bound))
            while state.putters and len(state.items) < state.limit:
                _wake_one(state.putters)

    # -- removal and shutdown -----------------------------------------------------

    def remove(self, item: T, priority: int | None = None) -> bool:
        """Take ``item`` (the first equal item) out of its level without delivering it.

        Returns:
            Whether the item was found; a removed item is counted as ``removed``.

        Raises:
            ValueError: ``priority`` names no level.
        """
        state = self._level(priority)
        try:
            index = state.items.index(item)
        except ValueError:
            return False
        del state.items[index]
        del state.times[index]
        if state.expiries is not None:
            del state.expiries[index]
        state.removed += 1
        self._size -= 1
        self._after_removal(state)
        return True

    def drop_all(self, reason: DropReason = DropReason.SHUTDOWN) -> int:
        """Drop every queued item, reporting each to ``on_drop``; returns how many."""
        dropped = 0
        for state in self._levels:
            while state.items:
                item = state.pop_left()[0]
                self._size -= 1
                dropped += 1
                self._count_drop(state, item, reason)
            while state.putters:
                _wake_one(state.putters)
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
            self._sweep_at = math.inf
        return dropped

    def close(self) -> None:
        """Refuse new items from now on; queued items can still be taken.

        Waiting putters fail with :class:`~asyncperf.QueueClosed`, and so do
        getters once the queue is empty. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        for state in self._levels:
            while state.putters:
                _wake_one(state.putters)
        # Every getter re-checks: it takes an item if one is left, else fails.
        while self._getters:
            _wake_one(self._getters)

    def _add_drop_listener(self, listener: DropListener[T]) -> None:
        """Hook used by the pool to fail the jobs the queue drops."""
        self._drop_listeners.insert(0, listener)
