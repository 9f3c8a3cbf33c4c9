"""Helpers for testing code built on asyncperf: virtual time and invariant checks.

``VirtualEventLoop`` is an asyncio loop whose clock jumps forward whenever every
task is waiting on a timer, so a test that waits ten virtual minutes finishes
at once and always sees the same order of events::

    loop = asyncperf.testing.VirtualEventLoop()
    loop.run_until_complete(main())          # asyncio.sleep(600) returns at once

Components that take ``clock=`` should be given ``loop.clock`` (or
``asyncperf.testing.current_virtual_clock()`` from inside the loop).
"""

from asyncperf.testing._leaks import check_leaks
from asyncperf.testing._leaks_pool import assert_no_leaks
from asyncperf.testing._virtual import VirtualClock, VirtualEventLoop, current_virtual_clock
from asyncperf.testing._waiting import wait_until

__all__ = [
    "VirtualClock",
    "VirtualEventLoop",
    "assert_no_leaks",
    "check_leaks",
    "current_virtual_clock",
    "wait_until",
]
