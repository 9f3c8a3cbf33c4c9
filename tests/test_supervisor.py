"""Layer 5: Supervisor and ScalingPolicy: scaling on virtual time, supervision, events."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from asyncperf._errors import Dropped, DropReason, PoolClosed, PoolFailed
from asyncperf.abc import ScalingDecision, ScalingReadings
from asyncperf.abc import ScalingPolicy as ScalingPolicyProtocol
from asyncperf.queues import AdaptiveLimiter
from asyncperf.supervisor import (
    ScalingEvent,
    ScalingPolicy,
    Supervisor,
)
from asyncperf.testing import VirtualClock, wait_until
from asyncperf.workers import Job, WorkerPool

#: Every job of the load tests takes this long; a pool of MAX workers then
#: completes MAX / SERVICE jobs per second: its capacity.
SERVICE = 0.1
MAX = 20
CAPACITY = MAX / SERVICE
INTERVAL = 0.25


class Tap:
    """A policy that records each tick's readings and decision, delegating to another."""

    def __init__(self, inner: ScalingPolicyProtocol) -> None:
        self.inner = inner
        self.log: list[tuple[ScalingReadings, ScalingDecision]] = []

    def decide(self, readings: ScalingReadings) -> ScalingDecision:
        decision = self.inner.decide(readings)
        self.log.append((readings, decision))
        return decision

    def first(self, predicate: Callable[[ScalingReadings, ScalingDecision], bool]) -> int:
        """Index of the first tick matching ``predicate``."""
        return next(i for i, (r, d) in enumerate(self.log) if predicate(r, d))


async def work(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def offer(
    pool: WorkerPool, rate: float, seconds: float, rng: random.Random
) -> list[Job[None]]:
    """Open loop: Poisson arrivals at ``rate`` per second for ``seconds``; the jobs submitted."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    jobs: list[Job[None]] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            break
        delay = start + t - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        jobs.append(pool.submit_nowait(work, SERVICE))
    await asyncio.sleep(max(start + seconds - loop.time(), 0.0))
    return jobs


def direction_changes(events: tuple[ScalingEvent, ...]) -> int:
    """How often the pool went from growing to shrinking or back."""
    moves = [e.action for e in events if e.action in ("grow", "shrink")]
    return sum(1 for a, b in itertools.pairwise(moves) if a != b)


def supervised(pool: WorkerPool) -> bool:
    """Whether a supervisor restarts the pool's crashed workers now."""
    return pool._crash_handler is not None


def pool_on(clock: VirtualClock, workers: int, **kwargs: Any) -> WorkerPool:
    return WorkerPool(max_workers=workers, max_pending=100_000, clock=clock, **kwargs)


# -- arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"min_workers": 0}, ValueError, r"^min_workers must be >= 1, not 0$"),
        ({"max_workers": 1.5}, TypeError, r"^max_workers must be an int, not float$"),
        ({"min_workers": 5, "max_workers": 4}, ValueError, r"^max_workers must be >= min_workers$"),
        ({"target_queue_delay": 0}, ValueError, r"^target_queue_delay must be > 0, not 0$"),
        ({"scale_up_step": 0}, ValueError, r"^scale_up_step must be >= 1, not 0$"),
        ({"hold_down": -1.0}, ValueError, r"^hold_down must be >= 0, not -1.0$"),
        ({"window": 0}, ValueError, r"^window must be >= 1, not 0$"),
        ({"max_loop_lag": float("inf")}, ValueError, r"^max_loop_lag must be finite, not inf$"),
        ({"max_cpu": 0}, ValueError, r"^max_cpu must be > 0, not 0$"),
        ({"max_cpu": "high"}, TypeError, r"^max_cpu must be a number, not str$"),
    ],
)
def test_policy_bad_arguments_name_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Each bad ScalingPolicy argument raises an error that names it."""
    with pytest.raises(error, match=message):
        ScalingPolicy(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"interval": 0}, ValueError, r"^interval must be > 0, not 0$"),
        ({"interval": "1"}, TypeError, r"^interval must be a number, not str$"),
        ({"max_restarts": -1}, ValueError, r"^max_restarts must be >= 0, not -1$"),
        ({"restart_window": 0.0}, ValueError, r"^restart_window must be > 0, not 0.0$"),
        ({"max_events": 0}, ValueError, r"^max_events must be >= 1, not 0$"),
        ({"clock": object()}, TypeError, r"^clock must be a Clock, not object$"),
    ],
)
def test_supervisor_bad_arguments_name_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Each bad Supervisor argument raises an error that names it."""
    with pytest.raises(error, match=message):
        Supervisor(**kwargs)


def test_watch_refuses_bad_arguments() -> None:
    """watch() names what is wrong: the pool, the policy, the limiter, a second watch."""
    supervisor = Supervisor()
    pool = WorkerPool(4)
    with pytest.raises(TypeError, match=r"^pool must be a WorkerPool, not str$"):
        supervisor.watch("pool")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^policy must have a decide\(readings\) method, not int$"):
        supervisor.watch(pool, policy=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^limiter must be an AdaptiveLimiter, not int$"):
        supervisor.watch(pool, limiter=3)  # type: ignore[arg-type]
    policy = ScalingPolicy()
    supervisor.watch(pool, policy=policy, name="api")
    with pytest.raises(ValueError, match=r"^pool 'api' is already watched$"):
        supervisor.watch(pool)
    with pytest.raises(ValueError, match=r"^name 'api' is already used by a watched pool$"):
        supervisor.watch(WorkerPool(4), name="api")
    with pytest.raises(ValueError, match=r"^policy is already used for pool 'api'"):
        supervisor.watch(WorkerPool(4), policy=policy)
    assert [p.name for p in supervisor.statistics().pools] == ["api"]


def test_default_policy_satisfies_the_protocol() -> None:
    """The default ScalingPolicy is an asyncperf.abc.ScalingPolicy."""
    assert isinstance(ScalingPolicy(), ScalingPolicyProtocol)
    assert not isinstance(object(), ScalingPolicyProtocol)


# -- scaling on a load step ---------------------------------------------------------


@pytest.mark.virtual_time
async def test_load_step_grows_after_the_window_then_shrinks_after_the_hold_down(
    clock: VirtualClock,
) -> None:
    """10% -> 300% -> 10% of capacity: grow when the window fills, shrink after the hold-down.

    The rule tested: let t0 be the first tick after the step whose queue delay
    exceeds the target; the pool grows at tick t0 + window - 1 (the window of
    `window` readings above target fills there, and never earlier), straight to
    max_workers (the backlog is far larger). t0 is at most two ticks after the
    step. After the load drops, let tc be the first tick from which the delay
    stays at or below the target; the first shrink is at the first tick at
    least hold_down after tc, and never before.
    """
    window, hold_down = 4, 5.0
    policy = ScalingPolicy(min_workers=4, max_workers=MAX, hold_down=hold_down, window=window)
    tap = Tap(policy)
    supervisor = Supervisor(clock=clock, interval=INTERVAL)
    rng = random.Random(5)
    jobs: list[Job[None]] = []
    async with pool_on(clock, 4) as pool:
        supervisor.watch(pool, policy=tap)
        async with supervisor:
            jobs += await offer(pool, 0.1 * CAPACITY, 5.0, rng)
            step = clock.now()
            jobs += await offer(pool, 3.0 * CAPACITY, 3.0, rng)
            drop = clock.now()
            jobs += await offer(pool, 0.1 * CAPACITY, 20.0, rng)
    await asyncio.gather(*jobs)
    target = policy.target_queue_delay

    events = supervisor.events
    assert all(e.time > step for e in events if e.action == "grow")
    t0 = tap.first(lambda r, d: r.time > step and r.queue_delay > target)
    assert tap.log[t0][0].time - step <= 2 * INTERVAL + 1e-9
    grew = tap.first(lambda r, d: d.workers is not None and d.workers > r.workers)
    assert grew == t0 + window - 1
    assert tap.log[grew][1].workers == MAX
    grow = next(e for e in events if e.action == "grow")
    assert (grow.before, grow.after) == (4, MAX)
    assert grow.readings["pending"] > MAX
    assert "for 4 ticks" in grow.reason

    after = [i for i, (r, _) in enumerate(tap.log) if r.time > drop]
    tc = max(i for i in after if tap.log[i][0].queue_delay > target) + 1
    calm_at = tap.log[tc][0].time
    shrinks = [e for e in events if e.action == "shrink"]
    assert shrinks, "the pool never shrank"
    assert calm_at + hold_down - 1e-9 <= shrinks[0].time <= calm_at + hold_down + INTERVAL
    assert all(s.after >= 4 for s in shrinks)
    assert direction_changes(events) == 1
    stats = pool.statistics()
    assert stats.completed == len(jobs) == stats.submitted
    assert stats.max_workers == shrinks[-1].after


@pytest.mark.virtual_time
async def test_one_sample_above_target_does_not_grow(clock: VirtualClock) -> None:
    """A burst that leaves the delay above target for fewer than `window` ticks changes nothing."""
    supervisor = Supervisor(clock=clock, interval=INTERVAL)
    async with pool_on(clock, 2) as pool:
        supervisor.watch(pool, policy=ScalingPolicy(min_workers=2, max_workers=MAX, window=4))
        async with supervisor:
            # 12 jobs of 0.1 s on 2 workers: queued for 0.5 s, two ticks at most.
            jobs = [pool.submit_nowait(work, SERVICE) for _ in range(12)]
            await asyncio.gather(*jobs)
            await clock.sleep(5 * INTERVAL)
    assert supervisor.events == ()
    assert pool.max_workers == 2


@pytest.mark.virtual_time
async def test_growth_stops_at_the_demand(clock: VirtualClock) -> None:
    """The pool grows to min(running + queued, max_workers): no worker without a job."""
    supervisor = Supervisor(clock=clock, interval=INTERVAL)
    async with pool_on(clock, 2) as pool:
        supervisor.watch(pool, policy=ScalingPolicy(min_workers=2, max_workers=64, window=2))
        async with supervisor:
            jobs = [pool.submit_nowait(work, 10.0) for _ in range(30)]
            await clock.sleep(3 * INTERVAL)
            assert pool.statistics().workers == 30
            for job in jobs:
                job.cancel()
    (grow,) = [e for e in supervisor.events if e.action == "grow"]
    assert (grow.before, grow.after) == (2, 30)
    assert grow.reason.endswith("demand 30 (2 running + 28 queued)")
    await asyncio.gather(*jobs, return_exceptions=True)


@pytest.mark.virtual_time
async def test_scale_up_step_grows_in_steps(clock: VirtualClock) -> None:
    """With scale_up_step, each tick of sustained delay adds at most that many workers."""
    supervisor = Supervisor(clock=clock, interval=INTERVAL)
    policy = ScalingPolicy(min_workers=2, max_workers=MAX, window=2, scale_up_step=3)
    async with pool_on(clock, 2) as pool:
        supervisor.watch(pool, policy=policy)
        async with supervisor:
            jobs = [pool.submit_nowait(work, 1.0) for _ in range(200)]
            await asyncio.gather(*jobs)
    grows = [e for e in supervisor.events if e.action == "grow"]
    assert [(e.before, e.after) for e in grows[:3]] == [(2, 5), (5, 8), (8, 11)]
    steps = itertools.pairwise(grows)
    assert all(b.time - a.time == pytest.approx(INTERVAL) for a, b in steps)
    assert max(e.after for e in grows) == MAX


@pytest.mark.virtual_time
async def test_steady_load_at_90_percent_does_not_oscillate(clock: VirtualClock) -> None:
    """Two minutes of Poisson load at 90% of capacity: one growth, no back and forth."""
    supervisor = Supervisor(clock=clock, interval=INTERVAL)
    policy = ScalingPolicy(min_workers=2, max_workers=MAX, hold_down=5.0)
    async with pool_on(clock, 2) as pool:
        supervisor.watch(pool, policy=policy)
        async with supervisor:
            jobs = await offer(pool, 0.9 * CAPACITY, 120.0, random.Random(9))
    await asyncio.gather(*jobs)
    moves = [e for e in supervisor.events if e.action in ("grow", "shrink")]
    assert moves[0].action == "grow"
    assert direction_changes(supervisor.events) == 0
    assert len(moves) == 1
    assert supervisor.statistics().ticks >= 120 / INTERVAL - 1


@pytest.mark.virtual_time
async def test_size_outside_the_policy_bounds_is_clamped_at_the_first_tick(
    clock: VirtualClock,
) -> None:
    """A pool started above the policy's max_workers is brought within it at once."""
    supervisor = Supervisor(clock=clock, interval=INTERVAL)
    async with pool_on(clock, 50) as pool:
        supervisor.watch(pool, policy=ScalingPolicy(min_workers=1, max_workers=8))
        async with supervisor:
            await clock.sleep(INTERVAL * 1.5)
            assert pool.max_workers == 8
    (event,) = supervisor.events
    assert (event.action, event.before, event.after) == ("shrink", 50, 8)
    assert "outside the policy's 1..8 workers" in event.reason


# -- the loop-lag guard -------------------------------------------------------------


@pytest.mark.virtual_time
async def test_loop_lag_stops_growth_and_says_so(clock: VirtualClock) -> None:
    """While the loop lags more than max_loop_lag the pool does not grow; then it does."""
    supervisor = Supervisor(clock=clock, interval=INTERVAL)
    policy = ScalingPolicy(min_workers=2, max_workers=MAX, window=4, max_loop_lag=0.1)
    blocking = True

    async def blocker() -> None:
        # Code that holds the loop: time passes and nothing else runs.
        while blocking:
            await asyncio.sleep(0.05)
            clock.advance(0.5)

    async with pool_on(clock, 2) as pool:
        supervisor.watch(pool, policy=policy)
        async with supervisor:
            jobs = [pool.submit_nowait(work, 10.0) for _ in range(100)]
            hog = asyncio.create_task(blocker())
            await clock.sleep(10.0)
            assert pool.max_workers == 2
            holds = [e for e in supervisor.events if e.action == "hold"]
            assert holds
            assert "loop lags" in holds[0].reason
            assert "more workers only add overhead" in holds[0].reason
            assert holds[0].readings["loop_lag"] > 0.1
            assert supervisor.statistics().max_loop_lag > 0.1
            blocking = False
            await hog
            stopped = clock.now()
            await clock.sleep((4 + 2) * INTERVAL)
            assert pool.max_workers == MAX
            for job in jobs:
                job.cancel()
    grow = next(e for e in supervisor.events if e.action == "grow")
    assert grow.time > stopped
    await asyncio.gather(*jobs, return_exceptions=True)


@pytest.mark.virtual_time
async def test_busy_cpu_stops_growth_when_max_cpu_is_set(clock: VirtualClock) -> None:
    """With max_cpu set, a process busy past it does not grow the pool; then it does."""
    busy = [0.95]  # CPU seconds per second the fake process uses
    used = [0.0, clock.now()]  # CPU seconds so far, and when they were counted

    def cpu_time() -> float:
        now = clock.now()
        used[0] += (now - used[1]) * busy[0]
        used[1] = now
        return used[0]

    supervisor = Supervisor(clock=clock, interval=INTERVAL, cpu_time=cpu_time, real_time=clock.now)
    policy = ScalingPolicy(min_workers=2, max_workers=MAX, window=4, max_cpu=0.9)
    async with pool_on(clock, 2) as pool:
        supervisor.watch(pool, policy=policy)
        async with supervisor:
            jobs = [pool.submit_nowait(work, 10.0) for _ in range(100)]
            await clock.sleep(5.0)
            assert pool.max_workers == 2
            holds = [e for e in supervisor.events if e.action == "hold"]
            assert holds
            assert "uses 0.95 CPU > max_cpu 0.9" in holds[0].reason
            assert holds[0].readings["cpu"] == pytest.approx(0.95)
            cpu_time()  # CPU used until now was at the old rate
            busy[0] = 0.3
            calmed = clock.now()
            await clock.sleep((4 + 2) * INTERVAL)
            assert pool.max_workers == MAX
            for job in jobs:
                job.cancel()
    grow = next(e for e in supervisor.events if e.action == "grow")
    assert grow.time > calmed
    await asyncio.gather(*jobs, return_exceptions=True)


@pytest.mark.virtual_time
async def test_cpu_guard_is_off_by_default(clock: VirtualClock) -> None:
    """Without max_cpu a busy process still grows the pool (the loop-lag guard remains)."""
    supervisor = Supervisor(
        clock=clock, interval=INTERVAL, cpu_time=lambda: clock.now() * 2.0, real_time=clock.now
    )
    async with pool_on(clock, 2) as pool:
        supervisor.watch(pool, policy=ScalingPolicy(min_workers=2, max_workers=MAX, window=4))
        async with supervisor:
            jobs = [pool.submit_nowait(work, 10.0) for _ in range(100)]
            await clock.sleep((4 + 2) * INTERVAL)
            assert pool.max_workers == MAX
            for job in jobs:
                job.cancel()
    await asyncio.gather(*jobs, return_exceptions=True)


# -- the limiter and the queue move with the size -----------------------------------


@pytest.mark.virtual_time
async def test_a_binding_limiter_stops_growth_and_backpressure_takes_over(
    clock: VirtualClock,
) -> None:
    """When the limiter holds the limit below the size, growing would fight it: adjust instead."""
    # A huge window: the limiter keeps the limit it is given for the whole test.
    limiter = AdaptiveLimiter("aimd", initial=3, max_limit=100, window=100_000, clock=clock)
    supervisor = Supervisor(clock=clock, interval=INTERVAL)
    policy = ScalingPolicy(min_workers=1, max_workers=MAX, window=2)
    async with pool_on(clock, 10, limiter=limiter) as pool:
        supervisor.watch(pool, policy=policy)
        async with supervisor:
            jobs = await offer(pool, 100, 4.0, random.Random(3))
            assert pool.queue.statistics().load > 1.0
    await asyncio.gather(*jobs)
    actions = [e.action for e in supervisor.events]
    assert "grow" not in actions
    hold = next(e for e in supervisor.events if e.action in ("hold", "adjust"))
    assert "the limiter holds the limit at 3 < size 10" in hold.reason
    adjust = next(e for e in supervisor.events if e.action == "adjust")
    assert adjust.before == 1.0
    assert adjust.after > 1.0


@pytest.mark.virtual_time
async def test_the_limiter_moves_with_the_size(clock: VirtualClock) -> None:
    """Growth raises a limiter below the new size; a shrink lowers one above it."""
    limiter = AdaptiveLimiter("aimd", initial=2, max_limit=100, window=100_000, clock=clock)
    supervisor = Supervisor(clock=clock, interval=INTERVAL)
    policy = ScalingPolicy(min_workers=2, max_workers=MAX, window=2, hold_down=2.0)
    async with pool_on(clock, 2, limiter=limiter) as pool:
        supervisor.watch(pool, policy=policy)
        async with supervisor:
            jobs = [pool.submit_nowait(work, SERVICE) for _ in range(300)]
            await asyncio.gather(*jobs)
            await clock.sleep(6.0)
    events = supervisor.events
    grow = next(e for e in events if e.action == "grow")
    raised = next(e for e in events if e.action == "limit")
    assert (raised.before, raised.after) == (2, grow.after)
    assert raised.time == grow.time
    shrinks = [e for e in events if e.action == "shrink"]
    lowered = [e for e in events if e.action == "limit"][1:]
    assert shrinks
    assert [(e.time, e.before, e.after) for e in lowered] == [
        (e.time, e.before, e.after) for e in shrinks
    ]
    assert limiter.limit == pool.max_workers == shrinks[-1].after == 2


# -- shrinking retires the longest-idle workers first -------------------------------


class Always:
    """A custom policy: always the same size (and a reason)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def decide(self, readings: ScalingReadings) -> ScalingDecision:
        if readings.workers == self.workers:
            return ScalingDecision()
        return ScalingDecision(workers=self.workers, reason=f"always {self.workers}")


@pytest.mark.virtual_time
async def test_shrinking_keeps_the_most_recently_idle_worker(clock: VirtualClock) -> None:
    """Idle workers retire longest idle first: the warm, most recently idle one stays."""
    policy = Always(3)
    supervisor = Supervisor(clock=clock, interval=INTERVAL)

    async def named(seconds: float) -> str:
        await asyncio.sleep(seconds)
        task = asyncio.current_task()
        assert task is not None  # a job runs in its worker's task
        return task.get_name()

    async with pool_on(clock, 3, idle_timeout=None) as pool:
        supervisor.watch(pool, policy=policy)
        async with supervisor:
            # Three workers going idle in turn, 1 s apart: the last is idle least long.
            names = await asyncio.gather(*(pool.run(named, float(s)) for s in (1, 2, 3)))
            assert len(set(names)) == 3
            policy.workers = 1
            await clock.sleep(INTERVAL)
            await wait_until(lambda: pool.statistics().workers == 1)
            assert await pool.run(named, 0.0) == names[-1]
    assert [(e.action, e.after) for e in supervisor.events] == [("shrink", 1)]


# -- a custom policy through the protocol -------------------------------------------


@pytest.mark.virtual_time
async def test_a_custom_policy_drives_the_pool(clock: VirtualClock) -> None:
    """A user's policy gets every tick's readings; its decisions are applied and logged."""
    seen: list[ScalingReadings] = []

    class Doubling:
        def decide(self, readings: ScalingReadings) -> ScalingDecision:
            seen.append(readings)
            if readings.workers < 8:
                return ScalingDecision(workers=readings.workers * 2, reason="doubling")
            return ScalingDecision(load=2.0, reason="enough")

    supervisor = Supervisor(clock=clock, interval=INTERVAL)
    async with pool_on(clock, 1) as pool:
        supervisor.watch(pool, policy=Doubling(), name="custom")
        async with supervisor:
            await clock.sleep(INTERVAL * 5.5)
    assert [(e.action, e.before, e.after) for e in supervisor.events] == [
        ("grow", 1, 2),
        ("grow", 2, 4),
        ("grow", 4, 8),
        ("adjust", 1.0, 2.0),
        ("hold", 8, 8),
    ]
    assert supervisor.events[-1].reason == "enough"
    assert pool.queue.statistics().load == 2.0
    assert [r.workers for r in seen] == [1, 2, 4, 8, 8]
    assert all(r.pool == "custom" for r in seen)
    assert seen[1].time - seen[0].time == pytest.approx(INTERVAL)
    stats = supervisor.statistics().pool("custom")
    assert (stats.workers, stats.decisions, stats.restarts, stats.failed) == (8, 5, 0, False)


@pytest.mark.virtual_time
async def test_a_decision_below_min_workers_is_raised_to_it(clock: VirtualClock) -> None:
    """The pool's own min_workers is a floor the supervisor keeps, and says so."""
    supervisor = Supervisor(clock=clock, interval=INTERVAL)
    async with pool_on(clock, 6, min_workers=3) as pool:
        supervisor.watch(pool, policy=Always(1))
        async with supervisor:
            await clock.sleep(INTERVAL * 1.5)
    (event,) = supervisor.events
    assert (event.action, event.after) == ("shrink", 3)
    assert event.reason == "always 1 (raised to min_workers 3)"


@pytest.mark.virtual_time
async def test_a_policy_error_stops_run(clock: VirtualClock) -> None:
    """A policy that raises, or returns something else than a decision, stops run()."""

    class Broken:
        def decide(self, readings: ScalingReadings) -> ScalingDecision:
            raise ZeroDivisionError("bad policy")

    class Wrong:
        def decide(self, readings: ScalingReadings) -> Any:
            return 5

    for policy, error, message in (
        (Broken(), ZeroDivisionError, "bad policy"),
        (Wrong(), TypeError, r"^Wrong.decide\(\) must return a ScalingDecision, not int$"),
    ):
        supervisor = Supervisor(clock=clock, interval=INTERVAL)
        async with pool_on(clock, 2) as pool:
            supervisor.watch(pool, policy=policy)
            with pytest.raises(error, match=message):
                await supervisor.run()
            assert not supervised(pool)
            # In `async with`, the failure cancels the block and is raised on leaving it.
            started = clock.now()
            with pytest.raises(error, match=message):
                async with supervisor:
                    await clock.sleep(60.0)
            assert clock.now() - started == pytest.approx(INTERVAL)


@pytest.mark.virtual_time
async def test_the_blocks_own_error_wins_over_a_failed_run(clock: VirtualClock) -> None:
    """An error raised by the block propagates unchanged; run()'s error is retrieved."""

    class Broken:
        def decide(self, readings: ScalingReadings) -> ScalingDecision:
            raise ZeroDivisionError("bad policy")

    supervisor = Supervisor(clock=clock, interval=INTERVAL)
    async with pool_on(clock, 2) as pool:
        supervisor.watch(pool, policy=Broken())
        with pytest.raises(KeyError, match="mine"):
            async with supervisor:
                try:
                    await clock.sleep(60.0)
                except asyncio.CancelledError:
                    raise KeyError("mine") from None


# -- supervision: crashed worker loops ----------------------------------------------


class CrashingGet:
    """Replaces a queue's get_nowait: raises while ``crashes`` is positive, before taking a job."""

    def __init__(self, pool: WorkerPool, crashes: int) -> None:
        self.crashes = crashes
        self.raised = 0
        self._get = pool.queue.get_nowait

    def __call__(self) -> Any:
        if self.crashes > 0:
            self.crashes -= 1
            self.raised += 1
            raise RuntimeError(f"worker bug {self.raised}")
        return self._get()


@pytest.fixture
def crash_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="asyncperf.supervisor"):
        yield caplog


@pytest.mark.virtual_time
async def test_crashed_workers_are_restarted_within_the_intensity(
    clock: VirtualClock, monkeypatch: pytest.MonkeyPatch, crash_logs: pytest.LogCaptureFixture
) -> None:
    """Up to max_restarts crashes are restarted one-for-one and the jobs still run."""
    supervisor = Supervisor(clock=clock, interval=INTERVAL, max_restarts=3, restart_window=60.0)
    async with pool_on(clock, 1) as pool:
        crashing = CrashingGet(pool, crashes=3)
        monkeypatch.setattr(pool.queue, "get_nowait", crashing)
        supervisor.watch(pool, policy=Always(1))
        async with supervisor:
            results = await asyncio.gather(*(pool.run(work, SERVICE) for _ in range(5)))
    assert results == [None] * 5
    assert crashing.raised == 3
    restarts = [e for e in supervisor.events if e.action == "restart"]
    assert [(e.before, e.after) for e in restarts] == [(0, 1), (1, 2), (2, 3)]
    assert "worker loop crashed: RuntimeError: worker bug 1; restarted (1 of 3" in (
        restarts[0].reason
    )
    assert supervisor.statistics().pool(pool.name).restarts == 3
    warnings = [r for r in crash_logs.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert warnings[0].exc_info is not None
    stats = pool.statistics()
    assert (stats.submitted, stats.completed, stats.failed) == (5, 5, 0)


@pytest.mark.virtual_time
async def test_beyond_the_intensity_the_pool_fails_loudly(
    clock: VirtualClock, monkeypatch: pytest.MonkeyPatch, crash_logs: pytest.LogCaptureFixture
) -> None:
    """One crash more than max_restarts fails the pool: run() raises, no job is lost."""
    supervisor = Supervisor(clock=clock, interval=INTERVAL, max_restarts=2, restart_window=60.0)
    pool = pool_on(clock, 1)
    with pytest.raises(PoolFailed) as pool_error:
        async with pool:
            crashing = CrashingGet(pool, crashes=1_000)
            monkeypatch.setattr(pool.queue, "get_nowait", crashing)
            supervisor.watch(pool, policy=Always(1))
            runner = asyncio.create_task(supervisor.run())
            jobs = [pool.submit_nowait(work, SERVICE) for _ in range(4)]
            with pytest.raises(PoolFailed) as run_error:
                await runner
            with pytest.raises(PoolClosed) as refused:
                _ = pool.submit_nowait(work, SERVICE)
    error = run_error.value
    assert pool_error.value is error
    assert refused.value.__cause__ is error
    assert isinstance(error.__cause__, RuntimeError)
    assert str(error.__cause__) == "worker bug 3"
    assert str(error).startswith(f"{pool.name}: workers crashed 3 times within 60 s")
    assert crashing.raised == 3
    for job in jobs:
        dropped = job.exception()
        assert isinstance(dropped, Dropped)
        assert dropped.reason is DropReason.SHUTDOWN
        assert dropped.__cause__ is error
    stats = pool.statistics()
    assert (stats.submitted, stats.dropped, stats.pending) == (4, 4, 0)
    actions = [e.action for e in supervisor.events]
    assert actions == ["restart", "restart", "fail"]
    assert supervisor.statistics().pool(pool.name).failed
    assert [r.levelno for r in crash_logs.records][-1] == logging.ERROR
    with pytest.raises(PoolFailed):
        await supervisor.run()  # a failed supervisor says so again


@pytest.mark.virtual_time
async def test_restarts_outside_the_window_do_not_count(
    clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The intensity counts restarts within restart_window only."""
    supervisor = Supervisor(clock=clock, interval=INTERVAL, max_restarts=1, restart_window=10.0)
    pool = pool_on(clock, 1)
    with pytest.raises(PoolFailed):
        async with pool:
            crashing = CrashingGet(pool, crashes=0)
            monkeypatch.setattr(pool.queue, "get_nowait", crashing)
            supervisor.watch(pool, policy=Always(1))
            with pytest.raises(PoolFailed):
                async with supervisor:
                    for _ in range(3):
                        crashing.crashes = 1  # one crash now, then 11 s without
                        await pool.run(work, SERVICE)
                        await clock.sleep(11.0)
                    crashing.crashes = 2  # two within the window: the second fails the pool
                    with pytest.raises(Dropped):
                        await pool.run(work, SERVICE)
                    await clock.sleep(60.0)  # cancelled when run() fails
                    raise AssertionError("the block should have been cancelled")  # pragma: no cover
    assert [e.action for e in supervisor.events] == ["restart"] * 4 + ["fail"]
    assert clock.now() == supervisor.events[-1].time  # the block was cancelled at once


@pytest.mark.virtual_time
async def test_a_crash_while_holding_a_job_ends_that_job(
    clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that crashes after taking a job settles it with the crash; nothing is lost."""
    supervisor = Supervisor(clock=clock, interval=INTERVAL, max_restarts=5)

    class BrokenTimers:
        """A clock whose call_later fails once: the worker's job timer."""

        def __init__(self, inner: VirtualClock) -> None:
            self.inner = inner
            self.now = inner.now
            self.sleep = inner.sleep
            self.fail = True

        def call_later(self, delay: float, callback: Any, *args: Any) -> Any:
            if self.fail:
                self.fail = False
                raise OSError("timer wheel broken")
            return self.inner.call_later(delay, callback, *args)

    async with pool_on(clock, 1) as pool:
        monkeypatch.setattr(pool, "_clock", BrokenTimers(clock))
        supervisor.watch(pool, policy=Always(1))
        async with supervisor:
            first = await pool.submit(work, SERVICE, timeout=1.0)
            with pytest.raises(OSError, match="timer wheel broken"):
                await first
            await pool.run(work, SERVICE, timeout=1.0)
    stats = pool.statistics()
    assert (stats.submitted, stats.failed, stats.completed) == (2, 1, 1)
    assert [e.action for e in supervisor.events] == ["restart"]


async def test_without_a_running_supervisor_a_crash_fails_the_pool_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unsupervised (or after run() stopped), a worker crash propagates to the pool's group."""
    supervisor = Supervisor(interval=60.0)
    with pytest.raises(ExceptionGroup) as group:
        async with WorkerPool(1) as pool:
            supervisor.watch(pool, policy=Always(1))
            async with supervisor:
                await wait_until(lambda: supervised(pool))
            assert not supervised(pool)
            monkeypatch.setattr(pool.queue, "get_nowait", CrashingGet(pool, crashes=1))
            await pool.run(work, 0.0)
    assert group.value.subgroup(RuntimeError) is not None


# -- running, cancellation, events --------------------------------------------------


@pytest.mark.virtual_time
async def test_cancelling_run_leaves_nothing_behind(clock: VirtualClock) -> None:
    """Cancelling run() ends it at once, detaches it from the pools, and leaves no task."""
    supervisor = Supervisor(clock=clock, interval=INTERVAL)
    async with pool_on(clock, 2) as pool:
        supervisor.watch(pool)
        runner = asyncio.create_task(supervisor.run())
        await clock.sleep(INTERVAL * 3.5)
        assert supervised(pool)
        with pytest.raises(RuntimeError, match=r"^Supervisor.run\(\) is already running$"):
            await supervisor.run()
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        assert not supervised(pool)
        ticks = supervisor.statistics().ticks
        assert ticks == 3
        await clock.sleep(INTERVAL * 4)
        assert supervisor.statistics().ticks == ticks
        # It can run again afterwards.
        async with supervisor:
            await clock.sleep(INTERVAL * 1.5)
        assert supervisor.statistics().ticks == ticks + 1
    assert "stopped" in repr(supervisor)


@pytest.mark.virtual_time
async def test_pools_not_running_are_skipped_and_watch_works_while_running(
    clock: VirtualClock,
) -> None:
    """A pool not started yet is not read; one watched during run() is sized from then on."""
    seen: list[str] = []

    class Names:
        def decide(self, readings: ScalingReadings) -> ScalingDecision:
            seen.append(readings.pool)
            return ScalingDecision()

    supervisor = Supervisor(clock=clock, interval=INTERVAL)
    later = pool_on(clock, 2, name="later")
    supervisor.watch(later, policy=Names())
    async with supervisor:
        await clock.sleep(INTERVAL * 2.5)
        assert seen == []
        async with later, pool_on(clock, 2, name="added") as added:
            supervisor.watch(added, policy=Names())
            await clock.sleep(INTERVAL)
            supervisor.unwatch(added)
            await clock.sleep(INTERVAL)
    assert seen == ["later", "added", "later"]


@pytest.mark.virtual_time
async def test_event_log_is_bounded_and_listeners_hear_every_event(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The log keeps the newest max_events; listeners and the logger get each event."""

    class Flip:
        def decide(self, readings: ScalingReadings) -> ScalingDecision:
            return ScalingDecision(workers=3 if readings.workers == 2 else 2, reason="flip")

    heard: list[ScalingEvent] = []

    def broken(event: ScalingEvent) -> None:
        raise ValueError("listener bug")

    supervisor = Supervisor(clock=clock, interval=INTERVAL, max_events=5)
    supervisor.add_listener(heard.append)
    supervisor.add_listener(broken)
    with caplog.at_level(logging.INFO, logger="asyncperf.supervisor"):
        async with pool_on(clock, 2) as pool:
            supervisor.watch(pool, policy=Flip())
            async with supervisor:
                await clock.sleep(INTERVAL * 12.5)
    events = supervisor.events
    assert len(events) == 5
    assert len(heard) == 12
    assert events == tuple(heard[-5:])
    assert [e.time for e in events] == sorted(e.time for e in events)
    assert supervisor.statistics().pool(pool.name).decisions == 12
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 12
    assert infos[0].getMessage() == f"{pool.name}: grow 2 -> 3: flip"
    assert any("listener" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    supervisor.remove_listener(heard.append)  # removing twice or a stranger is harmless
    supervisor.remove_listener(heard.append)


@pytest.mark.virtual_time
async def test_statistics_report_ticks_lag_and_pools(clock: VirtualClock) -> None:
    """statistics() is a snapshot: ticks, loop lag, and each pool's size and limit."""
    supervisor = Supervisor(clock=clock, interval=INTERVAL)
    async with pool_on(clock, 4, name="a") as pool:
        supervisor.watch(pool, policy=Always(4))
        async with supervisor:
            await clock.sleep(INTERVAL * 4.5)
            stats = supervisor.statistics()
    assert stats.ticks == 4
    assert stats.loop_lag < 1e-9
    assert stats.max_loop_lag < 1e-9
    assert stats.pool("a").workers == 4
    assert stats.pool("a").limit == 4
    with pytest.raises(KeyError):
        stats.pool("b")
    assert stats.events == ()
