"""Layer 7: RuntimeConfig from keywords, TOML and the environment; every bad value names its key."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from asyncperf.runtime import (
    HandlerSettings,
    PoolSettings,
    Runtime,
    RuntimeConfig,
    RuntimeOptions,
)


def write(tmp_path: Path, text: str, name: str = "asyncperf.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- keywords ----------------------------------------------------------------------------


def test_defaults_are_bounded_and_loop_independent() -> None:
    """The defaults: a bounded shared pool, a bounded queue, a drain deadline, no clock."""
    config = RuntimeConfig()
    assert config.max_workers == 64
    assert config.min_workers == 1
    assert config.max_pending == 1_000
    assert config.overflow == "block"
    assert config.drain_timeout == 10.0
    assert config.tick == 0.25
    assert config.cache_dir is None
    assert dict(config.handlers) == {}
    assert "clock" not in {f.name for f in dataclasses.fields(RuntimeConfig)}


def test_config_is_frozen() -> None:
    """A config cannot be changed in place; replace() makes a checked copy."""
    config = RuntimeConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_workers = 2  # type: ignore[misc]
    changed = config.replace(max_workers=2, tick=1)
    assert (changed.max_workers, changed.tick, config.max_workers) == (2, 1.0, 64)
    assert isinstance(changed.tick, float)


def test_runtime_options_match_the_config_fields() -> None:
    """The typed keywords of Runtime(...) are exactly the config's fields."""
    fields = {f.name for f in dataclasses.fields(RuntimeConfig)}
    assert set(typing.get_type_hints(RuntimeOptions)) == fields
    assert set(RuntimeConfig.keys()) == fields - {"pools", "handlers"}


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_workers": 0}, ValueError, "max_workers must be >= 1, not 0"),
        ({"max_workers": "8"}, TypeError, "max_workers must be an int, not str"),
        ({"max_workers": 8.0}, TypeError, "max_workers must be an int, not float"),
        ({"min_workers": -1}, ValueError, "min_workers must be >= 0, not -1"),
        ({"min_workers": 9, "max_workers": 8}, ValueError, "min_workers must be <= max_workers"),
        ({"max_pending": 0}, ValueError, "max_pending must be >= 1, not 0"),
        ({"tick": 0}, ValueError, "tick must be > 0, not 0"),
        ({"tick": float("inf")}, ValueError, "tick must be finite, not inf"),
        ({"hold_down": -1.0}, ValueError, "hold_down must be >= 0, not -1.0"),
        ({"drain_timeout": "10"}, TypeError, "drain_timeout must be a number, not str"),
        ({"idle_timeout": 0}, ValueError, "idle_timeout must be > 0, not 0"),
        ({"admission_timeout": -0.5}, ValueError, "admission_timeout must be >= 0, not -0.5"),
        ({"autoscale": 1}, TypeError, "autoscale must be a bool, not int"),
        (
            {"overflow": "explode"},
            ValueError,
            "overflow must be one of 'block', 'reject', 'drop_oldest', 'drop_newest', "
            "not 'explode'",
        ),
        ({"limiter": "tcp"}, ValueError, "limiter must be one of 'vegas', 'gradient2', 'aimd'"),
        ({"cache_policy": "random"}, ValueError, "cache_policy must be one of "),
        ({"cache_write": "sideways"}, ValueError, "cache_write must be one of "),
        ({"cache_dir": ""}, ValueError, "cache_dir must be a non-empty path"),
        ({"cache_dir": 3}, TypeError, "cache_dir must be a path, not int"),
        ({"codel_target": 0.2}, ValueError, "codel_target must be < codel_interval"),
        ({"scale_up_step": 0}, ValueError, "scale_up_step must be >= 1, not 0"),
        ({"window": None}, TypeError, "window must be an int, not None"),
        ({"pools": {"io": {"max_workers": 0}}}, ValueError, "pools.io.max_workers must be >= 1"),
        (
            {"pools": {"io": {"max_workers": 2, "min_workers": 3}}},
            ValueError,
            "pools.io: min_workers must be <= max_workers (3 > 2)",
        ),
        ({"pools": {"io": 4}}, TypeError, "pools.io must be a table of settings, not int"),
        (
            {"handlers": {"complete": {"timeout": -1}}},
            ValueError,
            "handlers.complete.timeout must be > 0, not -1",
        ),
        (
            {"handlers": {"complete": {"rate": "fast"}}},
            ValueError,
            "handlers.complete.rate must be a rate such as '300/min', '5/s' or '100/h', not 'fast'",
        ),
        (
            {"handlers": {"complete": {"timout": 1.0}}},
            ValueError,
            "unknown setting 'handlers.complete.timout' (did you mean "
            "'handlers.complete.timeout'?)",
        ),
    ],
)
def test_a_bad_keyword_names_its_key(options: dict[str, Any], error: type, message: str) -> None:
    """Every bad value raises TypeError or ValueError starting with the key's name."""
    with pytest.raises(error, match="^" + re.escape(message)):
        RuntimeConfig(**options)
    with pytest.raises(error, match="^" + re.escape(message)):
        Runtime(**options)


def test_an_unknown_keyword_is_refused_by_name() -> None:
    """A misspelt option is refused, with the closest known one."""
    message = "unknown runtime setting 'max_worker' (did you mean 'max_workers'?)"
    with pytest.raises(TypeError, match="^" + re.escape(message) + "$"):
        Runtime(max_worker=8)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^unknown runtime setting 'colour'$"):
        RuntimeConfig().replace(colour="blue")


def test_runtime_options_replace_the_config() -> None:
    """Runtime(config, **options): the options win over the config's values."""
    runtime = Runtime(RuntimeConfig(max_workers=8, tick=2.0), max_workers=4)
    assert (runtime.config.max_workers, runtime.config.tick) == (4, 2.0)
    with pytest.raises(TypeError, match=r"^config must be a RuntimeConfig, not dict$"):
        Runtime({"max_workers": 4})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^clock must be a Clock, not int$"):
        Runtime(clock=3)  # type: ignore[arg-type]


def test_sections_accept_mappings_and_settings_objects() -> None:
    """pools and handlers take mappings or settings objects, and are read-only afterwards."""
    config = RuntimeConfig(
        pools={"io": {"max_workers": 4}, "cpu": PoolSettings(max_workers=2)},  # type: ignore[dict-item]
        handlers={"complete": HandlerSettings(timeout=2)},
    )
    assert config.pools["io"] == PoolSettings(max_workers=4)
    assert config.pools["cpu"].max_workers == 2
    assert config.handlers["complete"].timeout == 2.0
    assert config.handlers["complete"].given() == {"timeout": 2.0}
    with pytest.raises(TypeError):
        config.pools["x"] = PoolSettings()  # type: ignore[index]


# -- TOML ----------------------------------------------------------------------------------


def test_toml_sets_keys_pools_and_handlers(tmp_path: Path) -> None:
    """Top-level keys, [pools.NAME] and [handlers.NAME] sections; cache_dir relative to the file."""
    path = write(
        tmp_path,
        """
        max_workers = 32
        tick = 1            # an int where a number is expected is fine
        overflow = "reject"
        autoscale = false
        cache_dir = "cache"

        [pools.batch]
        max_workers = 2
        min_workers = 0

        [handlers.complete]
        timeout = 2.5
        rate = "300/min"
        priority = 0
        """,
    )
    config = RuntimeConfig.from_toml(path)
    assert config.max_workers == 32
    assert config.tick == 1.0
    assert config.overflow == "reject"
    assert config.autoscale is False
    assert config.cache_dir == str(tmp_path / "cache")
    assert config.pools["batch"] == PoolSettings(max_workers=2, min_workers=0)
    assert config.handlers["complete"] == HandlerSettings(timeout=2.5, rate="300/min", priority=0)
    assert config.min_workers == RuntimeConfig().min_workers  # untouched keys keep the defaults


def test_toml_reads_the_tool_table_of_pyproject(tmp_path: Path) -> None:
    """In a pyproject.toml the settings are the [tool.asyncperf] table."""
    path = write(
        tmp_path,
        '[project]\nname = "svc"\n\n[tool.asyncperf]\nmax_workers = 5\n'
        "[tool.asyncperf.handlers.search]\nretries = 2\n",
        name="pyproject.toml",
    )
    config = RuntimeConfig.from_toml(path)
    assert config.max_workers == 5
    assert config.handlers["search"].retries == 2


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("max_workers = 0", ValueError, "max_workers must be >= 1, not 0 (in "),
        ("max_workers = 2.5", TypeError, "max_workers must be an int, not float (in "),
        ("max_workers = '8'", TypeError, "max_workers must be an int, not str (in "),
        ("drain_timout = 5.0", ValueError, "unknown config key 'drain_timout' (did you mean "),
        ("[handlers.complete]\ntimeout = 0", ValueError, "handlers.complete.timeout must be > 0"),
        ("[handlers.complete]\nretries = -1", ValueError, "handlers.complete.retries must be >= 0"),
        ("[pools.batch]\nspeed = 3", ValueError, "unknown setting 'pools.batch.speed'"),
        ("handlers = 3", TypeError, "handlers must be a mapping of names to settings"),
        ("max_workers = ", ValueError, "is not valid TOML"),
    ],
)
def test_a_bad_toml_value_names_its_key_and_file(
    tmp_path: Path, text: str, error: type, message: str
) -> None:
    """TOML errors name the key (as written in the file) and the file."""
    path = write(tmp_path, text)
    with pytest.raises(error, match=re.escape(message)) as caught:
        RuntimeConfig.from_toml(path)
    assert str(path) in str(caught.value)


def test_a_missing_toml_file_raises_oserror(tmp_path: Path) -> None:
    """A file that cannot be read is an OSError, not an empty config."""
    with pytest.raises(FileNotFoundError):
        RuntimeConfig.from_toml(tmp_path / "missing.toml")


# -- environment ---------------------------------------------------------------------------


def test_env_sets_keys() -> None:
    """ASYNCPERF_<KEY> sets <key>: ints, numbers, bools, choices, and none for optionals."""
    config = RuntimeConfig.from_env(
        {
            "ASYNCPERF_MAX_WORKERS": "64",
            "ASYNCPERF_TICK": "0.25",
            "ASYNCPERF_AUTOSCALE": "off",
            "ASYNCPERF_OVERFLOW": "drop_oldest",
            "ASYNCPERF_IDLE_TIMEOUT": "none",
            "ASYNCPERF_LIMITER": "aimd",
            "ASYNCPERF_MAX_CPU": "0.9",
            "ASYNCPERF_TRACES": "/some/traces",  # the benchmarks' variable: not ours, ignored
            "HOME": "/home/user",
        }
    )
    assert config.max_workers == 64
    assert config.tick == 0.25
    assert config.autoscale is False
    assert config.overflow == "drop_oldest"
    assert config.idle_timeout is None
    assert config.limiter == "aimd"
    assert config.max_cpu == 0.9


def test_env_with_another_prefix() -> None:
    """The prefix is a parameter; variables with other prefixes are not read."""
    config = RuntimeConfig.from_env(
        {"SVC_MAX_WORKERS": "3", "ASYNCPERF_MAX_WORKERS": "oops"}, prefix="SVC_"
    )
    assert config.max_workers == 3


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ASYNCPERF_MAX_WORKERS": "x"}, "ASYNCPERF_MAX_WORKERS must be an int, not 'x'"),
        ({"ASYNCPERF_MAX_WORKERS": "0"}, "ASYNCPERF_MAX_WORKERS must be >= 1, not 0"),
        ({"ASYNCPERF_TICK": "fast"}, "ASYNCPERF_TICK must be a number, not 'fast'"),
        ({"ASYNCPERF_TICK": "-1"}, "ASYNCPERF_TICK must be > 0, not -1.0"),
        ({"ASYNCPERF_MAX_CPU": "0"}, "ASYNCPERF_MAX_CPU must be > 0, not 0.0"),
        ({"ASYNCPERF_AUTOSCALE": "maybe"}, "ASYNCPERF_AUTOSCALE must be a bool"),
        ({"ASYNCPERF_OVERFLOW": "explode"}, "ASYNCPERF_OVERFLOW must be one of 'block'"),
        ({"ASYNCPERF_MAX_WORKERS": "none"}, "ASYNCPERF_MAX_WORKERS must be an int, not 'none'"),
        (
            {"ASYNCPERF_MAX_WORKER": "8"},
            "unknown environment variable 'ASYNCPERF_MAX_WORKER' "
            "(did you mean 'ASYNCPERF_MAX_WORKERS'?)",
        ),
        (
            {"ASYNCPERF_MIN_WORKERS": "9", "ASYNCPERF_MAX_WORKERS": "8"},
            "ASYNCPERF_MIN_WORKERS must be <= ASYNCPERF_MAX_WORKERS (9 > 8)",
        ),
    ],
)
def test_a_bad_env_value_names_its_variable(environ: dict[str, str], message: str) -> None:
    """Every bad variable raises ValueError naming the variable."""
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        RuntimeConfig.from_env(environ)


# -- precedence ----------------------------------------------------------------------------


def test_precedence_options_then_env_then_toml_then_defaults(tmp_path: Path) -> None:
    """load(): keywords > ASYNCPERF_* > TOML > defaults, key by key."""
    path = write(tmp_path, "max_workers = 8\ntick = 0.5\nhold_down = 5.0\n")
    environ = {"ASYNCPERF_MAX_WORKERS": "16", "ASYNCPERF_TICK": "1.0"}
    config = RuntimeConfig.load(path, environ=environ, max_workers=32)
    assert config.max_workers == 32  # keyword over env over TOML
    assert config.tick == 1.0  # env over TOML
    assert config.hold_down == 5.0  # TOML over the default
    assert config.drain_timeout == RuntimeConfig().drain_timeout  # the default
    assert RuntimeConfig.load(environ={}).max_workers == 64
    with pytest.raises(TypeError, match=r"^unknown runtime setting 'max_worker'"):
        RuntimeConfig.load(environ={}, max_worker=3)


def test_toml_on_a_base_keeps_the_base_where_silent(tmp_path: Path) -> None:
    """from_toml(base=...) changes only the keys the file sets; a section replaces its namesake."""
    base = RuntimeConfig(
        max_workers=3,
        handlers={"a": HandlerSettings(timeout=1.0), "b": HandlerSettings(retries=1)},
    )
    path = write(tmp_path, "tick = 2.0\n[handlers.a]\nretries = 4\n")
    config = RuntimeConfig.from_toml(path, base=base)
    assert (config.max_workers, config.tick) == (3, 2.0)
    assert config.handlers["a"] == HandlerSettings(retries=4)
    assert config.handlers["b"] == HandlerSettings(retries=1)


async def test_a_handler_section_for_no_handler_is_refused() -> None:
    """A [handlers.NAME] section no handler uses (a typo) fails at start, naming it."""
    runtime = Runtime(handlers={"complte": {"timeout": 1.0}}, autoscale=False)

    @runtime.handler
    async def complete() -> None:
        return None

    message = "the config has settings for handler(s) 'complte', but no handler of that name"
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        async with runtime:
            pass
    await runtime.aclose()
