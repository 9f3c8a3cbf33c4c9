"""Cache performance: MemoryCache hits and misses, TieredCache single-flight loads."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest

import asyncperf as ap
from bench.conftest import Bench

# -- MemoryCache get: hit / miss ------------------------------------------------------

GETS = 100_000
QUICK_GETS = 2_000
KEYS = 1_000


@dataclass(frozen=True, slots=True)
class LookupOutcome:
    found: int
    hits: int
    misses: int


async def memory_cache_gets(gets: int, *, hit: bool, awaited: bool) -> LookupOutcome:
    """``gets`` lookups cycling over 1,000 keys that are all cached (hit) or none are (miss)."""
    async with ap.MemoryCache(max_entries=10 * KEYS) as cache:
        for key in range(KEYS):
            assert cache.set_nowait(key, key), "a key was not admitted into a cache with room"
        offset = 0 if hit else KEYS  # keys KEYS..2*KEYS-1 were never set
        found = 0
        if awaited:
            get = cache.get
            for i in range(gets):
                if await get(offset + i % KEYS) is not ap.MISS:
                    found += 1
        else:
            get_nowait = cache.get_nowait
            for i in range(gets):
                if get_nowait(offset + i % KEYS) is not ap.MISS:
                    found += 1
        stats = cache.statistics()
    return LookupOutcome(found, stats.hits, stats.misses)


@pytest.mark.parametrize("api", ["await get", "get_nowait"])
@pytest.mark.parametrize("case", ["hit", "miss"])
def test_memory_cache_get(bench: Bench, case: str, api: str) -> None:
    """100,000 lookups in a MemoryCache (W-TinyLFU, the default policy) of 1,000 keys."""
    gets = bench.size(GETS, QUICK_GETS)
    hit = case == "hit"
    awaited = api == "await get"
    outcomes = bench.run(
        "cache performance: MemoryCache get",
        lambda: memory_cache_gets(gets, hit=hit, awaited=awaited),
        rounds=7,
    )
    for outcome in outcomes:
        assert outcome.found == (gets if hit else 0)
        assert (outcome.hits, outcome.misses) == ((gets, 0) if hit else (0, gets))
    bench.extra_info["gets"] = gets


# -- TieredCache.get_or_load: single flight ----------------------------------------------

CALLERS = 100
LOADED_KEYS = 100
QUICK_LOADED_KEYS = 10
#: What the upstream answers: a 2.6 KB JSON document, about 16 µs to decode.
RESPONSE = json.dumps(
    {
        "items": [
            {"id": i, "name": f"item {i}", "tags": ["a", "b"], "score": i / 2} for i in range(40)
        ]
    }
)


async def _fetch(key: int) -> int:
    """A load: the upstream call (a yield), then decoding its answer (CPU, in this process).

    The decoding is what a stampede multiplies here; the upstream's own cost,
    multiplied as well, is not on this process's clock (see ``loader_calls``).
    """
    await asyncio.sleep(0)
    json.loads(RESPONSE)
    return key * 2


@dataclass(frozen=True, slots=True)
class LoadOutcome:
    answers_ok: bool
    loader_calls: int
    loads: int
    coalesced: int
    hits: int


async def single_flight(keys: int) -> LoadOutcome:
    """For each key in turn, 100 callers at once ask ``get_or_load``: one load answers them."""
    loader_calls = 0

    async def load(key: int) -> int:
        nonlocal loader_calls
        loader_calls += 1
        return await _fetch(key)

    answers_ok = True
    async with ap.TieredCache(ap.MemoryCache(max_entries=10 * LOADED_KEYS)) as cache:
        for key in range(keys):
            answers = await asyncio.gather(
                *(cache.get_or_load(key, functools.partial(load, key)) for _ in range(CALLERS))
            )
            answers_ok = answers_ok and answers == [key * 2] * CALLERS
        stats = cache.statistics()
    return LoadOutcome(answers_ok, loader_calls, stats.loads, stats.coalesced, stats.hits)


async def stampede(keys: int) -> LoadOutcome:
    """The stock pattern: look up, and on a miss load and store: every caller loads."""
    loader_calls = 0

    async def load(key: int) -> int:
        nonlocal loader_calls
        loader_calls += 1
        return await _fetch(key)

    answers_ok = True
    async with ap.MemoryCache(max_entries=10 * LOADED_KEYS) as cache:

        async def get_or_load(key: int) -> int:
            value = cache.get_nowait(key)
            if value is ap.MISS:
                value = await load(key)
                cache.set_nowait(key, value)
            assert isinstance(value, int)
            return value

        for key in range(keys):
            answers = await asyncio.gather(*(get_or_load(key) for _ in range(CALLERS)))
            answers_ok = answers_ok and answers == [key * 2] * CALLERS
        stats = cache.statistics()
    return LoadOutcome(answers_ok, loader_calls, loader_calls, 0, stats.hits)


SINGLE_FLIGHT: dict[str, Callable[[int], Coroutine[Any, Any, LoadOutcome]]] = {
    "TieredCache.get_or_load": single_flight,
    "get, load on miss (stock)": stampede,
}


@pytest.mark.parametrize("contender", list(SINGLE_FLIGHT))
def test_single_flight(bench: Bench, contender: str) -> None:
    """100 keys, one after another, each asked for by 100 concurrent callers on a cold cache."""
    keys = bench.size(LOADED_KEYS, QUICK_LOADED_KEYS)
    run = SINGLE_FLIGHT[contender]
    outcomes = bench.run("cache performance: single flight", lambda: run(keys), rounds=7)
    for outcome in outcomes:
        assert outcome.answers_ok
        if run is single_flight:
            # One load per key; every other caller joined it (or, had it finished, hit).
            assert outcome.loader_calls == outcome.loads == keys
            assert outcome.coalesced + outcome.hits == keys * (CALLERS - 1)
        else:
            # All callers miss before the first load returns: a stampede.
            assert outcome.loader_calls == keys * CALLERS
    bench.extra_info["callers"] = keys * CALLERS
    bench.extra_info["loader_calls"] = outcomes[-1].loader_calls
