"""TieredCache: cache levels stacked top-down, with single-flight loads.

Reads go down the levels and copy what they find up (promotion); writes go
to every level at once (write-through) or to the top at once and to the
levels below in batches (write-behind). ``get_or_load`` runs at most one load
per key, in a task of its own that its callers wait on.

Time: each level reports the seconds an entry has left, so promotion carries
the *remaining* TTL up and never extends a lifetime. The stale windows
(``stale_while_revalidate``, ``stale_if_error``) are stored as part of that
TTL: an entry is written with ``ttl + grace`` (``grace`` the larger window),
and it is *stale* once it has ``grace`` seconds or less left.
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from functools import partial
from types import EllipsisType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

if TYPE_CHECKING:
    from aiocache.base import BaseCache

from asyncperf._errors import CacheClosed, QueueFull
from asyncperf._validate import check_int, check_number
from asyncperf.abc import Cancellable, Clock
from asyncperf.cache._base import (
    MISS,
    CacheEntry,
    CacheLevel,
    CacheStatistics,
    EvictionReason,
    LatencySamples,
)
from asyncperf.cache._memory import MemoryCache
from asyncperf.io._batcher import Batcher
from asyncperf.loop import SystemClock

__all__ = ["AiocacheLevel", "TieredCache", "TieredStatistics", "WriteMode"]

V = TypeVar("V")
K = TypeVar("K", bound=Hashable)

WriteMode = Literal["through", "behind"]

_INF: Final = math.inf
_CLOSED: Final = "Cannot use a TieredCache that has been closed."
#: Write-behind batches sent at most: one being written, the others queued behind it.
#: With those and the next one full, a write of a new key waits, so a slow lower level
#: slows writers instead of growing memory.
_PENDING_BATCHES: Final = 4
#: Failures remembered for negative caching at most (the oldest are forgotten first).
_NEGATIVE_MAX: Final = 10_000


def _check_ttl(name: str, ttl: object) -> float:
    return check_number(name, ttl, minimum=0.0, strict=True)


@dataclass(frozen=True, slots=True)
class TieredStatistics:
    """A snapshot of a :class:`TieredCache`: each level's statistics and the tier's counters.

    Every ``get`` and ``get_or_load`` counts one of ``hits`` (a fresh entry at
    any level), ``stale_served`` (a stale value returned at once under
    stale-while-revalidate) or ``misses``; a miss of ``get_or_load`` then
    counts one of ``loads`` (it started the load), ``coalesced`` (it joined a
    load in flight) or ``negative_hits`` (a remembered failure answered it).
    A stale value returned because the load failed (stale-if-error) adds to
    ``stale_served`` as well as to ``misses``.
    """

    #: The levels' own statistics, top first (hit latency per level is there).
    levels: tuple[CacheStatistics, ...]
    hits: int
    misses: int
    #: Loader calls for misses and ``prewarm`` (refreshes are counted apart).
    loads: int
    load_errors: int
    #: Callers that joined a load already in flight instead of starting one.
    coalesced: int
    stale_served: int
    #: Background refreshes started by stale-while-revalidate.
    refreshes: int
    refresh_errors: int
    #: Misses answered by a remembered failure (negative caching), the loader not called.
    negative_hits: int
    #: Entries copied to an upper level after a hit below it.
    promotions: int
    #: The tier's own writes that raised (promotions and stores of loaded values);
    #: reported to the loop's exception handler, never raised into callers.
    write_errors: int
    #: Writes waiting for (or in) the next write-behind batch.
    write_behind_pending: int
    #: Entries write-behind stored at the lower levels (one per level written).
    write_behind_written: int
    #: Entries of write-behind batches whose ``set_many`` raised, and writes the lower
    #: levels never got because the tier closed first (an interrupted ``aclose``, or a
    #: ``set`` still at the top level when ``aclose`` began).
    write_behind_errors: int
    #: Write-behind batches written (each one ``set_many`` per lower level).
    write_behind_batches: int
    #: Loads running now.
    in_flight: int

    @property
    def hit_ratio(self) -> float:
        """hits / (hits + misses); 0.0 before the first lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class _Flight:
    """One load of one key: the task running it and who waits for it."""

    __slots__ = ("detached", "refresh", "task", "waiters")

    task: asyncio.Task[Any]

    def __init__(self, refresh: bool) -> None:
        self.refresh = refresh
        # Set by set/delete/clear of the key while the load runs: its value then
        # goes to the callers already waiting but is not stored, as it may be older.
        self.detached = False
        self.waiters = 0


class _Read:
    """A lookup below the top level in progress, until it has promoted what it found."""

    __slots__ = ("superseded",)

    def __init__(self) -> None:
        # Set by a write, delete or clear of the key meanwhile: what this lookup
        # found may be older than what the upper levels hold now, so it is not copied up.
        self.superseded = False


class TieredCache:
    """Cache levels stacked top-down (memory over disk over a shared store), with loads.

    **Reads** look the key up level by level from the top; a hit at a lower
    level is copied to the levels above it with the entry's *remaining* TTL,
    so promotion never extends a lifetime, and not at all when the key was
    written, deleted or loaded while the lookup ran (the copy would be older
    than what the levels above now hold). ``get`` returns only fresh values
    (see the stale windows below).

    **Writes** go to every level, awaited in order (``write="through"``), or
    to the top level at once and to the lower ones in batches
    (``write="behind"``): the tier's :class:`~asyncperf.io.Batcher` gathers
    the keys written into batches, each written with one ``set_many`` per
    lower level, ``write_behind_delay`` seconds after the first write of the
    batch or as soon as ``write_behind_batch`` keys are pending; the latest
    value of a key wins and an entry's TTL keeps running while it waits. One
    batch is written at a time, in order; a key written again while its batch
    is being written goes to a later batch. :meth:`flush` writes what is
    pending now, :meth:`aclose` flushes before it closes. At most four
    batches are sent at a time (one being written, the others queued behind
    it): with those and the next one full, a write of a new key waits until
    they have been written, so a slow lower level slows writers instead of
    growing memory. A failed batch is counted (``write_behind_errors``) and
    reported to the loop's exception handler, never raised into unrelated
    callers. Reads see pending writes, so a write evicted from the top level
    is not lost to readers.

    **Loads** (:meth:`get_or_load`) are single-flight: however many callers
    miss the same key, one loader call runs, in a task of its own, and all of
    them get its value. Cancelling a caller, even the one that started the
    load, leaves the load running for the others; if every caller goes away
    the load still completes and fills the cache. A failed load raises the
    loader's exception, unchanged, to every caller waiting on it, and is not
    cached, unless ``negative_ttl`` is set: the failure is then remembered
    (in the tier, on its clock) and raised again to callers of that key for
    ``negative_ttl`` seconds without calling the loader. ``set``, ``delete``
    and ``clear`` forget remembered failures and keep a load already in
    flight from storing its (possibly older) value.

    **TTLs**: ``ttl`` (or ``default_ttl``; None: no expiry) is cut at random
    by up to ``jitter`` of itself, ``ttl * (1 - jitter * random())``, so keys
    loaded together do not expire together. Give jitter to the tier or to its
    levels, not to both.

    **Stale windows**: with ``stale_while_revalidate`` or ``stale_if_error``
    (seconds), entries are stored with ``ttl + max(both)``, and an entry is
    *stale* once its TTL has run out and it lives on only in that window.
    ``get_or_load`` returns a stale entry at once if it expired at most
    ``stale_while_revalidate`` seconds ago, and starts one background
    refresh (single-flight with every other load of the key). Otherwise, if
    it expired at most ``stale_if_error`` seconds ago, it loads and returns
    the stale value only if the load fails (a remembered failure counts as
    one). While a failure of the key is remembered (``negative_ttl``), no new
    refresh starts: the stale value is served meanwhile. ``get`` has no
    loader to refresh with and no failure to hide, so it treats a stale entry
    as a miss.

    **Errors**: a level's exception in a lookup, or in the caller's own
    ``set``, ``delete`` or ``clear``, is raised to the caller. The tier's own
    writes (promotions, storing a loaded value, write-behind) never raise
    into callers: they are counted and reported to the loop's exception
    handler, as is a failed load or refresh that no caller was waiting for.

    **Ownership**: a tier is used from one event loop (its loads and
    write-behind are tasks of that loop), and it owns its levels: ``async
    with`` enters those that are async context managers (a DiskCache opens
    its directory then), and :meth:`aclose` (or leaving ``async with``)
    cancels loads and refreshes in flight (their callers get
    :class:`~asyncperf.CacheClosed`), flushes write-behind, then closes every
    level. An aiocache cache passed as a level is wrapped in an
    :class:`AiocacheLevel` and closed with the tier.

    Args:
        *levels: the levels, top (fastest) first: :class:`~asyncperf.cache.CacheLevel`
            objects or aiocache caches.
        default_ttl: seconds an entry lives when no ``ttl`` is given (None: no expiry).
        jitter: in [0, 1): the fraction of a TTL that may be cut at random.
        write: ``"through"`` or ``"behind"``.
        write_behind_delay: seconds a write-behind batch waits for more writes.
        write_behind_batch: write-behind flushes when this many writes are pending.
        stale_while_revalidate: seconds past expiry a value is served while it refreshes.
        stale_if_error: seconds past expiry a value is served when its load fails.
        negative_ttl: seconds a failed load is remembered (None: failures are not cached).
        prewarm_concurrency: loads :meth:`prewarm` runs at once by default.
        clock: the source of time for write-behind, stale and negative windows.

    Raises:
        ValueError: no level, the same level twice, or an argument out of range
            (the message names it).
        TypeError: an argument has the wrong type (the message names it).
    """

    def __init__(
        self,
        *levels: CacheLevel | BaseCache,
        default_ttl: float | None = None,
        jitter: float = 0.0,
        write: WriteMode = "through",
        write_behind_delay: float = 0.05,
        write_behind_batch: int = 256,
        stale_while_revalidate: float = 0.0,
        stale_if_error: float = 0.0,
        negative_ttl: float | None = None,
        prewarm_concurrency: int = 16,
        clock: Clock | None = None,
    ) -> None:
        # Set first: __del__ reads them even when this constructor raises.
        self._closed = False
        self._pending: dict[Hashable, tuple[Any, float | None, float]] = {}
        self._levels = _check_levels(levels)
        self._default_ttl = None if default_ttl is None else _check_ttl("default_ttl", default_ttl)
        self._jitter = check_number("jitter", jitter, minimum=0.0, strict=False)
        if self._jitter >= 1.0:
            raise ValueError(f"jitter must be < 1, not {jitter!r}")
        if write not in ("through", "behind"):
            raise ValueError(f"write must be 'through' or 'behind', not {write!r}")
        self._write: WriteMode = write
        self._wb_delay = check_number(
            "write_behind_delay", write_behind_delay, minimum=0.0, strict=False
        )
        self._wb_batch = check_int("write_behind_batch", write_behind_batch, minimum=1)
        self._swr = check_number(
            "stale_while_revalidate", stale_while_revalidate, minimum=0.0, strict=False
        )
        self._sie = check_number("stale_if_error", stale_if_error, minimum=0.0, strict=False)
        self._grace = max(self._swr, self._sie)
        self._negative_ttl = (
            None if negative_ttl is None else _check_ttl("negative_ttl", negative_ttl)
        )
        self._prewarm_concurrency = check_int("prewarm_concurrency", prewarm_concurrency, minimum=1)
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be a Clock, not {type(clock).__name__}")
        self._clock: Clock = clock if clock is not None else SystemClock()

        top = self._levels[0]
        self._top_get_entry = top.get_entry
        # With no stale window every entry found is fresh, so a MemoryCache on top
        # can answer with its plain get (no CacheEntry built) on the hit path.
        self._top_get = top.get if isinstance(top, MemoryCache) and not self._grace else None
        self._has_below = len(self._levels) > 1
        # Loads that have stored their value: a lookup that overlapped one may have
        # read before the store and must look again before starting another load.
        self._stored = 0
        self._flights: dict[Hashable, _Flight] = {}
        # Every flight until it ends, including detached ones (gone from _flights).
        self._running: set[_Flight] = set()
        # Lookups below the top level in progress, by key (see _Read).
        self._reads: dict[Hashable, list[_Read]] = {}
        # Set once aclose() has closed every level; later aclose() calls wait for it.
        self._close_done: asyncio.Event | None = None
        # key -> (exception, its traceback, remembered until); in expiry order,
        # since every entry lives negative_ttl.
        self._negative: dict[Hashable, tuple[BaseException, TracebackType | None, float]] = {}
        # Write-behind: _pending is (value, stored ttl, time queued) by key, the
        # latest write of each key; _writing the batch being written now. Both are
        # read by lookups. The batcher carries keys only: a batch takes the latest
        # entries of its keys from _pending when it starts (see _write_batch).
        self._writing: dict[Hashable, tuple[Any, float | None, float]] = {}
        self._wb_batcher: Batcher[Hashable, bool] | None = None
        if write == "behind" and self._has_below:
            self._wb_batcher = Batcher(
                self._write_batch,
                max_size=self._wb_batch,
                max_delay=self._wb_delay,
                # Sent batches queue on _wb_lock: they are written one at a time, in the
                # order they were sent, and hold their keys in _pending until then.
                max_concurrency=_PENDING_BATCHES,
                clock=self._clock,
                name="TieredCache write-behind",
            )
        self._wb_lock = asyncio.Lock()
        # Set by each batch as it ends, for delete and clear waiting on _writing.
        self._wb_batch_ended = asyncio.Event()
        # Submits of new keys waiting for room in the batcher (backpressure), each in
        # a task of its own so a cancelled writer does not strand its key in _pending.
        self._wb_waiters: set[asyncio.Task[bool]] = set()
        # Entries of batches cancelled mid-write (an interrupted aclose).
        self._wb_unwritten = 0

        self._hits = 0
        self._misses = 0
        self._loads = 0
        self._load_errors = 0
        self._coalesced = 0
        self._stale_served = 0
        self._refreshes = 0
        self._refresh_errors = 0
        self._negative_hits = 0
        self._promotions = 0
        self._write_errors = 0
        self._wb_written = 0
        self._wb_errors = 0
        self._wb_batches = 0

    # -- reading ------------------------------------------------------------------

    async def get(self, key: Hashable, default: Any = MISS) -> Any:
        """The fresh value of ``key`` from the first level holding it, or ``default``.

        A hit below the top level is copied to the levels above. A stale entry
        (past its TTL, inside a stale window) is a miss here.

        Raises:
            CacheClosed: the tier is closed.
        """
        if self._closed:
            raise CacheClosed(_CLOSED)
        top_get = self._top_get
        if top_get is not None:
            value = await top_get(key, MISS)
            if value is not MISS:
                self._hits += 1
                return value
            entry = None
        else:
            entry = await self._top_get_entry(key)
        if entry is None and (self._has_below or self._pending or self._writing):
            entry = await self._lookup_below(key)
        if entry is not None:
            remaining = entry[1]
            if remaining is None or remaining > self._grace:
                self._hits += 1
                return entry[0]
        self._misses += 1
        return default

    async def get_or_load(
        self, key: Hashable, loader: Callable[[], Awaitable[V]], ttl: float | None = None
    ) -> V:
        """The value of ``key``; on a miss, ``await loader()`` once for all callers, and store it.

        The load runs in a task of the tier: cancelling this call does not
        cancel it for other callers, and it completes (and fills the cache)
        even when every caller has gone.

        Args:
            key: the key.
            loader: a no-argument callable returning an awaitable of the value.
            ttl: seconds the loaded value lives (None: ``default_ttl``).

        Raises:
            Exception: whatever ``loader`` raised (the same object, to every
                caller waiting), or raised within ``negative_ttl`` before.
            CacheClosed: the tier is closed, or closed while the load ran.
            ValueError, TypeError: ``ttl`` is not a positive finite number.
        """
        if ttl is not None and (ttl.__class__ is not float or not 0.0 < ttl < _INF):
            ttl = _check_ttl("ttl", ttl)
        if self._closed:
            raise CacheClosed(_CLOSED)
        stored = self._stored
        top_get = self._top_get
        if top_get is not None:
            found = await top_get(key, MISS)
            if found is not MISS:
                self._hits += 1
                value: V = found
                return value
            entry = None
        else:
            entry = await self._top_get_entry(key)
        if entry is None and (self._has_below or self._pending or self._writing):
            entry = await self._lookup_below(key)
        if entry is None and self._stored != stored and key not in self._flights:
            # A load ended while this lookup was under way: it may have read a
            # level before that load stored there. One more look, not a second load.
            entry = await self._lookup(key)
        if entry is not None:
            remaining = entry[1]
            if remaining is None or remaining > self._grace:
                self._hits += 1
                loaded: V = entry[0]
                return loaded
            return await self._stale(key, entry, loader, ttl)
        self._misses += 1
        return await self._load(key, loader, ttl, None)

    async def _lookup(self, key: Hashable) -> CacheEntry | None:
        """The entry of ``key`` from the first level (or pending write) holding it."""
        entry = await self._top_get_entry(key)
        if entry is None and (self._has_below or self._pending or self._writing):
            entry = await self._lookup_below(key)
        return entry

    async def _lookup_below(self, key: Hashable) -> CacheEntry | None:
        """After a miss at the top: pending writes, then the lower levels; promotes a hit."""
        queued = self._pending.get(key)
        if queued is None:
            queued = self._writing.get(key)
        if queued is not None:
            value, ttl, since = queued
            if ttl is not None:
                ttl -= self._clock.now() - since
                if ttl <= 0.0:
                    return None
            entry = CacheEntry(value, ttl)
            await self._promote(key, entry, 1)
            return entry
        levels = self._levels
        read = _Read()
        reads = self._reads.setdefault(key, [])
        reads.append(read)
        try:
            for index in range(1, len(levels)):
                entry_below = await levels[index].get_entry(key)
                if entry_below is not None:
                    await self._promote(key, entry_below, index, read)
                    return entry_below
            return None
        finally:
            reads.remove(read)
            if not reads and self._reads.get(key) is reads:
                del self._reads[key]

    async def _promote(
        self, key: Hashable, entry: CacheEntry, index: int, read: _Read | None = None
    ) -> None:
        """Copy ``entry`` found at ``levels[index]`` to the levels above, with its remaining TTL."""
        ttl = entry.ttl
        if ttl is not None and ttl <= 0.0:
            return
        for level in self._levels[:index]:
            if read is not None and read.superseded:
                return  # a newer value (or none) is on its way to the upper levels
            try:
                if await level.set(key, entry.value, ttl):
                    self._promotions += 1
            except Exception as exc:
                self._write_errors += 1
                self._report(f"promotion to level {level.name!r} failed", exc)

    # -- loading ------------------------------------------------------------------

    async def _stale(
        self,
        key: Hashable,
        entry: CacheEntry,
        loader: Callable[[], Awaitable[V]],
        ttl: float | None,
    ) -> V:
        """A stale entry: serve it and refresh, or load with it as the fallback."""
        remaining = entry.ttl
        assert remaining is not None  # an entry with no expiry is never stale
        expired_for = self._grace - remaining  # seconds since the value's own TTL ran out
        value: V = entry.value
        if self._swr and expired_for <= self._swr:
            self._stale_served += 1
            self._refresh(key, loader, ttl)
            return value
        self._misses += 1
        if self._sie and expired_for <= self._sie:
            usable_until = self._clock.now() + self._sie - expired_for
            return await self._load(key, loader, ttl, (value, usable_until))
        return await self._load(key, loader, ttl, None)

    async def _load(
        self,
        key: Hashable,
        loader: Callable[[], Awaitable[V]],
        ttl: float | None,
        fallback: tuple[V, float] | None,
    ) -> V:
        """Join the load of ``key`` in flight or start one; the stale ``fallback`` on failure."""
        if not callable(loader):
            raise TypeError(f"loader must be callable, not {type(loader).__name__}")
        if self._negative:
            remembered = self._negative.get(key)
            if remembered is not None:
                if remembered[2] > self._clock.now():
                    self._negative_hits += 1
                    if fallback is not None and self._clock.now() <= fallback[1]:
                        self._stale_served += 1
                        return fallback[0]
                    # Restore the original traceback, or each raise would extend it.
                    raise remembered[0].with_traceback(remembered[1])
                del self._negative[key]
        flight = self._flights.get(key)
        if flight is None:
            flight = self._start_flight(key, loader, ttl, refresh=False)
        else:
            self._coalesced += 1
        try:
            value: V = await self._wait(flight)
        except CacheClosed:
            raise
        except Exception:
            if fallback is not None and self._clock.now() <= fallback[1]:
                self._stale_served += 1
                return fallback[0]
            raise
        return value

    async def _wait(self, flight: _Flight) -> Any:
        flight.waiters += 1
        try:
            # The shield keeps this caller's cancellation from reaching the load.
            return await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            # The load was cancelled by aclose(), not this caller: say why it ends.
            task = asyncio.current_task()
            if flight.task.cancelled() and self._closed and task and not task.cancelling():
                raise CacheClosed(_CLOSED) from None
            raise
        finally:
            flight.waiters -= 1

    def _refresh(
        self, key: Hashable, loader: Callable[[], Awaitable[Any]], ttl: float | None
    ) -> None:
        """Start a background refresh of ``key`` unless a load of it is in flight."""
        if key in self._flights or self._closed:
            return
        remembered = self._negative.get(key) if self._negative else None
        if remembered is not None and remembered[2] > self._clock.now():
            # The last load failed moments ago: serve stale rather than call again.
            return
        self._start_flight(key, loader, ttl, refresh=True)

    def _start_flight(
        self, key: Hashable, loader: Callable[[], Awaitable[Any]], ttl: float | None, refresh: bool
    ) -> _Flight:
        if self._closed:
            raise CacheClosed(_CLOSED)
        flight = _Flight(refresh)
        if refresh:
            self._refreshes += 1
        else:
            self._loads += 1
        # In the map before the task exists: an eager task factory may run it at once.
        self._flights[key] = flight
        self._running.add(flight)
        flight.task = asyncio.get_running_loop().create_task(
            self._run_flight(key, loader, ttl, flight), name="asyncperf.TieredCache load"
        )
        flight.task.add_done_callback(partial(self._flight_done, key, flight))
        return flight

    async def _run_flight(
        self,
        key: Hashable,
        loader: Callable[[], Awaitable[Any]],
        ttl: float | None,
        flight: _Flight,
    ) -> Any:
        try:
            value = await loader()
        except Exception as exc:
            if flight.refresh:
                self._refresh_errors += 1
            else:
                self._load_errors += 1
            if self._negative_ttl is not None and not flight.detached:
                self._remember_failure(key, exc)
            raise
        if not flight.detached:
            if self._negative:
                self._negative.pop(key, None)
            self._supersede_reads(key)
            await self._store(key, value, self._stored_ttl(ttl), flight)
            self._stored += 1
        return value

    def _flight_done(self, key: Hashable, flight: _Flight, task: asyncio.Task[Any]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        self._running.discard(flight)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here, so a load nobody awaited is not "never retrieved"
        if exc is not None and not flight.waiters:
            kind = "refresh" if flight.refresh else "load"
            self._report(f"a {kind} failed and no caller was waiting for it", exc)

    def _remember_failure(self, key: Hashable, exc: BaseException) -> None:
        assert self._negative_ttl is not None  # only called when negative caching is on
        negative = self._negative
        now = self._clock.now()
        # Entries are in expiry order: drop the expired ones from the front.
        while negative:
            oldest = next(iter(negative))
            if negative[oldest][2] > now and len(negative) < _NEGATIVE_MAX:
                break
            del negative[oldest]
        negative.pop(key, None)
        negative[key] = (exc, exc.__traceback__, now + self._negative_ttl)

    async def prewarm(
        self,
        keys: Iterable[K],
        loader: Callable[[K], Awaitable[Any]],
        ttl: float | None = None,
        concurrency: int | None = None,
    ) -> int:
        """Load the keys that are not fresh in the cache, ``concurrency`` at a time.

        Each load is single-flight with every other load of its key. A failure
        does not stop the other keys; the failures are raised together at the end.

        Args:
            keys: the keys (any iterable; taken one at a time, so it may be long).
            loader: ``await loader(key)`` gives the value of ``key``.
            ttl: seconds the loaded values live (None: ``default_ttl``).
            concurrency: loads at once at most (None: ``prewarm_concurrency``).

        Returns:
            The number of keys loaded (keys already fresh are skipped and not counted).

        Raises:
            ExceptionGroup: the loads of some keys failed (one exception per key).
            CacheClosed: the tier is closed.
            ValueError, TypeError: ``ttl`` or ``concurrency`` is out of range.
        """
        if ttl is not None:
            ttl = _check_ttl("ttl", ttl)
        if not callable(loader):
            raise TypeError(f"loader must be callable, not {type(loader).__name__}")
        limit = (
            self._prewarm_concurrency
            if concurrency is None
            else check_int("concurrency", concurrency, minimum=1)
        )
        if self._closed:
            raise CacheClosed(_CLOSED)
        remaining = iter(keys)
        loaded = 0
        errors: list[Exception] = []
        closed: CacheClosed | None = None

        async def warm() -> None:
            nonlocal loaded, closed
            # Workers share one iterator: each takes the next key when it is free.
            for key in remaining:
                try:
                    if await self._prewarm_one(key, loader, ttl):
                        loaded += 1
                except CacheClosed as exc:
                    closed = exc  # the tier closed: no key left is worth loading
                    return
                except Exception as exc:
                    errors.append(exc)

        async with asyncio.TaskGroup() as group:
            for _ in range(limit):
                group.create_task(warm())
        if closed is not None:
            raise closed
        if errors:
            raise ExceptionGroup(f"prewarm: {len(errors)} key(s) failed to load", errors)
        return loaded

    async def _prewarm_one(
        self, key: K, loader: Callable[[K], Awaitable[Any]], ttl: float | None
    ) -> bool:
        stored = self._stored
        entry = await self._lookup(key)
        if entry is None and self._stored != stored and key not in self._flights:
            entry = await self._lookup(key)  # as in get_or_load
        if entry is not None and (entry.ttl is None or entry.ttl > self._grace):
            return False
        await self._load(key, partial(loader, key), ttl, None)
        return True

    # -- writing ------------------------------------------------------------------

    def _stored_ttl(self, ttl: float | None) -> float | None:
        """The TTL to give the levels: ``ttl`` (or the default), jittered, plus the stale grace."""
        if ttl is None:
            ttl = self._default_ttl
            if ttl is None:
                return None
        if self._jitter:
            ttl *= 1.0 - self._jitter * random.random()
        return ttl + self._grace

    async def set(self, key: Hashable, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` under ``key`` (write-through: at every level; write-behind: queued).

        A load of ``key`` in flight no longer stores its value, and a
        remembered failure of ``key`` is forgotten.

        Returns:
            False when no level took the value (every level refused it, e.g. too
            large); True otherwise (write-behind: stored at the top or queued).

        Raises:
            CacheClosed: the tier is closed.
            ValueError, TypeError: ``ttl`` is not a positive finite number.
            Exception: what a level raised (write-through writes stop there).
        """
        if ttl is not None:
            ttl = _check_ttl("ttl", ttl)
        if self._closed:
            raise CacheClosed(_CLOSED)
        self._forget(key)
        return await self._store(key, value, self._stored_ttl(ttl), None)

    async def _store(
        self, key: Hashable, value: Any, ttl: float | None, flight: _Flight | None
    ) -> bool:
        """Write to the levels per the write mode; level errors raise unless ``flight`` is given."""
        levels = self._levels
        if self._write == "behind" and len(levels) > 1:
            stored = await self._write_level(levels[0], key, value, ttl, flight)
            if flight is not None and flight.detached:
                return stored
            await self._enqueue(key, value, ttl)
            return True
        stored = False
        for level in levels:
            if flight is not None and flight.detached:
                # A set/delete/clear came while this load stored: the rest is theirs.
                break
            if await self._write_level(level, key, value, ttl, flight):
                stored = True
        return stored

    async def _write_level(
        self,
        level: CacheLevel,
        key: Hashable,
        value: Any,
        ttl: float | None,
        flight: _Flight | None,
    ) -> bool:
        if flight is None:
            return await level.set(key, value, ttl)
        try:
            return await level.set(key, value, ttl)
        except Exception as exc:
            self._write_errors += 1
            self._report(f"storing a loaded value at level {level.name!r} failed", exc)
            return False

    async def delete(self, key: Hashable) -> bool:
        """Remove ``key`` from every level (and from pending write-behind writes).

        Returns:
            Whether some level (or a pending write) held it.

        Raises:
            CacheClosed: the tier is closed.
            Exception: what a level raised.
        """
        if self._closed:
            raise CacheClosed(_CLOSED)
        self._forget(key)
        found = self._pending.pop(key, None) is not None
        # A batch being written could land after this delete and bring the key back.
        while key in self._writing:
            await self._wb_batch_ended.wait()
        for level in self._levels:
            if await level.delete(key):
                found = True
        return found

    async def clear(self) -> None:
        """Remove every entry from every level, pending writes and remembered failures.

        Raises:
            CacheClosed: the tier is closed.
            Exception: what a level raised.
        """
        if self._closed:
            raise CacheClosed(_CLOSED)
        for flight in self._flights.values():
            flight.detached = True
        self._flights.clear()
        for reads in self._reads.values():
            for read in reads:
                read.superseded = True
        self._negative.clear()
        self._pending.clear()
        while self._writing:
            await self._wb_batch_ended.wait()
        for level in self._levels:
            await level.clear()

    def _forget(self, key: Hashable) -> None:
        """A new value or none for ``key``: detach its load in flight, forget its failure."""
        flight = self._flights.pop(key, None)
        if flight is not None:
            flight.detached = True
        if self._negative:
            self._negative.pop(key, None)
        self._supersede_reads(key)

    def _supersede_reads(self, key: Hashable) -> None:
        """Keep lookups of ``key`` under way from promoting the (older) value they find."""
        if self._reads:
            for read in self._reads.get(key, ()):
                read.superseded = True

    # -- write-behind -------------------------------------------------------------

    async def _enqueue(self, key: Hashable, value: Any, ttl: float | None) -> None:
        if self._closed:
            # The tier closed while this write was at the top level: its batcher no
            # longer takes writes, so the lower levels would never get it. Say so, and count it.
            self._wb_errors += 1
            raise CacheClosed(_CLOSED)
        batcher = self._wb_batcher
        assert batcher is not None  # made in __init__ for write-behind over several levels
        pending = self._pending
        queued = len(pending)
        pending[key] = (value, ttl, self._clock.now())
        if len(pending) == queued:
            # Already pending: the batch that takes it will write this latest value.
            return
        try:
            # Not awaited: the write goes on without this caller. Cancelling the future
            # drops its result only (the key stays in its batch), and it can never hold
            # an exception that nobody retrieves.
            batcher.submit_nowait(key).cancel()
        except QueueFull:
            await self._wait_for_room(batcher, key)

    async def _wait_for_room(self, batcher: Batcher[Hashable, bool], key: Hashable) -> None:
        """Backpressure: four batches are sent (one being written) and the next one is full.

        The key waits in the batcher's line, in a task of its own (so a cancelled
        writer does not strand it in _pending with no batch to write it), while the
        writer waits until those batches have been written. Not for the key's own
        batch: a writer that waited for that would hold it open for ``max_delay``.
        """
        waiter = asyncio.get_running_loop().create_task(
            batcher.submit(key), name="asyncperf.TieredCache write-behind wait"
        )
        self._wb_waiters.add(waiter)
        waiter.add_done_callback(self._wb_waiter_done)
        await batcher.flush()

    def _wb_waiter_done(self, waiter: asyncio.Task[bool]) -> None:
        self._wb_waiters.discard(waiter)
        if not waiter.cancelled():
            waiter.exception()  # retrieved: accounted for by aclose, as for the others

    async def _write_batch(self, keys: list[Hashable]) -> list[bool]:
        """The batcher's ``process_batch``: write the latest entries of ``keys`` below the top.

        Batches are written one at a time, in the order they were sent (the lock is
        first come, first served); a batch takes its keys' entries from _pending only
        when its turn comes, so until then a new write of one of them just replaces
        the entry it will write.

        Returns, per key, whether it had a write to make (a key deleted, cleared or
        written by an earlier batch since it was submitted has none). Level errors
        are counted and reported here, never raised: the batcher has no caller to
        give them to.
        """
        async with self._wb_lock:
            pending = self._pending
            batch: dict[Hashable, tuple[Any, float | None, float]] = {}
            had_write: list[bool] = []
            for key in keys:
                entry = pending.pop(key, None)
                if entry is not None:
                    batch[key] = entry
                had_write.append(entry is not None)
            if batch:
                self._writing = batch
                self._wb_batches += 1
                try:
                    await self._write_below(list(batch.items()))
                except asyncio.CancelledError:
                    # Only an interrupted aclose cancels a batch: it counts these as lost.
                    self._wb_unwritten += len(batch)
                    raise
                finally:
                    self._writing = {}
                    ended, self._wb_batch_ended = self._wb_batch_ended, asyncio.Event()
                    ended.set()
            return had_write

    async def _write_below(
        self, queued: list[tuple[Hashable, tuple[Any, float | None, float]]]
    ) -> None:
        """One ``set_many`` per lower level; a level's error is counted and reported."""
        for level in self._levels[1:]:
            # The TTLs left now, not when the batch started: writing the levels before
            # this one took time, which must not extend a lifetime.
            now = self._clock.now()
            entries: list[tuple[Hashable, Any, float | None]] = []
            for key, (value, ttl, since) in queued:
                if ttl is not None:
                    ttl -= now - since
                    if ttl <= 0.0:
                        continue  # expired while it waited: nothing left to write
                entries.append((key, value, ttl))
            if not entries:
                continue
            try:
                self._wb_written += await level.set_many(entries)
            except Exception as exc:
                self._wb_errors += len(entries)
                self._report(
                    f"write-behind of {len(entries)} entries to level {level.name!r} failed",
                    exc,
                )

    async def _close_write_behind(self, batcher: Batcher[Hashable, bool]) -> None:
        """Write what is pending and close the batcher; count and report what it could not write.

        If this is cancelled, the batcher's own aclose cancels the batch being written
        and fails the rest: those writes are lost, counted in ``write_behind_errors``.
        """
        try:
            await batcher.aclose()
            if self._pending:
                # Writes of sets that were still waiting for room when the batcher
                # closed (it refuses those): written here, last.
                await self._write_batch(list(self._pending))
        finally:
            if self._wb_waiters:
                # Every one has its answer by now (written, refused or failed).
                await asyncio.wait(list(self._wb_waiters))
            # Non-zero only when this was cancelled before the batches were written.
            lost = self._wb_unwritten + len(self._pending)
            self._wb_unwritten = 0
            self._pending.clear()
            if lost:
                self._wb_errors += lost
                self._report(
                    f"{lost} write-behind writes were not written: aclose was interrupted",
                    CacheClosed(_CLOSED),
                )

    async def flush(self) -> None:
        """Write the pending write-behind writes to the lower levels now; wait until written.

        Writes made while this waits go to a later batch. A no-op with
        write-through. Failed writes are counted and reported, not raised.
        """
        batcher = self._wb_batcher
        if batcher is None:
            return
        waiting = list(self._wb_waiters)
        await batcher.flush()
        # Writes still waiting for room were made before this call too, but the batcher
        # does not wait for what it has not accepted: send them as they get in.
        while waiting := [waiter for waiter in waiting if not waiter.done()]:
            if batcher.pending or batcher.in_flight:
                await batcher.flush()
            else:
                # Nothing left to send or to wait for: their writes have all ended,
                # and only their tasks' last step is left.
                await asyncio.wait(waiting)

    # -- capacity, statistics, lifecycle -----------------------------------------------

    @property
    def levels(self) -> tuple[CacheLevel, ...]:
        """The levels, top first (aiocache caches appear wrapped in an AiocacheLevel)."""
        return self._levels

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    def set_capacity(
        self,
        level: int | str,
        *,
        max_entries: int | EllipsisType | None = ...,
        max_bytes: int | EllipsisType | None = ...,
    ) -> None:
        """Change the bounds of one level, by index or name (only the bounds given are passed).

        Args:
            level: the level's index (0 is the top) or its name.
            max_entries: the new bound on entries; left out: not passed.
            max_bytes: the new bound on bytes; left out: not passed. What None
                means is the level's (MemoryCache: no bound; DiskCache: unchanged).

        Raises:
            ValueError: no level has that name (or several do), or neither bound is given.
            IndexError: no level has that index.
            TypeError: ``level`` is not an int or a str, or the level has no ``set_capacity``.
            Exception: what the level's ``set_capacity`` raised (e.g. a bound below 1).
        """
        target = self._level(level)
        bounds: dict[str, int | None] = {}
        if not isinstance(max_entries, EllipsisType):
            bounds["max_entries"] = max_entries
        if not isinstance(max_bytes, EllipsisType):
            bounds["max_bytes"] = max_bytes
        if not bounds:
            raise ValueError("set_capacity needs max_entries or max_bytes")
        setter = getattr(target, "set_capacity", None)
        if setter is None:
            raise TypeError(f"level {target.name!r} ({type(target).__name__}) has no set_capacity")
        setter(**bounds)

    def _level(self, level: int | str) -> CacheLevel:
        if isinstance(level, str):
            found = [each for each in self._levels if each.name == level]
            if not found:
                names = ", ".join(repr(each.name) for each in self._levels)
                raise ValueError(f"level {level!r} is not a level name (the levels: {names})")
            if len(found) > 1:
                raise ValueError(f"level {level!r} names {len(found)} levels: use an index")
            return found[0]
        index = check_int("level", level)
        if not -len(self._levels) <= index < len(self._levels):
            raise IndexError(f"level {index} is out of range ({len(self._levels)} levels)")
        return self._levels[index]

    def statistics(self) -> TieredStatistics:
        """The levels' statistics and the tier's own counters."""
        return TieredStatistics(
            levels=tuple(level.statistics() for level in self._levels),
            hits=self._hits,
            misses=self._misses,
            loads=self._loads,
            load_errors=self._load_errors,
            coalesced=self._coalesced,
            stale_served=self._stale_served,
            refreshes=self._refreshes,
            refresh_errors=self._refresh_errors,
            negative_hits=self._negative_hits,
            promotions=self._promotions,
            write_errors=self._write_errors,
            write_behind_pending=len(self._pending) + len(self._writing),
            write_behind_written=self._wb_written,
            write_behind_errors=self._wb_errors,
            write_behind_batches=self._wb_batches,
            in_flight=len(self._running),
        )

    def _report(self, message: str, exc: BaseException) -> None:
        """Hand an error no caller can receive to the loop's exception handler."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - the tier's work always runs on a loop
            return
        loop.call_exception_handler(
            {"message": f"{self!r}: {message}", "exception": exc, "cache": self}
        )

    async def aclose(self) -> None:
        """Cancel loads in flight, flush write-behind, and close every level. Idempotent.

        Callers waiting for a cancelled load get :class:`~asyncperf.CacheClosed`.
        Every level is closed even if one raises; the first error is then raised.
        A call made while another is closing the tier returns once that one is done.
        """
        if self._closed:
            if self._close_done is not None:
                # Closing elsewhere: return once the levels are closed, as that call will.
                await self._close_done.wait()
            return
        self._closed = True
        done = self._close_done = asyncio.Event()
        errors: list[BaseException] = []
        try:
            flights = [flight.task for flight in self._running]
            for task in flights:
                task.cancel(msg="TieredCache closed")
            if self._wb_batcher is not None:
                # Before the loads end, not after: no write can join the batcher
                # once the tier is closed (_enqueue refuses it), and the batcher is
                # then closed by its own aclose, which handles being interrupted.
                await self._close_write_behind(self._wb_batcher)
            if flights:
                await asyncio.wait(flights)
        finally:
            self._negative.clear()
            try:
                for level in self._levels:
                    try:
                        await level.aclose()
                    except Exception as exc:
                        errors.append(exc)
            finally:
                done.set()
        if errors:
            raise errors[0]

    async def __aenter__(self) -> TieredCache:
        """Enter the levels that are async context managers (a DiskCache opens its directory).

        Raises:
            CacheClosed: the tier is closed.
            Exception: what a level raised on entering (e.g. CacheError); the tier
                is then closed, with every level.
        """
        if self._closed:
            raise CacheClosed(_CLOSED)
        try:
            for level in self._levels:
                enter = getattr(level, "__aenter__", None)
                if enter is not None:
                    await enter()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if not self._closed and self._pending:
            warnings.warn(
                f"TieredCache dropped with {len(self._pending)} write-behind writes "
                "not flushed: call aclose() or use `async with`",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )

    def __repr__(self) -> str:
        chain = " > ".join(level.name for level in getattr(self, "_levels", ()))
        state = "closed" if self._closed else f"{len(self._running)} loads in flight"
        return f"<TieredCache {chain}, write-{self._write}, {state}>"


def _aiocache_base() -> type[Any] | None:
    """aiocache's BaseCache if aiocache has been imported, else None.

    aiocache (and the redis client it imports when installed) costs tens of
    milliseconds to import: it is not imported for users who never pass one of
    its caches, and an object cannot be an aiocache cache unless it has been.
    """
    module = sys.modules.get("aiocache.base")
    base: type[Any] | None = getattr(module, "BaseCache", None)
    return base


def _check_levels(levels: tuple[object, ...]) -> tuple[CacheLevel, ...]:
    if not levels:
        raise ValueError("levels must not be empty: pass at least one cache level")
    checked: list[CacheLevel] = []
    base_cache = _aiocache_base()
    for index, level in enumerate(levels):
        if base_cache is not None and isinstance(level, base_cache):
            checked.append(AiocacheLevel(level))
        elif isinstance(level, CacheLevel):
            checked.append(level)
        else:
            raise TypeError(
                f"levels[{index}] must be a CacheLevel or an aiocache cache, "
                f"not {type(level).__name__}"
            )
    seen: set[int] = set()
    for index, level in enumerate(levels):
        if id(level) in seen:
            raise ValueError(f"levels[{index}] is given twice: each level must be its own store")
        seen.add(id(level))
    return tuple(checked)


# -- aiocache backends as a level ---------------------------------------------------

#: The first item of what an AiocacheLevel stores: ``(_TAG, expires_at, value)``.
_TAG: Final = "asyncperf.v1"


class _WallClock:
    """Seconds since the epoch: the deadlines a shared store holds for many processes."""

    __slots__ = ()

    now = staticmethod(time.time)

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - never slept on
        await asyncio.sleep(seconds)

    def call_later(  # pragma: no cover - never timed on
        self, delay: float, callback: Callable[..., Any], *args: Any
    ) -> Cancellable:
        return asyncio.get_running_loop().call_later(delay, callback, *args)


class AiocacheLevel:
    """Any aiocache backend as a cache level (so Redis or Memcached can be a tier today).

    aiocache reads give no remaining TTL on every backend, and read a stored
    ``None`` as a miss, so each value is stored in an envelope
    ``("asyncperf.v1", expires_at, value)``: the level reports the exact
    seconds left (``expires_at`` on ``clock``, by default the wall clock, so
    processes sharing a Redis agree) and ``None`` is a value like any other.
    The backend expires entries itself too (its TTL rounded up to whole
    seconds, which Memcached needs); a value found past ``expires_at`` is a
    miss. Values not written through this class read as values with no expiry.

    The backend's serializer must keep a tuple's structure: pickle, JSON or
    msgpack (values must then be JSON or msgpack data), or the memory
    backend's null serializer. Keys go to the backend as they are (through
    its ``namespace`` and ``key_builder``): Redis and Memcached want str keys.
    ``clear`` clears the cache's namespace, the whole database when it has none.

    Statistics count hits, misses, sets and deletes made through this level
    (``entries`` and ``bytes`` are 0: aiocache cannot tell them); hit latency is
    measured on every hit.

    Raises:
        TypeError: ``cache`` is not an aiocache cache, or ``name`` is not a str.
        ValueError: the cache's serializer turns values into str.
    """

    __slots__ = (
        "_cache",
        "_clock",
        "_closed",
        "_deletes",
        "_expired",
        "_hits",
        "_latency",
        "_misses",
        "_name",
        "_sets",
    )

    def __init__(
        self, cache: BaseCache, name: str | None = None, *, clock: Clock | None = None
    ) -> None:
        base_cache = _aiocache_base()
        if base_cache is None or not isinstance(cache, base_cache):
            raise TypeError(f"cache must be an aiocache cache, not {type(cache).__name__}")
        from aiocache.serializers import StringSerializer  # imported: cache is aiocache's

        if type(cache.serializer) is StringSerializer:
            raise ValueError(
                "cache must have a serializer that keeps structure (pickle, JSON, msgpack): "
                "StringSerializer turns values into str"
            )
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be a Clock, not {type(clock).__name__}")
        self._cache = cache
        self._name = name if name is not None else f"aiocache.{getattr(cache, 'NAME', 'cache')}"
        self._clock: Clock = clock if clock is not None else _WallClock()
        self._closed = False
        self._hits = 0
        self._misses = 0
        self._sets = 0
        self._deletes = 0
        self._expired = 0
        self._latency = LatencySamples()

    @property
    def name(self) -> str:
        """The level's name in statistics."""
        return self._name

    @property
    def cache(self) -> BaseCache:
        """The aiocache cache this level wraps."""
        return self._cache

    def _check_open(self) -> None:
        if self._closed:
            raise CacheClosed("Cannot use a cache that has been closed.")

    def _unwrap(self, stored: Any) -> CacheEntry | None:
        if stored is None:
            return None
        if (
            isinstance(stored, tuple | list)
            and len(stored) == 3
            and isinstance(stored[0], str)
            and stored[0] == _TAG
        ):
            expires_at = stored[1]
            if expires_at is None:
                return CacheEntry(stored[2], None)
            remaining = float(expires_at) - self._clock.now()
            if remaining <= 0.0:
                self._expired += 1
                return None
            return CacheEntry(stored[2], remaining)
        return CacheEntry(stored, None)

    async def get_entry(self, key: Hashable) -> CacheEntry | None:
        """The value of ``key`` with the seconds it has left, or None on a miss.

        Raises:
            CacheClosed: the level is closed.
            Exception: what the backend raised (a connection error, a timeout).
        """
        self._check_open()
        start = time.perf_counter()
        entry = self._unwrap(await self._cache.get(key))
        if entry is None:
            self._misses += 1
        else:
            self._hits += 1
            self._latency.add(time.perf_counter() - start)
        return entry

    async def get_many(self, keys: Iterable[Hashable]) -> dict[Hashable, CacheEntry]:
        """The entries found among ``keys`` (one ``multi_get``); misses left out."""
        self._check_open()
        wanted = list(keys)
        if not wanted:
            return {}
        found: dict[Hashable, CacheEntry] = {}
        for key, stored in zip(wanted, await self._cache.multi_get(wanted), strict=True):
            entry = self._unwrap(stored)
            if entry is None:
                self._misses += 1
            else:
                self._hits += 1
                found[key] = entry
        return found

    def _envelope(self, value: Any, ttl: float | None) -> tuple[tuple[str, Any, Any], Any]:
        """What to store and the backend's own TTL (whole seconds, never shorter)."""
        if ttl is None:
            # The backend's default TTL, if it has one, still applies: say so.
            ttl = self._cache.ttl
        if ttl is None:
            return (_TAG, None, value), None
        return (_TAG, self._clock.now() + ttl, value), math.ceil(ttl)

    async def set(self, key: Hashable, value: Any, ttl: float | None = None) -> bool:
        """Store ``value``; whether the backend took it.

        Raises:
            CacheClosed: the level is closed.
            ValueError, TypeError: ``ttl`` is not a positive finite number.
            Exception: what the backend raised.
        """
        self._check_open()
        if ttl is not None:
            ttl = _check_ttl("ttl", ttl)
        envelope, backend_ttl = self._envelope(value, ttl)
        stored = await self._cache.set(key, envelope, ttl=backend_ttl)
        self._sets += 1
        return bool(stored)

    async def set_many(self, items: Iterable[tuple[Hashable, Any, float | None]]) -> int:
        """Store ``(key, value, ttl)`` items, one ``multi_set`` per backend TTL; how many stored."""
        self._check_open()
        groups: dict[Any, list[tuple[Hashable, Any]]] = {}
        for key, value, ttl in items:
            if ttl is not None:
                ttl = _check_ttl("ttl", ttl)
            envelope, backend_ttl = self._envelope(value, ttl)
            groups.setdefault(backend_ttl, []).append((key, envelope))
        stored = 0
        for backend_ttl, pairs in groups.items():
            await self._cache.multi_set(pairs, ttl=backend_ttl)
            stored += len(pairs)
        self._sets += stored
        return stored

    async def delete(self, key: Hashable) -> bool:
        """Remove ``key``; whether it was present."""
        self._check_open()
        removed = await self._cache.delete(key)
        self._deletes += 1
        return bool(removed)

    async def clear(self) -> None:
        """Remove every entry of the cache's namespace (of the whole store when it has none)."""
        self._check_open()
        await self._cache.clear(namespace=self._cache.namespace)

    def statistics(self) -> CacheStatistics:
        """Counters of the calls made through this level."""
        p50, p99 = self._latency.percentiles()
        evictions = dict.fromkeys((reason.value for reason in EvictionReason), 0)
        evictions[EvictionReason.EXPIRED.value] = self._expired
        return CacheStatistics(
            name=self._name,
            policy=f"aiocache.{getattr(self._cache, 'NAME', 'cache')}",
            entries=0,
            bytes=0,
            max_entries=None,
            max_bytes=None,
            hits=self._hits,
            misses=self._misses,
            sets=self._sets,
            deletes=self._deletes,
            evictions=evictions,
            hit_latency_p50=p50,
            hit_latency_p99=p99,
        )

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    async def aclose(self) -> None:
        """Close the aiocache cache (its connections). Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._cache.close()

    def __repr__(self) -> str:
        return f"<AiocacheLevel {self._name!r} {type(self._cache).__name__}>"
