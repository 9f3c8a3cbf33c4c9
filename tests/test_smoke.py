import asyncio

import pytest

import asyncperf as ap


async def test_pool_runs_a_job() -> None:
    """A job submitted to a pool returns its result."""

    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    async with ap.WorkerPool(4) as pool:
        assert await pool.run(double, 21) == 42


@pytest.mark.virtual_time
async def test_virtual_time_jumps() -> None:
    """On the virtual loop a long sleep returns at once and moves the clock."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(3600)
    assert loop.time() - start == pytest.approx(3600)


def test_importing_asyncperf_leaves_the_optional_heavy_libraries_alone() -> None:
    """``import asyncperf`` does not import aiocache (and the redis client it pulls in),
    prometheus_client, pyinstrument, matplotlib or the codecs (zstandard, lz4): each
    costs milliseconds and megabytes, and is imported only by the part that uses it."""
    import subprocess
    import sys

    heavy = (
        "aiocache",
        "redis",
        "prometheus_client",
        "pyinstrument",
        "matplotlib",
        "zstandard",
        "lz4",
    )
    code = f"import sys, asyncperf; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""
