"""Virtual time for tests: a loop whose clock jumps when every task is waiting."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Mapping
from typing import Any

from asyncperf.abc import Cancellable

__all__ = ["VirtualClock", "VirtualEventLoop", "current_virtual_clock"]


class VirtualClock:
    """A clock that advances only when told to, or when its loop would sleep.

    On a :class:`VirtualEventLoop` it is the loop's time source: when no
    callback is ready and no I/O is pending, the loop jumps this clock straight
    to the next timer instead of sleeping (like trio's autojump clock).
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (timers now due run on the next loop pass).

        Raises:
            ValueError: ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self._check_loop()
        await asyncio.sleep(seconds)

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Cancellable:
        return self._check_loop().call_later(delay, callback, *args)

    def _check_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if getattr(loop, "clock", None) is not self:
            raise RuntimeError(
                "This VirtualClock is not the clock of the running loop; "
                "run the code on the VirtualEventLoop that owns it."
            )
        return loop

    def __repr__(self) -> str:
        return f"<VirtualClock now={self._now:.6f}>"


class _AutojumpSelector(selectors.BaseSelector):
    """Wraps the loop's selector: a wait for a timer becomes a jump of the clock."""

    def __init__(self, inner: selectors.BaseSelector, clock: VirtualClock) -> None:
        self._inner = inner
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            # No timer at all: only I/O (or another thread) can wake the loop.
            return self._inner.select(None)
        self._clock.advance(timeout)
        return []

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def close(self) -> None:
        self._inner.close()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()


class VirtualEventLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time.

    Time moves only when the loop would otherwise sleep until a timer: it then
    jumps to that timer. Work in other threads (``to_thread``) does not hold the
    clock back, so keep virtual-time tests to coroutine code.
    """

    loop_name = "asyncio (virtual time)"

    def __init__(self, clock: VirtualClock | None = None) -> None:
        super().__init__()
        self.clock = clock if clock is not None else VirtualClock()
        # BaseSelectorEventLoop keeps its selector here; every wait goes through select().
        self._selector: selectors.BaseSelector = _AutojumpSelector(self._selector, self.clock)

    def time(self) -> float:
        return self.clock._now


def current_virtual_clock() -> VirtualClock:
    """The clock of the running :class:`VirtualEventLoop`.

    Raises:
        RuntimeError: the running loop is not a ``VirtualEventLoop``.
    """
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VirtualEventLoop):
        raise RuntimeError("current_virtual_clock() needs a running VirtualEventLoop")
    return loop.clock
