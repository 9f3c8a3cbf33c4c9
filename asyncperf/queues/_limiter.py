"""AdaptiveLimiter: a concurrency limit that follows measured latency (Vegas, Gradient2, AIMD)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Literal, NamedTuple

from asyncperf._errors import WouldBlock
from asyncperf._validate import check_int
from asyncperf.abc import Clock
from asyncperf.loop import SystemClock

__all__ = [
    "AdaptiveLimiter",
    "LimitChange",
    "LimitListener",
    "LimiterAcquire",
    "LimiterAlgorithm",
    "LimiterStatistics",
    "LimiterToken",
]

LimiterAlgorithm = Literal["vegas", "gradient2", "aimd"]
#: Called with the new limit each time it changes.
LimitListener = Callable[[int], None]

_ALGORITHMS = ("vegas", "gradient2", "aimd")
_MIN_WINDOW = 10
_HISTORY = 64
# How much earlier than a change of the limit a recorded job may seem to have
# started and still count as started after it (float rounding of now - latency).
_SLACK = 1e-6
# Gradient2 never cuts the limit by more than half in one window.
_MIN_GRADIENT = 0.5
# Gradient2 takes a plain mean of the first windows before its EMA starts.
_WARMUP_WINDOWS = 10

_logger = logging.getLogger("asyncperf")


class LimitChange(NamedTuple):
    """One change of an :class:`AdaptiveLimiter`'s limit, as kept in its history."""

    #: When it changed, on the limiter's clock.
    time: float
    #: The new limit.
    limit: int
    #: Why, e.g. ``"vegas: queue 0.4 < alpha 3.6"``.
    reason: str


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    """A snapshot of an :class:`AdaptiveLimiter`.

    ``samples`` counts every latency recorded (through tokens or ``record()``),
    ``windows`` the decisions taken (one per full window of samples, whether or
    not it moved the limit), ``drops`` the samples recorded as dropped, and
    ``history`` the last 64 changes of the limit, oldest first.
    """

    algorithm: LimiterAlgorithm
    limit: int
    min_limit: int
    max_limit: int
    in_flight: int
    samples: int
    windows: int
    drops: int
    waiting: int
    history: tuple[LimitChange, ...]


class _Window(NamedTuple):
    """What one window of samples measured; the input of every decision."""

    #: Samples in the window (dropped or not).
    samples: int
    #: Mean latency of the samples not dropped; None if every sample was dropped.
    mean: float | None
    #: The largest latency of a sample not dropped (0.0 if none).
    max_latency: float
    #: The most calls in flight that any sample saw when it started.
    max_in_flight: int
    #: Samples recorded as dropped.
    drops: int


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def _log10(limit: float) -> float:
    # Vegas' thresholds scale with log10(limit), but never below 1 so that
    # small limits still move (Netflix's VegasLimit does the same).
    return max(1.0, math.log10(limit))


def _check_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return float(value)


def _setting(tuning: Mapping[str, float | None], key: str) -> float:
    value = tuning[key]
    assert value is not None  # only settings whose default is None may be None
    return value


def _is_exception_tuple(value: object) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(kind, type) and issubclass(kind, BaseException) for kind in value
    )


class _Algorithm:
    """How one algorithm turns a window into a new limit estimate."""

    __slots__ = ("min_limit",)

    name: ClassVar[LimiterAlgorithm]
    defaults: ClassVar[Mapping[str, float | None]]

    def __init__(self, min_limit: int, tuning: Mapping[str, float | None]) -> None:
        self.min_limit = min_limit

    def decide(
        self, estimate: float, limit: int, window: _Window, app_limited: bool
    ) -> tuple[float, str] | None:
        """The new estimate and why, or None to leave the limit where it is."""
        raise NotImplementedError

    def probe(self, estimate: float, limit: int, window: _Window) -> tuple[float, str] | None:
        """After a decision: a lower estimate to hold for one window, or None (Vegas only)."""
        return None

    def cancel_probe(self) -> None:
        """The limit was set by hand: forget any probe in progress."""


class _Vegas(_Algorithm):
    """TCP Vegas for concurrency: the queue the latency reveals, kept between alpha and beta."""

    __slots__ = (
        "alpha",
        "beta",
        "noload",
        "probe_fraction",
        "probe_multiplier",
        "probing",
        "saved",
        "since_probe",
        "smoothing",
        "threshold",
    )

    name: ClassVar[LimiterAlgorithm] = "vegas"
    defaults: ClassVar[Mapping[str, float | None]] = {
        "alpha": 3.0,
        "beta": 6.0,
        "threshold": 1.0,
        "smoothing": 1.0,
        "probe_multiplier": 30.0,
        "probe_fraction": 0.5,
    }

    def __init__(self, min_limit: int, tuning: Mapping[str, float | None]) -> None:
        super().__init__(min_limit, tuning)
        self.alpha = _setting(tuning, "alpha")
        self.beta = _setting(tuning, "beta")
        self.threshold = _setting(tuning, "threshold")
        self.smoothing = _setting(tuning, "smoothing")
        self.probe_multiplier = _setting(tuning, "probe_multiplier")
        self.probe_fraction = _setting(tuning, "probe_fraction")
        if self.alpha <= 0:
            raise ValueError("alpha must be > 0")
        if self.beta <= self.alpha:
            raise ValueError("beta must be > alpha")
        if not 0 <= self.threshold < self.alpha:
            raise ValueError("threshold must be >= 0 and < alpha")
        if not 0 < self.smoothing <= 1:
            raise ValueError("smoothing must be > 0 and <= 1")
        if not 1 <= self.probe_multiplier < math.inf:
            raise ValueError("probe_multiplier must be >= 1 and finite")
        if not 0 < self.probe_fraction < 1:
            raise ValueError("probe_fraction must be > 0 and < 1")
        #: The no-load latency: the lowest window mean seen since the last probe.
        self.noload: float | None = None
        self.since_probe = 0
        #: Whether the window being gathered is a probe, and the estimate to go back to.
        self.probing = False
        self.saved = 0.0

    def decide(
        self, estimate: float, limit: int, window: _Window, app_limited: bool
    ) -> tuple[float, str] | None:
        if self.probing:
            return self._finish_probe(window)
        self.since_probe += window.samples
        return self._step(estimate, window, app_limited)

    def _step(
        self, estimate: float, window: _Window, app_limited: bool
    ) -> tuple[float, str] | None:
        lg = _log10(estimate)
        rtt = window.mean
        if window.drops:
            new = estimate - lg
            reason = f"vegas: {window.drops} dropped"
            if rtt is not None and rtt > 0 and (self.noload is None or rtt < self.noload):
                self.noload = rtt
        elif rtt is None or rtt <= 0:
            return None  # a window of instant calls says nothing about queueing
        elif self.noload is None or rtt < self.noload:
            # A new minimum is a new baseline, not a sign of queueing.
            self.noload = rtt
            return None
        elif app_limited:
            # Too few calls in flight for the latency to say anything about the
            # limit: neither grow (the guard) nor shrink on noise.
            return None
        else:
            queue = estimate * (1.0 - self.noload / rtt)
            alpha, beta = self.alpha * lg, self.beta * lg
            threshold = self.threshold * lg
            if queue <= threshold:
                # No queue at all: grow fast, as TCP's slow start does.
                new = estimate + beta
                reason = f"vegas: queue {queue:.1f} <= threshold {threshold:.1f}"
            elif queue < alpha:
                new, reason = estimate + lg, f"vegas: queue {queue:.1f} < alpha {alpha:.1f}"
            elif queue > beta:
                new, reason = estimate - lg, f"vegas: queue {queue:.1f} > beta {beta:.1f}"
            else:
                return None
        return (1.0 - self.smoothing) * estimate + self.smoothing * new, reason

    def probe(self, estimate: float, limit: int, window: _Window) -> tuple[float, str] | None:
        # The minimum only ever falls, so a lasting rise of the upstream's own
        # latency would read as queueing forever. Every probe_multiplier * limit
        # samples, the limit drops for one window so the queue drains, and that
        # window's latency becomes the new baseline (like BBR's ProbeRTT; the
        # calls already running when it drops are left out of the window, as
        # after every change).
        if self.probing or self.since_probe < self.probe_multiplier * limit:
            return None
        self.since_probe = 0
        self.probing = True
        self.saved = estimate
        cap = max(self.min_limit, math.ceil(estimate * self.probe_fraction))
        if window.max_in_flight <= cap:
            return None  # the load is already that low: measure without a dip
        return float(cap), f"vegas: probe no-load latency at limit {cap}"

    def _finish_probe(self, window: _Window) -> tuple[float, str]:
        self.probing = False
        if window.mean is not None and window.mean > 0:
            self.noload = window.mean
        baseline = "unknown" if self.noload is None else _ms(self.noload)
        return self.saved, f"vegas: probe done, no-load latency {baseline}"

    def cancel_probe(self) -> None:
        self.probing = False
        self.since_probe = 0


class _Gradient2(_Algorithm):
    """Long-term latency against the window's: shrink by their ratio, grow by a queue allowance."""

    __slots__ = ("ema", "long", "queue_size", "recovery", "smoothing", "tolerance", "windows")

    name: ClassVar[LimiterAlgorithm] = "gradient2"
    defaults: ClassVar[Mapping[str, float | None]] = {
        "tolerance": 1.0,
        "smoothing": 0.2,
        "long_window": 600.0,
        "recovery": 0.1,
        "queue_size": None,
    }

    def __init__(self, min_limit: int, tuning: Mapping[str, float | None]) -> None:
        super().__init__(min_limit, tuning)
        tolerance, smoothing = _setting(tuning, "tolerance"), _setting(tuning, "smoothing")
        long_window, recovery = _setting(tuning, "long_window"), _setting(tuning, "recovery")
        if not 1 <= tolerance < math.inf:
            raise ValueError("tolerance must be >= 1 and finite")
        if not 0 < smoothing <= 1:
            raise ValueError("smoothing must be > 0 and <= 1")
        if not 1 <= long_window < math.inf:
            raise ValueError("long_window must be >= 1 and finite")
        if not 0 <= recovery <= 1:
            raise ValueError("recovery must be >= 0 and <= 1")
        queue_size = tuning["queue_size"]
        if queue_size is not None and not 0 <= queue_size < math.inf:
            raise ValueError("queue_size must be >= 0 and finite")
        self.tolerance = tolerance
        self.smoothing = smoothing
        self.ema = 2.0 / (long_window + 1.0)
        self.recovery = recovery
        self.queue_size = queue_size
        #: The long-term latency: an EMA of window means over about long_window windows.
        self.long: float | None = None
        self.windows = 0

    def decide(
        self, estimate: float, limit: int, window: _Window, app_limited: bool
    ) -> tuple[float, str] | None:
        smoothing = self.smoothing
        if window.drops:
            # Loss is overload whatever the latency says: cut as hard as a
            # gradient may, and leave the long-term latency out of it.
            new = estimate * (1.0 - smoothing) + estimate * _MIN_GRADIENT * smoothing
            return new, f"gradient2: {window.drops} dropped"
        short = window.mean
        if short is None or short <= 0:
            return None
        long = self._update_long(short)
        if app_limited:
            return None
        gradient = max(_MIN_GRADIENT, min(1.0, self.tolerance * long / short))
        queue = math.sqrt(estimate) if self.queue_size is None else self.queue_size
        new = estimate * gradient + queue
        new = estimate * (1.0 - smoothing) + new * smoothing
        return new, f"gradient2: gradient {gradient:.2f} (long {_ms(long)}, short {_ms(short)})"

    def _update_long(self, short: float) -> float:
        self.windows += 1
        long = self.long
        if long is None:
            long = short
        elif self.windows <= _WARMUP_WINDOWS:
            long += (short - long) / self.windows
        elif short > long:
            # Latency that stays up slowly becomes the new normal.
            long += (short - long) * self.ema
        else:
            # Latency back down: the baseline follows quickly, so a limit cut
            # during an overload grows back once it is over.
            long += (short - long) * max(self.ema, self.recovery)
        self.long = long
        return long


class _AIMD(_Algorithm):
    """Loss only: +1 per clean window, times ``backoff`` on a window with drops."""

    __slots__ = ("backoff", "timeout")

    name: ClassVar[LimiterAlgorithm] = "aimd"
    defaults: ClassVar[Mapping[str, float | None]] = {
        "backoff": 0.9,
        "timeout": math.inf,
    }

    def __init__(self, min_limit: int, tuning: Mapping[str, float | None]) -> None:
        super().__init__(min_limit, tuning)
        self.backoff = _setting(tuning, "backoff")
        self.timeout = _setting(tuning, "timeout")
        if not 0 < self.backoff < 1:
            raise ValueError("backoff must be > 0 and < 1")
        if self.timeout <= 0:
            raise ValueError("timeout must be > 0")

    def decide(
        self, estimate: float, limit: int, window: _Window, app_limited: bool
    ) -> tuple[float, str] | None:
        if window.drops or window.max_latency > self.timeout:
            # At least one less, so small limits still back off.
            new = max(1, min(limit - 1, int(limit * self.backoff)))
            cause = (
                f"{window.drops} dropped"
                if window.drops
                else f"latency {_ms(window.max_latency)} > timeout"
            )
            return float(new), f"aimd: {cause}, x{self.backoff:g}"
        if app_limited:
            return None
        return float(limit + 1), "aimd: clean window, +1"


_ALGORITHM_CLASSES: dict[str, type[_Algorithm]] = {
    "vegas": _Vegas,
    "gradient2": _Gradient2,
    "aimd": _AIMD,
}


class LimiterToken:
    """One slot of an :class:`AdaptiveLimiter`, held from acquire until :meth:`release`.

    The time between the two is the sample the limiter learns from.
    """

    __slots__ = ("_limiter", "_released", "in_flight", "started")

    def __init__(self, limiter: AdaptiveLimiter, started: float, in_flight: int) -> None:
        self._limiter = limiter
        self._released = False
        #: When the slot was granted, on the limiter's clock.
        self.started = started
        #: Calls in flight when the slot was granted, this one included.
        self.in_flight = in_flight

    @property
    def released(self) -> bool:
        return self._released

    def release(self, *, dropped: bool = False, ignore: bool = False) -> None:
        """Give the slot back and record how long it was held.

        Args:
            dropped: the call failed in a way that means overload (it timed
                out, the upstream refused it): a loss signal for the algorithm.
            ignore: record no sample (the call did not complete, e.g. it was
                cancelled, so its duration says nothing); the slot is freed.

        Raises:
            RuntimeError: the token was already released. Release each token
                exactly once; ``async with`` releases it unless the body did.
        """
        if self._released:
            raise RuntimeError(
                "This token has already been released; release each token exactly once."
            )
        self._released = True
        self._limiter._release(self, dropped, ignore)

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"<LimiterToken {state}, started at {self.started:.6f}>"


class LimiterAcquire:
    """What :meth:`AdaptiveLimiter.acquire` returns: await it for a token, or ``async with`` it.

    Awaited, it gives a :class:`LimiterToken` to release by hand. As an async
    context manager it releases the token on exit, unless the body did.
    """

    __slots__ = ("_limiter", "_token")

    def __init__(self, limiter: AdaptiveLimiter) -> None:
        self._limiter = limiter
        self._token: LimiterToken | None = None

    def __await__(self) -> Generator[Any, None, LimiterToken]:
        return self._limiter._acquire().__await__()

    async def __aenter__(self) -> LimiterToken:
        self._token = await self._limiter._acquire()
        return self._token

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token = self._token
        assert token is not None  # __aexit__ runs only after __aenter__ returned it
        if token._released:
            return  # the body released it itself, e.g. to mark a drop
        if exc is None:
            token.release()
        elif isinstance(exc, self._limiter._drop_on):
            token.release(dropped=True)
        elif isinstance(exc, Exception):
            token.release()
        else:
            # Cancelled (or interrupted): the call did not complete, so its
            # duration is no latency sample.
            token.release(ignore=True)


class AdaptiveLimiter:
    """A concurrency limit that adapts to the latency it measures.

    Like Netflix's concurrency-limits, the limiter finds how many calls an
    upstream can take at once by watching how long calls take: while latency
    stays at its no-load level there is room, and latency that climbs means
    calls are queueing upstream. Three rules hold for every algorithm:

    * **Windows, not samples.** Samples are gathered into windows of
      ``window`` samples and the limit moves at most once per window, never on
      one sample. After a change, only calls that *started* since then fill the
      next window (calls already running measure the old limit), so the limit
      moves about once per round trip, as TCP's window does, and does not
      overshoot on stale news.
    * **The app-limited guard.** If fewer than ``limit / 2`` calls were in
      flight all window, the callers are not using the limit and latency says
      nothing about whether more would fit: the limit does not grow.
    * **Drops are loss.** Samples recorded as dropped (timeouts, refusals from
      the upstream) make every algorithm shrink; their duration is not used
      as a latency.

    The limit always stays within ``[min_limit, max_limit]``.

    The algorithms, and when to pick each:

    ``"vegas"`` (default)
        Tracks the no-load latency (the lowest window mean) and estimates the
        calls queued upstream as ``limit * (1 - noload / latency)``. It grows
        by ``log10(limit)`` while that queue is below ``alpha * log10(limit)``
        (by ``beta * log10(limit)`` while it is below ``threshold *
        log10(limit)``), shrinks by ``log10(limit)`` above ``beta *
        log10(limit)``, and holds in between. Every ``probe_multiplier *
        limit`` samples it drops the limit to ``probe_fraction`` of itself for
        one window and takes that window's latency as the new no-load latency,
        so a lasting change of the upstream's own speed is learned. Pick it
        when latency is the signal: it settles a few calls above the
        upstream's capacity and holds there.
    ``"gradient2"``
        Compares a long-term latency (an EMA over about ``long_window``
        windows) with the window's: ``gradient = clamp(tolerance * long /
        short, 0.5, 1)``, then ``limit * gradient + queue_size`` (default
        ``sqrt(limit)``), smoothed. The long-term latency rises slowly while
        latency stays up and follows it down quickly. Pick it for noisy
        latencies, as it reacts to a *change* of latency rather than its level.
        It cannot tell a slower upstream from queueing: after a lasting
        slowdown it holds the limit low until the long-term latency has caught
        up, and under a lasting overload its limit creeps up at that pace.
    ``"aimd"``
        Ignores latency: ``+1`` per clean window, ``* backoff`` on a window
        with drops (or with a call slower than ``timeout``). Pick it when the
        only signal is loss: an upstream that answers 429 or times out.

    Two ways to use it:

    * Around calls: ``async with limiter.acquire():`` waits while ``limit``
      calls are in flight (first come, first served, cancellation-safe),
      times the call on ``clock`` and records it. An exception listed in
      ``drop_on`` records a drop, another exception a plain sample, and a
      cancellation nothing.
    * Fed by a worker pool that runs its own concurrency: the pool calls
      :meth:`record` for each job and resizes itself from the limit passed to
      its :meth:`add_listener` callback.

    Args:
        algorithm: ``"vegas"``, ``"gradient2"`` or ``"aimd"``.
        initial: the limit to start from.
        min_limit: the limit never goes below this.
        max_limit: the limit never goes above this (bounded by default: an
            upstream that stays fast must not earn unbounded concurrency).
        window: samples per decision, at least 10.
        drop_on: exceptions that, raised inside ``async with acquire()``,
            record the call as dropped.
        clock: the time source for call durations and the history (default
            :class:`~asyncperf.SystemClock`); :meth:`record` latencies must
            be measured on it.
        **tuning: settings of the algorithm, all optional. Vegas: ``alpha``
            (3), ``beta`` (6), ``threshold`` (1), multiples of
            ``log10(limit)``; ``smoothing`` (1.0, none); ``probe_multiplier``
            (30); ``probe_fraction`` (0.5). Gradient2: ``tolerance`` (1.0);
            ``smoothing`` (0.2); ``long_window`` (600 windows); ``recovery``
            (0.1, the share of the gap the long-term latency closes per window
            when latency is lower); ``queue_size`` (None: ``sqrt(limit)``).
            AIMD: ``backoff`` (0.9); ``timeout`` (infinite: drops only).

    Raises:
        ValueError: an unknown algorithm, or a bound, window or tuning value
            out of range.
        TypeError: a tuning key the algorithm does not know, or a bound, window
            or tuning value of the wrong type.
    """

    __slots__ = (
        "_algorithm",
        "_clock",
        "_drop_on",
        "_drops",
        "_epoch",
        "_estimate",
        "_history",
        "_in_flight",
        "_limit",
        "_listeners",
        "_max_limit",
        "_min_limit",
        "_now",
        "_samples",
        "_w_count",
        "_w_drops",
        "_w_max_in_flight",
        "_w_max_latency",
        "_w_measured",
        "_w_sum",
        "_waiters",
        "_window",
        "_windows",
    )

    def __init__(
        self,
        algorithm: LimiterAlgorithm = "vegas",
        *,
        initial: int = 16,
        min_limit: int = 1,
        max_limit: int = 1_000,
        window: int = 20,
        drop_on: tuple[type[BaseException], ...] = (TimeoutError,),
        clock: Clock | None = None,
        **tuning: float | None,
    ) -> None:
        if algorithm not in _ALGORITHMS:
            raise ValueError(
                f"algorithm must be one of 'vegas', 'gradient2', 'aimd', not {algorithm!r}"
            )
        for name, number in (
            ("initial", initial),
            ("min_limit", min_limit),
            ("max_limit", max_limit),
            ("window", window),
        ):
            check_int(name, number)
        if min_limit < 1:
            raise ValueError("min_limit must be >= 1")
        if max_limit < min_limit:
            raise ValueError("max_limit must be >= min_limit")
        if not min_limit <= initial <= max_limit:
            raise ValueError("initial must be between min_limit and max_limit")
        if window < _MIN_WINDOW:
            raise ValueError(f"window must be >= {_MIN_WINDOW}")
        if not _is_exception_tuple(drop_on):
            raise TypeError("drop_on must be a tuple of exception types")
        cls = _ALGORITHM_CLASSES[algorithm]
        defaults = cls.defaults
        unknown = sorted(set(tuning) - set(defaults))
        if unknown:
            raise TypeError(
                f"unknown tuning for algorithm {algorithm!r}: "
                + ", ".join(repr(key) for key in unknown)
                + f" (accepted: {', '.join(sorted(defaults))})"
            )
        settings: dict[str, float | None] = dict(defaults)
        for key, value in tuning.items():
            if value is None and defaults[key] is None:
                settings[key] = None
            else:
                settings[key] = _check_number(key, value)
        self._algorithm: _Algorithm = cls(min_limit, settings)
        self._min_limit = min_limit
        self._max_limit = max_limit
        self._window = window
        self._drop_on = drop_on
        self._clock = clock if clock is not None else SystemClock()
        self._now = self._clock.now
        self._limit = initial
        # The algorithms work on a float estimate; the limit is its integer part.
        self._estimate = float(initial)
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[LimiterToken]] = deque()
        self._listeners: list[LimitListener] = []
        self._history: deque[LimitChange] = deque(maxlen=_HISTORY)
        self._samples = 0
        self._windows = 0
        self._drops = 0
        # When the limit last changed: samples of calls that started before it
        # measure the old limit, so they are left out of the next window.
        self._epoch = -math.inf
        self._reset_window()

    # -- inspection ---------------------------------------------------------------

    @property
    def algorithm(self) -> LimiterAlgorithm:
        return self._algorithm.name

    @property
    def limit(self) -> int:
        """The current limit; settable (a resize by hand, within the bounds).

        Setting it discards the partial window and any Vegas probe, wakes
        waiters if it rose, and notifies the listeners if it changed.

        Raises:
            TypeError: the new value is not an int.
            ValueError: the new value is outside ``[min_limit, max_limit]``.
        """
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        check_int("limit", value)
        if not self._min_limit <= value <= self._max_limit:
            raise ValueError("limit must be between min_limit and max_limit")
        self._algorithm.cancel_probe()
        self._reset_window()
        self._estimate = float(value)
        if value != self._limit:
            self._change(value, f"set to {value}")

    @property
    def min_limit(self) -> int:
        return self._min_limit

    @property
    def max_limit(self) -> int:
        return self._max_limit

    @property
    def window(self) -> int:
        """Samples per decision."""
        return self._window

    @property
    def in_flight(self) -> int:
        """Tokens granted and not yet released (jobs fed to :meth:`record` are not counted)."""
        return self._in_flight

    def statistics(self) -> LimiterStatistics:
        """A frozen snapshot of the limiter."""
        return LimiterStatistics(
            algorithm=self.algorithm,
            limit=self._limit,
            min_limit=self._min_limit,
            max_limit=self._max_limit,
            in_flight=self._in_flight,
            samples=self._samples,
            windows=self._windows,
            drops=self._drops,
            waiting=len(self._waiters),
            history=tuple(self._history),
        )

    def __repr__(self) -> str:
        return (
            f"<AdaptiveLimiter {self._algorithm.name} limit={self._limit}, "
            f"{self._in_flight} in flight, {len(self._waiters)} waiting>"
        )

    # -- listeners ----------------------------------------------------------------

    def add_listener(self, callback: LimitListener) -> None:
        """Call ``callback(new_limit)`` each time the limit changes.

        It is called synchronously from whatever changed the limit (a
        :meth:`record`, a token's release, a resize), after waiters have been
        woken. It is not called with the current limit when added: read
        :attr:`limit` for that. A callback that raises is reported to the
        running loop's exception handler (logged if no loop runs) and removed;
        the call that changed the limit is not affected.
        """
        self._listeners.append(callback)

    def remove_listener(self, callback: LimitListener) -> None:
        """Stop calling ``callback``; nothing happens if it is not registered.

        (A listener that failed has already been removed.)
        """
        try:
            self._listeners.remove(callback)
        except ValueError:
            pass

    # -- acquiring ----------------------------------------------------------------

    def acquire(self) -> LimiterAcquire:
        """Wait for a slot: ``await limiter.acquire()`` or ``async with limiter.acquire():``.

        Waiters are served first come, first served. Cancellation-safe: a
        cancelled ``acquire`` holds no slot (a slot granted just as it was
        cancelled goes to the next waiter). With ``async with``, the slot is
        released on exit: a normal exit or an ``Exception`` records a sample,
        one of ``drop_on`` records a drop, and a cancellation records nothing.
        """
        return LimiterAcquire(self)

    def try_acquire(self) -> LimiterToken | None:
        """A slot if one is free now and nobody is waiting for one, else None.

        The form of :meth:`acquire_nowait` for hot paths that expect the limit
        to be reached: no exception is built.
        """
        if self._in_flight < self._limit and not self._waiters:
            return self._grant()
        return None

    def acquire_nowait(self) -> LimiterToken:
        """A slot if one is free now and nobody is waiting for one.

        Raises:
            WouldBlock: ``limit`` calls are in flight, or others are waiting.
        """
        token = self.try_acquire()
        if token is None:
            raise WouldBlock(f"the limit of {self._limit} calls in flight is reached")
        return token

    def _grant(self) -> LimiterToken:
        self._in_flight += 1
        return LimiterToken(self, self._now(), self._in_flight)

    async def _acquire(self) -> LimiterToken:
        if self._in_flight < self._limit and not self._waiters:
            return self._grant()
        waiter: asyncio.Future[LimiterToken] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.cancelled():
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass  # already taken off the list
            elif waiter.done():
                # A slot was handed over just as we were cancelled: pass it on.
                waiter.result().release(ignore=True)
            else:
                waiter.cancel()
                self._waiters.remove(waiter)
            raise

    def _wake(self) -> None:
        """Hand free slots to the waiters in order (the slot is theirs before they run)."""
        waiters = self._waiters
        while waiters and self._in_flight < self._limit:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(self._grant())

    def _release(self, token: LimiterToken, dropped: bool, ignore: bool) -> None:
        self._in_flight -= 1
        if not ignore:
            self._add(self._now() - token.started, token.in_flight, dropped, token.started)
        if self._waiters:
            self._wake()

    # -- samples and decisions ----------------------------------------------------

    def record(self, latency: float, *, in_flight: int, dropped: bool = False) -> None:
        """Add one sample: a call that just finished after ``latency`` seconds.

        For a worker pool that runs its own concurrency: call it once per job
        as it finishes, with the job's run time measured on the limiter's
        clock, ``in_flight`` the number of jobs running when it started (itself
        included), and ``dropped=True`` if it timed out or the upstream refused
        it (its latency is then not used as a latency). Do not record jobs that
        were cancelled or never ran. The job is taken to have started at
        ``clock.now() - latency``; if that is before the last change of the
        limit, it counts in :attr:`LimiterStatistics.samples` but not towards
        the next window. When a window is full the algorithm decides, and the
        listeners hear of any change before this returns.

        Raises:
            ValueError: ``latency`` is negative, infinite or NaN, or
                ``in_flight`` is negative.
            TypeError: ``in_flight`` is not an int.
        """
        if not 0.0 <= latency < math.inf:
            raise ValueError("latency must be a finite number >= 0")
        check_int("in_flight", in_flight)
        if in_flight < 0:
            raise ValueError("in_flight must be >= 0")
        # A job that started within _SLACK of a change counts as started after
        # it: now - latency need not give back the exact time it started.
        self._add(latency, in_flight, dropped, self._now() - latency + _SLACK)

    def _reset_window(self) -> None:
        self._w_count = 0
        self._w_measured = 0
        self._w_sum = 0.0
        self._w_max_latency = 0.0
        self._w_max_in_flight = 0
        self._w_drops = 0

    def _add(self, latency: float, in_flight: int, dropped: bool, started: float) -> None:
        self._samples += 1
        if dropped:
            self._drops += 1
        if started < self._epoch:
            # The call started before the last change of the limit: it measures
            # the old limit. Deciding on it again would overshoot (and a burst
            # of timeouts would back off twice), so only calls started since
            # the change fill the next window: one decision per round trip.
            return
        self._w_count += 1
        if dropped:
            self._w_drops += 1
        else:
            self._w_measured += 1
            self._w_sum += latency
            if latency > self._w_max_latency:
                self._w_max_latency = latency
        if in_flight > self._w_max_in_flight:
            self._w_max_in_flight = in_flight
        if self._w_count >= self._window:
            self._end_window()

    def _end_window(self) -> None:
        window = _Window(
            samples=self._w_count,
            mean=self._w_sum / self._w_measured if self._w_measured else None,
            max_latency=self._w_max_latency,
            max_in_flight=self._w_max_in_flight,
            drops=self._w_drops,
        )
        self._reset_window()
        self._windows += 1
        limit = self._limit
        # The app-limited guard: with fewer than limit / 2 calls in flight all
        # window, latency cannot tell whether more would fit. Each algorithm
        # then refuses to grow (they differ in what else they do).
        app_limited = window.max_in_flight * 2 < limit
        algorithm = self._algorithm
        decision = algorithm.decide(self._estimate, limit, window, app_limited)
        if decision is not None:
            self._apply(*decision)
        probe = algorithm.probe(self._estimate, self._limit, window)
        if probe is not None:
            self._apply(*probe)

    def _apply(self, estimate: float, reason: str) -> None:
        estimate = min(float(self._max_limit), max(float(self._min_limit), estimate))
        self._estimate = estimate
        new_limit = int(estimate)
        if new_limit != self._limit:
            self._change(new_limit, reason)

    def _change(self, new_limit: int, reason: str) -> None:
        old = self._limit
        self._limit = new_limit
        self._epoch = now = self._now()
        self._history.append(LimitChange(now, new_limit, reason))
        if new_limit > old and self._waiters:
            self._wake()
        for listener in list(self._listeners):
            try:
                listener(new_limit)
            except Exception as exc:
                # A failing listener must not break record() or a release; it
                # is reported once and not called again.
                self.remove_listener(listener)
                self._report_listener_failure(listener, exc)

    def _report_listener_failure(self, listener: LimitListener, exc: Exception) -> None:
        message = "AdaptiveLimiter listener failed and was removed"
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            _logger.error("%s: %r", message, listener, exc_info=exc)
            return
        loop.call_exception_handler(
            {"message": message, "exception": exc, "limiter": self, "listener": listener}
        )
