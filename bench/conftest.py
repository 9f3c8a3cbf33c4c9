"""Shared fixtures of the pytest-benchmark suite in bench/ (see bench/README.md).

Every benchmark takes the ``bench`` fixture: it is parametrized over the event
loops installed here (``uvloop`` when importable, and ``asyncio``), picks the
workload size (the real one when benchmarking, a small one under
``--benchmark-disable``, so that the whole directory doubles as a quick
correctness pass), and runs a workload on a fresh loop per round with
``ap.run(..., loop=...)``.

The round is checked as a test would be: it must run on the loop it was asked
for, leave no task pending, and never call the loop's exception handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

import asyncperf as ap

T = TypeVar("T")
LoopName = Literal["uvloop", "asyncio"]

_KNOWN_LOOPS: tuple[LoopName, ...] = ("uvloop", "asyncio")
#: The loops installed here, best first: ``ap.available_loops()`` (it never lists "auto").
LOOPS: tuple[LoopName, ...] = tuple(loop for loop in _KNOWN_LOOPS if loop in ap.available_loops())


async def _checked(main: Coroutine[Any, Any, T], loop: LoopName) -> T:
    """Await ``main``; fail if it ran on another loop, left tasks behind or the loop logged errors.

    A pool or queue that swallowed an exception shows up in the loop's
    exception handler ("Task exception was never retrieved", a failing drop
    listener, ...): a benchmark whose workload does that measures a bug.
    """
    running = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    running.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        assert ap.loop_name() == loop, f"asked for {loop}, running on {ap.loop_name()}"
        result = await main
        current = asyncio.current_task()
        leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        assert not leftover, f"tasks left pending by the workload: {leftover}"
    finally:
        running.set_exception_handler(None)
    assert not errors, f"the loop's exception handler was called: {errors}"
    return result


@dataclass(frozen=True, slots=True)
class Bench:
    """One benchmark on one loop: its size and a way to time its rounds.

    Attributes:
        benchmark: pytest-benchmark's fixture (``extra_info`` lands in the JSON).
        loop: the event loop every round runs on.
        quick: True under ``--benchmark-disable`` (or when pytest-benchmark
            disabled itself, as under xdist): run once, at the small size.
    """

    benchmark: BenchmarkFixture
    loop: LoopName
    quick: bool

    def size(self, real: int, quick: int) -> int:
        """``real`` when benchmarking, ``quick`` in the correctness pass."""
        return quick if self.quick else real

    @property
    def extra_info(self) -> dict[str, Any]:
        """Figures other than time, stored with the benchmark (``--benchmark-json``)."""
        info: dict[str, Any] = self.benchmark.extra_info
        return info

    def run(
        self,
        group: str,
        main: Callable[[], Coroutine[Any, Any, T]],
        *,
        rounds: int,
        before_round: Callable[[], object] | None = None,
        after_round: Callable[[], None] | None = None,
    ) -> list[T]:
        """Time ``main()`` on a fresh loop per round; return every round's result.

        One warm-up round comes first; under ``--benchmark-disable`` only one
        round runs. The time of a round covers creating and closing its loop
        (a few tens of µs, the same for every contender).

        Args:
            group: the benchmark's name; the table compares the contenders of
                one group on one loop.
            main: makes the round's coroutine (called once per round).
            rounds: timed rounds.
            before_round: called before each round, outside the timed part
                (e.g. ``gc.collect()``, so every round starts from the same heap).
            after_round: called after each round, inside the timed part (for
                measurements that must follow every round, such as memory).

        Returns:
            The results of every round that ran, the warm-up included, so the
            caller can check each of them.
        """
        self.benchmark.group = f"{group} [{self.loop}]"
        results: list[T] = []

        def one_round() -> None:
            results.append(self.run_once(main))
            if after_round is not None:
                after_round()

        def setup() -> None:
            # pedantic() would take a value returned by setup as the round's arguments.
            if before_round is not None:
                before_round()

        # pytest-benchmark ships no type hints for pedantic().
        self.benchmark.pedantic(  # type: ignore[no-untyped-call]
            one_round, rounds=rounds, iterations=1, warmup_rounds=1, setup=setup
        )
        assert results, "the benchmark ran no round"
        return results

    def run_once(self, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """One round of ``main()`` on a fresh loop, checked as in :meth:`run`.

        :meth:`run` times its rounds with this; called directly it times nothing
        (for rounds a check needs beyond the timed ones).
        """
        return ap.run(_checked(main(), self.loop), loop=self.loop)


@pytest.fixture(params=LOOPS)
def bench(request: pytest.FixtureRequest, benchmark: BenchmarkFixture) -> Bench:
    """A :class:`Bench` for each installed event loop."""
    loop: LoopName = request.param
    # pytest-benchmark also disables itself under xdist: one round then, so the small size.
    quick = bool(request.config.getoption("benchmark_disable")) or bool(benchmark.disabled)
    benchmark.extra_info["loop"] = loop
    return Bench(benchmark, loop, quick)
