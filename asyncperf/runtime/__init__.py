"""Layer 7: the runtime: ``Runtime`` wires the queues, pools, cache and supervisor
together behind ``@runtime.handler``.

- ``Runtime``          owns the pools, their queues, the limiters, the cache and the
                       supervisor; ``async with runtime:`` starts and stops them in order
- ``RuntimeConfig``    its settings, from keywords, a TOML file or ``ASYNCPERF_*`` variables
- ``Handler``          what ``@runtime.handler`` returns: the function, same signature
- ``Backend``          where the shared parts (limits, leased queues, a cache level)
                       live: in process, or on Redis (``backend="redis://..."``)
"""

from asyncperf.runtime._backend import Backend, SharedCacheLevel
from asyncperf.runtime._config import HandlerSettings, PoolSettings, RuntimeConfig, RuntimeOptions
from asyncperf.runtime._handler import Handler, HandlerStatistics
from asyncperf.runtime._runtime import Runtime, RuntimeStatistics, ShutdownReport

__all__ = [
    "Backend",
    "Handler",
    "HandlerSettings",
    "HandlerStatistics",
    "PoolSettings",
    "Runtime",
    "RuntimeConfig",
    "RuntimeOptions",
    "RuntimeStatistics",
    "SharedCacheLevel",
    "ShutdownReport",
]
