"""The child process that runs one strategy: ``python -m asyncperf.tools.simulate._child``.

Reads the config (JSON) on stdin, runs the strategy named by its first argument
on a fresh event loop, prints ``progress SETTLED TOTAL`` lines on stdout while
it runs, and writes the result (JSON) to the file named by its second
argument. Its RSS, CPU time and tasks are its own: nothing else runs in it.
Only asyncperf and the simulator are imported (not rich, not matplotlib), so
the baseline RSS is the same for every strategy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Run the strategy ``argv[0]``, writing its result to ``argv[1]``; returns the exit status."""
    if len(argv) != 2:
        print(
            "usage: python -m asyncperf.tools.simulate._child STRATEGY RESULT_FILE", file=sys.stderr
        )
        return 2
    strategy, output = argv
    import asyncperf as ap
    from asyncperf.tools.simulate._config import SimulationConfig
    from asyncperf.tools.simulate._strategies import run_strategy
    from asyncperf.tools.simulate._workload import make_workload

    config = SimulationConfig.from_json(json.loads(sys.stdin.read()))
    workload = make_workload(config)

    def progress(settled: int, total: int) -> None:
        print(f"progress {settled} {total}", flush=True)

    run = ap.run(run_strategy(config, workload, strategy, progress=progress), loop=config.loop)
    Path(output).write_text(json.dumps(run.result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
