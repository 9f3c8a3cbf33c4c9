"""Pooling benchmarks: worker pooling, session pooling, memory pooling.

Each test times one workload, asyncperf against the stock asyncio pattern it
replaces, on every installed loop, and checks the workload's result.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import pytest

import asyncperf as ap
from bench.conftest import Bench

# -- worker pooling -------------------------------------------------------------------

JOBS = 10_000
QUICK_JOBS = 500
WORKERS = 64


async def _yield_once(i: int) -> int:
    """A job that switches tasks once, as any real await does."""
    await asyncio.sleep(0)
    return i


async def pool_jobs(jobs: int) -> int:
    """Submit ``jobs`` jobs to a 64-worker pool, then await every result."""
    async with ap.WorkerPool(max_workers=WORKERS) as pool:
        handles = [await pool.submit(_yield_once, i) for i in range(jobs)]
        total = 0
        for handle in handles:
            total += await handle
        stats = pool.statistics()
    assert stats.submitted == stats.completed == jobs
    assert stats.failed == stats.cancelled == stats.dropped == stats.rejected == 0
    return total


async def taskgroup_jobs(jobs: int) -> int:
    """The stock bounded spawner: a Semaphore taken before each ``create_task``."""
    semaphore = asyncio.Semaphore(WORKERS)
    results = [0] * jobs

    async def one(i: int) -> None:
        try:
            results[i] = await _yield_once(i)
        finally:
            semaphore.release()

    async with asyncio.TaskGroup() as group:
        for i in range(jobs):
            await semaphore.acquire()
            group.create_task(one(i))
    return sum(results)


WORKER_POOLING: dict[str, Callable[[int], Coroutine[Any, Any, int]]] = {
    "WorkerPool": pool_jobs,
    "TaskGroup+Semaphore": taskgroup_jobs,
}


@pytest.mark.parametrize("contender", list(WORKER_POOLING))
def test_worker_pooling(bench: Bench, contender: str) -> None:
    """10,000 one-yield jobs, at most 64 at once."""
    jobs = bench.size(JOBS, QUICK_JOBS)
    run = WORKER_POOLING[contender]
    totals = bench.run("worker pooling", lambda: run(jobs), rounds=7)
    assert totals == [jobs * (jobs - 1) // 2] * len(totals)
    bench.extra_info["jobs"] = jobs


# -- session pooling ------------------------------------------------------------------

REQUESTS = 2_000
QUICK_REQUESTS = 200
#: PBKDF2 rounds of the simulated handshake: about 40 µs of CPU, the order of a
#: TLS resumption; a full handshake or a database login costs far more.
HANDSHAKE_ROUNDS = 200


@dataclass(slots=True)
class Client:
    """A stand-in for an HTTP or database client whose connection costs a handshake."""

    requests: int = 0
    closed: bool = False

    @classmethod
    async def connect(cls) -> Client:
        await asyncio.sleep(0)  # the network round trip of the handshake
        hashlib.pbkdf2_hmac("sha256", b"secret", b"salt", HANDSHAKE_ROUNDS)  # its crypto
        return cls()

    async def request(self, i: int) -> int:
        assert not self.closed, "request on a closed client"
        await asyncio.sleep(0)  # the call
        self.requests += 1
        return i

    async def aclose(self) -> None:
        self.closed = True


@dataclass(frozen=True, slots=True)
class SessionOutcome:
    total: int
    clients: list[Client]


#: The client of the worker running the job. A pool's jobs run inline in their
#: worker's task and context, so a value set by one job is seen by the next job
#: on the same worker: a worker-local client, connected on first use.
_worker_client: ContextVar[Client | None] = ContextVar("_worker_client", default=None)


async def pooled_sessions(requests: int) -> SessionOutcome:
    """Requests through a 64-worker pool; each worker connects once and reuses its client."""
    clients: list[Client] = []

    async def request(i: int) -> int:
        client = _worker_client.get()
        if client is None:
            client = await Client.connect()
            clients.append(client)
            _worker_client.set(client)
        return await client.request(i)

    async with ap.WorkerPool(max_workers=WORKERS) as pool:
        handles = [await pool.submit(request, i) for i in range(requests)]
        total = 0
        for handle in handles:
            total += await handle
    # The workers have stopped: nothing uses the clients any more.
    for client in clients:
        await client.aclose()
    return SessionOutcome(total, clients)


async def per_request_sessions(requests: int) -> SessionOutcome:
    """The stock pattern: gather + Semaphore, a client connected and closed per request."""
    semaphore = asyncio.Semaphore(WORKERS)
    clients: list[Client] = []

    async def request(i: int) -> int:
        async with semaphore:
            client = await Client.connect()
            clients.append(client)
            try:
                return await client.request(i)
            finally:
                await client.aclose()

    results = await asyncio.gather(*(request(i) for i in range(requests)))
    return SessionOutcome(sum(results), clients)


SESSION_POOLING: dict[str, Callable[[int], Coroutine[Any, Any, SessionOutcome]]] = {
    "WorkerPool, client per worker": pooled_sessions,
    "gather+Semaphore, client per request": per_request_sessions,
}


@pytest.mark.parametrize("contender", list(SESSION_POOLING))
def test_session_pooling(bench: Bench, contender: str) -> None:
    """2,000 requests, each needing a client whose connection costs a handshake."""
    requests = bench.size(REQUESTS, QUICK_REQUESTS)
    run = SESSION_POOLING[contender]
    outcomes = bench.run("session pooling", lambda: run(requests), rounds=5)
    for outcome in outcomes:
        assert outcome.total == requests * (requests - 1) // 2
        assert sum(client.requests for client in outcome.clients) == requests
        assert all(client.closed for client in outcome.clients)
        if contender.startswith("WorkerPool"):
            assert 1 <= len(outcome.clients) <= WORKERS
        else:
            assert len(outcome.clients) == requests
    bench.extra_info["requests"] = requests
    bench.extra_info["clients_connected"] = len(outcomes[-1].clients)


# -- memory pooling -------------------------------------------------------------------
#
# asyncperf has no BufferPool yet (issue "Memory pools" adds it). Until then this
# benchmark measures the stock choices a BufferPool replaces: a fresh 64 KiB
# bytearray per message, or a hand-written free list. Neither is asyncperf's.

MESSAGES = 20_000
QUICK_MESSAGES = 500
BUFFER_SIZE = 64 * 1024
HANDLERS = 16
PAYLOAD = bytes(range(256)) * 16  # 4 KiB written into each buffer
SEQUENCE_AT = len(PAYLOAD)


class FreshBuffers:
    """Stock baseline: ``bytearray(64 KiB)`` per message, left to the allocator."""

    def __init__(self) -> None:
        self.allocated = 0

    def acquire(self) -> bytearray:
        self.allocated += 1
        return bytearray(BUFFER_SIZE)

    def release(self, buffer: bytearray) -> None:
        """Nothing to do: the buffer is garbage once its message is sent."""


class FreeListBuffers:
    """Stock baseline: a hand-written free list of 64 KiB buffers, reused across messages."""

    def __init__(self) -> None:
        self.allocated = 0
        self._free: list[bytearray] = []

    def acquire(self) -> bytearray:
        if self._free:
            return self._free.pop()
        self.allocated += 1
        return bytearray(BUFFER_SIZE)

    def release(self, buffer: bytearray) -> None:
        self._free.append(buffer)


Buffers = FreshBuffers | FreeListBuffers


@dataclass(frozen=True, slots=True)
class BufferOutcome:
    sent: int
    corrupted: int
    allocated: int


async def send_messages(messages: int, buffers: Buffers) -> BufferOutcome:
    """16 handlers each fill a buffer per message, "send" it (a yield), and check it is intact.

    The check after the yield is what a pool must not break: no other handler
    may be given a buffer while its message is still in flight.
    """
    per_handler = messages // HANDLERS
    sent = corrupted = 0

    async def handler(first: int) -> None:
        nonlocal sent, corrupted
        for sequence in range(first, first + per_handler):
            buffer = buffers.acquire()
            header = sequence.to_bytes(4, "little")
            with memoryview(buffer) as view:
                view[:SEQUENCE_AT] = PAYLOAD
                view[SEQUENCE_AT : SEQUENCE_AT + 4] = header
                await asyncio.sleep(0)  # the send: other handlers run meanwhile
                if view[SEQUENCE_AT : SEQUENCE_AT + 4] != header:
                    corrupted += 1
            buffers.release(buffer)
            sent += 1

    async with asyncio.TaskGroup() as group:
        for index in range(HANDLERS):
            group.create_task(handler(index * per_handler))
    return BufferOutcome(sent, corrupted, buffers.allocated)


MEMORY_POOLING: dict[str, Callable[[], Buffers]] = {
    "fresh bytearray per message (stock)": FreshBuffers,
    "free list (stock)": FreeListBuffers,
    # BufferPool: issue "Memory pools"
}


@pytest.mark.parametrize("contender", list(MEMORY_POOLING))
def test_memory_pooling(bench: Bench, contender: str) -> None:
    """20,000 messages of 4 KiB in 64 KiB buffers, 16 handlers at once."""
    messages = bench.size(MESSAGES, QUICK_MESSAGES)
    make_buffers = MEMORY_POOLING[contender]
    outcomes = bench.run(
        "memory pooling", lambda: send_messages(messages, make_buffers()), rounds=5
    )
    sent = messages // HANDLERS * HANDLERS
    for outcome in outcomes:
        assert outcome.sent == sent
        assert outcome.corrupted == 0
        if make_buffers is FreeListBuffers:
            assert outcome.allocated <= HANDLERS  # one buffer per message in flight at most
        else:
            assert outcome.allocated == sent
    bench.extra_info["messages"] = sent
    bench.extra_info["buffers_allocated"] = outcomes[-1].allocated
