"""Suite ``batching``: one await per item against the Batcher, on SQLite and a slow upstream.

Two resources, each driven the two ways by the same 64 caller tasks in a closed
loop (each caller awaits its own item's result, then sends its next item), so
the only difference between the contenders is one call per item against
:class:`~asyncperf.io._batcher.Batcher`:

- ``sqlite writes``: 100,000 writes of 200-byte records to a real SQLite file
  (a fresh temporary directory under /tmp per repetition; WAL,
  ``synchronous=NORMAL``; one table ``records(id INTEGER PRIMARY KEY, body
  BLOB)``). Every SQLite call runs on one dedicated writer thread, never on
  the loop. One at a time, each write is its own INSERT and commit; through
  the Batcher (``max_size=64``, ``max_delay=2 ms``, ``max_concurrency=1``) a
  batch is one ``executemany`` and one commit. Afterwards the table must hold
  exactly the records written, once each.
- ``upstream calls``: 10,000 calls to a fake upstream that answers a list of
  items after 2 ms plus 10 µs per item, with at most 8 requests in flight (a
  connection limit, as rate-limited APIs have). One at a time, each call is a
  request of one item; through the Batcher (``max_size=64``,
  ``max_delay=2 ms``, ``max_concurrency=8``) each batch is one request. Every
  item must get its own answer (``item * 2``).

Per case and contender the suite reports the throughput (items per second of
wall time, from the first submit to the last result) and the per-item latency
(submit to result); for the Batcher, its p99 against the bound
``max_delay + processing_p99`` (one batch's processing time, from the
Batcher's statistics of the same repetition).

Bars: the Batcher has at least 5x the throughput of one-at-a-time on each
case, and its p99 item latency is at most ``max_delay`` plus one batch's
processing time.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import shutil
import sqlite3
import statistics
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from time import perf_counter
from types import TracebackType
from typing import Any, Final

from rich.table import Table
from rich.text import Text

from asyncperf._validate import check_int
from asyncperf.io._batcher import Batcher, BatcherStatistics
from asyncperf.tools.bench._harness import (
    Case,
    Config,
    Harness,
    LoopChoice,
    Plan,
    Result,
    Suite,
    fmt,
    keep_timed_runs,
    quantile,
)

__all__ = [
    "BATCHER",
    "CALLERS",
    "ONE_AT_A_TIME",
    "SQLITE_CASE",
    "SUITE",
    "UPSTREAM_CASE",
    "FakeUpstream",
    "RecordStore",
    "Run",
    "check_batcher",
    "drive",
    "record",
    "sizes",
    "sqlite_batcher",
    "sqlite_one_at_a_time",
    "upstream_batcher",
    "upstream_one_at_a_time",
]

NAME: Final = "batching"
#: Caller tasks, the same for both contenders: each awaits its item's result, then sends the next.
CALLERS: Final = 64
#: Bytes per SQLite record: an 8-byte id, then filler.
RECORD_BYTES: Final = 200

#: The Batcher in front of SQLite. max_size is the number of callers on purpose: in a
#: closed loop at most CALLERS items are ever pending, so a larger batch never fills and
#: every batch would wait out max_delay (see the plan's note).
SQLITE_MAX_SIZE: Final = CALLERS
SQLITE_MAX_DELAY: Final = 0.002
#: One writer thread: a second batch could only queue behind the first.
SQLITE_MAX_CONCURRENCY: Final = 1

#: The Batchers' names (in their statistics and errors).
SQLITE_BATCHER: Final = "sqlite writes"
UPSTREAM_BATCHER: Final = "upstream calls"

#: The fake upstream: seconds per request, plus seconds per item in it, and its
#: connection limit (requests in flight at once).
UPSTREAM_LATENCY: Final = 0.002
UPSTREAM_PER_ITEM: Final = 10e-6
UPSTREAM_CONNECTIONS: Final = 8
UPSTREAM_MAX_SIZE: Final = 64
UPSTREAM_MAX_DELAY: Final = 0.002
#: As many batches in flight as the upstream has connections.
UPSTREAM_MAX_CONCURRENCY: Final = UPSTREAM_CONNECTIONS

#: The issue's sizes, and the --quick ones (a smoke test).
FULL_SIZES: Final = (100_000, 10_000)
QUICK_SIZES: Final = (2_000, 500)
#: Repetitions of the one-at-a-time baselines at most, so the full default run stays
#: near a minute for both loops (100,000 single-row commits take seconds).
BASELINE_MAX_REPEAT: Final = 3

THROUGHPUT_BAR: Final = 5.0
#: p99 item latency / (max_delay + one batch's processing p99).
LATENCY_BAR: Final = 1.0

SQLITE_CASE: Final = "sqlite writes"
UPSTREAM_CASE: Final = "upstream calls"
ONE_AT_A_TIME: Final = "one_at_a_time"
BATCHER: Final = "batcher"


def sizes(quick: bool) -> tuple[int, int]:
    """SQLite writes and upstream calls per run: the issue's sizes, or the quick ones."""
    return QUICK_SIZES if quick else FULL_SIZES


# -- records and the SQLite store ------------------------------------------------------------

# Incompressible filler, the same for every record; the id in front makes each record distinct.
_FILLER: Final = b"".join(
    hashlib.sha256(n.to_bytes(4, "big")).digest() for n in range(RECORD_BYTES // 32 + 1)
)[: RECORD_BYTES - 8]

#: A record to write: its id and its body.
Record = tuple[int, bytes]


def record(index: int) -> Record:
    """Record number ``index``: id ``index`` and a 200-byte body that starts with the id."""
    return index, index.to_bytes(8, "big") + _FILLER


@contextmanager
def _fresh_directory() -> Iterator[Path]:
    """A new temporary directory under /tmp, removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="asyncperf-batching-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class RecordStore:
    """A SQLite file of records written from one dedicated thread.

    Every SQLite call, opening and closing included, runs on the store's single
    worker thread through ``loop.run_in_executor``: the loop never blocks on
    the disk, and the connection is only ever used by the thread that made it.
    Use it as ``async with RecordStore(path) as store``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        #: Transactions committed (one per write_one, one per write_many).
        self.transactions = 0
        #: Seconds spent inside the transactions, on the writer thread.
        self.busy = 0.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._connection: sqlite3.Connection | None = None

    async def __aenter__(self) -> RecordStore:
        await self._on_writer(self._open)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self._on_writer(self._close)
        finally:
            # The thread is idle by now: waiting for it costs microseconds.
            self._executor.shutdown(wait=True)

    async def _on_writer(self, call: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    @property
    def mean_transaction(self) -> float:
        """Mean seconds per transaction (NaN before the first)."""
        return self.busy / self.transactions if self.transactions else math.nan

    # -- on the writer thread ----------------------------------------------------------------

    def _open(self) -> None:
        # isolation_level=None: autocommit, so a lone INSERT is its own transaction and
        # write_many's BEGIN/COMMIT are the only explicit ones.
        connection = sqlite3.connect(self.path, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        self._connection = connection

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError("the record store is not open: use it with `async with`")
        return self._connection

    def _insert_one(self, item: Record) -> int:
        started = perf_counter()
        cursor = self._db().execute("INSERT INTO records (id, body) VALUES (?, ?)", item)
        self.busy += perf_counter() - started
        self.transactions += 1
        row_id = cursor.lastrowid
        if row_id is None:
            raise AssertionError(f"record {item[0]}: SQLite gave no rowid")
        return row_id

    def _insert_many(self, items: list[Record]) -> list[int]:
        db = self._db()
        started = perf_counter()
        db.execute("BEGIN")
        try:
            db.executemany("INSERT INTO records (id, body) VALUES (?, ?)", items)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")  # all of the batch or none of it
            raise
        self.busy += perf_counter() - started
        self.transactions += 1
        # The batch committed, so each record is stored under its own id.
        return [record_id for record_id, _body in items]

    def _summary(self) -> tuple[int, int | None, int | None, float]:
        row = (
            self._db()
            .execute("SELECT COUNT(*), MIN(id), MAX(id), TOTAL(LENGTH(body)) FROM records")
            .fetchone()
        )
        count, low, high, total = row
        return int(count), low, high, float(total)

    # -- on the loop -------------------------------------------------------------------------

    async def write_one(self, item: Record) -> int:
        """Insert one record in its own transaction; its rowid."""
        row_id: int = await self._on_writer(lambda: self._insert_one(item))
        return row_id

    async def write_many(self, items: list[Record]) -> list[int]:
        """Insert the records in one transaction (``executemany``, one commit); their ids."""
        ids: list[int] = await self._on_writer(lambda: self._insert_many(items))
        return ids

    async def verify(self, expected: int) -> int:
        """Check that the table holds records 0 to ``expected - 1``, once each, whole; its rows.

        Ids are the primary key (unique), so N rows with ids from 0 to N-1 are
        exactly those records: nothing lost, nothing doubled.

        Raises:
            AssertionError: a record is missing, extra, or the wrong size.
        """
        summary: tuple[int, int | None, int | None, float] = await self._on_writer(self._summary)
        wanted = (expected, 0, expected - 1, float(expected * RECORD_BYTES))
        if summary != wanted:
            count, low, high, total = summary
            raise AssertionError(
                f"the table holds {count:,} rows (ids {low}..{high}, {total:,.0f} body bytes) "
                f"for {expected:,} writes of {RECORD_BYTES} bytes"
            )
        return summary[0]


# -- the fake upstream ---------------------------------------------------------------------------


class FakeUpstream:
    """A remote service that answers a list of items (``item * 2`` each) after a delay.

    A request takes ``latency + per_item * len(items)`` seconds and holds one of
    ``connections`` slots meanwhile; more requests wait for a slot, as on a
    rate-limited API. It counts what it served, to check nothing was lost.
    """

    def __init__(
        self,
        latency: float = UPSTREAM_LATENCY,
        per_item: float = UPSTREAM_PER_ITEM,
        connections: int = UPSTREAM_CONNECTIONS,
    ) -> None:
        self.latency = latency
        self.per_item = per_item
        self.connections = connections
        self._slots = asyncio.Semaphore(connections)
        self.requests = 0
        self.items = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        #: Seconds requests spent holding a slot (the asked delay plus timer slack).
        self.busy = 0.0

    @property
    def mean_request(self) -> float:
        """Mean seconds one request held its slot (NaN before the first)."""
        return self.busy / self.requests if self.requests else math.nan

    async def request(self, items: list[int]) -> list[int]:
        """One request for ``items``: their answers, in order."""
        async with self._slots:
            self.requests += 1
            self.items += len(items)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            started = perf_counter()
            try:
                await asyncio.sleep(self.latency + self.per_item * len(items))
            finally:
                self.busy += perf_counter() - started
                self.in_flight -= 1
        return [item * 2 for item in items]

    def check(self, items: int) -> None:
        """Every item was served once, and never more than ``connections`` requests at once.

        Raises:
            AssertionError: it was not.
        """
        if self.items != items:
            raise AssertionError(f"the upstream served {self.items:,} items for {items:,} calls")
        if self.peak_in_flight > self.connections:
            raise AssertionError(
                f"{self.peak_in_flight} requests in flight at once, over the limit of "
                f"{self.connections}"
            )


# -- the workloads -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """What one run of one contender measured (its own results already checked)."""

    items: int
    #: Wall seconds from the first submit to the last result.
    elapsed: float
    #: Items whose outcome was checked: rows found in the table, or right answers.
    verified: int
    #: Per-item latency, submit to result, in seconds.
    latency_p50: float
    latency_p99: float
    #: Calls to the resource: SQLite transactions committed, or upstream requests.
    calls: int
    #: Mean seconds one call took, measured inside it (writer thread, or connection slot).
    call_mean: float
    #: The Batcher's statistics at the end, and its max_delay (None for one-at-a-time).
    batcher: BatcherStatistics | None = None
    max_delay: float | None = None

    @property
    def throughput(self) -> float:
        """Items per second."""
        return self.items / self.elapsed

    @property
    def mean_batch(self) -> float:
        """Items per call to the resource."""
        return self.items / self.calls

    @property
    def bound(self) -> float:
        """``max_delay + processing_p99`` of the Batcher (NaN for one-at-a-time)."""
        if self.batcher is None or self.max_delay is None:
            return math.nan
        return self.max_delay + self.batcher.processing_p99

    @property
    def latency_over_bound(self) -> float:
        """p99 item latency / the bound: at most 1 is the bar (NaN for one-at-a-time)."""
        return self.latency_p99 / self.bound


async def drive(
    items: int, call: Callable[[int], Awaitable[int]], answer: Callable[[int], int]
) -> tuple[float, list[float], int]:
    """Send items 0..N-1 from the callers in a closed loop.

    Caller ``c`` sends items ``c``, ``c + CALLERS``, ... one after another, so at
    most CALLERS items are in flight.

    Returns:
        The wall seconds, each item's latency (submit to result), and how many items
        got their right answer (all of them: otherwise this raises).

    Raises:
        AssertionError: an item got an answer other than ``answer(item)``.
    """
    latencies = [0.0] * items
    wrong: list[int] = []

    async def caller(first: int) -> None:
        for index in range(first, items, CALLERS):
            started = perf_counter()
            got = await call(index)
            latencies[index] = perf_counter() - started
            if got != answer(index):
                wrong.append(index)

    start = perf_counter()
    await asyncio.gather(*(caller(first) for first in range(min(CALLERS, items))))
    elapsed = perf_counter() - start
    if wrong:
        raise AssertionError(
            f"{len(wrong):,} of {items:,} items got a wrong answer (first: item {min(wrong)})"
        )
    return elapsed, latencies, items - len(wrong)


def _run(
    items: int,
    elapsed: float,
    latencies: list[float],
    verified: int,
    calls: int,
    call_mean: float,
    batcher: Batcher[Any, Any] | None = None,
) -> Run:
    ordered = sorted(latencies)
    return Run(
        items=items,
        elapsed=elapsed,
        verified=verified,
        latency_p50=quantile(ordered, 0.5),
        latency_p99=quantile(ordered, 0.99),
        calls=calls,
        call_mean=call_mean,
        batcher=None if batcher is None else batcher.statistics(),
        max_delay=None if batcher is None else batcher.max_delay,
    )


def check_batcher(stats: BatcherStatistics, items: int, calls: int, max_size: int) -> None:
    """Every item went through exactly one batch, and each batch was one call.

    Raises:
        AssertionError: the Batcher's counts do not add up.
    """
    problems = []
    if not stats.submitted == stats.items == stats.succeeded == items:
        problems.append(
            f"{stats.submitted:,} submitted, {stats.items:,} sent, {stats.succeeded:,} "
            f"succeeded for {items:,} items"
        )
    if stats.failed or stats.cancelled or stats.outstanding or stats.batches_failed:
        problems.append(
            f"{stats.failed} failed, {stats.cancelled} cancelled, {stats.outstanding} "
            f"outstanding, {stats.batches_failed} batches failed"
        )
    if stats.batches != calls or sum(stats.flushes.values()) != calls:
        problems.append(
            f"{stats.batches:,} batches ({sum(stats.flushes.values()):,} flushes) for "
            f"{calls:,} calls to the resource"
        )
    if stats.p99_batch_size > max_size:
        problems.append(f"p99 batch size {stats.p99_batch_size:g} over max_size {max_size}")
    if problems:
        raise AssertionError(f"batcher {stats.name!r}: " + "; ".join(problems))


async def sqlite_one_at_a_time(writes: int) -> Run:
    """``writes`` records, each its own INSERT and commit through the writer thread.

    Raises:
        ValueError: ``writes`` is below 1.
        AssertionError: the table does not hold exactly the records written.
    """
    check_int("writes", writes, minimum=1)
    with _fresh_directory() as directory:
        async with RecordStore(directory / "records.sqlite") as store:

            async def write(index: int) -> int:
                return await store.write_one(record(index))

            elapsed, latencies, _answered = await drive(writes, write, lambda index: index)
            rows = await store.verify(writes)
            if store.transactions != writes:
                raise AssertionError(f"{store.transactions:,} commits for {writes:,} writes")
            return _run(
                writes, elapsed, latencies, rows, store.transactions, store.mean_transaction
            )


async def sqlite_batcher(writes: int) -> Run:
    """``writes`` records through a Batcher whose batch is one ``executemany`` and commit.

    Raises:
        ValueError: ``writes`` is below 1.
        AssertionError: the table does not hold exactly the records written, or the
            Batcher's counts do not add up.
    """
    check_int("writes", writes, minimum=1)
    with _fresh_directory() as directory:
        async with RecordStore(directory / "records.sqlite") as store:
            batcher: Batcher[Record, int] = Batcher(
                store.write_many,
                max_size=SQLITE_MAX_SIZE,
                max_delay=SQLITE_MAX_DELAY,
                max_concurrency=SQLITE_MAX_CONCURRENCY,
                name=SQLITE_BATCHER,
            )
            async with batcher:

                async def write(index: int) -> int:
                    return await batcher.submit(record(index))

                elapsed, latencies, _answered = await drive(writes, write, lambda index: index)
            stats = batcher.statistics()
            check_batcher(stats, writes, store.transactions, SQLITE_MAX_SIZE)
            rows = await store.verify(writes)
            return _run(
                writes,
                elapsed,
                latencies,
                rows,
                store.transactions,
                store.mean_transaction,
                batcher,
            )


async def upstream_one_at_a_time(calls: int) -> Run:
    """``calls`` items, each its own request of one item to the fake upstream.

    Raises:
        ValueError: ``calls`` is below 1.
        AssertionError: an item got a wrong answer, or the upstream's counts are off.
    """
    check_int("calls", calls, minimum=1)
    upstream = FakeUpstream()

    async def call(index: int) -> int:
        (answer,) = await upstream.request([index])
        return answer

    elapsed, latencies, answered = await drive(calls, call, lambda index: index * 2)
    upstream.check(calls)
    if upstream.requests != calls:
        raise AssertionError(f"{upstream.requests:,} requests for {calls:,} calls")
    return _run(calls, elapsed, latencies, answered, upstream.requests, upstream.mean_request)


async def upstream_batcher(calls: int) -> Run:
    """``calls`` items through a Batcher whose batch is one request to the fake upstream.

    Raises:
        ValueError: ``calls`` is below 1.
        AssertionError: an item got a wrong answer, or the counts do not add up.
    """
    check_int("calls", calls, minimum=1)
    upstream = FakeUpstream()
    batcher: Batcher[int, int] = Batcher(
        upstream.request,
        max_size=UPSTREAM_MAX_SIZE,
        max_delay=UPSTREAM_MAX_DELAY,
        max_concurrency=UPSTREAM_MAX_CONCURRENCY,
        name=UPSTREAM_BATCHER,
    )
    async with batcher:
        elapsed, latencies, answered = await drive(calls, batcher.submit, lambda index: index * 2)
    stats = batcher.statistics()
    upstream.check(calls)
    check_batcher(stats, calls, upstream.requests, UPSTREAM_MAX_SIZE)
    return _run(
        calls, elapsed, latencies, answered, upstream.requests, upstream.mean_request, batcher
    )


# -- the suite ----------------------------------------------------------------------------------

Workload = Callable[[int], Coroutine[Any, Any, Run]]


@dataclass(frozen=True, slots=True)
class Contender:
    key: str
    label: str
    workload: Workload


WORKLOADS: Final[dict[str, tuple[Contender, Contender]]] = {
    SQLITE_CASE: (
        Contender(ONE_AT_A_TIME, "one await per write (INSERT + commit)", sqlite_one_at_a_time),
        Contender(
            BATCHER,
            f"Batcher(max_size={SQLITE_MAX_SIZE}, max_delay={SQLITE_MAX_DELAY * 1e3:g} ms, "
            f"max_concurrency={SQLITE_MAX_CONCURRENCY})",
            sqlite_batcher,
        ),
    ),
    UPSTREAM_CASE: (
        Contender(ONE_AT_A_TIME, "one request per call", upstream_one_at_a_time),
        Contender(
            BATCHER,
            f"Batcher(max_size={UPSTREAM_MAX_SIZE}, max_delay={UPSTREAM_MAX_DELAY * 1e3:g} ms, "
            f"max_concurrency={UPSTREAM_MAX_CONCURRENCY})",
            upstream_batcher,
        ),
    ),
}


@dataclass(slots=True)
class _Store:
    """Per loop: the runs of every timed repetition (the warm-up left out), per case."""

    runs: dict[tuple[str, str], list[Run]] = field(default_factory=dict)


_STORES: dict[str, _Store] = {}


def plan(config: Config, loop: LoopChoice) -> Plan:
    """Both contenders on both cases, at the issue's sizes (or the quick ones)."""
    store = _Store()
    _STORES[loop] = store
    writes, calls = sizes(config.quick)
    result = Plan(cases=[])
    for case, items in ((SQLITE_CASE, writes), (UPSTREAM_CASE, calls)):
        for contender in WORKLOADS[case]:
            runs = store.runs.setdefault((case, contender.key), [])
            result.cases.append(
                Case(
                    case=case,
                    contender=contender.key,
                    label=contender.label,
                    make=keep_timed_runs(
                        partial(contender.workload, items), lambda run: run.elapsed, runs
                    ),
                    items=items,
                    unit="µs/item",
                    scale=1e6,
                    max_repeat=BASELINE_MAX_REPEAT if contender.key == ONE_AT_A_TIME else None,
                    note=f"{items:,} items from {CALLERS} closed-loop callers",
                )
            )
    result.notes.append(
        f"batching: the SQLite Batcher's max_size is {SQLITE_MAX_SIZE}, the number of "
        f"callers: in a closed loop at most {CALLERS} items are pending, so a larger "
        "max_size never fills and every batch waits out max_delay (about the throughput "
        "of one-at-a-time then)."
    )
    result.notes.append(
        f"batching: one-at-a-time runs at most {BASELINE_MAX_REPEAT} repetitions "
        "(it is the slow side); the fake upstream sleeps 2 ms + 10 µs per item with "
        f"{UPSTREAM_CONNECTIONS} connections, and 'call ms' shows what a request really took "
        "(the loop's timer slack included)."
    )
    return result


def _median(runs: list[Run], figure: Callable[[Run], float]) -> float:
    values = [figure(run) for run in runs]
    return statistics.median(values) if values else math.nan


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else fmt(seconds * 1e3)


#: Side figures per run: name, unit, the figure, whether higher is better, Batcher only.
_SIDE: Final[tuple[tuple[str, str, Callable[[Run], float], bool, bool], ...]] = (
    ("items_per_s", "items/s", lambda run: run.throughput, True, False),
    ("latency_p50_ms", "ms", lambda run: run.latency_p50 * 1e3, False, False),
    ("latency_p99_ms", "ms", lambda run: run.latency_p99 * 1e3, False, False),
    ("calls", "calls", lambda run: float(run.calls), False, False),
    ("call_ms", "ms", lambda run: run.call_mean * 1e3, False, False),
    ("mean_batch", "items", lambda run: run.mean_batch, True, False),
    ("bound_ms", "ms", lambda run: run.bound * 1e3, False, True),
    ("latency_over_bound", "x", lambda run: run.latency_over_bound, False, True),
)


def _side_results(loop_name: str, results: list[Result], store: _Store) -> list[Result]:
    """The side figures as results: case ``<case>/<figure>``, one per contender."""
    extra: list[Result] = []
    for row in results:
        runs = store.runs.get((row.case, row.contender), [])
        if not runs:
            continue
        for name, unit, figure, higher, batcher_only in _SIDE:
            if batcher_only and row.contender != BATCHER:
                continue
            extra.append(
                Result.side_figure(
                    NAME,
                    f"{row.case}/{name}",
                    row.contender,
                    row.label,
                    loop_name,
                    unit,
                    [figure(run) for run in runs],
                    "one value per timed repetition; median, best and worst",
                    higher_is_better=higher,
                )
            )
    return extra


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    """Print the table of one loop, check the bars, and add the side figures."""
    store = _STORES[loop]
    loop_name = results[0].loop if results else loop
    table = Table(
        title=f"batching: one await per item vs Batcher, {CALLERS} closed-loop callers "
        f"— loop {loop_name}",
        caption="median of the repetitions (one-at-a-time: at most "
        f"{BASELINE_MAX_REPEAT}), each in a fresh loop, SQLite in a fresh file; items/s = "
        "items / wall time, first submit to last result; x one = throughput / "
        "one-at-a-time's; calls = SQLite commits or upstream requests per run; call ms = "
        "mean time of one (writer thread / connection slot); p50, p99 = per-item latency, "
        "submit to result; bound = max_delay + the Batcher's processing p99 (its last "
        "1,024 batches) in the same repetition; p99 bar = median of p99 / bound",
    )
    table.add_column("case")
    table.add_column("contender")
    for column in ("items", "items/s", "x one", "calls", "mean batch", "call ms"):
        table.add_column(column, justify="right")
    for column in ("p50 ms", "p99 ms", "bound ms"):
        table.add_column(column, justify="right")
    table.add_column(f">= {THROUGHPUT_BAR:g}x bar")
    table.add_column("p99 bar")
    for case in dict.fromkeys(r.case for r in results):
        rows = {r.contender: r for r in results if r.case == case}
        baseline = rows.get(ONE_AT_A_TIME)
        for row in rows.values():
            runs = store.runs.get((case, row.contender), [])
            speedup = "-"
            throughput_cell = Text("")
            latency_cell = Text("")
            if baseline is not None:
                ratio = baseline.value / row.value
                speedup = f"{ratio:.2f}x"
                if row.contender == BATCHER:
                    throughput_cell = h.bar(
                        NAME,
                        loop_name,
                        case,
                        BATCHER,
                        f"batcher >= {THROUGHPUT_BAR:g}x one-at-a-time throughput",
                        ratio,
                        ">=",
                        THROUGHPUT_BAR,
                    ).cell()
            if row.contender == BATCHER and runs:
                latency_cell = h.bar(
                    NAME,
                    loop_name,
                    case,
                    BATCHER,
                    "p99 item latency <= max_delay + one batch's processing time",
                    _median(runs, lambda run: run.latency_over_bound),
                    "<=",
                    LATENCY_BAR,
                ).cell()
            table.add_row(
                case,
                row.label,
                f"{row.items:,}",
                fmt(1e6 / row.value),
                speedup,
                fmt(_median(runs, lambda run: float(run.calls))),
                fmt(_median(runs, lambda run: run.mean_batch)),
                _ms(_median(runs, lambda run: run.call_mean)),
                _ms(_median(runs, lambda run: run.latency_p50)),
                _ms(_median(runs, lambda run: run.latency_p99)),
                _ms(_median(runs, lambda run: run.bound)),
                throughput_cell,
                latency_cell,
            )
        table.add_section()
    h.console.print(table)
    h.results.setdefault(NAME, []).extend(_side_results(loop_name, results, store))


SUITE = Suite(
    name=NAME,
    description=f"Micro-batching: {FULL_SIZES[0]:,} writes of {RECORD_BYTES}-byte records to "
    f"SQLite (one writer thread) and {FULL_SIZES[1]:,} calls to an upstream of 2 ms latency "
    f"and {UPSTREAM_CONNECTIONS} connections, from {CALLERS} closed-loop callers: one await "
    "per item against the Batcher (throughput, p99 item latency against max_delay + one "
    "batch's processing time).",
    plan=plan,
    report=report,
)
