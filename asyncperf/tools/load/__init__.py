"""``asyncperf load``: load-test an async callable, a concurrency sweep or fixed rates.

    from asyncperf.tools.load import run_load, print_report

    report = await run_load(handle, concurrency=(1, 8, 64), duration=5.0, arguments=prompts)
    print_report(report, rich.console.Console())
    report.knee            # the step after which p99 grew faster than throughput, or None
    report.to_json()       # the whole report as JSON text

Each step reports calls started, their outcomes (ok, errors by type, timed out,
cancelled, unfinished at the end of the step; skipped for fixed rates),
throughput and latency percentiles. See :mod:`asyncperf.tools.load._run` for how
calls are started and counted.
"""

from asyncperf.tools.load._command import COMMAND
from asyncperf.tools.load._report import print_report, write_chart, write_json
from asyncperf.tools.load._results import (
    PERCENTILES,
    Knee,
    LatencySummary,
    LoadReport,
    Mode,
    StepResult,
    find_knee,
)
from asyncperf.tools.load._run import DEFAULT_CONCURRENCY, DEFAULT_MAX_IN_FLIGHT, run_load
from asyncperf.tools.load._target import (
    ArgumentsError,
    ArgumentSource,
    Call,
    FileArguments,
    GeneratorArguments,
    NoArguments,
    Target,
    TargetError,
    as_call,
    load_object,
    resolve_setup,
    resolve_target,
)

__all__ = [
    "COMMAND",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_IN_FLIGHT",
    "PERCENTILES",
    "ArgumentSource",
    "ArgumentsError",
    "Call",
    "FileArguments",
    "GeneratorArguments",
    "Knee",
    "LatencySummary",
    "LoadReport",
    "Mode",
    "NoArguments",
    "StepResult",
    "Target",
    "TargetError",
    "as_call",
    "find_knee",
    "load_object",
    "print_report",
    "resolve_setup",
    "resolve_target",
    "run_load",
    "write_chart",
    "write_json",
]
