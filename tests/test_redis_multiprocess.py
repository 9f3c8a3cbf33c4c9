"""Three worker processes share one Redis queue; one is killed with SIGKILL mid-run.

The scenario is bench/redis_queue.py's proof at 2,000 jobs (the bench runs 10,000):
no job lost, duplicates only for jobs whose lease was lost, the global limit never
exceeded, each process served in priority order, the poison job dead-lettered.
"""

from __future__ import annotations

from pathlib import Path

from asyncperf.testing._redis_server import RedisServer
from bench.redis_queue import Scenario, run_scenario


def test_three_processes_survive_a_sigkill_without_losing_a_job(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    scenario = Scenario(
        jobs=2_000,
        processes=3,
        workers=4,
        lease=1.0,
        limit=6,
        work=0.001,
        kill_at=0.3,
        poison=True,
    )
    outcome = run_scenario(redis_server.url, scenario, tmp_path)
    assert outcome.problems == []
    # Every job but the poison one acked; the poison one is the only dead letter.
    assert outcome.acked == scenario.jobs - 1
    assert len(outcome.dead_letters) == 1
    # The killed worker held leases; they ran out and were delivered again.
    assert outcome.recovery_seconds is not None
    assert outcome.expired >= outcome.lost_leases
    assert outcome.duplicates <= outcome.expired
    # The limit was reached (the test means something) and never exceeded.
    assert 0 < outcome.peak_concurrency <= scenario.limit
    # Every worker wrote its records, and the killed one's file survived the kill.
    logs = sorted(tmp_path.glob("worker-*.log"))
    assert len(logs) == 3
    assert all(path.read_text().startswith("S ") for path in logs)
