"""``assert_no_leaks(pool)``: fail a test that left pooled objects unreleased."""

from __future__ import annotations

from asyncperf.pools import BufferPool, ObjectPool

__all__ = ["assert_no_leaks"]


def assert_no_leaks(pool: BufferPool | ObjectPool[object]) -> None:
    """Raise AssertionError if ``pool`` has objects handed out and not released.

    With a debug-mode pool, the message lists each one with the traceback of
    where it was taken; otherwise it gives their count (and suggests debug=True).
    """
    if not isinstance(pool, BufferPool | ObjectPool):
        raise TypeError(f"pool must be a BufferPool or an ObjectPool, not {type(pool).__name__}")
    if pool.debug:
        leaks = pool.leaks()
        if leaks:
            details = "\n\n".join(leak.format() for leak in leaks)
            raise AssertionError(f"{len(leaks)} object(s) not released:\n\n{details}")
        return
    in_use = pool.statistics().in_use
    if in_use:
        raise AssertionError(
            f"{pool.name}: {in_use} object(s) not released "
            "(create the pool with debug=True to see where they were taken)"
        )
