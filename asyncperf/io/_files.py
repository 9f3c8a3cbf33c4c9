"""Buffered async file I/O over aiofiles: atomic writes, pooled reads, bounded concurrency.

::

    files = FileIO(max_concurrency=8, buffers=BufferPool())
    await files.write_atomic("out/report.json", data)       # old content or new, never torn
    with await files.read_into("out/report.json") as view:  # a pooled buffer, released on exit
        parse(view)

Every file call runs on a thread through aiofiles (the loop's default executor
unless ``executor`` is given): ``readinto`` on an aiofiles file for
:meth:`FileIO.read_into`, and plain functions run by ``aiofiles.os.wrap`` for
the rest, each grouping the system calls of one step (create the temp file and
write the first chunk; commit: fsync, close, rename, fsync the directory), since
every thread hop costs tens of microseconds. A burst of 10,000 reads would
queue 10,000 calls on that executor and starve everyone else who uses it
(``asyncio.to_thread``, DNS lookups), so every operation of a :class:`FileIO`
first takes one of ``max_concurrency`` slots: at most that many of its
operations hold a worker thread at a time, and the others wait on the event
loop, in arrival order, costing no thread.

Cancellation never leaves a thread working on something nobody owns: a file
call already handed to a thread cannot be stopped, so a cancelled operation
waits for that call to return, then cleans up (closes the file, removes a
temp file, gives a buffer back) before it raises ``CancelledError``. The wait
is one file call (at most ``chunk_size`` bytes), not the whole operation.
"""

from __future__ import annotations

import asyncio
import errno
import io
import os
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol, TypeVar

import aiofiles.os
import aiofiles.threadpool
from aiofiles.threadpool.binary import AsyncFileIO

from asyncperf._errors import AsyncPerfError
from asyncperf._validate import check_bool, check_int

__all__ = [
    "BufferHandle",
    "BufferSource",
    "FileBuffer",
    "FileIO",
    "FileIOStatistics",
    "FileTooLarge",
]

T = TypeVar("T")

#: Tries at a unique temp name before giving up (a clash needs 48 random bits to repeat).
_TEMP_ATTEMPTS: Final = 4
#: The longest part of the target's name kept in a temp file's name (NAME_MAX is 255).
_TEMP_NAME_KEEP: Final = 200


class BufferHandle(Protocol):
    """A buffer lent by a :class:`BufferSource`: what :class:`asyncperf.pools.PooledBuffer` is."""

    @property
    def view(self) -> memoryview:
        """The writable memoryview of exactly the bytes asked for."""
        ...

    def release(self) -> None:
        """Give the buffer back (a second call does nothing)."""
        ...


class BufferSource(Protocol):
    """Where :meth:`FileIO.read_into` takes its buffers: :class:`asyncperf.pools.BufferPool` fits.

    Defined here rather than imported: pools sit above this layer.
    """

    def acquire(self, n: int, /) -> BufferHandle:
        """A buffer whose ``view`` is exactly ``n`` bytes, never waiting."""
        ...


class FileTooLarge(AsyncPerfError, OSError):
    """A file is larger than the ``max_size`` its read allows (nothing was read)."""

    def __init__(self, path: str, size: int, max_size: int) -> None:
        super().__init__(f"{path} is {size:,} bytes, above max_size={max_size:,}")
        self.path = path
        self.size = size
        self.max_size = max_size


class FileBuffer:
    """A file's bytes read into a buffer (pooled or not): release it when done.

    ``with buffer as view:`` gives :attr:`view` and releases the buffer when the
    block ends; outside a ``with``, call :meth:`release` (idempotent). Once
    released, neither :attr:`view` nor any slice of it may be used: a pooled
    buffer may already hold the next reader's file.
    """

    __slots__ = ("_handle", "_view", "path")

    def __init__(self, path: str, view: memoryview, handle: BufferHandle | None) -> None:
        #: The file that was read.
        self.path = path
        self._view: memoryview | None = view
        self._handle = handle

    @property
    def view(self) -> memoryview:
        """Exactly the file's bytes (writable).

        Raises:
            ValueError: the buffer was released.
        """
        if self._view is None:
            raise ValueError(f"the buffer holding {self.path} was released")
        return self._view

    @property
    def size(self) -> int:
        """Bytes read: the length of :attr:`view` (0 once released)."""
        return 0 if self._view is None else self._view.nbytes

    @property
    def pooled(self) -> bool:
        """True when the buffer came from a :class:`BufferSource` (it goes back on release)."""
        return self._handle is not None

    @property
    def released(self) -> bool:
        return self._view is None

    def release(self) -> None:
        """Give the buffer back to its source; a second call does nothing."""
        if self._view is None:
            return
        self._view = None
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.release()

    def __len__(self) -> int:
        return self.size

    def __enter__(self) -> memoryview:
        return self.view

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self._view is None else f"{self.size} bytes"
        kind = "pooled" if self.pooled else "unpooled"
        return f"<FileBuffer {self.path!r}: {state}, {kind}>"


@dataclass(frozen=True, slots=True)
class FileIOStatistics:
    """A snapshot of a :class:`FileIO`'s counters.

    ``operations == succeeded + failed + cancelled`` counts the operations that
    ended; ``in_flight + waiting`` are the ones that have not. The bound holds per
    event loop: ``in_flight`` and ``waiting`` are summed over the loops using the
    object, ``peak_in_flight`` is the highest on any one of them.
    """

    #: The bound on operations running at once (per event loop).
    max_concurrency: int
    #: Operations that ended, however they ended.
    operations: int
    #: Operations that raised an error (a missing file, a full disk, a file too large).
    failed: int
    #: Operations cancelled, while waiting for a slot or while running.
    cancelled: int
    #: Operations holding a slot now (each uses at most one thread at a time).
    in_flight: int
    #: Operations waiting for a slot now (on the loop: no thread).
    waiting: int
    #: The most operations that held a slot at once.
    peak_in_flight: int
    #: Bytes returned by completed reads.
    bytes_read: int
    #: Bytes in files put in place by completed atomic writes.
    bytes_written: int

    @property
    def succeeded(self) -> int:
        """Operations that completed: ``operations - failed - cancelled``."""
        return self.operations - self.failed - self.cancelled


class _Gate:
    """The bound and the counters of one event loop (touched only from its thread)."""

    __slots__ = (
        "bytes_read",
        "bytes_written",
        "cancelled",
        "failed",
        "in_flight",
        "limit",
        "loop",
        "operations",
        "peak",
        "waiters",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.loop = loop
        self.limit = limit
        self.in_flight = 0
        self.peak = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.operations = 0
        self.failed = 0
        self.cancelled = 0
        self.bytes_read = 0
        self.bytes_written = 0

    def waiting(self) -> int:
        return sum(1 for waiter in self.waiters if not waiter.done())

    async def enter(self) -> None:
        """Take a slot, waiting in arrival order while all are taken."""
        if self.in_flight < self.limit and not self.waiters:
            self._took()
            return
        waiter = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed a slot in the same iteration as the cancellation: pass it on,
                # or it would be lost for good.
                self.leave()
            else:
                self.waiters.remove(waiter)
            raise

    def _took(self) -> None:
        self.in_flight += 1
        if self.in_flight > self.peak:
            self.peak = self.in_flight

    def leave(self) -> None:
        """Give a slot back: straight to the oldest live waiter, if any."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                # The slot moves over without in_flight changing: nobody can take it
                # in between, so arrival order holds.
                waiter.set_result(None)
                return
        self.in_flight -= 1


class _Abandoned(Exception):
    """Raised inside an operation's steps once its caller has been cancelled."""


class _Steps:
    """Shared by a caller and its operation's steps: stop at the next safe point."""

    __slots__ = ("abandoned",)

    def __init__(self) -> None:
        self.abandoned = False

    def check(self) -> None:
        if self.abandoned:
            raise _Abandoned


async def _settle(task: asyncio.Task[Any]) -> None:
    """Wait for ``task`` to end, however often the caller is cancelled meanwhile.

    Its outcome is retrieved here (the caller raises its own CancelledError), so
    asyncio never reports it as never retrieved.
    """
    while not task.done():
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError:
            continue  # the file call still runs on its thread: keep waiting for it
    if not task.cancelled():
        task.exception()


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable, where directories can be synced."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # Windows cannot open a directory (its renames are journaled)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems (and platforms) do not sync directories: nothing more to do.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


_NEW_FILE_FLAGS: Final = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)


def _write_all(fd: int, chunk: memoryview) -> None:
    """``os.write`` until all of ``chunk`` is written (a regular file may take it in parts)."""
    while chunk:
        count = os.write(fd, chunk)
        if count <= 0:
            raise OSError(errno.EIO, "a write to a temp file made no progress")
        chunk = chunk[count:]


def _create_temp(temp: str, mode: int, first: memoryview) -> int:
    """Create ``temp`` (``O_EXCL``) and write ``first`` to it; its open descriptor.

    One thread hop for what most writes are (a file of at most ``chunk_size``
    bytes). On an error the temp file is closed and removed before it raises.
    """
    fd = os.open(temp, _NEW_FILE_FLAGS, mode)
    try:
        _write_all(fd, first)
    except BaseException:
        os.close(fd)
        _remove_quietly(temp)
        raise
    return fd


def _commit(fd: int, temp: str, target: str, directory: str, fsync: bool) -> None:
    """Sync and close the temp file, rename it over ``target``, sync the directory.

    Before the rename, an error removes the temp file (``target`` is untouched);
    after it, an error (syncing the directory) leaves the new content in place.
    """
    try:
        try:
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        _remove_quietly(temp)
        raise
    if fsync:
        _fsync_directory(directory)


def _discard_temp(fd: int, temp: str) -> None:
    """Close and remove a temp file that will not be committed."""
    try:
        os.close(fd)
    finally:
        _remove_quietly(temp)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _read_whole(path: str, limit: int | None) -> bytes:
    """The content of ``path``, refused above ``limit`` bytes (checked before reading)."""
    with open(path, "rb", buffering=0) as file:
        if limit is not None:
            size = os.fstat(file.fileno()).st_size
            if size > limit:
                raise FileTooLarge(path, size, limit)
        data = file.readall()
    if limit is not None and len(data) > limit:  # it grew since the fstat
        raise FileTooLarge(path, len(data), limit)
    return data


def _open_sized(path: str) -> tuple[io.FileIO, int]:
    """``path`` opened unbuffered for reading, and its size (one thread hop for both)."""
    file = io.FileIO(path, "rb")
    try:
        return file, os.fstat(file.fileno()).st_size
    except BaseException:
        file.close()
        raise


# Thread-hop versions: aiofiles runs them in the executor it is given (None: the default).
_create_temp_async = aiofiles.os.wrap(_create_temp)
_write_all_async = aiofiles.os.wrap(_write_all)
_commit_async = aiofiles.os.wrap(_commit)
_discard_temp_async = aiofiles.os.wrap(_discard_temp)
_read_whole_async = aiofiles.os.wrap(_read_whole)
_open_sized_async = aiofiles.os.wrap(_open_sized)


def _check_path(path: object, name: str = "path") -> str:
    if isinstance(path, str):
        checked = path
    elif isinstance(path, os.PathLike):
        checked = os.fspath(path)
        if not isinstance(checked, str):
            raise TypeError(f"{name} must be a str path, not a {type(checked).__name__} path")
    else:
        raise TypeError(f"{name} must be a str or a path, not {type(path).__name__}")
    if not checked:
        raise ValueError(f"{name} must not be empty")
    return checked


def _byte_view(data: object) -> memoryview:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, bytearray or memoryview, not {type(data).__name__}")
    view = memoryview(data)
    if not view.c_contiguous:
        raise ValueError("data must be a contiguous buffer")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _check_max_size(max_size: object) -> int | None:
    return None if max_size is None else check_int("max_size", max_size, minimum=0)


class FileIO:
    """Async file operations over aiofiles, at most ``max_concurrency`` at a time per loop.

    Every method takes a slot first (waiting in arrival order on the loop
    while all are taken) and holds it until it has finished, so at most
    ``max_concurrency`` of its operations occupy an executor thread at once,
    on each event loop that uses this object. A cancelled operation keeps its
    slot until the file call its thread is running has returned, and cleans up
    (see the module's documentation).

    Args:
        max_concurrency: operations running at once, per event loop (>= 1).
            Below the executor's thread count, a burst leaves threads for others.
        buffers: where :meth:`read_into` takes its buffers (a
            :class:`~asyncperf.pools.BufferPool`, or anything with
            ``acquire(n)`` returning an object with ``view`` and ``release()``);
            None: a fresh ``bytearray`` per read.
        chunk_size: the most bytes one file call writes or reads (>= 1). A
            cancelled operation waits for at most one such call.
        executor: where aiofiles runs the file calls (None: the loop's default executor).

    Raises:
        TypeError, ValueError: a bad argument (the message names it).
    """

    __slots__ = (
        "_buffers",
        "_chunk",
        "_executor",
        "_gates",
        "_last",
        "_limit",
        "_lock",
        "_retired",
    )

    def __init__(
        self,
        max_concurrency: int = 8,
        *,
        buffers: BufferSource | None = None,
        chunk_size: int = 1 << 20,
        executor: Executor | None = None,
    ) -> None:
        self._limit = check_int("max_concurrency", max_concurrency, minimum=1)
        if buffers is not None and not callable(getattr(buffers, "acquire", None)):
            raise TypeError(
                f"buffers must have an acquire(n) method (a BufferPool), "
                f"not {type(buffers).__name__}"
            )
        self._buffers = buffers
        self._chunk = check_int("chunk_size", chunk_size, minimum=1)
        if executor is not None and not isinstance(executor, Executor):
            raise TypeError(
                f"executor must be a concurrent.futures.Executor, not {type(executor).__name__}"
            )
        self._executor = executor
        self._gates: dict[asyncio.AbstractEventLoop, _Gate] = {}
        self._last: _Gate | None = None
        # Gates are made from whichever thread runs a new loop; counts of closed loops
        # are kept here so the totals never go down.
        self._lock = threading.Lock()
        self._retired = [0, 0, 0, 0, 0, 0]  # operations, failed, cancelled, read, written, peak

    @property
    def max_concurrency(self) -> int:
        """Operations running at once, per event loop."""
        return self._limit

    @property
    def chunk_size(self) -> int:
        """The most bytes one file call writes or reads."""
        return self._chunk

    @property
    def buffers(self) -> BufferSource | None:
        """Where :meth:`read_into` takes its buffers (None: fresh bytearrays)."""
        return self._buffers

    # -- the bound ------------------------------------------------------------------

    def _gate(self) -> _Gate:
        loop = asyncio.get_running_loop()
        gate = self._last
        if gate is not None and gate.loop is loop:
            return gate
        with self._lock:
            gate = self._gates.get(loop)
            if gate is None:
                for other in [other for other in self._gates if other.is_closed()]:
                    self._retire(self._gates.pop(other))
                gate = self._gates[loop] = _Gate(loop, self._limit)
        self._last = gate
        return gate

    def _retire(self, gate: _Gate) -> None:
        retired = self._retired
        retired[0] += gate.operations
        retired[1] += gate.failed
        retired[2] += gate.cancelled
        retired[3] += gate.bytes_read
        retired[4] += gate.bytes_written
        retired[5] = max(retired[5], gate.peak)

    async def _operate(
        self,
        steps_of: Callable[[_Steps, _Gate], Coroutine[Any, Any, T]],
        *,
        late: Callable[[T], None] | None = None,
    ) -> T:
        """Run an operation's steps in a slot; on cancellation stop them at a safe point.

        The steps run in a task of their own that is never cancelled by this
        caller: their awaits are file calls on threads, which a cancellation
        would abandon mid-call. Cancelling the caller instead flags the steps,
        waits until they have stopped (at their next check, or their end) and
        hands a result they produced anyway to ``late`` (to give it back).
        """
        gate = self._gate()
        try:
            await gate.enter()
        except asyncio.CancelledError:
            gate.operations += 1
            gate.cancelled += 1
            raise
        steps = _Steps()
        try:
            task = gate.loop.create_task(steps_of(steps, gate))
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                steps.abandoned = True
                await _settle(task)
                gate.cancelled += 1
                if late is not None and not task.cancelled() and task.exception() is None:
                    late(task.result())
                raise
            except BaseException:
                gate.failed += 1
                raise
        finally:
            gate.operations += 1
            gate.leave()

    # -- operations -----------------------------------------------------------------

    async def write_atomic(
        self,
        path: str | os.PathLike[str],
        data: bytes | bytearray | memoryview,
        *,
        fsync: bool = True,
        mode: int = 0o644,
    ) -> int:
        """Replace ``path``'s content with ``data`` so no reader ever sees it torn.

        Writes a temp file of a unique name (created with ``O_EXCL``) in the
        same directory, ``chunk_size`` bytes per thread call (unbuffered: nothing
        is left to flush), then commits in one more call: fsync the file (when
        ``fsync``), close it, rename it over ``path`` (``os.replace``, atomic on
        POSIX and Windows), fsync the directory (when ``fsync``; skipped where
        directories cannot be opened or synced). A file of at most
        ``chunk_size`` bytes takes two thread calls. Without ``fsync`` the
        replacement is atomic for readers and against a crash of the process,
        not against a power loss.

        On an error, or a cancellation before the commit has begun, the temp
        file is removed and ``path`` is untouched (its old content, or absent).
        Cancelled during the commit, the call waits for it and then raises
        ``CancelledError`` with the new content in place, complete (or the old
        one, if the commit failed). An error syncing the directory after the
        rename (rare: an I/O error) is raised with the new content in place.

        ``data`` must not change until the call returns (it is written from
        threads, without a copy).

        Args:
            path: the file to create or replace; its directory must exist.
            data: the new content.
            fsync: sync the file before the rename and the directory after it.
            mode: the permission bits of a new file (filtered by the umask, as open() does).

        Returns:
            The bytes written.

        Raises:
            OSError: the temp file could not be created, written or renamed.
            TypeError, ValueError: a bad argument (the message names it).
        """
        target = _check_path(path)
        view = _byte_view(data)
        fsync = check_bool("fsync", fsync)
        mode = check_int("mode", mode, minimum=0)
        if mode > 0o7777:
            raise ValueError(f"mode must be permission bits (at most 0o7777), not {oct(mode)}")

        async def steps(steps: _Steps, gate: _Gate) -> int:
            written = await self._write_steps(steps, target, view, fsync, mode)
            gate.bytes_written += written
            return written

        return await self._operate(steps)

    async def _write_steps(
        self, steps: _Steps, target: str, view: memoryview, fsync: bool, mode: int
    ) -> int:
        # Three kinds of thread hop: create the temp file and write the first chunk, write
        # each further chunk, then commit (fsync, close, rename, fsync the directory).
        # A file of at most chunk_size bytes takes two hops; the caller's cancellation is
        # looked at between hops.
        executor = self._executor
        directory, name = os.path.split(target)
        directory = directory or os.curdir
        chunk = self._chunk
        attempt = 0
        while True:
            attempt += 1
            temp = os.path.join(directory, f".{name[:_TEMP_NAME_KEEP]}.{os.urandom(6).hex()}.tmp")
            try:
                fd: int = await _create_temp_async(temp, mode, view[:chunk], executor=executor)
            except FileExistsError:
                if attempt == _TEMP_ATTEMPTS:
                    raise
                continue
            break
        committing = False
        try:
            for start in range(chunk, view.nbytes, chunk):
                steps.check()
                await _write_all_async(fd, view[start : start + chunk], executor=executor)
            # The last point where giving up leaves `target` as it was.
            steps.check()
            committing = True  # _commit closes the file, and removes it if it fails
            await _commit_async(fd, temp, target, directory, fsync, executor=executor)
        finally:
            if not committing:
                await _discard_temp_async(fd, temp, executor=executor)
        return view.nbytes

    async def read_bytes(
        self, path: str | os.PathLike[str], *, max_size: int | None = None
    ) -> bytes:
        """The content of the file at ``path``.

        The file is opened, read and closed in one thread call (``chunk_size``
        does not apply: joining chunks would copy everything once more, and a
        cancellation waits for the whole read); for large files, prefer
        :meth:`read_into`.

        Raises:
            FileTooLarge: the file is larger than ``max_size`` (nothing is read).
            OSError: the file cannot be opened or read.
            TypeError, ValueError: a bad argument (the message names it).
        """
        source = _check_path(path)
        limit = _check_max_size(max_size)

        async def steps(steps: _Steps, gate: _Gate) -> bytes:
            data: bytes = await _read_whole_async(source, limit, executor=self._executor)
            gate.bytes_read += len(data)
            return data

        return await self._operate(steps)

    async def read_into(
        self, path: str | os.PathLike[str], *, max_size: int | None = None
    ) -> FileBuffer:
        """Read the file at ``path`` into a buffer from ``buffers``; release it when done.

        The size comes from ``fstat`` of the open file; the buffer is taken
        for exactly that many bytes and filled by ``readinto`` on the aiofiles
        file, ``chunk_size`` bytes per call, straight into the buffer (no copy
        in between). The returned :class:`FileBuffer`'s ``view`` is exactly the
        bytes read; fewer than ``fstat`` said only if the file was truncated
        meanwhile. Meant for regular files (``/proc`` files and pipes report
        size 0 and read empty).

        On an error or a cancellation the buffer is given back before the call
        raises.

        Raises:
            FileTooLarge: the file is larger than ``max_size`` (no buffer is taken).
            OSError: the file cannot be opened or read.
            TypeError, ValueError: a bad argument (the message names it).
        """
        source = _check_path(path)
        limit = _check_max_size(max_size)

        async def steps(steps: _Steps, gate: _Gate) -> FileBuffer:
            buffer = await self._read_steps(steps, source, limit)
            gate.bytes_read += buffer.size
            return buffer

        return await self._operate(steps, late=FileBuffer.release)

    async def _read_steps(self, steps: _Steps, source: str, limit: int | None) -> FileBuffer:
        executor = self._executor
        raw, size = await _open_sized_async(source, executor=executor)
        # The aiofiles file: its readinto runs on a thread, straight into the buffer.
        file: AsyncFileIO = aiofiles.threadpool.wrap(raw, executor=executor)
        try:
            if limit is not None and size > limit:
                raise FileTooLarge(source, size, limit)
            steps.check()
            handle = None if self._buffers is None else self._buffers.acquire(size)
            view = memoryview(bytearray(size)) if handle is None else handle.view
            got = 0
            try:
                while got < size:
                    steps.check()
                    count = await file.readinto(view[got : got + self._chunk])
                    if not count:
                        break  # truncated since the fstat
                    got += count
            except asyncio.CancelledError:
                # This task itself was cancelled (the loop is shutting down): its thread
                # may still be writing into the buffer, which must not be reused.
                raise
            except BaseException:
                if handle is not None:
                    handle.release()
                raise
        finally:
            await file.close()
        return FileBuffer(source, view if got == size else view[:got], handle)

    async def stat(self, path: str | os.PathLike[str]) -> os.stat_result:
        """``os.stat(path)``, in a slot.

        Raises:
            OSError: ``path`` cannot be examined (FileNotFoundError if missing).
        """
        target = _check_path(path)

        async def steps(steps: _Steps, gate: _Gate) -> os.stat_result:
            return await aiofiles.os.stat(target, executor=self._executor)

        return await self._operate(steps)

    async def remove(self, path: str | os.PathLike[str], *, missing_ok: bool = True) -> bool:
        """Remove the file at ``path``; whether there was one.

        Raises:
            FileNotFoundError: ``path`` is missing and not ``missing_ok``.
            OSError: it could not be removed.
        """
        target = _check_path(path)
        missing_ok = check_bool("missing_ok", missing_ok)

        async def steps(steps: _Steps, gate: _Gate) -> bool:
            try:
                await aiofiles.os.remove(target, executor=self._executor)
            except FileNotFoundError:
                if not missing_ok:
                    raise
                return False
            return True

        return await self._operate(steps)

    async def mkdir(
        self,
        path: str | os.PathLike[str],
        *,
        mode: int = 0o777,
        parents: bool = False,
        exist_ok: bool = False,
    ) -> None:
        """Create the directory ``path`` (and its missing parents, when ``parents``).

        Raises:
            FileExistsError: it exists (or a file is in its place) and not ``exist_ok``;
                a file in its place raises even with ``exist_ok``.
            OSError: it could not be created.
        """
        target = _check_path(path)
        mode = check_int("mode", mode, minimum=0)
        parents = check_bool("parents", parents)
        exist_ok = check_bool("exist_ok", exist_ok)

        def make() -> None:
            try:
                if parents:
                    os.makedirs(target, mode, exist_ok=False)
                else:
                    os.mkdir(target, mode)
            except FileExistsError:
                if not exist_ok or not os.path.isdir(target):
                    raise

        async def steps(steps: _Steps, gate: _Gate) -> None:
            await aiofiles.os.wrap(make)(executor=self._executor)

        await self._operate(steps)

    # -- reporting ------------------------------------------------------------------

    def statistics(self) -> FileIOStatistics:
        """A snapshot of the counters (summed over the event loops that used this object)."""
        with self._lock:
            gates = list(self._gates.values())
            operations, failed, cancelled, read, written, peak = self._retired
        for gate in gates:
            operations += gate.operations
            failed += gate.failed
            cancelled += gate.cancelled
            read += gate.bytes_read
            written += gate.bytes_written
            peak = max(peak, gate.peak)
        return FileIOStatistics(
            max_concurrency=self._limit,
            operations=operations,
            failed=failed,
            cancelled=cancelled,
            in_flight=sum(gate.in_flight for gate in gates),
            waiting=sum(gate.waiting() for gate in gates),
            peak_in_flight=peak,
            bytes_read=read,
            bytes_written=written,
        )

    def __repr__(self) -> str:
        stats = self.statistics()
        return (
            f"<FileIO max_concurrency={self._limit}: {stats.in_flight} in flight, "
            f"{stats.waiting} waiting, {stats.operations} done>"
        )
