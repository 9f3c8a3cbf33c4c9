"""Property tests: random interleavings of submits, cancels, resizes and shutdowns.

Whatever happens, every accepted job ends in exactly one outcome, counted once,
and no job starts while the limit in force is already reached.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asyncperf as ap
from asyncperf.testing import VirtualEventLoop

LEVELS = [
    ap.Level(0, max_size=3, strategy=ap.DropStrategy.REJECT, weight=4),
    ap.Level(1, max_size=3, strategy=ap.DropStrategy.DROP_OLDEST, weight=2),
    ap.Level(2, max_size=3, strategy=ap.DropStrategy.BLOCK, weight=1),
]

# Blocking jobs are what make limits, resizes and cancellations interesting.
job_kinds = st.sampled_from(
    ["return", "raise", "yield", "block", "block", "block", "sleep", "refuse_cancel"]
)
operations = st.one_of(
    st.tuples(
        st.just("submit"),
        st.integers(0, 2),
        job_kinds,
        st.integers(0, 2),
        st.sampled_from([None, 0.001, 0.01]),
    ),
    st.tuples(st.just("submit_nowait"), st.integers(0, 2), job_kinds, st.integers(0, 2)),
    st.tuples(st.just("submit_in_task"), st.integers(0, 2), job_kinds, st.integers(0, 2)),
    st.tuples(st.just("cancel_job"), st.integers(0, 50)),
    st.tuples(st.just("cancel_awaiter"), st.integers(0, 50)),
    st.tuples(st.just("cancel_submitter"), st.integers(0, 20)),
    st.tuples(st.just("resize"), st.integers(1, 4)),
    st.tuples(st.just("release"), st.integers(0, 2)),
    st.tuples(st.just("yield"), st.integers(1, 5)),
    st.tuples(st.just("sleep"), st.sampled_from([0.0005, 0.002, 0.02])),
)


@dataclass
class World:
    """What the scenario did, to check against what the pool says."""

    pool: ap.WorkerPool
    events: list[asyncio.Event] = field(default_factory=lambda: [asyncio.Event() for _ in "abc"])
    jobs: list[ap.Job[Any]] = field(default_factory=list)
    submitters: list[asyncio.Task[ap.Job[Any]]] = field(default_factory=list)
    awaiters: list[asyncio.Task[Any]] = field(default_factory=list)
    refused: int = 0
    running: int = 0
    violations: list[str] = field(default_factory=list)

    def job_fn(self, kind: str, arg: int) -> Callable[[], Any]:
        async def job() -> Any:
            self.running += 1
            if self.running > self.pool.limit:
                self.violations.append(f"{self.running} running, limit {self.pool.limit}")
            try:
                if kind == "raise":
                    raise ValueError(arg)
                if kind == "yield":
                    for _ in range(arg + 1):
                        await asyncio.sleep(0)
                elif kind == "block":
                    await self.events[arg].wait()
                elif kind == "sleep":
                    await asyncio.sleep(0.001 * (arg + 1))
                elif kind == "refuse_cancel":
                    try:
                        await asyncio.sleep(0.001)
                    except asyncio.CancelledError:
                        return "refused"
                return arg
            finally:
                self.running -= 1

        return job

    def check_accounting(self) -> None:
        stats = self.pool.statistics()
        right = (
            stats.pending
            + stats.active
            + stats.completed
            + stats.failed
            + stats.cancelled
            + stats.timed_out
            + stats.dropped
        )
        assert stats.submitted == right, stats
        assert stats.active <= max(stats.workers, 0)


async def scenario(ops: list[tuple[Any, ...]], graceful: bool, adaptive: bool) -> None:
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: errors.append(ctx))
    queue: ap.PriorityQueue[ap.Job[Any]] = ap.PriorityQueue(LEVELS)
    # With a limiter the limit in force also moves on its own, from the samples.
    limiter = ap.AdaptiveLimiter("aimd", initial=3, max_limit=4, window=10) if adaptive else None
    pool = ap.WorkerPool(3, queue=queue, idle_timeout=0.005, limiter=limiter)
    world = World(pool)
    async with pool:
        for op in ops:
            name = op[0]
            if name == "submit":
                _, priority, kind, arg, timeout = op
                try:
                    job = await asyncio.wait_for(
                        pool.submit(world.job_fn(kind, arg), priority=priority, timeout=timeout),
                        timeout=0.05,
                    )
                    world.jobs.append(job)
                except (ap.Rejected, TimeoutError):
                    world.refused += 1
            elif name == "submit_nowait":
                _, priority, kind, arg = op
                try:
                    world.jobs.append(
                        pool.submit_nowait(world.job_fn(kind, arg), priority=priority)
                    )
                except (ap.Rejected, ap.QueueFull):
                    world.refused += 1
            elif name == "submit_in_task":
                _, priority, kind, arg = op
                world.submitters.append(
                    asyncio.create_task(pool.submit(world.job_fn(kind, arg), priority=priority))
                )
            elif name == "cancel_job" and world.jobs:
                world.jobs[op[1] % len(world.jobs)].cancel()
            elif name == "cancel_awaiter" and world.jobs:
                target = world.jobs[op[1] % len(world.jobs)]
                awaiter = asyncio.create_task(asyncio.wait_for(target, timeout=None))
                world.awaiters.append(awaiter)
                await asyncio.sleep(0)
                awaiter.cancel()
            elif name == "cancel_submitter" and world.submitters:
                world.submitters[op[1] % len(world.submitters)].cancel()
            elif name == "resize":
                pool.max_workers = op[1]
            elif name == "release":
                world.events[op[1]].set()
            elif name == "yield":
                for _ in range(op[1]):
                    await asyncio.sleep(0)
            elif name == "sleep":
                await asyncio.sleep(op[1])
            world.check_accounting()
        for event in world.events:
            event.set()
        if not graceful:
            await pool.aclose()
        # Submitters still blocked now get PoolClosed (or finish, if graceful drains them).
        for event in world.events:
            event.set()
    outcomes = await asyncio.gather(*world.submitters, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, ap.Job):
            world.jobs.append(outcome)
        else:
            assert isinstance(outcome, asyncio.CancelledError | ap.PoolClosed | ap.Rejected), (
                outcome
            )
    await asyncio.gather(*world.awaiters, return_exceptions=True)

    # Every accepted job ended, in exactly one way, and the pool counted it so.
    seen: Counter[str] = Counter()
    for job in world.jobs:
        assert job.done(), job
        if job.cancelled():
            seen["cancelled"] += 1
            continue
        error = job.exception()
        if error is None:
            seen["completed"] += 1
        elif isinstance(error, ap.JobTimeout):
            seen["timed_out"] += 1
        elif isinstance(error, ap.Dropped):
            seen["dropped"] += 1
        else:
            assert isinstance(error, ValueError), error
            seen["failed"] += 1
    stats = pool.statistics()
    assert len({id(job) for job in world.jobs}) == len(world.jobs) == stats.submitted
    assert (stats.pending, stats.active, stats.workers) == (0, 0, 0)
    assert {
        "completed": stats.completed,
        "failed": stats.failed,
        "cancelled": stats.cancelled,
        "timed_out": stats.timed_out,
        "dropped": stats.dropped,
    } == {key: seen[key] for key in ("completed", "failed", "cancelled", "timed_out", "dropped")}
    assert not world.violations, world.violations
    current = asyncio.current_task()
    assert [t for t in asyncio.all_tasks() if t is not current and not t.done()] == []
    assert not errors, errors


def _run_on(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    ops: list[Any],
    graceful: bool,
    adaptive: bool,
) -> None:
    loop = loop_factory()
    try:
        loop.run_until_complete(scenario(ops, graceful, adaptive))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "virtual": VirtualEventLoop,
    "asyncio": asyncio.new_event_loop,
    "uvloop": ap.loop._loop_factory("uvloop"),
}


@pytest.mark.parametrize("loop_name", LOOPS)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    ops=st.lists(operations, min_size=10, max_size=60),
    graceful=st.booleans(),
    adaptive=st.booleans(),
)
def test_every_job_ends_exactly_once(
    loop_name: str, ops: list[Any], graceful: bool, adaptive: bool
) -> None:
    """Random interleavings keep the accounting exact and the limit respected."""
    _run_on(LOOPS[loop_name], ops, graceful, adaptive)
