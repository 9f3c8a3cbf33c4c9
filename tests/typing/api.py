"""Read by mypy only (never run): the public API keeps its types.

An unused ``# type: ignore`` is an error under ``mypy --strict``, so each
ignore below also asserts that the call it marks is refused.
"""

from __future__ import annotations

from typing import assert_type

import asyncperf as ap


async def fetch(url: str, retries: int) -> bytes:
    return url.encode() * retries


async def api(pool: ap.WorkerPool, queue: ap.PriorityQueue[str]) -> None:
    job = await pool.submit(fetch, "u", 2, priority=0, timeout=1.0)
    same = assert_type(job, ap.Job[bytes])
    assert_type(await job, bytes)
    assert_type(await pool.run(fetch, "u", 1), bytes)
    queued = assert_type(pool.submit_nowait(fetch, "u", 1), ap.Job[bytes])
    assert same is not queued
    wrong = await pool.submit(fetch, 1, 2)  # type: ignore[arg-type]
    await pool.run(fetch, "u")  # type: ignore[arg-type]
    assert wrong is not job

    async def square(x: int) -> int:
        return x * x

    async for value in pool.map(square, range(3)):
        assert_type(value, int)
    pool.map(square, ["a"])  # type: ignore[arg-type]

    queue.put_nowait("item", 1)
    assert_type(queue.get_nowait(), str)
    assert_type(await queue.get(), str)
    assert_type(pool.statistics(), ap.PoolStatistics)
