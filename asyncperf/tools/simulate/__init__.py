"""The session simulator: naive, semaphore and the asyncperf runtime under the same load.

Many chat-like sessions send messages (open loop, exponential think times) to
a handler that calls a simulated upstream (lognormal latency stretched past
its capacity, a rate limit answering 429, a small error rate; Zipf prompts so
a cache has something to do). The same workload, from the same seed, runs
through three strategies, each in its own child process, over four phases
(warm-up, steady at 70 % of capacity, overload at 2.5x, recovery); the result
is a table, a JSON file and a PNG chart, with the bars of DESIGN.md checked.

Use it from the command line (``asyncperf simulate``, see :data:`COMMAND`) or::

    from asyncperf.tools.simulate import SimulationConfig, simulate
    result = simulate(SimulationConfig(sessions=1_000, overload=2.0))
    result["bars"], result["strategies"]["asyncperf"]["classes"]["high"]["overload"]
"""

from asyncperf.tools.simulate._command import COMMAND
from asyncperf.tools.simulate._config import (
    CLASSES,
    PHASES,
    STRATEGIES,
    SimulationConfig,
    option_name,
)
from asyncperf.tools.simulate._measure import OUTCOMES, Recorder, percentile
from asyncperf.tools.simulate._report import print_report, write_chart, write_json
from asyncperf.tools.simulate._run import (
    SCHEMA_VERSION,
    BarCheck,
    Check,
    check_run,
    compute_bars,
    simulate,
)
from asyncperf.tools.simulate._strategies import StrategyRun, run_strategy
from asyncperf.tools.simulate._upstream import (
    Upstream,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamStatistics,
)
from asyncperf.tools.simulate._workload import Phase, Workload, make_workload

__all__ = [
    "CLASSES",
    "COMMAND",
    "OUTCOMES",
    "PHASES",
    "SCHEMA_VERSION",
    "STRATEGIES",
    "BarCheck",
    "Check",
    "Phase",
    "Recorder",
    "SimulationConfig",
    "StrategyRun",
    "Upstream",
    "UpstreamError",
    "UpstreamRateLimited",
    "UpstreamStatistics",
    "Workload",
    "check_run",
    "compute_bars",
    "make_workload",
    "option_name",
    "percentile",
    "print_report",
    "run_strategy",
    "simulate",
    "write_chart",
    "write_json",
]
