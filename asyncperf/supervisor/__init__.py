"""Layer 5: the supervisor: sizes worker pools from measured load and restarts crashed workers.

- ``Supervisor``: one coroutine for every watched pool; each tick it reads the
  pool, its queue and limiter and the loop lag, asks the pool's policy, and
  applies the decision; it restarts crashed worker loops with a restart
  intensity limit, and logs every decision as a ``ScalingEvent``.
- ``ScalingPolicy``: the default policy (grow at once on a sustained queue
  delay, shrink after a hold-down); write your own against
  ``asyncperf.abc.ScalingPolicy``.
"""

from asyncperf.abc import ScalingDecision, ScalingReadings
from asyncperf.supervisor._policy import ScalingPolicy
from asyncperf.supervisor._supervisor import (
    EventListener,
    ScalingAction,
    ScalingEvent,
    SupervisedPoolStatistics,
    Supervisor,
    SupervisorStatistics,
)

__all__ = [
    "EventListener",
    "ScalingAction",
    "ScalingDecision",
    "ScalingEvent",
    "ScalingPolicy",
    "ScalingReadings",
    "SupervisedPoolStatistics",
    "Supervisor",
    "SupervisorStatistics",
]
