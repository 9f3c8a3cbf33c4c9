"""Percentiles for the pools' latency samples."""

from __future__ import annotations

__all__ = ["percentile"]


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = round(fraction * (len(sorted_values) - 1))
    return sorted_values[rank]
