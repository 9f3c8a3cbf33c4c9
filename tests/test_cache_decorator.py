"""Layer 3: @cached: keys from arguments, methods, single-flight, invalidation, types."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine, Hashable
from typing import Any

import pytest

from asyncperf.cache._decorator import CachedFunction, cached
from asyncperf.cache._tiered import TieredCache
from asyncperf.testing import VirtualClock, wait_until
from tests.cache_levels import FakeLevel

CALLS: list[tuple[Any, ...]] = []
TIER = TieredCache(FakeLevel("module"))


@cached(TIER, ttl=60.0)
async def scaled(x: int, factor: int = 2, *, offset: int = 0) -> int:
    """Multiply, remembering the call."""
    CALLS.append((x, factor, offset))
    return x * factor + offset


async def _reset() -> None:
    CALLS.clear()
    await TIER.clear()


# -- keys ---------------------------------------------------------------------------------


async def test_positional_keyword_and_default_arguments_share_a_key() -> None:
    """f(1), f(x=1), f(1, 2) and f(1, factor=2, offset=0) are one call and one entry."""
    await _reset()
    assert await scaled(1) == 2
    assert await scaled(x=1) == 2
    assert await scaled(1, 2) == 2
    assert await scaled(1, factor=2, offset=0) == 2
    assert CALLS == [(1, 2, 0)]
    key = scaled.cache_key(1)
    assert key == (f"{__name__}.scaled", 1, 2, 0)
    assert key == scaled.cache_key(offset=0, x=1)
    assert await scaled(1, offset=1) == 3
    assert await scaled(2) == 4
    assert len(CALLS) == 3


async def test_invalidate_forgets_one_call() -> None:
    """invalidate(args) deletes that call's entry, and only it; it says whether it was there."""
    await _reset()
    await scaled(1)
    await scaled(2)
    assert await scaled.invalidate(x=1) is True
    assert await scaled.invalidate(1) is False
    await scaled(1)
    await scaled(2)
    assert CALLS == [(1, 2, 0), (2, 2, 0), (1, 2, 0)]


async def test_var_arguments_are_part_of_the_key() -> None:
    """*args add a tuple and **kwargs a sorted tuple of items to the key."""
    level = FakeLevel()
    calls = 0

    @cached(level, namespace="va")
    async def join(*parts: str, **options: int) -> str:
        nonlocal calls
        calls += 1
        return "-".join(parts) + str(sorted(options.items()))

    await join("a", "b", x=1, y=2)
    await join("a", "b", y=2, x=1)
    assert calls == 1
    assert join.cache_key("a", "b", y=2, x=1) == ("va", ("a", "b"), (("x", 1), ("y", 2)))
    await join("a")
    assert calls == 2


async def test_an_unhashable_argument_is_named() -> None:
    """An unhashable argument raises TypeError naming it; the function is not called."""
    level = FakeLevel()
    calls = 0

    @cached(level)
    async def total(label: str, values: list[int]) -> int:
        nonlocal calls
        calls += 1
        return sum(values)

    with pytest.raises(TypeError, match=r"^argument 'values' of @cached .*total is unhashable"):
        await total("a", [1, 2])
    with pytest.raises(TypeError, match=r"^argument 'values' of @cached .*\(list\)"):
        await total(values=[1], label="b")
    with pytest.raises(TypeError, match=r"^argument 'values' .* pass key= to build one$"):
        total.cache_key("a", [1])
    assert calls == 0
    assert level.calls == []


async def test_a_custom_key_and_namespace() -> None:
    """key= builds the key from the call's arguments; namespace= is its first item."""
    level = FakeLevel()
    calls = 0

    @cached(level, key=lambda values, **_: tuple(values), namespace="sum")
    async def total(values: list[int], *, note: str = "") -> int:
        nonlocal calls
        calls += 1
        return sum(values)

    assert await total([1, 2]) == 3
    assert await total([1, 2], note="same key") == 3
    assert calls == 1
    assert total.cache_key([1, 2]) == ("sum", (1, 2))
    assert await total.invalidate([1, 2]) is True

    @cached(level, key=lambda values: values)
    async def bad(values: list[int]) -> int:
        return 0

    with pytest.raises(TypeError, match=r"^key= of @cached .*bad returned an unhashable list$"):
        await bad([1])


async def test_functions_with_the_same_arguments_do_not_share_entries() -> None:
    """The default namespace is the function's module and qualname."""
    level = FakeLevel()

    @cached(level)
    async def double(x: int) -> int:
        return 2 * x

    @cached(level)
    async def triple(x: int) -> int:
        return 3 * x

    assert (await double(1), await triple(1)) == (2, 3)
    assert double.cache_key(1) != triple.cache_key(1)
    assert double.cache_key(1)[0].endswith("<locals>.double")  # type: ignore[index]


# -- methods ------------------------------------------------------------------------------


class Repository:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[int] = []

    @cached(TIER)
    async def fetch(self, item: int, scale: int = 1) -> tuple[str, int]:
        self.calls.append(item)
        return (self.name, item * scale)

    @staticmethod
    @cached(TIER)
    async def static(item: int) -> int:
        return item + 1

    @classmethod
    @cached(TIER)
    async def build(cls, item: int) -> str:
        return f"{cls.__name__}:{item}"


async def test_methods_leave_self_out_of_the_key() -> None:
    """Instances share entries: self is not part of the key (give key= when it should be)."""
    await _reset()
    first, second = Repository("first"), Repository("second")
    assert await first.fetch(1) == ("first", 1)
    assert await second.fetch(1) == ("first", 1)
    assert await second.fetch(item=1, scale=1) == ("first", 1)
    assert (first.calls, second.calls) == ([1], [])
    assert first.fetch.cache_key(1) == (f"{__name__}.Repository.fetch", 1, 1)
    assert await second.fetch.invalidate(1) is True
    assert await second.fetch(1) == ("second", 1)


async def test_static_and_class_methods() -> None:
    """A static method keys on all its arguments; a class method leaves cls out."""
    await _reset()
    assert await Repository.static(1) == 2
    assert Repository.static.cache_key(1) == (f"{__name__}.Repository.static", 1)
    # mypy does not bind cls through @classmethod for a callable protocol (runtime does).
    assert await Repository.build(3) == "Repository:3"  # type: ignore[call-arg, arg-type]
    key = Repository.build.cache_key(3)  # type: ignore[call-arg, arg-type]
    assert key == (f"{__name__}.Repository.build", 3)


class Outside:
    """@cached written above @staticmethod and @classmethod (the other order)."""

    @cached(TIER)
    @staticmethod
    async def static(item: int) -> int:
        return item + 1

    @cached(TIER)
    @classmethod
    async def build(cls, item: int) -> str:
        return f"{cls.__name__}:{item}"


async def test_cached_above_static_and_class_methods() -> None:
    """Above @staticmethod or @classmethod, @cached keeps the method's kind: it is called
    through the class and through an instance, and its key is as in the usual order."""
    await _reset()
    # Type checkers bind the first parameter through the wrapper's type in this order (the
    # runtime does not), so the class is used untyped here.
    outside: Any = Outside
    assert await outside.static(1) == 2
    assert await outside().static(2) == 3
    assert outside.static.cache_key(1) == (f"{__name__}.Outside.static", 1)
    assert await outside.build(3) == "Outside:3"
    assert await outside().build(4) == "Outside:4"
    assert outside.build.cache_key(3) == (f"{__name__}.Outside.build", 3)
    assert await outside().static.invalidate(2) is True


# -- loading ------------------------------------------------------------------------------


async def test_concurrent_calls_run_once_through_a_tiered_cache() -> None:
    """With a TieredCache, concurrent identical calls share one run (single-flight)."""
    gate = asyncio.Event()
    runs = 0

    async with TieredCache(FakeLevel()) as cache:

        @cached(cache)
        async def slow(x: int) -> int:
            nonlocal runs
            runs += 1
            await gate.wait()
            return x

        callers = [asyncio.create_task(slow(7)) for _ in range(100)]
        await wait_until(lambda: runs == 1)
        gate.set()
        assert await asyncio.gather(*callers) == [7] * 100
        assert runs == 1
        assert cache.statistics().coalesced == 99


async def test_exceptions_propagate_and_are_not_cached() -> None:
    """The function's exception reaches the caller; the next call runs it again."""
    runs = 0

    async with TieredCache(FakeLevel()) as cache:

        @cached(cache)
        async def flaky() -> str:
            nonlocal runs
            runs += 1
            if runs == 1:
                raise ConnectionError("first call fails")
            return "ok"

        with pytest.raises(ConnectionError, match=r"^first call fails$"):
            await flaky()
        assert await flaky() == "ok"
        assert await flaky() == "ok"
        assert runs == 2


@pytest.mark.virtual_time
async def test_a_bare_level_reads_then_writes_with_the_ttl(clock: VirtualClock) -> None:
    """With a level, a miss calls the function and sets the result with the ttl; None is kept."""
    level = FakeLevel(clock=clock)
    runs = 0

    @cached(level, ttl=10.0)
    async def nothing(x: int) -> str | None:
        nonlocal runs
        runs += 1
        return None

    assert await nothing(1) is None
    assert await nothing(1) is None
    assert runs == 1
    key = nothing.cache_key(1)
    assert level.ops("get_entry") == [key, key]
    assert level.ops("set") == [key]
    assert level.remaining(key) == 10.0
    await clock.sleep(10.0)
    await nothing(1)
    assert runs == 2


@pytest.mark.virtual_time
async def test_ttl_through_a_tiered_cache(clock: VirtualClock) -> None:
    """The decorator's ttl reaches every level of the tier."""
    l1, l2 = FakeLevel("l1", clock=clock), FakeLevel("l2", clock=clock)
    async with TieredCache(l1, l2, clock=clock) as cache:

        @cached(cache, ttl=5.0)
        async def value() -> str:
            return "v"

        await value()
        key = value.cache_key()
        assert (l1.remaining(key), l2.remaining(key)) == (5.0, 5.0)


# -- the wrapper itself --------------------------------------------------------------------


def test_the_signature_and_metadata_are_kept() -> None:
    """inspect.signature, name, docstring and coroutine-ness are the original's."""
    signature = "(x: 'int', factor: 'int' = 2, *, offset: 'int' = 0) -> 'int'"
    assert str(inspect.signature(scaled)) == signature
    assert inspect.signature(scaled) == inspect.signature(scaled.__wrapped__)  # type: ignore[attr-defined]
    assert scaled.__name__ == "scaled"  # type: ignore[attr-defined]
    assert scaled.__doc__ == "Multiply, remembering the call."
    assert inspect.iscoroutinefunction(scaled)
    assert inspect.signature(Repository.fetch).parameters.keys() == {"self", "item", "scale"}


def test_the_types_are_kept() -> None:
    """mypy sees the original parameter and return types (checked by mypy on this file)."""
    plain: Callable[[int, int], Coroutine[Any, Any, int]] = scaled
    method: Callable[[int], Coroutine[Any, Any, tuple[str, int]]] = Repository("r").fetch
    static: Callable[[int], Coroutine[Any, Any, int]] = Repository.static
    key: Hashable = scaled.cache_key(1, offset=2)
    wrapped: CachedFunction[..., int] = scaled
    assert callable(plain)
    assert callable(method)
    assert callable(static)
    assert key is not None
    assert wrapped is scaled


async def _refused_by_the_type_checker() -> None:
    """Never run: each ignore asserts that mypy refuses the call (unused ignores are errors)."""
    await scaled("1")  # type: ignore[arg-type]
    await scaled(1, offset="0")  # type: ignore[arg-type]
    text: str = await scaled(1)  # type: ignore[assignment]
    await Repository("r").fetch("1")  # type: ignore[arg-type]
    scaled.cache_key(1, nope=2)  # type: ignore[call-arg]
    assert text


def test_bad_arguments_name_the_parameter() -> None:
    """The cache, ttl, key and namespace are checked, and so is the function."""
    level = FakeLevel()
    with pytest.raises(TypeError, match=r"^cache must be a TieredCache or a CacheLevel, not dict$"):
        cached({})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^ttl must be > 0, not 0$"):
        cached(level, ttl=0)
    with pytest.raises(TypeError, match=r"^key must be callable, not str$"):
        cached(level, key="k")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^namespace must be a str, not int$"):
        cached(level, namespace=1)  # type: ignore[arg-type]

    def sync(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"^@cached needs an async function, not <function"):
        cached(level)(sync)  # type: ignore[arg-type]


async def test_a_call_with_wrong_arguments_fails_like_the_function() -> None:
    """Arguments that do not bind raise TypeError before anything is read or loaded."""
    level = FakeLevel()

    @cached(level)
    async def one(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"missing a required argument: 'x'"):
        await one()  # type: ignore[call-arg]
    assert level.calls == []
