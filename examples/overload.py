"""Overload: a pool that sheds early and keeps its most important work fast."""

import asyncio
import random
from collections import Counter

import asyncperf as ap

REJECT = ap.DropStrategy.REJECT
CAPACITY = 8  # calls the upstream serves at full speed
BASE = 0.010  # its latency, seconds, up to CAPACITY calls at once
in_flight = 0


async def upstream(priority: int) -> int:
    """A slow dependency that gets slower for everyone when pushed past its capacity."""
    global in_flight
    in_flight += 1
    try:
        await asyncio.sleep(BASE * max(1.0, in_flight / CAPACITY))
        return priority
    finally:
        in_flight -= 1


async def main() -> None:
    queue: ap.PriorityQueue[ap.Job[int]] = ap.PriorityQueue(
        [
            # REJECT: a caller with no room is told at once rather than kept waiting.
            ap.Level(0, max_size=200, strategy=REJECT, weight=8, share=0.3),  # interactive
            ap.Level(1, max_size=200, strategy=REJECT, weight=2, share=0.2),
            ap.Level(2, max_size=200, strategy=REJECT, weight=1, share=0.1),  # batch work
        ],
        max_total=200,  # one bound for all levels, shed lowest first when it is reached
        codel=ap.CoDel(target=BASE, interval=5 * BASE),  # shed a standing queue, newest first
    )
    limiter = ap.AdaptiveLimiter("vegas", initial=32, max_limit=64)
    outcomes: Counter[str] = Counter()
    latencies: dict[int, list[float]] = {0: [], 1: [], 2: []}
    loop = asyncio.get_running_loop()

    async def request(priority: int) -> None:
        start = loop.time()
        try:
            # A caller gives up after 100 ms: the pool drops the job if it has not started.
            await pool.run(upstream, priority, priority=priority, deadline=0.1)
        except (ap.Rejected, ap.Dropped) as refused:
            outcomes[f"{refused.reason.value}"] += 1
            return
        outcomes["answered"] += 1
        latencies[priority].append(loop.time() - start)

    rng = random.Random(1)
    async with ap.WorkerPool(64, queue=queue, limiter=limiter) as pool, asyncio.TaskGroup() as tg:
        # For one second, three times what the upstream can serve (CAPACITY / BASE =
        # 800 requests/s): 24 new requests every 10 ms.
        for _tick in range(100):
            for _ in range(24):
                tg.create_task(request(rng.choices([0, 1, 2], weights=[1, 3, 6])[0]))
            await asyncio.sleep(0.010)
    print(f"limit found by the adaptive limiter: {limiter.limit} (capacity {CAPACITY})")
    print("outcomes:", dict(outcomes))
    for priority, values in latencies.items():
        values.sort()
        if values:
            p99 = values[int(0.99 * (len(values) - 1))]
            print(f"priority {priority}: {len(values)} answered, p99 {p99 * 1000:.0f} ms")


if __name__ == "__main__":
    ap.run(main())
