"""CoDel settings: shedding by time in queue, and adaptive LIFO under a standing queue."""

from __future__ import annotations

from dataclasses import dataclass

from asyncperf._validate import check_number

__all__ = ["CoDel"]


@dataclass(frozen=True, slots=True)
class CoDel:
    """Controlled-delay shedding for a :class:`~asyncperf.PriorityQueue`.

    A queue that has not been empty for ``interval`` seconds has a *standing
    queue*: it is not absorbing a burst, it is overloaded. Then an item that
    has waited longer than ``2 * target`` is dropped (its caller is better
    told at once than served late), and with ``adaptive_lifo`` the newest
    items are served first, so the requests still worth answering are
    answered while the old ones expire. Without a standing queue items may
    wait up to ``interval``, which covers every normal burst. This is the
    queue discipline of Facebook's "Fail at Scale" (CoDel adapted to RPC
    queues). Dropped items are reported with :attr:`DropReason.CODEL`.

    Args:
        target: the acceptable standing delay, seconds (default 5 ms).
        interval: how long a queue may stay non-empty before it counts as
            standing, seconds (default 100 ms). Scale both to the service: for
            an upstream that takes seconds per call, use seconds here.
        adaptive_lifo: serve newest first while the queue is standing.

    Raises:
        ValueError: ``target`` or ``interval`` not positive and finite, or
            ``target`` not below ``interval``.
    """

    target: float = 0.005
    interval: float = 0.100
    adaptive_lifo: bool = True

    def __post_init__(self) -> None:
        check_number("target", self.target)
        check_number("interval", self.interval)
        if self.target >= self.interval:
            raise ValueError("target must be < interval")
