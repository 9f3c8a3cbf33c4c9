"""check_leaks: a leak check for tests, failing with the report when something grows.

::

    async def test_handler_does_not_leak() -> None:
        await asyncperf.testing.check_leaks(lambda: handle("hello"), rounds=20)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asyncperf.observability import LeakReport, find_leaks
from asyncperf.observability._leaks import DEFAULT_FRAMES

__all__ = ["check_leaks"]


async def check_leaks(
    coro_factory: Callable[[], Awaitable[object]],
    rounds: int = 20,
    *,
    warmup: int = 2,
    top: int = 10,
    min_growth_fraction: float = 0.8,
    threshold_bytes: float = 1.0,
    frames: int = DEFAULT_FRAMES,
) -> LeakReport:
    """Run :func:`asyncperf.observability.find_leaks`; fail the test when it finds a leak.

    Arguments as :func:`~asyncperf.observability.find_leaks`.

    Returns:
        The report, when nothing grew.

    Raises:
        AssertionError: something grew steadily; the message is ``report.format()``
            (the series, the allocation sites that grew, the tasks left alive).
        TypeError, ValueError: as ``find_leaks``.
    """
    report = await find_leaks(
        coro_factory,
        rounds=rounds,
        warmup=warmup,
        top=top,
        min_growth_fraction=min_growth_fraction,
        threshold_bytes=threshold_bytes,
        frames=frames,
    )
    if report.leaked:
        raise AssertionError(report.format())
    return report
