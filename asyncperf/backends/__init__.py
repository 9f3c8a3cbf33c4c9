"""Layer 9: shared backends behind the same small protocols as the in-process defaults.

The in-process implementations (layers 1-3) stay the default; ``asyncperf.backends.redis``
(the extra ``asyncperf[redis]``) runs the queue, the limits and a cache tier on a shared
Redis so several processes or hosts work as one.

The protocols are in :mod:`asyncperf.abc` (``LeasedQueue``, ``SemaphoreBackend``,
``RateLimiterBackend``); the in-process implementations of them that do not
already exist in the lower layers live here. :func:`open_backend` turns a runtime's
``backend`` setting (``"local"`` or a Redis URL) into a :class:`LocalBackend` or a
:class:`RedisBackend`, the factories of a runtime's shared parts.
"""

from asyncperf.backends._factory import LocalBackend, RedisBackend, open_backend
from asyncperf.backends._local import LocalRateLimiter, LocalSemaphore, SlotAcquire
from asyncperf.backends._local_queue import LocalLeasedQueue

__all__ = [
    "LocalBackend",
    "LocalLeasedQueue",
    "LocalRateLimiter",
    "LocalSemaphore",
    "RedisBackend",
    "SlotAcquire",
    "open_backend",
]
