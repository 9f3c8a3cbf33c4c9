"""Layer 1: AdaptiveLimiter: Vegas, Gradient2 and AIMD limits, windows, guards, acquire/release."""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncperf._errors import WouldBlock
from asyncperf.abc import Cancellable
from asyncperf.queues._limiter import (
    AdaptiveLimiter,
    LimitChange,
    LimiterAlgorithm,
    LimiterStatistics,
    LimiterToken,
)
from asyncperf.testing import VirtualClock, VirtualEventLoop, current_virtual_clock, wait_until

ALGORITHMS: tuple[LimiterAlgorithm, ...] = ("vegas", "gradient2", "aimd")
BASE = 0.010  # the simulated upstream's no-load latency, seconds


def feed(
    limiter: AdaptiveLimiter,
    clock: VirtualClock,
    samples: int,
    *,
    latency: float = BASE,
    in_flight: int | None = None,
    dropped: bool = False,
) -> None:
    """Record ``samples`` calls one after another, as a pool would, advancing ``clock``.

    ``in_flight`` defaults to the limit in force: a saturated caller.
    """
    for _ in range(samples):
        clock.advance(latency)
        limiter.record(
            latency,
            in_flight=limiter.limit if in_flight is None else in_flight,
            dropped=dropped,
        )


def reasons(limiter: AdaptiveLimiter) -> list[str]:
    return [change.reason for change in limiter.statistics().history]


async def limiter_acquire(limiter: AdaptiveLimiter) -> LimiterToken:
    return await limiter.acquire()


# -- construction ---------------------------------------------------------------------


def test_defaults() -> None:
    """The default limiter is Vegas from 16 within [1, 1000], deciding every 20 samples."""
    limiter = AdaptiveLimiter()
    assert (limiter.algorithm, limiter.limit, limiter.min_limit, limiter.max_limit) == (
        "vegas",
        16,
        1,
        1_000,
    )
    assert limiter.window == 20
    assert limiter.in_flight == 0
    assert repr(limiter) == "<AdaptiveLimiter vegas limit=16, 0 in flight, 0 waiting>"


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (
            ("cubic",),
            {},
            ValueError,
            r"^algorithm must be one of 'vegas', 'gradient2', 'aimd', not 'cubic'$",
        ),
        ((), {"initial": 0}, ValueError, r"^initial must be between min_limit and max_limit$"),
        (
            (),
            {"initial": 50, "max_limit": 40},
            ValueError,
            r"^initial must be between min_limit and max_limit$",
        ),
        ((), {"min_limit": 0}, ValueError, r"^min_limit must be >= 1$"),
        ((), {"min_limit": 8, "max_limit": 4}, ValueError, r"^max_limit must be >= min_limit$"),
        ((), {"window": 9}, ValueError, r"^window must be >= 10$"),
        ((), {"window": 20.0}, TypeError, r"^window must be an int, not float$"),
        ((), {"initial": True}, TypeError, r"^initial must be an int, not bool$"),
        (
            (),
            {"drop_on": TimeoutError},
            TypeError,
            r"^drop_on must be a tuple of exception types$",
        ),
        (
            ("vegas",),
            {"backoff": 0.5, "foo": 1},
            TypeError,
            r"^unknown tuning for algorithm 'vegas': 'backoff', 'foo' "
            r"\(accepted: alpha, beta, probe_fraction, probe_multiplier, smoothing, threshold\)$",
        ),
        (
            ("aimd",),
            {"tolerance": 1.5},
            TypeError,
            r"^unknown tuning for algorithm 'aimd': 'tolerance' \(accepted: backoff, timeout\)$",
        ),
        (("vegas",), {"alpha": "3"}, TypeError, r"^alpha must be a number, not str$"),
        (("vegas",), {"alpha": None}, TypeError, r"^alpha must be a number, not NoneType$"),
        (("vegas",), {"alpha": math.nan}, ValueError, r"^alpha must not be NaN$"),
        (("vegas",), {"alpha": 0}, ValueError, r"^alpha must be > 0$"),
        (("vegas",), {"beta": 2}, ValueError, r"^beta must be > alpha$"),
        (("vegas",), {"threshold": 3}, ValueError, r"^threshold must be >= 0 and < alpha$"),
        (("vegas",), {"smoothing": 0}, ValueError, r"^smoothing must be > 0 and <= 1$"),
        (
            ("vegas",),
            {"probe_multiplier": 0.5},
            ValueError,
            r"^probe_multiplier must be >= 1 and finite$",
        ),
        (("vegas",), {"probe_fraction": 1}, ValueError, r"^probe_fraction must be > 0 and < 1$"),
        (("gradient2",), {"tolerance": 0.9}, ValueError, r"^tolerance must be >= 1 and finite$"),
        (("gradient2",), {"smoothing": 1.5}, ValueError, r"^smoothing must be > 0 and <= 1$"),
        (
            ("gradient2",),
            {"long_window": 0},
            ValueError,
            r"^long_window must be >= 1 and finite$",
        ),
        (("gradient2",), {"recovery": -0.1}, ValueError, r"^recovery must be >= 0 and <= 1$"),
        (
            ("gradient2",),
            {"queue_size": -1},
            ValueError,
            r"^queue_size must be >= 0 and finite$",
        ),
        (("aimd",), {"backoff": 1.0}, ValueError, r"^backoff must be > 0 and < 1$"),
        (("aimd",), {"timeout": 0}, ValueError, r"^timeout must be > 0$"),
    ],
)
def test_bad_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Bad settings raise an error naming the parameter."""
    with pytest.raises(error, match=message):
        AdaptiveLimiter(*args, **kwargs)


def test_tuning_is_accepted() -> None:
    """Every documented tuning key is accepted by its algorithm (queue_size may be None)."""
    AdaptiveLimiter(
        "vegas",
        alpha=2,
        beta=4,
        threshold=0.5,
        smoothing=0.5,
        probe_multiplier=10,
        probe_fraction=0.25,
    )
    AdaptiveLimiter(
        "gradient2", tolerance=1.5, smoothing=0.5, long_window=100, recovery=0.5, queue_size=None
    )
    AdaptiveLimiter("gradient2", queue_size=4)
    AdaptiveLimiter("aimd", backoff=0.5, timeout=2.0)


@pytest.mark.parametrize(
    ("latency", "in_flight", "error", "message"),
    [
        (-0.001, 1, ValueError, r"^latency must be a finite number >= 0$"),
        (math.nan, 1, ValueError, r"^latency must be a finite number >= 0$"),
        (math.inf, 1, ValueError, r"^latency must be a finite number >= 0$"),
        (0.01, -1, ValueError, r"^in_flight must be >= 0$"),
        (0.01, 1.5, TypeError, r"^in_flight must be an int, not float$"),
    ],
)
def test_record_validates(
    latency: float, in_flight: Any, error: type[Exception], message: str
) -> None:
    """record() refuses latencies that are not finite and >= 0, and bad in-flight counts."""
    limiter = AdaptiveLimiter()
    with pytest.raises(error, match=message):
        limiter.record(latency, in_flight=in_flight)
    assert limiter.statistics().samples == 0


def test_limit_setter_validates() -> None:
    """Setting the limit outside the bounds, or to a non-int, is refused."""
    limiter = AdaptiveLimiter(min_limit=2, max_limit=10, initial=4)
    with pytest.raises(ValueError, match=r"^limit must be between min_limit and max_limit$"):
        limiter.limit = 1
    with pytest.raises(ValueError, match=r"^limit must be between min_limit and max_limit$"):
        limiter.limit = 11
    with pytest.raises(TypeError, match=r"^limit must be an int, not str$"):
        limiter.limit = "5"  # type: ignore[assignment]
    assert limiter.limit == 4


# -- windows and guards ---------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_no_decision_before_a_full_window(algorithm: LimiterAlgorithm) -> None:
    """Fewer than `window` samples never move the limit, whatever they say."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter(algorithm, window=10, clock=clock)
    feed(limiter, clock, 9, dropped=True)
    stats = limiter.statistics()
    assert (stats.limit, stats.windows, stats.samples, stats.drops) == (16, 0, 9, 9)
    feed(limiter, clock, 1, dropped=True)
    stats = limiter.statistics()
    assert (stats.windows, stats.samples, stats.drops) == (1, 10, 10)
    assert stats.limit < 16


def test_samples_started_before_a_change_do_not_fill_the_next_window() -> None:
    """After a change, calls that were already running are counted but left out of the window."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter("aimd", window=10, clock=clock)
    feed(limiter, clock, 10)
    assert limiter.limit == 17
    # Jobs that ran for a second and so started before the change.
    for _ in range(30):
        limiter.record(1.0, in_flight=17, dropped=True)
    stats = limiter.statistics()
    assert (stats.limit, stats.windows, stats.samples, stats.drops) == (17, 1, 40, 30)
    feed(limiter, clock, 10)
    assert limiter.limit == 18


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_app_limited_guard(algorithm: LimiterAlgorithm) -> None:
    """With in-flight always below limit/2 and low latency, the limit never grows."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter(algorithm, initial=16, window=10, clock=clock)
    feed(limiter, clock, 50 * 10, in_flight=7)
    stats = limiter.statistics()
    assert (stats.limit, stats.windows, stats.history) == (16, 50, ())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_half_the_limit_in_flight_is_not_app_limited(algorithm: LimiterAlgorithm) -> None:
    """At exactly limit/2 in flight the guard is off and a fast upstream earns a higher limit."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter(algorithm, initial=16, window=10, clock=clock)
    feed(limiter, clock, 20 * 10, in_flight=8)
    assert limiter.limit > 16


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_max_limit_holds(algorithm: LimiterAlgorithm) -> None:
    """A fast, saturated upstream drives the limit up to max_limit and never past it."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter(algorithm, initial=16, max_limit=24, window=10, clock=clock)
    feed(limiter, clock, 100 * 10)
    assert limiter.limit == 24
    assert max(change.limit for change in limiter.statistics().history) == 24


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_all_drops_reach_min_limit(algorithm: LimiterAlgorithm) -> None:
    """A stream of drops shrinks every algorithm down to min_limit, and no further."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter(algorithm, initial=40, min_limit=3, window=10, clock=clock)
    feed(limiter, clock, 100 * 10, dropped=True)
    assert limiter.limit == 3
    assert min(change.limit for change in limiter.statistics().history) == 3
    assert limiter.statistics().drops == 1_000


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_zero_latencies(algorithm: LimiterAlgorithm) -> None:
    """Instant calls carry no latency signal: Vegas and Gradient2 hold, AIMD grows to the max."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter(algorithm, initial=16, max_limit=30, window=10, clock=clock)
    feed(limiter, clock, 50 * 10, latency=0.0)
    assert limiter.limit == (30 if algorithm == "aimd" else 16)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_huge_latencies(algorithm: LimiterAlgorithm) -> None:
    """Latencies of days after a normal start keep the limit within its bounds."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter(algorithm, initial=16, min_limit=2, max_limit=30, clock=clock)
    feed(limiter, clock, 20)
    feed(limiter, clock, 3 * 20, latency=1e6)
    if algorithm != "aimd":  # AIMD ignores latency unless given a timeout
        assert limiter.limit < 16
    # (Vegas' probe then takes days as the new no-load latency and grows again.)
    feed(limiter, clock, 50 * 20, latency=1e6)
    limits = [change.limit for change in limiter.statistics().history] + [limiter.limit]
    assert all(2 <= limit <= 30 for limit in limits)


# -- the algorithms, step by step -----------------------------------------------------


def test_aimd_adds_one_per_clean_window() -> None:
    """AIMD grows by exactly one per window without drops."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter("aimd", initial=10, window=10, clock=clock)
    for expected in range(11, 16):
        feed(limiter, clock, 10)
        assert limiter.limit == expected
    assert set(reasons(limiter)) == {"aimd: clean window, +1"}


def test_aimd_backs_off_on_drops() -> None:
    """One drop in a window multiplies the limit by the backoff; clean windows add one again."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter("aimd", initial=40, window=10, clock=clock)
    feed(limiter, clock, 9)
    feed(limiter, clock, 1, dropped=True)
    assert limiter.limit == 36
    assert reasons(limiter)[-1] == "aimd: 1 dropped, x0.9"
    feed(limiter, clock, 10)
    assert limiter.limit == 37
    halving = AdaptiveLimiter("aimd", initial=40, window=10, backoff=0.5, clock=clock)
    feed(halving, clock, 10, dropped=True)
    assert halving.limit == 20


def test_aimd_small_limits_still_back_off() -> None:
    """A backoff that rounds to the same limit still takes one off, down to min_limit."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter("aimd", initial=5, window=10, backoff=0.95, clock=clock)
    limits = []
    for _ in range(6):
        feed(limiter, clock, 10, dropped=True)
        limits.append(limiter.limit)
    assert limits == [4, 3, 2, 1, 1, 1]


def test_aimd_timeout_counts_as_loss() -> None:
    """With a timeout, a window holding a call slower than it backs off like a drop."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter("aimd", initial=20, window=10, timeout=0.05, clock=clock)
    feed(limiter, clock, 9, latency=0.01)
    feed(limiter, clock, 1, latency=0.06)
    assert limiter.limit == 18
    assert reasons(limiter) == ["aimd: latency 60.0 ms > timeout, x0.9"]


def test_vegas_steps() -> None:
    """Vegas learns the no-load latency, grows fast with no queue, holds, shrinks above beta."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter("vegas", initial=16, window=10, clock=clock)
    feed(limiter, clock, 10, latency=0.010)  # the first window only sets the baseline
    assert limiter.statistics().history == ()
    feed(limiter, clock, 10, latency=0.010)  # no queue: + beta * log10(16)
    assert limiter.limit == 23
    assert reasons(limiter) == ["vegas: queue 0.0 <= threshold 1.2"]
    # queue = 23 * (1 - 10/13) = 5.3, between alpha 4.1 and beta 8.2: hold.
    feed(limiter, clock, 10, latency=0.013)
    assert limiter.limit == 23
    # queue = 23 * (1 - 10/20) = 11.5 > beta: - log10(23.2).
    feed(limiter, clock, 10, latency=0.020)
    assert limiter.limit == 21
    assert reasons(limiter)[-1] == "vegas: queue 11.6 > beta 8.2"
    feed(limiter, clock, 10, dropped=True)
    assert limiter.limit == 20
    assert reasons(limiter)[-1] == "vegas: 10 dropped"


def test_vegas_probe_learns_a_slower_upstream() -> None:
    """The periodic probe halves the limit for a window and adopts its latency as the baseline."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter("vegas", initial=16, window=10, probe_multiplier=3, clock=clock)
    feed(limiter, clock, 10)
    # The upstream turns 3x slower for good: Vegas takes it for queueing and shrinks...
    for _ in range(10):
        feed(limiter, clock, 10, latency=3 * BASE)
        if reasons(limiter)[-1].startswith("vegas: probe"):
            break
    before = limiter.statistics().history[-2].limit
    assert reasons(limiter)[-2].startswith("vegas: queue")
    assert before < 16
    # ... until the probe: half the limit, for one window of calls started since.
    probe = limiter.limit
    assert reasons(limiter)[-1] == f"vegas: probe no-load latency at limit {probe}"
    assert before / 2 <= probe <= before / 2 + 1  # probe_fraction 0.5 of the estimate, rounded up
    feed(limiter, clock, 10, latency=3 * BASE)
    assert limiter.limit == before
    assert reasons(limiter)[-1] == "vegas: probe done, no-load latency 30.0 ms"
    # With the new baseline, 30 ms is no queue at all: the limit grows again.
    feed(limiter, clock, 10, latency=3 * BASE)
    assert limiter.limit > before
    assert reasons(limiter)[-1].startswith("vegas: queue 0.0 <= threshold")


def test_vegas_probe_without_load_does_not_dip() -> None:
    """When the load is already below the probe's limit, the probe measures without lowering it."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter("vegas", initial=16, window=10, probe_multiplier=1, clock=clock)
    feed(limiter, clock, 40 * 10, in_flight=3)
    assert limiter.statistics().history == ()


def test_gradient2_steps() -> None:
    """Gradient2 grows by its queue allowance at steady latency and shrinks when latency rises."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter("gradient2", initial=16, window=10, clock=clock)
    feed(limiter, clock, 2 * 10)  # 16 + 2 * 0.2 * sqrt(16)
    assert limiter.limit == 17
    assert reasons(limiter) == ["gradient2: gradient 1.00 (long 10.0 ms, short 10.0 ms)"]
    feed(limiter, clock, 10 * 10)  # past the warm-up: the long-term latency is 10 ms
    grown = limiter.limit
    feed(limiter, clock, 10, latency=4 * BASE)
    assert reasons(limiter)[-1] == "gradient2: gradient 0.50 (long 10.1 ms, short 40.0 ms)"
    feed(limiter, clock, 4 * 10, latency=4 * BASE)
    assert limiter.limit < 0.8 * grown
    feed(limiter, clock, 10, dropped=True)  # a drop: gradient 0.5 without allowance
    assert reasons(limiter)[-1] == "gradient2: 10 dropped"


def test_gradient2_recovers_after_a_long_overload() -> None:
    """After latency comes back down, the long-term latency follows and the limit grows back."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter("gradient2", initial=30, window=10, clock=clock)
    feed(limiter, clock, 20 * 10)
    grown = limiter.limit
    feed(limiter, clock, 200 * 10, latency=3 * BASE)
    low = limiter.limit
    assert low < grown / 2
    feed(limiter, clock, 70 * 10)
    assert limiter.limit >= grown


# -- convergence on a simulated upstream ----------------------------------------------


class Overloaded(Exception):
    """The simulated upstream refused a call: it was at its capacity."""


class Upstream:
    """A simulated upstream that shares its capacity like a CPU (processor sharing).

    Up to ``capacity`` calls run at full speed and take ``base`` seconds (+-20%,
    from a seeded generator); with ``n > capacity`` calls, each runs at
    ``capacity / n`` of full speed, so latency grows linearly with the
    concurrency beyond capacity and throughput stays at its maximum. With
    ``reject=True`` it refuses (raises :class:`Overloaded`) any call arriving at
    capacity instead: a loss signal only.
    """

    def __init__(self, clock: VirtualClock, *, base: float, capacity: int, reject: bool) -> None:
        self.clock = clock
        self.base = base
        self.capacity = capacity
        self.reject = reject
        self.rng = random.Random(7)
        self.active = 0
        self.served = 0
        # Work done so far by each running call (in seconds of full speed), and
        # the work each needs in total: all running calls progress alike.
        self.work = 0.0
        self.last = clock.now()
        self.calls: list[tuple[float, int, asyncio.Future[None]]] = []
        self.seq = 0
        self.timer: Cancellable | None = None

    def rate(self) -> float:
        return 1.0 if self.active <= self.capacity else self.capacity / self.active

    def set(self, *, base: float, capacity: int) -> None:
        self._advance()
        self.base, self.capacity = base, capacity
        self._schedule()

    def _advance(self) -> None:
        now = self.clock.now()
        self.work += (now - self.last) * self.rate()
        self.last = now

    def _schedule(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.calls:
            delay = max(0.0, (self.calls[0][0] - self.work) / self.rate())
            self.timer = self.clock.call_later(delay, self._finish)

    def _finish(self) -> None:
        self.timer = None
        self._advance()
        while self.calls and self.calls[0][0] <= self.work + 1e-12:
            _, _, done = heapq.heappop(self.calls)
            self.active -= 1
            self.served += 1
            if not done.done():  # its caller may have been cancelled
                done.set_result(None)
        self._schedule()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()

    async def call(self) -> None:
        self._advance()
        if self.reject and self.active >= self.capacity:
            raise Overloaded
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.seq += 1
        need = self.work + self.base * self.rng.uniform(0.8, 1.2)
        heapq.heappush(self.calls, (need, self.seq, done))
        self.active += 1
        self._schedule()
        await done


class ResizableGate:
    """The concurrency of a worker pool, resized from the limiter's listener."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.running = 0
        self.free = asyncio.Semaphore(size)
        self.debt = 0  # slots to retire as running calls finish

    def resize(self, size: int) -> None:
        grow = size - self.size
        self.size = size
        while grow > 0 and self.debt:
            self.debt -= 1
            grow -= 1
        for _ in range(grow):
            self.free.release()
        if grow < 0:
            self.debt -= grow


@dataclass
class Trace:
    """The limit in force after each window of a simulated run, and the phases."""

    initial: int
    changes: list[tuple[int, int, str]] = field(default_factory=list)
    phase_starts: list[int] = field(default_factory=list)

    def limits(self, end: int) -> list[tuple[int, bool]]:
        """(limit, in a Vegas probe) after windows 0..end."""
        out: list[tuple[int, bool]] = []
        limit, probing, changes = self.initial, False, iter(self.changes)
        pending = next(changes, None)
        for window in range(end + 1):
            while pending is not None and pending[0] <= window:
                limit, probing = pending[1], pending[2].startswith("vegas: probe no-load")
                pending = next(changes, None)
            out.append((limit, probing))
        return out

    def settle(self, phase: int, low: float, high: float) -> int:
        """How many windows into the phase the limit entered [low, high] for good.

        Vegas' probe windows (a deliberate dip of one window) are left aside.
        """
        start = self.phase_starts[phase]
        end = self.phase_starts[phase + 1] - 1
        limits = self.limits(end)[start:]
        outside = [
            i
            for i, (limit, probing) in enumerate(limits)
            if not probing and not low <= limit <= high
        ]
        assert outside[-1:] != [len(limits) - 1], f"phase {phase} ended outside the band"
        return outside[-1] + 1 if outside else 0


async def simulate(
    algorithm: LimiterAlgorithm,
    phases: list[tuple[int, float, int]],
    *,
    driver: Literal["acquire", "record"],
    clients: int = 200,
) -> Trace:
    """Run ``clients`` callers flat out against an upstream through ``phases`` of
    (capacity, base latency, windows), driving the limiter one of its two ways."""
    clock = current_virtual_clock()  # tests marked virtual_time
    limiter = AdaptiveLimiter(algorithm, clock=clock, drop_on=(TimeoutError, Overloaded))
    capacity, base, _ = phases[0]
    upstream = Upstream(clock, base=base, capacity=capacity, reject=algorithm == "aimd")
    trace = Trace(initial=limiter.limit)
    gate = ResizableGate(limiter.limit)

    def on_change(limit: int) -> None:
        trace.changes.append((limiter.statistics().windows, limit, reasons(limiter)[-1]))
        gate.resize(limit)

    limiter.add_listener(on_change)

    async def through_acquire() -> None:
        while True:
            try:
                async with limiter.acquire():
                    await upstream.call()
            except Overloaded:
                pass

    async def through_record() -> None:
        # What WorkerPool does: its own concurrency, one record() per job.
        while True:
            await gate.free.acquire()
            gate.running += 1
            in_flight, started, dropped = gate.running, clock.now(), False
            try:
                await upstream.call()
            except Overloaded:
                dropped = True
            gate.running -= 1
            # Report first, then take the next job: a resize applies at once.
            limiter.record(clock.now() - started, in_flight=in_flight, dropped=dropped)
            if gate.debt:
                gate.debt -= 1
            else:
                gate.free.release()

    client = through_acquire if driver == "acquire" else through_record
    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    try:
        for capacity, base, windows in phases:
            upstream.set(base=base, capacity=capacity)
            trace.phase_starts.append(limiter.statistics().windows)
            while limiter.statistics().windows < trace.phase_starts[-1] + windows:  # noqa: ASYNC110
                await asyncio.sleep(BASE / 2)  # virtual time: jumps to the next event
        trace.phase_starts.append(limiter.statistics().windows)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        upstream.close()
    assert upstream.served > 0
    return trace


C = 50  # the upstream's capacity in calls at once
PHASES = [(C, BASE, 120), (C // 2, BASE, 100), (C, BASE, 100)]
# Per algorithm: the band the limit must settle in, as multiples of the capacity
# in force, and the most windows each phase may take to enter it for good: from
# the initial 16 up to C, from C down to C/2 after the capacity halves, and back
# up to C once it recovers. (Observed in this deterministic simulation, either
# driver: Vegas 17, 16, 4-8 windows; Gradient2 34, 13, 14; AIMD 27, 5, 19.)
CONVERGENCE: dict[LimiterAlgorithm, tuple[float, float, tuple[int, int, int]]] = {
    # Vegas holds alpha..beta calls (about 5-11) queued above capacity.
    "vegas": (1.0, 1.3, (25, 25, 15)),
    # Gradient2 lets latency exceed its long-term level by its sqrt(limit) allowance.
    "gradient2": (1.0, 1.35, (50, 20, 25)),
    # AIMD saws between capacity * backoff and capacity + 1, one step per window.
    "aimd": (0.85, 1.05, (40, 10, 30)),
}


@pytest.mark.virtual_time
@pytest.mark.parametrize("driver", ["acquire", "record"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_converges_and_follows_a_step(
    algorithm: LimiterAlgorithm, driver: Literal["acquire", "record"]
) -> None:
    """The limit settles near capacity, follows it to half and back, each in bounded windows."""
    low, high, bounds = CONVERGENCE[algorithm]
    trace = await simulate(algorithm, PHASES, driver=driver)
    taken = [
        trace.settle(phase, low * capacity, high * capacity)
        for phase, (capacity, _, _) in enumerate(PHASES)
    ]
    assert all(t <= bound for t, bound in zip(taken, bounds, strict=True)), (taken, trace.changes)


@pytest.mark.virtual_time
async def test_vegas_follows_a_slower_upstream() -> None:
    """If the upstream turns 3x slower for good, Vegas dips, re-probes and returns near capacity."""
    phases = [(C, BASE, 100), (C, 3 * BASE, 150), (C, BASE, 60)]
    trace = await simulate("vegas", phases, driver="acquire")
    start, end = trace.phase_starts[1], trace.phase_starts[2]
    dip = min(limit for limit, _ in trace.limits(end)[start:])
    assert dip < 0.6 * C  # taken for queueing at first...
    # ...until a probe measures the new no-load latency (observed: 27 windows).
    assert trace.settle(1, C, 1.3 * C) <= 40
    assert any(
        reason.startswith("vegas: probe done, no-load latency 2") for *_, reason in trace.changes
    )
    assert trace.settle(2, C, 1.3 * C) <= 15  # and faster again: the minimum drops at once


# -- acquire and release ----------------------------------------------------------------


async def test_try_acquire_up_to_the_limit() -> None:
    """try_acquire gives out `limit` tokens, then None (acquire_nowait raises) until a release."""
    limiter = AdaptiveLimiter(initial=3)
    tokens = [limiter.try_acquire() for _ in range(2)] + [limiter.acquire_nowait()]
    assert all(isinstance(token, LimiterToken) for token in tokens)
    assert limiter.try_acquire() is None
    with pytest.raises(WouldBlock, match=r"^the limit of 3 calls in flight is reached$"):
        limiter.acquire_nowait()
    assert limiter.in_flight == 3
    token = tokens[0]
    assert token is not None
    token.release()
    assert token.released
    assert limiter.try_acquire() is not None
    assert limiter.in_flight == 3


async def test_waiters_are_served_in_order() -> None:
    """acquire() waits while the limit is reached and waiters get slots first come, first served."""
    limiter = AdaptiveLimiter(initial=1)
    held = await limiter.acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        token = await limiter.acquire()
        order.append(i)
        assert limiter.in_flight == 1
        token.release()

    tasks = []
    for i in range(4):
        tasks.append(asyncio.create_task(waiter(i)))
        await wait_until(lambda n=i + 1: limiter.statistics().waiting == n)  # type: ignore[misc]
    held.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]
    assert (limiter.in_flight, limiter.statistics().waiting) == (0, 0)


async def test_released_slot_goes_to_the_waiter_not_to_try_acquire() -> None:
    """A slot freed while someone waits is handed to the waiter; try_acquire cannot barge."""
    limiter = AdaptiveLimiter(initial=1)
    held = await limiter.acquire()
    waiter = asyncio.create_task(limiter_acquire(limiter))
    await wait_until(lambda: limiter.statistics().waiting == 1)
    held.release()
    assert limiter.try_acquire() is None
    token = await waiter
    token.release()
    assert limiter.in_flight == 0


async def test_cancelled_waiter_leaks_no_slot() -> None:
    """A waiter cancelled while waiting holds no slot and leaves the queue."""
    limiter = AdaptiveLimiter(initial=1)
    held = await limiter.acquire()
    waiter = asyncio.create_task(limiter_acquire(limiter))
    await wait_until(lambda: limiter.statistics().waiting == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (limiter.in_flight, limiter.statistics().waiting) == (1, 0)
    held.release()
    assert limiter.in_flight == 0
    (await limiter.acquire()).release()


async def test_waiter_cancelled_after_being_handed_a_slot_passes_it_on() -> None:
    """A slot handed to a waiter that is cancelled before it runs goes to the next waiter."""
    limiter = AdaptiveLimiter(initial=1)
    held = await limiter.acquire()
    first = asyncio.create_task(limiter_acquire(limiter))
    await wait_until(lambda: limiter.statistics().waiting == 1)
    second = asyncio.create_task(limiter_acquire(limiter))
    await wait_until(lambda: limiter.statistics().waiting == 2)
    held.release()  # the slot is now first's...
    first.cancel()  # ...but it is cancelled before it could run
    with pytest.raises(asyncio.CancelledError):
        await first
    token = await second
    assert limiter.in_flight == 1
    token.release()
    assert (limiter.in_flight, limiter.statistics().samples) == (0, 2)


async def test_raising_the_limit_wakes_as_many_waiters_as_there_is_room() -> None:
    """Setting a higher limit hands out exactly the new room to waiters, in order."""
    limiter = AdaptiveLimiter(initial=1)
    held = await limiter.acquire()
    tasks = [asyncio.create_task(limiter_acquire(limiter)) for _ in range(5)]
    await wait_until(lambda: limiter.statistics().waiting == 5)
    limiter.limit = 4
    assert (limiter.in_flight, limiter.statistics().waiting) == (4, 2)
    tokens = [await task for task in tasks[:3]]
    assert not any(task.done() for task in tasks[3:])
    for token in [held, *tokens]:
        token.release()
    for task in tasks[3:]:
        (await task).release()
    assert limiter.in_flight == 0


async def test_recorded_samples_raise_the_limit_and_wake_waiters() -> None:
    """A window recorded by a pool that raises the limit lets a waiter in at once."""
    limiter = AdaptiveLimiter("aimd", initial=1, window=10)
    held = await limiter.acquire()
    tasks = [asyncio.create_task(limiter_acquire(limiter)) for _ in range(2)]
    await wait_until(lambda: limiter.statistics().waiting == 2)
    for _ in range(10):
        limiter.record(0.0, in_flight=1)
    assert limiter.limit == 2
    assert (limiter.in_flight, limiter.statistics().waiting) == (2, 1)
    (await tasks[0]).release()
    held.release()
    (await tasks[1]).release()
    assert limiter.in_flight == 0


async def test_lowering_the_limit_lets_holders_finish() -> None:
    """Below the tokens held, nobody new gets in until in-flight falls under the new limit."""
    limiter = AdaptiveLimiter(initial=3)
    held = [await limiter.acquire() for _ in range(3)]
    limiter.limit = 1
    waiter = asyncio.create_task(limiter_acquire(limiter))
    await wait_until(lambda: limiter.statistics().waiting == 1)
    held[0].release()
    held[1].release()
    assert (limiter.in_flight, limiter.statistics().waiting) == (1, 1)
    held[2].release()
    (await waiter).release()
    assert limiter.in_flight == 0


async def test_release_twice_is_an_error() -> None:
    """A token is released exactly once; a second release raises and changes nothing."""
    limiter = AdaptiveLimiter()
    token = await limiter.acquire()
    token.release()
    with pytest.raises(
        RuntimeError,
        match=r"^This token has already been released; release each token exactly once\.$",
    ):
        token.release()
    assert (limiter.in_flight, limiter.statistics().samples) == (0, 1)
    assert repr(token).startswith("<LimiterToken released")


async def test_async_with_records_samples_and_drops() -> None:
    """Leaving `async with` records a sample; a TimeoutError records a drop; errors propagate."""
    limiter = AdaptiveLimiter()
    async with limiter.acquire() as token:
        assert limiter.in_flight == 1
        assert not token.released
    with pytest.raises(TimeoutError):
        async with limiter.acquire():
            raise TimeoutError
    with pytest.raises(ValueError, match="boom"):
        async with limiter.acquire():
            raise ValueError("boom")
    stats = limiter.statistics()
    assert (stats.in_flight, stats.samples, stats.drops) == (0, 3, 1)


async def test_drop_on_is_configurable() -> None:
    """Only the exceptions in drop_on count as drops."""
    limiter = AdaptiveLimiter(drop_on=(Overloaded,))
    with pytest.raises(Overloaded):
        async with limiter.acquire():
            raise Overloaded
    with pytest.raises(TimeoutError):
        async with limiter.acquire():
            raise TimeoutError
    assert (limiter.statistics().samples, limiter.statistics().drops) == (2, 1)


async def test_release_inside_async_with_is_not_repeated() -> None:
    """The body may release its token itself (e.g. to mark a drop); exit then does nothing."""
    limiter = AdaptiveLimiter()
    async with limiter.acquire() as token:
        token.release(dropped=True)
    stats = limiter.statistics()
    assert (stats.in_flight, stats.samples, stats.drops) == (0, 1, 1)


async def test_cancellation_inside_async_with_records_nothing() -> None:
    """A call cancelled inside `async with` frees its slot without recording a sample."""
    limiter = AdaptiveLimiter()
    inside = asyncio.Event()

    async def call() -> None:
        async with limiter.acquire():
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(call())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (limiter.in_flight, limiter.statistics().samples) == (0, 0)


async def test_release_with_ignore_records_nothing() -> None:
    """release(ignore=True) frees the slot and records no sample."""
    limiter = AdaptiveLimiter()
    (await limiter.acquire()).release(ignore=True)
    assert (limiter.in_flight, limiter.statistics().samples) == (0, 0)


@pytest.mark.virtual_time
async def test_acquire_measures_call_time_on_the_clock(clock: VirtualClock) -> None:
    """The time from acquire to release, on the injected clock, is the sample's latency."""
    limiter = AdaptiveLimiter("aimd", initial=10, window=10, timeout=0.2, clock=clock)
    for _ in range(10):
        async with limiter.acquire() as token:
            assert token.started == clock.now()
            assert token.in_flight == 1
            await asyncio.sleep(0.1)
    # Single calls are app-limited: no growth. Now calls slower than the timeout:
    for _ in range(10):
        async with limiter.acquire():
            await asyncio.sleep(0.25)
    assert limiter.limit == 9
    assert reasons(limiter) == ["aimd: latency 250.0 ms > timeout, x0.9"]


# -- listeners, statistics ---------------------------------------------------------------


async def test_listeners_hear_every_change() -> None:
    """Listeners get each new limit, from decisions and resizes alike, and only changes."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter("aimd", initial=10, window=10, clock=clock)
    heard: list[int] = []
    limiter.add_listener(heard.append)
    feed(limiter, clock, 20)
    limiter.limit = 5
    limiter.limit = 5
    feed(limiter, clock, 10, dropped=True)
    assert heard == [11, 12, 5, 4]
    limiter.remove_listener(heard.append)
    limiter.remove_listener(heard.append)  # not registered any more: no error
    feed(limiter, clock, 10)
    assert heard == [11, 12, 5, 4]
    assert limiter.limit == 5


@pytest.mark.allow_loop_errors
async def test_failing_listener_is_reported_and_removed(loop_errors: list[dict[str, Any]]) -> None:
    """A listener that raises is reported to the loop once and dropped; the others still run."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter("aimd", initial=10, window=10, clock=clock)
    calls: list[int] = []

    def broken(limit: int) -> None:
        calls.append(-limit)
        raise RuntimeError("listener broke")

    limiter.add_listener(broken)
    limiter.add_listener(calls.append)
    feed(limiter, clock, 20)  # record() never raises
    assert limiter.limit == 12
    assert calls == [-11, 11, 12]
    assert len(loop_errors) == 1
    assert loop_errors[0]["message"] == "AdaptiveLimiter listener failed and was removed"
    assert isinstance(loop_errors[0]["exception"], RuntimeError)
    assert loop_errors[0]["limiter"] is limiter
    loop_errors.clear()


def test_failing_listener_without_a_loop_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Outside a running loop, a failing listener is logged instead, and removed."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter("aimd", initial=10, window=10, clock=clock)

    def broken(limit: int) -> None:
        raise RuntimeError("listener broke")

    limiter.add_listener(broken)
    with caplog.at_level(logging.ERROR, logger="asyncperf"):
        feed(limiter, clock, 20)
    assert limiter.limit == 12
    assert [record.message for record in caplog.records] == [
        f"AdaptiveLimiter listener failed and was removed: {broken!r}"
    ]


def test_statistics_snapshot() -> None:
    """statistics() is a frozen snapshot of the limit, bounds, counters and recent history."""
    clock = VirtualClock(start=100.0)
    limiter = AdaptiveLimiter("aimd", initial=10, min_limit=2, max_limit=50, window=10, clock=clock)
    feed(limiter, clock, 10)
    feed(limiter, clock, 5, dropped=True)
    stats = limiter.statistics()
    change = LimitChange(time=stats.history[0].time, limit=11, reason="aimd: clean window, +1")
    assert change.time == pytest.approx(100.1)
    assert stats == LimiterStatistics(
        algorithm="aimd",
        limit=11,
        min_limit=2,
        max_limit=50,
        in_flight=0,
        samples=15,
        windows=1,
        drops=5,
        waiting=0,
        history=(change,),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.limit = 3  # type: ignore[misc]


def test_history_keeps_the_last_64_changes() -> None:
    """The history is bounded: the last 64 changes, oldest first."""
    limiter = AdaptiveLimiter(initial=10)
    for i in range(100):
        limiter.limit = 20 + i
    history = limiter.statistics().history
    assert len(history) == 64
    assert [change.limit for change in history] == list(range(56, 120))
    assert history[-1].reason == "set to 119"


def test_setting_the_limit_restarts_the_window() -> None:
    """A resize by hand discards the partial window: the next decision needs a full one."""
    clock = VirtualClock()
    limiter = AdaptiveLimiter("aimd", initial=10, window=10, clock=clock)
    feed(limiter, clock, 9)
    limiter.limit = 10  # unchanged, but the window starts over
    feed(limiter, clock, 9)
    assert limiter.statistics().windows == 0
    feed(limiter, clock, 1)
    assert limiter.limit == 11


# -- properties ----------------------------------------------------------------------------

operations = st.one_of(
    st.tuples(st.just("acquire")),
    st.tuples(st.just("try_acquire")),
    st.tuples(st.just("release"), st.integers(0, 20), st.booleans()),
    st.tuples(st.just("cancel"), st.integers(0, 20)),
    st.tuples(
        st.just("record"),
        st.sampled_from([0.0, 0.001, 0.01, 0.1]),
        st.integers(0, 8),
        st.booleans(),
    ),
    st.tuples(st.just("resize"), st.integers(1, 6)),
    st.tuples(st.just("yield"), st.integers(1, 3)),
    st.tuples(st.just("sleep"), st.sampled_from([0.001, 0.01])),
)


class CheckedLimiter(AdaptiveLimiter):
    """Checks the invariant where it must hold: at the moment each slot is granted."""

    def _grant(self) -> LimiterToken:
        assert self.in_flight < self.limit, f"granted a slot at {self.in_flight}/{self.limit}"
        return super()._grant()


async def interleaving(algorithm: LimiterAlgorithm, initial: int, ops: list[Any]) -> None:
    limiter = CheckedLimiter(algorithm, initial=initial, min_limit=1, max_limit=6, window=10)
    heard: list[int] = []
    limiter.add_listener(heard.append)
    held: list[LimiterToken] = []
    acquirers: list[asyncio.Task[None]] = []

    async def acquire() -> None:
        held.append(await limiter.acquire())

    for op in ops:
        before = limiter.in_flight
        kind = op[0]
        if kind == "acquire":
            acquirers.append(asyncio.create_task(acquire()))
        elif kind == "try_acquire":
            token = limiter.try_acquire()
            if token is not None:
                held.append(token)
        elif kind == "release" and held:
            held.pop(op[1] % len(held)).release(dropped=op[2])
        elif kind == "cancel":
            pending = [task for task in acquirers if not task.done()]
            if pending:
                pending[op[1] % len(pending)].cancel()
        elif kind == "record":
            limiter.record(op[1], in_flight=op[2], dropped=op[3])
        elif kind == "resize":
            limiter.limit = op[1]
        elif kind == "yield":
            for _ in range(op[1]):
                await asyncio.sleep(0)
        elif kind == "sleep":
            await asyncio.sleep(op[1])
        # Slots are only handed out below the limit in force: in-flight rises
        # only while it stays within the limit.
        if limiter.in_flight > before:
            assert limiter.in_flight <= limiter.limit, (op, before, limiter)
        assert 1 <= limiter.limit <= 6
        # Held tokens, plus slots handed to acquirers that have not resumed yet.
        assert limiter.in_flight >= len(held)
    for task in acquirers:
        task.cancel()
    await asyncio.gather(*acquirers, return_exceptions=True)
    for token in held:
        token.release()
    stats = limiter.statistics()
    assert (stats.in_flight, stats.waiting) == (0, 0)
    assert heard[-len(stats.history) :] == [change.limit for change in stats.history]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    algorithm=st.sampled_from(ALGORITHMS),
    initial=st.integers(1, 6),
    ops=st.lists(operations, max_size=60),
)
def test_random_interleavings_respect_the_limit_and_leak_nothing(
    algorithm: LimiterAlgorithm, initial: int, ops: list[Any]
) -> None:
    """Acquire, release, cancel, record and resize in any order: never over the limit, no leak."""
    loop = VirtualEventLoop()
    try:
        loop.run_until_complete(interleaving(algorithm, initial, ops))
    finally:
        loop.close()
