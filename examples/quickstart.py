"""Quickstart: a bounded WorkerPool, submit / run / map, and its statistics."""

import asyncio

import asyncperf as ap


async def fetch(n: int) -> int:
    await asyncio.sleep(0.01)  # stands for a call to a slow upstream
    return n * n


async def main() -> None:
    async with ap.WorkerPool(max_workers=8) as pool:
        job = await pool.submit(fetch, 3, priority=0)  # queued; waits only if its level is full
        print("submit:", await job)
        print("run:   ", await pool.run(fetch, 4, timeout=1.0))  # submit and await the result
        squares = [n async for n in pool.map(fetch, range(100))]  # bounded, in order
        print("map:   ", len(squares), "results, sum", sum(squares))
        stats = pool.statistics()
    print(
        f"{stats.completed} jobs completed on {stats.loop} by at most {stats.max_workers} "
        f"workers; run p50 {stats.run_p50 * 1000:.1f} ms, wait p99 {stats.wait_p99 * 1000:.1f} ms"
    )


if __name__ == "__main__":
    ap.run(main())
