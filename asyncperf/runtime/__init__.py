"""Layer 7: the runtime: ``Runtime`` wires the queues, pools, cache and supervisor
together behind ``@runtime.handler``.

- ``Runtime``          owns the pools, their queues, the limiters, the cache and the
                       supervisor; ``async with runtime:`` starts and stops them in order
- ``RuntimeConfig``    its settings, from keywords, a TOML file or ``ASYNCPERF_*`` variables
- ``Handler``          what ``@runtime.handler`` returns: the function, same signature
"""

from asyncperf.runtime._config import HandlerSettings, PoolSettings, RuntimeConfig, RuntimeOptions
from asyncperf.runtime._handler import Handler, HandlerStatistics
from asyncperf.runtime._runtime import Runtime, RuntimeStatistics, ShutdownReport

__all__ = [
    "Handler",
    "HandlerSettings",
    "HandlerStatistics",
    "PoolSettings",
    "Runtime",
    "RuntimeConfig",
    "RuntimeOptions",
    "RuntimeStatistics",
    "ShutdownReport",
]
