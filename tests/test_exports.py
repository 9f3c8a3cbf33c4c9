"""The public namespace: one door, sorted, every name documented and reporting asyncperf.X."""

from __future__ import annotations

import inspect

import asyncperf
import asyncperf.abc
import asyncperf.testing


def isort_key(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions: the order ruff keeps __all__ in."""
    if name.isupper():
        return (0, name)
    return (1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted, and lists every public name the package defines."""
    assert list(asyncperf.__all__) == sorted(asyncperf.__all__, key=isort_key)
    public = {name for name in vars(asyncperf) if not name.startswith("_")}
    public -= {
        "abc",
        "backends",
        "cache",
        "io",
        "loop",
        "observability",
        "pools",
        "queues",
        "runtime",
        "supervisor",
        "workers",
        "testing",
        "tools",
    }  # subpackages
    assert public == set(asyncperf.__all__) - {"__version__"}


def test_exported_objects_report_the_package() -> None:
    """Classes and functions show as asyncperf.X in reprs and tracebacks."""
    for name in asyncperf.__all__:
        obj = getattr(asyncperf, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__ == "asyncperf", name


def test_every_export_has_a_docstring() -> None:
    """Every exported class and function explains itself."""
    for name in asyncperf.__all__:
        obj = getattr(asyncperf, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name


def test_helper_namespaces() -> None:
    """asyncperf.abc and asyncperf.testing export what they list."""
    for module in (asyncperf.abc, asyncperf.testing):
        assert list(module.__all__) == sorted(module.__all__, key=isort_key)
        for name in module.__all__:
            assert hasattr(module, name), name


def test_exception_tree() -> None:
    """Every exception derives from AsyncPerfError and the built-in callers already catch."""
    import asyncio

    assert issubclass(asyncperf.JobTimeout, TimeoutError)
    assert issubclass(asyncperf.QueueFull, asyncio.QueueFull)
    assert issubclass(asyncperf.QueueEmpty, asyncio.QueueEmpty)
    assert issubclass(asyncperf.PoolClosed, RuntimeError)
    for name in asyncperf.__all__:
        obj = getattr(asyncperf, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert issubclass(obj, asyncperf.AsyncPerfError), name
