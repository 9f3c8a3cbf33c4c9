"""``asyncperf bench``: run the benchmark suites against the peers in one process.

Also ``python -m bench`` from a checkout. Every suite registered in
:data:`SUITES` takes part in ``all``; a suite is a module of this package with
a ``SUITE`` object (see :mod:`asyncperf.tools.bench._harness`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

import asyncperf as ap
from asyncperf.tools._command import Command, UsageError
from asyncperf.tools.bench import (
    backpressure,
    batching,
    cache_hit_ratio,
    cache_speed,
    channels,
    compression,
    disk_speed,
    gc_pressure,
    job_memory,
    lock_contention,
    memory_pools,
    metrics_overhead,
    pool_overhead,
    queue_throughput,
    scaling,
    sessions,
)
from asyncperf.tools.bench._harness import (
    Config,
    Harness,
    LoopChoice,
    Plan,
    Result,
    Suite,
    fmt,
    peer_module,
)

__all__ = ["COMMAND", "KNOWN_PEERS", "MIN_REPEAT", "SUITES", "add_arguments", "main", "run"]

SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        pool_overhead.SUITE,
        queue_throughput.SUITE,
        job_memory.SUITE,
        backpressure.SUITE,
        sessions.SUITE,
        cache_speed.SUITE,
        cache_hit_ratio.SUITE,
        disk_speed.SUITE,
        scaling.SUITE,
        gc_pressure.SUITE,
        lock_contention.SUITE,
        channels.SUITE,
        memory_pools.SUITE,
        metrics_overhead.SUITE,
        compression.SUITE,
        batching.SUITE,
    )
}
#: Fewer repetitions than this is a smoke test (``--quick``), not a median worth reporting.
MIN_REPEAT = 5
DEFAULT_REPEAT = 5
#: The peers ``--vs`` accepts (module names; ``async-lru`` is accepted for ``async_lru``).
KNOWN_PEERS = (
    "aiocache",
    "aiojobs",
    "aiometer",
    "anyio",
    "async_lru",
    "cachetools",
    "cashews",
    "diskcache",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``asyncperf bench`` (and ``python -m bench``)."""
    parser.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help=f"suites to run: {', '.join(SUITES)} or all (default: all)",
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop", "both"],
        default="both",
        help="event loop(s) to run on (default: both; uvloop is skipped with a note if missing)",
    )
    parser.add_argument(
        "--vs",
        default=None,
        metavar="PEERS",
        help=f"only these peers, comma-separated ({', '.join(KNOWN_PEERS)}); "
        "the stock asyncio baselines and the floor always run (default: every installed peer)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="jobs per pool run and items per queue run (default 100,000; 2,000 with --quick)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help=f"timed repetitions per case, at least {MIN_REPEAT} "
        f"(default {DEFAULT_REPEAT}; 2 with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and 2 repetitions: a smoke test, not a measurement",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="write results")


def _suite_names(requested: Sequence[str]) -> list[str]:
    if not requested or "all" in requested:
        return list(SUITES)
    unknown = [name for name in requested if name not in SUITES]
    if unknown:
        raise UsageError(
            f"SUITE: unknown suite {', '.join(map(repr, unknown))} "
            f"(choose from {', '.join(SUITES)}, all)"
        )
    return list(dict.fromkeys(requested))  # in the order given, once each


def _peers(vs: str | None) -> frozenset[str] | None:
    if vs is None:
        return None
    peers = frozenset(peer_module(name) for name in vs.split(",") if name.strip())
    unknown = sorted(peers - set(KNOWN_PEERS))
    if not peers or unknown:
        raise UsageError(
            f"--vs: unknown peer {', '.join(map(repr, unknown)) or '(none given)'} "
            f"(choose from {', '.join(KNOWN_PEERS)})"
        )
    return peers


def _config(args: argparse.Namespace, console: Console) -> Config:
    quick: bool = args.quick
    repeat: int = args.repeat if args.repeat is not None else (2 if quick else DEFAULT_REPEAT)
    if repeat < 1 or (not quick and repeat < MIN_REPEAT):
        raise UsageError(f"--repeat must be >= {MIN_REPEAT} (or use --quick for a smoke test)")
    jobs: int = args.jobs if args.jobs is not None else (2_000 if quick else 100_000)
    if jobs < 1:
        raise UsageError("--jobs must be >= 1")
    vs = _peers(args.vs)
    wanted: list[LoopChoice] = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    available = ap.available_loops()
    loops = tuple(loop for loop in wanted if loop in available)
    for loop in wanted:
        if loop not in available:
            console.print(f"[yellow]note[/yellow]: {loop} is not installed; skipped.")
    if not loops:
        raise UsageError("--loop: none of the requested event loops is installed")
    return Config(
        jobs=jobs,
        repeat=repeat,
        quick=quick,
        loops=loops,
        memory_items=1_000 if quick else 10_000,
        queue_depths=(100, 1_000) if quick else (100, 10_000),
        vs=vs,
    )


def _spread_table(h: Harness, names: Sequence[str]) -> Table:
    """Every timed result once more, with its min-max range over the repetitions."""
    table = Table(
        title="all results: median and min-max over the repetitions",
        caption="per item, in each row's unit; the suites' own tables above give the ratios",
    )
    for column in ("suite", "loop", "case", "contender", "median", "min-max", "unit", "reps"):
        table.add_column(column, justify="right" if column in ("median", "reps") else "left")
    for name in names:
        for result in h.results.get(name, []):
            if result.repeat < 2:
                continue  # a single figure (a deterministic hit ratio) has no spread
            low, high = sorted((result.best, result.worst))
            table.add_row(
                name,
                result.loop,
                result.case,
                result.label,
                fmt(result.value),
                f"{fmt(low)}-{fmt(high)}",
                result.unit,
                str(result.repeat),
            )
    return table


def run(args: argparse.Namespace) -> int:
    """Run the suites ``args`` names; print the tables; 0 when the run completed.

    Raises:
        UsageError: a bad option (named in the message), before anything runs.
    """
    console = Console()
    names = _suite_names(args.suites)
    config = _config(args, console)
    h = Harness(config, console)
    console.print(
        f"asyncperf {ap.__version__} benchmarks: suites {', '.join(names)}; "
        f"loops {', '.join(config.loops)}; {config.repeat} repetitions"
        + (f"; peers {', '.join(sorted(config.vs))}" if config.vs is not None else "")
        + (" (--quick: a smoke test, not a measurement)" if config.quick else "")
    )
    plans: list[tuple[Suite, LoopChoice, Plan]] = []
    for name in names:
        suite = SUITES[name]
        h.descriptions[name] = suite.description
        for loop in config.loops:
            plan = suite.plan(config, loop)
            plans.append((suite, loop, plan))
            for text in plan.notes:
                h.note(name, text)
    started = time.perf_counter()
    with h.start_progress(sum(plan.runs(config.repeat) for _, _, plan in plans)):
        for suite, loop, plan in plans:
            results: list[Result] = h.run_cases(suite.name, plan.cases, loop)
            suite.report(h, loop, results)
    elapsed = time.perf_counter() - started
    console.print(_spread_table(h, names))
    bars = h.all_bars()
    missed = [bar for bar in bars if not bar.passed]
    console.print(
        f"bars: {len(bars) - len(missed)} PASS, {len(missed)} MISS; run took {elapsed:.0f} s"
    )
    for bar in missed:
        console.print(
            f"  [bold red]MISS[/bold red] {bar.suite} · {bar.loop} · {bar.case} · "
            f"{bar.contender}: {bar.name} (measured {bar.ratio:.2f}x)"
        )
    if args.json is not None:
        h.write_json(args.json, names, elapsed)
        console.print(f"results written to {args.json}")
    return 0


COMMAND = Command(
    "bench",
    "run the benchmark suites against the peers (medians, ratios, bars)",
    add_arguments,
    run,
)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench``: the same options as ``asyncperf bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="asyncperf benchmarks: the pool, queues and caches against the stock "
        "asyncio patterns and the peers. Figures are medians of the repetitions, each in a "
        "fresh event loop after a warm-up run. The same as `asyncperf bench`.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UsageError as exc:
        parser.error(str(exc))  # exits with status 2


if __name__ == "__main__":
    sys.exit(main())
