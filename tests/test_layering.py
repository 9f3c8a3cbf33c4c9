"""Lower layers never import upper ones (DESIGN.md layers 0-9)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "asyncperf"

# Layer of each part of the package; "shared" parts may be imported from anywhere.
LAYERS = {
    "asyncperf._errors": -1,
    "asyncperf._validate": -1,
    "asyncperf._samples": -1,
    "asyncperf._lazy": -1,
    "asyncperf.abc": -1,
    "asyncperf.loop": 0,
    "asyncperf.queues": 1,
    # I/O optimisation (batching, compression, file I/O): beside the queues, below the cache.
    "asyncperf.io": 1,
    "asyncperf.workers": 2,
    "asyncperf.cache": 3,
    "asyncperf.pools": 4,
    "asyncperf.observability": 6,
    "asyncperf.supervisor": 5,
    "asyncperf.runtime": 7,
    "asyncperf.testing": 8,
    "asyncperf.backends": 9,
    "asyncperf.tools": 8,
}


def layer_of(module: str) -> int:
    for prefix, layer in sorted(LAYERS.items(), key=lambda item: -len(item[0])):
        if module == prefix or module.startswith(prefix + "."):
            return layer
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


SOURCES = sorted(
    p for p in PACKAGE.rglob("*.py") if module_name(p) not in ("asyncperf", "asyncperf.__main__")
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_no_upward_imports(path: Path) -> None:
    """A module imports asyncperf modules of its own layer or lower only."""
    own = layer_of(module_name(path))
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "asyncperf":
                assert own >= 8, f"{path.name} imports the top-level package"
            elif target.startswith("asyncperf."):
                assert layer_of(target) <= own, f"{path.name} (layer {own}) imports {target}"
