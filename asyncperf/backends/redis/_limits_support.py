"""What the Redis limits share: the fail mode, and round trips that keep cancellations."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Literal, TypeVar

from asyncperf.backends.redis._client import translate_errors

__all__ = ["FailMode", "check_fail_mode", "round_trip"]

_T = TypeVar("_T")

#: ``"closed"``: raise :class:`~asyncperf.BackendUnavailable` (the caller is refused);
#: ``"open"``: admit the caller without the limit, and count it as ``failed_open``.
FailMode = Literal["open", "closed"]


def check_fail_mode(fail: object) -> FailMode:
    """``fail`` as a :data:`FailMode`.

    Raises:
        ValueError: it is not ``"open"`` or ``"closed"``.
    """
    if fail not in ("open", "closed"):
        raise ValueError(f"fail must be 'open' or 'closed', not {fail!r}")
    return fail


async def round_trip(what: str, command: Awaitable[_T]) -> _T:
    """Await one Redis command with its errors translated (see ``translate_errors``),
    and never lose a cancellation on the way.

    redis-py sends through ``asyncio.wait_for``, which on Python 3.11 returns the
    result and drops a cancellation that arrives just as the send completes
    (CPython gh-86296, fixed in 3.12). The task's ``cancelling()`` count still
    shows the request, so it is raised here: a cancelled waiter must stop.
    """
    task = asyncio.current_task()
    requested = task.cancelling() if task is not None else 0
    with translate_errors(what):
        result = await command
    if task is not None and task.cancelling() > requested:
        raise asyncio.CancelledError
    return result
