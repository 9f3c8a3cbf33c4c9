"""Layer 0: the event loop, its selection, and the clock.

``run(main())`` runs a coroutine on uvloop when it is installed and on asyncio's
own loop otherwise; ``loop_name()`` says which one is running, and the pool's
statistics carry it so benchmark figures always name their loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from asyncperf.abc import Cancellable

__all__ = [
    "LoopChoice",
    "SystemClock",
    "available_loops",
    "loop_name",
    "new_event_loop",
    "run",
]

T = TypeVar("T")
LoopChoice = Literal["auto", "uvloop", "asyncio"]
_CHOICES = ("auto", "uvloop", "asyncio")


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # not installable on this platform (Windows) or not installed
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def available_loops() -> tuple[str, ...]:
    """The loop implementations importable here, best first."""
    return ("uvloop", "asyncio") if _uvloop_factory() is not None else ("asyncio",)


def _loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if loop not in _CHOICES:
        raise ValueError(f"loop must be one of 'auto', 'uvloop', 'asyncio', not {loop!r}")
    if loop == "asyncio":
        return asyncio.new_event_loop
    factory = _uvloop_factory()
    if factory is not None:
        return factory
    if loop == "uvloop":
        raise RuntimeError(
            "loop='uvloop' was asked for but uvloop is not installed; "
            "install it with 'pip install uvloop' or pass loop='auto'."
        )
    return asyncio.new_event_loop


def new_event_loop(loop: LoopChoice = "auto", *, debug: bool = False) -> asyncio.AbstractEventLoop:
    """Create a new event loop.

    Args:
        loop: ``"auto"`` (uvloop when importable, else asyncio), ``"uvloop"`` or ``"asyncio"``.
        debug: turn on asyncio's debug mode for the loop.

    Raises:
        ValueError: ``loop`` is not one of the three choices.
        RuntimeError: ``loop="uvloop"`` but uvloop is not installed.
    """
    new_loop = _loop_factory(loop)()
    new_loop.set_debug(debug)
    return new_loop


def run(main: Coroutine[Any, Any, T], *, loop: LoopChoice = "auto", debug: bool = False) -> T:
    """Run ``main`` to completion on a new loop and return its result.

    Like ``asyncio.run`` (the loop is closed afterwards, async generators and
    the default executor are shut down), with the choice of loop.

    Raises:
        ValueError: ``loop`` is not one of the three choices.
        RuntimeError: ``loop="uvloop"`` but uvloop is not installed.
    """
    try:
        factory = _loop_factory(loop)
    except BaseException:
        main.close()  # do not leave a never-awaited coroutine behind
        raise
    with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """``"uvloop"`` or ``"asyncio"`` (or the class name of another loop) for ``loop``.

    Without an argument, names the running loop.

    Raises:
        RuntimeError: no argument and no loop is running.
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    module = type(loop).__module__
    if module.startswith("uvloop"):
        return "uvloop"
    if module.startswith("asyncio"):
        return "asyncio"
    name = getattr(loop, "loop_name", None)
    return name if isinstance(name, str) else type(loop).__name__


class SystemClock:
    """The default clock: ``time.monotonic`` and the running loop's timers.

    asyncio's loop reads the same monotonic clock, and uvloop's timers use the
    same source, so ``now()`` and ``call_later`` agree.
    """

    __slots__ = ()

    # A C function stored on the class: reading it costs one attribute lookup,
    # which matters on the per-job path of the pool.
    now = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Cancellable:
        return asyncio.get_running_loop().call_later(delay, callback, *args)

    def __repr__(self) -> str:
        return "<SystemClock>"
