"""Process memory: the resident set size now and at its peak, and the allocation rate.

Platforms:

- :func:`rss_bytes` (now) reads ``/proc/self/statm``: Linux (and anything else
  with a Linux-style ``/proc``). Elsewhere it returns ``None``; psutil would
  know, and is not a dependency.
- :func:`peak_rss_bytes` asks ``resource.getrusage``: ``ru_maxrss`` is in KiB on
  Linux and the BSDs and in bytes on macOS (converted here); on Linux it is
  raised to the current RSS when the kernel's lazily kept figure lags. Windows
  has no ``resource`` module: ``None``.
- :class:`AllocationRate` reads :mod:`tracemalloc`, which sees only what is
  allocated while it traces (``python -X tracemalloc`` or
  ``tracemalloc.start()``). When it is not tracing, a sample says so and has no
  figures, rather than inventing one.
"""

from __future__ import annotations

import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["AllocationRate", "AllocationSample", "peak_rss_bytes", "rss_bytes"]

_STATM = "/proc/self/statm"


def _page_size() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return None


_PAGE_SIZE = _page_size()


def rss_bytes() -> int | None:
    """The resident set size of this process now, in bytes; ``None`` where ``/proc`` is missing.

    Read from the second field of ``/proc/self/statm`` (resident pages) times the
    page size: one small read, cheap enough to sample every second.
    """
    if _PAGE_SIZE is None:
        return None
    try:
        with open(_STATM, "rb") as statm:
            fields = statm.read().split()
        return int(fields[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


def peak_rss_bytes() -> int | None:
    """The highest resident set size of this process so far, in bytes; ``None`` on Windows.

    Never below :func:`rss_bytes` read at the same time (the kernel's figure can lag).
    """
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # macOS reports bytes; Linux and the BSDs report KiB.
    peak_bytes = int(peak) if sys.platform == "darwin" else int(peak) * 1024
    # Linux updates its high-water mark lazily (on some page faults and unmaps),
    # so it can lag behind the resident size read from /proc a moment later.
    current = rss_bytes()
    return max(peak_bytes, current) if current is not None else peak_bytes


@dataclass(frozen=True, slots=True)
class AllocationSample:
    """One reading of :class:`AllocationRate`.

    Attributes:
        tracing: whether tracemalloc was tracing; without it every figure is ``None``.
        traced_bytes: bytes allocated (and not freed) while tracemalloc traced.
        peak_traced_bytes: the highest ``traced_bytes`` since tracing began, or
            since the previous sample with ``track_peak=True``.
        growth_bytes: ``traced_bytes`` minus that of the previous sample: the net
            allocation in between (negative when more was freed).
        interval: seconds since the previous sample.
        growth_per_second: ``growth_bytes / interval``.
        allocated_per_second: with ``track_peak=True``, (peak in the interval minus
            ``traced_bytes`` at its start) per second: a lower bound of the gross
            allocation rate (memory allocated and freed again is not all seen).
        note: why figures are missing, or ``""``.
    """

    tracing: bool
    traced_bytes: int | None
    peak_traced_bytes: int | None
    growth_bytes: int | None
    interval: float | None
    growth_per_second: float | None
    allocated_per_second: float | None
    note: str

    def as_dict(self) -> dict[str, Any]:
        """The sample as plain JSON-ready values."""
        return asdict(self)


class AllocationRate:
    """Traced bytes and their growth per second between successive :meth:`sample` calls.

    ::

        rate = AllocationRate()
        rate.sample()              # the first: traced bytes, no rate yet
        ...
        rate.sample().growth_per_second

    Args:
        clock: seconds as a float (default :func:`time.monotonic`).
        track_peak: reset tracemalloc's peak at each sample, so each sample's
            peak covers its own interval and ``allocated_per_second`` can be
            given. The peak is process-wide: leave this off when something else
            (a profiler) reads ``tracemalloc.get_traced_memory()`` peaks.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, track_peak: bool = False
    ) -> None:
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {type(clock).__name__}")
        self._clock = clock
        self._track_peak = track_peak
        self._previous: tuple[float, int] | None = None  # (time, traced bytes) of the last sample

    def sample(self) -> AllocationSample:
        """Traced memory now and its growth since the previous sample."""
        now = self._clock()
        if not tracemalloc.is_tracing():
            # A later sample must not compare with figures from an earlier tracing session.
            self._previous = None
            return AllocationSample(
                tracing=False,
                traced_bytes=None,
                peak_traced_bytes=None,
                growth_bytes=None,
                interval=None,
                growth_per_second=None,
                allocated_per_second=None,
                note="tracemalloc is not tracing: start it (tracemalloc.start() or "
                "python -X tracemalloc) for allocation figures",
            )
        traced, peak = tracemalloc.get_traced_memory()
        if self._track_peak:
            tracemalloc.reset_peak()
        previous, self._previous = self._previous, (now, traced)
        if previous is None:
            return AllocationSample(
                tracing=True,
                traced_bytes=traced,
                peak_traced_bytes=peak,
                growth_bytes=None,
                interval=None,
                growth_per_second=None,
                allocated_per_second=None,
                note="first sample: a rate needs two",
            )
        then, traced_then = previous
        interval = now - then
        growth = traced - traced_then
        per_second = growth / interval if interval > 0 else None
        allocated = (
            max(peak - traced_then, 0) / interval if self._track_peak and interval > 0 else None
        )
        return AllocationSample(
            tracing=True,
            traced_bytes=traced,
            peak_traced_bytes=peak,
            growth_bytes=growth,
            interval=interval,
            growth_per_second=per_second,
            allocated_per_second=allocated,
            note="" if per_second is not None else "no time passed since the previous sample",
        )
