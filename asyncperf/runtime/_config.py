"""RuntimeConfig: the runtime's settings, from keywords, a TOML file or the environment.

Every value is checked where it enters, and an error names the key as the user
wrote it: ``max_workers`` for a keyword or a TOML key, ``handlers.complete.timeout``
for a handler section, ``ASYNCPERF_MAX_WORKERS`` for an environment variable.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypedDict, cast

from asyncperf._validate import check_int, check_number
from asyncperf.cache import POLICIES
from asyncperf.observability._server import is_loopback
from asyncperf.queues import RateLimiter
from asyncperf.runtime._backend import redact_url

__all__ = [
    "HandlerSettings",
    "PoolSettings",
    "RuntimeConfig",
    "RuntimeOptions",
]

Overflow = Literal["block", "reject", "drop_oldest", "drop_newest"]
LimiterName = Literal["vegas", "gradient2", "aimd"]
_Kind = Literal["int", "float", "bool", "choice", "str", "path", "rate"]

_OVERFLOWS = ("block", "reject", "drop_oldest", "drop_newest")
_LIMITERS = ("vegas", "gradient2", "aimd")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
#: Environment variables with the default prefix that belong to other parts of
#: asyncperf (the benchmarks), so ``from_env`` does not refuse them as unknown.
FOREIGN_ENV = frozenset({"ASYNCPERF_TRACES"})


@dataclass(frozen=True, slots=True)
class _Spec:
    """How one setting is checked and parsed from text."""

    kind: _Kind
    minimum: float | None = None
    strict: bool = False  # numbers: > minimum rather than >=
    optional: bool = False
    choices: tuple[str, ...] = ()

    def check(self, name: str, value: object) -> Any:
        if value is None:
            if self.optional:
                return None
            raise TypeError(f"{name} must be {self._describe()}, not None")
        if self.kind == "int":
            least = None if self.minimum is None else int(self.minimum)
            return check_int(name, value, minimum=least)
        if self.kind == "float":
            floor = 0.0 if self.minimum is None else self.minimum
            return check_number(name, value, minimum=floor, strict=self.strict)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
            return value
        if self.kind == "path":
            if not isinstance(value, str | os.PathLike):
                raise TypeError(f"{name} must be a path, not {type(value).__name__}")
            text = os.fspath(value)
            if not isinstance(text, str) or not text:
                raise ValueError(f"{name} must be a non-empty path, not {value!r}")
            return text
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, not {type(value).__name__}")
        if self.kind == "choice" and value not in self.choices:
            choices = ", ".join(repr(choice) for choice in self.choices)
            raise ValueError(f"{name} must be one of {choices}, not {value!r}")
        if self.kind == "rate":
            try:
                RateLimiter.parse(value)
            except ValueError:
                raise ValueError(
                    f"{name} must be a rate such as '300/min', '5/s' or '100/h', not {value!r}"
                ) from None
        if self.kind == "str" and not value:
            raise ValueError(f"{name} must not be empty")
        return value

    def parse(self, name: str, text: str) -> Any:
        """The value of an environment variable, checked as :meth:`check` does."""
        stripped = text.strip()
        if self.optional and stripped.lower() in ("", "none", "null"):
            return None
        value: object = stripped
        if self.kind == "int":
            try:
                value = int(stripped)
            except ValueError:
                raise ValueError(f"{name} must be an int, not {text!r}") from None
        elif self.kind == "float":
            try:
                value = float(stripped)
            except ValueError:
                raise ValueError(f"{name} must be a number, not {text!r}") from None
        elif self.kind == "bool":
            lowered = stripped.lower()
            if lowered not in _TRUE + _FALSE:
                raise ValueError(f"{name} must be a bool (true/false, 1/0, yes/no), not {text!r}")
            value = lowered in _TRUE
        return self.check(name, value)

    def _describe(self) -> str:
        return {
            "int": "an int",
            "float": "a number",
            "bool": "a bool",
            "path": "a path",
            "rate": "a rate",
        }.get(self.kind, "a str")


def _int(minimum: int, *, optional: bool = False) -> _Spec:
    return _Spec("int", minimum=minimum, optional=optional)


def _positive(*, optional: bool = False) -> _Spec:
    return _Spec("float", minimum=0.0, strict=True, optional=optional)


def _non_negative(*, optional: bool = False) -> _Spec:
    return _Spec("float", minimum=0.0, strict=False, optional=optional)


def _suggest(key: str, known: Iterable[str]) -> str:
    import difflib  # only for a mistyped key: not a cost of every process

    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown(kind: str, key: str, known: Iterable[str]) -> ValueError:
    return ValueError(f"unknown {kind} {key!r}{_suggest(key, known)}")


def _check_fields(
    obj: object,
    specs: Mapping[str, _Spec],
    prefix: str = "",
    names: Mapping[str, str] | None = None,
) -> None:
    """Check (and normalise, e.g. int to float) every field of a frozen dataclass."""
    for key, spec in specs.items():
        name = names.get(key, prefix + key) if names is not None else prefix + key
        object.__setattr__(obj, key, spec.check(name, getattr(obj, key)))


# -- per-pool and per-handler sections ------------------------------------------------


_POOL_SPECS: dict[str, _Spec] = {
    "max_workers": _int(1, optional=True),
    "min_workers": _int(0, optional=True),
    "idle_timeout": _positive(optional=True),
    "max_pending": _int(1, optional=True),
    "overflow": _Spec("choice", optional=True, choices=_OVERFLOWS),
}


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """A named pool's settings (TOML ``[pools.NAME]``); None takes the runtime's value.

    Handlers share the pool with ``pool="NAME"``. See :class:`RuntimeConfig`
    for what each setting means.
    """

    max_workers: int | None = None
    min_workers: int | None = None
    idle_timeout: float | None = None
    max_pending: int | None = None
    overflow: Overflow | None = None

    def __post_init__(self) -> None:
        _check_fields(self, _POOL_SPECS)
        if (
            self.max_workers is not None
            and self.min_workers is not None
            and self.min_workers > self.max_workers
        ):
            raise ValueError(
                f"min_workers must be <= max_workers ({self.min_workers} > {self.max_workers})"
            )


_HANDLER_SPECS: dict[str, _Spec] = {
    "priority": _Spec("int", optional=True),
    "timeout": _positive(optional=True),
    "concurrency": _int(1, optional=True),
    "cache_ttl": _positive(optional=True),
    "rate": _Spec("rate", optional=True),
    "burst": _int(1, optional=True),
    "retries": _int(0, optional=True),
    "pool": _Spec("str", optional=True),
    "deadline": _positive(optional=True),
    "admission_timeout": _non_negative(optional=True),
    "cache_namespace": _Spec("str", optional=True),
    "global_concurrency": _int(1, optional=True),
    "batch": _int(1, optional=True),
    "batch_delay": _non_negative(optional=True),
}


@dataclass(frozen=True, slots=True)
class HandlerSettings:
    """One handler's settings from the configuration (TOML ``[handlers.NAME]``).

    Each one set here replaces the value given to ``@runtime.handler(...)``, so
    a deployment can tune a handler without changing its code; None leaves the
    decorator's value (a configuration file cannot remove a timeout or a rate,
    only change it). The meaning of each is that of the decorator's argument.
    """

    priority: int | None = None
    timeout: float | None = None
    concurrency: int | None = None
    cache_ttl: float | None = None
    rate: str | None = None
    burst: int | None = None
    retries: int | None = None
    pool: str | None = None
    deadline: float | None = None
    admission_timeout: float | None = None
    cache_namespace: str | None = None
    global_concurrency: int | None = None
    batch: int | None = None
    batch_delay: float | None = None

    def __post_init__(self) -> None:
        _check_fields(self, _HANDLER_SPECS)

    def given(self) -> dict[str, Any]:
        """The settings that are set (not None), by name."""
        return {key: getattr(self, key) for key in _HANDLER_SPECS if getattr(self, key) is not None}


def _section(
    cls: type[PoolSettings] | type[HandlerSettings],
    specs: Mapping[str, _Spec],
    name: str,
    values: object,
) -> Any:
    """A PoolSettings or HandlerSettings from a mapping, each error naming ``name.key``."""
    if isinstance(values, cls):
        return values
    if not isinstance(values, Mapping):
        raise TypeError(f"{name} must be a table of settings, not {type(values).__name__}")
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if key not in specs:
            raise _unknown("setting", f"{name}.{key}", [f"{name}.{known}" for known in specs])
        checked[key] = specs[key].check(f"{name}.{key}", value)
    try:
        return cls(**checked)
    except ValueError as exc:  # a check across settings: say which section
        raise ValueError(f"{name}: {exc}") from None


def _sections(kind: Literal["pools", "handlers"], values: object) -> MappingProxyType[str, Any]:
    if not isinstance(values, Mapping):
        raise TypeError(
            f"{kind} must be a mapping of names to settings, not {type(values).__name__}"
        )
    cls: type[PoolSettings] | type[HandlerSettings]
    cls, specs = (
        (PoolSettings, _POOL_SPECS) if kind == "pools" else (HandlerSettings, _HANDLER_SPECS)
    )
    result: dict[str, Any] = {}
    for section, settings in values.items():
        if not isinstance(section, str) or not section:
            raise TypeError(f"{kind} names must be non-empty strings, not {section!r}")
        result[section] = _section(cls, specs, f"{kind}.{section}", settings)
    return MappingProxyType(result)


# -- the runtime's settings -----------------------------------------------------------


_RUNTIME_SPECS: dict[str, _Spec] = {
    "max_workers": _int(1),
    "min_workers": _int(0),
    "idle_timeout": _positive(optional=True),
    "max_pending": _int(1),
    "overflow": _Spec("choice", choices=_OVERFLOWS),
    "codel_target": _positive(optional=True),
    "codel_interval": _positive(),
    "limiter": _Spec("choice", optional=True, choices=_LIMITERS),
    "admission_timeout": _non_negative(),
    "default_timeout": _positive(optional=True),
    "drain_timeout": _positive(),
    "autoscale": _Spec("bool"),
    "tick": _positive(),
    "target_queue_delay": _positive(),
    "scale_up_step": _int(1, optional=True),
    "hold_down": _non_negative(),
    "window": _int(1),
    "max_loop_lag": _positive(),
    "max_cpu": _positive(optional=True),
    "max_restarts": _int(0),
    "restart_window": _positive(),
    "max_events": _int(1),
    "cache_max_entries": _int(1),
    "cache_policy": _Spec("choice", choices=tuple(sorted(POLICIES))),
    "cache_dir": _Spec("path", optional=True),
    "cache_max_bytes": _int(1),
    "cache_write": _Spec("choice", choices=("behind", "through")),
    "dashboard": _Spec("bool"),
    "dashboard_host": _Spec("str"),
    "dashboard_port": _int(0),
    "dashboard_token": _Spec("str", optional=True),
    "backend": _Spec("str"),
    "namespace": _Spec("str"),
    "redis_password": _Spec("str", optional=True),
    "redis_tls_ca_file": _Spec("path", optional=True),
    "redis_tls_cert_file": _Spec("path", optional=True),
    "redis_tls_key_file": _Spec("path", optional=True),
    "limits_fail": _Spec("choice", choices=("closed", "open")),
}
#: Settings naming files, made relative to the TOML file that sets them.
_PATHS = ("cache_dir", "redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file")
_BACKEND_SCHEMES = ("redis://", "rediss://", "unix://")
_SECTIONS = ("pools", "handlers")


class RuntimeOptions(TypedDict, total=False):
    """The keywords of ``Runtime(**options)`` and :meth:`RuntimeConfig.replace`."""

    max_workers: int
    min_workers: int
    idle_timeout: float | None
    max_pending: int
    overflow: Overflow
    codel_target: float | None
    codel_interval: float
    limiter: LimiterName | None
    admission_timeout: float
    default_timeout: float | None
    drain_timeout: float
    autoscale: bool
    tick: float
    target_queue_delay: float
    scale_up_step: int | None
    hold_down: float
    window: int
    max_loop_lag: float
    max_cpu: float | None
    max_restarts: int
    restart_window: float
    max_events: int
    cache_max_entries: int
    cache_policy: str
    cache_dir: str | os.PathLike[str] | None
    cache_max_bytes: int
    cache_write: str
    dashboard: bool
    dashboard_host: str
    dashboard_port: int
    dashboard_token: str | None
    backend: str
    namespace: str
    redis_password: str | None
    redis_tls_ca_file: str | os.PathLike[str] | None
    redis_tls_cert_file: str | os.PathLike[str] | None
    redis_tls_key_file: str | os.PathLike[str] | None
    limits_fail: Literal["closed", "open"]
    pools: Mapping[str, PoolSettings | Mapping[str, Any]]
    handlers: Mapping[str, HandlerSettings | Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """Everything a :class:`~asyncperf.runtime.Runtime` is built from; frozen and checked.

    Only settings that do not depend on an event loop live here (the clock is
    given to the runtime itself), so one config can build runtimes on any loop.

    Sources, and which wins (highest first): keywords given to ``Runtime(...)``
    or :meth:`replace`, then ``ASYNCPERF_*`` environment variables
    (:meth:`from_env`), then a TOML file (:meth:`from_toml`), then the
    defaults below. :meth:`load` applies them in that order.

    Attributes:
        max_workers: workers of the shared ``default`` pool at most (and of a
            named pool that does not set its own).
        min_workers: workers each pool keeps alive when idle.
        idle_timeout: seconds an idle worker above ``min_workers`` lives (None: forever).
        max_pending: the bound of each priority level of a pool's queue (0 high,
            1 normal, 2 low; weights 4:2:1).
        overflow: what a full level does with one more call: ``block`` (wait for
            room, up to the admission timeout, then reject), ``reject``,
            ``drop_oldest`` or ``drop_newest`` (a queued call is dropped).
        codel_target: CoDel's acceptable standing delay in seconds; None: no CoDel.
        codel_interval: CoDel's interval in seconds (with ``codel_target``).
        limiter: an adaptive concurrency limit for each pool (``vegas``,
            ``gradient2``, ``aimd``); None: the pools run ``max_workers`` at most.
        admission_timeout: seconds a call may wait to be admitted (for its rate
            limit, then for room in a full ``block`` level) before it is
            rejected; 0: never wait. Handlers may set their own.
        default_timeout: seconds a handler's body may run when the handler sets
            no ``timeout`` (None: no limit).
        drain_timeout: seconds leaving ``async with runtime`` waits for queued
            and running calls before it drops and cancels them.
        autoscale: run the supervisor, which resizes the pools from their load.
        tick: seconds between two looks of the supervisor.
        target_queue_delay: the queue delay, in seconds, the supervisor scales up to avoid.
        scale_up_step: workers the supervisor adds at most per tick (None: as many
            as the backlog needs).
        hold_down: seconds the load must stay low before the supervisor shrinks a pool.
        window: ticks the supervisor looks at before it acts (never one sample).
        max_loop_lag: seconds of event-loop lag above which the supervisor stops
            growing pools (more workers would only add overhead).
        max_cpu: CPU seconds per second (1.0 = one core) above which the supervisor
            stops growing pools; None (the default) leaves this guard off.
        max_restarts: worker restarts allowed within ``restart_window`` seconds
            before a pool fails loudly.
        restart_window: see ``max_restarts``.
        max_events: scaling events kept in the supervisor's log.
        cache_max_entries: entries of the in-memory cache.
        cache_policy: its eviction policy (``tinylfu``, ``lru``, ``lfu``, ``fifo``, ``sieve``).
        cache_dir: a directory for a disk cache below the memory one (None: memory
            only). Relative paths in a TOML file are relative to the file.
        cache_max_bytes: the bound of the disk cache.
        cache_write: how results reach the disk cache: ``"behind"`` (the default:
            the caller is answered from memory at once, and the disk level is
            written in batches shortly after; a crash loses at most the last
            batch, never a committed value) or ``"through"`` (each result is
            on disk before its caller is answered).
        dashboard: serve the live dashboard, ``/metrics`` and ``/api/stats`` while
            the runtime runs (``runtime.dashboard_url`` says where).
        dashboard_host: the address the dashboard binds (default 127.0.0.1: this
            machine only); any other needs ``dashboard_token``.
        dashboard_port: its TCP port (0: any free one).
        dashboard_token: a secret every request to the dashboard must carry
            (``Authorization: Bearer TOKEN`` or ``?token=TOKEN``); kept out of ``repr``.
        backend: where the shared parts live: ``"local"`` (the default: in this
            process) or a Redis URL, ``redis://HOST:PORT/DB``, ``rediss://...``
            (TLS) or ``unix://PATH``. With Redis, every process given the same
            URL and ``namespace`` shares the handlers' rate limits and
            ``global_concurrency`` limits, the queues of :meth:`Runtime.queue
            <asyncperf.Runtime.queue>`, and a cache level below the memory and
            disk ones (needs ``asyncperf[redis]``).
        namespace: the prefix of every shared name (``asyncperf`` by default):
            services sharing one server stay apart by namespace.
        redis_password: the Redis server's password (overrides one in the URL);
            kept out of ``repr``.
        redis_tls_ca_file: certificates to verify a ``rediss://`` server with
            (default: the system's).
        redis_tls_cert_file: a client certificate for ``rediss://`` (with
            ``redis_tls_key_file`` when the key is a separate file).
        redis_tls_key_file: the client certificate's private key.
        limits_fail: what a shared limit does when Redis cannot be reached:
            ``"closed"`` (the default) refuses the call with
            :class:`~asyncperf.Rejected` (reason ``backend_unavailable``),
            ``"open"`` admits it without the limit (counted as ``failed_open``).
        pools: named pools (``[pools.NAME]``), see :class:`PoolSettings`.
        handlers: per-handler settings (``[handlers.NAME]``), see :class:`HandlerSettings`.

    Raises:
        TypeError: a setting has the wrong type (the message names it).
        ValueError: a setting is out of range, or two settings disagree.
    """

    max_workers: int = 64
    min_workers: int = 1
    idle_timeout: float | None = 10.0
    max_pending: int = 1_000
    overflow: Overflow = "block"
    codel_target: float | None = None
    codel_interval: float = 0.1
    limiter: LimiterName | None = None
    admission_timeout: float = 1.0
    default_timeout: float | None = None
    drain_timeout: float = 10.0
    autoscale: bool = True
    tick: float = 0.25
    target_queue_delay: float = 0.05
    scale_up_step: int | None = None
    hold_down: float = 30.0
    window: int = 4
    max_loop_lag: float = 0.1
    max_cpu: float | None = None
    max_restarts: int = 5
    restart_window: float = 60.0
    max_events: int = 256
    cache_max_entries: int = 10_000
    cache_policy: str = "tinylfu"
    cache_dir: str | None = None
    cache_max_bytes: int = 1 << 30
    cache_write: str = "behind"
    dashboard: bool = False
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 0
    dashboard_token: str | None = field(default=None, repr=False)
    backend: str = "local"
    namespace: str = "asyncperf"
    redis_password: str | None = field(default=None, repr=False)
    redis_tls_ca_file: str | None = None
    redis_tls_cert_file: str | None = None
    redis_tls_key_file: str | None = None
    limits_fail: str = "closed"
    pools: Mapping[str, PoolSettings] = field(default_factory=lambda: MappingProxyType({}))
    handlers: Mapping[str, HandlerSettings] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        self._check()

    def _check(self, names: Mapping[str, str] | None = None) -> None:
        _check_fields(self, _RUNTIME_SPECS, names=names)
        object.__setattr__(self, "pools", _sections("pools", self.pools))
        object.__setattr__(self, "handlers", _sections("handlers", self.handlers))
        if self.min_workers > self.max_workers:
            raise ValueError(
                f"min_workers must be <= max_workers ({self.min_workers} > {self.max_workers})"
            )
        if self.dashboard_port > 65_535:
            raise ValueError(f"dashboard_port must be <= 65535, not {self.dashboard_port}")
        if (
            self.dashboard_token is not None
            and self.dashboard_token != self.dashboard_token.strip()
        ):
            raise ValueError("dashboard_token must not start or end with spaces")
        if self.dashboard and self.dashboard_token is None and not is_loopback(self.dashboard_host):
            raise ValueError(
                f"dashboard_token is needed to serve the dashboard on dashboard_host "
                f"{self.dashboard_host!r}, which other machines can reach (or bind 127.0.0.1)"
            )
        self._check_backend()
        if self.codel_target is not None and self.codel_target >= self.codel_interval:
            raise ValueError(
                f"codel_target must be < codel_interval ({self.codel_target:g} >= "
                f"{self.codel_interval:g})"
            )

    def _check_backend(self) -> None:
        backend = self.backend
        if backend != "local" and not backend.startswith(_BACKEND_SCHEMES):
            raise ValueError(
                "backend must be 'local' or a redis://, rediss:// or unix:// URL, "
                f"not {redact_url(backend)!r}"
            )
        if not self.namespace or "{" in self.namespace or "}" in self.namespace:
            raise ValueError(f"namespace must not hold braces, not {self.namespace!r}")
        redis_only = ("redis_password", "redis_tls_ca_file", "redis_tls_cert_file")
        for name in (*redis_only, "redis_tls_key_file"):
            if getattr(self, name) is None:
                continue
            if backend == "local":
                raise ValueError(f"{name} needs a Redis backend, and backend is 'local'")
            if name.startswith("redis_tls") and not backend.startswith("rediss://"):
                raise ValueError(f"{name} needs a rediss:// backend URL (TLS)")
        if self.redis_tls_key_file is not None and self.redis_tls_cert_file is None:
            raise ValueError("redis_tls_key_file needs redis_tls_cert_file")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS settings of a ``rediss://`` backend (None for any other).

        Raises:
            OSError: a certificate file cannot be read.
            ssl.SSLError: a file holds no valid certificate or key.
        """
        if not self.backend.startswith("rediss://"):
            return None
        context = ssl.create_default_context(cafile=self.redis_tls_ca_file)
        if self.redis_tls_cert_file is not None:
            context.load_cert_chain(self.redis_tls_cert_file, self.redis_tls_key_file)
        return context

    # -- sources ------------------------------------------------------------------

    def replace(self, **options: Any) -> RuntimeConfig:
        """A copy with ``options`` changed, checked like the constructor.

        Raises:
            TypeError: an unknown option (the message names it, with the
                closest known one), or an option of the wrong type.
            ValueError: an option out of range.
        """
        for key in options:
            if key not in _RUNTIME_SPECS and key not in _SECTIONS:
                raise TypeError(f"unknown runtime setting {key!r}{_suggest(key, _known())}")
        if not options:
            return self
        return dataclasses.replace(self, **options)

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any], *, base: RuntimeConfig | None = None
    ) -> RuntimeConfig:
        """``base`` (default: the defaults) with the settings of a parsed TOML document.

        ``pools`` and ``handlers`` hold tables of named sections; a section
        given here replaces the same-named one of ``base`` whole.

        Raises:
            ValueError: an unknown key (named, with the closest known one), or a
                value out of range (the key named).
            TypeError: a value of the wrong type (the key named).
        """
        base = cls() if base is None else base
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key in _SECTIONS:
                merged = dict(getattr(base, key))
                merged.update(_sections(cast(Literal["pools", "handlers"], key), value))
                changes[key] = merged
            elif key in _RUNTIME_SPECS:
                changes[key] = _RUNTIME_SPECS[key].check(key, value)
            else:
                raise _unknown("config key", key, _known())
        return dataclasses.replace(base, **changes)

    @classmethod
    def from_toml(
        cls, path: str | os.PathLike[str], *, base: RuntimeConfig | None = None
    ) -> RuntimeConfig:
        """``base`` (default: the defaults) with the settings of a TOML file.

        The settings are the file's top-level keys, or those of its
        ``[tool.asyncperf]`` table when it has one (so ``pyproject.toml``
        works), with ``[pools.NAME]`` and ``[handlers.NAME]`` sections::

            max_workers = 32
            drain_timeout = 5.0
            cache_dir = "cache"          # relative to this file

            [handlers.complete]
            timeout = 2.0
            rate = "300/min"

        Raises:
            OSError: the file cannot be read.
            ValueError: the file is not valid TOML, has an unknown key, or a
                value out of range; the message names the key and the file.
            TypeError: a value of the wrong type (the key and the file named).
        """
        file = Path(os.fspath(path))
        with file.open("rb") as stream:
            try:
                document = tomllib.load(stream)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{file} is not valid TOML: {exc}") from None
        tool = document.get("tool")
        if isinstance(tool, dict) and isinstance(tool.get("asyncperf"), dict):
            document = tool["asyncperf"]
        try:
            config = cls.from_mapping(document, base=base)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{exc} (in {file})") from None
        for key in _PATHS:
            value = getattr(config, key)
            if value is not None and key in document and not Path(value).is_absolute():
                changes: dict[str, Any] = {key: str(file.parent / value)}
                config = dataclasses.replace(config, **changes)
        return config

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        prefix: str = "ASYNCPERF_",
        *,
        base: RuntimeConfig | None = None,
        ignore: Iterable[str] = FOREIGN_ENV,
    ) -> RuntimeConfig:
        """``base`` (default: the defaults) with the settings of environment variables.

        A setting's variable is the prefix and its name in capitals:
        ``ASYNCPERF_MAX_WORKERS=64``, ``ASYNCPERF_TICK=0.25``,
        ``ASYNCPERF_AUTOSCALE=false``, ``ASYNCPERF_CACHE_DIR=none``. Booleans read
        ``true/false``, ``1/0``, ``yes/no``, ``on/off``; ``none`` (or an empty
        value) sets an optional setting to None. Pool and handler sections come
        only from TOML or keywords.

        Args:
            environ: the variables (default ``os.environ``).
            prefix: the prefix that marks asyncperf's variables.
            base: the configuration the variables change.
            ignore: variables with the prefix that are not runtime settings.

        Raises:
            ValueError: a variable with the prefix that names no setting, or a
                value that does not parse or is out of range (the variable named).
        """
        environ = os.environ if environ is None else environ
        skip = frozenset(ignore)
        base = cls() if base is None else base
        changes: dict[str, Any] = {}
        for variable, text in environ.items():
            if not variable.startswith(prefix) or variable in skip:
                continue
            key = variable[len(prefix) :].lower()
            spec = _RUNTIME_SPECS.get(key)
            if spec is None:
                known = [prefix + name.upper() for name in _RUNTIME_SPECS]
                raise _unknown("environment variable", variable, known)
            changes[key] = spec.parse(variable, text)
        if not changes:
            return base
        names = {key: prefix + key.upper() for key in changes}
        try:
            return dataclasses.replace(base, **changes)
        except ValueError as exc:
            # A check across settings (e.g. min_workers > max_workers): name the variables.
            message = str(exc)
            for key, variable in names.items():
                message = message.replace(f"{key} ", f"{variable} ", 1)
            raise ValueError(message) from None

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        prefix: str = "ASYNCPERF_",
        **options: Any,
    ) -> RuntimeConfig:
        """Defaults, then the TOML file (if given), then the environment, then ``options``.

        Raises:
            TypeError, ValueError: as :meth:`from_toml`, :meth:`from_env` and
                :meth:`replace`, naming the key.
        """
        config = cls() if path is None else cls.from_toml(path)
        config = cls.from_env(environ, prefix, base=config)
        return config.replace(**options)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The names of the scalar settings (as in TOML, keywords and, in capitals, the env)."""
        return tuple(_RUNTIME_SPECS)


def _known() -> list[str]:
    return [*_RUNTIME_SPECS, *_SECTIONS]
