"""Percentiles over a bounded ring of recent samples (pools, caches, handlers, batchers).

The ring is an ``array('d')``: 8 bytes a sample, where a list would hold a float
object of 24 bytes behind each 8-byte slot once it fills. A runtime keeps a dozen
of these, so this is about a quarter of a MiB of every process's memory.
"""

from __future__ import annotations

from array import array
from typing import Final

__all__ = ["SAMPLES", "LatencySamples", "percentile", "sample_ring"]

#: Samples a ring keeps (a power of two, so the index is a mask).
SAMPLES: Final = 1024
_MASK: Final = SAMPLES - 1


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = round(fraction * (len(sorted_values) - 1))
    return sorted_values[rank]


def sample_ring() -> array[float]:
    """``SAMPLES`` zeros, for a caller that keeps its own count and index."""
    return array("d", bytes(8 * SAMPLES))


class LatencySamples:
    """The last 1,024 samples in a ring, for percentiles without unbounded memory."""

    __slots__ = ("_count", "_ring")

    def __init__(self) -> None:
        self._ring = sample_ring()
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
        p50, p99 = self.quantiles(0.5, 0.99)
        return p50, p99

    def quantiles(self, *fractions: float) -> list[float]:
        """The nearest-rank percentile of the kept samples for each fraction (0.0 if none)."""
        kept = sorted(self._ring[: min(self._count, SAMPLES)])
        return [percentile(kept, fraction) for fraction in fractions]

    def clear(self) -> None:
        self._count = 0
