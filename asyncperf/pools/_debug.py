"""Debug mode of the memory pools: where objects were taken, leaks, use after release."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from dataclasses import dataclass

from asyncperf._errors import AsyncPerfError, ClosedError

__all__ = ["BufferReleasedError", "MemoryPoolClosed", "PoolLeak", "capture_stack", "logger"]

#: Leaks found when a pool closes are logged here (WARNING), one record per object.
logger = logging.getLogger("asyncperf.pools")

#: Frames kept per captured stack: enough to see the caller and its callers.
STACK_LIMIT = 16

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class MemoryPoolClosed(ClosedError):
    """A BufferPool or ObjectPool was asked for an object after ``close()``."""


class BufferReleasedError(AsyncPerfError, ValueError):
    """A pooled buffer's handle was used after ``release()``.

    A ``ValueError``, like the one a released ``memoryview`` raises, so code
    that catches one catches both.
    """


def capture_stack() -> traceback.StackSummary:
    """The caller's stack, oldest frame first, leaving out the frames inside this package.

    Only debug mode calls it: walking and formatting frames costs microseconds.
    """
    frame = sys._getframe(1)
    while frame.f_back is not None and os.path.dirname(frame.f_code.co_filename) == _PACKAGE_DIR:
        frame = frame.f_back
    stack = traceback.StackSummary.extract(
        traceback.walk_stack(frame), limit=STACK_LIMIT, lookup_lines=False
    )
    stack.reverse()
    return stack


@dataclass(frozen=True, slots=True)
class PoolLeak:
    """An object a pool handed out and that was not given back (debug mode).

    ``str(leak)`` gives a report with the traceback of where it was taken.
    """

    #: The pool's name.
    pool: str
    #: What was taken (``"buffer of 5000 bytes (size class 16384)"``, or the object's repr).
    what: str
    #: When it was taken, on the pool's clock.
    acquired_at: float
    #: Where it was taken: the stack of the ``acquire`` call, oldest frame first.
    stack: traceback.StackSummary

    def format(self) -> str:
        """A multi-line report: what, and the traceback of the acquire."""
        where = "".join(self.stack.format()).rstrip()
        return f"{self.pool}: {self.what} was never released; taken at:\n{where}"

    def __str__(self) -> str:
        return self.format()


def report_leaks(leaks: tuple[PoolLeak, ...]) -> None:
    """Log each leak (with its traceback) as a WARNING on ``asyncperf.pools``."""
    for leak in leaks:
        logger.warning("%s", leak.format())
