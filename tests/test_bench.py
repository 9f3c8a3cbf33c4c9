import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUITES = {"pool", "queue", "memory"}


def test_bench_quick_run_writes_every_suite(tmp_path: Path) -> None:
    """A --quick run of all suites exits 0 and writes a positive figure for every contender."""
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "bench", "--quick", "--suite", "all", "--loop", "asyncio"]
    proc = subprocess.run(
        [*command, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data["suites"]) == SUITES
    assert data["metadata"]["cpu_count"] == os.cpu_count()
    for name in SUITES:
        results = data["suites"][name]["results"]
        assert results, f"suite {name} has no results"
        for result in results:
            assert result["loop"] == "asyncio"
            assert result["value"] > 0, result
            assert result["samples"], result
            assert all(sample > 0 for sample in result["samples"]), result
    pool = {r["contender"] for r in data["suites"]["pool"]["results"]}
    assert {"floor", "queue_workers", "worker_pool"} <= pool
