"""Percentiles, and a bounded ring of latency samples (caches, handlers)."""

from __future__ import annotations

from typing import Final

__all__ = ["LatencySamples", "percentile"]


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = round(fraction * (len(sorted_values) - 1))
    return sorted_values[rank]


_SAMPLES: Final = 1024
_MASK: Final = _SAMPLES - 1


class LatencySamples:
    """The last 1,024 latency samples in a ring, for p50/p99 without unbounded memory."""

    __slots__ = ("_count", "_ring")

    def __init__(self) -> None:
        self._ring = [0.0] * _SAMPLES
        self._count = 0

    def add(self, seconds: float) -> None:
        self._ring[self._count & _MASK] = seconds
        self._count += 1

    @property
    def count(self) -> int:
        """Samples added in all (the ring keeps the last 1,024)."""
        return self._count

    def percentiles(self) -> tuple[float | None, float | None]:
        """(p50, p99) of the kept samples; (None, None) before the first."""
        if not self._count:
            return None, None
        kept = sorted(self._ring[: min(self._count, _SAMPLES)])
        return percentile(kept, 0.5), percentile(kept, 0.99)

    def clear(self) -> None:
        self._count = 0
