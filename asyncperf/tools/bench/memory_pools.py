"""Suite ``pools``: where ``BufferPool`` and ``ObjectPool`` pay, and where they do not.

**Buffers.** For each size class of the default pool (1, 4, 16, 64 and 256 KiB)
and for 1 MiB (above the largest class: the pool hands out a fresh, unpooled
bytearray, so "pooled" there is the pool's oversize path), two contenders do
the same I/O-like work on a buffer of ``n`` bytes:

- ``fresh``: ``bytearray(n)``, filled, parsed, dropped;
- ``pooled``: ``with pool.acquire(n) as view:``, filled, parsed, released.

*Fill* is ``source.readinto(buffer)`` from an in-memory ``io.BytesIO`` (one
copy straight into the buffer, as a socket's ``recv_into`` would); *parse*
unpacks a header at the start and a trailer at the end of the buffer with
``struct.unpack_from`` (no copy). Two shapes:

- ``one at a time``: the loop holds one buffer at a time, so the allocator
  hands the block just freed straight back to the next ``bytearray(n)``;
- ``64 in flight``: 64 tasks each fill a buffer, ``await asyncio.sleep(0)``
  (the I/O wait: every other task runs), parse and drop it, so 64 buffers are
  alive at once, as in a server. Each task frees its buffer just before it
  allocates the next, so the allocator can hand the same block back;
- ``bursts of 64``: 64 buffers are taken and filled together, one I/O wait,
  then all 64 are parsed and dropped together, and the next burst starts (a
  burst of requests that arrive and complete together). Freeing a whole burst
  at once lets the C allocator give the memory back to the OS (glibc trims the
  top of its heap beyond 128 KiB), so the next burst's fresh buffers are
  page-faulted again. The pooled contender uses ``acquire()`` / ``release()``
  here rather than ``with``. No bar is checked on this shape.

A third workload, ``mixed``, draws sizes from a seeded log-uniform
distribution over 1-256 KiB (the same sizes for both contenders) and runs it
in both shapes. The figure is nanoseconds per buffer (acquire/allocate, fill,
parse, drop). The buffer pool is the default one with ``max_per_class=64``:
sized for the 64 in flight (with the default 32, half the releases would be
dropped).

**Objects.** Plain construction against ``ObjectPool.acquire()`` /
``release()`` for a cheap object (a small slotted dataclass, fields set by the
user, no ``reset``) and for one with costly set-up (a per-session state: a
64 KiB scratch ``bytearray`` and a 100-entry lookup table, ``reset`` clears the
per-use headers), one at a time and 64 in flight.

**Memory.** Per case, the peak of memory allocated through Python's
allocators during the run, measured with :mod:`tracemalloc` on the warm-up run
only (tracing slows every allocation several times, so the timed repetitions
run without it). RSS is not used: in one process it mostly shows what the C
allocator kept from earlier cases (glibc keeps freed heap memory and moves its
mmap threshold up after the first large free), so a per-case RSS figure would
depend on the order of the cases. tracemalloc counts exactly the bytes the
case's buffers and objects hold at the peak, but not the allocator's own
retention nor the page faults (those show in the time).

**GC pressure.** The session simulator's per-message path (see
:mod:`asyncperf.tools.simulate`), built from its public pieces because it has
no per-message function of its own to reuse: the seeded workload of
:func:`~asyncperf.tools.simulate.make_workload` (sessions, Zipf prompts,
lognormal context sizes), each message serialised to a JSON request from the
session's last turns, the prompt and the context (with the token count the
simulator takes), sent to the simulator's :class:`~asyncperf.tools.simulate.Upstream`
(no latency, no errors, no rate limit: the CPU path, not the waiting), the
response received into a buffer, parsed, its tokens counted and the turn added
to the session's history; 64 messages in flight. ``unpooled`` builds every
dict, list and buffer afresh (as the simulator does); ``pooled`` takes the
per-message state (the request dict, its message dicts and list) from an
``ObjectPool`` and the receive buffer from a ``BufferPool``. The collector is
watched with :class:`~asyncperf.tools.bench.gc_pressure.GcMonitor`
(``gc.callbacks``), at its default thresholds; collections and pause time are
reported per 100,000 messages.

Bars (``h.bar``): at 64 KiB and 256 KiB, pooled ≥ 1.5x faster than fresh,
checked separately for one at a time and 64 in flight; in the message path,
GC pauses (collections of every generation per 100,000 messages) with pooling
≤ without. Equal counts pass that bar: the table says whether pooling made
them fewer or only not more.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import random
import statistics
import struct
import tracemalloc
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from time import perf_counter
from typing import Any, Final

from rich.table import Table
from rich.text import Text

import asyncperf as ap
from asyncperf.tools.bench._harness import (
    Case,
    Config,
    Harness,
    LoopChoice,
    Plan,
    Result,
    Suite,
    fmt,
    keep_timed_runs,
)
from asyncperf.tools.bench.gc_pressure import GcMonitor
from asyncperf.tools.simulate import SimulationConfig, Upstream, make_workload
from asyncperf.tools.simulate._strategies import build_request, count_tokens
from asyncperf.tools.simulate._workload import context_text, prompt_text

__all__ = [
    "BAR_SIZES",
    "IN_FLIGHT",
    "SIZES",
    "SUITE",
    "MessagePath",
    "MessageRun",
    "MessageState",
    "run_message_path",
]

NAME: Final = "pools"
KIB: Final = 1024
#: The default pool's size classes, then 1 MiB: above the largest class (unpooled).
SIZES: Final = (1 * KIB, 4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, 1024 * KIB)
#: Buffers (or objects, or messages) alive at once in the "in flight" shape.
IN_FLIGHT: Final = 64
#: Sizes whose speedup is checked against BAR_SPEEDUP.
BAR_SIZES: Final = (64 * KIB, 256 * KIB)
BAR_SPEEDUP: Final = 1.5
#: Buffers per run at full size: about 10-50 ms of work per run on a laptop-class CPU.
FULL_OPS: Final = {
    1 * KIB: 20_000,
    4 * KIB: 20_000,
    16 * KIB: 10_000,
    64 * KIB: 4_000,
    256 * KIB: 1_000,
    1024 * KIB: 256,
}
MIXED_OPS: Final = 4_000
OBJECT_OPS: Final = 20_000
#: Messages per run of the message path at full size (figures are scaled per 100,000).
MESSAGES: Final = 10_000
PER_MESSAGES: Final = 100_000
#: --quick divides the counts by this (a smoke test).
QUICK_DIVISOR: Final = 40
SEED: Final = 7

#: The shapes of the buffer workloads (objects use the first two).
SHAPES: Final = ("one at a time", f"{IN_FLIGHT} in flight", f"bursts of {IN_FLIGHT}")
ONE, FLIGHT, BURST = SHAPES
OBJECT_SHAPES: Final = (ONE, FLIGHT)

FRESH, POOLED = "fresh", "pooled"
NEW = "new"
UNPOOLED = "unpooled"
LABELS: Final = {
    FRESH: "fresh bytearray",
    NEW: "plain construction",
    UNPOOLED: "unpooled (as simulated)",
    POOLED: "pooled",
}
MESSAGE_CASE: Final = f"message path · {IN_FLIGHT} in flight"

RunFactory = Callable[[], Coroutine[Any, Any, float]]
Timed = Callable[[], Coroutine[Any, Any, float]]


def size_label(size: int) -> str:
    """``64 KiB``, ``1 MiB``."""
    return f"{size // (1024 * KIB)} MiB" if size >= 1024 * KIB else f"{size // KIB} KiB"


def buffer_case(shape: str, size: int) -> str:
    """The case name of one shape and size: ``64 in flight · 64 KiB``."""
    return f"{shape} · {size_label(size)}"


def mixed_case(shape: str) -> str:
    return f"mixed 1-256 KiB · {shape}"


def object_case(kind: str, shape: str) -> str:
    return f"{kind} object · {shape}"


def _ops(full: int, quick: bool) -> int:
    """Operations per run; at least IN_FLIGHT * 2 so every in-flight task loops twice."""
    return max(IN_FLIGHT * 2, full // QUICK_DIVISOR) if quick else full


# -- buffers ---------------------------------------------------------------------------

_HEADER = struct.Struct(">IH")
_TRAILER = struct.Struct(">I")


def _source(size: int) -> io.BytesIO:
    """Seeded bytes to read from, with a header (the size) and a trailer."""
    data = bytearray(random.Random(SEED).randbytes(size))
    _HEADER.pack_into(data, 0, size, 1)
    return io.BytesIO(bytes(data))


def _buffer_pool() -> ap.BufferPool:
    # 64 free buffers per class: one for each buffer in flight (see the module's docstring).
    return ap.BufferPool(max_per_class=IN_FLIGHT, name="bench")


def _split(total: int) -> list[int]:
    """``total`` operations shared among IN_FLIGHT tasks (their counts sum to ``total``)."""
    share, extra = divmod(total, IN_FLIGHT)
    return [share + (1 if task < extra else 0) for task in range(IN_FLIGHT)]


def buffer_run(contender: str, shape: str, sizes: list[int]) -> Timed:
    """A run over ``sizes`` (one buffer per entry): seconds from the first to the last.

    Raises:
        AssertionError: a parse read something else than the source holds (a bug), or
            the pool still has buffers out at the end.
    """
    pooled = contender == POOLED
    unpack_header = _HEADER.unpack_from
    unpack_trailer = _TRAILER.unpack_from

    async def run() -> float:
        source = _source(max(sizes))
        seek = source.seek
        readinto = source.readinto
        pool = _buffer_pool()
        acquire = pool.acquire

        def one_fresh(n: int) -> int:
            buffer = bytearray(n)
            seek(0)
            readinto(buffer)
            length, _kind = unpack_header(buffer)
            (_tail,) = unpack_trailer(buffer, n - 4)
            return int(length)

        def one_pooled(n: int) -> int:
            with acquire(n) as view:
                seek(0)
                readinto(view)
                length, _kind = unpack_header(view)
                (_tail,) = unpack_trailer(view, n - 4)
            return int(length)

        async def task_fresh(mine: list[int]) -> int:
            last = 0
            for n in mine:
                buffer = bytearray(n)
                seek(0)
                readinto(buffer)
                await asyncio.sleep(0)  # the I/O wait: the other 63 tasks run
                last, _kind = unpack_header(buffer)
                (_tail,) = unpack_trailer(buffer, n - 4)
                del buffer
            return last

        async def task_pooled(mine: list[int]) -> int:
            last = 0
            for n in mine:
                with acquire(n) as view:
                    seek(0)
                    readinto(view)
                    await asyncio.sleep(0)
                    last, _kind = unpack_header(view)
                    (_tail,) = unpack_trailer(view, n - 4)
            return last

        async def bursts_fresh() -> list[int]:
            lengths: list[int] = []
            for begin in range(0, len(sizes), IN_FLIGHT):
                held = [bytearray(n) for n in sizes[begin : begin + IN_FLIGHT]]
                for buffer in held:
                    seek(0)
                    readinto(buffer)
                await asyncio.sleep(0)  # the burst's I/O wait
                for buffer in held:
                    length, _kind = unpack_header(buffer)
                    (_tail,) = unpack_trailer(buffer, len(buffer) - 4)
                lengths.append(length)
                held.clear()  # the whole burst is dropped together
            return lengths

        async def bursts_pooled() -> list[int]:
            lengths: list[int] = []
            for begin in range(0, len(sizes), IN_FLIGHT):
                handles = [acquire(n) for n in sizes[begin : begin + IN_FLIGHT]]
                for handle in handles:
                    seek(0)
                    readinto(handle.view)
                await asyncio.sleep(0)
                for handle in handles:
                    view = handle.view
                    length, _kind = unpack_header(view)
                    (_tail,) = unpack_trailer(view, handle.size - 4)
                    handle.release()
                lengths.append(length)
                # A released handle still refers to its buffer: drop the handles before
                # the next burst, or an unpooled (oversize) buffer outlives its burst.
                handles.clear()
            return lengths

        start = perf_counter()
        if shape == BURST:
            lengths = await (bursts_pooled() if pooled else bursts_fresh())
        elif shape == FLIGHT:
            work = task_pooled if pooled else task_fresh
            shares, begin = [], 0
            for count in _split(len(sizes)):
                shares.append(sizes[begin : begin + count])
                begin += count
            lengths = await asyncio.gather(*(work(share) for share in shares if share))
        else:
            one = one_pooled if pooled else one_fresh
            last = 0
            for n in sizes:
                last = one(n)
            lengths = [last]
        elapsed = perf_counter() - start
        expected = len(source.getbuffer())
        if not lengths or any(length != expected for length in lengths):
            raise AssertionError(f"parsed header lengths {set(lengths)}, expected {expected}")
        if pool.statistics().in_use:
            raise AssertionError("buffers still out of the pool at the end of the run")
        pool.close()
        return elapsed

    return run


def mixed_sizes(count: int) -> list[int]:
    """``count`` sizes, log-uniform over 1-256 KiB, from the suite's seed."""
    rng = random.Random(SEED)
    return [int(2 ** rng.uniform(10, 18)) for _ in range(count)]


# -- objects ---------------------------------------------------------------------------


@dataclass(slots=True)
class Cheap:
    """A small plain object: three fields, set by whoever uses it."""

    key: int = 0
    value: float = 0.0
    tag: str = ""


#: The costly object's lookup table: built at set-up (a vocabulary, a routing table).
_TABLE_KEYS = tuple(f"key-{i:03d}" for i in range(100))


class SessionState:
    """A per-session state with costly set-up: a 64 KiB scratch buffer and a 100-entry table.

    ``headers`` and ``used`` are the per-use part that :meth:`clear` resets.
    """

    __slots__ = ("headers", "scratch", "table", "used")

    def __init__(self) -> None:
        self.scratch = bytearray(64 * KIB)
        self.table = {key: index * 7 for index, key in enumerate(_TABLE_KEYS)}
        self.headers: dict[str, str] = {}
        self.used = 0

    def clear(self) -> None:
        """Forget the per-use part (the pool's ``reset``)."""
        self.headers.clear()
        self.used = 0


_PAYLOAD = b"x" * 100


def _use_cheap(obj: Cheap, i: int) -> int:
    obj.key = i
    obj.value = 0.5
    obj.tag = "a"
    return obj.key


def _use_state(state: SessionState, i: int) -> int:
    state.scratch[:100] = _PAYLOAD
    state.used = 100
    state.headers["id"] = "abc"
    return state.table[_TABLE_KEYS[i % 100]] + state.used


def object_run(kind: str, contender: str, shape: str, ops: int) -> Timed:
    """A run of ``ops`` uses of the object: seconds from the first to the last."""
    cheap = kind == "cheap"
    factory: Callable[[], Any] = Cheap if cheap else SessionState
    use: Callable[[Any, int], int] = _use_cheap if cheap else _use_state
    pooled = contender == POOLED

    async def run() -> float:
        pool: ap.ObjectPool[Any] = ap.ObjectPool(
            factory=factory,
            reset=None if cheap else SessionState.clear,
            max_size=IN_FLIGHT,
            name="bench",
        )
        acquire, release = pool.acquire, pool.release

        async def task(count: int) -> int:
            total = 0
            for i in range(count):
                if pooled:
                    obj = acquire()
                    total += use(obj, i)
                    await asyncio.sleep(0)
                    release(obj)
                else:
                    obj = factory()
                    total += use(obj, i)
                    await asyncio.sleep(0)
                    del obj
            return total

        start = perf_counter()
        if shape == FLIGHT:
            await asyncio.gather(*(task(count) for count in _split(ops) if count))
        elif pooled:
            for i in range(ops):
                obj = acquire()
                use(obj, i)
                release(obj)
        else:
            for i in range(ops):
                use(factory(), i)
        elapsed = perf_counter() - start
        stats = pool.statistics()
        if stats.in_use or stats.acquires != (ops if pooled else 0):
            raise AssertionError(f"object pool accounting is off: {stats}")
        pool.close()
        return elapsed

    return run


# -- the message path ------------------------------------------------------------------


def message_config() -> SimulationConfig:
    """The simulator's defaults with a shorter context (1,000 characters, not 8,000).

    With the default 8 KB context, serialising and tokenising it is most of a
    message's CPU, and a run of this suite would take minutes; the GC work
    this suite watches does not depend on the string sizes.
    """
    return SimulationConfig(payload=1_000)


class MessageState:
    """The per-message state the pooled path takes from an ObjectPool and reuses.

    The request dict, the list of messages and a (user, assistant) pair of
    message dicts per history turn: everything ``json.dumps`` serialises
    except the strings.
    """

    __slots__ = ("messages", "pairs", "prompt", "request")

    def __init__(self, history: int) -> None:
        self.pairs = [
            ({"role": "user", "content": ""}, {"role": "assistant", "content": ""})
            for _ in range(history)
        ]
        self.prompt = {"role": "user", "content": ""}
        self.messages: list[dict[str, str]] = []
        self.request: dict[str, object] = {
            "model": "simulated",
            "session": 0,
            "messages": self.messages,
            "context": "",
            "prompt_tokens": 0,
            "max_tokens": 256,
        }

    def clear(self) -> None:
        """Drop the references to the strings of the last message (the pool's ``reset``)."""
        self.messages.clear()
        for user, assistant in self.pairs:
            user["content"] = assistant["content"] = ""
        self.prompt["content"] = ""
        self.request["context"] = ""


@dataclass(frozen=True, slots=True)
class MessageRun:
    """What one run of the message path cost, and what its pools say afterwards."""

    messages: int
    wall_s: float
    pause_s: float
    max_pause_s: float
    #: Collections per generation (0, 1, 2) during the run.
    collections: tuple[int, int, int]
    #: The pools' statistics after the run (None for the unpooled path).
    buffers: ap.BufferPoolStatistics | None
    states: ap.ObjectPoolStatistics | None
    #: Replies parsed: one per message.
    replies: int

    def figures(self) -> dict[str, float]:
        """The side figures, per :data:`PER_MESSAGES` messages where it is a count."""
        per = PER_MESSAGES / self.messages
        gen0, gen1, gen2 = self.collections
        return {
            "gc_pause_ms": self.pause_s * 1e3 * per,
            "gen0": gen0 * per,
            "gen1": gen1 * per,
            "gen2": gen2 * per,
            "collections": (gen0 + gen1 + gen2) * per,
            "max_pause_ms": self.max_pause_s * 1e3,
            "gc_share_pct": 100.0 * self.pause_s / self.wall_s if self.wall_s > 0 else 0.0,
        }


#: The side figures of the message path: key, unit.
MESSAGE_METRICS: Final = (
    ("gc_pause_ms", f"ms/{PER_MESSAGES:,} msgs"),
    ("gen0", f"collections/{PER_MESSAGES:,} msgs"),
    ("gen1", f"collections/{PER_MESSAGES:,} msgs"),
    ("gen2", f"collections/{PER_MESSAGES:,} msgs"),
    ("collections", f"collections/{PER_MESSAGES:,} msgs"),
    ("max_pause_ms", "ms"),
    ("gc_share_pct", "%"),
)


class MessagePath:
    """The simulator's per-message client path over its seeded workload, pooled or not.

    ``histories`` holds each session's last turns, as the simulator keeps them;
    :meth:`request_unpooled` is the simulator's ``build_request`` and
    :meth:`request_pooled` builds the same JSON text from a reused
    :class:`MessageState`.
    """

    def __init__(self, concurrency: int) -> None:
        self.config = message_config()
        self.workload = make_workload(self.config)
        self.histories: list[deque[tuple[int, str]]] = [
            deque(maxlen=self.config.history) for _ in range(self.config.sessions)
        ]
        self.usage = [0] * self.config.sessions
        self.replies = 0
        self.upstream = Upstream(slots=concurrency, rate=None, burst=1, clock=ap.SystemClock())
        history = self.config.history
        self.buffers = ap.BufferPool(max_per_class=concurrency, name="receive")
        self.states: ap.ObjectPool[MessageState] = ap.ObjectPool(
            factory=lambda: MessageState(history),
            reset=MessageState.clear,
            max_size=concurrency,
            name="message state",
        )

    def request_unpooled(self, index: int) -> str:
        """The simulator's ``build_request``, as it is: every dict and list new."""
        workload = self.workload
        return build_request(workload, self.histories[workload.session[index]], index)

    def request_pooled(self, index: int, state: MessageState) -> str:
        """The same JSON text, built in a cleared state's reused dicts and list."""
        workload = self.workload
        message_list = state.messages
        pairs = state.pairs
        for turn, (asked, reply) in enumerate(self.histories[workload.session[index]]):
            user, assistant = pairs[turn]
            user["content"] = prompt_text(asked)
            assistant["content"] = reply
            message_list.append(user)
            message_list.append(assistant)
        prompt = prompt_text(workload.prompt[index])
        context = context_text(workload.payload[index])
        state.prompt["content"] = prompt
        message_list.append(state.prompt)
        request = state.request
        request["session"] = workload.session[index]
        request["context"] = context
        request["prompt_tokens"] = count_tokens(prompt) + count_tokens(context)
        return json.dumps(request)

    async def message(self, index: int, pooled: bool) -> None:
        """One message: request, upstream call, receive, parse, count, remember the turn."""
        if pooled:
            states = self.states
            state = states.acquire()
            try:
                request = self.request_pooled(index, state)
            finally:
                states.release(state)
        else:
            request = self.request_unpooled(index)
        response = await self.upstream.call(request, 0.0, False)
        wire = response.encode()  # the bytes that arrive from the upstream (both paths)
        if pooled:
            with self.buffers.acquire(len(wire)) as view:
                view[:] = wire  # what recv_into writes
                reply: str = json.loads(str(view, "utf-8"))["text"]
        else:
            received = bytearray(wire)  # a fresh receive buffer with the same bytes
            reply = json.loads(received)["text"]
        session = self.workload.session[index]
        self.usage[session] += count_tokens(reply)
        self.histories[session].append((self.workload.prompt[index], reply))
        self.replies += 1

    def close(self) -> None:
        self.buffers.close()
        self.states.close()


async def run_message_path(pooled: bool, messages: int, concurrency: int = IN_FLIGHT) -> MessageRun:
    """Run ``messages`` messages through the path, ``concurrency`` at once, with GC watched.

    Message ``i`` is the workload's message ``i`` modulo its length (the
    schedule repeats when ``messages`` is larger); ``concurrency`` workers
    take every ``concurrency``-th message each.

    Raises:
        ValueError: ``messages`` or ``concurrency`` below 1.
        AssertionError: a message got no reply (a bug).
    """
    if messages < 1:
        raise ValueError(f"messages must be >= 1, not {messages}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, not {concurrency}")
    path = MessagePath(concurrency)
    count = len(path.workload)
    message = path.message

    async def worker(first: int) -> None:
        for index in range(first, messages, concurrency):
            await message(index % count, pooled)

    try:
        with GcMonitor() as monitor:
            start = perf_counter()
            await asyncio.gather(*(worker(first) for first in range(min(concurrency, messages))))
            wall = perf_counter() - start
    finally:
        buffer_stats = path.buffers.statistics() if pooled else None
        state_stats = path.states.statistics() if pooled else None
        path.close()
    if path.replies != messages:
        raise AssertionError(f"{path.replies} replies for {messages} messages")
    gen0, gen1, gen2 = monitor.collections
    return MessageRun(
        messages=messages,
        wall_s=wall,
        pause_s=monitor.pause,
        max_pause_s=monitor.max_pause,
        collections=(gen0, gen1, gen2),
        buffers=buffer_stats,
        states=state_stats,
        replies=path.replies,
    )


# -- plan ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Store:
    """Per loop: side figures of each case (keyed by case and contender)."""

    #: tracemalloc peak, bytes, of the warm-up run.
    peak_bytes: dict[tuple[str, str], float] = field(default_factory=dict)
    #: The message path's timed runs (the warm-up left out).
    messages: dict[str, list[MessageRun]] = field(default_factory=dict)


_STORES: dict[str, _Store] = {}


def _traced(key: tuple[str, str], timed: Timed, store: _Store) -> RunFactory:
    """The case's coroutine factory: the warm-up (first) run is traced by tracemalloc."""
    calls = 0

    async def run_once() -> float:
        nonlocal calls
        calls += 1
        if calls > 1:
            return await timed()
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            elapsed = await timed()
            store.peak_bytes[key] = float(tracemalloc.get_traced_memory()[1] - base)
        finally:
            if started:
                tracemalloc.stop()
        return elapsed

    return run_once


def plan(config: Config, loop: LoopChoice) -> Plan:
    """Every buffer, object and message-path case, two contenders each."""
    store = _Store()
    _STORES[loop] = store
    quick = config.quick
    result = Plan(cases=[])

    def add(case: str, contender: str, timed: Timed, items: int, note: str = "") -> None:
        result.cases.append(
            Case(
                case=case,
                contender=contender,
                label=LABELS[contender],
                make=_traced((case, contender), timed, store),
                items=items,
                unit="ns/op",
                scale=1e9,
                note=note,
            )
        )

    for shape in SHAPES:
        for size in SIZES:
            ops = _ops(FULL_OPS[size], quick)
            sizes = [size] * ops
            note = (
                "above the largest class: the pool serves it unpooled" if size > SIZES[-2] else ""
            )
            case = buffer_case(shape, size)
            for contender in (FRESH, POOLED):
                add(case, contender, buffer_run(contender, shape, sizes), ops, note)
    mixed = mixed_sizes(_ops(MIXED_OPS, quick))
    for shape in SHAPES:
        for contender in (FRESH, POOLED):
            timed = buffer_run(contender, shape, mixed)
            add(mixed_case(shape), contender, timed, len(mixed))
    for kind in ("cheap", "costly"):
        ops = _ops(OBJECT_OPS if kind == "cheap" else OBJECT_OPS // 4, quick)
        for shape in OBJECT_SHAPES:
            for contender in (NEW, POOLED):
                add(
                    object_case(kind, shape),
                    contender,
                    object_run(kind, contender, shape, ops),
                    ops,
                )
    messages = _ops(MESSAGES, quick)
    for contender in (UNPOOLED, POOLED):
        result.cases.append(
            Case(
                case=MESSAGE_CASE,
                contender=contender,
                label=LABELS[contender],
                make=_traced(
                    (MESSAGE_CASE, contender),
                    keep_timed_runs(
                        partial(run_message_path, contender == POOLED, messages),
                        lambda run: run.wall_s,
                        store.messages.setdefault(contender, []),
                    ),
                    store,
                ),
                items=messages,
                unit="µs/msg",
                scale=1e6,
                note=f"{messages:,} messages per run; GC figures scaled per {PER_MESSAGES:,}",
            )
        )
    result.notes.append(
        "pools: peak memory is tracemalloc's peak during the warm-up run only (the timed "
        "runs are untraced); the message path uses the simulator's pieces with a 1,000-"
        f"character context and {messages:,} messages per run, GC figures per "
        f"{PER_MESSAGES:,} messages."
    )
    return result


# -- report ----------------------------------------------------------------------------


def _speedup(slow: Result | None, fast: Result | None) -> float:
    if slow is None or fast is None or fast.value <= 0:
        return math.nan
    return slow.value / fast.value


def _kib(store: _Store, case: str, contender: str) -> str:
    peak = store.peak_bytes.get((case, contender))
    return "-" if peak is None else f"{peak / KIB:,.0f}"


def _message_median(runs: list[MessageRun], key: str) -> float:
    values = [run.figures()[key] for run in runs]
    return statistics.median(values) if values else math.nan


def _side_results(loop_name: str, results: list[Result], store: _Store) -> list[Result]:
    """Peak memory of every case and the message path's GC figures, as extra results."""
    extra: list[Result] = []

    def row(result: Result, key: str, unit: str, values: list[float], note: str) -> None:
        extra.append(
            Result.side_figure(
                NAME,
                f"{result.case}/{key}",
                result.contender,
                result.label,
                loop_name,
                unit,
                values,
                note,
            )
        )

    for result in results:
        peak = store.peak_bytes.get((result.case, result.contender))
        if peak is not None:
            row(result, "peak_kib", "KiB", [peak / KIB], "tracemalloc peak of the warm-up run")
        runs = store.messages.get(result.contender, []) if result.case == MESSAGE_CASE else []
        for key, unit in MESSAGE_METRICS:
            values = [run.figures()[key] for run in runs]
            if values:
                row(result, key, unit, values, "median of the repetitions")
    return extra


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    """Print the buffer, object and message-path tables of one loop; check the bars."""
    store = _STORES[loop]
    loop_name = results[0].loop if results else loop
    rows = {(r.case, r.contender): r for r in results}
    caption = (
        f"median of {h.config.repeat} repetitions, each in a fresh loop; ns per buffer "
        "(allocate or acquire, readinto, parse header and trailer, drop or release); "
        "speedup = fresh / pooled (> 1: the pool is faster); peak KiB = tracemalloc peak of "
        "the warm-up run; 1 MiB is above the largest class, so the pool serves it unpooled"
    )
    table = Table(title=f"pools: buffers — loop {loop_name}", caption=caption)
    for column in ("case", "fresh ns", "pooled ns", "speedup", "fresh KiB", "pooled KiB", "bar"):
        table.add_column(column, justify="left" if column in ("case", "bar") else "right")
    cases = [buffer_case(shape, size) for shape in SHAPES for size in SIZES]
    cases += [mixed_case(shape) for shape in SHAPES]
    for case in cases:
        fresh, pooled = rows.get((case, FRESH)), rows.get((case, POOLED))
        if fresh is None or pooled is None:
            continue
        speedup = _speedup(fresh, pooled)
        cell = Text("")
        size = next((s for s in BAR_SIZES if case.endswith(f"· {size_label(s)}")), None)
        if size is not None and not case.startswith(BURST):
            bar = h.bar(
                NAME,
                loop_name,
                case,
                POOLED,
                f"pooled >= {BAR_SPEEDUP:g}x faster than fresh",
                speedup,
                ">=",
                BAR_SPEEDUP,
            )
            cell = bar.cell()
        table.add_row(
            case,
            fmt(fresh.value),
            fmt(pooled.value),
            f"{speedup:.2f}x",
            _kib(store, case, FRESH),
            _kib(store, case, POOLED),
            cell,
        )
    h.console.print(table)

    objects = Table(
        title=f"pools: objects — loop {loop_name}",
        caption="ns per use (construct or acquire, set fields / write 100 bytes and look up, "
        "drop or release); speedup = plain / pooled; the costly object holds a 64 KiB "
        "scratch buffer and a 100-entry table",
    )
    for column in ("case", "plain ns", "pooled ns", "speedup", "plain KiB", "pooled KiB"):
        objects.add_column(column, justify="left" if column == "case" else "right")
    for kind in ("cheap", "costly"):
        for shape in OBJECT_SHAPES:
            case = object_case(kind, shape)
            plain, pooled = rows.get((case, NEW)), rows.get((case, POOLED))
            if plain is None or pooled is None:
                continue
            objects.add_row(
                case,
                fmt(plain.value),
                fmt(pooled.value),
                f"{_speedup(plain, pooled):.2f}x",
                _kib(store, case, NEW),
                _kib(store, case, POOLED),
            )
    h.console.print(objects)

    gc_table = Table(
        title=f"pools: GC in the simulator's message path — loop {loop_name}",
        caption=f"per {PER_MESSAGES:,} messages, {IN_FLIGHT} in flight; GC = time inside "
        "collections (gc.callbacks); gen0/1/2 = collections; default thresholds; medians of "
        "the repetitions; peak KiB = tracemalloc peak of the warm-up run; the bar counts "
        "collections (equal counts pass: not more, which is not fewer)",
    )
    columns = ("contender", "µs/msg", "GC ms", "gen0", "gen1", "gen2", "max pause ms", "peak KiB")
    for column in (*columns, "bar"):
        gc_table.add_column(column, justify="left" if column in ("contender", "bar") else "right")
    unpooled_runs = store.messages.get(UNPOOLED, [])
    pooled_runs = store.messages.get(POOLED, [])
    # The bar counts pauses (collections of every generation), as the issue words it;
    # the table also gives their time.
    unpooled_count = _message_median(unpooled_runs, "collections")
    pooled_count = _message_median(pooled_runs, "collections")
    for contender, runs in ((UNPOOLED, unpooled_runs), (POOLED, pooled_runs)):
        result = rows.get((MESSAGE_CASE, contender))
        if result is None or not runs:
            continue
        cell = Text("")
        if contender == POOLED and unpooled_runs:
            if unpooled_count > 0:
                ratio = pooled_count / unpooled_count
            else:
                ratio = 1.0 if pooled_count == 0 else math.inf
            cell = h.bar(
                NAME,
                loop_name,
                MESSAGE_CASE,
                POOLED,
                "GC pauses (collections) <= unpooled",
                ratio,
                "<=",
                1.0,
            ).cell()
        gc_table.add_row(
            result.label,
            fmt(result.value),
            fmt(_message_median(runs, "gc_pause_ms")),
            fmt(_message_median(runs, "gen0")),
            fmt(_message_median(runs, "gen1")),
            fmt(_message_median(runs, "gen2")),
            fmt(_message_median(runs, "max_pause_ms")),
            _kib(store, MESSAGE_CASE, contender),
            cell,
        )
    h.console.print(gc_table)
    h.results.setdefault(NAME, []).extend(_side_results(loop_name, results, store))


SUITE = Suite(
    name=NAME,
    description="Memory pools: fresh bytearray vs BufferPool per size class (1 KiB-1 MiB) and "
    f"for mixed sizes, one at a time, {IN_FLIGHT} in flight and in bursts of {IN_FLIGHT} "
    "(ns per buffer, tracemalloc "
    "peak); plain construction vs ObjectPool for a cheap and a costly object; GC collections "
    "and pause in the simulator's message path with and without pooling.",
    plan=plan,
    report=report,
)
