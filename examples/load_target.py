"""A handler to point `asyncperf load` at: a simulated upstream that slows past its capacity."""

# Try it:
#   asyncperf load examples/load_target.py:handle --args examples/load_target.py:prompts \
#       --concurrency 1,4,16,64 --duration 2 --chart load.png
#   asyncperf load examples/load_target.py:handle --rate 500/s,2000/s,5000/s --duration 2
#   asyncperf load examples/load_target.py:bounded --setup examples/load_target.py:runtime \
#       --args examples/load_target.py:prompts --concurrency 1,16,256 --duration 2

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

from rich.console import Console

import asyncperf as ap
from asyncperf.tools.load import print_report, run_load

#: Calls the simulated upstream serves at full speed at once.
CAPACITY = 16
#: Seconds a call of size 1 takes below capacity.
SERVICE_TIME = 0.005
#: Calls in flight beyond which the upstream refuses new ones at once.
REFUSE_ABOVE = 8 * CAPACITY
#: The share of calls that fail with an UpstreamError.
ERROR_RATE = 0.01

_in_flight = 0
_rng = random.Random(1)


class UpstreamError(Exception):
    """The upstream answered with an error."""


class Overloaded(Exception):
    """The upstream refused the call: too many in flight."""


async def handle(prompt: str, size: int = 1) -> str:
    """One call to the upstream: full speed up to CAPACITY calls at once, slower beyond."""
    global _in_flight
    if _in_flight >= REFUSE_ABOVE:
        raise Overloaded(f"{_in_flight} calls in flight")
    _in_flight += 1
    try:
        # Past its capacity the upstream shares itself out: every call takes longer,
        # so throughput stays flat while latency grows (the knee).
        await asyncio.sleep(SERVICE_TIME * size * max(1.0, _in_flight / CAPACITY))
        if _rng.random() < ERROR_RATE:
            raise UpstreamError("503 from the upstream")
        return prompt.upper()
    finally:
        _in_flight -= 1


def prompts() -> Iterator[tuple[str, int]]:
    """The arguments of the calls: (prompt, size), a thousand of them (then they start again)."""
    rng = random.Random(7)
    for _ in range(1_000):
        yield f"prompt {rng.randrange(100)}", rng.choice((1, 1, 1, 2))


# The same upstream behind an asyncperf runtime: at most 16 calls run, the rest queue.
# `asyncperf load` enters it around the run with `--setup examples/load_target.py:runtime`.
runtime = ap.Runtime(max_workers=CAPACITY)


@runtime.handler(timeout=1.0)
async def bounded(prompt: str, size: int = 1) -> str:
    """`handle`, bounded by the runtime's pool."""
    return await handle(prompt, size)


async def main() -> None:
    """A quick sweep through the public API: the knee shows past CAPACITY."""
    report = await run_load(
        handle, concurrency=(1, 4, 16, 64), duration=0.2, warmup=0.05, arguments=prompts
    )
    print_report(report, Console(width=120))
    assert report.consistent, "every call started ends in exactly one outcome"


if __name__ == "__main__":
    ap.run(main())
