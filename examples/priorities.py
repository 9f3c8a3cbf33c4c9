"""Priority levels: the four drop strategies, Rejected and Dropped, and per-level statistics."""

import asyncio

import asyncperf as ap

LEVELS = [
    ap.Level(priority=0, max_size=2, strategy=ap.DropStrategy.REJECT, weight=4),
    ap.Level(priority=1, max_size=3, strategy=ap.DropStrategy.DROP_OLDEST, weight=2),
    ap.Level(priority=2, max_size=2, strategy=ap.DropStrategy.DROP_NEWEST, weight=1),
    ap.Level(priority=3, max_size=2, strategy=ap.DropStrategy.BLOCK, weight=1),
]


async def hold(started: asyncio.Event, gate: asyncio.Event) -> str:
    """Occupies the pool's only worker until the gate opens."""
    started.set()
    await gate.wait()
    return "hold"


async def call(name: str, ran: list[str]) -> str:
    ran.append(name)
    await asyncio.sleep(0)
    return name


async def main() -> None:
    ran: list[str] = []
    jobs: dict[str, ap.Job[str]] = {}
    async with ap.WorkerPool(max_workers=1, queue=ap.PriorityQueue(LEVELS)) as pool:
        started, gate = asyncio.Event(), asyncio.Event()
        blocker = await pool.submit(hold, started, gate, priority=0)
        await started.wait()  # the one worker is busy: every job below waits in the queue

        print("-- level 0, REJECT, max 2: a full level refuses the newcomer")
        for i in range(3):
            try:
                jobs[f"p0-{i}"] = pool.submit_nowait(call, f"p0-{i}", ran, priority=0)
            except ap.Rejected as exc:
                print(f"p0-{i}: Rejected ({exc}); never accepted, nothing to await")

        print("-- level 1, DROP_OLDEST, max 3: a full level drops its oldest job")
        for i in range(5):
            jobs[f"p1-{i}"] = pool.submit_nowait(call, f"p1-{i}", ran, priority=1)

        print("-- level 2, DROP_NEWEST, max 2: a full level drops its newest queued job")
        for i in range(4):
            jobs[f"p2-{i}"] = pool.submit_nowait(call, f"p2-{i}", ran, priority=2)

        print("-- level 3, BLOCK, max 2: submit_nowait raises QueueFull, submit waits")
        for i in range(2):
            jobs[f"p3-{i}"] = await pool.submit(call, f"p3-{i}", ran, priority=3)
        try:
            jobs["p3-2"] = pool.submit_nowait(call, "p3-2", ran, priority=3)
        except ap.QueueFull:
            print("p3-2: QueueFull from submit_nowait")
        try:
            async with asyncio.timeout(0.05):
                jobs["p3-2"] = await pool.submit(call, "p3-2", ran, priority=3)
        except TimeoutError:
            print("p3-2: submit() waited 50 ms for room and gave up (nothing was queued)")

        depth = {level.priority: level.depth for level in pool.queue.statistics().levels}
        print(f"queued per level before the worker is freed: {depth}")
        gate.set()
        print(f"{await blocker} done")
        for name, job in jobs.items():
            try:
                await job
                print(f"{name}: ran")
            except ap.Dropped as exc:
                print(f"{name}: Dropped from level {exc.priority} ({exc.reason.value})")
        print("order the worker ran them (weighted round robin 4:2:1:1):", " ".join(ran))

    print("level strategy     enqueued dequeued dropped rejected")
    for level in pool.queue.statistics().levels:
        print(
            f"{level.priority:>5} {level.strategy.value:<12} {level.enqueued:>8} "
            f"{level.dequeued:>8} {level.dropped:>7} {level.rejected:>8}"
        )
    stats = pool.statistics()
    print(
        f"pool: submitted {stats.submitted}, completed {stats.completed}, "
        f"dropped {stats.dropped}, rejected {stats.rejected} (Rejected and QueueFull)"
    )


if __name__ == "__main__":
    ap.run(main())
