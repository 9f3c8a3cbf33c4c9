"""Run the benchmark suites: ``python -m bench --suite all --loop both --json FILE``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

import asyncperf as ap
from bench import (
    cache_hit_ratio,
    cache_speed,
    disk_speed,
    job_memory,
    overload,
    pool_overhead,
    queue_throughput,
    scaling,
)
from bench._harness import Config, Harness, LoopChoice, Plan, Suite

SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        pool_overhead.SUITE,
        queue_throughput.SUITE,
        job_memory.SUITE,
        overload.SUITE,
        cache_speed.SUITE,
        cache_hit_ratio.SUITE,
        disk_speed.SUITE,
        scaling.SUITE,
    )
}
MIN_REPEAT = 5


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="asyncperf benchmarks: WorkerPool and PriorityQueue against the stock "
        "asyncio patterns and the peers (aiojobs, aiometer, anyio); the caches against "
        "cachetools, async-lru, aiocache, cashews and diskcache. Figures are medians of "
        "the repetitions, each in a fresh event loop after a warm-up run.",
    )
    parser.add_argument(
        "--suite",
        choices=[*SUITES, "all"],
        default="all",
        help="which suite to run (default: all)",
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop", "both"],
        default="both",
        help="event loop(s) to run on (default: both; uvloop is skipped with a note if missing)",
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
        help=f"timed repetitions per case, at least {MIN_REPEAT} (default 7; 2 with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and 2 repetitions: a smoke test, not a measurement",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="write results")
    return parser


def _config(args: argparse.Namespace, parser: argparse.ArgumentParser, console: Console) -> Config:
    quick: bool = args.quick
    repeat: int = args.repeat if args.repeat is not None else (2 if quick else 7)
    if repeat < 1 or (not quick and repeat < MIN_REPEAT):
        parser.error(f"--repeat must be >= {MIN_REPEAT} (or use --quick for a smoke test)")
    jobs: int = args.jobs if args.jobs is not None else (2_000 if quick else 100_000)
    if jobs < 1:
        parser.error("--jobs must be >= 1")
    wanted: list[LoopChoice] = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    available = ap.available_loops()
    loops = tuple(loop for loop in wanted if loop in available)
    for loop in wanted:
        if loop not in available:
            console.print(f"[yellow]note[/yellow]: {loop} is not installed; skipped.")
    if not loops:
        parser.error("none of the requested event loops is installed")
    return Config(
        jobs=jobs,
        repeat=repeat,
        quick=quick,
        loops=loops,
        memory_items=1_000 if quick else 10_000,
        queue_depths=(100, 1_000) if quick else (100, 10_000),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, run the suites, print the tables; 0 when the run completed."""
    parser = _parser()
    args = parser.parse_args(argv)
    console = Console()
    config = _config(args, parser, console)
    names = list(SUITES) if args.suite == "all" else [args.suite]
    h = Harness(config, console)
    console.print(
        f"asyncperf {ap.__version__} benchmarks: suites {', '.join(names)}; "
        f"loops {', '.join(config.loops)}; {config.repeat} repetitions"
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
            results = h.run_cases(suite.name, plan.cases, loop)
            suite.report(h, loop, results)
    elapsed = time.perf_counter() - started
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


if __name__ == "__main__":
    sys.exit(main())
