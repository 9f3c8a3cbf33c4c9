"""The scripts in examples/: each runs to completion and says what it shows."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))


def test_examples_exist() -> None:
    """The examples directory holds the scripts the README points at."""
    names = {path.name for path in EXAMPLES}
    assert {"quickstart.py", "priorities.py", "bounded_map.py"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(path: Path) -> None:
    """The example exits with status 0, prints its results and nothing on stderr."""
    proc = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert proc.stderr == ""


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_has_one_line_docstring(path: Path) -> None:
    """The example opens with a one-line module docstring."""
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert docstring is not None
    assert "\n" not in docstring.strip()
