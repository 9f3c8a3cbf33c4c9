"""Suite ``disk``: L2 get and set throughput, asyncperf DiskCache against diskcache.

Every contender gets the same keys and values: 500 keys of 1 KB (stored in
the SQLite index) and 64 keys of 100 KB (stored as files by both caches),
all stored before the clock starts, so ``get`` hits and ``set`` replaces.
A third case, ``get miss``, asks the 1 KB cache for keys never stored (the
common L2 lookup behind a memory tier when most requests are new); asyncperf
answers those from its presence filter without a thread hop. Each repetition
uses a fresh temporary directory under /tmp.

Contenders:

- asyncperf ``DiskCache`` with 64 concurrent callers (tasks, each calling in turn);
- ``diskcache.Cache`` through ``asyncio.to_thread`` with 64 concurrent callers
  (the baseline of the bar);
- ``diskcache.Cache`` called directly, in sequence, blocking the loop (a
  reference figure: no concurrency, no thread hop).

Both caches run with the same crash safety: SQLite in WAL mode with
``synchronous=NORMAL`` and no fsync of value files (asyncperf ``sync=False``,
diskcache's defaults), which loses nothing committed when the process dies
but may lose the last writes when the machine loses power.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

from rich.table import Table
from rich.text import Text

from asyncperf.cache._base import MISS
from asyncperf.cache._disk import DiskCache
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

CALLERS = 64
BAR = 2.0


@dataclass(frozen=True, slots=True)
class Workload:
    """One size of value: its keys, values and the operations per repetition."""

    name: str
    keys: list[str]
    values: list[bytes]
    ops: int

    def key(self, index: int) -> str:
        return self.keys[index % len(self.keys)]

    def value(self, index: int) -> bytes:
        return self.values[index % len(self.values)]


def _payload(index: int, size: int) -> bytes:
    """``size`` bytes that do not compress (neither cache compresses by default anyway)."""
    digest = hashlib.sha256(index.to_bytes(8, "big")).digest()
    blocks = [hashlib.sha256(digest + n.to_bytes(4, "big")).digest() for n in range(size // 32 + 1)]
    return b"".join(blocks)[:size]


def _workload(name: str, count: int, size: int, ops: int) -> Workload:
    return Workload(
        name=name,
        keys=[f"{name}:{i}" for i in range(count)],
        values=[_payload(i, size) for i in range(count)],
        ops=ops,
    )


def _workloads(quick: bool) -> tuple[Workload, Workload]:
    small_ops, large_ops = (640, 128) if quick else (4_000, 640)
    return _workload("1 KB", 500, 1_000, small_ops), _workload("100 KB", 64, 100_000, large_ops)


#: The operation of the ``get miss`` case: a get of a key never stored.
MISS_OP = "miss"


def _absent_key(index: int) -> str:
    """A key no workload stores (distinct per operation, as new prompts would be)."""
    return f"absent:{index}"


def _check(got: list[Any], work: Workload, op: str) -> None:
    """Every get found the value stored for its key (none, for a miss); every set succeeded."""
    for index, result in enumerate(got):
        if op == MISS_OP:
            ok = result is MISS or result is None  # asyncperf's MISS, diskcache's None
        else:
            ok = result == (True if op == "set" else work.value(index))
        if not ok:
            raise AssertionError(f"{op} #{index} of {work.name}: unexpected result")


async def _fan_out(work: Workload, call: Callable[[int], Coroutine[Any, Any, Any]]) -> list[Any]:
    """Run ``work.ops`` calls from 64 tasks, each making its share in turn; results in order."""
    results: list[Any] = [None] * work.ops

    async def caller(first: int) -> None:
        for index in range(first, work.ops, CALLERS):
            results[index] = await call(index)

    await asyncio.gather(*(caller(first) for first in range(CALLERS)))
    return results


# -- contenders ----------------------------------------------------------------------


async def bench_asyncperf(work: Workload, op: str) -> float:
    """Seconds for the operations through asyncperf DiskCache, 64 callers at once."""
    directory = Path(tempfile.mkdtemp(prefix="asyncperf-bench-", dir="/tmp"))
    try:
        async with DiskCache(directory / "cache") as cache:
            await cache.set_many(
                (key, value, None) for key, value in zip(work.keys, work.values, strict=True)
            )

            async def get(index: int) -> Any:
                return await cache.get(work.key(index))

            async def miss(index: int) -> Any:
                return await cache.get(_absent_key(index))

            async def set_(index: int) -> Any:
                return await cache.set(work.key(index), work.value(index))

            start = perf_counter()
            results = await _fan_out(work, {"get": get, MISS_OP: miss}.get(op, set_))
            elapsed = perf_counter() - start
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    _check(results, work, op)
    return elapsed


def _diskcache(directory: Path, work: Workload) -> Any:
    import diskcache

    cache = diskcache.Cache(str(directory / "cache"))
    with cache.transact():  # one transaction: setting up is not what is measured
        for key, value in zip(work.keys, work.values, strict=True):
            cache.set(key, value)
    return cache


async def bench_diskcache_thread(work: Workload, op: str) -> float:
    """Seconds for the operations on diskcache through asyncio.to_thread, 64 callers at once."""
    directory = Path(tempfile.mkdtemp(prefix="asyncperf-bench-", dir="/tmp"))
    cache = _diskcache(directory, work)
    try:

        async def get(index: int) -> Any:
            return await asyncio.to_thread(cache.get, work.key(index))

        async def miss(index: int) -> Any:
            return await asyncio.to_thread(cache.get, _absent_key(index))

        async def set_(index: int) -> Any:
            return await asyncio.to_thread(cache.set, work.key(index), work.value(index))

        start = perf_counter()
        results = await _fan_out(work, {"get": get, MISS_OP: miss}.get(op, set_))
        elapsed = perf_counter() - start
    finally:
        cache.close()
        shutil.rmtree(directory, ignore_errors=True)
    _check(results, work, op)
    return elapsed


async def bench_diskcache_direct(work: Workload, op: str) -> float:
    """Seconds for the operations on diskcache called directly, one after another."""
    directory = Path(tempfile.mkdtemp(prefix="asyncperf-bench-", dir="/tmp"))
    cache = _diskcache(directory, work)
    try:
        results: list[Any] = []
        start = perf_counter()
        if op == "get":
            for index in range(work.ops):
                results.append(cache.get(work.key(index)))
        elif op == MISS_OP:
            for index in range(work.ops):
                results.append(cache.get(_absent_key(index)))
        else:
            for index in range(work.ops):
                results.append(cache.set(work.key(index), work.value(index)))
        elapsed = perf_counter() - start
    finally:
        cache.close()
        shutil.rmtree(directory, ignore_errors=True)
    _check(results, work, op)
    return elapsed


Bench = Callable[[Workload, str], Coroutine[Any, Any, float]]


@dataclass(frozen=True, slots=True)
class Contender:
    key: str
    label: str
    bench: Bench
    requires: str | None = None


ASYNCPERF = "asyncperf"
BASELINE = "diskcache_thread"

CONTENDERS = (
    Contender(ASYNCPERF, f"asyncperf DiskCache, {CALLERS} callers", bench_asyncperf),
    Contender(
        BASELINE,
        f"diskcache via to_thread, {CALLERS} callers",
        bench_diskcache_thread,
        requires="diskcache",
    ),
    Contender(
        "diskcache_direct",
        "diskcache direct (sequential) †",
        bench_diskcache_direct,
        requires="diskcache",
    ),
)

#: The cases with a bar: the small values (the large ones are reported only).
BARRED = ("get 1 KB", "set 1 KB")
#: Gets of keys never stored, against the 1 KB cache (reported, no bar).
MISS_CASE = "get miss"


def _maker(
    contender: Contender, work: Workload, op: str
) -> Callable[[], Coroutine[Any, Any, float]]:
    def make() -> Coroutine[Any, Any, float]:
        return contender.bench(work, op)

    return make


def _case(contender: Contender, work: Workload, op: str, case: str) -> Case:
    return Case(
        case=case,
        contender=contender.key,
        label=contender.label,
        make=_maker(contender, work, op),
        items=work.ops,
        unit="µs/op",
        scale=1e6,
    )


def plan(config: Config, loop: LoopChoice) -> Plan:
    """The cases: get and set of each value size, then get miss, for every contender."""
    result = Plan(cases=[])
    available = [
        c
        for c in CONTENDERS
        if c.requires is None or import_peer(c.requires, result.notes, config.vs)
    ]
    small, large = _workloads(config.quick)
    for work in (small, large):
        for op in ("get", "set"):
            for contender in available:
                result.cases.append(_case(contender, work, op, f"{op} {work.name}"))
    for contender in available:
        result.cases.append(_case(contender, small, MISS_OP, MISS_CASE))
    result.notes.append(
        "Crash safety, both caches: SQLite WAL with synchronous=NORMAL, value files "
        "renamed into place without fsync (asyncperf sync=False, diskcache defaults): "
        "safe when the process dies, not when the machine loses power."
    )
    return result


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    """Print the table of one loop: µs per operation, ops/s, speedup over the baseline."""
    table = Table(
        title=f"disk: L2 get/set and get miss, {CALLERS} concurrent callers — loop {loop}",
        caption=f"median of {h.config.repeat} repetitions, each in a fresh loop and a fresh "
        "directory; best = fastest; x thread = diskcache-via-to_thread time / this time; "
        "† sequential calls blocking the loop: a reference, not a contender",
    )
    table.add_column("case")
    table.add_column("contender")
    table.add_column("µs/op", justify="right")
    table.add_column("best", justify="right")
    table.add_column("ops/s", justify="right")
    table.add_column("x thread", justify="right")
    table.add_column("bar")
    cases = list(dict.fromkeys(r.case for r in results))
    for case in cases:
        rows = {r.contender: r for r in results if r.case == case}
        baseline = rows.get(BASELINE)
        for row in rows.values():
            cell = Text("")
            speedup = "-"
            if baseline is not None:
                ratio = baseline.value / row.value
                speedup = f"{ratio:.2f}x"
                if row.contender == ASYNCPERF and case in BARRED:
                    bar: Bar = h.bar(
                        "disk", loop, case, ASYNCPERF, f">= {BAR:g}x to_thread", ratio, ">=", BAR
                    )
                    cell = bar.cell()
                elif row.contender == ASYNCPERF:
                    cell = Text("(no bar)", style="dim")
            table.add_row(
                case,
                row.label,
                fmt(row.value),
                fmt(row.best),
                fmt(1e6 / row.value),
                speedup,
                cell,
            )
        table.add_section()
    h.console.print(table)


SUITE = Suite(
    name="disk",
    description="L2 disk cache get/set (µs per operation) with 64 concurrent callers, 1 KB "
    "values (inline) and 100 KB values (files), and gets of keys never stored: asyncperf "
    "DiskCache against diskcache through asyncio.to_thread (the bar) and called directly.",
    plan=plan,
    report=report,
)
