"""Suite ``cache``: L1 memory cache speed (get-hit, get-miss, set) against the peers.

Every contender holds the same 10,000 string keys (1,000 with ``--quick``),
preloaded outside the timing, in a cache sized to hold them all, so every get
of a preloaded key hits. Then the clock runs over N operations: get of a held
key (hit), get of a key never stored (miss), and set of a held key to a new
value (overwrite). Hits and sets follow one fixed sequence of keys drawn from
a scrambled Zipf distribution (exponent 0.99, as in YCSB and Caffeine's
GetPutBenchmark): the skew real cache traffic has, the same sequence for every
contender. The policy table adds a cyclic walk over every key in turn, the
worst case for segmented policies (under W-TinyLFU every such hit promotes a
key out of probation and demotes another). Each contender's call is bound once
before the clock starts and every contender runs the same loop, so the figures
differ only by the call itself; the plain dict row is the floor (the loop and
one C-level call).

Contenders: a plain dict; cachetools ``LRUCache`` (synchronous, ``cache.get``
and ``cache[key] = value``); async-lru (an ``@alru_cache`` coroutine function:
its hit path only, a miss runs the function); aiocache ``SimpleMemoryCache()``
with its default settings; cashews ``Cache()`` set up with ``mem://`` (its
size raised to hold every key: the default keeps 1,000); asyncperf
``MemoryCache`` awaited (``get``/``set``) and called synchronously
(``get_nowait``/``set_nowait``), with the default policy. A second table gives
``get_nowait`` hits under each eviction policy, on both key orders.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Literal, cast

from rich.table import Table
from rich.text import Text

from asyncperf.cache._base import MISS
from asyncperf.cache._memory import MemoryCache
from asyncperf.cache._policies import POLICIES, PolicyName
from asyncperf.tools.bench._harness import (
    Bar,
    Case,
    Config,
    Harness,
    LoopChoice,
    Plan,
    Result,
    Suite,
    fmt,
    import_peer,
)

__all__ = ["SUITE"]

Workload = Literal["get hit", "get miss", "set", "get hit, cyclic"]
WORKLOADS: tuple[Workload, ...] = ("get hit", "get miss", "set")
CYCLIC: Workload = "get hit, cyclic"
ZIPF_EXPONENT = 0.99
SEED = 20240
DEFAULT_POLICY: PolicyName = "tinylfu"
#: Operations per repetition for the slow peers, whatever --jobs says (they take µs per call).
SLOW_OPS = 20_000
SLOW_REPEAT = 5

SyncGet = Callable[[str], Any]
AsyncGet = Callable[[str], Awaitable[Any]]


@dataclass(slots=True)
class Store:
    """A preloaded contender: its bound calls, and how to release it."""

    get: Callable[[str], Any]
    set: Callable[[str, int], Any] | None
    is_async: bool
    held: Callable[[], Awaitable[int]]
    close: Callable[[], Awaitable[None]] | None = None


def _keys(count: int) -> list[str]:
    return [f"user:{i}:profile" for i in range(count)]


@functools.cache
def _sequence(workload: Workload, key_count: int, ops: int) -> tuple[str, ...]:
    """The keys the timed loop goes through, the same for every contender."""
    keys = _keys(key_count)
    if workload == "get miss":
        absent = [f"absent:{i}" for i in range(key_count)]
        return tuple(absent[i % key_count] for i in range(ops))
    if workload == CYCLIC:
        return tuple(keys[i % key_count] for i in range(ops))
    rng = random.Random(SEED)
    ranked = keys[:]
    rng.shuffle(ranked)  # scrambled: popularity has nothing to do with insertion order
    weights = itertools.accumulate(1.0 / (rank + 1) ** ZIPF_EXPONENT for rank in range(key_count))
    return tuple(rng.choices(ranked, cum_weights=list(weights), k=ops))


# -- contenders: each builds a preloaded store ----------------------------------------------


async def build_dict(keys: list[str], policy: PolicyName) -> Store:
    data = {key: index for index, key in enumerate(keys)}

    async def held() -> int:
        return len(data)

    return Store(data.get, data.__setitem__, False, held)


async def build_cachetools(keys: list[str], policy: PolicyName) -> Store:
    from cachetools import LRUCache

    cache: LRUCache[str, int] = LRUCache(maxsize=len(keys))
    for index, key in enumerate(keys):
        cache[key] = index

    async def held() -> int:
        return sum(1 for key in keys if key in cache)

    return Store(cache.get, cache.__setitem__, False, held)


async def build_async_lru(keys: list[str], policy: PolicyName) -> Store:
    from async_lru import alru_cache

    @alru_cache(maxsize=len(keys))
    async def load(key: str) -> str:
        return key

    for key in keys:
        await load(key)

    async def held() -> int:
        return load.cache_info().currsize

    async def close() -> None:
        await load.cache_close()

    return Store(load, None, True, held, close)


async def build_aiocache(keys: list[str], policy: PolicyName) -> Store:
    from aiocache import SimpleMemoryCache

    cache = SimpleMemoryCache()
    for index, key in enumerate(keys):
        await cache.set(key, index)

    async def held() -> int:
        return sum([await cache.exists(key) for key in keys])

    async def close() -> None:
        await cache.close()

    return Store(cache.get, cache.set, True, held, close)


async def build_cashews(keys: list[str], policy: PolicyName) -> Store:
    import cashews

    cache = cashews.Cache()
    cache.setup("mem://", size=len(keys))
    for index, key in enumerate(keys):
        await cache.set(key, index)
    # Let its expiry task start now rather than inside the timing.
    await asyncio.sleep(0)

    async def held() -> int:
        return sum([await cache.exists(key) for key in keys])

    async def close() -> None:
        await cache.close()

    return Store(cache.get, cache.set, True, held, close)


def _memory_cache(keys: list[str], policy: PolicyName) -> MemoryCache:
    cache = (
        MemoryCache(len(keys))
        if policy == DEFAULT_POLICY
        else MemoryCache(len(keys), policy=policy)
    )
    for index, key in enumerate(keys):
        cache.set_nowait(key, index)
    return cache


async def build_asyncperf(keys: list[str], policy: PolicyName) -> Store:
    cache = _memory_cache(keys, policy)

    async def held() -> int:
        return len(cache)

    return Store(cache.get, cache.set, True, held, cache.aclose)


async def build_asyncperf_nowait(keys: list[str], policy: PolicyName) -> Store:
    cache = _memory_cache(keys, policy)

    async def held() -> int:
        return len(cache)

    return Store(cache.get_nowait, cache.set_nowait, False, held, cache.aclose)


# -- the timed loops: the same for every contender --------------------------------------------


def _sync_gets(get: SyncGet, sequence: tuple[str, ...]) -> float:
    start = perf_counter()
    for key in sequence:
        get(key)
    return perf_counter() - start


async def _async_gets(get: AsyncGet, sequence: tuple[str, ...]) -> float:
    start = perf_counter()
    for key in sequence:
        await get(key)
    return perf_counter() - start


def _sync_sets(put: Callable[[str, int], Any], sequence: tuple[str, ...]) -> float:
    start = perf_counter()
    for key in sequence:
        put(key, 1)
    return perf_counter() - start


async def _async_sets(
    put: Callable[[str, int], Awaitable[Any]], sequence: tuple[str, ...]
) -> float:
    start = perf_counter()
    for key in sequence:
        await put(key, 1)
    return perf_counter() - start


Builder = Callable[[list[str], PolicyName], Coroutine[Any, Any, Store]]


async def measure(
    build: Builder, workload: Workload, key_count: int, ops: int, policy: PolicyName
) -> float:
    """Seconds for ``ops`` operations of ``workload`` on a store preloaded with the keys."""
    keys = _keys(key_count)
    sequence = _sequence(workload, key_count, ops)
    store = await build(keys, policy)
    try:
        if await store.held() != key_count:
            raise AssertionError("the store does not hold every preloaded key: gets would miss")
        if workload == "set":
            assert store.set is not None, "no set for this contender"
            if store.is_async:
                elapsed = await _async_sets(store.set, sequence)
            else:
                elapsed = _sync_sets(store.set, sequence)
        elif store.is_async:
            elapsed = await _async_gets(store.get, sequence)
        else:
            elapsed = _sync_gets(store.get, sequence)
        # Check outside the timing that the gets found what they were meant to find.
        probe = store.get(sequence[-1])
        if store.is_async:
            probe = await probe
        if workload == "get miss":
            if probe not in (None, MISS):
                raise AssertionError(f"a miss returned {probe!r}")
        elif probe in (None, MISS):
            raise AssertionError("a hit returned nothing")
        return elapsed
    finally:
        if store.close is not None:
            await store.close()


# -- plan and report ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contender:
    key: str
    label: str
    build: Builder
    requires: str | None
    workloads: tuple[Workload, ...]
    slow: bool = False


FLOOR = "dict"
CACHETOOLS = "cachetools"
ASYNCPERF = "asyncperf"
NOWAIT = "asyncperf_nowait"

CONTENDERS = (
    Contender(FLOOR, "dict (floor)", build_dict, None, WORKLOADS),
    Contender(CACHETOOLS, "cachetools LRUCache", build_cachetools, "cachetools", WORKLOADS),
    Contender("async_lru", "async-lru @alru_cache", build_async_lru, "async_lru", ("get hit",)),
    Contender(
        "aiocache", "aiocache SimpleMemoryCache", build_aiocache, "aiocache", WORKLOADS, True
    ),
    Contender("cashews", "cashews mem://", build_cashews, "cashews", WORKLOADS, True),
    Contender(ASYNCPERF, "asyncperf MemoryCache await", build_asyncperf, None, WORKLOADS),
    Contender(NOWAIT, "asyncperf MemoryCache _nowait", build_asyncperf_nowait, None, WORKLOADS),
)

#: (peer, bar name, asyncperf's speedup needed): L1 async get-hit against the peers.
SPEEDUP_BARS = (
    ("aiocache", ">= 10x faster", 10.0),
    ("cashews", ">= 5x faster", 5.0),
    ("async_lru", "no slower", 1.0),
)
NOWAIT_BAR = 3.0
POLICY_CASE = "get_nowait hit by policy"


def _maker(
    build: Builder, workload: Workload, key_count: int, ops: int, policy: PolicyName
) -> Callable[[], Coroutine[Any, Any, float]]:
    def make() -> Coroutine[Any, Any, float]:
        return measure(build, workload, key_count, ops, policy)

    return make


def _default_policy(notes: list[str]) -> PolicyName:
    if DEFAULT_POLICY in POLICIES:
        return DEFAULT_POLICY
    notes.append(
        f"the default policy {DEFAULT_POLICY!r} is not available; "
        "the asyncperf rows use 'lru' instead."
    )
    return "lru"


def plan(config: Config, loop: LoopChoice) -> Plan:
    """The cases: each contender on each workload, then get_nowait hits under each policy."""
    result = Plan(cases=[])
    key_count = 1_000 if config.quick else 10_000
    ops = config.jobs
    policy = _default_policy(result.notes)
    available = [
        c
        for c in CONTENDERS
        if c.requires is None or import_peer(c.requires, result.notes, config.vs)
    ]
    for workload in WORKLOADS:
        for contender in available:
            if workload not in contender.workloads:
                continue
            count = min(ops, SLOW_OPS) if contender.slow else ops
            result.cases.append(
                Case(
                    case=workload,
                    contender=contender.key,
                    label=contender.label,
                    make=_maker(contender.build, workload, key_count, count, policy),
                    items=count,
                    unit="ns/op",
                    scale=1e9,
                    max_repeat=SLOW_REPEAT if contender.slow else None,
                )
            )
    for name in sorted(POLICIES):
        if name != policy:  # the default policy is the _nowait contender above
            result.cases.append(
                Case(
                    case=POLICY_CASE,
                    contender=f"nowait_{name}",
                    label=f"get_nowait, policy {name}",
                    make=_maker(build_asyncperf_nowait, "get hit", key_count, ops, _name(name)),
                    items=ops,
                    unit="ns/op",
                    scale=1e9,
                )
            )
    cyclic = [(FLOOR, "dict (floor)", build_dict, policy)]
    if any(c.key == CACHETOOLS for c in available):
        cyclic.append((CACHETOOLS, "cachetools LRUCache", build_cachetools, policy))
    cyclic += [
        (f"nowait_{name}", f"get_nowait, policy {name}", build_asyncperf_nowait, _name(name))
        for name in sorted(POLICIES)
    ]
    for key, label, build, name in cyclic:
        result.cases.append(
            Case(
                case=CYCLIC,
                contender=key,
                label=label,
                make=_maker(build, CYCLIC, key_count, ops, name),
                items=ops,
                unit="ns/op",
                scale=1e9,
            )
        )
    if any(c.slow for c in available) and (ops > SLOW_OPS or config.repeat > SLOW_REPEAT):
        result.notes.append(
            f"aiocache and cashews: {min(ops, SLOW_OPS):,} operations and at most "
            f"{SLOW_REPEAT} repetitions per case (slow peers; keeps the run short)."
        )
    result.notes.append("async-lru has no get-miss or set row: a miss runs the function.")
    return result


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    """Print the main table with ratios and bars, then the table of policies."""
    quick = h.config.quick
    table = Table(
        title=f"cache: L1 operations, {1_000 if quick else 10_000:,} keys — loop {loop}",
        caption=f"median of up to {h.config.repeat} repetitions, each in a fresh loop; "
        "best = fastest; x dict = time / plain dict time; ap x = time / asyncperf await time "
        "(asyncperf's speedup); default policy for the asyncperf rows",
    )
    table.add_column("workload")
    table.add_column("contender")
    table.add_column("ns/op", justify="right")
    table.add_column("best", justify="right")
    table.add_column("x dict", justify="right")
    table.add_column("ap x", justify="right")
    table.add_column("bar")
    for workload in WORKLOADS:
        rows = {r.contender: r for r in results if r.case == workload}
        floor = rows.get(FLOOR)
        mine = rows.get(ASYNCPERF)
        bars: dict[str, Bar] = {}
        if workload == "get hit" and mine is not None:
            for key, name, threshold in SPEEDUP_BARS:
                other = rows.get(key)
                if other is not None:
                    ratio = other.value / mine.value
                    bars[key] = h.bar("cache", loop, workload, key, name, ratio, ">=", threshold)
            nowait, cachetools = rows.get(NOWAIT), rows.get(CACHETOOLS)
            if nowait is not None and cachetools is not None:
                bars[NOWAIT] = h.bar(
                    "cache",
                    loop,
                    workload,
                    NOWAIT,
                    f"get_nowait <= {NOWAIT_BAR:g}x cachetools",
                    nowait.value / cachetools.value,
                    "<=",
                    NOWAIT_BAR,
                )
        for row in rows.values():
            bar = bars.get(row.contender)
            table.add_row(
                workload,
                row.label,
                fmt(row.value),
                fmt(row.best),
                f"{row.value / floor.value:.2f}x" if floor is not None else "-",
                f"{row.value / mine.value:.2f}x" if mine is not None and row is not mine else "-",
                bar.cell() if bar is not None else Text(""),
            )
        table.add_section()
    h.console.print(table)
    _report_policies(h, loop, results)


def _report_policies(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    hits = {r.contender: r for r in results if r.case == "get hit"}
    zipf = {r.contender: r for r in results if r.case == POLICY_CASE}
    cyclic = {r.contender: r for r in results if r.case == CYCLIC}
    default = _default_policy([])
    if NOWAIT in hits:
        zipf[f"nowait_{default}"] = hits[NOWAIT]
    names = sorted(POLICIES, key=lambda name: (name != default, name))
    table = Table(
        title=f"cache: get_nowait hit by eviction policy — loop {loop}",
        caption="zipf: the key order of the main table; cyclic: every key in turn (each hit "
        "of a segmented policy promotes a key); x ct = time / cachetools LRUCache time on the "
        "same order; the difference between policies is the cost of their access()",
    )
    table.add_column("policy")
    table.add_column("zipf ns/op", justify="right")
    table.add_column("x ct", justify="right")
    table.add_column("cyclic ns/op", justify="right")
    table.add_column("x ct", justify="right")
    for name in names:
        cells: list[str] = [f"{name} (default)" if name == default else name]
        for order, reference in (
            (zipf, hits.get(CACHETOOLS)),
            (cyclic, cyclic.get(CACHETOOLS)),
        ):
            row = order.get(f"nowait_{name}")
            cells.append(fmt(row.value) if row is not None else "-")
            cells.append(
                f"{row.value / reference.value:.2f}x"
                if row is not None and reference is not None
                else "-"
            )
        table.add_row(*cells)
    for key, label in ((FLOOR, "dict (floor)"), (CACHETOOLS, "cachetools LRUCache")):
        a, b = hits.get(key), cyclic.get(key)
        table.add_row(
            Text(label, style="dim"),
            fmt(a.value) if a is not None else "-",
            "",
            fmt(b.value) if b is not None else "-",
            "",
        )
    h.console.print(table)


def _name(name: str) -> PolicyName:
    return cast(PolicyName, name)


SUITE = Suite(
    name="cache",
    description="L1 memory cache speed (ns/op): get-hit, get-miss and set of 10,000 "
    "preloaded keys, asyncperf MemoryCache (awaited and _nowait) against a plain dict, "
    "cachetools, async-lru, aiocache and cashews; get_nowait hits under each policy.",
    plan=plan,
    report=report,
)
