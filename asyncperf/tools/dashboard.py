"""``asyncperf dashboard``: serve the live dashboard, with the session simulator behind it.

Without ``--simulate`` the page shows this process only (memory, tasks, the
garbage collector, event-loop lag): the dashboard of a service is served by its
own runtime (``Runtime(dashboard=True)``). With ``--simulate`` the session
simulator's asyncperf strategy runs here, round after round (warm-up, steady,
overload at 2.5x capacity, recovery), so every chart moves at once: the
workers and the adaptive limit follow the load, the queues fill and shed during
the overload, and the supervisor's decisions fill the table.

It prints the page's address and serves until Ctrl-C (or ``--duration``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
from collections.abc import Callable

from rich.console import Console

import asyncperf as ap
from asyncperf.observability._lag import LoopLagMonitor
from asyncperf.observability._metrics import Metrics
from asyncperf.observability._server import DashboardServer, is_loopback
from asyncperf.tools._command import Command, UsageError, add_loop_option, check_loop
from asyncperf.tools.simulate._config import SimulationConfig
from asyncperf.tools.simulate._strategies import run_strategy
from asyncperf.tools.simulate._workload import make_workload

__all__ = ["COMMAND", "DashboardOptions", "add_arguments", "options_from_args", "run", "serve"]


class DashboardOptions:
    """What ``asyncperf dashboard`` serves, checked.

    Args:
        host: the address to bind.
        port: the TCP port (0: any free one).
        token: the secret requests must carry (required off loopback).
        simulate: run the simulator's asyncperf strategy behind the page.
        rounds: simulator rounds to run (None: until stopped).
        duration: seconds to serve before stopping (None: until Ctrl-C).
        config: the simulator's settings (one round).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8321,
        token: str | None = None,
        simulate: bool = False,
        rounds: int | None = None,
        duration: float | None = None,
        config: SimulationConfig | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.simulate = simulate
        self.rounds = rounds
        self.duration = duration
        self.config = config if config is not None else _simulation_config(quick=False)


def _simulation_config(*, quick: bool, seed: int = 1) -> SimulationConfig:
    """One round of the simulator: the asyncperf strategy only, in this process."""
    if quick:
        return SimulationConfig.quick(strategies=("asyncperf",), isolate=False, seed=seed)
    # A longer overload than `asyncperf simulate` runs, so there is time to watch it.
    return SimulationConfig(
        strategies=("asyncperf",), isolate=False, seed=seed, overload_seconds=12.0
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``asyncperf dashboard``."""
    add_loop_option(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1; any other needs --token)",
    )
    parser.add_argument(
        "--port", type=int, default=8321, help="TCP port, 0 for any free one (default: 8321)"
    )
    parser.add_argument(
        "--token",
        default=None,
        help="a secret every request must carry (Authorization: Bearer TOKEN or ?token=TOKEN)",
    )
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="run the session simulator's asyncperf strategy behind the page, round after round",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="with --simulate: rounds to run, then keep serving (default: until stopped)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="with --simulate: tiny rounds of a couple of seconds",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds to serve, then stop (default: until Ctrl-C)",
    )


def options_from_args(args: argparse.Namespace) -> DashboardOptions:
    """The options, checked before anything starts.

    Raises:
        UsageError: an option out of range, or a host reachable from elsewhere
            without ``--token`` (the message names the option).
    """
    if not 0 <= args.port <= 65_535:
        raise UsageError(f"--port must be between 0 and 65535, not {args.port}")
    if args.token is not None and (not args.token or args.token != args.token.strip()):
        raise UsageError("--token must be non-empty, without surrounding spaces")
    if args.token is None and not is_loopback(args.host):
        raise UsageError(
            f"--token is needed to serve on --host {args.host}, which other machines can "
            "reach (or bind 127.0.0.1)"
        )
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        raise UsageError(f"--duration must be > 0 seconds, not {args.duration}")
    if args.rounds is not None and args.rounds < 1:
        raise UsageError(f"--rounds must be >= 1, not {args.rounds}")
    if (args.rounds is not None or args.quick) and not args.simulate:
        raise UsageError("--rounds and --quick go with --simulate")
    return DashboardOptions(
        host=args.host,
        port=args.port,
        token=args.token,
        simulate=args.simulate,
        rounds=args.rounds,
        duration=args.duration,
        config=_simulation_config(quick=args.quick),
    )


async def _simulate(
    options: DashboardOptions, server: DashboardServer, say: Callable[[str], None]
) -> None:
    """Run simulator rounds, pointing the server at each round's runtime as it starts."""

    def show(runtime: ap.Runtime) -> None:
        # The runtime registers its pools, cache and supervisor in its metrics.
        server.metrics = runtime.metrics

    round_number = 0
    while options.rounds is None or round_number < options.rounds:
        round_number += 1
        config = options.config.replace(seed=options.config.seed + round_number - 1)
        workload = make_workload(config)
        say(
            f"round {round_number}: {len(workload):,} messages over "
            f"{workload.duration:.1f} s (overload {config.overload:g}x capacity)"
        )
        run = await run_strategy(config, workload, "asyncperf", on_runtime=show)
        outcomes = ", ".join(f"{name} {count:,}" for name, count in run.result["outcomes"].items())
        say(f"round {round_number} done: {outcomes}")


async def serve(options: DashboardOptions, say: Callable[[str], None] = print) -> int:
    """Serve the dashboard (and the simulator, with ``options.simulate``) until stopped.

    Returns:
        0, once ``options.duration`` has passed (without one it serves until
        cancelled, e.g. by Ctrl-C, also after the last of ``options.rounds``).

    Raises:
        OSError: the address cannot be bound.
    """
    lag = LoopLagMonitor(interval=0.1)
    # The page's data until the simulator's runtime starts: this process only.
    process = Metrics(lag_monitor=lag)
    lag.start()
    deadline = asyncio.timeout(options.duration)
    try:
        async with DashboardServer(
            process, host=options.host, port=options.port, token=options.token
        ) as server:
            url = server.url
            if options.token is not None:
                url += f"?token={options.token}"
            say(f"dashboard: {url}")
            if not options.simulate:
                say("serving this process only; --simulate runs the session simulator behind it")
            if options.duration is None:
                say("press Ctrl-C to stop")
            async with deadline:
                if options.simulate:
                    await _simulate(options, server, say)
                await asyncio.Event().wait()  # serve until cancelled or timed out
    except TimeoutError:
        if not deadline.expired():
            raise  # not our deadline: someone else's timeout
    finally:
        await lag.stop()
        process.close()
    return 0


def run(args: argparse.Namespace) -> int:
    """The ``asyncperf dashboard`` command.

    Returns:
        0 when stopped (Ctrl-C or ``--duration``), 1 when the address cannot be bound.

    Raises:
        UsageError: a bad option (checked before anything starts).
    """
    options = options_from_args(args)
    loop = check_loop(args.loop)
    console = Console()

    def say(text: str) -> None:
        console.print(text, highlight=False)

    try:
        return ap.run(serve(options, say), loop=loop)
    except KeyboardInterrupt:
        say("stopped")
        return 0
    except OSError as exc:  # the address cannot be bound: say so, no traceback
        say(f"cannot serve on {options.host}:{options.port}: {exc.strerror or exc}")
        return 1


COMMAND = Command(
    name="dashboard",
    help="serve the live dashboard (--simulate: with the session simulator behind it)",
    add_arguments=add_arguments,
    run=run,
)
