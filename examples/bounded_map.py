"""pool.map: bounded fan-out over many items, in order or as completed, and an early break."""

import asyncio
import itertools
import random
import time

import asyncperf as ap

rng = random.Random(7)
LATENCY = [rng.uniform(0.001, 0.010) for _ in range(1_000)]  # seconds, per item


async def lookup(item: int) -> int:
    await asyncio.sleep(LATENCY[item % len(LATENCY)])  # stands for a slow upstream call
    return item


async def main() -> None:
    async with ap.WorkerPool(max_workers=50) as pool:
        start = time.perf_counter()
        results = [r async for r in pool.map(lookup, range(1_000), window=100)]
        print(
            f"ordered:   {len(results)} results in {time.perf_counter() - start:.2f} s, "
            f"in the order of the items: {results == list(range(1_000))}"
        )

        start = time.perf_counter()
        results = [r async for r in pool.map(lookup, range(1_000), ordered=False)]
        print(
            f"unordered: {len(results)} results in {time.perf_counter() - start:.2f} s, "
            f"as they completed; the first ten: {results[:10]}"
        )

        before = pool.statistics()
        # An endless iterable is read lazily; leaving the block cancels what is in flight.
        async with pool.map(lookup, itertools.count(), window=64) as endless:
            async for item in endless:
                if item >= 200:
                    break
    stats = pool.statistics()
    print(
        f"early break at item 200 of an endless map: "
        f"{stats.submitted - before.submitted} jobs submitted, "
        f"{stats.completed - before.completed} completed, "
        f"{stats.cancelled - before.cancelled} cancelled (the window in flight)"
    )
    print(
        f"pool: {stats.submitted:,} submitted, {stats.completed:,} completed, "
        f"{stats.cancelled} cancelled, at most {stats.max_workers} at once"
    )


if __name__ == "__main__":
    ap.run(main())
