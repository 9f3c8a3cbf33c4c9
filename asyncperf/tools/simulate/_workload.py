"""The workload: every message of a run, generated up front from the seed.

A message is (send time, session, priority class, prompt, payload size) plus
what the upstream will do with it (its base latency, whether it fails). The
whole schedule is drawn before any strategy runs, so every strategy receives
exactly the same messages at the same instants.

Sessions are open loop: a session's next message follows an exponential think
time after its previous one, whether or not the reply came back (an impatient
user types again). The number of active sessions sets each phase's offered
load: ``offered rate = active sessions / mean think time``. Sessions
``0 .. k-1`` are active in a phase that keeps ``k`` of them; a session's draw
that falls in a phase where it is inactive sends nothing (it is away). Since
think times are exponential (memoryless), each phase is a Poisson stream at
exactly its intended rate.
"""

from __future__ import annotations

import array
import bisect
import itertools
import math
import random
from dataclasses import dataclass

from asyncperf.tools.simulate._config import PHASES, SimulationConfig

__all__ = ["Phase", "Workload", "make_workload", "prompt_text"]

# The text every prompt and context is cut from: its content does not matter,
# only its size (what is serialised, held and parsed).
_FILLER = "The quick brown fox jumps over the lazy dog while the session asks again. " * 4_000
_MAX_PAYLOAD = len(_FILLER)


def prompt_text(prompt: int) -> str:
    """The text of a prompt (a short question; the same for every asker)."""
    start = (prompt * 37) % 500
    return f"prompt {prompt}: " + _FILLER[start : start + 80 + prompt % 120]


def context_text(size: int) -> str:
    """``size`` characters of attached context (a document, an earlier answer)."""
    return _FILLER[: min(size, _MAX_PAYLOAD)]


@dataclass(frozen=True, slots=True)
class Phase:
    """One phase of the run: its name, where it starts and ends, and its load."""

    name: str
    start: float
    end: float
    #: Offered load as a multiple of the upstream's capacity.
    load: float
    #: Sessions active in it.
    active_sessions: int

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Workload:
    """The schedule of one run: one entry per message in each list, in send order.

    Attributes:
        send: seconds after the start of the run at which each message is sent.
        session: the session that sends it.
        klass: its priority class (0 high, 1 normal, 2 low).
        prompt: its prompt (Zipf-distributed: popular prompts repeat).
        payload: characters of context attached to it.
        base_latency: the upstream's latency for it when not overloaded.
        fails: whether the upstream answers it with a 5xx-style error.
        phase: the index of the phase it is sent in.
        phases: the phases.
        session_class: the class of each session.
        think_time: mean think time of a session, seconds.
        capacity: the upstream's capacity, messages per second.
    """

    send: list[float]
    session: list[int]
    klass: list[int]
    prompt: list[int]
    payload: list[int]
    base_latency: list[float]
    fails: list[bool]
    phase: list[int]
    phases: list[Phase]
    session_class: list[int]
    think_time: float
    capacity: float

    def __len__(self) -> int:
        return len(self.send)

    @property
    def duration(self) -> float:
        """Seconds from the start of the run to the end of the last phase."""
        return self.phases[-1].end if self.phases else 0.0

    def offered_rate(self, phase: int) -> float:
        """Messages per second sent in a phase, counted from the schedule."""
        seconds = self.phases[phase].seconds
        return self.phase.count(phase) / seconds if seconds > 0 else 0.0


def _zipf_cdf(count: int, exponent: float) -> array.array[float]:
    """Cumulative weights of ranks 1..count under Zipf(exponent) (an array: no float objects)."""
    return array.array(
        "d", itertools.accumulate(1.0 / (rank**exponent) for rank in range(1, count + 1))
    )


def make_workload(config: SimulationConfig) -> Workload:
    """The schedule of every message, drawn from ``config.seed``; the same for every strategy."""
    rng = random.Random(config.seed)
    capacity = config.capacity
    peak = config.peak_load
    think = config.think_time
    phases: list[Phase] = []
    start = 0.0
    for name, seconds, load in config.phase_plan():
        active = min(config.sessions, round(config.sessions * load / peak))
        phases.append(Phase(name, start, start + seconds, load, active))
        start += seconds
    assert [p.name for p in phases] == list(PHASES)
    ends = [p.end for p in phases]
    duration = start

    # Classes: a random assignment, so that the first k sessions carry the mix too.
    weights = list(config.mix)
    session_class = rng.choices(range(len(weights)), weights=weights, k=config.sessions)

    # Send times: each session's chain of exponential think times over the whole run.
    sends: list[tuple[float, int, int]] = []
    rate = 1.0 / think
    for session in range(config.sessions):
        t = rng.expovariate(rate)
        while t < duration:
            index = bisect.bisect_right(ends, t)
            if index < len(phases) and session < phases[index].active_sessions:
                sends.append((t, session, index))
            t += rng.expovariate(rate)
    sends.sort()

    cdf = _zipf_cdf(config.prompts, config.zipf)
    total = cdf[-1]
    mu_latency = math.log(config.latency)
    mu_payload = math.log(config.payload) if config.payload > 0 else 0.0
    count = len(sends)
    prompt: list[int] = []
    payload: list[int] = []
    base_latency: list[float] = []
    fails: list[bool] = []
    for _ in range(count):
        prompt.append(min(bisect.bisect_left(cdf, rng.random() * total), config.prompts - 1))
        if config.payload > 0:
            payload.append(min(int(rng.lognormvariate(mu_payload, 0.5)), _MAX_PAYLOAD))
        else:
            payload.append(0)
        base_latency.append(rng.lognormvariate(mu_latency, config.sigma))
        fails.append(rng.random() < config.error_rate)
    return Workload(
        send=[t for t, _s, _p in sends],
        session=[s for _t, s, _p in sends],
        klass=[session_class[s] for _t, s, _p in sends],
        prompt=prompt,
        payload=payload,
        base_latency=base_latency,
        fails=fails,
        phase=[p for _t, _s, p in sends],
        phases=phases,
        session_class=session_class,
        think_time=think,
        capacity=capacity,
    )
