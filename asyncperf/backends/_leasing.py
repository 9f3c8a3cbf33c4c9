"""What every leased queue shares: the lease object, ``lease()`` and ``consume()``.

A queue implements five primitive operations (take one job now, and settle a
lease: ack, nack, renew, release); this module builds the rest on them, so the
in-process and the Redis queue behave the same way where it matters: how a
lease is renewed while held, how an exception or a cancellation settles it,
and how a consumer bounds the jobs it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, Literal, TypeVar

from asyncperf._errors import BackendError
from asyncperf._validate import check_int, check_number
from asyncperf.abc import Lease

__all__ = ["JobLease", "LeasingQueue", "Settle", "check_timeout"]

T = TypeVar("T")

#: The ways a lease can be settled or kept (``renew``).
Settle = Literal["ack", "nack", "dead", "renew", "release"]


def check_timeout(timeout: float | None) -> float | None:
    """``timeout`` checked: None (wait for ever) or a number >= 0."""
    if timeout is None:
        return None
    return check_number("timeout", timeout, strict=False)


class JobLease(Generic[T]):
    """A :class:`~asyncperf.abc.Lease` handed out by a queue (both backends use this class)."""

    __slots__ = ("_queue", "_settled", "attempt", "id", "item", "lost", "priority")

    def __init__(
        self, queue: LeasingQueue[T], job_id: str, item: T, priority: int, attempt: int
    ) -> None:
        self._queue = queue
        self.id = job_id
        self.item = item
        self.priority = priority
        self.attempt = attempt
        #: Set when the queue refused a renew or a settle: the lease had run out.
        self.lost = False
        self._settled = False

    @property
    def settled(self) -> bool:
        """Whether ack, nack or release was called."""
        return self._settled

    async def _settle(self, how: Settle, reason: str = "") -> bool:
        if self._settled:
            raise RuntimeError(f"lease {self.id} is already settled")
        if how != "renew":
            self._settled = True
        accepted = await self._queue._settle(self, how, reason)
        if not accepted:
            self.lost = True
        return accepted

    async def ack(self) -> bool:
        return await self._settle("ack")

    async def nack(self, reason: str = "", *, retry: bool = True) -> bool:
        return await self._settle("nack" if retry else "dead", reason)

    async def renew(self) -> bool:
        return await self._settle("renew")

    async def release(self) -> bool:
        return await self._settle("release")

    def __repr__(self) -> str:
        return f"<JobLease {self.id} priority={self.priority} attempt={self.attempt}>"


class LeasingQueue(Generic[T]):
    """Base class of the leased queues: ``lease()`` and ``consume()`` over ``take``.

    Subclasses set ``_lease_seconds`` and implement :meth:`take` and :meth:`_settle`.
    """

    _lease_seconds: float

    async def take(self, timeout: float | None = None) -> Lease[T]:  # pragma: no cover
        raise NotImplementedError

    async def _settle(self, lease: JobLease[T], how: Settle, reason: str) -> bool:
        raise NotImplementedError  # pragma: no cover

    @contextlib.asynccontextmanager
    async def lease(self, timeout: float | None = None) -> AsyncIterator[Lease[T]]:
        """Lease the next job for the block: renewed while it runs, then settled.

        Normal exit acks; an exception nacks with the exception as the reason
        (and goes on); a cancellation gives the job back without counting the
        attempt. A block may settle the lease itself first (``nack(retry=False)``).

        Raises:
            TimeoutError: no job came within ``timeout`` seconds.
        """
        job = await self.take(timeout)
        async with self._held(job):
            yield job

    @contextlib.asynccontextmanager
    async def _held(self, job: Lease[T]) -> AsyncIterator[None]:
        renewer = asyncio.create_task(self._keep_renewed(job))
        try:
            yield
        except Exception as exc:
            await _stop(renewer)
            if not _settled(job):
                await _shielded(job.nack(f"{type(exc).__name__}: {exc}"))
            raise
        except BaseException:
            # Cancelled (or the process is exiting): the job did not fail, give it back.
            await _stop(renewer)
            if not _settled(job):
                await _shielded(job.release())
            raise
        await _stop(renewer)
        if not _settled(job):
            await _shielded(job.ack())

    async def _keep_renewed(self, job: Lease[T]) -> None:
        """Renew ``job`` every third of the lease period until it is lost or settled."""
        interval = self._lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                # Shielded: a renew cut half-way by the settle's cancel could leave
                # the client's connection in a bad state (redis/redis-py#2028).
                if not await _shielded(job.renew()):
                    return  # lost: the job may be running elsewhere; the settle will tell
            except BackendError:
                continue  # Redis away for a moment: the next tick tries again

    async def consume(
        self,
        handler: Callable[[Lease[T]], Awaitable[object]],
        *,
        workers: int = 1,
        stop: asyncio.Event | None = None,
    ) -> int:
        """Run ``handler(job)`` on jobs, holding at most ``workers`` leases at once.

        A free worker is waited for *before* a job is taken, so a busy consumer
        leaves jobs in the queue for others. Each job is held as in
        :meth:`lease`: a handler that raises nacks its job (the error is not
        raised here). Returns when ``stop`` is set, after the running jobs end;
        cancelling the call cancels the running jobs, which give their leases back.

        Returns:
            How many jobs were acked.

        Raises:
            ValueError: ``workers`` is below 1.
        """
        check_int("workers", workers, minimum=1)
        free = asyncio.Semaphore(workers)
        running: set[asyncio.Task[None]] = set()
        acked = 0

        async def run(job: Lease[T]) -> None:
            nonlocal acked
            try:
                async with self._held(job):
                    await handler(job)
                acked += not job.lost
            except Exception:
                pass  # nacked by _held; the queue counts it
            finally:
                free.release()

        stopped = asyncio.create_task(stop.wait()) if stop is not None else None
        try:
            while stopped is None or not stopped.done():
                await free.acquire()
                job = await self._take_or_stop(stopped)
                if job is None:
                    free.release()
                    break
                task = asyncio.create_task(run(job))
                running.add(task)
                task.add_done_callback(running.discard)
            while running:
                await asyncio.wait(set(running))
        finally:
            if stopped is not None:
                await _stop(stopped)
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(set(running))
        return acked

    async def _take_or_stop(self, stopped: asyncio.Task[bool] | None) -> Lease[T] | None:
        """The next job, or None once ``stopped`` is done (a job taken meanwhile is given back)."""
        if stopped is None:
            return await self.take()
        taking = asyncio.create_task(self.take())
        try:
            await asyncio.wait({taking, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not taking.done():
                taking.cancel()
                await asyncio.wait({taking})
        if taking.cancelled():
            return None
        job = taking.result()
        if stopped.done():
            await job.release()
            return None
        return job


def _settled(job: Lease[object]) -> bool:
    return bool(getattr(job, "settled", False))


async def _stop(task: asyncio.Task[object] | asyncio.Task[None] | asyncio.Task[bool]) -> None:
    """Cancel ``task`` and wait until it has ended."""
    task.cancel()
    # wait(), not `await task`: a cancellation of the caller itself must not be swallowed.
    await asyncio.wait({task})


async def _shielded(settle: Awaitable[bool]) -> bool:
    """Run a settle to its end even if the caller is cancelled meanwhile (then re-raise)."""
    task = asyncio.ensure_future(settle)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise
