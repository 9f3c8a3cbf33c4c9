"""PriorityQueue: bounded levels, drop strategies and weighted fair dequeue."""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from asyncperf._errors import DropReason, QueueClosed, QueueEmpty, QueueFull, Rejected
from asyncperf.abc import Clock
from asyncperf.loop import SystemClock

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

    Raises:
        TypeError: ``priority``, ``max_size`` or ``weight`` is not an int, or
            ``strategy`` is not a DropStrategy.
        ValueError: ``max_size`` or ``weight`` is below 1.
    """

    priority: int
    max_size: int = 1_000
    strategy: DropStrategy = DropStrategy.BLOCK
    weight: int = 1

    def __post_init__(self) -> None:
        for name in ("priority", "max_size", "weight"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if self.max_size < 1:
            raise ValueError("max_size must be >= 1")
        if self.weight < 1:
            raise ValueError("weight must be >= 1")
        if not isinstance(self.strategy, DropStrategy):
            raise TypeError(f"strategy must be a DropStrategy, not {type(self.strategy).__name__}")


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
    ``rejected`` items were never enqueued.
    """

    priority: int
    max_size: int
    strategy: DropStrategy
    weight: int
    depth: int
    enqueued: int
    dequeued: int
    dropped: int
    rejected: int
    removed: int
    oldest_age: float
    waiting_putters: int


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    """A snapshot of a whole :class:`PriorityQueue`."""

    levels: tuple[LevelStatistics, ...]
    depth: int
    waiting_getters: int
    waiting_putters: int
    closed: bool

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
        "dropped",
        "enqueued",
        "items",
        "level",
        "limit",
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
        self.limit = level.max_size
        self.strategy = level.strategy
        self.weight = level.weight
        self.items: deque[T] = deque()
        # Enqueue times, parallel to ``items``: the age of the oldest item and
        # each item's time in the queue come from here.
        self.times: deque[float] = deque()
        self.putters: deque[asyncio.Future[None]] = deque()
        self.enqueued = 0
        self.dropped = 0
        self.rejected = 0
        self.removed = 0


def _wake_one(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


class PriorityQueue(Generic[T]):
    """A bounded multi-level queue with drop strategies and weighted fair dequeue.

    Each :class:`Level` has its own bound and :class:`DropStrategy`. ``get``
    serves the levels by deficit round robin over their weights, so important
    levels get most of the service and no level with items starves. Every item
    that is refused or dropped is counted per level and reported to ``on_drop``
    (the pool turns that into :class:`~asyncperf.Dropped` for the job's caller).

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
        clock: the time source for item ages (default :class:`~asyncperf.SystemClock`).

    Raises:
        ValueError: no levels, two levels with one priority, or an unknown
            ``default_priority``.
        TypeError: a level is not a :class:`Level`.
    """

    def __init__(
        self,
        levels: Iterable[Level] | None = None,
        *,
        default_priority: int | None = None,
        on_drop: DropListener[T] | None = None,
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
        self._levels: list[_LevelState[T]] = [_LevelState(level) for level in level_list]
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

    def statistics(self) -> QueueStatistics:
        """A frozen snapshot of the queue and each level."""
        now = self._now()
        levels = tuple(
            LevelStatistics(
                priority=s.priority,
                max_size=s.limit,
                strategy=s.strategy,
                weight=s.weight,
                depth=len(s.items),
                enqueued=s.enqueued,
                dequeued=s.enqueued - s.dropped - s.removed - len(s.items),
                dropped=s.dropped,
                rejected=s.rejected,
                removed=s.removed,
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
            raise ValueError(f"priority must be one of {list(self._by_priority)}, not {priority!r}")
        return state

    def put_nowait(self, item: T, priority: int | None = None) -> None:
        """Queue ``item`` at once, applying the level's strategy if it is full.

        Raises:
            ValueError: ``priority`` names no level.
            QueueClosed: the queue is closed.
            QueueFull: the level is full and its strategy is BLOCK.
            Rejected: the level is full and its strategy is REJECT.
        """
        if not self.offer(item, priority):
            state = self._level(priority)
            raise QueueFull(f"level {state.priority} is full ({state.limit} items)")

    def offer(self, item: T, priority: int | None = None) -> bool:
        """Queue ``item`` if it can be done without waiting; False if its BLOCK level is full.

        The form of :meth:`put_nowait` for hot paths that expect a full queue:
        no exception is built when it is full.

        Raises:
            ValueError: ``priority`` names no level.
            QueueClosed: the queue is closed.
            Rejected: the level is full and its strategy is REJECT.
        """
        state = self._default if priority is None else self._level(priority)
        if self._closed:
            raise QueueClosed("Cannot put into a closed queue.")
        items = state.items
        if len(items) >= state.limit:
            if state.strategy is DropStrategy.BLOCK:
                return False
            self._overflow(state, item)
        items.append(item)
        state.times.append(self._now())
        state.enqueued += 1
        self._size += 1
        if self._getters:
            _wake_one(self._getters)
        return True

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
        if strategy is DropStrategy.DROP_OLDEST:
            victim = state.items.popleft()
            state.times.popleft()
        else:
            victim = state.items.pop()
            state.times.pop()
        state.dropped += 1
        self._size -= 1
        self._report_drop(victim, DropReason.EVICTED)

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

    async def put(self, item: T, priority: int | None = None) -> None:
        """Queue ``item``, waiting for room if its level is full and BLOCKs.

        Levels with another strategy never wait (see :meth:`put_nowait`).
        Cancellation-safe: a cancelled ``put`` has queued nothing.

        Raises:
            ValueError: ``priority`` names no level.
            QueueClosed: the queue is (or becomes, while waiting) closed.
            Rejected: the level is full and its strategy is REJECT.
        """
        state = self._level(priority)
        while (
            len(state.items) >= state.limit
            and state.strategy is DropStrategy.BLOCK
            and not self._closed
        ):
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
                if len(state.items) < state.limit and not waiter.cancelled():
                    # We were woken but will not use the room: pass the wake-up on.
                    _wake_one(state.putters)
                raise
        self.put_nowait(item, state.priority)

    # -- getting ------------------------------------------------------------------

    def get_nowait(self) -> T:
        """Take the next item by weighted round robin over the levels.

        Raises:
            QueueEmpty: no item is queued.
        """
        if not self._size:
            raise QueueEmpty("the queue is empty")
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
        return self.get_nowait()

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
        state.removed += 1
        self._size -= 1
        if state.putters:
            _wake_one(state.putters)
        return True

    def drop_all(self, reason: DropReason = DropReason.SHUTDOWN) -> int:
        """Drop every queued item, reporting each to ``on_drop``; returns how many."""
        dropped = 0
        for state in self._levels:
            while state.items:
                item = state.items.popleft()
                state.times.popleft()
                state.dropped += 1
                self._size -= 1
                dropped += 1
                self._report_drop(item, reason)
            while state.putters:
                _wake_one(state.putters)
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
