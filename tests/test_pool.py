"""Layer 2: WorkerPool: submitting, limits, priorities, cancellation, timeouts, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

import asyncperf as ap
from asyncperf.testing import VirtualClock, wait_until


class Gate:
    """Jobs that park until released, recording how many run at once."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.running = 0
        self.peak = 0
        self.started: list[Any] = []

    async def job(self, tag: Any = None) -> Any:
        self.started.append(tag)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.open.wait()
        finally:
            self.running -= 1
        return tag


async def echo(value: Any) -> Any:
    await asyncio.sleep(0)
    return value


async def fail(message: str) -> None:
    await asyncio.sleep(0)
    raise ValueError(message)


def state_of(job: ap.Job[Any]) -> ap.JobState:
    """The job's state, read through a call so type checkers do not pin it."""
    return job.state


def accounted(stats: ap.PoolStatistics) -> int:
    """Where every accepted job is: the right side of the accounting identity."""
    return (
        stats.pending
        + stats.active
        + stats.completed
        + stats.failed
        + stats.cancelled
        + stats.timed_out
        + stats.dropped
    )


# -- construction and misuse -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_workers": 0}, ValueError, r"^max_workers must be >= 1, not .+$"),
        ({"max_workers": 2.0}, TypeError, r"^max_workers must be an int, not float$"),
        ({"min_workers": -1}, ValueError, r"^min_workers must be >= 0, not .+$"),
        ({"max_workers": 2, "min_workers": 3}, ValueError, r"^min_workers must be <= max_workers$"),
        ({"idle_timeout": 0}, ValueError, r"^idle_timeout must be > 0, not 0$"),
        ({"idle_timeout": "1"}, TypeError, r"^idle_timeout must be a number, not str$"),
        ({"drain_timeout": float("nan")}, ValueError, r"^drain_timeout must be > 0"),
        ({"error_policy": "explode"}, ValueError, r"^error_policy must be one of 'isolate'"),
        ({"max_pending": 0}, ValueError, r"^max_pending must be >= 1, not .+$"),
        (
            {"queue": [], "max_pending": None},
            TypeError,
            r"^queue must be a PriorityQueue, not list$",
        ),
        (
            {"queue": ap.PriorityQueue(), "max_pending": 5},
            ValueError,
            r"^pass either queue or max_pending, not both$",
        ),
    ],
)
def test_bad_arguments_name_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Each bad constructor argument raises an error that names it."""
    with pytest.raises(error, match=message):
        ap.WorkerPool(**kwargs)


async def test_submit_before_start_and_after_close() -> None:
    """Submitting outside `async with` says what to do; after close it is PoolClosed."""
    pool = ap.WorkerPool(2)
    with pytest.raises(RuntimeError, match=r"is not running: use 'async with WorkerPool"):
        _ = await pool.submit(echo, 1)
    async with pool:
        pass
    with pytest.raises(ap.PoolClosed, match=r"^Cannot submit to pool-\d+: it has been closed\.$"):
        _ = pool.submit_nowait(echo, 1)
    with pytest.raises(RuntimeError, match="can be entered only once"):
        async with pool:
            pass
    assert pool.closed


async def test_bad_submit_arguments() -> None:
    """A bad timeout or an unknown priority is refused at submit and nothing is counted."""
    async with ap.WorkerPool(2) as pool:
        with pytest.raises(ValueError, match=r"^timeout must be > 0, not -1$"):
            _ = await pool.submit(echo, 1, timeout=-1)
        with pytest.raises(ValueError, match=r"^priority must be one of \[0, 1, 2\], not 7$"):
            _ = await pool.submit(echo, 1, priority=7)
        with pytest.raises(ValueError, match=r"^window must be >= 1, not .+$"):
            pool.map(echo, [1], window=0)
    assert pool.statistics().submitted == 0


# -- running jobs ------------------------------------------------------------------------


async def test_run_returns_result_and_raises_the_jobs_error() -> None:
    """run() gives the job's result, or raises its exception unchanged."""
    async with ap.WorkerPool(4) as pool:
        assert await pool.run(echo, "hi") == "hi"
        with pytest.raises(ValueError, match=r"^bad$"):
            await pool.run(fail, "bad")
    stats = pool.statistics()
    assert (stats.submitted, stats.completed, stats.failed) == (2, 1, 1)


async def test_job_handle() -> None:
    """A job is a future: queued, then running, then done; its repr names the function."""
    gate = Gate()
    async with ap.WorkerPool(1) as pool:
        running = await pool.submit(gate.job, "a", priority=0)
        queued = await pool.submit(gate.job, "b")
        await wait_until(lambda: gate.running == 1)
        assert running.state is ap.JobState.RUNNING
        assert queued.state is ap.JobState.QUEUED
        assert (running.priority, queued.priority) == (0, 1)
        assert repr(queued) == "<Job Gate.job priority=1 queued>"
        gate.open.set()
        assert list(await asyncio.gather(running, queued)) == ["a", "b"]
        assert state_of(queued) is ap.JobState.DONE
        assert repr(queued) == "<Job Gate.job priority=1 done>"
        failed = await pool.submit(fail, "x")
        with pytest.raises(ValueError, match="x"):
            await failed
        assert repr(failed) == "<Job fail priority=1 raised ValueError>"


async def test_coroutine_is_created_only_when_a_worker_takes_the_job() -> None:
    """A queued job holds a function and arguments, not a coroutine."""
    gate = Gate()
    calls: list[int] = []

    async def counted(i: int) -> int:
        calls.append(i)
        return i

    async with ap.WorkerPool(1) as pool:
        _ = await pool.submit(gate.job)
        jobs = [await pool.submit(counted, i) for i in range(5)]
        await wait_until(lambda: gate.running == 1)
        assert calls == []
        gate.open.set()
        assert [await job for job in jobs] == list(range(5))
    assert calls == list(range(5))


async def test_concurrency_never_exceeds_max_workers() -> None:
    """No more than max_workers jobs run at once, however many are queued."""
    gate = Gate()
    async with ap.WorkerPool(3) as pool:
        jobs = [await pool.submit(gate.job, i) for i in range(20)]
        await wait_until(lambda: gate.running == 3)
        stats = pool.statistics()
        assert (stats.active, stats.pending, stats.workers) == (3, 17, 3)
        gate.open.set()
        await asyncio.gather(*jobs)
    assert gate.peak == 3


async def test_a_burst_starts_only_the_workers_it_needs() -> None:
    """Workers already on their way to the queue are counted before starting more."""
    async with ap.WorkerPool(32, min_workers=4) as pool:
        _ = pool.submit_nowait(echo, 1)
        assert pool.statistics().workers == 4
        for i in range(6):
            _ = pool.submit_nowait(echo, i)
        assert pool.statistics().workers == 7
    async with ap.WorkerPool(8) as pool:
        jobs = [pool.submit_nowait(echo, i) for i in range(3)]
        assert pool.statistics().workers == 3
        await asyncio.gather(*jobs)
        await wait_until(lambda: pool.statistics().idle == 3)
        _ = pool.submit_nowait(echo, "one more")
        _ = pool.submit_nowait(echo, "and another")
        assert pool.statistics().workers == 3  # two idle workers woken, none started


async def test_priorities_are_served_by_weight() -> None:
    """Queued jobs leave by weighted round robin: level 0 first, no level starved."""
    gate = Gate()
    order: list[str] = []

    async def record(tag: str) -> None:
        order.append(tag)

    async with ap.WorkerPool(1) as pool:
        _ = await pool.submit(gate.job)
        await wait_until(lambda: gate.running == 1)
        for i in range(6):
            _ = await pool.submit(record, f"low{i}", priority=2)
            _ = await pool.submit(record, f"high{i}", priority=0)
        gate.open.set()
    # Default weights 4:2:1 -> four high, then one low, and so on.
    assert order[:5] == ["high0", "high1", "high2", "high3", "low0"]
    assert sorted(order) == sorted([f"low{i}" for i in range(6)] + [f"high{i}" for i in range(6)])


async def test_map_ordered_and_unordered() -> None:
    """map() yields every result, in order or as completed, with a bounded window."""
    gate = Gate()

    async def square(x: int) -> int:
        await asyncio.sleep(0)
        return x * x

    async def numbers() -> AsyncIterator[int]:
        for i in range(30):
            yield i

    async with ap.WorkerPool(4) as pool:
        assert [r async for r in pool.map(square, range(50), window=5)] == [
            i * i for i in range(50)
        ]
        unordered = [r async for r in pool.map(square, numbers(), ordered=False, window=3)]
        assert sorted(unordered) == [i * i for i in range(30)]
        assert [r async for r in pool.map(square, [])] == []
        # The window bounds the jobs in flight.
        before = pool.statistics().submitted
        results = pool.map(gate.job, range(100), window=7)
        first = asyncio.create_task(anext(results))
        await wait_until(lambda: pool.statistics().pending + gate.running == 7)
        assert pool.statistics().submitted - before == 7
        gate.open.set()
        assert await first == 0
        assert [r async for r in results] == list(range(1, 100))


async def test_map_error_and_early_exit_cancel_the_rest() -> None:
    """An exception from map() or leaving it early cancels the jobs still in flight."""
    gate = Gate()

    async def maybe_fail(x: int) -> int:
        if x == 3:
            raise KeyError(x)
        await gate.open.wait()
        return x

    async with ap.WorkerPool(2) as pool:
        with pytest.raises(KeyError):
            async for _ in pool.map(maybe_fail, range(3, 10), window=4):
                pass
        await wait_until(lambda: pool.statistics().active == 0)
        assert pool.statistics().cancelled == 3
        gate.open.set()
        async with pool.map(echo, range(100), window=10) as results:
            async for value in results:
                if value == 2:
                    break
        await wait_until(lambda: pool.statistics().pending + pool.statistics().active == 0)
    stats = pool.statistics()
    assert stats.submitted == accounted(stats)
    assert stats.cancelled > 3


async def test_map_rejects_non_iterables() -> None:
    """map() over something that is not iterable is a TypeError naming items."""
    async with ap.WorkerPool(1) as pool:
        with pytest.raises(TypeError, match=r"^items must be iterable, not int$"):
            pool.map(echo, 5)  # type: ignore[arg-type]


# -- backpressure and strategies ---------------------------------------------------------


async def test_submit_waits_for_room_and_submit_nowait_refuses() -> None:
    """A full BLOCK level makes submit wait and submit_nowait raise QueueFull (counted)."""
    gate = Gate()
    queue: ap.PriorityQueue[ap.Job[Any]] = ap.PriorityQueue([ap.Level(0, max_size=2)])
    async with ap.WorkerPool(1, queue=queue) as pool:
        _ = await pool.submit(gate.job, "running")
        await wait_until(lambda: gate.running == 1)
        _ = await pool.submit(gate.job, "q1")
        _ = await pool.submit(gate.job, "q2")
        with pytest.raises(ap.QueueFull):
            _ = pool.submit_nowait(gate.job, "refused")
        waiting = asyncio.create_task(pool.submit(gate.job, "waited"))
        await wait_until(lambda: queue.statistics().waiting_putters == 1)
        assert not waiting.done()
        gate.open.set()
        assert await (await waiting) == "waited"
    stats = pool.statistics()
    assert (stats.submitted, stats.completed, stats.rejected) == (4, 4, 1)


async def test_reject_and_drop_strategies_reach_the_caller() -> None:
    """REJECT raises Rejected from submit; DROP_OLDEST fails the evicted job with Dropped."""
    gate = Gate()
    queue: ap.PriorityQueue[ap.Job[Any]] = ap.PriorityQueue(
        [
            ap.Level(0, max_size=1, strategy=ap.DropStrategy.REJECT),
            ap.Level(1, max_size=1, strategy=ap.DropStrategy.DROP_OLDEST),
        ]
    )
    async with ap.WorkerPool(1, queue=queue) as pool:
        _ = await pool.submit(gate.job, priority=0)
        await wait_until(lambda: gate.running == 1)
        _ = await pool.submit(gate.job, "kept", priority=0)
        with pytest.raises(ap.Rejected) as rejected:
            _ = await pool.submit(gate.job, "refused", priority=0)
        assert rejected.value.reason is ap.DropReason.REJECTED
        evicted = await pool.submit(gate.job, "old", priority=1)
        newer = await pool.submit(gate.job, "new", priority=1)
        with pytest.raises(ap.Dropped, match="evicted") as dropped:
            await evicted
        assert (dropped.value.reason, dropped.value.priority) == (ap.DropReason.EVICTED, 1)
        gate.open.set()
        assert await newer == "new"
    stats = pool.statistics()
    assert (stats.rejected, stats.dropped, stats.completed) == (1, 1, 3)
    assert stats.submitted == accounted(stats) == 4


# -- cancellation ------------------------------------------------------------------------


async def test_cancel_a_queued_job() -> None:
    """Cancelling a queued job takes it out of the queue; its function never runs."""
    gate = Gate()
    async with ap.WorkerPool(1) as pool:
        _ = await pool.submit(gate.job, "first")
        queued = await pool.submit(gate.job, "never")
        await wait_until(lambda: gate.running == 1)
        assert queued.cancel()
        assert not queued.cancel()  # already done
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert pool.statistics().pending == 0
        gate.open.set()
    assert gate.started == ["first"]
    stats = pool.statistics()
    assert (stats.cancelled, stats.completed) == (1, 1)
    assert pool.queue.statistics().level(1).removed == 1


async def test_cancel_a_running_job_keeps_the_worker() -> None:
    """Cancelling a running job cancels its coroutine; the worker goes on to the next job."""
    gate = Gate()
    seen: list[str] = []

    async def watched() -> None:
        try:
            await gate.open.wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async with ap.WorkerPool(1) as pool:
        running = await pool.submit(watched)
        after = await pool.submit(echo, "next")
        await wait_until(lambda: running.state is ap.JobState.RUNNING)
        assert running.cancel("stop it")
        assert running.cancel()  # asked again while it unwinds: still True
        with pytest.raises(asyncio.CancelledError, match="stop it"):
            await running
        assert await after == "next"
        assert pool.statistics().workers == 1
    assert seen == ["cancelled"]
    stats = pool.statistics()
    assert (stats.cancelled, stats.completed, stats.submitted) == (1, 1, 2)


async def test_a_job_may_refuse_its_cancellation() -> None:
    """A job that suppresses CancelledError returns normally and the worker is not cancelled."""
    entered = asyncio.Event()

    async def stubborn() -> str:
        try:
            entered.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass
        await asyncio.sleep(0)  # the worker task must not be left cancelling
        return "kept going"

    async with ap.WorkerPool(1) as pool:
        job = await pool.submit(stubborn)
        await entered.wait()
        job.cancel()
        assert await asyncio.shield(job) == "kept going"
        assert await pool.run(echo, 1) == 1
    assert pool.statistics().completed == 2


async def test_cancelling_the_caller_of_run_cancels_the_job() -> None:
    """A caller cancelled inside run() takes its job with it, queued or running."""
    gate = Gate()
    async with ap.WorkerPool(1) as pool:
        running_caller = asyncio.create_task(pool.run(gate.job, "running"))
        queued_caller = asyncio.create_task(pool.run(gate.job, "queued"))
        await wait_until(lambda: gate.running == 1 and pool.statistics().pending == 1)
        queued_caller.cancel()
        running_caller.cancel()
        for caller in (queued_caller, running_caller):
            with pytest.raises(asyncio.CancelledError):
                await caller
        await wait_until(lambda: pool.statistics().active == 0)
        stats = pool.statistics()
        assert (stats.cancelled, stats.pending, stats.active) == (2, 0, 0)
        assert gate.started == ["running"]


async def test_cancelled_submitter_leaves_nothing_behind() -> None:
    """A submit cancelled while waiting for room queues nothing and counts nothing."""
    gate = Gate()
    queue: ap.PriorityQueue[ap.Job[Any]] = ap.PriorityQueue([ap.Level(0, max_size=1)])
    async with ap.WorkerPool(1, queue=queue) as pool:
        _ = await pool.submit(gate.job)
        await wait_until(lambda: gate.running == 1)
        _ = await pool.submit(gate.job)
        blocked = asyncio.create_task(pool.submit(gate.job))
        await wait_until(lambda: queue.statistics().waiting_putters == 1)
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            _ = await blocked
        gate.open.set()
    stats = pool.statistics()
    assert (stats.submitted, stats.completed) == (2, 2)


# -- timeouts ----------------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_job_timeout(clock: VirtualClock) -> None:
    """A job running past its timeout raises JobTimeout (a TimeoutError) at that moment."""
    async with ap.WorkerPool(1, clock=clock) as pool:
        start = clock.now()
        job = await pool.submit(asyncio.sleep, 60.0, timeout=1.5)
        with pytest.raises(TimeoutError, match=r"^job exceeded its timeout of 1\.5 s$") as info:
            await job
        assert isinstance(info.value, ap.JobTimeout)
        assert clock.now() - start == pytest.approx(1.5)
        assert await pool.run(asyncio.sleep, 0.5, "in time", timeout=1.0) == "in time"
    stats = pool.statistics()
    assert (stats.timed_out, stats.completed, stats.workers) == (1, 1, 0)


@pytest.mark.virtual_time
async def test_timeout_counts_even_if_the_job_converts_the_cancellation(
    clock: VirtualClock,
) -> None:
    """A job that turns its timeout's cancellation into another error still times out."""

    async def converts() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    async with ap.WorkerPool(1, clock=clock) as pool:
        job = await pool.submit(converts, timeout=2.0)
        with pytest.raises(ap.JobTimeout) as info:
            await job
        assert isinstance(info.value.__cause__, RuntimeError)
    assert pool.statistics().timed_out == 1


@pytest.mark.virtual_time
async def test_timeout_clock_starts_when_the_job_starts(clock: VirtualClock) -> None:
    """Time spent queued does not count against a job's timeout."""
    async with ap.WorkerPool(1, clock=clock) as pool:
        first = await pool.submit(asyncio.sleep, 5.0)
        second = await pool.submit(asyncio.sleep, 0.5, "ok", timeout=1.0)
        await first
        assert await second == "ok"


@pytest.mark.virtual_time
async def test_deadline_drops_a_job_still_queued(clock: VirtualClock) -> None:
    """A job not started by its deadline fails with Dropped (deadline) at that moment."""
    async with ap.WorkerPool(1, clock=clock) as pool:
        _ = await pool.submit(asyncio.sleep, 10.0)
        start = clock.now()
        late = await pool.submit(echo, "late", deadline=2.0)
        in_time = await pool.submit(echo, "in time", deadline=20.0)
        with pytest.raises(ap.Dropped, match="deadline") as info:
            await late
        assert info.value.reason is ap.DropReason.DEADLINE
        assert clock.now() - start == pytest.approx(2.0, abs=0.011)
        assert await in_time == "in time"
        with pytest.raises(ValueError, match=r"^deadline must be > 0, not 0$"):
            _ = await pool.submit(echo, 1, deadline=0)
    stats = pool.statistics()
    assert (stats.dropped, stats.completed) == (1, 2)
    assert pool.queue.statistics().level(1).drops == {ap.DropReason.DEADLINE: 1}


@pytest.mark.virtual_time
async def test_codel_pool_sheds_a_standing_queue(clock: VirtualClock) -> None:
    """A pool on a CoDel queue under overload sheds old jobs and serves the newest first."""
    queue: ap.PriorityQueue[ap.Job[Any]] = ap.PriorityQueue(
        [ap.Level(0, max_size=10_000)], codel=ap.CoDel(target=0.01, interval=0.1), clock=clock
    )
    served: list[int] = []

    async def work(i: int) -> None:
        await asyncio.sleep(0.01)
        served.append(i)

    async with ap.WorkerPool(2, queue=queue, clock=clock) as pool:
        jobs = []
        for i in range(600):  # 1,000 jobs/s offered to a pool that serves 200/s
            jobs.append(await pool.submit(work, i))
            await clock.sleep(0.001)
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    shed = [o for o in outcomes if isinstance(o, ap.Dropped)]
    assert shed
    assert all(o.reason is ap.DropReason.CODEL for o in shed)
    assert len(shed) + len(served) == 600
    # Adaptive LIFO: under the standing queue the newest jobs were served.
    assert max(served) >= 590
    stats = pool.statistics()
    assert stats.dropped == len(shed)
    assert stats.wait_p99 <= 0.1 + 0.011


# -- error policies ----------------------------------------------------------------------


async def test_isolate_keeps_going() -> None:
    """With the default policy a failing job affects only its own caller."""
    async with ap.WorkerPool(2) as pool:
        failures = [await pool.submit(fail, str(i)) for i in range(3)]
        assert await pool.run(echo, "still here") == "still here"
        for i, job in enumerate(failures):
            with pytest.raises(ValueError, match=str(i)):
                await job
    assert pool.statistics().failed == 3


async def test_fail_fast_closes_the_pool_and_reraises() -> None:
    """fail_fast: the first error drops the queued jobs, cancels the running ones, re-raises."""
    gate = Gate()
    with pytest.raises(ValueError, match=r"^first$"):
        async with ap.WorkerPool(2, error_policy="fail_fast") as pool:
            running = await pool.submit(gate.job)
            failing = await pool.submit(fail, "first")
            queued = [await pool.submit(gate.job) for _ in range(3)]
            await wait_until(lambda: pool.closed)
            with pytest.raises(ap.PoolClosed):
                _ = await pool.submit(echo, 1)
    with pytest.raises(asyncio.CancelledError):
        await running
    with pytest.raises(ValueError, match="first"):
        await failing
    for job in queued:
        with pytest.raises(ap.Dropped) as dropped:
            await job
        assert dropped.value.reason is ap.DropReason.SHUTDOWN
    stats = pool.statistics()
    assert (stats.failed, stats.cancelled, stats.dropped) == (1, 1, 3)


async def test_collect_raises_every_error_at_exit() -> None:
    """collect: errors reach their callers and are raised together on leaving the block."""
    with pytest.raises(ExceptionGroup) as group:
        async with ap.WorkerPool(2, error_policy=ap.ErrorPolicy.COLLECT) as pool:
            for i in range(3):
                _ = await pool.submit(fail, str(i))
            assert await pool.run(echo, "ok") == "ok"
    assert sorted(str(e) for e in group.value.exceptions) == ["0", "1", "2"]


async def test_body_exception_propagates_unchanged_and_cancels() -> None:
    """An exception in the `async with` body is re-raised as is; jobs are stopped."""
    gate = Gate()
    with pytest.raises(KeyError, match="body"):
        async with ap.WorkerPool(1) as pool:
            running = await pool.submit(gate.job)
            queued = await pool.submit(gate.job)
            await wait_until(lambda: gate.running == 1)
            raise KeyError("body")
    assert running.cancelled()
    with pytest.raises(ap.Dropped):
        await queued


# -- resizing and idle workers -----------------------------------------------------------


async def test_resize_up_starts_workers_only_for_waiting_jobs() -> None:
    """Raising max_workers starts as many workers as there are queued jobs, no more."""
    gate = Gate()
    async with ap.WorkerPool(1) as pool:
        jobs = [await pool.submit(gate.job, i) for i in range(4)]
        await wait_until(lambda: gate.running == 1)
        pool.max_workers = 10
        await wait_until(lambda: gate.running == 4)
        assert pool.statistics().workers == 4
        gate.open.set()
        await asyncio.gather(*jobs)


async def test_resize_down_lets_running_jobs_finish() -> None:
    """Lowering max_workers interrupts nothing and starts no job above the new limit."""
    gate = Gate()
    peaks: list[int] = []

    async def tracked(i: int) -> int:
        peaks.append(gate.running)
        result: int = await gate.job(i)
        return result

    async with ap.WorkerPool(4) as pool:
        jobs = [await pool.submit(tracked, i) for i in range(10)]
        await wait_until(lambda: gate.running == 4)
        pool.max_workers = 2
        assert pool.max_workers == 2
        gate.open.set()
        assert await asyncio.gather(*jobs) == list(range(10))
        assert pool.statistics().workers <= 2
    # Six jobs started after the resize, each with at most one other running.
    assert all(p <= 1 for p in peaks[4:])
    with pytest.raises(ValueError, match=r"^max_workers must be >= 1, not .+$"):
        pool.max_workers = 0


async def test_resize_retires_idle_workers_at_once() -> None:
    """Idle workers above a lowered limit leave immediately."""
    async with ap.WorkerPool(8, min_workers=0) as pool:
        await asyncio.gather(*[await pool.submit(echo, i) for i in range(8)])
        await wait_until(lambda: pool.statistics().idle == 8)
        pool.max_workers = 3
        await wait_until(lambda: pool.statistics().workers == 3)
        assert pool.statistics().idle == 3
        with pytest.raises(ValueError, match=r"^max_workers must be >= min_workers$"):
            ap.WorkerPool(4, min_workers=2).max_workers = 1


@pytest.mark.virtual_time
async def test_idle_workers_expire_down_to_min_workers(clock: VirtualClock) -> None:
    """Workers idle for idle_timeout retire, oldest first, but min_workers stay."""
    async with ap.WorkerPool(6, min_workers=2, idle_timeout=10.0, clock=clock) as pool:
        assert pool.statistics().workers == 2
        await asyncio.gather(*[await pool.submit(asyncio.sleep, 1.0) for _ in range(6)])
        await wait_until(lambda: pool.statistics().idle == 6)
        await clock.sleep(9.0)
        assert pool.statistics().workers == 6
        await clock.sleep(2.0)
        await wait_until(lambda: pool.statistics().workers == 2)
        assert pool.statistics().idle == 2


async def test_a_drained_pool_leaves_no_idle_timer_behind() -> None:
    """Leaving `async with` cancels the idle-expiry timer: nothing on the loop keeps the
    closed pool (and the memory it holds) alive until idle_timeout would have run out."""
    loop = asyncio.get_running_loop()
    pool = ap.WorkerPool(8, min_workers=1, idle_timeout=600.0)
    async with pool:
        await asyncio.gather(*[await pool.submit(asyncio.sleep, 0) for _ in range(8)])
        await wait_until(lambda: pool.statistics().idle == 8)
        armed = pool._idle_timer
        assert armed is not None  # seven workers are above min_workers
        timer = cast(asyncio.TimerHandle, armed)  # the loop's handle (asyncio's or uvloop's)
    assert timer.cancelled()
    assert pool._idle_timer is None
    scheduled: list[asyncio.TimerHandle] = getattr(loop, "_scheduled", [])  # asyncio only
    assert all(not (h is timer and not h.cancelled()) for h in scheduled)


async def test_cleanup_idle() -> None:
    """cleanup_idle() retires the idle workers above min_workers and says how many."""
    async with ap.WorkerPool(5, min_workers=1, idle_timeout=None) as pool:
        await asyncio.gather(*[await pool.submit(echo, i) for i in range(5)])
        await wait_until(lambda: pool.statistics().idle == 5)
        assert await pool.cleanup_idle() == 4
        assert pool.statistics().workers == 1
        assert await pool.cleanup_idle() == 0
        assert await pool.run(echo, "still works") == "still works"


# -- shutdown ----------------------------------------------------------------------------


async def test_leaving_the_block_drains_every_job() -> None:
    """Leaving `async with` normally waits for queued and running jobs."""
    async with ap.WorkerPool(2) as pool:
        jobs = [await pool.submit(echo, i) for i in range(50)]
    assert all(job.done() for job in jobs)
    assert pool.statistics().completed == 50
    assert pool.statistics().workers == 0


@pytest.mark.virtual_time
async def test_drain_timeout_then_cancel(clock: VirtualClock) -> None:
    """drain(timeout) gives up at the deadline: running jobs cancelled, queued ones dropped."""
    async with ap.WorkerPool(1, clock=clock) as pool:
        running = await pool.submit(asyncio.sleep, 100.0)
        queued = await pool.submit(asyncio.sleep, 1.0)
        start = clock.now()
        assert await pool.drain(timeout=5.0) is False
        assert clock.now() - start == pytest.approx(5.0)
        with pytest.raises(ap.PoolClosed):
            _ = await pool.submit(echo, 1)
    assert running.cancelled()
    with pytest.raises(ap.Dropped, match="shutdown"):
        await queued
    stats = pool.statistics()
    assert (stats.cancelled, stats.dropped) == (1, 1)
    assert stats.submitted == accounted(stats)


@pytest.mark.virtual_time
async def test_drain_in_time(clock: VirtualClock) -> None:
    """drain() returns True when everything finished before the timeout."""
    async with ap.WorkerPool(2, clock=clock) as pool:
        jobs = [await pool.submit(asyncio.sleep, 1.0, i) for i in range(4)]
        assert await pool.drain(timeout=10.0) is True
        assert [job.result() for job in jobs] == [0, 1, 2, 3]
        assert await pool.drain() is True


@pytest.mark.virtual_time
async def test_drain_timeout_on_exit(clock: VirtualClock) -> None:
    """drain_timeout bounds how long leaving `async with` waits."""
    start = clock.now()
    async with ap.WorkerPool(1, drain_timeout=3.0, clock=clock) as pool:
        job = await pool.submit(asyncio.sleep, 100.0)
    assert clock.now() - start == pytest.approx(3.0)
    assert job.cancelled()


async def test_aclose_cancels_now() -> None:
    """aclose() drops queued jobs, cancels running ones, and is idempotent."""
    gate = Gate()
    pool = ap.WorkerPool(2)
    await pool.aclose()  # never started: nothing to do
    async with ap.WorkerPool(2) as pool:
        running = [await pool.submit(gate.job) for _ in range(2)]
        queued = [await pool.submit(gate.job) for _ in range(3)]
        await wait_until(lambda: gate.running == 2)
        await pool.aclose()
        await pool.aclose()
        assert all(job.cancelled() for job in running)
        for job in queued:
            with pytest.raises(ap.Dropped):
                await job
    stats = pool.statistics()
    assert (stats.cancelled, stats.dropped, stats.workers) == (2, 3, 0)


async def test_dropped_jobs_nobody_awaits_are_counted_not_logged() -> None:
    """Jobs dropped at close are counted; unawaited, they do not flood the loop's log."""
    gate = Gate()
    async with ap.WorkerPool(1) as pool:
        for _ in range(20):
            _ = await pool.submit(gate.job)
        await wait_until(lambda: gate.running == 1)
        await pool.aclose()
    assert pool.statistics().dropped == 19
    # loop_guard collects garbage and fails the test if anything was logged.


async def test_close_wakes_blocked_submitters() -> None:
    """A submitter waiting for room gets PoolClosed when the pool closes."""
    gate = Gate()
    queue: ap.PriorityQueue[ap.Job[Any]] = ap.PriorityQueue([ap.Level(0, max_size=1)])
    async with ap.WorkerPool(1, queue=queue) as pool:
        _ = await pool.submit(gate.job)
        await wait_until(lambda: gate.running == 1)
        _ = await pool.submit(gate.job)
        blocked = asyncio.create_task(pool.submit(gate.job))
        await wait_until(lambda: queue.statistics().waiting_putters == 1)
        await pool.aclose()
        with pytest.raises(ap.PoolClosed):
            _ = await blocked


async def test_outer_cancellation_while_draining() -> None:
    """The owner cancelled while leaving the block still stops every job."""
    gate = Gate()
    jobs: list[ap.Job[Any]] = []

    async def owner() -> None:
        async with ap.WorkerPool(2) as pool:
            jobs.extend([await pool.submit(gate.job) for _ in range(4)])
            await wait_until(lambda: gate.running == 2)

    task = asyncio.create_task(owner())
    await wait_until(lambda: gate.running == 2 and task.done() is False and len(jobs) == 4)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(job.done() for job in jobs)
    assert gate.running == 0


# -- statistics ----------------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_wait_and_run_times(clock: VirtualClock) -> None:
    """statistics() reports wait and run time percentiles on the pool's clock."""
    async with ap.WorkerPool(1, clock=clock) as pool:
        jobs = [await pool.submit(asyncio.sleep, 1.0) for _ in range(64)]
        await asyncio.gather(*jobs)
        stats = pool.statistics()
    assert stats.run_p50 == pytest.approx(1.0)
    assert stats.run_p99 == pytest.approx(1.0)
    # Job i waited i seconds; the sampled ones spread over 7..63.
    assert 25.0 <= stats.wait_p50 <= 40.0
    assert stats.wait_p99 >= 55.0
    assert stats.avg_lifetime == pytest.approx(stats.run_p50 + 35.0, abs=5.0)
    assert stats.loop == "asyncio (virtual time)"


async def test_statistics_and_repr() -> None:
    """A fresh pool reports zeros and its loop; repr shows live state."""
    pool = ap.WorkerPool(8, name="api")
    assert pool.statistics().loop == "not started"
    assert repr(pool) == "<WorkerPool api 0/8 busy, 0 pending, new>"
    async with pool:
        stats = pool.statistics()
        assert stats.loop in ("asyncio", "uvloop")
        assert (stats.submitted, stats.wait_p50, stats.avg_lifetime) == (0, 0.0, 0.0)
        assert dataclass_is_frozen(stats)
    assert repr(pool) == "<WorkerPool api 0/8 busy, 0 pending, closed>"


def dataclass_is_frozen(stats: ap.PoolStatistics) -> bool:
    try:
        stats.active = 5  # type: ignore[misc]
    except AttributeError:
        return True
    return False


# -- adaptive limit ----------------------------------------------------------------------


@pytest.mark.virtual_time
async def test_pool_follows_an_adaptive_limiter(clock: VirtualClock) -> None:
    """With a limiter, the pool's concurrency converges on the upstream's capacity."""
    capacity = 8
    running = 0
    peak_after_settling: list[int] = []
    limiter = ap.AdaptiveLimiter("vegas", initial=48, max_limit=64, clock=clock)

    async def upstream(i: int) -> int:
        nonlocal running
        running += 1
        if i >= 3_000:
            peak_after_settling.append(running)
        try:
            # 10 ms up to `capacity` calls at once, slower in proportion beyond.
            await clock.sleep(0.010 * max(1.0, running / capacity))
        finally:
            running -= 1
        return i

    async with ap.WorkerPool(64, limiter=limiter, clock=clock) as pool:
        assert pool.limit == 48
        jobs = [await pool.submit(upstream, i) for i in range(4_000)]
        await asyncio.gather(*jobs)
        stats = pool.statistics()
    assert capacity <= limiter.limit <= 2 * capacity
    assert stats.limit == limiter.limit
    assert max(peak_after_settling) <= 2 * capacity
    assert limiter.statistics().samples == 4_000
    history = limiter.statistics().history
    assert history
    assert history[-1].limit == limiter.limit


def test_limiter_is_checked() -> None:
    """A limiter that is not an AdaptiveLimiter is refused."""
    with pytest.raises(TypeError, match=r"^limiter must be an AdaptiveLimiter, not int$"):
        ap.WorkerPool(4, limiter=3)  # type: ignore[arg-type]
