"""Suite ``hit_ratio``: the eviction policies' hit ratios on Zipf workloads and real traces.

Each policy is driven directly as a cache would drive it (``key in policy``: a
hit calls ``access``; otherwise ``miss`` then ``insert``), so the figure is the
policy's alone. Everything is seeded and the keys are ints (their hashes are the
same in every process), so a figure does not change between runs nor between
event loops: each case runs once, on the first loop asked for.

1. Zipf workloads: 100,000 keys, 1,000,000 requests, alpha 0.6, 0.8 and 1.0, and an
   alpha 0.8 workload with a quarter of its requests replaced by bursts of one-off
   keys (a scan); caches of 1% and 10% of the keys.
2. The real traces of ``../shared/traces`` (or ``$ASYNCPERF_TRACES``) at the two
   sizes of the README there, next to its reference figures for an exact LRU and
   theine's W-TinyLFU.

Bars (DESIGN.md): W-TinyLFU ≥ LRU on every Zipf workload, ≥ LRU + 5 points on the
scan-polluted one, and on every trace ≥ max(LRU of this run, theine) - 2 points.
"""

from __future__ import annotations

import array
import gzip
import itertools
import lzma
import os
import random
import sys
from collections.abc import Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

from rich.table import Table
from rich.text import Text

from asyncperf.cache._policies import POLICIES, EvictionPolicy, TinyLFUPolicy
from asyncperf.tools.bench._harness import Case, Config, Harness, LoopChoice, Plan, Result, Suite

__all__ = ["SUITE"]

NAME: Final = "hit_ratio"
POLICY_ORDER: Final = ("lru", "fifo", "lfu", "sieve", "tinylfu")
SEED: Final = 20_261_126

ZIPF_KEYS: Final = 100_000
ZIPF_REQUESTS: Final = 1_000_000
QUICK_ZIPF_KEYS: Final = 10_000
QUICK_ZIPF_REQUESTS: Final = 50_000
ZIPF_ALPHAS: Final = (0.6, 0.8, 1.0)
#: The scan-polluted workload: this share of the requests are one-off keys, in bursts.
SCAN_ALPHA: Final = 0.8
SCAN_SHARE: Final = 0.25
SCAN_BURST: Final = 500
#: Cache sizes as shares of the keys.
ZIPF_SIZES: Final = (0.01, 0.10)
#: Bars: W-TinyLFU / LRU on Zipf, W-TinyLFU - LRU in points when polluted, and on
#: traces W-TinyLFU - max(LRU, theine) in points.
ZIPF_BAR: Final = 1.0
SCAN_BAR: Final = 5.0
TRACE_BAR: Final = -2.0

#: From ``../shared/traces/README.md`` (measured there on 2026-11-26, one run each):
#: (trace, cache size) -> (exact LRU %, theine 2.0 W-TinyLFU %). The sizes are 1% and
#: 10% of the distinct keys, at least 50 and 100.
REFERENCE: Final[dict[tuple[str, int], tuple[float, float]]] = {
    ("cache2k-web07.trace.xz", 204): (39.15, 41.49),
    ("cache2k-web07.trace.xz", 2048): (55.66, 54.46),
    ("cache2k-web12.trace.xz", 137): (39.70, 38.95),
    ("cache2k-web12.trace.xz", 1375): (68.48, 69.63),
    ("corda-vaultservice.trace.gz", 904): (33.33, 28.75),
    ("corda-vaultservice.trace.gz", 9046): (33.33, 33.33),
    ("lirs-2_pools.trace.gz", 99): (21.77, 46.84),
    ("lirs-2_pools.trace.gz", 993): (54.38, 54.24),
    ("lirs-cpp.trace.gz", 50): (9.26, 54.21),
    ("lirs-cpp.trace.gz", 122): (75.72, 77.86),
    ("lirs-cs.trace.gz", 50): (1.83, 1.61),
    ("lirs-cs.trace.gz", 140): (1.83, 7.34),
    ("lirs-gli.trace.gz", 50): (0.91, 0.78),
    ("lirs-gli.trace.gz", 252): (0.91, 13.53),
    ("lirs-loop.trace.gz", 50): (0.00, 1.03),
    ("lirs-loop.trace.gz", 101): (0.00, 5.70),
    ("lirs-multi1.trace.gz", 50): (2.43, 29.34),
    ("lirs-multi1.trace.gz", 260): (43.42, 49.22),
    ("lirs-multi2.trace.gz", 56): (3.51, 19.57),
    ("lirs-multi2.trace.gz", 568): (36.92, 51.39),
    ("lirs-multi3.trace.gz", 74): (5.14, 22.67),
    ("lirs-multi3.trace.gz", 745): (35.49, 47.10),
    ("lirs-ps.trace.gz", 50): (7.37, 13.86),
    ("lirs-ps.trace.gz", 308): (16.33, 52.86),
    ("lirs-scan.trace.gz", 50): (0.00, 0.00),
    ("lirs-scan.trace.gz", 200): (0.00, 7.15),
    ("lirs-sprite.trace.gz", 70): (16.33, 21.65),
    ("lirs-sprite.trace.gz", 707): (86.48, 80.34),
    ("lirs-zigzag.trace.gz", 50): (2.36, 0.96),
    ("lirs-zigzag.trace.gz", 200): (9.57, 6.22),
}
#: With --quick, only the short traces run (in full: the bars still mean something).
QUICK_TRACES: Final = ("lirs-cpp.trace.gz", "lirs-cs.trace.gz", "lirs-gli.trace.gz")


# -- workloads -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Workload:
    """A request stream and the cache sizes it is run at."""

    name: str
    kind: str  # "zipf", "scan" or "trace"
    sizes: tuple[int, ...]
    load: Callable[[], Sequence[Hashable]]
    note: str = ""


def zipf(keys: int, alpha: float, requests: int, seed: int) -> list[int]:
    """``requests`` draws from keys 0..keys-1, the key of rank r with weight 1/r**alpha
    (ranks assigned to keys at random, so popularity is not ordered by key)."""
    rng = random.Random(seed)
    ranked = list(range(keys))
    rng.shuffle(ranked)
    weights = list(itertools.accumulate(1.0 / rank**alpha for rank in range(1, keys + 1)))
    return rng.choices(ranked, cum_weights=weights, k=requests)


def scan_polluted(keys: int, requests: int, seed: int) -> list[int]:
    """A Zipf (alpha 0.8) stream with bursts of never-repeated keys making up SCAN_SHARE of it."""
    rng = random.Random(seed + 1)
    bursts = round(requests * SCAN_SHARE / SCAN_BURST)
    base = zipf(keys, SCAN_ALPHA, requests - bursts * SCAN_BURST, seed)
    cuts = sorted(rng.sample(range(len(base) + 1), bursts))
    stream: list[int] = []
    fresh = keys  # one-off keys never collide with the Zipf ones
    previous = 0
    for cut in cuts:
        stream.extend(base[previous:cut])
        stream.extend(range(fresh, fresh + SCAN_BURST))
        fresh += SCAN_BURST
        previous = cut
    stream.extend(base[previous:])
    return stream


def traces_dir() -> Path:
    """``$ASYNCPERF_TRACES``, else ``shared/traces`` next to the repository."""
    override = os.environ.get("ASYNCPERF_TRACES")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[3].parent / "shared" / "traces"


def _ints(data: bytes, typecode: str) -> list[int]:
    """Big-endian signed ints of ``typecode``'s size."""
    values = array.array(typecode)
    usable = len(data) - len(data) % values.itemsize
    values.frombytes(data[:usable])
    if sys.byteorder == "little":
        values.byteswap()
    return values.tolist()


def load_trace(path: Path) -> list[int]:
    """The keys of a trace file (the formats of the traces README)."""
    name = path.name
    if name.startswith("lirs-"):
        with gzip.open(path, "rt", encoding="ascii") as file:
            return [int(token) for token in file.read().split() if token != "*"]
    if name.startswith("cache2k-"):
        with lzma.open(path) as file:
            return _ints(file.read(), "i")
    with gzip.open(path) as file:
        return _ints(file.read(), "q")


#: The stream of the workload being run: cases of one workload are planned together.
_loaded: dict[str, Sequence[Hashable]] = {}


def _stream(workload: Workload) -> Sequence[Hashable]:
    if workload.name not in _loaded:
        _loaded.clear()
        _loaded[workload.name] = workload.load()
    return _loaded[workload.name]


def zipf_workloads(config: Config) -> list[Workload]:
    keys = QUICK_ZIPF_KEYS if config.quick else ZIPF_KEYS
    requests = QUICK_ZIPF_REQUESTS if config.quick else ZIPF_REQUESTS
    sizes = tuple(round(share * keys) for share in ZIPF_SIZES)
    workloads = [
        Workload(
            f"zipf a={alpha:g}",
            "zipf",
            sizes,
            partial(zipf, keys, alpha, requests, SEED),
            f"{keys:,} keys, {requests:,} requests",
        )
        for alpha in ZIPF_ALPHAS
    ]
    workloads.append(
        Workload(
            f"zipf a={SCAN_ALPHA:g} + scans",
            "scan",
            sizes,
            partial(scan_polluted, keys, requests, SEED),
            f"{keys:,} keys, {requests:,} requests, {SCAN_SHARE:.0%} of them one-off keys "
            f"in bursts of {SCAN_BURST}",
        )
    )
    return workloads


def trace_workloads(config: Config, notes: list[str]) -> list[Workload]:
    directory = traces_dir()
    if not directory.is_dir():
        notes.append(
            f"no traces at {directory} (set ASYNCPERF_TRACES to their directory); "
            "the real-trace part is skipped."
        )
        return []
    sizes: dict[str, list[int]] = {}
    for trace, size in REFERENCE:
        sizes.setdefault(trace, []).append(size)
    workloads = []
    for trace, trace_sizes in sizes.items():
        if config.quick and trace not in QUICK_TRACES:
            continue
        path = directory / trace
        if not path.is_file():
            notes.append(f"trace {trace} is missing from {directory}; skipped.")
            continue
        workloads.append(Workload(trace, "trace", tuple(trace_sizes), partial(load_trace, path)))
    if config.quick:
        notes.append(f"--quick: only the short traces ({', '.join(QUICK_TRACES)}).")
    return workloads


# -- the simulation ----------------------------------------------------------------------


def make(name: str, size: int) -> EvictionPolicy:
    """A policy bounded at ``size`` entries (W-TinyLFU with a fixed seed)."""
    if name == "tinylfu":
        return TinyLFUPolicy(size, seed=SEED)
    return POLICIES[name](size)


def simulate(policy: EvictionPolicy, stream: Sequence[Hashable]) -> int:
    """Requests that hit: a hit calls ``access``; a miss calls ``miss`` and ``insert``."""
    hits = 0
    contains, access = policy.__contains__, policy.access
    miss, insert = policy.miss, policy.insert
    for key in stream:
        if contains(key):
            access(key)
            hits += 1
        else:
            miss(key)
            insert(key, 1)
    return hits


def _maker(workload: Workload, policy: str, size: int) -> Callable[[], Coroutine[Any, Any, float]]:
    figure: list[float] = []  # computed by the first (warm-up) run; the same every time

    async def measure() -> float:
        if not figure:
            stream = _stream(workload)
            figure.append(100.0 * simulate(make(policy, size), stream) / len(stream))
        return figure[0]

    return measure


def case_name(workload: Workload, size: int) -> str:
    return f"{workload.name} @{size}"


def plan(config: Config, loop: LoopChoice) -> Plan:
    """One case per workload, size and policy, on the first loop only."""
    if loop != config.loops[0]:
        return Plan(cases=[])
    result = Plan(cases=[])
    result.notes.append(
        f"hit ratios are deterministic (seed {SEED}, int keys) and loop-independent: each "
        f"case runs once, on {config.loops[0]} (the repetition reuses the warm-up's figure)."
    )
    for workload in zipf_workloads(config) + trace_workloads(config, result.notes):
        for size in workload.sizes:
            for policy in POLICY_ORDER:
                result.cases.append(
                    Case(
                        case=case_name(workload, size),
                        contender=policy,
                        label=policy,
                        make=_maker(workload, policy, size),
                        items=1,
                        unit="%",
                        scale=1.0,
                        raw_unit="%",
                        max_repeat=1,
                        note=workload.note,
                    )
                )
    return result


# -- report -------------------------------------------------------------------------------


def _short(trace: str) -> str:
    return trace.removesuffix(".gz").removesuffix(".xz").removesuffix(".trace")


def _verdict(passed: bool, text: str) -> Text:
    style = "bold green" if passed else "bold red"
    return Text.assemble(("PASS" if passed else "MISS", style), f" {text}")


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    """Print the Zipf and the trace tables, and check the bars."""
    if not results:
        return
    loop_name = results[0].loop
    figures = {(r.case, r.contender): r.value for r in results}
    cases = list(dict.fromkeys(r.case for r in results))

    zipf_table = Table(
        title=f"hit_ratio: Zipf workloads, hit ratio % (deterministic; run on {loop_name})",
        caption="bar: tinylfu / lru >= 1 on Zipf; tinylfu - lru >= 5 points with scans",
    )
    trace_table = Table(
        title=f"hit_ratio: real traces, hit ratio % (run on {loop_name})",
        caption="theine = W-TinyLFU of theine 2.0, from ../shared/traces/README.md (whose "
        "exact-LRU figures lru matches); bar: tinylfu - max(lru, theine) >= -2 points",
    )
    for table in (zipf_table, trace_table):
        table.add_column("workload", no_wrap=True)
        table.add_column("size", justify="right")
        for policy in POLICY_ORDER:
            table.add_column(policy, justify="right")
    trace_table.add_column("theine", justify="right")
    for table in (zipf_table, trace_table):
        table.add_column("bar", no_wrap=True)

    for case in cases:
        workload, _, size_text = case.rpartition(" @")
        size = int(size_text)
        row = [f"{figures[(case, policy)]:.2f}" for policy in POLICY_ORDER]
        lru, tiny = figures[(case, "lru")], figures[(case, "tinylfu")]
        reference = REFERENCE.get((workload, size))
        if reference is not None:
            ref_lru, theine = reference
            target = max(lru, theine)
            bar = h.bar(
                NAME,
                loop_name,
                case,
                "tinylfu",
                "tinylfu - max(lru, theine) >= -2 points",
                tiny - target,
                ">=",
                TRACE_BAR,
            )
            if abs(lru - ref_lru) > 0.01:  # the same exact LRU must give the same figure
                h.note(NAME, f"{case}: LRU {lru:.2f}% here, {ref_lru:.2f}% in the README.")
            cell = _verdict(bar.passed, f"{tiny - target:+.2f}")
            trace_table.add_row(_short(workload), str(size), *row, f"{theine:.2f}", cell)
        elif "scans" in workload:
            bar = h.bar(
                NAME,
                loop_name,
                case,
                "tinylfu",
                "tinylfu - lru >= 5 points",
                tiny - lru,
                ">=",
                SCAN_BAR,
            )
            zipf_table.add_row(
                workload, str(size), *row, _verdict(bar.passed, f"{tiny - lru:+.2f}")
            )
        else:
            ratio = tiny / lru if lru else float("inf")
            bar = h.bar(NAME, loop_name, case, "tinylfu", "tinylfu >= lru", ratio, ">=", ZIPF_BAR)
            zipf_table.add_row(workload, str(size), *row, _verdict(bar.passed, f"{ratio:.2f}x"))
    if zipf_table.row_count:
        h.console.print(zipf_table)
    if trace_table.row_count:
        h.console.print(trace_table)


SUITE = Suite(
    name=NAME,
    description="Eviction policies' hit ratios (%) on Zipf workloads (alpha 0.6/0.8/1.0, "
    "and alpha 0.8 polluted by scans; caches of 1% and 10% of the keys) and on the real traces of "
    "../shared/traces at the README's sizes, against its exact-LRU and theine W-TinyLFU "
    "figures. Deterministic: run once, on the first loop.",
    plan=plan,
    report=report,
)
