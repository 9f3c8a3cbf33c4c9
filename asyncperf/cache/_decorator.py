"""``@cached``: an async function's results kept in a cache, keyed by its arguments."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Concatenate, ParamSpec, Protocol, Self, TypeVar, cast, overload

from asyncperf._validate import check_number
from asyncperf.cache._base import CacheLevel
from asyncperf.cache._tiered import TieredCache

__all__ = ["CachedFunction", "cached"]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
S = TypeVar("S")

_ARGUMENT_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class CachedFunction(Protocol[P, R_co]):
    """What :func:`cached` returns: the async function, with the same signature, plus
    :meth:`cache_key` and :meth:`invalidate` (for a method, called on the bound method
    with the arguments after ``self``: ``obj.method.invalidate(x)``)."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co]: ...

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> Hashable:
        """The key a call with these arguments reads and writes."""
        ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, bool]:
        """Delete the cached result of a call with these arguments; whether there was one."""
        ...

    # Typing only: accessed on an instance, a method loses its first parameter.
    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(
        self: CachedFunction[Concatenate[S, P2], R_co], instance: S, owner: type[Any] | None = None
    ) -> CachedFunction[P2, R_co]: ...


def cached(
    cache: TieredCache | CacheLevel,
    *,
    ttl: float | None = None,
    key: Callable[..., Hashable] | None = None,
    namespace: str | None = None,
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], CachedFunction[P, R]]:
    """Cache the results of an async function or method, keyed by its arguments.

    With a :class:`~asyncperf.cache.TieredCache` the calls go through
    ``get_or_load``, so concurrent calls with the same arguments run the
    function once (single-flight), and the tier's stale windows and negative
    caching apply. With a bare level it is a lookup, then a call and a
    ``set`` on a miss: no single-flight (wrap the level in a TieredCache for that).

    The key is ``(namespace, *arguments)``: the arguments bound to the
    function's signature with the defaults applied, so ``f(1)``, ``f(x=1)``
    and ``f(1, y=2)`` (when 2 is ``y``'s default) share one entry; ``*args``
    add a tuple and ``**kwargs`` a sorted tuple of items. For a method
    (a function in a class whose first parameter is ``self`` or ``cls``) the
    first argument is left out, so instances share entries: give ``key=``
    when the result depends on the instance. With ``key``, the key is
    ``(namespace, key(*arguments))``, ``key`` called with the call's
    arguments (after ``self`` for a method). Every argument must be hashable.

    The decorated function keeps the original's name, docstring, signature
    and types (on instances too: type checkers see ``self`` bound), and gains
    ``cache_key(*args, **kwargs)`` and ``invalidate(*args, **kwargs)``
    (``await``-ed; deletes from every level), which take the arguments after
    ``self`` for a method: ``obj.method.invalidate(x)``. Under
    ``@classmethod`` mypy does not bind ``cls`` through the wrapper's type
    (the runtime does): prefer a static method there, or ignore the call's type.
    ``@cached`` may also be written above ``@staticmethod`` or ``@classmethod``
    (it then caches the function inside), though type checkers follow the usual
    order, below them, better.

    Args:
        cache: where results go: a TieredCache, or one cache level.
        ttl: seconds a result lives (None: the cache's default).
        key: ``key(*args, **kwargs) -> Hashable``, instead of the arguments themselves.
        namespace: the first item of every key (default: the function's module and qualname).

    Raises:
        TypeError: ``cache`` is not a TieredCache or a level, ``key`` is not
            callable, ``namespace`` is not a str, or the decorated function is
            not async. At call time: an argument is unhashable (the message names it).
        ValueError: ``ttl`` is not a positive finite number.
    """
    if not isinstance(cache, TieredCache | CacheLevel):
        raise TypeError(f"cache must be a TieredCache or a CacheLevel, not {type(cache).__name__}")
    checked_ttl = None if ttl is None else check_number("ttl", ttl, minimum=0.0, strict=True)
    if key is not None and not callable(key):
        raise TypeError(f"key must be callable, not {type(key).__name__}")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, not {type(namespace).__name__}")

    def decorate(fn: Callable[P, Coroutine[Any, Any, R]]) -> CachedFunction[P, R]:
        if isinstance(fn, staticmethod | classmethod):
            # Written above @staticmethod or @classmethod: cache the function inside and
            # wrap the result the same way, so it binds as the original did.
            inner = decorate(fn.__func__)
            return cast(CachedFunction[P, R], type(fn)(inner))
        if not inspect.iscoroutinefunction(inspect.unwrap(fn)):
            raise TypeError(f"@cached needs an async function, not {fn!r}")
        make_key = _KeyMaker(fn, namespace, key)
        skip = 1 if make_key.is_method else 0

        if isinstance(cache, TieredCache):
            get_or_load = cache.get_or_load

            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                cache_key = make_key(args[skip:], kwargs)
                return await get_or_load(
                    cache_key, functools.partial(fn, *args, **kwargs), checked_ttl
                )

        else:
            level = cache

            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                cache_key = make_key(args[skip:], kwargs)
                entry = await level.get_entry(cache_key)
                if entry is not None:
                    found: R = entry.value
                    return found
                value = await fn(*args, **kwargs)
                await level.set(cache_key, value, checked_ttl)
                return value

        def cache_key(*args: Any, **kwargs: Any) -> Hashable:
            return make_key(args, kwargs)

        async def invalidate(*args: Any, **kwargs: Any) -> bool:
            return await cache.delete(make_key(args, kwargs))

        functools.update_wrapper(wrapper, fn)
        attributes = vars(wrapper)
        attributes["cache_key"] = cache_key
        attributes["invalidate"] = invalidate
        attributes["cache"] = cache
        return cast(CachedFunction[P, R], wrapper)

    return decorate


class _KeyMaker:
    """Turns a call's arguments (after ``self`` for a method) into a hashable key."""

    __slots__ = (
        "_custom",
        "_defaults",
        "_names",
        "_namespace",
        "_positional",
        "_qualname",
        "_required",
        "_signature",
        "is_method",
    )

    def __init__(
        self, fn: Callable[..., Any], namespace: str | None, custom: Callable[..., Hashable] | None
    ) -> None:
        self._qualname = getattr(fn, "__qualname__", repr(fn))
        self._namespace = (
            namespace
            if namespace is not None
            else f"{getattr(fn, '__module__', None)}.{self._qualname}"
        )
        self._custom = custom
        signature = inspect.signature(fn)
        parameters = list(signature.parameters.values())
        self.is_method = _is_method(self._qualname, parameters)
        if self.is_method:
            parameters = parameters[1:]
        self._signature = signature.replace(parameters=parameters)
        self._names = tuple(parameter.name for parameter in parameters)
        # A call passing a prefix of the parameters positionally, the rest having
        # defaults, needs no binding: its arguments are in signature order, and the
        # defaults complete them.
        if all(p.kind in _ARGUMENT_KINDS for p in parameters):
            self._positional = len(parameters)
            required = [p.default is inspect.Parameter.empty for p in parameters]
            self._required = max((i + 1 for i, needed in enumerate(required) if needed), default=0)
            self._defaults = tuple(p.default for p in parameters)
        else:
            self._positional = self._required = -1
            self._defaults = ()

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
        if self._custom is not None:
            custom = self._custom(*args, **kwargs)
            key = (self._namespace, custom)
            try:
                hash(key)
            except TypeError:
                raise TypeError(
                    f"key= of @cached {self._qualname} returned an unhashable "
                    f"{type(custom).__name__}"
                ) from None
            return key
        if not kwargs and self._required <= len(args) <= self._positional:
            values = args + self._defaults[len(args) :]
        else:
            bound = self._signature.bind(*args, **kwargs)
            bound.apply_defaults()
            values = tuple(self._frozen(name, value) for name, value in bound.arguments.items())
        key = (self._namespace, *values)
        try:
            hash(key)
        except TypeError:
            self._name_unhashable(values)
            raise
        return key

    def _frozen(self, name: str, value: Any) -> Any:
        kind = self._signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            return tuple(sorted(value.items()))
        return value

    def _name_unhashable(self, values: tuple[Any, ...]) -> None:
        names = self._names if len(values) == len(self._names) else ()
        for index, value in enumerate(values):
            try:
                hash(value)
            except TypeError:
                name = names[index] if names else f"#{index}"
                raise TypeError(
                    f"argument {name!r} of @cached {self._qualname} is unhashable "
                    f"({type(value).__name__}): it cannot be part of a cache key; "
                    "pass key= to build one"
                ) from None


def _is_method(qualname: str, parameters: list[inspect.Parameter]) -> bool:
    """A function defined in a class body whose first parameter is ``self`` or ``cls``."""
    parts = qualname.split(".")
    return (
        len(parts) > 1
        and parts[-2] != "<locals>"
        and bool(parameters)
        and parameters[0].name in ("self", "cls")
        and parameters[0].kind in _ARGUMENT_KINDS
    )
