"""Concurrency: concurrent sessions, lock contention, channel throughput."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest

import asyncperf as ap
from bench.conftest import Bench

# -- concurrent sessions --------------------------------------------------------------

SESSIONS = 1_000
QUICK_SESSIONS = 100
MESSAGES_PER_SESSION = 3
CONCURRENCY = 64


@dataclass(frozen=True, slots=True)
class SessionsOutcome:
    replies: list[list[int]]
    calls: int
    succeeded: int


async def _reply(session: int, message: int) -> int:
    """The body of a chat turn: one upstream call (a yield), and an answer naming the turn."""
    await asyncio.sleep(0)
    return session * MESSAGES_PER_SESSION + message


async def _converse(session: int, send: Callable[[int, int], Awaitable[int]]) -> list[int]:
    """One chat session: its messages one after the other, each waiting for its reply."""
    return [await send(session, message) for message in range(MESSAGES_PER_SESSION)]


async def runtime_sessions(sessions: int) -> SessionsOutcome:
    """Every turn through a ``@runtime.handler`` of a Runtime with a 64-worker pool.

    Autoscaling is off so that the pool keeps the semaphore's bound of 64.
    """
    runtime = ap.Runtime(max_workers=CONCURRENCY, max_pending=sessions, autoscale=False)

    @runtime.handler
    async def chat(session: int, message: int) -> int:
        return await _reply(session, message)

    async with runtime:
        replies = await asyncio.gather(*(_converse(s, chat) for s in range(sessions)))
    stats = chat.statistics()
    assert stats.calls == stats.succeeded + stats.failed + stats.timed_out + stats.rejected + (
        stats.dropped + stats.cancelled + stats.in_flight
    )
    return SessionsOutcome(replies, stats.calls, stats.succeeded)


async def semaphore_sessions(sessions: int) -> SessionsOutcome:
    """The stock pattern: every turn under one ``asyncio.Semaphore(64)``, sessions gathered."""
    semaphore = asyncio.Semaphore(CONCURRENCY)
    calls = 0

    async def chat(session: int, message: int) -> int:
        nonlocal calls
        calls += 1
        async with semaphore:
            return await _reply(session, message)

    replies = await asyncio.gather(*(_converse(s, chat) for s in range(sessions)))
    return SessionsOutcome(replies, calls, calls)


CONCURRENT_SESSIONS: dict[str, Callable[[int], Coroutine[Any, Any, SessionsOutcome]]] = {
    "Runtime handler": runtime_sessions,
    "gather+Semaphore (stock)": semaphore_sessions,
}


@pytest.mark.parametrize("contender", list(CONCURRENT_SESSIONS))
def test_concurrent_sessions(bench: Bench, contender: str) -> None:
    """1,000 chat sessions at once, 3 turns each, at most 64 turns running."""
    sessions = bench.size(SESSIONS, QUICK_SESSIONS)
    run = CONCURRENT_SESSIONS[contender]
    outcomes = bench.run("concurrent sessions", lambda: run(sessions), rounds=7)
    turns = sessions * MESSAGES_PER_SESSION
    expected = [
        [s * MESSAGES_PER_SESSION + m for m in range(MESSAGES_PER_SESSION)] for s in range(sessions)
    ]
    for outcome in outcomes:
        assert outcome.replies == expected
        assert outcome.calls == outcome.succeeded == turns
    bench.extra_info.update(sessions=sessions, turns=turns)


# -- lock contention ------------------------------------------------------------------

WAITERS = 1_000
QUICK_WAITERS = 100


class CriticalSection:
    """Shared state guarded by mutual exclusion; it records whether that held."""

    def __init__(self) -> None:
        self.entered = 0
        self.inside = 0
        self.most_inside = 0

    async def enter(self) -> None:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        self.entered += 1
        await asyncio.sleep(0)  # held across an await, as a real critical section is
        self.inside -= 1


async def lock_waiters(waiters: int) -> CriticalSection:
    """The stock pattern: a task per waiter, all contending for one ``asyncio.Lock``."""
    section = CriticalSection()
    lock = asyncio.Lock()

    async def waiter() -> None:
        async with lock:
            await section.enter()

    async with asyncio.TaskGroup() as group:
        for _ in range(waiters):
            group.create_task(waiter())
    return section


async def single_worker(waiters: int) -> CriticalSection:
    """The critical section as jobs of a one-worker pool: serialised without a lock."""
    section = CriticalSection()
    async with ap.WorkerPool(max_workers=1, max_pending=waiters) as pool:
        jobs = [pool.submit_nowait(section.enter) for _ in range(waiters)]
        for job in jobs:
            await job
    return section


LOCK_CONTENTION: dict[str, Callable[[int], Coroutine[Any, Any, CriticalSection]]] = {
    "WorkerPool(max_workers=1)": single_worker,
    "asyncio.Lock (stock)": lock_waiters,
}


@pytest.mark.parametrize("contender", list(LOCK_CONTENTION))
def test_lock_contention(bench: Bench, contender: str) -> None:
    """1,000 waiters for one critical section that yields once while held."""
    waiters = bench.size(WAITERS, QUICK_WAITERS)
    run = LOCK_CONTENTION[contender]
    sections = bench.run("lock contention", lambda: run(waiters), rounds=20)
    for section in sections:
        assert section.entered == waiters
        assert section.most_inside == 1
        assert section.inside == 0
    bench.extra_info["waiters"] = waiters


# -- channel throughput ---------------------------------------------------------------

CHANNEL_ITEMS = 50_000
QUICK_CHANNEL_ITEMS = 1_000
CHANNEL_BOUND = 100


class Channel:
    """What the benchmark needs of a bounded channel: an awaited put and get."""

    def __init__(self, kind: str) -> None:
        if kind == "asyncio.Queue":
            stock: asyncio.Queue[int] = asyncio.Queue(CHANNEL_BOUND)
            self.put: Callable[[int], Awaitable[None]] = stock.put
            self.get: Callable[[], Awaitable[int]] = stock.get
            self.depth: Callable[[], int] = stock.qsize
        else:
            queue: ap.PriorityQueue[int] = ap.PriorityQueue(
                [ap.Level(priority=0, max_size=CHANNEL_BOUND)]  # BLOCK: put waits for room
            )
            self.put = queue.put
            self.get = queue.get
            self.depth = queue.qsize


@dataclass(frozen=True, slots=True)
class ChannelOutcome:
    received: int
    in_order: bool
    peak_depth: int


async def channel_flow(items: int, kind: str) -> ChannelOutcome:
    """One producer awaiting ``put`` and one consumer awaiting ``get``, through a bound of 100."""
    channel = Channel(kind)
    peak = 0

    async def produce() -> None:
        nonlocal peak
        put, depth = channel.put, channel.depth
        for i in range(items):
            await put(i)
            peak = max(peak, depth())

    async def consume() -> ChannelOutcome:
        get = channel.get
        in_order = True
        for expected in range(items):
            if await get() != expected:
                in_order = False
        return ChannelOutcome(items, in_order, peak)

    async with asyncio.TaskGroup() as group:
        group.create_task(produce())
        consumer = group.create_task(consume())
    outcome = consumer.result()
    return ChannelOutcome(outcome.received, outcome.in_order, peak)


@pytest.mark.parametrize("kind", ["PriorityQueue (one level)", "asyncio.Queue"])
def test_channel_throughput(bench: Bench, kind: str) -> None:
    """50,000 items from a producer to a consumer through a bounded queue of 100."""
    items = bench.size(CHANNEL_ITEMS, QUICK_CHANNEL_ITEMS)
    outcomes = bench.run("channel throughput", lambda: channel_flow(items, kind), rounds=5)
    for outcome in outcomes:
        assert outcome.received == items
        assert outcome.in_order
        assert 1 <= outcome.peak_depth <= CHANNEL_BOUND
    bench.extra_info.update(items=items, peak_depth=outcomes[-1].peak_depth)
