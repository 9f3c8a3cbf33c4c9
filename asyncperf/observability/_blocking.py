"""BlockDetector: a watchdog thread that catches the stack of whatever holds the event loop.

The loop side is one timer callback: every ``interval`` seconds it bumps a
heartbeat (a counter and the time it ran) and schedules itself again. A loop
that is idle in ``select()`` still runs it on time; a loop stuck in a callback
(``time.sleep``, a long CPU-bound stretch, a blocking socket call) cannot.

The watchdog is a daemon thread that looks at the heartbeat every
``interval`` seconds. When the last beat is older than ``threshold``, the loop
thread has not come back to the loop for that long, so the thread is still
inside the culprit: the watchdog reads its current frame from
:func:`sys._current_frames` and keeps the stack. When the loop comes back, its
next beat closes the block with its duration.

What a block's numbers mean:

- ``duration`` is the time between the last beat before the block and the
  first beat after it: the stall plus at most one ``interval`` (the beat before
  the block may have run up to one interval before it began). Keep ``interval``
  small next to ``threshold`` (the default is a quarter of it).
- ``stack`` is where the loop thread was when the watchdog noticed (``threshold``
  after the last beat, give or take one ``interval``): for a single long call
  it is that call; for a callback that does many short things, it is one of them.

Works on any loop whose ``call_later`` runs callbacks on the loop's thread
(asyncio and uvloop). The watchdog needs the GIL to look: a C extension that
holds the GIL for the whole stall is caught only when it lets go, and then the
stack may already have moved on (``time.sleep`` and blocking I/O release it).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, Self

from asyncperf._validate import check_int, check_number

__all__ = ["BlockDetector", "BlockEvent", "StackFrame"]


@dataclass(frozen=True, slots=True)
class StackFrame:
    """One frame of a captured stack.

    Attributes:
        filename: the file of the code.
        lineno: the line being run.
        function: the function's name.
        line: the source text of the line ("" when the source is not available).
    """

    filename: str
    lineno: int
    function: str
    line: str

    @property
    def location(self) -> str:
        """``filename:lineno``."""
        return f"{self.filename}:{self.lineno}"

    def as_dict(self) -> dict[str, Any]:
        """The frame as plain JSON-ready values."""
        return {
            "filename": self.filename,
            "lineno": self.lineno,
            "function": self.function,
            "line": self.line,
        }


def stack_of(frame: FrameType | None, limit: int | None = None) -> tuple[StackFrame, ...]:
    """The stack that ends at ``frame``, outermost first (its last ``limit`` frames)."""
    if frame is None:
        return ()
    summary = traceback.extract_stack(frame, limit=limit)
    return tuple(
        StackFrame(item.filename, item.lineno or 0, item.name, (item.line or "").strip())
        for item in summary
    )


@dataclass(frozen=True, slots=True)
class BlockEvent:
    """One stretch of time the loop thread did not come back to the loop.

    Attributes:
        started: the loop's last heartbeat before the block (``time.monotonic()``).
        detected: when the watchdog noticed (``time.monotonic()``).
        duration: seconds from ``started`` to the first heartbeat after the block
            (an upper bound of the stall, by at most one heartbeat interval); when
            the detector stopped before the loop came back, up to the stop.
        ended: whether the loop came back (False: cut short by :meth:`BlockDetector.stop`).
        task: the name of the asyncio task running when the block was noticed
            ("" when none was, e.g. a plain callback).
        stack: the loop thread's stack when the block was noticed, outermost first.
    """

    started: float
    detected: float
    duration: float
    ended: bool
    task: str
    stack: tuple[StackFrame, ...]

    @property
    def where(self) -> StackFrame | None:
        """The innermost frame of the stack: the line the loop thread was on."""
        return self.stack[-1] if self.stack else None

    def as_dict(self) -> dict[str, Any]:
        """The block as plain JSON-ready values (the stack outermost first)."""
        return {
            "started": self.started,
            "detected": self.detected,
            "duration": self.duration,
            "ended": self.ended,
            "task": self.task,
            "stack": [frame.as_dict() for frame in self.stack],
        }


@dataclass(slots=True)
class _Pending:
    started: float
    detected: float
    task: str
    stack: tuple[StackFrame, ...]


class BlockDetector:
    """Catches the loop thread's stack whenever the loop is held past ``threshold``.

    ::

        async with BlockDetector(threshold=0.1) as detector:    # or start() ... stop()
            await serve()
        for block in detector.blocks():
            print(block.duration, block.where)

    Start and stop it on the loop's thread, inside a running loop. Stopping
    joins the watchdog thread.

    Args:
        threshold: seconds without a heartbeat that count as a block (> 0; default 0.1).
        interval: seconds between heartbeats and between the watchdog's looks
            (default ``threshold / 4``); must be below ``threshold``.
        max_blocks: blocks kept (the oldest are dropped past it, and counted).
        stack_limit: frames kept per stack, the innermost ones.

    Raises:
        TypeError, ValueError: a bad argument (the message names it).
    """

    def __init__(
        self,
        threshold: float = 0.1,
        *,
        interval: float | None = None,
        max_blocks: int = 100,
        stack_limit: int = 50,
    ) -> None:
        self.threshold = check_number("threshold", threshold)
        if interval is None:
            interval = self.threshold / 4
        self.interval = check_number("interval", interval)
        if self.interval >= self.threshold:
            raise ValueError(
                f"interval must be < threshold ({self.threshold!r}), not {self.interval!r}"
            )
        self.max_blocks = check_int("max_blocks", max_blocks, minimum=1)
        self.stack_limit = check_int("stack_limit", stack_limit, minimum=1)
        self._lock = threading.Lock()
        self._blocks: deque[BlockEvent] = deque(maxlen=self.max_blocks)
        self._total = 0
        self._pending: _Pending | None = None
        self._last_beat = 0.0
        self._beats = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id = 0
        self._timer: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def running(self) -> bool:
        """Whether the heartbeat and the watchdog thread are running."""
        return self._thread is not None

    @property
    def total_blocks(self) -> int:
        """Blocks seen in all, including those dropped past ``max_blocks``."""
        return self._total

    @property
    def heartbeats(self) -> int:
        """Heartbeats the loop has run since the start."""
        return self._beats

    def blocks(self) -> list[BlockEvent]:
        """The blocks seen so far, oldest first (a block still going on is not included)."""
        with self._lock:
            return list(self._blocks)

    def start(self) -> None:
        """Start the heartbeat on the running loop and the watchdog thread.

        Raises:
            RuntimeError: already running, or no loop is running in this thread.
        """
        if self.running:
            raise RuntimeError("BlockDetector is already running")
        self._loop = asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        self._pending = None
        self._stopping.clear()
        self._last_beat = time.monotonic()
        self._timer = self._loop.call_later(self.interval, self._beat)
        self._thread = threading.Thread(
            target=self._watch, name="asyncperf-block-detector", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat, join the watchdog; a block still open is closed now.

        Call it on the loop's thread. A detector that is not running is left as is.
        """
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stopping.set()
        thread.join()
        with self._lock:
            self._close_pending(time.monotonic(), ended=False)
        self._loop = None

    # -- the loop side ------------------------------------------------------------------

    def _beat(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._beats += 1
            self._close_pending(now, ended=True)
            self._last_beat = now
        if self._loop is not None and self._thread is not None:
            self._timer = self._loop.call_later(self.interval, self._beat)

    def _close_pending(self, now: float, *, ended: bool) -> None:
        # Called with the lock held.
        pending, self._pending = self._pending, None
        if pending is None:
            return
        self._total += 1
        self._blocks.append(
            BlockEvent(
                started=pending.started,
                detected=pending.detected,
                duration=now - pending.started,
                ended=ended,
                task=pending.task,
                stack=pending.stack,
            )
        )

    # -- the watchdog thread ------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.wait(self.interval):
            now = time.monotonic()
            with self._lock:
                if self._pending is not None or now - self._last_beat <= self.threshold:
                    continue
                # The loop thread is still inside whatever holds it: look now.
                frame = sys._current_frames().get(self._loop_thread_id)
                stack = stack_of(frame, self.stack_limit)
                del frame  # a frame keeps its locals alive: drop it at once
                self._pending = _Pending(self._last_beat, now, self._running_task(), stack)

    def _running_task(self) -> str:
        loop = self._loop
        if loop is None:
            return ""
        try:
            task = asyncio.current_task(loop)
        except RuntimeError:
            return ""
        return task.get_name() if task is not None else ""

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"<BlockDetector {'running' if self.running else 'stopped'} "
            f"threshold={self.threshold}s blocks={self._total}>"
        )
