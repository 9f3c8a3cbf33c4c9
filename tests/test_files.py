"""FileIO: atomic writes, pooled reads, the bound on concurrent file operations, cancellation,
and its use by DiskCache (value files) and the profiler (reports)."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from asyncperf._errors import CacheError
from asyncperf.cache import _disk
from asyncperf.cache._base import MISS
from asyncperf.cache._disk import DiskCache
from asyncperf.io._files import (
    BufferSource,
    FileBuffer,
    FileIO,
    FileIOStatistics,
    FileTooLarge,
)
from asyncperf.observability import _profile
from asyncperf.observability._profile import profile
from asyncperf.pools import BufferPool
from asyncperf.testing import wait_until

# The typing contract: a BufferPool is a BufferSource (mypy checks this line).
_POOL_IS_A_SOURCE: BufferSource = BufferPool()

LARGE = b"L" * 50_000  # above DiskCache's default inline threshold: stored in a file


class FileCalls(ThreadPoolExecutor):
    """An executor that records the name of every file call, and can hold or fail some.

    aiofiles hands the executor ``partial(function, ...)``; the function's name is
    the file call (``open``, ``write``, ``readinto``, ``fsync``, ``replace``...).
    Calls named in ``hold`` wait on a thread until :meth:`release`; each one is put
    on :attr:`entered` (from its thread) once it has started.
    """

    def __init__(
        self,
        hold: tuple[str, ...] = (),
        fail: dict[str, OSError] | None = None,
        workers: int = 8,
    ) -> None:
        super().__init__(max_workers=workers)
        self.hold = hold
        self.fail = fail or {}
        self.calls: list[str] = []
        self.held_now = 0
        self.held_peak = 0
        self.entered: asyncio.Queue[str] = asyncio.Queue()
        self._gate = threading.Event()
        self._lock = threading.Lock()

    def release(self) -> None:
        self._gate.set()

    async def next_entered(self) -> str:
        """The name of the next held call to start (a guard, not a pause: it fails after 10 s
        rather than hang the test when no such call comes)."""
        async with asyncio.timeout(10):
            return await self.entered.get()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        inner = getattr(fn, "func", fn)
        name = getattr(inner, "__name__", repr(inner))
        self.calls.append(name)
        if name in self.fail:
            error = self.fail[name]

            def failing() -> Any:
                raise error

            return super().submit(failing)
        if name not in self.hold:
            return super().submit(fn, *args, **kwargs)
        loop = asyncio.get_running_loop()

        def held() -> Any:
            with self._lock:
                self.held_now += 1
                self.held_peak = max(self.held_peak, self.held_now)
            loop.call_soon_threadsafe(self.entered.put_nowait, name)
            try:
                assert self._gate.wait(timeout=30), "the test never released the call"
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.held_now -= 1

        return super().submit(held)


@pytest.fixture
def executors() -> Iterator[Callable[..., FileCalls]]:
    """Make FileCalls executors; each is released and shut down at the end."""
    made: list[FileCalls] = []

    def make(*hold: str, fail: dict[str, OSError] | None = None, workers: int = 8) -> FileCalls:
        executor = FileCalls(hold, fail, workers)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.release()
        executor.shutdown(wait=True)


def listing(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def check_consistent(stats: FileIOStatistics) -> None:
    assert stats.succeeded == stats.operations - stats.failed - stats.cancelled >= 0
    assert stats.in_flight <= stats.max_concurrency
    assert stats.peak_in_flight <= stats.max_concurrency


# -- atomic writes --------------------------------------------------------------------


async def test_write_atomic_creates_and_replaces_leaving_only_the_file(tmp_path: Path) -> None:
    """bytes, bytearray and memoryview (of any format) are written whole; the old content is
    replaced; no temp file is left; the counts add up."""
    files = FileIO()
    target = tmp_path / "data.bin"
    assert await files.write_atomic(target, b"first") == 5
    assert target.read_bytes() == b"first"
    assert await files.write_atomic(str(target), bytearray(b"second!")) == 7
    assert target.read_bytes() == b"second!"
    words = memoryview(bytearray(range(16))).cast("I")  # 4-byte items: written as 16 bytes
    assert await files.write_atomic(target, words) == 16
    assert target.read_bytes() == bytes(range(16))
    assert await files.write_atomic(target, b"") == 0
    assert target.read_bytes() == b""
    assert listing(tmp_path) == ["data.bin"]
    stats = files.statistics()
    check_consistent(stats)
    assert (stats.operations, stats.failed, stats.cancelled) == (4, 0, 0)
    assert stats.bytes_written == 5 + 7 + 16 + 0
    assert (stats.in_flight, stats.waiting, stats.peak_in_flight) == (0, 0, 1)


async def test_write_atomic_sets_the_mode_of_a_new_file(tmp_path: Path) -> None:
    files = FileIO()
    umask = os.umask(0)
    os.umask(umask)
    await files.write_atomic(tmp_path / "private", b"x", mode=0o600)
    await files.write_atomic(tmp_path / "shared", b"x", mode=0o664)
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600 & ~umask
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o664 & ~umask


async def test_write_atomic_steps_in_order_with_and_without_fsync(
    tmp_path: Path, executors: Callable[..., FileCalls], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temp file is created with the first chunk, written chunk by chunk, then committed
    in one call: the file is fsynced before the rename and the directory after it; without
    fsync neither is synced."""
    synced: list[tuple[str, bytes]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        kind = "directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        synced.append((kind, (tmp_path / "f").read_bytes()))  # what the target holds now
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    calls = executors()
    files = FileIO(chunk_size=4, executor=calls)
    (tmp_path / "f").write_bytes(b"old")
    await files.write_atomic(tmp_path / "f", b"0123456789", fsync=True)
    assert calls.calls == ["_create_temp", "_write_all", "_write_all", "_commit"]
    assert synced == [("file", b"old"), ("directory", b"0123456789")]
    calls.calls.clear()
    synced.clear()
    await files.write_atomic(tmp_path / "f", b"abc", fsync=False)
    assert calls.calls == ["_create_temp", "_commit"]  # one chunk: two thread calls
    assert synced == []
    assert (tmp_path / "f").read_bytes() == b"abc"
    assert listing(tmp_path) == ["f"]


async def test_a_failed_fsync_leaves_the_old_content_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    files = FileIO()
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match="No space left") as caught:
        await files.write_atomic(target, b"new content", fsync=True)
    assert caught.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["f"]
    stats = files.statistics()
    assert (stats.operations, stats.failed, stats.bytes_written, stats.in_flight) == (1, 1, 0, 0)


async def test_a_failed_chunk_write_removes_the_temp_file(
    tmp_path: Path, executors: Callable[..., FileCalls]
) -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    calls = executors(fail={"_write_all": full})
    files = FileIO(chunk_size=4, executor=calls)
    (tmp_path / "f").write_bytes(b"old")
    with pytest.raises(OSError, match="No space left"):
        await files.write_atomic(tmp_path / "f", b"0123456789")
    assert calls.calls == ["_create_temp", "_write_all", "_discard_temp"]
    assert (tmp_path / "f").read_bytes() == b"old"
    assert listing(tmp_path) == ["f"]


async def test_a_failed_rename_removes_the_temp_file(tmp_path: Path) -> None:
    """A directory in the target's place: the rename fails, the temp file goes."""
    files = FileIO()
    (tmp_path / "taken").mkdir()
    with pytest.raises(OSError, match="taken"):
        await files.write_atomic(tmp_path / "taken", b"data")
    assert listing(tmp_path) == ["taken"]
    assert files.statistics().failed == 1


async def test_a_missing_directory_fails_cleanly(tmp_path: Path) -> None:
    files = FileIO()
    with pytest.raises(FileNotFoundError):
        await files.write_atomic(tmp_path / "no" / "such" / "f", b"data")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("size", [6, 9], ids=["last-chunk", "middle-chunk"])
async def test_write_cancelled_mid_write_removes_the_temp_file(
    tmp_path: Path, executors: Callable[..., FileCalls], size: int
) -> None:
    """Cancelled while a chunk (the last one, or one in the middle) is being written on its
    thread: the call waits for that chunk, then removes the temp file; the target keeps its
    old content; nothing else is written."""
    calls = executors("_write_all")
    files = FileIO(chunk_size=3, executor=calls)
    target = tmp_path / "f"
    target.write_bytes(b"old")
    writing = asyncio.ensure_future(files.write_atomic(target, b"abcdefghi"[:size]))
    assert await calls.next_entered() == "_write_all"
    assert len(os.listdir(tmp_path)) == 2  # the temp file exists while it is written
    writing.cancel()
    calls.release()
    with pytest.raises(asyncio.CancelledError):
        await writing
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["f"]
    # Stopped before the next chunk: the temp file was closed and removed, not committed.
    assert calls.calls == ["_create_temp", "_write_all", "_discard_temp"]
    stats = files.statistics()
    check_consistent(stats)
    assert (stats.operations, stats.cancelled, stats.in_flight, stats.bytes_written) == (
        1,
        1,
        0,
        0,
    )


async def test_write_cancelled_during_the_commit_leaves_the_new_content(
    tmp_path: Path, executors: Callable[..., FileCalls]
) -> None:
    """The commit (with the rename) is the point of no return: cancelled while it runs, the
    call waits for it, the new content is in place, complete, and CancelledError is raised."""
    calls = executors("_commit")
    files = FileIO(executor=calls)
    target = tmp_path / "f"
    target.write_bytes(b"old")
    writing = asyncio.ensure_future(files.write_atomic(target, b"new", fsync=False))
    assert await calls.next_entered() == "_commit"
    writing.cancel()
    calls.release()
    with pytest.raises(asyncio.CancelledError):
        await writing
    assert target.read_bytes() == b"new"
    assert listing(tmp_path) == ["f"]
    assert files.statistics().cancelled == 1


# -- reads ----------------------------------------------------------------------------


async def test_read_bytes_and_missing_files(tmp_path: Path) -> None:
    files = FileIO()
    (tmp_path / "f").write_bytes(b"content")
    assert await files.read_bytes(tmp_path / "f") == b"content"
    with pytest.raises(FileNotFoundError):
        await files.read_bytes(tmp_path / "missing")
    with pytest.raises(FileTooLarge, match=r"f is 7 bytes, above max_size=6"):
        await files.read_bytes(tmp_path / "f", max_size=6)
    assert await files.read_bytes(tmp_path / "f", max_size=7) == b"content"
    stats = files.statistics()
    check_consistent(stats)
    assert (stats.operations, stats.failed, stats.bytes_read) == (4, 2, 14)


async def test_read_into_a_pooled_buffer_in_chunks(
    tmp_path: Path, executors: Callable[..., FileCalls]
) -> None:
    """The view is exactly the file's bytes, read by readinto chunk by chunk into a buffer
    of the pool, which goes back on release."""
    content = os.urandom(5_000)
    (tmp_path / "f").write_bytes(content)
    pool = BufferPool(size_classes=(1024, 8192))
    calls = executors()
    files = FileIO(buffers=pool, chunk_size=1_000, executor=calls)
    buffer: FileBuffer = await files.read_into(tmp_path / "f")
    assert buffer.pooled
    assert pool.statistics().in_use == 1
    with buffer as view:
        assert view.nbytes == len(buffer) == 5_000
        assert view == content
        assert not view.readonly
    assert buffer.released
    assert pool.statistics().in_use == 0
    assert calls.calls.count("readinto") == 5
    with pytest.raises(ValueError, match="was released"):
        _ = buffer.view
    buffer.release()  # idempotent
    assert files.statistics().bytes_read == 5_000
    # The buffer is reused by the next read (a pool hit), with the new file's bytes only.
    other = os.urandom(4_000)
    (tmp_path / "g").write_bytes(other)
    with await files.read_into(tmp_path / "g") as view:
        assert view.nbytes == 4_000
        assert bytes(view) == other
    assert pool.statistics().classes[1].hits == 1


async def test_read_into_without_a_pool_and_of_an_empty_file(tmp_path: Path) -> None:
    files = FileIO()
    (tmp_path / "f").write_bytes(b"abc")
    (tmp_path / "empty").write_bytes(b"")
    buffer = await files.read_into(tmp_path / "f")
    assert not buffer.pooled
    assert bytes(buffer.view) == b"abc"
    buffer.release()
    with await files.read_into(tmp_path / "empty") as view:
        assert view.nbytes == 0


async def test_read_into_refuses_a_file_above_max_size_before_taking_a_buffer(
    tmp_path: Path,
) -> None:
    pool = BufferPool()
    files = FileIO(buffers=pool)
    (tmp_path / "f").write_bytes(b"x" * 100)
    with pytest.raises(FileTooLarge) as caught:
        await files.read_into(tmp_path / "f", max_size=99)
    error = caught.value
    assert isinstance(error, OSError)
    assert (error.path, error.size, error.max_size) == (str(tmp_path / "f"), 100, 99)
    assert "above max_size=99" in str(error)
    assert pool.statistics().acquires == 0
    with await files.read_into(tmp_path / "f", max_size=100) as view:
        assert view.nbytes == 100


async def test_read_into_cancelled_mid_read_gives_the_buffer_back(
    tmp_path: Path, executors: Callable[..., FileCalls]
) -> None:
    """The buffer goes back only once the thread filling it has returned."""
    (tmp_path / "f").write_bytes(b"y" * 3_000)
    pool = BufferPool(size_classes=(4096,))
    calls = executors("readinto")
    files = FileIO(buffers=pool, chunk_size=1_000, executor=calls)
    reading = asyncio.ensure_future(files.read_into(tmp_path / "f"))
    assert await calls.next_entered() == "readinto"
    reading.cancel()
    assert pool.statistics().in_use == 1  # still being filled: not given back yet
    calls.release()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert calls.calls.count("readinto") == 1
    assert calls.calls[-1] == "close"
    assert pool.statistics().in_use == 0
    stats = files.statistics()
    assert (stats.operations, stats.cancelled, stats.in_flight, stats.bytes_read) == (1, 1, 0, 0)


# -- the bound ------------------------------------------------------------------------


async def test_a_burst_holds_at_most_max_concurrency_threads(
    tmp_path: Path, executors: Callable[..., FileCalls]
) -> None:
    """Six reads, a bound of two, an executor of eight threads: two run, four wait on the
    loop; released, all six complete, never more than two at once."""
    (tmp_path / "f").write_bytes(b"data")
    calls = executors("_read_whole")
    files = FileIO(max_concurrency=2, executor=calls)
    reads = [asyncio.ensure_future(files.read_bytes(tmp_path / "f")) for _ in range(6)]
    assert {await calls.next_entered(), await calls.next_entered()} == {"_read_whole"}
    await wait_until(lambda: files.statistics().waiting == 4)
    stats = files.statistics()
    assert (stats.in_flight, stats.waiting, stats.operations) == (2, 4, 0)
    assert calls.held_now == 2
    assert calls.calls == ["_read_whole"] * 2  # the waiting four cost no thread
    calls.release()
    assert await asyncio.gather(*reads) == [b"data"] * 6
    assert calls.held_peak == 2
    stats = files.statistics()
    check_consistent(stats)
    assert (stats.operations, stats.in_flight, stats.waiting, stats.peak_in_flight) == (6, 0, 0, 2)
    assert stats.bytes_read == 24


async def test_waiting_operations_run_in_arrival_order(
    tmp_path: Path, executors: Callable[..., FileCalls]
) -> None:
    calls = executors()
    files = FileIO(max_concurrency=1, executor=calls)
    for index in range(5):
        (tmp_path / f"f{index}").write_bytes(b"%d" % index)
    order: list[bytes] = []

    async def read(index: int) -> None:
        order.append(await files.read_bytes(tmp_path / f"f{index}"))

    await asyncio.gather(*(read(index) for index in range(5)))
    assert order == [b"0", b"1", b"2", b"3", b"4"]
    assert files.statistics().peak_in_flight == 1


async def test_a_waiter_cancelled_in_the_queue_loses_no_slot(
    tmp_path: Path, executors: Callable[..., FileCalls]
) -> None:
    (tmp_path / "f").write_bytes(b"data")
    calls = executors("_read_whole")
    files = FileIO(max_concurrency=1, executor=calls)
    first = asyncio.ensure_future(files.read_bytes(tmp_path / "f"))
    second = asyncio.ensure_future(files.read_bytes(tmp_path / "f"))
    third = asyncio.ensure_future(files.read_bytes(tmp_path / "f"))
    assert await calls.next_entered() == "_read_whole"
    await wait_until(lambda: files.statistics().waiting == 2)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert files.statistics().waiting == 1
    calls.release()
    assert list(await asyncio.gather(first, third)) == [b"data", b"data"]
    stats = files.statistics()
    check_consistent(stats)
    assert (stats.operations, stats.cancelled, stats.in_flight, stats.waiting) == (3, 1, 0, 0)
    assert calls.calls == ["_read_whole"] * 2  # the cancelled waiter never reached a thread


def test_one_fileio_serves_event_loops_one_after_another(tmp_path: Path) -> None:
    """The bound is kept per event loop; counts of a closed loop's operations are kept."""
    files = FileIO(max_concurrency=1)
    asyncio.run(files.write_atomic(tmp_path / "a", b"1"))
    assert asyncio.run(files.read_bytes(tmp_path / "a")) == b"1"
    stats = files.statistics()
    assert (stats.operations, stats.bytes_written, stats.bytes_read) == (2, 1, 1)


# -- other operations and arguments ---------------------------------------------------


async def test_remove_mkdir_and_stat(tmp_path: Path) -> None:
    files = FileIO()
    await files.write_atomic(tmp_path / "f", b"abc")
    assert (await files.stat(tmp_path / "f")).st_size == 3
    assert await files.remove(tmp_path / "f") is True
    assert await files.remove(tmp_path / "f") is False
    with pytest.raises(FileNotFoundError):
        await files.remove(tmp_path / "f", missing_ok=False)
    await files.mkdir(tmp_path / "a" / "b", parents=True)
    await files.mkdir(tmp_path / "a" / "b", exist_ok=True)
    with pytest.raises(FileExistsError):
        await files.mkdir(tmp_path / "a" / "b")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileExistsError):  # a file in the way is no directory
        await files.mkdir(tmp_path / "file", exist_ok=True)
    assert (tmp_path / "a" / "b").is_dir()


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_concurrency": 0}, ValueError, "max_concurrency must be >= 1"),
        ({"max_concurrency": 2.5}, TypeError, "max_concurrency must be an int"),
        ({"buffers": object()}, TypeError, "buffers must have an acquire"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1"),
        ({"executor": "threads"}, TypeError, "executor must be a concurrent.futures.Executor"),
    ],
)
def test_bad_constructor_arguments_name_the_parameter(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        FileIO(**options)


async def test_bad_call_arguments_name_the_parameter(tmp_path: Path) -> None:
    files = FileIO()
    target = tmp_path / "f"
    bad: list[tuple[Any, type[Exception], str]] = [
        (files.write_atomic(3, b""), TypeError, "path must be a str or a path"),  # type: ignore[arg-type]
        (files.write_atomic("", b""), ValueError, "path must not be empty"),
        (files.write_atomic(target, "text"), TypeError, "data must be bytes"),  # type: ignore[arg-type]
        (files.write_atomic(target, b"", mode=0o10000), ValueError, "mode must be"),
        (files.write_atomic(target, b"", fsync=1), TypeError, "fsync must be a bool"),  # type: ignore[arg-type]
        (files.read_into(target, max_size=-1), ValueError, "max_size must be >= 0"),
        (files.read_bytes(target, max_size=1.5), TypeError, "max_size must be an int"),  # type: ignore[arg-type]
        (files.remove(target, missing_ok=None), TypeError, "missing_ok must be a bool"),  # type: ignore[arg-type]
    ]
    for call, error, message in bad:
        with pytest.raises(error, match=message):
            await call
    assert files.statistics().operations == 0  # refused before taking a slot
    assert listing(tmp_path) == []


# -- DiskCache ------------------------------------------------------------------------


def value_files(directory: Path) -> list[Path]:
    return sorted(path for path in (directory / "values").rglob("*") if path.is_file())


async def test_disk_cache_writes_value_files_through_its_fileio(tmp_path: Path) -> None:
    async with DiskCache(tmp_path / "cache", file_concurrency=3) as cache:
        assert cache._files.max_concurrency == 3
        assert await cache.set("k", LARGE) is True
        assert await cache.get("k") == LARGE
        (stored,) = value_files(cache.directory)
        assert stored.name.endswith(".val")
        assert stat.S_IMODE(stored.stat().st_mode) & 0o077 == 0  # private to the owner
        stats = cache._files.statistics()
        assert stats.bytes_written == stored.stat().st_size >= len(LARGE)
        assert (stats.operations, stats.failed) == (2, 0)  # its subdirectory, then the file
        await cache.set("k", LARGE + b"2")  # its subdirectory is known now: only the file
        assert cache._files.statistics().operations == 3
        assert list((cache.directory / "tmp").iterdir()) == []


def test_disk_cache_file_concurrency_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file_concurrency must be >= 1"):
        DiskCache(tmp_path / "cache", file_concurrency=0)
    with pytest.raises(TypeError, match="file_concurrency must be an int"):
        DiskCache(tmp_path / "cache", file_concurrency="8")  # type: ignore[arg-type]
    assert listing(tmp_path) == []  # refused before the directory was made


async def test_disk_cache_bounds_the_value_files_written_at_once(
    tmp_path: Path, executors: Callable[..., FileCalls]
) -> None:
    calls = executors("_create_temp")
    async with DiskCache(tmp_path / "cache", file_concurrency=2) as cache:
        cache._files = FileIO(2, executor=calls)
        sets = [asyncio.ensure_future(cache.set(f"k{i}", LARGE)) for i in range(5)]
        assert {await calls.next_entered(), await calls.next_entered()} == {"_create_temp"}
        await wait_until(lambda: cache._files.statistics().waiting == 3)
        assert calls.held_now == 2
        calls.release()
        assert await asyncio.gather(*sets) == [True] * 5
        assert calls.held_peak == 2
        assert len(value_files(cache.directory)) == 5


@pytest.mark.parametrize("held", ["_create_temp", "_commit"])
async def test_a_cancelled_large_set_leaves_no_value_file(
    tmp_path: Path, executors: Callable[..., FileCalls], held: str
) -> None:
    """Cancelled while its file is written (no file is put in place) or while it is renamed
    (the file lands, with no row): either way no file is left and nothing is stored."""
    calls = executors(held)
    cache = DiskCache(tmp_path / "cache")
    await cache.set("warm", 1)
    cache._files = FileIO(executor=calls)
    setting = asyncio.ensure_future(cache.set("k", LARGE))
    assert await calls.next_entered() == held
    setting.cancel()
    calls.release()
    with pytest.raises(asyncio.CancelledError):
        await setting
    await cache.aclose()  # waits for the write to settle and the writer to remove the file
    assert value_files(tmp_path / "cache") == []
    async with DiskCache(tmp_path / "cache") as reopened:
        assert await reopened.get("k") is MISS
        assert await reopened.get("warm") == 1


async def test_a_rolled_back_batch_removes_the_files_it_placed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Value files are in place before their rows commit: a failed transaction removes them."""
    import sqlite3

    monkeypatch.setattr(_disk, "BUSY_TIMEOUT", 0.05)
    async with DiskCache(tmp_path / "cache") as cache:
        await cache.set("k", LARGE)
        before = value_files(cache.directory)
        blocker = sqlite3.connect(cache.directory / "index.sqlite3", isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(CacheError, match="database is locked"):
                await cache.set("k", LARGE + b"2")
        finally:
            blocker.close()
        assert value_files(cache.directory) == before
        assert await cache.get("k") == LARGE


# -- the profiler ---------------------------------------------------------------------


def quiet_profile(output_dir: Path, name: str) -> Any:
    return profile(
        cpu=False, memory=False, tasks=False, block=False, output_dir=output_dir, name=name
    )


async def test_profile_reports_are_written_atomically(tmp_path: Path) -> None:
    written = _profile._REPORT_FILES.statistics().bytes_written
    async with quiet_profile(tmp_path / "out", "run") as session:
        pass
    assert listing(tmp_path / "out") == ["run.html", "run.json"]
    sizes = sum(path.stat().st_size for path in (tmp_path / "out").iterdir())
    assert _profile._REPORT_FILES.statistics().bytes_written - written == sizes
    assert session.report is not None


async def test_a_profile_cancelled_while_writing_still_writes_both_reports(
    tmp_path: Path, executors: Callable[..., FileCalls], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = executors("_create_temp")
    monkeypatch.setattr(_profile, "_REPORT_FILES", FileIO(2, executor=calls))
    session = quiet_profile(tmp_path, "cut")

    async def run() -> None:
        async with session:
            pass

    running = asyncio.ensure_future(run())
    assert await calls.next_entered() == "_create_temp"
    running.cancel()
    calls.release()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert listing(tmp_path) == ["cut.html", "cut.json"]
    assert session.report is not None
    assert session.json_path is not None
    assert session.json_path.read_text().endswith("}\n")
