"""The Redis queue across processes: throughput, Redis commands per job, and a crash.

``python -m bench.redis_queue`` starts a private redis-server, then

1. **throughput**: fills a :class:`~asyncperf.backends.redis.RedisPriorityQueue`
   with 10,000 jobs over three priorities and drains it with 1, 2 and 3 worker
   processes (each ``consume(handler, workers=16)``, a handler that does no
   work): jobs per second and Redis commands per job (``INFO commandstats``);
2. **proof**: 10,000 jobs, a planted poison job, 3 worker processes whose
   handlers hold a global :class:`~asyncperf.backends.redis.RedisSemaphore`
   slot while they work; one worker is killed with SIGKILL a third of the way
   through. It checks that no job is lost, that duplicates are only jobs whose
   lease was lost, that the global limit was never exceeded, that each
   process took the jobs in priority order, and that the poison job is the one
   dead letter; and reports the recovery time: from the kill until every job
   the killed worker held has been delivered again.

Each worker process is ``python -m bench.redis_queue --worker ...``; it writes
one line per job start (``S``) and end (``E``) to its own file, which survives
a SIGKILL. ``tests/test_redis_multiprocess.py`` runs the proof at 2,000 jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncperf as ap
from asyncperf.abc import Lease
from asyncperf.backends.redis._client import connect, key_join
from asyncperf.backends.redis._queue import RedisPriorityQueue

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "bench-jobs"
LEVELS = tuple(ap.Level(priority=p, max_size=1_000_000) for p in (0, 1, 2))
MAX_ATTEMPTS = 3

# Counts a job as running for its process (a hash field per pid) and keeps the
# peak of the sum over processes: the concurrency actually seen, across all of them.
_TRACK = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if tonumber(ARGV[2]) > 0 then
  local total = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
  if total > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], total) end
  return total
end
return n
"""


# -- the worker process -----------------------------------------------------------


async def _worker(args: argparse.Namespace) -> None:
    client = connect(args.url)
    queue: RedisPriorityQueue[dict[str, Any]] = RedisPriorityQueue(
        client, QUEUE, levels=LEVELS, lease=args.lease, max_attempts=MAX_ATTEMPTS,
        poll_interval=0.2,
    )  # fmt: skip
    running_key, peak_key = key_join(QUEUE, "bench", "running"), key_join(QUEUE, "bench", "peak")
    track = client.register_script(_TRACK)
    pid = str(os.getpid())
    semaphore = None
    if args.limit:
        semaphore = ap_semaphore(client, args.limit, args.lease)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    # Opened once, line-buffered: every record is its own write, so it survives a SIGKILL.
    with open(args.out, "a", buffering=1) as out:  # noqa: ASYNC230

        async def handler(job: Lease[dict[str, Any]]) -> None:
            out.write(f"S {job.id} {job.attempt} {job.priority} {time.time():.6f}\n")
            if job.item["poison"]:
                raise ValueError("poison job")
            if semaphore is not None:
                async with semaphore.acquire():
                    await track(keys=[running_key, peak_key], args=[pid, 1])
                    await asyncio.sleep(args.work)
                    await track(keys=[running_key, peak_key], args=[pid, -1])
            else:
                await asyncio.sleep(args.work)
            out.write(f"E {job.id} {job.attempt} {time.time():.6f}\n")

        await queue.consume(handler, workers=args.workers, stop=stop)
    if semaphore is not None:
        await semaphore.aclose()
    await client.aclose()


def ap_semaphore(client: Any, limit: int, lease: float) -> Any:
    """The limits helper's RedisSemaphore (a global limit with leases)."""
    from asyncperf.backends.redis._semaphore import RedisSemaphore

    return RedisSemaphore(client, "work", limit, lease=lease, namespace=QUEUE)


# -- the scenario -----------------------------------------------------------------


@dataclass
class Scenario:
    """What one run does."""

    jobs: int = 10_000
    processes: int = 3
    workers: int = 16
    lease: float = 2.0
    #: Global concurrency limit (a RedisSemaphore); 0: none.
    limit: int = 0
    #: Seconds each job works (asyncio.sleep), 0: none.
    work: float = 0.0
    #: Kill one worker with SIGKILL after this fraction of the jobs; None: no kill.
    kill_at: float | None = None
    poison: bool = False


@dataclass
class Outcome:
    """What one run measured; ``problems`` lists every check that failed."""

    scenario: Scenario
    seconds: float
    jobs_per_second: float
    commands_per_job: float
    round_trips_per_job: float
    commands: dict[str, int]
    acked: int
    dead_letters: list[str]
    duplicates: int
    duplicates_of_killed: int
    expired: int
    stale_settles: int
    peak_concurrency: int
    recovery_seconds: float | None
    lost_leases: int
    problems: list[str] = field(default_factory=list)


@dataclass
class _Record:
    starts: list[tuple[int, int, int, float]] = field(default_factory=list)  # id, attempt, prio
    ends: list[tuple[int, int, float]] = field(default_factory=list)


def _read(path: Path) -> _Record:
    record = _Record()
    for line in path.read_text().splitlines():
        parts = line.split()
        try:
            if parts[0] == "S" and len(parts) == 5:
                record.starts.append((int(parts[1]), int(parts[2]), int(parts[3]), float(parts[4])))
            elif parts[0] == "E" and len(parts) == 4:
                record.ends.append((int(parts[1]), int(parts[2]), float(parts[3])))
        except (IndexError, ValueError):
            continue  # a line cut by SIGKILL
    return record


def run_scenario(url: str, scenario: Scenario, directory: Path) -> Outcome:
    """Run ``scenario`` against the server at ``url``, workers writing into ``directory``."""
    return asyncio.run(_run(url, scenario, directory))


async def _run(url: str, scenario: Scenario, directory: Path) -> Outcome:
    client = connect(url)
    try:
        return await _run_with(client, url, scenario, directory)
    finally:
        await client.aclose()


async def _commandstats(client: Any) -> Counter[str]:
    info = await client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()})


async def _run_with(client: Any, url: str, scenario: Scenario, directory: Path) -> Outcome:
    queue: RedisPriorityQueue[dict[str, Any]] = RedisPriorityQueue(
        client, QUEUE, levels=LEVELS, lease=scenario.lease, max_attempts=MAX_ATTEMPTS
    )
    await client.flushall()
    before = await _commandstats(client)
    poison_at = scenario.jobs // 2 if scenario.poison else -1
    ids: dict[int, int] = {}  # job id -> priority
    poison_id: int | None = None
    for start in range(0, scenario.jobs, 50):
        chunk = range(start, min(start + 50, scenario.jobs))
        # Jobs of one chunk are put concurrently; their ids (arrival order) are what counts.
        got = await asyncio.gather(
            *(queue.put({"n": n, "poison": n == poison_at}, n % 3) for n in chunk)
        )
        for n, put_id in zip(chunk, got, strict=True):
            assert put_id is not None
            ids[int(put_id)] = n % 3
            if n == poison_at:
                poison_id = int(put_id)
    files = [directory / f"worker-{i}.log" for i in range(scenario.processes)]
    for path in files:
        path.write_text("")
    command = [sys.executable, "-m", "bench.redis_queue", "--worker", url]
    options = ["--workers", str(scenario.workers), "--lease", str(scenario.lease)]
    options += ["--limit", str(scenario.limit), "--work", str(scenario.work)]
    processes = [
        subprocess.Popen([*command, "--out", str(path), *options], cwd=ROOT)  # noqa: ASYNC220
        for path in files
    ]
    killed: int | None = None
    kill_time = recovered_at = None
    held_by_killed: set[int] = set()  # running when killed: started, not ended
    started_by_killed: set[int] = set()
    problems: list[str] = []
    try:
        deadline = time.monotonic() + 60 + scenario.jobs / 100
        while True:
            stats = await queue.statistics()
            settled = stats.acked + stats.dead_letters
            if (
                scenario.kill_at is not None
                and killed is None
                and stats.acked >= scenario.kill_at * scenario.jobs
            ):
                killed = 0
                os.kill(processes[killed].pid, signal.SIGKILL)
                kill_time = time.monotonic()
                processes[killed].wait()
                # Its running count is stale now; its semaphore slots stay held until
                # their leases run out, so nobody can exceed the limit meanwhile.
                await client.hdel(key_join(QUEUE, "bench", "running"), str(processes[killed].pid))
                record = _read(files[killed])
                ended = {(i, a) for i, a, _ in record.ends}
                held_by_killed = {i for i, a, _, _ in record.starts if (i, a) not in ended}
                started_by_killed = {i for i, _, _, _ in record.starts}
            if killed is not None and recovered_at is None:
                redelivered = {
                    i
                    for path in files[1:]
                    for i, attempt, _, _ in _read(path).starts
                    if attempt >= 2 and i in held_by_killed
                }
                if redelivered >= held_by_killed:
                    recovered_at = time.monotonic()
            drained = settled >= scenario.jobs and stats.in_flight == 0 and stats.depth == 0
            if drained and (killed is None or recovered_at is not None):
                break
            if time.monotonic() > deadline:
                problems.append(f"not done in time: {stats}")
                break
            await asyncio.sleep(0.02)  # the monitor's tick: it watches, it does not wait on work
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    after = await _commandstats(client)
    stats = await queue.statistics()
    letters = await queue.dead_letters()
    peak = int(await client.get(key_join(QUEUE, "bench", "peak")) or 0)
    records = [_read(path) for path in files]
    commands = after - before
    commands.pop("info", None)
    commands.pop("flushall", None)
    total = sum(commands.values())
    round_trips = sum(
        calls
        for name, calls in commands.items()
        # Commands a script runs are counted too; these are the ones clients send.
        if name in ("evalsha", "eval", "blpop", "script|load")
    )
    # -- the checks -------------------------------------------------------------------
    finished: defaultdict[int, list[int]] = defaultdict(list)  # job id -> attempts that ended
    for record in records:
        for job_id, attempt, _ in record.ends:
            finished[job_id].append(attempt)
    started_again = {i for r in records for i, attempt, _, _ in r.starts if attempt >= 2}
    expected = set(ids) - ({poison_id} if poison_id is not None else set())
    if set(finished) != expected:
        problems.append(f"jobs lost: {sorted(expected - set(finished))[:10]}")
    if stats.acked != len(expected) or stats.depth or stats.in_flight:
        problems.append(f"queue not settled: {stats}")
    duplicates = {i for i, attempts in finished.items() if len(attempts) > 1}
    for job_id in duplicates:
        if len(set(finished[job_id])) != len(finished[job_id]):
            problems.append(f"job {job_id} ran twice on one lease (attempts {finished[job_id]})")
        if job_id not in started_again:
            problems.append(f"job {job_id} ran twice but was never redelivered")
    if len(duplicates) > stats.expired:
        problems.append(f"{len(duplicates)} duplicates but only {stats.expired} leases lost")
    if scenario.limit and peak > scenario.limit:
        problems.append(f"concurrency peaked at {peak}, above the limit {scenario.limit}")
    if scenario.limit and peak == 0:
        problems.append("the concurrency tracker saw nothing")
    for index, record in enumerate(records):
        order = [(priority, i) for i, attempt, priority, _ in record.starts if attempt == 1]
        if order != sorted(order):
            problems.append(f"worker {index} took jobs out of priority/arrival order")
        if any(ids.get(i) != priority for i, _, priority, _ in record.starts):
            problems.append(f"worker {index} saw a job at the wrong priority")
    if scenario.poison:
        if [letter.id for letter in letters] != [str(poison_id)]:
            problems.append(f"dead letters {[d.id for d in letters]}, expected [{poison_id}]")
        elif "poison job" not in letters[0].reason or letters[0].attempts != MAX_ATTEMPTS:
            problems.append(f"dead letter reason {letters[0].reason!r}")
    elif letters:
        problems.append(f"unexpected dead letters {[d.id for d in letters]}")
    if killed is not None and kill_time is not None and recovered_at is None:
        problems.append("the killed worker's jobs were not redelivered")
    first = min((t for r in records for _, _, _, t in r.starts), default=0.0)
    last = max((t for r in records for _, _, t in r.ends), default=first)
    seconds = max(last - first, 1e-9)
    return Outcome(
        scenario=scenario,
        seconds=seconds,
        jobs_per_second=scenario.jobs / seconds,
        commands_per_job=total / scenario.jobs,
        round_trips_per_job=round_trips / scenario.jobs,
        commands=dict(commands.most_common(12)),
        acked=stats.acked,
        dead_letters=[letter.id for letter in letters],
        duplicates=len(duplicates),
        duplicates_of_killed=len(duplicates & started_by_killed),
        expired=stats.expired,
        stale_settles=stats.stale_settles,
        peak_concurrency=peak,
        recovery_seconds=(
            None if recovered_at is None or kill_time is None else recovered_at - kill_time
        ),
        lost_leases=len(held_by_killed),
        problems=problems,
    )


# -- the command line ---------------------------------------------------------------


def _print(outcomes: Sequence[tuple[str, Outcome]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="RedisPriorityQueue across processes (private redis-server, 127.0.0.1)")
    for column in ("run", "processes", "jobs", "jobs/s", "Redis cmds/job", "round trips/job"):
        table.add_column(column, justify="left" if column == "run" else "right")
    table.add_column("checks")
    for name, outcome in outcomes:
        s = outcome.scenario
        table.add_row(
            name,
            str(s.processes),
            f"{s.jobs:,}",
            f"{outcome.jobs_per_second:,.0f}",
            f"{outcome.commands_per_job:.1f}",
            f"{outcome.round_trips_per_job:.2f}",
            "OK" if not outcome.problems else "FAILED",
        )
    console.print(table)
    for name, outcome in outcomes:
        s = outcome.scenario
        for problem in outcome.problems:
            console.print(f"[red]{name}, {s.processes} processes: {problem}[/red]")
        if s.kill_at is None:
            continue
        recovery = outcome.recovery_seconds
        console.print(
            f"{name}: SIGKILL of 1 of {s.processes} workers after {s.kill_at:.0%} of the jobs; "
            f"it was running {outcome.lost_leases} jobs; all delivered again "
            f"{recovery if recovery is not None else float('nan'):.2f} s after the kill "
            f"(lease {s.lease:g} s); {outcome.expired} leases expired, "
            f"{outcome.duplicates} jobs ran twice ({outcome.duplicates_of_killed} of them "
            f"first on the killed worker); peak concurrency {outcome.peak_concurrency} "
            f"(limit {s.limit}); dead letters {outcome.dead_letters}"
        )
    commands = ", ".join(f"{k} {v / outcomes[0][1].scenario.jobs:.2f}" for k, v in
                         outcomes[0][1].commands.items())  # fmt: skip
    console.print(f"Redis commands per job, 1 process (scripts' inner calls included): {commands}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.redis_queue [--jobs N] [--json FILE]``; 1 when a check failed."""
    parser = argparse.ArgumentParser(prog="python -m bench.redis_queue", description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per run (10,000)")
    parser.add_argument("--json", type=Path, help="write the outcomes to this file")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--lease", type=float, default=2.0, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.url = args.worker
        asyncio.run(_worker(args))
        return 0
    if args.jobs < 10:
        parser.error("--jobs must be at least 10")
    from asyncperf.testing._redis_server import start_redis

    server = start_redis()
    outcomes: list[tuple[str, Outcome]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="asyncperf-redis-queue-") as directory:
            for processes in (1, 2, 3):
                scenario = Scenario(jobs=args.jobs, processes=processes)
                outcomes.append(("throughput", run_scenario(server.url, scenario, Path(directory))))
            proof = Scenario(
                jobs=args.jobs, processes=3, workers=8, limit=12, work=0.002, kill_at=1 / 3,
                poison=True,
            )  # fmt: skip
            outcomes.append(("proof", run_scenario(server.url, proof, Path(directory))))
    finally:
        server.stop()
    _print(outcomes)
    if args.json is not None:
        args.json.write_text(json.dumps([{name: asdict(o)} for name, o in outcomes], indent=2))
    return 1 if any(outcome.problems for _, outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
