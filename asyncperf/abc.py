"""Interfaces users may implement to plug their own parts into asyncperf."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["Cancellable", "Clock"]


class Cancellable(Protocol):
    """A scheduled callback that can be called off (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None: ...


@runtime_checkable
class Clock(Protocol):
    """The source of time for everything in asyncperf that measures or waits.

    Components take ``clock=`` and read time only through it, so tests can run
    them on virtual time (:class:`asyncperf.testing.VirtualClock`). ``now()``
    must be monotonic; ``sleep`` and ``call_later`` must agree with ``now()``.
    """

    def now(self) -> float:
        """Seconds on a monotonic scale; only differences are meaningful."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""
        ...

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Cancellable:
        """Run ``callback(*args)`` on the running loop after ``delay`` seconds of this clock."""
        ...
