"""A module imported on its first use, for the libraries only some processes need."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["LazyModule"]


class LazyModule:
    """Stands for the module ``name`` and imports it on the first attribute read.

    ``import asyncperf`` should cost a process only what it uses: the codecs
    (zstandard, lz4) are imported the first time a Compressor touches one, not by
    every process that imports the cache. Declare the real module for the type
    checker under ``TYPE_CHECKING`` and this object otherwise.
    """

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attribute)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<LazyModule {self._name!r} ({state})>"
