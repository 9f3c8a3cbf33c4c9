"""Batcher: gathers many small awaits to one upstream into bounded batches (micro-batching).

Callers ``await batcher.submit(item)`` and get their own result, while the upstream
sees one ``process_batch(items)`` call per batch. A batch is sent when it is full
(``max_size`` items) or when its oldest item has waited ``max_delay`` seconds, and
at most ``max_concurrency`` batches run at once: past that, the next batch fills up
and then ``submit`` waits (backpressure), in arrival order.

Every accepted item ends with a result or an error, never silently lost; a caller
that gives up leaves its item in its batch, so the batch its neighbours travel in
does not change.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Final, Generic, Literal, TypeVar, cast

from asyncperf._errors import BatcherClosed, BatchFailed, QueueFull
from asyncperf._samples import LatencySamples
from asyncperf._validate import check_int, check_number
from asyncperf.abc import Cancellable, Clock
from asyncperf.loop import SystemClock

__all__ = ["Batcher", "BatcherStatistics", "FlushReason"]

T = TypeVar("T")
R = TypeVar("R")

#: Why a batch was sent: it was full, its oldest item had waited ``max_delay``,
#: ``flush()`` asked, or ``aclose()`` did.
FlushReason = Literal["size", "delay", "flush", "close"]
_REASONS: Final[tuple[FlushReason, ...]] = ("size", "delay", "flush", "close")

_OPEN: Final = 0
_CLOSING: Final = 1
_CLOSED: Final = 2


@dataclass(frozen=True, slots=True)
class BatcherStatistics:
    """A snapshot of a :class:`Batcher`.

    Counts of calls: every accepted ``submit``/``submit_nowait`` call ends with its
    item's result or error, so ``submitted == succeeded + failed + outstanding``
    always holds (a caller that gave up still counts by how its item ended, and
    in ``cancelled`` as well). ``rejected`` calls were never accepted.

    Counts of items: ``submitted == items + deduplicated + pending`` (until an
    ``aclose()`` is cancelled, which fails the pending items unsent); ``items``
    is what ``process_batch`` was given.
    Times are in seconds on the batcher's clock; percentiles cover the last 1,024
    samples, means cover everything.
    """

    name: str
    #: Calls accepted (``submit`` and ``submit_nowait``).
    submitted: int
    #: Items sent to ``process_batch`` (duplicates of a key counted once).
    items: int
    #: Calls whose item joined an equal-keyed item already pending (sent once, fanned out).
    deduplicated: int
    #: Calls whose item ended with a result.
    succeeded: int
    #: Calls whose item ended with an exception (its own, or :class:`BatchFailed`).
    failed: int
    #: Calls whose caller gave up (was cancelled) before its item ended; the item still ended.
    cancelled: int
    #: Calls refused: the batcher was closed, or it closed while they waited for room.
    rejected: int
    #: Calls accepted whose item has not ended yet.
    outstanding: int
    #: Batches sent to ``process_batch``.
    batches: int
    #: Batches that failed as a whole (``process_batch`` raised, was cancelled, or
    #: returned the wrong number of results).
    batches_failed: int
    #: Batches running now.
    in_flight: int
    #: Distinct items waiting in the next batch.
    pending: int
    #: ``submit`` calls waiting for room (backpressure); not yet accepted.
    waiting: int
    mean_batch_size: float
    p99_batch_size: float
    #: Batches sent, by why they were sent: ``size``, ``delay``, ``flush``, ``close``.
    flushes: Mapping[str, int]
    #: Time an item waited from its submission to the start of its batch.
    wait_mean: float
    wait_p99: float
    #: Time one ``process_batch`` call took.
    processing_p50: float
    processing_p99: float


class _Slot(Generic[T, R]):
    """One distinct item of a batch, with the future of each caller waiting for it."""

    __slots__ = ("arrived", "future", "item", "others")

    def __init__(self, item: T, future: asyncio.Future[R], arrived: float) -> None:
        self.item = item
        self.future = future
        # Callers whose equal-keyed item was folded into this one; None (not a list)
        # in the common case, so a slot costs no extra allocation.
        self.others: list[asyncio.Future[R]] | None = None
        self.arrived = arrived


class _Batch(Generic[T, R]):
    """One batch sent to ``process_batch``."""

    __slots__ = ("sequence", "settled", "slots")

    def __init__(self, sequence: int, slots: list[_Slot[T, R]]) -> None:
        self.sequence = sequence
        self.slots = slots
        self.settled = False


# A submit waiting for room: its item, the item's key, and the future that receives
# the item's own future once the batcher has accepted it.
_Waiter = tuple[T, Hashable, asyncio.Future[asyncio.Future[R]]]


class Batcher(Generic[T, R]):
    """Gathers items submitted one by one into batches for one ``process_batch`` call each.

    ::

        async def fetch_users(ids: list[int]) -> list[User | BaseException]:
            rows = await db.fetch("SELECT ... WHERE id = ANY($1)", ids)
            found = {row["id"]: User(**row) for row in rows}
            return [found.get(i) or LookupError(i) for i in ids]

        async with Batcher(fetch_users, max_size=100, max_delay=0.002) as users:
            user = await users.submit(42)          # one caller, one result

    A batch is sent when ``max_size`` distinct items are pending (reason ``size``),
    or ``max_delay`` seconds after the oldest pending item arrived (reason
    ``delay``; one timer per batch, not per item). ``process_batch(items)`` must
    return one result per item, in order; a result that is an exception instance
    is raised to that item's callers only. If it raises, or returns the wrong
    number of results, every item of the batch fails with its own
    :class:`~asyncperf.BatchFailed`, chained to the cause.

    With ``key=``, items of equal key in one pending batch are sent once and every
    caller of that key gets the same result (or the same exception instance).

    Backpressure: at most ``max_concurrency`` batches run at once. When that many
    run and the next batch is full, ``submit`` waits, first come first served,
    until a batch ends; ``submit_nowait`` raises :class:`~asyncperf.QueueFull`.
    The bound is on by default because an unbounded batcher in front of a slow
    upstream only turns overload into memory.

    A caller cancelled while it waits leaves its item in its batch (the batch and
    its neighbours do not change) and its result is dropped. ``flush()`` sends
    what is pending and waits for every batch started so far; ``aclose()`` (and
    leaving ``async with``) stops accepting, sends what is pending and waits for
    every batch to end. If ``aclose()`` is itself cancelled, the running batches
    are cancelled and their items fail with ``BatchFailed``, so none is left hanging.
    """

    def __init__(
        self,
        process_batch: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_size: int = 64,
        max_delay: float = 0.005,
        max_concurrency: int = 1,
        key: Callable[[T], Hashable] | None = None,
        clock: Clock | None = None,
        name: str = "batcher",
    ) -> None:
        """Create a batcher; it starts its first batch with the first item.

        Args:
            process_batch: ``async (items) -> results``, one result or exception per item.
            max_size: distinct items in one batch at most.
            max_delay: seconds the oldest item of a batch may wait before it is sent
                (0: send what arrived in the same pass of the event loop).
            max_concurrency: batches running at once at most.
            key: a function giving each item's key; equal keys in one batch are sent once.
            clock: the time source for ``max_delay`` and the statistics.
            name: shown in errors, ``repr`` and statistics.

        Raises:
            TypeError: ``process_batch`` or ``key`` is not callable, or a setting
                has the wrong type.
            ValueError: ``max_size`` or ``max_concurrency`` below 1, ``max_delay``
                negative or not finite.
        """
        if not callable(process_batch):
            raise TypeError(f"process_batch must be callable, not {type(process_batch).__name__}")
        if key is not None and not callable(key):
            raise TypeError(f"key must be callable or None, not {type(key).__name__}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        self._process_batch = process_batch
        self._max_size = check_int("max_size", max_size, minimum=1)
        self._max_delay = check_number("max_delay", max_delay, minimum=0.0, strict=False)
        self._max_concurrency = check_int("max_concurrency", max_concurrency, minimum=1)
        self._key = key
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._name = name
        self._state = _OPEN

        # The batch being filled; with key=, its slots by key as well.
        self._pending: list[_Slot[T, R]] = []
        self._by_key: dict[Hashable, _Slot[T, R]] = {}
        # Set when the pending batch must go as soon as a batch slot is free.
        self._due: FlushReason | None = None
        self._timer: Cancellable | None = None
        self._waiters: deque[_Waiter[T, R]] = deque()

        # Batches are numbered in the order they are sent; flush() waits until
        # every batch numbered below a target has ended.
        self._next_sequence = 0
        self._running: dict[int, asyncio.Task[None]] = {}
        self._ended_waiters: list[tuple[int, asyncio.Future[None]]] = []

        self._submitted = 0
        self._deduplicated = 0
        self._succeeded = 0
        self._failed = 0
        self._cancelled = 0
        self._rejected = 0
        self._outstanding = 0
        self._items = 0
        self._batches = 0
        self._batches_failed = 0
        self._flushes: dict[str, int] = dict.fromkeys(_REASONS, 0)
        self._total_wait = 0.0
        self._sizes = LatencySamples()
        self._waits = LatencySamples()
        self._processing = LatencySamples()

    # -- settings and state -----------------------------------------------------

    @property
    def name(self) -> str:
        """The batcher's name."""
        return self._name

    @property
    def max_size(self) -> int:
        """Distinct items in one batch at most."""
        return self._max_size

    @property
    def max_delay(self) -> float:
        """Seconds the oldest item of a batch waits at most before the batch is sent."""
        return self._max_delay

    @property
    def max_concurrency(self) -> int:
        """Batches running at once at most."""
        return self._max_concurrency

    @property
    def pending(self) -> int:
        """Distinct items waiting in the next batch."""
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        """Batches running now."""
        return len(self._running)

    @property
    def closed(self) -> bool:
        """Whether ``aclose()`` has been called (new items are refused)."""
        return self._state != _OPEN

    # -- submitting ---------------------------------------------------------------

    async def submit(self, item: T) -> R:
        """Add ``item`` to the next batch and wait for its result.

        Waits first, in arrival order, while ``max_concurrency`` batches run and
        the next batch is full. Cancelling the caller leaves the item in its batch;
        only its result is dropped.

        Raises:
            BatcherClosed: the batcher is closed, or closed while this call waited for room.
            BatchFailed: the item's batch failed as a whole (the cause is chained).
            Exception: the exception ``process_batch`` returned for this item.
            TypeError: ``key(item)`` is not hashable (or whatever ``key`` raised).
        """
        if self._state != _OPEN:
            raise self._refuse()
        item_key = None if self._key is None else self._key_of(item)
        if self._waiters or len(self._pending) >= self._max_size:
            future = await self._wait_for_room(item, item_key)
        else:
            future = self._accept(item, item_key)
            if self._due is not None:
                self._pump()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # The item ended just as the caller was cancelled: mark its
                # exception retrieved, or the loop would report it as lost.
                future.exception()
            raise

    def submit_nowait(self, item: T) -> asyncio.Future[R]:
        """Add ``item`` to the next batch if there is room now; a future of its result.

        For code that cannot await (a write-behind from a sync call). Cancelling
        the future drops the result only, as cancelling a ``submit`` caller does.
        Must be called on the event loop's thread, with the loop running.

        Raises:
            QueueFull: ``max_concurrency`` batches run and the next batch is full
                (or ``submit`` calls are already waiting for room).
            BatcherClosed: the batcher is closed.
            TypeError: ``key(item)`` is not hashable (or whatever ``key`` raised).
        """
        if self._state != _OPEN:
            raise self._refuse()
        item_key = None if self._key is None else self._key_of(item)
        if self._waiters or len(self._pending) >= self._max_size:
            raise QueueFull(
                f"Batcher {self._name!r} is full: {len(self._pending)} items wait for "
                f"one of {self._max_concurrency} running batches to end; use submit() to wait."
            )
        future = self._accept(item, item_key)
        if self._due is not None:
            self._pump()
        return future

    def _key_of(self, item: T) -> Hashable:
        assert self._key is not None  # callers skip this without a key
        item_key = self._key(item)
        hash(item_key)  # refuse an unhashable key here, not later inside the batcher
        return item_key

    def _refuse(self) -> BatcherClosed:
        self._rejected += 1
        return BatcherClosed(f"Cannot submit to batcher {self._name!r}: it has been closed.")

    def _accept(self, item: T, item_key: Hashable) -> asyncio.Future[R]:
        """Put ``item`` into the pending batch (the caller made sure there is room)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._submitted += 1
        self._outstanding += 1
        if self._key is not None:
            same = self._by_key.get(item_key)
            if same is not None:
                if same.others is None:
                    same.others = [future]
                else:
                    same.others.append(future)
                self._deduplicated += 1
                return future
        slot = _Slot(item, future, self._clock.now())
        if self._key is not None:
            self._by_key[item_key] = slot
        pending = self._pending
        pending.append(slot)
        if len(pending) == 1:
            # One timer per batch, started by its oldest item.
            self._timer = self._clock.call_later(self._max_delay, self._on_delay)
        if len(pending) >= self._max_size:
            self._make_due("size")
        return future

    async def _wait_for_room(self, item: T, item_key: Hashable) -> asyncio.Future[R]:
        """Wait in line until the batcher accepts ``item``; the item's future."""
        admitted: asyncio.Future[asyncio.Future[R]] = asyncio.get_running_loop().create_future()
        waiter: _Waiter[T, R] = (item, item_key, admitted)
        self._waiters.append(waiter)
        try:
            return await admitted
        except asyncio.CancelledError:
            if not admitted.done() or admitted.cancelled():
                try:
                    self._waiters.remove(waiter)
                except ValueError:  # already taken off the line by _pump or aclose
                    pass
            elif admitted.exception() is None:
                # Accepted just as the caller was cancelled: the item stays in its
                # batch, as for any cancelled caller; drop its result.
                admitted.result().cancel()
            raise

    # -- sending batches ----------------------------------------------------------

    def _make_due(self, reason: FlushReason) -> None:
        """The pending batch must go as soon as a batch slot is free."""
        if self._due is None:
            self._due = reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_delay(self) -> None:
        self._timer = None
        if self._pending and self._due is None:
            self._due = "delay"
            self._pump()

    def _pump(self) -> None:
        """Send the due batch while a slot is free; let waiting submits in while there is room."""
        while True:
            if self._due is not None and len(self._running) < self._max_concurrency:
                self._dispatch()
            elif self._waiters and len(self._pending) < self._max_size:
                item, item_key, admitted = self._waiters.popleft()
                if not admitted.done():  # its caller was cancelled while in line
                    admitted.set_result(self._accept(item, item_key))
            else:
                return

    def _dispatch(self) -> None:
        reason = self._due
        assert reason is not None  # _pump dispatches due batches only
        slots = self._pending
        self._pending = []
        self._due = None
        if self._key is not None:
            self._by_key = {}
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        assert slots, "a batch is due only while items are pending"
        batch = _Batch(self._next_sequence, slots)
        self._next_sequence += 1
        self._batches += 1
        self._items += len(slots)
        self._flushes[reason] += 1
        self._sizes.add(float(len(slots)))
        now = self._clock.now()
        for slot in slots:
            waited = now - slot.arrived
            self._total_wait += waited
            self._waits.add(waited)
        task = asyncio.get_running_loop().create_task(
            self._run_batch(batch), name=f"{self._name} batch {batch.sequence}"
        )
        # The dict keeps a strong reference until the batch has ended.
        self._running[batch.sequence] = task
        task.add_done_callback(lambda done: self._batch_ended(batch, done))

    async def _run_batch(self, batch: _Batch[T, R]) -> None:
        items = [slot.item for slot in batch.slots]
        started = self._clock.now()
        try:
            results = list(await self._process_batch(items))
        except asyncio.CancelledError as exc:
            self._fail_batch(batch, "was cancelled", exc)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return  # process_batch let a cancellation of its own escape: the batch failed
        except Exception as exc:
            self._fail_batch(batch, f"process_batch raised {type(exc).__name__}: {exc}", exc)
            return
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: fail the items, go on
            self._fail_batch(batch, f"process_batch raised {type(exc).__name__}", exc)
            raise
        finally:
            self._processing.add(self._clock.now() - started)
        if len(results) != len(items):
            self._fail_batch(
                batch,
                f"process_batch returned {len(results)} results for {len(items)} items",
                None,
            )
            return
        self._settle(batch, results)

    def _settle(self, batch: _Batch[T, R], results: list[R | BaseException]) -> None:
        batch.settled = True
        succeeded = failed = cancelled = 0
        for slot, result in zip(batch.slots, results, strict=True):
            futures = [slot.future] if slot.others is None else [slot.future, *slot.others]
            is_error = isinstance(result, BaseException)
            for future in futures:
                if future.done():  # its caller was cancelled: the result is dropped
                    cancelled += future.cancelled()
                elif is_error:
                    _set_exception(future, cast(BaseException, result))
                else:
                    future.set_result(cast(R, result))
            if is_error:
                failed += len(futures)
            else:
                succeeded += len(futures)
        self._count_ended(succeeded, failed, cancelled)

    def _fail_batch(self, batch: _Batch[T, R], what: str, cause: BaseException | None) -> None:
        """Every item of ``batch`` fails with its own BatchFailed chained to ``cause``."""
        if batch.settled:
            return
        batch.settled = True
        self._batches_failed += 1
        message = f"batcher {self._name!r}: batch of {len(batch.slots)} items failed: {what}"
        self._fail_slots(batch.slots, message, cause)

    def _fail_slots(
        self, slots: list[_Slot[T, R]], message: str, cause: BaseException | None
    ) -> None:
        failed = cancelled = 0
        for slot in slots:
            futures = [slot.future] if slot.others is None else [slot.future, *slot.others]
            failed += len(futures)
            for future in futures:
                if future.done():
                    cancelled += future.cancelled()
                    continue
                # One exception per caller: a shared instance would collect every
                # caller's traceback.
                error = BatchFailed(message)
                error.__cause__ = cause
                future.set_exception(error)
        self._count_ended(0, failed, cancelled)

    def _count_ended(self, succeeded: int, failed: int, cancelled: int) -> None:
        self._succeeded += succeeded
        self._failed += failed
        self._cancelled += cancelled
        self._outstanding -= succeeded + failed

    def _batch_ended(self, batch: _Batch[T, R], task: asyncio.Task[None]) -> None:
        """The batch's task is done: free its slot, wake flush() and aclose(), send more."""
        del self._running[batch.sequence]
        if not batch.settled:
            # Cancelled before it started: the coroutine never ran to fail the items.
            self._fail_batch(batch, "was cancelled before it started", None)
        if not task.cancelled():
            error = task.exception()  # retrieved, so the loop does not report it again
            if isinstance(error, Exception):  # a bug here: never let it vanish
                task.get_loop().call_exception_handler(
                    {"message": f"batcher {self._name!r}: batch task failed", "exception": error}
                )
        self._wake_ended_waiters()
        self._pump()

    def _wake_ended_waiters(self) -> None:
        """Release the flush() and aclose() calls whose batches have all ended."""
        lowest = self._lowest_unfinished()
        still: list[tuple[int, asyncio.Future[None]]] = []
        for target, waiter in self._ended_waiters:
            if waiter.done():
                continue
            if target <= lowest:
                waiter.set_result(None)
            else:
                still.append((target, waiter))
        self._ended_waiters = still

    def _lowest_unfinished(self) -> int:
        # Sequence numbers are inserted in increasing order, so the first key is the lowest.
        return next(iter(self._running)) if self._running else self._next_sequence

    async def _wait_ended_before(self, target: int) -> None:
        """Wait until every batch numbered below ``target`` has ended."""
        if self._lowest_unfinished() >= target:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ended_waiters.append((target, waiter))
        await waiter

    def _target(self) -> int:
        """The number after the last batch sent so far, or about to be sent."""
        return self._next_sequence + (1 if self._pending else 0)

    # -- flushing and closing -------------------------------------------------------

    async def flush(self) -> None:
        """Send the pending items now and wait until every batch started so far has ended.

        If ``max_concurrency`` batches are running, the pending batch goes when
        one of them ends. Calls still waiting for room are not waited for.
        """
        if self._pending:
            self._make_due("flush")
            self._pump()
        await self._wait_ended_before(self._target())

    async def aclose(self) -> None:
        """Stop accepting items, send the pending ones, and wait for every batch to end.

        ``submit`` calls still waiting for room were never accepted: they raise
        :class:`~asyncperf.BatcherClosed`. Idempotent. If this call is cancelled
        (e.g. by a timeout around it), the running batches are cancelled and the
        items not sent yet fail: every item ends with :class:`~asyncperf.BatchFailed`.
        """
        if self._state == _OPEN:
            self._state = _CLOSING
            while self._waiters:
                _, _, admitted = self._waiters.popleft()
                if not admitted.done():
                    self._rejected += 1
                    admitted.set_exception(
                        BatcherClosed(f"Batcher {self._name!r} was closed before it had room.")
                    )
            if self._pending:
                self._make_due("close")
                self._pump()
        try:
            await self._wait_ended_before(self._target())
        except asyncio.CancelledError:
            await self._abort()
            raise
        finally:
            if not self._running and not self._pending:
                self._state = _CLOSED

    async def _abort(self) -> None:
        """Fail the unsent items and cancel the running batches; wait for them to end."""
        if self._pending:
            unsent = self._pending
            message = (
                f"batcher {self._name!r}: {len(unsent)} pending items were not sent: "
                "aclose() was cancelled"
            )
            self._fail_slots(unsent, message, None)
            self._pending = []
            self._by_key = {}
            self._due = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            # flush() calls counted these items as the next batch (see _target): that
            # batch has now ended, unsent, and must not keep them waiting for it.
            self._next_sequence += 1
            self._wake_ended_waiters()
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel(msg=f"batcher {self._name!r}: aclose() was cancelled")
        if tasks:
            await asyncio.wait(tasks)

    async def __aenter__(self) -> Batcher[T, R]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- statistics ------------------------------------------------------------------

    def statistics(self) -> BatcherStatistics:
        """A snapshot of the counters, the batch sizes and the times."""
        p99_size = self._sizes.quantiles(0.99)[0]
        wait_p99 = self._waits.quantiles(0.99)[0]
        processing_p50, processing_p99 = self._processing.quantiles(0.5, 0.99)
        return BatcherStatistics(
            name=self._name,
            submitted=self._submitted,
            items=self._items,
            deduplicated=self._deduplicated,
            succeeded=self._succeeded,
            failed=self._failed,
            cancelled=self._cancelled,
            rejected=self._rejected,
            outstanding=self._outstanding,
            batches=self._batches,
            batches_failed=self._batches_failed,
            in_flight=len(self._running),
            pending=len(self._pending),
            waiting=len(self._waiters),
            mean_batch_size=self._items / self._batches if self._batches else 0.0,
            p99_batch_size=p99_size,
            flushes=MappingProxyType(dict(self._flushes)),
            wait_mean=self._total_wait / self._items if self._items else 0.0,
            wait_p99=wait_p99,
            processing_p50=processing_p50,
            processing_p99=processing_p99,
        )

    def __repr__(self) -> str:
        state = ("open", "closing", "closed")[self._state]
        return (
            f"<Batcher {self._name!r} {state}: {len(self._pending)} pending, "
            f"{len(self._running)}/{self._max_concurrency} batches in flight>"
        )


def _set_exception(future: asyncio.Future[R], error: BaseException) -> None:
    try:
        future.set_exception(error)
    except TypeError:  # StopIteration cannot travel through a future
        wrapped = RuntimeError(f"process_batch returned {type(error).__name__} as a result")
        wrapped.__cause__ = error
        future.set_exception(wrapped)
