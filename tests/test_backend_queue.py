"""The leased-queue contract, run on the in-process queue and on Redis alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import pytest
import pytest_asyncio

import asyncperf as ap
from asyncperf.abc import Lease, LeasedQueue, LeasedQueueStatistics
from asyncperf.backends._local_queue import LocalLeasedQueue
from asyncperf.backends.redis import connect
from asyncperf.backends.redis._queue import RedisPriorityQueue

THREE = (ap.Level(priority=0), ap.Level(priority=1), ap.Level(priority=2))
Drops = list[tuple[Any, ap.DropReason]]


class Factory(Protocol):
    def __call__(
        self,
        levels: tuple[ap.Level, ...] = THREE,
        *,
        lease: float = 30.0,
        max_attempts: int = 5,
        on_drop: Callable[[Any, ap.DropReason], None] | None = None,
    ) -> LeasedQueue[Any]: ...


@pytest_asyncio.fixture(params=["local", "redis"])
async def make_queue(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """Builds queues of one backend; Redis ones poll every 50 ms (the safety net)."""
    if request.param == "local":

        def local(
            levels: tuple[ap.Level, ...] = THREE,
            *,
            lease: float = 30.0,
            max_attempts: int = 5,
            on_drop: Callable[[Any, ap.DropReason], None] | None = None,
        ) -> LeasedQueue[Any]:
            return LocalLeasedQueue(levels, lease=lease, max_attempts=max_attempts, on_drop=on_drop)

        yield local
        return
    client = connect(request.getfixturevalue("redis_url"))
    made = 0

    def remote(
        levels: tuple[ap.Level, ...] = THREE,
        *,
        lease: float = 30.0,
        max_attempts: int = 5,
        on_drop: Callable[[Any, ap.DropReason], None] | None = None,
    ) -> LeasedQueue[Any]:
        nonlocal made
        made += 1
        return RedisPriorityQueue(
            client,
            f"q{made}",
            levels=levels,
            lease=lease,
            max_attempts=max_attempts,
            on_drop=on_drop,
            poll_interval=0.05,
        )

    try:
        yield remote
    finally:
        await client.aclose()


def balanced(stats: LeasedQueueStatistics) -> bool:
    """Every enqueued job is in exactly one place."""
    return stats.enqueued == (
        stats.acked + stats.dead_letters + stats.dropped + stats.depth + stats.in_flight
    )


async def drain(queue: LeasedQueue[Any]) -> list[Any]:
    """Take and ack every ready job; their items in the order served."""
    items: list[Any] = []
    while True:
        try:
            job = await queue.take(timeout=0)
        except TimeoutError:
            return items
        items.append(job.item)
        assert await job.ack()


async def test_strict_priority_then_arrival_order(make_queue: Factory) -> None:
    queue = make_queue()
    puts = [(2, "low-a"), (1, "mid-a"), (0, "high-a"), (2, "low-b"), (0, "high-b"), (1, "mid-b")]
    for priority, item in puts:
        assert await queue.put(item, priority) is not None
    assert await drain(queue) == ["high-a", "high-b", "mid-a", "mid-b", "low-a", "low-b"]
    stats = await queue.statistics()
    assert [level.enqueued for level in stats.levels] == [2, 2, 2]
    assert stats.acked == stats.delivered == 6
    assert balanced(stats)


async def test_default_priority_is_the_middle_level(make_queue: Factory) -> None:
    queue = make_queue()
    await queue.put("x")
    job = await queue.take(timeout=1)
    assert job.priority == 1
    assert job.attempt == 1
    assert await job.ack()


async def test_reject_refuses_and_counts(make_queue: Factory) -> None:
    drops: Drops = []
    queue = make_queue(
        (ap.Level(priority=0, max_size=2, strategy=ap.DropStrategy.REJECT),),
        on_drop=lambda item, reason: drops.append((item, reason)),
    )
    await queue.put("a", 0)
    await queue.put("b", 0)
    with pytest.raises(ap.Rejected, match="level 0 is full") as info:
        await queue.put("c", 0)
    assert info.value.reason is ap.DropReason.REJECTED
    assert info.value.priority == 0
    assert drops == [("c", ap.DropReason.REJECTED)]
    stats = await queue.statistics()
    assert (stats.level(0).rejected, stats.enqueued, stats.depth) == (1, 2, 2)
    assert balanced(stats)
    assert await drain(queue) == ["a", "b"]


@pytest.mark.parametrize(
    ("strategy", "evicted", "kept"),
    [
        (ap.DropStrategy.DROP_OLDEST, "a", ["b", "c"]),
        (ap.DropStrategy.DROP_NEWEST, "b", ["a", "c"]),
    ],
)
async def test_drop_strategies_evict_report_and_count(
    make_queue: Factory, strategy: ap.DropStrategy, evicted: str, kept: list[str]
) -> None:
    drops: Drops = []
    queue = make_queue(
        (ap.Level(priority=0, max_size=2, strategy=strategy),),
        on_drop=lambda item, reason: drops.append((item, reason)),
    )
    for item in "abc":
        assert await queue.put(item, 0) is not None
    assert drops == [(evicted, ap.DropReason.EVICTED)]
    stats = await queue.statistics()
    assert (stats.dropped, stats.level(0).dropped, stats.enqueued, stats.depth) == (1, 1, 3, 2)
    assert balanced(stats)
    assert await drain(queue) == kept


async def test_block_waits_for_room_and_a_take_lets_it_in(make_queue: Factory) -> None:
    queue = make_queue((ap.Level(priority=0, max_size=1, strategy=ap.DropStrategy.BLOCK),))
    await queue.put("a", 0)
    blocked = asyncio.create_task(queue.put("b", 0))
    done, _ = await asyncio.wait({blocked}, timeout=0.2)
    assert not done, "a put into a full BLOCK level must wait"
    first = await queue.take(timeout=1)
    assert await asyncio.wait_for(blocked, timeout=5) is not None
    assert await first.ack()
    assert await drain(queue) == ["b"]
    assert balanced(await queue.statistics())


async def test_a_cancelled_blocked_put_queues_nothing(make_queue: Factory) -> None:
    queue = make_queue((ap.Level(priority=0, max_size=1, strategy=ap.DropStrategy.BLOCK),))
    await queue.put("a", 0)
    blocked = asyncio.create_task(queue.put("b", 0))
    await asyncio.wait({blocked}, timeout=0.1)
    blocked.cancel()
    await asyncio.wait({blocked})
    assert blocked.cancelled()
    assert await drain(queue) == ["a"]
    assert (await queue.statistics()).enqueued == 1


async def test_dedupe_key_refuses_a_live_duplicate_until_the_job_ends(make_queue: Factory) -> None:
    queue = make_queue()
    first = await queue.put("x", 1, dedupe_key="order-7")
    assert first is not None
    assert await queue.put("x again", 1, dedupe_key="order-7") is None
    assert await queue.put("other", 1, dedupe_key="order-8") is not None
    job = await queue.take(timeout=1)
    assert (job.id, job.item) == (first, "x")
    assert await queue.put("while running", 1, dedupe_key="order-7") is None
    assert await job.ack()
    assert await queue.put("after ack", 1, dedupe_key="order-7") is not None
    stats = await queue.statistics()
    assert stats.level(1).deduplicated == 2
    assert stats.enqueued == 3
    assert balanced(stats)
    assert await drain(queue) == ["other", "after ack"]


async def test_lease_acks_on_success_and_nacks_on_error(make_queue: Factory) -> None:
    queue = make_queue()
    await queue.put("ok")
    await queue.put("fails")
    async with queue.lease(timeout=1) as job:
        assert job.item == "ok"
    with pytest.raises(ValueError, match="boom"):
        async with queue.lease(timeout=1) as job:
            assert job.item == "fails"
            raise ValueError("boom")
    again = await queue.take(timeout=1)
    assert (again.item, again.attempt) == ("fails", 2)
    assert await again.ack()
    stats = await queue.statistics()
    assert (stats.acked, stats.retried, stats.delivered, stats.in_flight) == (2, 1, 3, 0)
    assert balanced(stats)


async def test_a_lease_is_settled_once(make_queue: Factory) -> None:
    queue = make_queue()
    await queue.put("x")
    job = await queue.take(timeout=1)
    assert await job.ack()
    with pytest.raises(RuntimeError, match="already settled"):
        await job.nack("late")


async def test_an_expired_lease_is_redelivered_and_the_late_ack_refused(
    make_queue: Factory,
) -> None:
    queue = make_queue(lease=0.3)
    job_id = await queue.put("slow")
    first = await queue.take(timeout=1)  # never renewed: its consumer "died"
    second = await queue.take(timeout=10)  # waits until the lease runs out
    assert (second.id, second.item, second.attempt) == (job_id, "slow", 2)
    assert first.attempt == 1
    assert not await first.ack()
    assert first.lost
    assert await second.ack()
    stats = await queue.statistics()
    assert (stats.expired, stats.stale_settles, stats.acked, stats.delivered) == (1, 1, 1, 2)
    assert balanced(stats)


async def test_a_renewed_lease_does_not_expire(make_queue: Factory) -> None:
    queue = make_queue(lease=0.3)
    await queue.put("long job")
    async with queue.lease(timeout=1) as job:
        # The job outlives its lease several times over; lease() keeps renewing it.
        with pytest.raises(TimeoutError):
            await queue.take(timeout=0.8)
    assert not job.lost
    stats = await queue.statistics()
    assert (stats.acked, stats.expired, stats.delivered) == (1, 0, 1)


async def test_max_attempts_sends_a_poison_job_to_the_dead_letters(make_queue: Factory) -> None:
    queue = make_queue(max_attempts=2)
    poison = await queue.put({"poison": True}, 0)
    await queue.put("fine", 1)
    for attempt in (1, 2):
        with pytest.raises(ValueError, match="poison"):
            async with queue.lease(timeout=1) as job:
                assert (job.id, job.attempt) == (poison, attempt)
                raise ValueError("poison")
    assert await drain(queue) == ["fine"]
    [letter] = await queue.dead_letters()
    assert (letter.id, letter.item, letter.priority) == (poison, {"poison": True}, 0)
    assert (letter.attempts, letter.reason) == (2, "ValueError: poison")
    stats = await queue.statistics()
    assert (stats.dead_letters, stats.retried, stats.acked) == (1, 1, 1)
    assert balanced(stats)


async def test_nack_without_retry_and_expiry_on_the_last_attempt_dead_letter(
    make_queue: Factory,
) -> None:
    queue = make_queue(lease=0.3, max_attempts=1)
    await queue.put("refused")
    await queue.put("abandoned")
    job = await queue.take(timeout=1)
    assert await job.nack("bad input", retry=False)
    abandoned = await queue.take(timeout=1)  # never settled: expires on its only attempt
    with pytest.raises(TimeoutError):
        await queue.take(timeout=1.0)  # the expiry dead-letters it instead of redelivering
    letters = await queue.dead_letters()
    assert [(d.item, d.reason) for d in letters] == [
        ("refused", "bad input"),
        ("abandoned", "lease expired on attempt 1"),
    ]
    assert not await abandoned.ack()
    stats = await queue.statistics()
    assert (stats.dead_letters, stats.expired, stats.depth, stats.in_flight) == (2, 1, 0, 0)
    assert balanced(stats)


@pytest.mark.parametrize("yields", [0, 1, 2, 3, 5, 8])
async def test_cancelling_a_waiting_consumer_loses_nothing(
    make_queue: Factory, yields: int
) -> None:
    queue = make_queue()
    taker = asyncio.create_task(queue.take())
    for _ in range(yields):
        await asyncio.sleep(0)  # cancel at a different point of the take each time
    await queue.put("precious")
    taker.cancel()
    await asyncio.wait({taker})
    if not taker.cancelled():  # the take won the race: it holds the job, as it should
        job = taker.result()
    else:
        job = await queue.take(timeout=5)
    assert (job.item, job.attempt) == ("precious", 1)  # a given-back lease costs no attempt
    assert await job.ack()
    stats = await queue.statistics()
    assert (stats.acked, stats.depth, stats.in_flight) == (1, 0, 0)
    assert balanced(stats)


async def test_cancelling_a_held_lease_gives_the_job_back(make_queue: Factory) -> None:
    queue = make_queue()
    await queue.put("interrupted")
    inside = asyncio.Event()

    async def consumer() -> None:
        async with queue.lease(timeout=1):
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(consumer())
    await inside.wait()
    task.cancel()
    await asyncio.wait({task})
    job = await queue.take(timeout=1)
    assert (job.item, job.attempt) == ("interrupted", 1)
    assert await job.ack()
    stats = await queue.statistics()
    assert (stats.released, stats.acked, stats.delivered) == (1, 1, 2)


async def test_consume_holds_at_most_workers_jobs(make_queue: Factory) -> None:
    queue = make_queue()
    for n in range(20):
        await queue.put(n, n % 3)
    stop = asyncio.Event()
    running = peak = succeeded = 0

    async def handler(job: Lease[Any]) -> None:
        nonlocal running, peak, succeeded
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        running -= 1
        if job.item == 13 and job.attempt == 1:
            raise RuntimeError("thirteen")  # nacked: the error stays inside consume
        succeeded += 1
        if succeeded == 20:
            stop.set()

    acked = await asyncio.wait_for(queue.consume(handler, workers=3, stop=stop), timeout=20)
    stats = await queue.statistics()
    assert 1 <= peak <= 3
    assert acked == stats.acked == 20
    assert (stats.retried, stats.delivered, stats.depth, stats.in_flight) == (1, 21, 0, 0)
    assert balanced(stats)


async def test_statistics_add_up_through_everything(make_queue: Factory) -> None:
    queue = make_queue(
        (
            ap.Level(priority=0, max_size=3, strategy=ap.DropStrategy.DROP_OLDEST),
            ap.Level(priority=1, max_size=2, strategy=ap.DropStrategy.REJECT),
        ),
        max_attempts=2,
    )
    for n in range(5):
        await queue.put(n, 0)
    for n in range(3):
        with pytest.raises(ap.Rejected) if n == 2 else _no_error():
            await queue.put(f"r{n}", 1, dedupe_key=f"k{n % 2}" if n < 2 else None)
    assert await queue.put("dup", 1, dedupe_key="k0") is None
    held = await queue.take(timeout=1)
    failing = await queue.take(timeout=1)
    assert await failing.nack("first")
    stats = await queue.statistics()
    assert (stats.enqueued, stats.dropped, stats.in_flight) == (7, 2, 1)
    assert (stats.level(1).rejected, stats.level(1).deduplicated) == (1, 1)
    assert balanced(stats)
    assert await held.ack()
    await drain(queue)
    stats = await queue.statistics()
    assert (stats.depth, stats.in_flight, stats.acked, stats.dead_letters) == (0, 0, 5, 0)
    assert balanced(stats)


class _no_error:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


async def test_bad_arguments_name_the_parameter(make_queue: Factory) -> None:
    with pytest.raises(ValueError, match="levels must not be empty"):
        make_queue(())
    with pytest.raises(ValueError, match="lease"):
        make_queue(lease=0)
    with pytest.raises(ValueError, match="max_attempts"):
        make_queue(max_attempts=0)
    queue = make_queue()
    with pytest.raises(ValueError, match="priority must be one of"):
        await queue.put("x", 7)
    with pytest.raises(ValueError, match="timeout"):
        await queue.take(timeout=-1)
    with pytest.raises(ValueError, match="workers"):
        await queue.consume(_never, workers=0)
    with pytest.raises(ValueError, match="limit"):
        await queue.dead_letters(0)


async def _never(job: Lease[Any]) -> None:
    raise AssertionError("not called")


async def test_both_backends_satisfy_the_protocols(make_queue: Factory) -> None:
    queue = make_queue()
    assert isinstance(queue, LeasedQueue)
    await queue.put("x")
    job = await queue.take(timeout=1)
    assert isinstance(job, Lease)
    assert await job.release()


async def test_an_unreachable_redis_is_backend_unavailable_not_a_local_fallback() -> None:
    client = connect("redis://127.0.0.1:1/0", timeout=0.5)
    queue: RedisPriorityQueue[str] = RedisPriorityQueue(client, "gone")
    try:
        with pytest.raises(ap.BackendUnavailable, match="put a job"):
            await queue.put("x")
        with pytest.raises(ap.BackendUnavailable, match="take a job"):
            await queue.take(timeout=0)
    finally:
        await client.aclose()


def test_redis_queue_checks_its_arguments() -> None:
    client = connect("redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match="poll_interval"):
        RedisPriorityQueue(client, "q", poll_interval=0)
    with pytest.raises(ValueError, match="namespace"):
        RedisPriorityQueue(client, "a{b}")
    with pytest.raises(ValueError, match="default_priority"):
        RedisPriorityQueue(client, "q", default_priority=9)
