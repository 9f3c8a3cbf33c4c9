"""What each section of ``asyncperf.profile`` costs: ``python -m bench.profile_overhead``.

Two workloads of 100 tasks, each timed with no profile and with one section on
(and with all four), medians of 5 runs in fresh loops, on asyncio and uvloop:

- ``service``: each task computes a little (a 300-step loop) then awaits a
  2 ms sleep, 20 times: what a service waiting on an upstream looks like.
- ``steps``: each task computes a little, allocates a small dict and yields
  with ``sleep(0)``, 200 times: the worst case for the CPU and memory hooks.

The figure is the wall time of the workload inside the profile (writing the
report afterwards is not counted); the ratio is against ``none`` of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import Any

import asyncperf as ap
from asyncperf.loop import LoopChoice

TASKS = 100
SECTIONS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "cpu": {"cpu": True, "memory": False, "tasks": False, "block": False},
    "cpu (10 ms)": {
        "cpu": True,
        "memory": False,
        "tasks": False,
        "block": False,
        "sample_rate": 0.01,
    },
    "memory": {"cpu": False, "memory": True, "tasks": False, "block": False},
    "tasks (a dump every 50 ms)": {
        "cpu": False,
        "memory": False,
        "tasks": True,
        "block": False,
        "task_dump_interval": 0.05,
    },
    "block": {"cpu": False, "memory": False, "tasks": False, "block": True},
    "all four": {"cpu": True, "memory": True, "tasks": True, "block": True},
}


def compute(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


async def service_task(k: int) -> int:
    acc = 0
    for _ in range(20):
        acc += compute(300)
        await asyncio.sleep(0.002)  # a call to an upstream
    return acc + k


async def steps_task(k: int) -> int:
    acc = 0
    for r in range(200):
        acc += compute(60)
        items = [r] * 4  # allocations per step
        record = {"k": k, "r": r, "items": items}
        acc += len(items) + len(record)
        await asyncio.sleep(0)
    return acc


WORKLOADS: dict[str, Callable[[int], Coroutine[Any, Any, int]]] = {
    "service": service_task,
    "steps": steps_task,
}


async def measure_once(
    task: Callable[[int], Coroutine[Any, Any, int]], section: dict[str, Any] | None, out: str
) -> float:
    """Seconds the workload takes with ``section`` of the profiler on (None: no profile)."""

    async def workload() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(task(k) for k in range(TASKS)))
        return time.perf_counter() - started

    if section is None:
        return await workload()
    async with ap.profile(output_dir=out, **section):
        return await workload()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_overhead")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "both"], default="both")
    args = parser.parse_args()
    wanted: list[LoopChoice] = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    loops = [loop for loop in wanted if loop in ap.available_loops()]
    out = tempfile.mkdtemp(prefix="asyncperf-profile-overhead-")
    print(f"profile overhead: {TASKS} tasks, median of {args.repeat} runs, reports in {out}")
    for workload, task in WORKLOADS.items():
        for loop in loops:
            ap.run(measure_once(task, None, out), loop=loop)  # warm-up
            times: dict[str, list[float]] = {name: [] for name in SECTIONS}
            for _ in range(args.repeat):  # interleaved: drift affects every section alike
                for name, section in SECTIONS.items():
                    times[name].append(ap.run(measure_once(task, section, out), loop=loop))
            base = statistics.median(times["none"])
            print(f"{workload} on {loop}:")
            for name, values in times.items():
                median = statistics.median(values)
                print(f"  {name:28} {median * 1000:8.1f} ms  {median / base:6.2f}x")


if __name__ == "__main__":
    main()
