"""The L2 disk cache: an SQLite (WAL) index, small values in its rows, large ones in files.

Layout of a cache directory::

    index.sqlite3 (+ -wal, -shm)   one row per entry: key, size, expiry, checksum, value
    index.seq                      8 bytes: the ``seq`` of the last store (see "Presence")
    values/ab/<hash>-<token>.val   values above ``inline_threshold``, one file each
    values/ab/.<name>.<rand>.tmp   a value file being written, renamed to its name when complete
    tmp/                           where older versions wrote value files (still cleaned up)

Threads: every SQLite call runs on a thread the cache owns, never on the event
loop. One writer thread holds the only writing connection of this instance;
reader threads hold their own connections. Requests made during one iteration
of the event loop travel as one batch: the reads as one ``SELECT ... WHERE hash
IN (...)``, the writes as one transaction, and each batch comes back to the loop
with one ``call_soon_threadsafe``. SQLite's locks (``BEGIN IMMEDIATE`` and a
busy timeout) serialize the writers of several instances and processes.

Crash safety: a value file is written to a temp file beside its place, closed, renamed
into place (:meth:`asyncperf.io.FileIO.write_atomic`, at most ``file_concurrency`` at
once), and only then is its row committed; a replaced file is deleted after the commit
that replaced it. A reader therefore finds either the old complete value or the
new one. With ``sync=False`` (the default) this holds when the process dies;
``sync=True`` adds fsync of files and directories and ``synchronous=FULL`` so it
holds when the machine loses power too.

Presence filter: each instance keeps a Bloom filter of the keys the directory
may hold (:mod:`asyncperf.cache._presence`), so a get for a key never stored
is answered on the loop, with no thread hop. It must never say "absent" for a
committed key:

- A set adds its key on the loop *before* its op is queued for the writer, so
  the bits are set before the row can commit; a get that runs after the set
  started sees them, and one that ran before it was not owed the value.
- Every store stamps its row's ``used`` with ``seq`` (meta row, incremented
  under the write lock, never reset). The filter reflects all rows stored with
  ``seq <= watermark``; ``SELECT hash FROM entries WHERE used > ?`` (indexed)
  finds the rest. Row ids are no watermark: an upsert keeps its id, but SQLite
  reuses the largest id after it is deleted and restarts at 1 after a clear.
- Every writer (any instance, any process) writes its new ``seq`` to the
  shared, memory-mapped ``index.seq`` before its COMMIT, while it holds the
  write lock. The loop answers "absent" only when ``index.seq`` is not beyond
  the filter's watermark, so a store committed by anyone before the get shows
  up as a larger stamp and sends the get to SQLite (and the filter is refreshed).
  A writer folds in other writers' rows inside its own transaction, so its own
  stores move the watermark without a refresh.
- Writers that do not write ``index.seq`` (older versions) are covered by
  ``presence_refresh``: the filter is refreshed at least that often before it
  answers a miss, so their stores may read as missing for that long (a lost
  hit, never a wrong value).
- A rebuild replaces the filter (a new *epoch*); a set queued before it and
  committed after it is added again by the writer before that COMMIT.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import mmap
import os
import queue
import sqlite3
import stat
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, Final, Literal, Self

from asyncperf._errors import CacheClosed, CacheError, UnsafeCacheDirectory
from asyncperf._validate import check_bool, check_int, check_number
from asyncperf.cache._base import (
    MISS,
    CacheEntry,
    CacheStatistics,
    EvictionReason,
    LatencySamples,
)
from asyncperf.cache._presence import (
    BloomFilter,
    Presence,
    PresenceStatistics,
    PresenceView,
    capacity_for,
)
from asyncperf.cache._serializers import (
    Codec,
    Compression,
    PickleSerializer,
    Serializer,
    SerializerName,
    make_serializer,
)
from asyncperf.io._compress import MissingDictionary
from asyncperf.io._files import FileIO

__all__ = ["DiskCache", "EvictionName", "encode_key"]

EvictionName = Literal["lrs", "lru"]

logger = logging.getLogger("asyncperf.cache")

INDEX_NAME: Final = "index.sqlite3"
#: The shared stamp of the last store (see "Presence filter" above).
SEQ_NAME: Final = "index.seq"
VALUES_DIR: Final = "values"
TMP_DIR: Final = "tmp"
SCHEMA_VERSION: Final = 1
#: Seconds a connection waits for another's lock before the request fails.
BUSY_TIMEOUT: Final = 10.0
#: Files older than this with no row (or left in tmp/) are removed on open. Younger ones
#: may belong to a write in progress in another process.
ORPHAN_AGE: Final = 300.0
#: Reader threads: SQLite lookups release the GIL, so a second reader overlaps the first.
READERS: Final = 2
#: Gets a reader takes at once (larger batches cost less per get; measured, splitting
#: 64 gets between the two readers gained nothing, for small values or for files).
READ_BATCH: Final = 256
#: Hashes per ``IN (...)`` list (SQLite's variable limit is far above it).
CHUNK: Final = 256
#: Expired rows culled per stored entry in a write batch (bounded work per write).
CULL_PER_SET: Final = 4

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS entries (
        id INTEGER PRIMARY KEY,
        hash BLOB NOT NULL UNIQUE,
        key BLOB NOT NULL,
        used INTEGER NOT NULL,
        expires REAL,
        size INTEGER NOT NULL,
        checksum BLOB NOT NULL,
        value BLOB,
        filename TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS entries_used ON entries (used)",
    "CREATE INDEX IF NOT EXISTS entries_expires ON entries (expires) WHERE expires IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    f"""INSERT OR IGNORE INTO meta VALUES
        ('schema', {SCHEMA_VERSION}), ('size', 0), ('count', 0), ('seq', 0)""",
    # Triggers keep the totals exact whichever process or statement changes a row.
    """CREATE TRIGGER IF NOT EXISTS entries_insert AFTER INSERT ON entries BEGIN
        UPDATE meta SET value = value + NEW.size WHERE name = 'size';
        UPDATE meta SET value = value + 1 WHERE name = 'count';
    END""",
    """CREATE TRIGGER IF NOT EXISTS entries_delete AFTER DELETE ON entries BEGIN
        UPDATE meta SET value = value - OLD.size WHERE name = 'size';
        UPDATE meta SET value = value - 1 WHERE name = 'count';
    END""",
    """CREATE TRIGGER IF NOT EXISTS entries_resize AFTER UPDATE OF size ON entries BEGIN
        UPDATE meta SET value = value + NEW.size - OLD.size WHERE name = 'size';
    END""",
)

_UPSERT: Final = (
    "INSERT INTO entries (hash, key, used, expires, size, checksum, value, filename) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (hash) DO UPDATE SET "
    "key = excluded.key, used = excluded.used, expires = excluded.expires, "
    "size = excluded.size, checksum = excluded.checksum, value = excluded.value, "
    "filename = excluded.filename"
)
_COLUMNS: Final = "hash, key, expires, checksum, value, filename, used"
_LOOKUP_ONE: Final = f"SELECT {_COLUMNS} FROM entries WHERE hash = ?"


@functools.cache
def _lookup_sql(count: int) -> str:
    marks = ", ".join("?" * count)
    return f"SELECT {_COLUMNS} FROM entries WHERE hash IN ({marks})"


@functools.cache
def _files_sql(count: int) -> str:
    marks = ", ".join("?" * count)
    return f"SELECT hash, filename FROM entries WHERE hash IN ({marks})"


# -- keys ---------------------------------------------------------------------------

_KEY_TYPES: Final = "str, bytes, int, float, bool, None or a tuple of them"
_pack_double = struct.Struct(">d").pack


def _encode_into(key: object, out: list[bytes]) -> None:
    # Every form starts with a type tag and is self-delimiting, so a tuple's
    # encoding is the concatenation of its items' and no two keys collide.
    # Numbers follow Python's equality, as a dict (and so MemoryCache) does:
    # True, 1 and 1.0 are one key, and so are False, 0, 0.0 and -0.0. Otherwise
    # a tier would answer get(1) from memory and get(1.0) from disk differently.
    if key is None:
        out.append(b"n")
    elif isinstance(key, int):  # bool included: True == 1
        out.append(b"i%d;" % key)
    elif isinstance(key, float):
        if key.is_integer():
            out.append(b"i%d;" % int(key))
        else:
            out.append(b"d" + _pack_double(key))
    elif isinstance(key, str):
        data = key.encode("utf-8", "surrogatepass")
        out.append(b"s%d:" % len(data))
        out.append(data)
    elif isinstance(key, bytes):
        out.append(b"b%d:" % len(key))
        out.append(key)
    elif isinstance(key, tuple):
        out.append(b"(%d:" % len(key))
        for item in key:
            _encode_into(item, out)
    else:
        raise TypeError(f"key must be {_KEY_TYPES}, not {type(key).__name__}")


def encode_key(key: object) -> bytes:
    """The deterministic, type-tagged bytes of a key.

    ``1``, ``"1"`` and ``b"1"`` differ; keys equal in Python (``1``, ``1.0``,
    ``True``) are one key, as in a dict.

    Raises:
        TypeError: ``key`` (or an item of it) is not one of the accepted types.
    """
    if type(key) is str:
        data = key.encode("utf-8", "surrogatepass")
        return b"s%d:%b" % (len(data), data)
    out: list[bytes] = []
    _encode_into(key, out)
    return b"".join(out)


def _key_hash(encoded: bytes) -> bytes:
    return hashlib.blake2b(encoded, digest_size=16).digest()


# -- requests -----------------------------------------------------------------------

# What a read resolves to: the value and its absolute expiry, or None for a miss.
ReadResult = tuple[Any, float | None] | None
# A read request: key hash, encoded key, wall-clock time of the call, the caller's future.
ReadRequest = tuple[bytes, bytes, float, "asyncio.Future[Any]"]
# A result on its way back to a loop: future (None: nobody waits), value, exception.
Delivery = tuple["asyncio.Future[Any] | None", Any, BaseException | None]


class _Kind:
    SET: Final = 1
    DELETE: Final = 2
    CLEAR: Final = 3
    EXPIRE: Final = 4
    CORRUPT: Final = 5
    TOUCH: Final = 6
    EVICT: Final = 7
    META: Final = 8
    DISCARD: Final = 9
    NOOP: Final = 10


@dataclass(slots=True)
class _Op:
    """One request for the writer thread (fields unused by a kind stay at their defaults)."""

    kind: int
    fut: asyncio.Future[Any] | None = None
    hash: bytes = b""
    key: bytes = b""
    value: bytes | None = None
    #: Absolute path of a value file already complete in its place under values/ whose
    #: row is not committed yet (file-backed sets; DISCARD: the file to remove). Whoever
    #: fails or drops the op removes the file.
    value_file: str | None = None
    #: Path relative to values/ of the value file (file-backed sets; CORRUPT: the row's).
    filename: str | None = None
    checksum: bytes = b""
    size: int = 0
    expires: float | None = None
    hashes: list[bytes] | None = None
    #: CORRUPT: the ``used`` stamp of the damaged row.
    used: Any = None
    #: SET: the presence filter epoch its key was added to (re-added if it changed).
    epoch: int = 0


@dataclass(slots=True)
class _Stop:
    fut: asyncio.Future[None] | None


_READER_DONE: Final = object()
_STOP_READERS: Final = object()


def _deliver(items: list[Delivery]) -> None:
    """On the loop: hand results to the futures still waiting (cancelled ones are skipped)."""
    for fut, value, exc in items:
        if fut is None or fut.done():
            continue
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)


def _send(items: list[Delivery]) -> None:
    """From a thread: one ``call_soon_threadsafe`` per loop for a batch of results."""
    waited = [item for item in items if item[0] is not None]
    if not waited:
        return
    futures = [item[0] for item in waited]
    first_loop = futures[0].get_loop()  # type: ignore[union-attr]
    groups: dict[asyncio.AbstractEventLoop, list[Delivery]] = {first_loop: waited}
    if any(fut.get_loop() is not first_loop for fut in futures):  # type: ignore[union-attr]
        groups = {}
        for item in waited:
            groups.setdefault(item[0].get_loop(), []).append(item)  # type: ignore[union-attr]
    for loop, batch in groups.items():
        try:
            loop.call_soon_threadsafe(_deliver, batch)
        except RuntimeError:
            pass  # the loop is closed: nobody is left waiting for these results


def _failure(action: str, exc: BaseException) -> CacheError:
    error = CacheError(f"Disk cache {action} failed: {exc}")
    error.__cause__ = exc
    return error


def _copy_error(error: CacheError) -> CacheError:
    # One exception object per caller: raising it sets its traceback.
    copy = CacheError(*error.args)
    copy.__cause__ = error.__cause__
    return copy


def _result(op: _Op, value: Any, exc: BaseException | None = None) -> Delivery:
    return (op.fut, value, exc)


def _meta(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return 0 if row is None else int(row[0])


def _corrupt(row: tuple[Any, ...]) -> _Op:
    """The op removing a damaged row (identified by its hash and ``used`` stamp)."""
    filename = row[5]
    return _Op(
        _Kind.CORRUPT,
        hash=row[0],
        used=row[6],
        filename=None if filename is None else _text(filename),
    )


def _text(column: str | bytes) -> str:
    """A TEXT column read with ``text_factory=bytes``, as the str it was stored as."""
    return column.decode("utf-8", "surrogateescape") if isinstance(column, bytes) else column


def _unlink(path: str | os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # best effort: an orphan is removed on a later open
        logger.warning("could not remove %s: %s", path, exc)


_SEQ: Final = struct.Struct("<Q")


class _SeqFile:
    """``index.seq``: 8 bytes, memory-mapped, shared by every process using the directory.

    Written by a writer (under SQLite's write lock) just before it commits a
    store; read on the event loop, where a memory read costs far less than a
    thread hop. A torn or stale read only sends a get to SQLite.
    """

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            if os.fstat(fd).st_size < _SEQ.size:
                os.ftruncate(fd, _SEQ.size)  # never shrinks; racing creators agree on 8
            self._map = mmap.mmap(fd, _SEQ.size)
        finally:
            os.close(fd)  # the map keeps its own handle

    def read(self) -> int:
        """The last seq written (ValueError once closed)."""
        value: int = _SEQ.unpack_from(self._map)[0]
        return value

    def write(self, seq: int) -> None:
        _SEQ.pack_into(self._map, 0, seq)

    def close(self) -> None:
        self._map.close()


# -- the thread side ----------------------------------------------------------------


class _Store:
    """Everything the threads touch: paths, settings, queues, connections, counters.

    Kept apart from :class:`DiskCache` so the threads hold no reference to the
    cache object, which can then be collected (and warn) when never closed.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        codec: Codec,
        serializer: Serializer,
        hmac_key: bytes | None,
        eviction: EvictionName,
        sync: bool,
        time: Callable[[], float],
        presence: Presence | None,
        page_cache: int,
    ) -> None:
        self.directory = directory
        self.page_cache = page_cache
        self.values = directory / VALUES_DIR
        self.tmp = directory / TMP_DIR
        self.index = directory / INDEX_NAME
        self.max_bytes = max_bytes
        self.codec = codec
        self.serializer = serializer
        self.hmac_key = hmac_key
        self.lru = eviction == "lru"
        self.sync = sync
        self.time = time
        self.presence = presence
        #: Opened by the writer at open (None if it could not be: no filter answers then).
        self.seq_file: _SeqFile | None = None
        # Written by the writer thread only; read anywhere (a snapshot is enough).
        self.evictions = dict.fromkeys((reason.value for reason in EvictionReason), 0)
        self.known_bytes = 0
        self.known_entries = 0
        self.open_error: CacheError | None = None
        self.ready = threading.Event()
        self.reads: queue.SimpleQueue[list[ReadRequest] | object] = queue.SimpleQueue()
        self.writes: queue.SimpleQueue[list[_Op] | _Stop | object] = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._writer_main, name="asyncperf-disk-writer")]
        self.threads += [
            threading.Thread(target=self._reader_main, name=f"asyncperf-disk-reader-{i}")
            for i in range(READERS)
        ]
        for thread in self.threads:
            # Daemon: a cache never closed must not keep the interpreter alive.
            thread.daemon = True
            thread.start()

    # -- shared helpers -------------------------------------------------------------

    def seal(self, key_hash: bytes, stored: bytes) -> bytes:
        """The checksum of a stored value, bound to its key (an HMAC when a key is set)."""
        if self.hmac_key is not None:
            return hmac.digest(self.hmac_key, key_hash + stored, "sha256")
        return zlib.crc32(stored, zlib.crc32(key_hash)).to_bytes(4, "big")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.index,
            timeout=BUSY_TIMEOUT,
            isolation_level=None,  # transactions are explicit
            cached_statements=512,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        # In WAL mode NORMAL loses no committed data when the process dies, only
        # when the machine does; FULL survives power loss too.
        conn.execute(f"PRAGMA synchronous = {'FULL' if self.sync else 'NORMAL'}")
        conn.execute("PRAGMA temp_store = MEMORY")
        # A negative cache_size is in KiB (a positive one would be in pages).
        conn.execute(f"PRAGMA cache_size = -{self.page_cache // 1024}")
        return conn

    def stop(self, fut: asyncio.Future[None] | None) -> None:
        """Ask the threads to finish what is queued and exit."""
        self.reads.put(_STOP_READERS)
        self.writes.put(_Stop(fut))

    # -- opening --------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        # Processes opening a new directory at once race to switch it to WAL, and
        # that switch fails at once with "database is locked" instead of waiting
        # for the busy timeout: retry it, on this thread, for as long.
        deadline = time.monotonic() + BUSY_TIMEOUT
        delay = 0.001
        while True:
            try:
                return self._open_once()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _open_once(self) -> sqlite3.Connection:
        conn = self._connect()
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise CacheError(f"SQLite refused WAL mode (journal_mode is {mode})")
            # One transaction, so processes opening a new directory at once agree.
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            version = conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()[0]
            if version == SCHEMA_VERSION:
                self._open_seq_file(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            raise
        if version != SCHEMA_VERSION:
            conn.close()
            raise CacheError(
                f"{self.directory} holds a cache of schema {version}; this version of "
                f"asyncperf reads schema {SCHEMA_VERSION}: use another directory"
            )
        self._refresh_known(conn)
        return conn

    def _open_seq_file(self, conn: sqlite3.Connection) -> None:
        """Map ``index.seq`` and set it to the index's seq (we hold the write lock here).

        A directory last written by a version without the file would otherwise
        keep every miss on the SQLite path until the next store.
        """
        if self.seq_file is None:
            try:
                self.seq_file = _SeqFile(self.directory / SEQ_NAME)
            except OSError as exc:  # the filter then never answers: correct, only slower
                logger.warning("presence filter off for %s: %s", self.directory, exc)
                return
        self.seq_file.write(_meta(conn, "seq"))

    def _cleanup(self, conn: sqlite3.Connection) -> None:
        """Best effort: remove old temp files and value files that no row names."""
        cutoff = time.time() - ORPHAN_AGE  # file times are wall-clock, whatever self.time is
        with os.scandir(self.tmp) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    _unlink(entry.path)
        known = {
            row[0]
            for row in conn.execute("SELECT filename FROM entries WHERE filename IS NOT NULL")
        }
        with os.scandir(self.values) as subdirs:
            for subdir in subdirs:
                if not subdir.is_dir(follow_symlinks=False):
                    continue
                with os.scandir(subdir.path) as files:
                    for entry in files:
                        name = f"{subdir.name}/{entry.name}"
                        if (
                            name not in known
                            and entry.is_file(follow_symlinks=False)
                            and entry.stat().st_mtime < cutoff
                        ):
                            _unlink(entry.path)

    def _refresh_known(self, conn: sqlite3.Connection) -> tuple[int, int]:
        meta = dict(conn.execute("SELECT name, value FROM meta WHERE name IN ('size', 'count')"))
        self.known_bytes = int(meta.get("size", 0))
        self.known_entries = int(meta.get("count", 0))
        return self.known_entries, self.known_bytes

    # -- the writer -----------------------------------------------------------------

    def _writer_main(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._open()
        except Exception as exc:  # whatever it is, every request must learn of it
            self.open_error = (
                exc if isinstance(exc, CacheError) else _failure(f"open of {self.directory}", exc)
            )
        finally:
            self.ready.set()  # readers open their connections once the schema exists
        if conn is not None:
            if self.presence is not None and self.seq_file is not None:
                self._rebuild_presence(conn)
            try:
                self._cleanup(conn)
            except Exception as exc:  # best effort: a later open tries again
                logger.warning("cleanup of %s stopped: %s", self.directory, exc)
        stop: _Stop | None = None
        readers_left = READERS
        while stop is None or readers_left:
            items = [self.writes.get()]
            while True:
                try:
                    items.append(self.writes.get_nowait())
                except queue.Empty:
                    break
            ops: list[_Op] = []
            for item in items:
                if item is _READER_DONE:
                    readers_left -= 1
                elif isinstance(item, _Stop):
                    stop = item
                else:
                    assert isinstance(item, list)  # only ops, sentinels and _Stop are queued
                    ops.extend(item)
            if not ops:
                continue
            if conn is None:
                assert self.open_error is not None  # conn is None only when opening failed
                self._fail(ops, self.open_error)
            else:
                try:
                    self._write_batch(conn, ops)
                except Exception as exc:  # a bug: fail the batch, keep the thread serving
                    logger.exception("disk cache writer failed")
                    if conn.in_transaction:
                        conn.rollback()
                    self._fail(ops, _failure("write", exc))
        if conn is not None:
            conn.close()
        if self.seq_file is not None:
            self.seq_file.close()
        if stop.fut is not None:
            _send([(stop.fut, None, None)])

    def _fail(self, ops: list[_Op], error: CacheError) -> None:
        results: list[Delivery] = []
        for op in ops:
            if op.value_file is not None:
                _unlink(op.value_file)
            if op.fut is not None:
                results.append((op.fut, None, _copy_error(error)))
        _send(results)

    def _write_batch(self, conn: sqlite3.Connection, ops: list[_Op]) -> None:
        """Apply ``ops`` in one transaction, then remove replaced files and deliver results."""
        results: list[Delivery] = []
        meta_ops: list[_Op] = []  # answered after the batch's writes
        placed: list[str] = []  # value files this transaction's rows name (removed on rollback)
        dropped: list[str] = []  # value files whose rows this transaction removed
        evicted = dict.fromkeys(self.evictions, 0)
        sets = 0
        evict = False
        removed_rows = 0
        presence = self.presence
        # The filter as this transaction found it, and other writers' keys to fold in.
        view = presence.view if presence is not None and presence.ready else None
        foreign: list[bytes] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            seq = seq_start = _meta(conn, "seq")
            files = self._current_files(conn, ops)
            for op in ops:
                kind = op.kind
                if kind == _Kind.SET:
                    if op.value_file is not None:
                        # Complete in its place already (written and renamed on the loop,
                        # fsynced with its directory when sync=True): from here on this
                        # transaction owns the file, and removes it if it rolls back.
                        placed.append(op.value_file)
                        op.value_file = None
                    seq += 1
                    conn.execute(
                        _UPSERT,
                        (
                            op.hash,
                            op.key,
                            seq,
                            op.expires,
                            op.size,
                            op.checksum,
                            op.value,
                            op.filename,
                        ),
                    )
                    old = files.get(op.hash)
                    if old is not None and old != op.filename:
                        dropped.append(old)
                    if op.filename is None:
                        files.pop(op.hash, None)
                    else:
                        files[op.hash] = op.filename
                    if presence is not None and op.epoch != presence.view.epoch:
                        # Added to a filter since replaced (rebuilt or cleared): add it to
                        # the current one before the row commits.
                        op.epoch = presence.add(op.hash)
                    sets += 1
                    results.append(_result(op, True))
                elif kind == _Kind.DELETE:
                    removed = conn.execute("DELETE FROM entries WHERE hash = ?", (op.hash,))
                    old = files.pop(op.hash, None)
                    if old is not None:
                        dropped.append(old)
                    removed_rows += max(removed.rowcount, 0)
                    results.append(_result(op, removed.rowcount > 0))
                elif kind == _Kind.TOUCH:
                    assert op.hashes is not None  # TOUCH always carries its hashes
                    rows = []
                    for key_hash in op.hashes:
                        seq += 1
                        rows.append((seq, key_hash))
                    conn.executemany("UPDATE entries SET used = ? WHERE hash = ?", rows)
                elif kind == _Kind.CORRUPT:
                    # Only the damaged version (`used` changes whenever the entry is
                    # stored): a value stored since then is left alone.
                    removed = conn.execute(
                        "DELETE FROM entries WHERE hash = ? AND used = ?", (op.hash, op.used)
                    )
                    if removed.rowcount:
                        evicted[EvictionReason.CORRUPT] += removed.rowcount
                        if op.filename is not None:
                            dropped.append(op.filename)
                            files.pop(op.hash, None)
                    results.append(_result(op, None))
                elif kind == _Kind.EXPIRE:
                    count = self._remove_expired(conn, None, dropped)
                    evicted[EvictionReason.EXPIRED] += count
                    results.append(_result(op, count))
                elif kind == _Kind.CLEAR:
                    dropped.extend(
                        row[0]
                        for row in conn.execute(
                            "SELECT filename FROM entries WHERE filename IS NOT NULL"
                        )
                    )
                    conn.execute("DELETE FROM entries")
                    files.clear()
                    results.append(_result(op, None))
                elif kind == _Kind.EVICT:
                    evict = True
                elif kind == _Kind.META:
                    meta_ops.append(op)
                elif kind == _Kind.DISCARD:
                    assert op.value_file is not None  # DISCARD always names its file
                    _unlink(op.value_file)
                    op.value_file = None
                else:  # NOOP
                    results.append(_result(op, None))
            if sets:
                evicted[EvictionReason.EXPIRED] += self._remove_expired(
                    conn, CULL_PER_SET * sets, dropped
                )
            if sets or evict:
                evicted[EvictionReason.CAPACITY] += self._evict_to_capacity(conn, dropped)
            if seq != seq_start:
                conn.execute("UPDATE meta SET value = ? WHERE name = 'seq'", (seq,))
                if view is not None and view.watermark != seq_start:
                    # Others stored since the filter's watermark: their rows (all committed
                    # before we took the lock) join the filter with ours.
                    foreign = [
                        row[0]
                        for row in conn.execute(
                            "SELECT hash FROM entries WHERE used > ?", (view.watermark,)
                        )
                    ]
                if self.seq_file is not None:
                    # Before COMMIT, under the write lock: once the rows are visible, every
                    # reader's loop sees a seq its filter has not reached yet.
                    self.seq_file.write(seq)
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the failed COMMIT may have rolled back already
            for path in placed:
                _unlink(path)  # rolled back: no row names these files
            error = _failure("write", exc)
            failed: list[Delivery] = []
            for op in ops:
                if op.value_file is not None:
                    _unlink(op.value_file)
                if op.fut is not None:
                    failed.append((op.fut, None, _copy_error(error)))
            _send(failed)
            return
        rebuild = False
        if presence is not None and view is not None:
            # Every row stored up to `seq` is in the filter now: ours were added on the
            # loop (or above), the others' are folded in. First thing after COMMIT: until
            # then the loop sees our stamp ahead of the watermark and sends misses here.
            rebuild = presence.committed(
                foreign,
                view.epoch,
                seq if seq != seq_start else None,
                self.time(),
                removed_rows + sum(evicted.values()),
            )
        for name in dropped:
            _unlink(self.values / name)
        for reason, count in evicted.items():
            if count:
                self.evictions[reason] += count
        meta = self._refresh_known(conn)
        results.extend(_result(op, meta) for op in meta_ops)
        _send(results)
        if rebuild:
            self._rebuild_presence(conn)  # after the answers: they need not wait for it

    def _rebuild_presence(self, conn: sqlite3.Connection) -> None:
        """Build a filter of every key in the index (on the writer, between transactions).

        Sized for twice the entries found. Sets queued meanwhile went into the old
        filter; the writer adds them again when it commits them (their epoch is old).
        """
        presence = self.presence
        assert presence is not None  # called only when the filter is on
        try:
            conn.execute("BEGIN")  # one snapshot: the seq and the rows agree
            try:
                seq = _meta(conn, "seq")
                hashes = [row[0] for row in conn.execute("SELECT hash FROM entries")]
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:  # keep the old filter: still correct, only fuller
            logger.warning("presence filter rebuild of %s failed: %s", self.directory, exc)
            return
        bits = BloomFilter(capacity_for(len(hashes)))
        load = 0
        for key_hash in hashes:
            if bits.add(key_hash):
                load += 1
        presence.replace(bits, load, seq, self.time())

    def _refresh_presence(self, conn: sqlite3.Connection) -> None:
        """Fold in the keys stored by anyone since the filter's watermark (a reader thread)."""
        presence = self.presence
        assert presence is not None  # called only when the filter is on
        presence.refresh_wanted = False
        if not presence.ready:
            return
        view = presence.view
        now = self.time()
        conn.execute("BEGIN")  # one snapshot: the seq and the rows agree
        try:
            seq = _meta(conn, "seq")
            hashes = [
                row[0]
                for row in conn.execute(
                    "SELECT hash FROM entries WHERE used > ?", (view.watermark,)
                )
            ]
        finally:
            conn.execute("COMMIT")
        presence.fold(hashes, view.epoch, seq, now, refresh=True)

    def _current_files(self, conn: sqlite3.Connection, ops: list[_Op]) -> dict[bytes, str]:
        """The value files of the keys that ``ops`` store or delete (inline ones left out)."""
        hashes = list({op.hash for op in ops if op.kind in (_Kind.SET, _Kind.DELETE)})
        files: dict[bytes, str] = {}
        for start in range(0, len(hashes), CHUNK):
            chunk = hashes[start : start + CHUNK]
            for key_hash, filename in conn.execute(_files_sql(len(chunk)), chunk):
                if filename is not None:
                    files[key_hash] = filename
        return files

    def _remove_expired(
        self, conn: sqlite3.Connection, limit: int | None, dropped: list[str]
    ) -> int:
        sql = "SELECT id, filename FROM entries WHERE expires <= ? ORDER BY expires"
        args: tuple[float, ...] | tuple[float, int] = (self.time(),)
        if limit is not None:
            sql += " LIMIT ?"
            args = (self.time(), limit)
        rows = conn.execute(sql, args).fetchall()
        if rows:
            conn.executemany("DELETE FROM entries WHERE id = ?", [(row[0],) for row in rows])
            dropped.extend(row[1] for row in rows if row[1] is not None)
        return len(rows)

    def _evict_to_capacity(self, conn: sqlite3.Connection, dropped: list[str]) -> int:
        excess = _meta(conn, "size") - self.max_bytes
        if excess <= 0:
            return 0
        victims: list[tuple[int]] = []
        # Oldest `used` first: least recently stored (lrs) or used (lru).
        cursor = conn.execute("SELECT id, filename, size FROM entries ORDER BY used, id")
        try:
            for row_id, filename, size in cursor:
                victims.append((row_id,))
                if filename is not None:
                    dropped.append(filename)
                excess -= size
                if excess <= 0:
                    break
        finally:
            cursor.close()
        conn.executemany("DELETE FROM entries WHERE id = ?", victims)
        return len(victims)

    # -- the readers ----------------------------------------------------------------

    def _reader_main(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            self.ready.wait()
            error = self.open_error
            if error is None:
                try:
                    conn = self._connect()
                    # Damage can turn a BLOB into invalid TEXT: read every column as bytes
                    # so such a row is a checksum failure, not an error for the whole batch.
                    conn.text_factory = bytes
                except Exception as exc:
                    error = _failure(f"open of {self.directory}", exc)
            stopping = False
            while not stopping:
                item = self.reads.get()
                batch: list[ReadRequest] = []
                while True:
                    if item is _STOP_READERS:
                        stopping = True
                        break
                    assert isinstance(item, list)  # only request lists and the sentinel
                    batch.extend(item)
                    if len(batch) >= READ_BATCH:
                        break  # leave the rest to another reader
                    try:
                        item = self.reads.get_nowait()
                    except queue.Empty:
                        break
                if not batch:
                    continue
                if conn is None:
                    assert error is not None  # no connection only when opening failed
                    _send([(req[3], None, _copy_error(error)) for req in batch])
                else:
                    if self.presence is not None and self.presence.refresh_wanted:
                        # Before the answers go back (this is rare: a stamp from another
                        # writer, or presence_refresh elapsed), so that a caller who got
                        # them finds the filter up to date.
                        try:
                            self._refresh_presence(conn)
                        except Exception as exc:  # the filter stays behind: misses hop
                            logger.warning("presence filter refresh failed: %s", exc)
                            if conn.in_transaction:
                                conn.execute("ROLLBACK")
                    self._read_batch(conn, batch)
        finally:
            self.reads.put(_STOP_READERS)  # for the other readers
            if conn is not None:
                conn.close()
            self.writes.put(_READER_DONE)

    def _read_batch(self, conn: sqlite3.Connection, batch: list[ReadRequest]) -> None:
        results: list[Delivery] = []
        damaged: list[_Op] = []
        touched: list[bytes] = []
        try:
            hashes = list({req[0] for req in batch})
            rows: dict[bytes, tuple[Any, ...]] = {}
            for start in range(0, len(hashes), CHUNK):
                chunk = hashes[start : start + CHUNK]
                for row in conn.execute(_lookup_sql(len(chunk)), chunk).fetchall():
                    rows[row[0]] = row
            for key_hash, key, now, fut in batch:
                if fut.done():
                    continue  # cancelled while queued: its result is not wanted
                row = rows.get(key_hash)
                if row is None:
                    results.append((fut, None, None))
                    continue
                try:
                    expires = row[2]
                    if expires is not None and expires <= now:
                        results.append((fut, None, None))  # culled by a later write
                        continue
                    found = self._decode_row(conn, row, key, rows)
                except sqlite3.Error:
                    raise
                except Exception:
                    # A damaged column (a wrong type, say): the entry is unusable.
                    found = _corrupt(row)
                if found is MISS:
                    results.append((fut, None, None))
                    continue
                if isinstance(found, _Op):
                    found.fut = fut
                    damaged.append(found)
                    continue
                # The row may have been looked up again (its file was replaced).
                results.append((fut, (found, rows[key_hash][2]), None))
                if self.lru:
                    touched.append(key_hash)
        except Exception as exc:
            # SQLite failed (or a bug): the whole batch fails, the thread carries on.
            error = _failure("read", exc)
            _send([(req[3], None, _copy_error(error)) for req in batch])
            return
        if damaged or touched:
            # The writer removes damaged entries and then answers their gets with a miss,
            # so a caller who saw the miss also sees the entry gone.
            ops = damaged
            if touched:
                ops.append(_Op(_Kind.TOUCH, hashes=touched))
            self.writes.put(ops)
        _send(results)

    def _decode_row(
        self,
        conn: sqlite3.Connection,
        row: tuple[Any, ...],
        key: bytes,
        rows: dict[bytes, tuple[Any, ...]],
    ) -> Any:
        """The value of a row; MISS if it vanished; a CORRUPT op (for the writer) if damaged."""
        key_hash = row[0]
        if row[1] != key:
            # Only damage makes two keys share a 128-bit hash in practice.
            return _corrupt(row)
        stored = row[4]
        if row[5] is not None:
            # A writer may replace the file between our SELECT and the read: the row
            # then names a new file, so look again (twice) before calling it damaged.
            stored = None
            for _ in range(3):
                try:
                    with open(self.values / _text(row[5]), "rb") as file:
                        stored = file.read()
                    break
                except FileNotFoundError:
                    fresh = conn.execute(_LOOKUP_ONE, (key_hash,)).fetchone()
                    if fresh is None or fresh[1] != key:
                        return MISS  # deleted meanwhile: a plain miss
                    if fresh[5] == row[5]:
                        break  # the row still names the missing file
                    row = rows[key_hash] = fresh
                    if row[5] is None:
                        stored = row[4]
                        break
                except OSError:
                    break
        if not isinstance(stored, bytes) or not hmac.compare_digest(
            self.seal(key_hash, stored), row[3]
        ):
            return _corrupt(row)
        try:
            return self.serializer.loads(self.codec.decode(stored))
        except MissingDictionary:
            # Sound bytes compressed with a dictionary this cache was not given (another
            # process sharing the directory has it): a miss here, left for that process.
            return MISS
        except Exception:
            # Checksummed bytes that do not load: written by another serializer or a
            # changed class. The entry is useless to this cache either way.
            return _corrupt(row)


# -- the event loop side ------------------------------------------------------------


def _prepare_directory(path: Path, *, private: bool) -> None:
    """Create ``path`` (0700) if missing; when ``private``, refuse one others could write.

    Raises:
        UnsafeCacheDirectory: ``private`` and the directory is owned by another user
            or writable by its group or others.
        CacheError: the path exists and is not a directory, or cannot be created.
    """
    try:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
            info = os.stat(path)
    except OSError as exc:
        raise CacheError(f"Cannot create the cache directory {path}: {exc}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise CacheError(f"The cache directory {path} exists and is not a directory")
    try:
        # Here rather than on the writer thread: a set may write a value file at once.
        for sub in (VALUES_DIR, TMP_DIR):
            (path / sub).mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise CacheError(f"Cannot create the cache directory {path / sub}: {exc}") from exc
    if not private:
        return
    getuid = getattr(os, "getuid", None)
    if getuid is not None and info.st_uid != getuid():
        raise UnsafeCacheDirectory(
            f"Refusing pickle in {path}: it is owned by another user (uid {info.st_uid}). "
            "Use a directory of your own, pass hmac_key=, or serializer='json'/'msgpack'."
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeCacheDirectory(
            f"Refusing pickle in {path}: its group or other users can write to it "
            f"(mode {stat.filemode(info.st_mode)}). Run chmod 700 on it, pass hmac_key=, "
            "or use serializer='json'/'msgpack'."
        )


class _Lane:
    """The requests one event loop made during its current iteration, sent as two batches."""

    __slots__ = ("reads", "store", "writes")

    def __init__(self, store: _Store) -> None:
        self.store = store
        self.reads: list[ReadRequest] = []
        self.writes: list[_Op] = []

    def flush_reads(self) -> None:
        batch = self.reads
        if batch:
            self.reads = []
            size = READ_BATCH
            if len(batch) <= size:
                self.store.reads.put(batch)
            else:
                # Pieces, so that every reader thread takes a share.
                for start in range(0, len(batch), size):
                    self.store.reads.put(batch[start : start + size])

    def flush_writes(self) -> None:
        batch = self.writes
        if batch:
            self.writes = []
            self.store.writes.put(batch)


async def _write_value_file(
    files: FileIO, made: set[str], values: Path, filename: str, stored: bytes, *, sync: bool
) -> None:
    """Put ``stored`` in place as ``values/filename`` atomically (fsynced when ``sync``).

    Its subdirectory is made on the first write to it by this cache: a thread hop
    saved on every later one.
    """
    subdir = filename.partition("/")[0]
    if subdir not in made:
        await files.mkdir(values / subdir, mode=0o700, exist_ok=True)
        made.add(subdir)
    await files.write_atomic(values / filename, stored, fsync=sync, mode=0o600)


def _discarder(store: _Store, path: str) -> Callable[[asyncio.Future[None]], None]:
    """A done callback that has the writer thread remove a value file nobody will commit."""

    def discard(task: asyncio.Future[None]) -> None:
        if not task.cancelled():
            task.exception()  # reported to the caller already
        store.writes.put([_Op(_Kind.DISCARD, value_file=path)])

    return discard


class DiskCache:
    """The L2 cache: bounded in bytes, on disk, shared by processes, surviving restarts.

    An SQLite database in WAL mode indexes the entries; values of up to
    ``inline_threshold`` bytes (as stored: serialized, maybe compressed) live
    in its rows, larger ones in files written through aiofiles to a temporary
    name and renamed into place before their row commits (at most
    ``file_concurrency`` file operations at once), so a reader (or a
    process restarted after a crash) sees the old value or the new one, never
    a torn one. Every stored value carries a checksum of its bytes (an
    HMAC-SHA256 when ``hmac_key`` is given): a damaged entry reads as a miss, is
    removed, and is counted under ``EvictionReason.CORRUPT``.

    Every SQLite call runs on threads the cache owns (one writer, two readers,
    each with its own connection). Calls made in the same iteration of the event
    loop are coalesced: the gets go to a reader as one query, the sets and
    deletes to the writer as one transaction, and the results come back with one
    wake-up of the loop per batch. Several caches (in one process, on several
    event loops, or in several processes) may share one directory; SQLite's locks
    order their writes.

    The cache holds at most ``max_bytes`` (each entry counts its encoded key and
    stored value). When a write takes it over the bound it evicts the least
    recently *stored* entries (``eviction="lrs"``: reads never become writes) or
    the least recently *used* (``"lru"``: hits are recorded by the writer in its
    next transaction). Each write batch also removes a few expired entries.

    Keys are str, bytes, int, float, bool, None and tuples of them, encoded with
    their type, so ``1``, ``1.0``, ``"1"`` and ``b"1"`` are four keys. Values
    are serialized with ``serializer``: ``"pickle"`` (anything picklable),
    ``"json"``, ``"msgpack"``, or your own :class:`~asyncperf.cache.Serializer`.
    Unpickling runs code, so pickle is allowed only in a private directory
    (created 0700; an existing one must be owned by you and writable by nobody
    else) unless ``hmac_key`` signs every value. TTLs are wall-clock seconds, so
    they keep running while no process has the cache open.

    A presence filter (a Bloom filter of the keys the directory may hold: about
    2.6 bytes per entry, as it is built with room to double; rebuilt on the
    writer thread when it outgrows that) answers a get for a key never stored
    on the event loop, with no thread hop. Stores by other instances and
    processes of this version are seen by the next get after they commit (they
    stamp the shared ``index.seq`` file); stores by writers that do not (older
    versions) may read as missing for up to ``presence_refresh`` seconds: a
    lost hit, never a wrong value. At open the filter is built from every key
    in the index on the writer thread (about 1 µs per entry, before the first
    write is served); until it is ready every get asks SQLite.

    Cancellation: a cancelled ``get`` leaves its batch alone and is answered by
    nobody. A ``set`` cancelled before its value reached the writer stores
    nothing (a half-written value file is removed); one cancelled after may
    still be stored. Statistics (``entries``, ``bytes``) are as of this
    instance's last write; :meth:`count` and :meth:`volume` ask the database.

    Args:
        directory: where the cache lives; created (0700) if missing.
        max_bytes: the bound on stored bytes; an entry larger than it is refused.
        serializer: ``"pickle"``, ``"json"``, ``"msgpack"`` or a Serializer object.
        hmac_key: sign and verify every value with HMAC-SHA256 under this key.
        compression: ``"zstd"`` or ``"lz4"`` (serialized values above ``compress_threshold``
            bytes, default 256, are compressed), a :class:`~asyncperf.io.Compressor`
            (for a zstd dictionary, or to read its ``statistics()``; leave
            ``compress_threshold`` and ``compress_level`` out), or None: zstd when
            ``compress_threshold`` is set, else no compression (the default). Values
            stored under any setting read back under any other (a dictionary-compressed
            value needs its dictionary, in the Compressor's ``dictionaries``).
        compress_threshold: compress serialized values above this many bytes (with
            ``compression=None``: zstd, and None means never).
        compress_level: the codec's level (zstd 1-22, default 3; lz4 0-16, default 0).
        inline_threshold: stored values above this many bytes go to their own file.
        eviction: ``"lrs"`` (least recently stored) or ``"lru"`` (least recently used).
        default_ttl: seconds an entry lives when ``set`` gives no ``ttl`` (None: forever).
        sync: fsync value files, their directories and every commit, for safety on
            power loss; without it a crash of the process loses nothing committed.
        name: the level's name in statistics.
        time: the wall clock for TTLs (seconds since the epoch; called from threads).
        presence_filter: keep the in-memory presence filter (False: every get asks SQLite,
            as before the filter existed).
        presence_refresh: the longest the filter answers misses without reading the index
            (seconds; it also reads it as soon as another writer stamps ``index.seq``).
            0: every miss asks SQLite, as without the filter.
        page_cache: bytes of SQLite page cache per connection (the writer and each
            reader have one). Small by default: the operating system caches the
            file as well, and the hot entries live in the memory level above.
        file_concurrency: value files written at once (each holds an executor thread
            while it runs); more wait on the event loop, in order.

    Raises:
        UnsafeCacheDirectory: pickle without ``hmac_key`` in a directory another user
            owns or that others can write.
        CacheError: ``directory`` cannot be created or is not a directory.
        TypeError, ValueError: a bad argument (the message names it).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 1 << 30,
        serializer: SerializerName | Serializer = "pickle",
        hmac_key: bytes | None = None,
        compression: Compression = None,
        compress_threshold: int | None = None,
        compress_level: int | None = None,
        inline_threshold: int = 32_768,
        eviction: EvictionName = "lrs",
        default_ttl: float | None = None,
        sync: bool = False,
        name: str = "disk",
        time: Callable[[], float] = time.time,
        presence_filter: bool = True,
        presence_refresh: float = 1.0,
        page_cache: int = 512 * 1024,
        file_concurrency: int = 8,
    ) -> None:
        # Set first: __del__ runs even when this constructor raises.
        self._store: _Store | None = None
        self._closed = True
        try:
            path = Path(os.fspath(directory)).absolute()
        except TypeError:
            raise TypeError(
                f"directory must be a str or a path, not {type(directory).__name__}"
            ) from None
        max_bytes = check_int("max_bytes", max_bytes, minimum=1)
        codec = Codec(compress_threshold, compress_level, compression=compression)
        self._inline_threshold = check_int("inline_threshold", inline_threshold, minimum=0)
        if eviction not in ("lrs", "lru"):
            raise ValueError(f"eviction must be 'lrs' or 'lru', not {eviction!r}")
        self._default_ttl = (
            None if default_ttl is None else check_number("default_ttl", default_ttl)
        )
        check_bool("sync", sync)
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        if not name:
            raise ValueError("name must not be empty")
        if not callable(time):
            raise TypeError(f"time must be callable, not {type(time).__name__}")
        check_bool("presence_filter", presence_filter)
        self._presence_refresh = check_number(
            "presence_refresh", presence_refresh, minimum=0.0, strict=False
        )
        page_cache = check_int("page_cache", page_cache, minimum=64 * 1024)
        files = FileIO(check_int("file_concurrency", file_concurrency, minimum=1))
        if hmac_key is not None:
            if not isinstance(hmac_key, bytes):
                raise TypeError(f"hmac_key must be bytes, not {type(hmac_key).__name__}")
            if not hmac_key:
                raise ValueError("hmac_key must not be empty")
        chosen = make_serializer(serializer)
        _prepare_directory(path, private=isinstance(chosen, PickleSerializer) and hmac_key is None)
        self._name = name
        self._eviction: EvictionName = eviction
        self._time = time
        self._directory = path
        self._hits = 0
        self._misses = 0
        self._sets = 0
        self._deletes = 0
        self._too_large = 0
        self._latency = LatencySamples()
        self._lanes: dict[asyncio.AbstractEventLoop, _Lane] = {}
        self._lane_loop: asyncio.AbstractEventLoop | None = None
        self._lane: _Lane | None = None
        self._closing: asyncio.Future[None] | None = None
        self._file_writes: set[asyncio.Future[None]] = set()
        self._files = files
        #: Subdirectories of values/ this cache has made (or found) already.
        self._value_dirs: set[str] = set()
        self._presence = Presence(time()) if presence_filter else None
        self._store = _Store(
            path,
            max_bytes=max_bytes,
            codec=codec,
            serializer=chosen,
            hmac_key=hmac_key,
            eviction=eviction,
            sync=sync,
            time=time,
            presence=self._presence,
            page_cache=page_cache,
        )
        self._closed = False

    # -- plumbing -------------------------------------------------------------------

    def _live(self) -> _Store:
        if self._closed or self._store is None:
            raise CacheClosed("Cannot use a DiskCache that has been closed.")
        return self._store

    def _lane_of(self, loop: asyncio.AbstractEventLoop) -> _Lane:
        lane = self._lanes.get(loop)
        if lane is None:
            for other in [other for other in self._lanes if other.is_closed()]:
                del self._lanes[other]
            lane = self._lanes[loop] = _Lane(self._live())
        self._lane_loop = loop
        self._lane = lane
        return lane

    def _read(self, key: Hashable) -> asyncio.Future[ReadResult] | None:
        """The future of a lookup, or None when the presence filter knows the key is absent."""
        encoded = encode_key(key)
        store = self._live()
        key_hash = _key_hash(encoded)
        now = self._time()
        presence = self._presence
        if presence is not None and presence.ready:
            view = presence.view  # read once: its filter and watermark agree
            # The bits first: a hit pays only this check.
            if not view.bits.might_contain(key_hash) and self._absent(presence, store, view, now):
                return None
        loop = asyncio.get_running_loop()
        lane = self._lane if self._lane_loop is loop else self._lane_of(loop)
        assert lane is not None  # _lane is set whenever _lane_loop is
        fut: asyncio.Future[ReadResult] = loop.create_future()
        reads = lane.reads
        reads.append((key_hash, encoded, now, fut))
        if len(reads) == 1:
            loop.call_soon(lane.flush_reads)
        return fut

    def _absent(self, presence: Presence, store: _Store, view: PresenceView, now: float) -> bool:
        """Whether the filter, whose ``view`` lacks a key, may answer "absent" on the loop."""
        interval = self._presence_refresh
        if interval <= 0.0 or store.seq_file is None:
            return False
        try:
            stamped = store.seq_file.read()
        except ValueError:  # closed by the writer meanwhile: let the request path say so
            return False
        # A store committed before this get stamped its seq before committing, and later
        # stamps are larger (seq grows under the write lock): a stamp beyond the watermark
        # may be such a store, not in this view's bits yet. Bits are only ever added, so
        # having checked them before reading the stamp is as safe as after. (Aligned
        # 8-byte copies are not torn.)
        if stamped > view.watermark or not 0.0 <= now - view.refreshed_at < interval:
            presence.refresh_wanted = True  # this lookup goes to a reader, which refreshes
            return False
        presence.skips += 1
        return True

    def _write(self, op: _Op) -> asyncio.Future[Any]:
        if self._closed and op.value_file is not None and self._store is not None:
            # Closed while its file was written: best effort, the file is not needed.
            self._store.writes.put([_Op(_Kind.DISCARD, value_file=op.value_file)])
        self._live()
        loop = asyncio.get_running_loop()
        lane = self._lane if self._lane_loop is loop else self._lane_of(loop)
        assert lane is not None  # _lane is set whenever _lane_loop is
        op.fut = fut = loop.create_future()
        if op.kind == _Kind.SET and self._presence is not None:
            # Before the op is queued, so before its row can commit: a get that runs after
            # this line cannot be told "absent" (the writer re-adds it after a rebuild).
            op.epoch = self._presence.add(op.hash)
        writes = lane.writes
        writes.append(op)
        if len(writes) == 1:
            loop.call_soon(lane.flush_writes)
        return fut

    def _expires(self, ttl: float | None) -> float | None:
        if ttl is None:
            ttl = self._default_ttl
            if ttl is None:
                return None
        else:
            ttl = check_number("ttl", ttl)
        return self._time() + ttl

    def _seal(self, key_hash: bytes, payload: bytes) -> tuple[bytes, bytes]:
        store = self._live()
        stored = store.codec.encode(payload)
        return stored, store.seal(key_hash, stored)

    def _encode(
        self, key: Hashable, value: Any, ttl: float | None
    ) -> tuple[bytes, bytes, float | None, bytes]:
        """Check and serialize an entry: encoded key, its hash, absolute expiry, payload."""
        store = self._live()
        encoded = encode_key(key)
        expires = self._expires(ttl)
        return encoded, _key_hash(encoded), expires, store.serializer.dumps(value)

    def _prepare_small(
        self, encoded: bytes, key_hash: bytes, expires: float | None, payload: bytes
    ) -> _Op | None:
        """The SET op of a payload that stays inline; None when too large."""
        stored, checksum = self._seal(key_hash, payload)
        size = len(encoded) + len(stored)
        if size > self._live().max_bytes:
            return None
        op = _Op(_Kind.SET, hash=key_hash, key=encoded, value=stored, checksum=checksum)
        op.size = size
        op.expires = expires
        return op

    async def _prepare_large(
        self, encoded: bytes, key_hash: bytes, expires: float | None, payload: bytes
    ) -> _Op | None:
        """The SET op of a large payload, its file written unless it compressed to inline."""
        store = self._live()
        if store.codec.threshold is not None or store.hmac_key is not None:
            # Compressing or signing a large value takes long enough to stall the loop.
            loop = asyncio.get_running_loop()
            stored, checksum = await loop.run_in_executor(None, self._seal, key_hash, payload)
        else:
            stored, checksum = self._seal(key_hash, payload)
        size = len(encoded) + len(stored)
        if size > store.max_bytes:
            return None
        op = _Op(_Kind.SET, hash=key_hash, key=encoded, checksum=checksum, size=size)
        op.expires = expires
        if len(stored) > self._inline_threshold:
            await self._write_file(op, stored)
        else:
            op.value = stored
        return op

    async def _write_file(self, op: _Op, stored: bytes) -> None:
        """Put ``stored`` in place as a new value file; the writer then commits its row."""
        store = self._live()
        name = op.hash.hex()
        filename = f"{name[:2]}/{name}-{os.urandom(8).hex()}.val"
        path = str(store.values / filename)
        # Its own task, owned by the cache (aclose waits for it): a cancelled caller
        # cannot stop a thread that is writing the file, so a file put in place for
        # nobody is removed once the write has settled rather than while it may appear.
        writing = asyncio.ensure_future(
            _write_value_file(
                self._files, self._value_dirs, store.values, filename, stored, sync=store.sync
            )
        )
        self._file_writes.add(writing)
        writing.add_done_callback(self._file_writes.discard)
        try:
            await asyncio.shield(writing)
        except BaseException as exc:
            # Cancelled or failed before the writer saw it: nothing is stored.
            writing.add_done_callback(_discarder(store, path))
            if isinstance(exc, OSError):
                raise _failure("write of a value file", exc) from exc
            raise
        op.value_file = path
        op.filename = filename

    async def _refuse(self, key_hash: bytes) -> bool:
        # The caller meant to replace the key's value: a read must not return the older one.
        self._too_large += 1
        await self._write(_Op(_Kind.DELETE, hash=key_hash))
        return False

    # -- the level API --------------------------------------------------------------

    @property
    def name(self) -> str:
        """The level's name in statistics."""
        return self._name

    @property
    def directory(self) -> Path:
        """The cache directory (absolute)."""
        return self._directory

    @property
    def size(self) -> int:
        """Bytes held, as of this instance's last write (:meth:`volume` asks the database)."""
        return 0 if self._store is None else self._store.known_bytes

    @property
    def max_bytes(self) -> int:
        """The bound on bytes held."""
        assert self._store is not None  # a constructed cache always has its store
        return self._store.max_bytes

    async def get(self, key: Hashable, default: Any = MISS) -> Any:
        """The value stored under ``key``, or ``default`` (MISS unless given) on a miss.

        Raises:
            TypeError: ``key`` is not of an accepted type.
            CacheClosed: the cache is closed.
            CacheError: the database cannot be read (a damaged entry is a miss).
        """
        start = perf_counter()
        pending = self._read(key)
        found = None if pending is None else await pending
        if found is None:
            self._misses += 1
            return default
        self._hits += 1
        self._latency.add(perf_counter() - start)
        return found[0]

    async def get_entry(self, key: Hashable) -> CacheEntry | None:
        """The value and the seconds it has left (None: no expiry), or None on a miss."""
        start = perf_counter()
        pending = self._read(key)
        found = None if pending is None else await pending
        if found is None:
            self._misses += 1
            return None
        self._hits += 1
        self._latency.add(perf_counter() - start)
        value, expires = found
        return CacheEntry(value, None if expires is None else max(0.0, expires - self._time()))

    async def get_many(self, keys: Iterable[Hashable]) -> dict[Hashable, CacheEntry]:
        """The entries found among ``keys``, looked up in one batch (missing keys left out)."""
        start = perf_counter()
        wanted = list(keys)
        for key in wanted:
            encode_key(key)  # a bad key raises before any lookup is queued
        lookups = [self._read(key) for key in wanted]
        pending = [lookup for lookup in lookups if lookup is not None]
        # gather: if one read fails (or this call is cancelled), the others' outcomes are
        # retrieved (or cancelled) with it rather than logged as never retrieved.
        answers = iter(await asyncio.gather(*pending) if pending else ())
        results = [None if lookup is None else next(answers) for lookup in lookups]
        found: dict[Hashable, CacheEntry] = {}
        for key, result in zip(wanted, results, strict=True):
            if result is None:
                self._misses += 1
                continue
            self._hits += 1
            self._latency.add(perf_counter() - start)
            value, expires = result
            ttl = None if expires is None else max(0.0, expires - self._time())
            found[key] = CacheEntry(value, ttl)
        return found

    async def set(self, key: Hashable, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` under ``key`` for ``ttl`` seconds (None: ``default_ttl``).

        Returns:
            True once the value is committed; False when it is larger than
            ``max_bytes`` (counted as TOO_LARGE; the key's previous value is removed).

        Raises:
            TypeError: ``key`` is not of an accepted type, or the serializer cannot
                hold ``value``.
            ValueError: ``ttl`` is not a positive number of seconds.
            CacheClosed: the cache is closed.
            CacheError: the value could not be written (disk full, database locked).
        """
        encoded, key_hash, expires, payload = self._encode(key, value, ttl)
        if len(payload) > self._inline_threshold:
            op = await self._prepare_large(encoded, key_hash, expires, payload)
        else:
            op = self._prepare_small(encoded, key_hash, expires, payload)
        if op is None:
            return await self._refuse(key_hash)
        stored: bool = await self._write(op)
        if stored:
            self._sets += 1
        return stored

    async def set_many(self, items: Iterable[tuple[Hashable, Any, float | None]]) -> int:
        """Store ``(key, value, ttl)`` items in one transaction; how many were stored.

        Every key, ttl and value is checked (and serialized) before anything is
        written, so a bad item raises and stores nothing.
        """
        encoded = [self._encode(key, value, ttl) for key, value, ttl in items]
        ops: list[_Op | BaseException | None] = []
        large: list[int] = []
        for index, (key_bytes, key_hash, expires, payload) in enumerate(encoded):
            if len(payload) > self._inline_threshold:
                large.append(index)
                ops.append(None)
            else:
                ops.append(self._prepare_small(key_bytes, key_hash, expires, payload))
        if large:
            written = await asyncio.gather(
                *(self._prepare_large(*encoded[index]) for index in large),
                return_exceptions=True,
            )
            for index, result in zip(large, written, strict=True):
                ops[index] = result
            errors = [result for result in written if isinstance(result, BaseException)]
            if errors:
                store = self._live()
                for result in written:
                    if isinstance(result, _Op) and result.value_file is not None:
                        store.writes.put([_Op(_Kind.DISCARD, value_file=result.value_file)])
                raise errors[0]
        futures: list[asyncio.Future[Any]] = []
        for (_key_bytes, key_hash, _expires, _payload), op in zip(encoded, ops, strict=True):
            if op is None:
                self._too_large += 1
                futures.append(self._write(_Op(_Kind.DELETE, hash=key_hash)))
            else:
                assert isinstance(op, _Op)  # exceptions were raised above
                futures.append(self._write(op))
        # gather, as in get_many: a failed batch fails every future, and all are retrieved.
        stored = sum(1 for result in await asyncio.gather(*futures) if result is True)
        self._sets += stored
        return stored

    async def delete(self, key: Hashable) -> bool:
        """Remove ``key``; whether it was present."""
        removed: bool = await self._write(_Op(_Kind.DELETE, hash=_key_hash(encode_key(key))))
        if removed:
            self._deletes += 1
        return removed

    async def clear(self) -> None:
        """Remove every entry (of every process sharing the directory)."""
        self._live()
        if self._presence is not None:
            # Emptied before the CLEAR is queued, so sets made after this call are kept.
            self._presence.reset(self._time())
        await self._write(_Op(_Kind.CLEAR))

    async def expire(self) -> int:
        """Remove every expired entry now; how many were removed (counted as EXPIRED)."""
        removed: int = await self._write(_Op(_Kind.EXPIRE))
        return removed

    async def count(self) -> int:
        """Entries in the database now (all processes' writes included)."""
        entries, _bytes = await self._write(_Op(_Kind.META))
        return int(entries)

    async def volume(self) -> int:
        """Bytes held in the database now (all processes' writes included)."""
        _entries, held = await self._write(_Op(_Kind.META))
        return int(held)

    def set_capacity(self, *, max_entries: int | None = None, max_bytes: int | None = None) -> None:
        """Change the bound; shrinking it schedules the evictions on the writer thread.

        Raises:
            ValueError: ``max_entries`` is given (the disk cache bounds bytes only),
                or ``max_bytes`` is below 1.
            CacheClosed: the cache is closed.
        """
        store = self._live()
        if max_entries is not None:
            raise ValueError("max_entries is not supported by DiskCache: bound it with max_bytes")
        if max_bytes is None:
            return
        max_bytes = check_int("max_bytes", max_bytes, minimum=1)
        shrinking = max_bytes < store.max_bytes
        store.max_bytes = max_bytes
        if shrinking:
            store.writes.put([_Op(_Kind.EVICT)])

    def statistics(self) -> CacheStatistics:
        """A snapshot of the counters (entries and bytes as of this instance's last write)."""
        store = self._store
        assert store is not None  # a constructed cache always has its store
        evictions = dict(store.evictions)
        evictions[EvictionReason.TOO_LARGE] += self._too_large
        p50, p99 = self._latency.percentiles()
        return CacheStatistics(
            name=self._name,
            policy=self._eviction,
            entries=store.known_entries,
            bytes=store.known_bytes,
            max_entries=None,
            max_bytes=store.max_bytes,
            hits=self._hits,
            misses=self._misses,
            sets=self._sets,
            deletes=self._deletes,
            evictions=evictions,
            hit_latency_p50=p50,
            hit_latency_p99=p99,
        )

    def presence_statistics(self) -> PresenceStatistics:
        """A snapshot of the presence filter: its size, load, and misses it answered."""
        if self._presence is None:
            return PresenceStatistics(
                enabled=False, capacity=0, bits=0, load=0, skips=0, rebuilds=0, refreshes=0
            )
        return self._presence.statistics()

    # -- lifetime -------------------------------------------------------------------

    async def aclose(self) -> None:
        """Finish the queued requests, stop the threads and close the connections.

        Idempotent; every call afterwards (but this one) raises CacheClosed.
        """
        store = self._store
        if store is None:
            return
        if not self._closed:
            self._closed = True
            # Made first: a concurrent aclose waits on it rather than joining threads
            # that nobody has asked to stop yet.
            self._closing = asyncio.get_running_loop().create_future()
            try:
                if self._file_writes:
                    # Let the value files of cancelled sets settle, so the writer removes them
                    # (wait, not gather: cancelling this call must not cancel a write midway).
                    await asyncio.wait(list(self._file_writes))
            finally:
                # Even when cancelled above: the threads must stop whatever happens.
                for lane in self._lanes.values():
                    lane.flush_reads()
                    lane.flush_writes()
                store.stop(self._closing)
        if self._closing is not None and not self._closing.done():
            await asyncio.shield(self._closing)
        for thread in store.threads:
            thread.join()  # they have finished their work and are returning

    async def __aenter__(self) -> Self:
        """Wait until the directory is open (schema checked, orphans removed).

        Raises:
            CacheError: the database could not be opened (the cache is then closed).
        """
        try:
            await self._write(_Op(_Kind.NOOP))
        except CacheError:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        store = self._store
        held = "" if store is None else f", {store.known_bytes:,}/{store.max_bytes:,} bytes"
        return (
            f"<DiskCache {self._name!r} {state} at {str(getattr(self, '_directory', '?'))!r}{held}>"
        )

    def __del__(self) -> None:
        store = getattr(self, "_store", None)
        if store is not None and not self._closed:
            self._closed = True
            store.stop(None)
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1, source=self)
