"""Waiting for a condition in tests without sleeping on the wall clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["wait_until"]


async def wait_until(predicate: Callable[[], bool], *, max_yields: int = 10_000) -> None:
    """Yield to the loop until ``predicate()`` is true.

    For tests that must let other tasks reach a state (a waiter parked, a
    worker idle) that they expose through ``statistics()``: each step runs the
    ready callbacks once, so no wall-clock time is involved.

    Raises:
        AssertionError: the predicate is still false after ``max_yields`` passes.
    """
    for _ in range(max_yields):
        if predicate():
            return
        await asyncio.sleep(0)
    if not predicate():
        raise AssertionError(f"condition still false after {max_yields} loop passes")
