"""What ``asyncperf load`` calls, and with what: ``MODULE:NAME`` lookups and argument sources.

``MODULE`` is an importable dotted module (``myservice.handlers``) or the path of
a ``.py`` file (``examples/load_target.py``); ``NAME`` is an attribute path in it
(``handle``, ``Client.fetch`` for a staticmethod or classmethod). A file is
loaded once per process and registered in ``sys.modules``, so the target, the
argument generator and the setup named from the same file share one module (and
so one runtime, one connection pool...).

Arguments come from an :class:`ArgumentSource`: none (every call without
arguments), a generator function, or a JSON-lines file. Each item is one call:
a tuple is its positional arguments, a dict its keyword arguments, anything else
its single positional argument. The items form one stream for the whole run;
when it is exhausted it starts again from the beginning.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import itertools
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

__all__ = [
    "ArgumentSource",
    "ArgumentsError",
    "Call",
    "FileArguments",
    "GeneratorArguments",
    "NoArguments",
    "Target",
    "TargetError",
    "as_call",
    "load_object",
    "resolve_setup",
    "resolve_target",
]

#: Positional and keyword arguments of one call.
Call = tuple[tuple[Any, ...], dict[str, Any]]


class TargetError(Exception):
    """A ``MODULE:NAME`` that cannot be used: not found, missing, or not the right kind."""


class ArgumentsError(Exception):
    """An argument source that cannot be used: a bad line, a bad item, no items at all."""


# -- MODULE:NAME ---------------------------------------------------------------------


def _split(spec: str) -> tuple[str, str]:
    # rsplit: a Windows path (C:\x\y.py:handle) has a colon of its own.
    module, sep, name = spec.rpartition(":")
    if not sep or not module or not name:
        raise TargetError(
            f"{spec!r} must be MODULE:NAME, e.g. examples/load_target.py:handle "
            "or mypackage.handlers:handle"
        )
    return module, name


def _is_path(module: str) -> bool:
    return module.endswith(".py") or "/" in module or "\\" in module


def _load_file(path_text: str) -> ModuleType:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise TargetError(f"file {path_text!r} not found")
    path = path.resolve()
    for module in list(sys.modules.values()):
        # The same file loaded before (as the target, the arguments or the setup).
        file = getattr(module, "__file__", None)
        if file is not None and Path(file).resolve() == path:
            return module
    name = path.stem if path.stem.isidentifier() else "load_target"
    if name in sys.modules:
        # Another module owns the plain name: keep both, under distinct names.
        name = f"_asyncperf_load_{name}_{len(sys.modules)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"file {path_text!r} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    # As under `python FILE`, the file's sibling modules are importable (appended,
    # not first: a sibling never shadows an installed package in this process).
    parent = str(path.parent)
    if parent not in sys.path:
        sys.path.append(parent)
    sys.modules[name] = module  # registered first: dataclasses and pickle look it up
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        if isinstance(exc, Exception):
            raise TargetError(
                f"importing {path_text!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        raise
    return module


def _import(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module == missing or module.startswith(missing + "."):
            raise TargetError(
                f"module {module!r} not found (is it installed, or on PYTHONPATH? "
                "a file is given as a path: dir/file.py)"
            ) from exc
        raise TargetError(f"importing {module!r} failed: {exc}") from exc
    except Exception as exc:
        raise TargetError(f"importing {module!r} failed: {type(exc).__name__}: {exc}") from exc


def load_object(spec: str) -> Any:
    """The object ``spec`` (``MODULE:NAME``) names.

    Raises:
        TargetError: ``spec`` is not ``MODULE:NAME``, the module is not found or
            fails to import, or the attribute path is missing.
    """
    module_text, name = _split(spec)
    module = _load_file(module_text) if _is_path(module_text) else _import(module_text)
    obj: Any = module
    walked = module_text
    for part in name.split("."):
        if not hasattr(obj, part):
            raise TargetError(f"{walked!r} has no attribute {part!r} (looking up {spec!r})")
        owner = obj
        obj = getattr(obj, part)
        if isinstance(owner, type) and inspect.isfunction(inspect.getattr_static(owner, part)):
            # A plain function in a class is an instance method: calling it through
            # the class would pass the first argument of each call as `self`.
            raise TargetError(
                f"{spec!r} is an instance method; give a module-level function, "
                "a staticmethod or a classmethod"
            )
        walked = f"{walked}:{part}" if walked == module_text else f"{walked}.{part}"
    return obj


# -- the target ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """The callable under load, and the ``MODULE:NAME`` (or the name) it is shown as."""

    function: Callable[..., Awaitable[Any]]
    name: str


def resolve_target(spec: str) -> Target:
    """The async callable ``spec`` names.

    Accepted: a coroutine function, or any callable whose call returns an
    awaitable (an asyncperf ``@runtime.handler``, a ``functools.partial`` of a
    coroutine function...). The latter is checked on the first call, which the
    runner makes before measuring (``run_load`` raises :class:`TargetError`
    when it returns no awaitable).

    Raises:
        TargetError: as :func:`load_object`, or the object is not callable, or
            it is an async generator function (which returns no awaitable).
    """
    obj = load_object(spec)
    if inspect.isasyncgenfunction(obj):
        raise TargetError(
            f"{spec!r} is an async generator function, not a coroutine function; "
            "load-test an `async def` that returns a result"
        )
    if inspect.isclass(obj) or not callable(obj):
        raise TargetError(
            f"{spec!r} is {_kind(obj)}, not an async function (a coroutine function "
            "or a callable that returns an awaitable)"
        )
    return Target(obj, spec)


def resolve_setup(spec: str) -> Callable[[], contextlib.AbstractAsyncContextManager[Any]]:
    """A factory of the async context manager ``spec`` names, entered around a load run.

    ``spec`` may name an async context manager itself (an ``asyncperf.Runtime``
    object), or a function returning one (an ``@asynccontextmanager`` function).

    Raises:
        TargetError: as :func:`load_object`, or the object is neither.
    """
    obj = load_object(spec)
    if _is_async_context_manager(obj):
        manager: contextlib.AbstractAsyncContextManager[Any] = obj
        return lambda: manager
    if inspect.isclass(obj) or not callable(obj):
        raise TargetError(
            f"{spec!r} is {_kind(obj)}, not an async context manager or a function returning one"
        )

    def enter() -> contextlib.AbstractAsyncContextManager[Any]:
        manager = obj()
        if not _is_async_context_manager(manager):
            raise TargetError(
                f"{spec!r} returned {_kind(manager)}, not an async context manager "
                "(an object with __aenter__ and __aexit__)"
            )
        return manager  # type: ignore[no-any-return]

    return enter


def _is_async_context_manager(obj: object) -> bool:
    return hasattr(obj, "__aenter__") and hasattr(obj, "__aexit__") and not inspect.isclass(obj)


def _kind(obj: object) -> str:
    if inspect.isclass(obj):
        return f"the class {obj.__qualname__}"
    if inspect.ismodule(obj):
        return f"the module {obj.__name__}"
    return f"{'an' if type(obj).__name__[0] in 'aeiou' else 'a'} {type(obj).__name__}"


# -- argument sources ----------------------------------------------------------------


def as_call(item: object) -> Call:
    """The arguments of one call from one item of a source.

    A tuple is the positional arguments, a dict the keyword arguments (its keys
    must be strings), anything else the one positional argument.

    Raises:
        ArgumentsError: a dict with a key that is not a string.
    """
    if isinstance(item, tuple):
        return item, {}
    if isinstance(item, dict):
        for key in item:
            if not isinstance(key, str):
                raise ArgumentsError(f"keyword argument names must be strings, not {key!r}")
        return (), item
    return (item,), {}


class ArgumentSource(Protocol):
    """Where the arguments of the calls come from."""

    #: How the source is shown in reports (``none``, ``MODULE:NAME``, a file name).
    description: str

    def calls(self) -> Iterator[Call]:
        """The arguments of every call, without end (a finite source starts again).

        Raises:
            ArgumentsError: while iterating, a bad item or a source with no items.
        """
        ...


class NoArguments:
    """Every call without arguments."""

    description = "none"

    def calls(self) -> Iterator[Call]:
        return itertools.repeat(((), {}))


class GeneratorArguments:
    """The items of ``function()``, a function returning an iterable of items.

    When the iterable is exhausted, ``function`` is called again for a fresh one.
    """

    def __init__(self, function: Callable[[], Iterable[object]], description: str) -> None:
        self.function = function
        self.description = description

    @classmethod
    def from_spec(cls, spec: str) -> GeneratorArguments:
        """The generator function ``spec`` (``MODULE:NAME``) names.

        Raises:
            TargetError: as :func:`load_object`, or it is not a callable.
        """
        obj = load_object(spec)
        if inspect.isclass(obj) or not callable(obj):
            raise TargetError(
                f"{spec!r} is {_kind(obj)}, not a function returning the argument items"
            )
        if inspect.iscoroutinefunction(obj) or inspect.isasyncgenfunction(obj):
            raise TargetError(
                f"{spec!r} is an async function; give a plain function (or generator "
                "function) returning an iterable of argument items"
            )
        return cls(obj, spec)

    def _fresh(self) -> Iterator[object]:
        try:
            return iter(self.function())
        except TypeError as exc:
            raise ArgumentsError(
                f"{self.description} must return an iterable of argument items ({exc})"
            ) from exc

    def calls(self) -> Iterator[Call]:
        index = 0
        while True:
            yielded = False
            for item in self._fresh():
                yielded = True
                index += 1
                try:
                    yield as_call(item)
                except ArgumentsError as exc:
                    raise ArgumentsError(f"{self.description}, item {index}: {exc}") from None
            if not yielded:
                raise ArgumentsError(
                    f"{self.description} returned no argument items"
                    + (" when called again; return a fresh iterable on each call" if index else "")
                )


class FileArguments:
    """The lines of a JSON-lines file, read (and checked) when created.

    Each non-blank line is a JSON value: an array is the positional arguments,
    an object the keyword arguments, anything else the one argument.

    Raises:
        ArgumentsError: the file cannot be read, a line is not JSON (the error
            names the file and the line number), or it has no lines.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.description = str(path)
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ArgumentsError(f"cannot read {self.description}: {exc}") from exc
        self.items: list[Call] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ArgumentsError(
                    f"{self.description}, line {number}: not JSON ({exc.msg} at column {exc.colno})"
                ) from None
            self.items.append((tuple(value), {}) if isinstance(value, list) else as_call(value))
        if not self.items:
            raise ArgumentsError(f"{self.description} has no argument lines")

    def calls(self) -> Iterator[Call]:
        return itertools.cycle(self.items)
