"""A shared cache tier on Redis, with an optional near cache kept fresh by invalidations.

:class:`RedisCacheLevel` implements :class:`~asyncperf.cache.CacheLevel`, so it
stacks under a ``MemoryCache`` (and a ``DiskCache``) in a
:class:`~asyncperf.cache.TieredCache`. Three parts:

**The level.** Values live under ``asyncperf:{namespace}:v:<key>`` (the key
encoded with its type, as the disk cache does, so ``1`` and ``"1"`` differ),
stored as the serializer's bytes behind the disk cache's one-byte codec header,
signed with HMAC-SHA256 when ``hmac_key`` is given. Reads fetch the values
with ``MGET`` and their ``PTTL`` in one MULTI/EXEC round trip (one snapshot:
never the value of one write with the TTL of another); writes are one pipeline
of ``SET ... PX``.

**Batching.** ``get_entry`` and ``set`` are single-key calls, but what many tasks
ask in the same pass of the event loop travels to Redis together: each goes
through a :class:`~asyncperf.io.Batcher` (one for reads, one for writes;
``max_delay=0``, so a batch is what arrived in one loop pass and no latency is
added; up to 128 keys a batch, up to 4 batches in flight). A read batch is one
MULTI/EXEC of MGET and the keys' PTTLs; concurrent reads of one key in a batch
are sent once, and each caller decodes its own copy of the value. A write batch
is one pipeline of ``SET ... PX`` in arrival order, so the latest value of a key
wins. The counters stay per key (a failed batch of ten reads is ten read errors
and ten misses); ``redis_statistics()`` shows the batches, ``batcher_statistics()``
the batchers. A caller that is cancelled leaves its key in its batch (a write
still lands); ``aclose`` sends what is pending and waits for the batches before
it stops the listener, and if ``aclose`` is itself cancelled, the batches are
cancelled and their callers get :class:`~asyncperf.CacheClosed`, never a hang.

**The near cache** (``near_cache=N``): up to N decoded values in process (LRU),
so a hit costs no round trip. It is kept fresh by Redis client-side caching:
one dedicated RESP2 connection (the *listener*) runs ``CLIENT TRACKING on
REDIRECT <its own id> BCAST PREFIX <value prefix> PREFIX <lock prefix>`` and
``SUBSCRIBE __redis__:invalidate``; Redis then tells it the name of every key
under the namespace that anybody changes, deletes, or lets expire (a None
payload: the database was flushed). BCAST with a prefix, rather than the
default mode that tracks the keys each connection has read, because the data
commands travel over a pool of connections: default-mode tracking would have to
be switched on (and kept on across reconnects) on every pooled connection, and
a read on an untracked one would fill the near cache with a value nobody will
invalidate. BCAST tracks the prefix for the one listener connection, whatever
connection reads or writes. The cost: invalidations for keys this process never
read (a dictionary lookup each), which a namespace per data set keeps small.

Invalidations arrive on another connection than the reads, so a read may be
overtaken by the invalidation of a write made after it: each read in flight
holds a *fill ticket* for its key that an invalidation (or a local write)
voids, and only a read whose ticket is still valid fills the near cache.

While the listener is not connected and subscribed (before it first is, and
after it drops), the near cache is empty and bypassed: every read goes to
Redis. The listener reconnects in the background with exponential backoff, and
the near cache is used again once tracking is back on. A silent connection is
probed with PING every ``health_interval`` seconds and dropped if the PONG does
not come back within as long.

**Cross-process single-flight** (:meth:`RedisCacheLevel.get_or_load`): one Lua
script reads the key and, on a miss, takes a token lock (``SET lock token NX PX
lease``) in the same atomic step. The holder loads, stores, and releases the
lock with a compare-and-delete script (only its own token); while it loads a
background task renews the lease. The others wait for the invalidation of the
value key or of the lock key (the listener tracks both prefixes), with a poll
every ``lock_poll`` seconds as the safety net, then run the script again: they
find the value, or (the holder failed, or died and its lease ran out) take the
lock and load themselves. In process, concurrent calls for one key share one
flight. :meth:`RedisCacheLevel.shared_loader` wraps a loader for
``TieredCache.get_or_load``, so a tier's single-flight extends across processes.

**When Redis is unreachable** (or answers with an error): a read is a miss
(counted in ``read_errors``), ``set``/``set_many`` store nothing and return
False/0 (counted in ``write_errors``); a warning is logged when the level starts
failing, not on every call. ``delete`` and ``clear`` raise
:class:`~asyncperf.BackendUnavailable` / :class:`~asyncperf.BackendError`
instead: False from ``delete`` means "was not there", and a removal that did
not happen must not look as if it did (the shared cache would keep serving the
stale value). ``get_or_load`` loads without the lock (nobody to coordinate with).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Final, Self, TypeVar

import redis.asyncio as redis_asyncio

from asyncperf._errors import BackendError, BatcherClosed, BatchFailed, CacheClosed
from asyncperf._validate import check_int, check_number
from asyncperf.cache._base import MISS, CacheEntry, CacheStatistics, EvictionReason, LatencySamples
from asyncperf.cache._disk import encode_key
from asyncperf.cache._serializers import (
    Codec,
    Compression,
    CorruptValue,
    PickleSerializer,
    Serializer,
    SerializerName,
    make_serializer,
)
from asyncperf.io._batcher import Batcher, BatcherStatistics
from asyncperf.io._compress import MissingDictionary

from ._client import connect, key_join, translate_errors

__all__ = ["RedisCacheLevel", "RedisCacheStatistics"]

V = TypeVar("V")
_Item = TypeVar("_Item")
_Result = TypeVar("_Result")

logger = logging.getLogger("asyncperf.cache")

#: The pub/sub channel Redis publishes client-side-caching invalidations on (RESP2).
INVALIDATE_CHANNEL: Final = b"__redis__:invalidate"
_MAC_SIZE: Final = 32
_CLOSED: Final = "Cannot use a RedisCacheLevel that has been closed."
#: Keys per UNLINK when clearing a namespace.
_CLEAR_BATCH: Final = 500
#: Keys in one batch of single-key reads or writes at most: past ~100 keys a bigger
#: pipeline saves little per key, while it holds the server (MULTI/EXEC) longer.
_BATCH_SIZE: Final = 128
#: Batches of each kind in flight at once: enough to keep a connection or two busy
#: while the next batch fills; past that, callers wait for room (backpressure).
_BATCH_CONCURRENCY: Final = 4

#: What a read batch gives each key: (the stored bytes or None, PTTL), or None when
#: Redis failed (the caller counts its read error and misses).
_Reply = tuple[bytes | None, int] | None
#: One write: (redis key, stored bytes, TTL in milliseconds or None).
_Write = tuple[bytes, bytes, int | None]

# Read the value; on a miss take the lock, atomically. Returns {1, value, pttl} (found),
# {2} (this caller holds the lock now) or {0, lock pttl} (another holder has it).
_READ_OR_LOCK: Final = """
local value = redis.call('GET', KEYS[1])
if value then return {1, value, redis.call('PTTL', KEYS[1])} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {0, redis.call('PTTL', KEYS[2])}
"""
# Delete KEYS[1] only while it still holds ARGV[1]: the lock's own token, or the exact
# damaged bytes a reader found (a newer value written meanwhile is left alone).
_COMPARE_AND_DELETE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Extend the lease only while the lock still holds this holder's token.
_COMPARE_AND_EXTEND: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class RedisCacheStatistics:
    """A snapshot of what is particular to a :class:`RedisCacheLevel` (``redis_statistics()``).

    The shared counters (hits, misses, sets, deletes, hit latency) are in
    ``statistics()``; near-cache hits are hits there too.
    """

    name: str
    #: Hits answered by the near cache, with no round trip to Redis.
    near_hits: int
    near_entries: int
    #: The near cache's bound (None: no near cache).
    near_max_entries: int | None
    #: Whether the near cache is in use now (the listener is subscribed and tracking).
    near_active: bool
    #: Invalidation messages received, keys they named, and flushes (a None payload).
    invalidation_messages: int
    invalidated_keys: int
    flushes: int
    #: Times the listener connected (and subscribed) and times its connection dropped.
    listener_connects: int
    listener_drops: int
    #: Reads that failed (answered as misses) and writes that failed (returned False).
    read_errors: int
    write_errors: int
    #: Stored values that did not verify or decode: read as misses, and removed.
    corrupt: int
    #: Single-flight: loader calls by this level, callers that joined a load in
    #: flight in this process, loads that waited for another holder's lock, waits
    #: that ended with this level taking the lock over (the holder failed or died),
    #: and leases that another holder took before this one finished.
    loads: int
    coalesced: int
    lock_waits: int
    lock_takeovers: int
    leases_lost: int
    #: Round trips that carried ``get_entry`` calls, and the calls they carried
    #: (concurrent calls for one key share a slot in their batch); the same for ``set``.
    #: ``get_many``, ``set_many`` and single-flight are one round trip each, not counted here.
    read_batches: int = 0
    batched_reads: int = 0
    write_batches: int = 0
    batched_writes: int = 0

    @property
    def errors(self) -> int:
        """Failed reads and writes together."""
        return self.read_errors + self.write_errors


class _Fill:
    """A ticket for filling the near cache with one key's value once a read returns.

    Voided by an invalidation of the key (or a local write) that arrives while the
    read is in flight: the value read may be older than the one now in Redis.
    """

    __slots__ = ("epoch", "readers", "valid")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.readers = 0
        self.valid = True


def _same_key(rkey: bytes) -> bytes:
    """Read batches coalesce calls by their redis key."""
    return rkey


def _glob_escape(data: bytes) -> bytes:
    """``data`` as a literal in a Redis glob pattern (SCAN MATCH)."""
    out = bytearray()
    for byte in data:
        if byte in b"*?[]\\":
            out.append(0x5C)  # backslash
        out.append(byte)
    return bytes(out)


class RedisCacheLevel:
    """A cache level on a shared Redis (or Valkey), optionally with a near cache in process.

    See the module documentation for the design. Use it alone, or as a lower
    level of a :class:`~asyncperf.cache.TieredCache`, which then owns it and
    closes it; ``async with level`` waits for the listener (when there is one)
    before the first call.

    Keys are str, bytes, int, float, bool, None and tuples of them (as for the
    disk cache; ``TypeError`` naming ``key`` for the rest). Values go through
    ``serializer``: ``"msgpack"`` (the default), ``"json"``, your own
    :class:`~asyncperf.cache.Serializer`, or ``"pickle"``, which needs
    ``hmac_key``: unpickling runs code, and a shared Redis is writable by every
    client that knows its password. Near-cache hits return the same object each
    time (as ``MemoryCache`` does): do not mutate values you read.

    ``statistics()`` counts this instance's calls; ``entries`` and ``bytes``
    are 0, since the server holds the entries (:meth:`count` asks it).

    Args:
        client: a ``redis.asyncio.Redis`` (see :func:`~asyncperf.backends.redis.connect`;
            the caller keeps ownership), or a URL to connect to (closed with the level).
        namespace: the key space of this cache; ``clear`` removes only its keys.
        serializer: ``"msgpack"``, ``"json"``, ``"pickle"`` (with ``hmac_key``) or a Serializer.
        hmac_key: sign and verify every value with HMAC-SHA256 under this key.
        compression: ``"zstd"`` or ``"lz4"`` (serialized values above ``compress_threshold``
            bytes, default 256, are compressed), a :class:`~asyncperf.io.Compressor`
            (for a zstd dictionary, or to read its ``statistics()``; leave
            ``compress_threshold`` and ``compress_level`` out), or None: zstd when
            ``compress_threshold`` is set, else no compression (the default). Values
            written under any setting, by any client, read back under any other (a
            dictionary-compressed value needs its dictionary, in the Compressor's
            ``dictionaries``: without it the value reads as a miss).
        compress_threshold: compress serialized values above this many bytes (with
            ``compression=None``: zstd, and None means never).
        compress_level: the codec's level (zstd 1-22, default 3; lz4 0-16, default 0).
        near_cache: the near cache's bound in entries (None: no near cache).
        default_ttl: seconds an entry lives when ``set`` gives no ``ttl`` (None: forever).
        name: the level's name in statistics.
        lock_lease: seconds a single-flight lock lives unless renewed (it is renewed
            every third of it while its load runs; a dead holder's lock expires).
        lock_poll: the longest a single-flight waiter waits for an invalidation
            before it looks again (the safety net when none arrives).
        health_interval: seconds of silence after which the listener sends PING, and
            then waits as long for the answer before it drops the connection.
        reconnect_delay: the first and the longest wait before the listener reconnects
            (doubling, with jitter).

    Raises:
        ValueError, TypeError: a bad argument (the message names it); pickle without
            ``hmac_key``.
    """

    def __init__(
        self,
        client: redis_asyncio.Redis | str,
        *,
        namespace: str = "cache",
        serializer: SerializerName | Serializer = "msgpack",
        hmac_key: bytes | None = None,
        compression: Compression = None,
        compress_threshold: int | None = None,
        compress_level: int | None = None,
        near_cache: int | None = None,
        default_ttl: float | None = None,
        name: str = "redis",
        lock_lease: float = 30.0,
        lock_poll: float = 0.1,
        health_interval: float = 5.0,
        reconnect_delay: tuple[float, float] = (0.05, 2.0),
    ) -> None:
        self._closed = True  # until constructed: aclose of a half-made level does nothing
        if isinstance(client, str):
            self._client = connect(client)
            self._owns_client = True
        elif isinstance(client, redis_asyncio.Redis):
            self._client = client
            self._owns_client = False
        else:
            raise TypeError(
                f"client must be a redis.asyncio.Redis or a URL, not {type(client).__name__}"
            )
        value_prefix = key_join(namespace, "v") + ":"  # ValueError naming namespace
        self._value_prefix = value_prefix.encode()
        self._lock_prefix = (key_join(namespace, "lock") + ":").encode()
        self._namespace = namespace
        if hmac_key is not None:
            if not isinstance(hmac_key, bytes):
                raise TypeError(f"hmac_key must be bytes, not {type(hmac_key).__name__}")
            if not hmac_key:
                raise ValueError("hmac_key must not be empty")
        self._serializer = make_serializer(serializer)
        if isinstance(self._serializer, PickleSerializer) and hmac_key is None:
            raise ValueError(
                "serializer='pickle' needs hmac_key: unpickling runs code, and a shared Redis "
                "can be written by any of its clients (or use 'msgpack' or 'json')"
            )
        self._hmac_key = hmac_key
        self._codec = Codec(compress_threshold, compress_level, compression=compression)
        self._near_max = (
            None if near_cache is None else check_int("near_cache", near_cache, minimum=1)
        )
        self._default_ttl = (
            None if default_ttl is None else check_number("default_ttl", default_ttl)
        )
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        if not name:
            raise ValueError("name must not be empty")
        self._name = name
        self._lease = check_number("lock_lease", lock_lease)
        self._lease_ms = max(1, round(self._lease * 1000))
        self._lock_poll = check_number("lock_poll", lock_poll)
        self._health_interval = check_number("health_interval", health_interval)
        try:
            first, longest = (check_number("reconnect_delay", delay) for delay in reconnect_delay)
        except (TypeError, ValueError) as exc:
            if "reconnect_delay" in str(exc):
                raise
            raise TypeError(
                f"reconnect_delay must be a pair (first, longest), not {reconnect_delay!r}"
            ) from None
        if longest < first:
            raise ValueError(f"reconnect_delay must be (first, longest), not {reconnect_delay!r}")
        self._reconnect_delay = (first, longest)

        self._read_or_lock = self._client.register_script(_READ_OR_LOCK)
        self._compare_and_delete = self._client.register_script(_COMPARE_AND_DELETE)
        self._compare_and_extend = self._client.register_script(_COMPARE_AND_EXTEND)

        # Single-key calls of concurrent tasks travel together (see the module docs).
        # max_delay=0: a batch is what arrived in one pass of the loop, with no wait.
        # Reads are coalesced by key (every caller gets the same raw reply); writes
        # are not: "first wins" would drop a later value, so all go, in order.
        self._reads: Batcher[bytes, _Reply] = Batcher(
            self._read_batch,
            max_size=_BATCH_SIZE,
            max_delay=0.0,
            max_concurrency=_BATCH_CONCURRENCY,
            key=_same_key,
            name=f"{name}.reads",
        )
        self._writes: Batcher[_Write, bool] = Batcher(
            self._write_batch,
            max_size=_BATCH_SIZE,
            max_delay=0.0,
            max_concurrency=_BATCH_CONCURRENCY,
            name=f"{name}.writes",
        )

        # The near cache: redis key -> (value, monotonic deadline or None), LRU order.
        self._near: OrderedDict[bytes, tuple[Any, float | None]] = OrderedDict()
        self._fills: dict[bytes, _Fill] = {}
        # Bumped whenever the near cache is flushed or the listener drops: a fill
        # ticket from an older epoch is void.
        self._epoch = 0
        # Set while the listener is subscribed and tracking; _near_on: and there is a
        # near cache to use (the listener also runs for single-flight waiters alone).
        self._tracking = asyncio.Event()
        self._near_on = False
        self._listener: asyncio.Task[None] | None = None
        self._listener_connection: Any = None
        self._stopping = asyncio.Event()
        self._listener_id: int | None = None
        # Single-flight waiters, by the redis key (value or lock) whose change wakes them.
        self._watchers: dict[bytes, set[asyncio.Event]] = {}
        self._flights: dict[bytes, asyncio.Task[Any]] = {}
        # Flights awaiting their loader now: the only ones aclose cancels.
        self._loading: set[asyncio.Task[Any]] = set()
        self._healthy = True
        self._background: set[asyncio.Task[None]] = set()

        self._hits = 0
        self._misses = 0
        self._sets = 0
        self._deletes = 0
        self._corrupt = 0
        self._near_hits = 0
        self._latency = LatencySamples()
        self._messages = 0
        self._invalidated = 0
        self._flushes = 0
        self._connects = 0
        self._drops = 0
        self._read_errors = 0
        self._write_errors = 0
        self._loads = 0
        self._coalesced = 0
        self._lock_waits = 0
        self._takeovers = 0
        self._leases_lost = 0
        self._closed = False

    # -- keys and values ------------------------------------------------------------

    def _key(self, key: Hashable) -> bytes:
        try:
            return self._value_prefix + encode_key(key)
        except TypeError as exc:
            raise TypeError(str(exc)) from None  # the message already names key

    def _ttl_ms(self, ttl: float | None) -> int | None:
        if ttl is None:
            ttl = self._default_ttl
            if ttl is None:
                return None
        else:
            ttl = check_number("ttl", ttl)
        return max(1, round(ttl * 1000))

    def _encode(self, rkey: bytes, value: Any) -> bytes:
        body = self._codec.encode(self._serializer.dumps(value))
        if self._hmac_key is not None:
            return hmac.digest(self._hmac_key, rkey + body, hashlib.sha256) + body
        return body

    def _decode(self, rkey: bytes, stored: bytes) -> Any:
        """The value of stored bytes; raises CorruptValue when they do not verify or load."""
        body = stored
        if self._hmac_key is not None:
            mac, body = stored[:_MAC_SIZE], stored[_MAC_SIZE:]
            expected = hmac.digest(self._hmac_key, rkey + body, hashlib.sha256)
            if not hmac.compare_digest(mac, expected):
                raise CorruptValue("bad signature")
        try:
            return self._serializer.loads(self._codec.decode(body))
        except CorruptValue:
            raise
        except Exception as exc:
            raise CorruptValue(f"{self._serializer.name} could not load it: {exc}") from exc

    def _entry(self, rkey: bytes, stored: bytes, pttl: int) -> CacheEntry | None:
        try:
            value = self._decode(rkey, stored)
        except MissingDictionary:
            # Sound bytes from a client that has the dictionary (another version, during
            # a rollout): a miss here, but left in the shared cache for those who can read it.
            return None
        except CorruptValue:
            self._corrupt += 1
            self._remove_corrupt(rkey, stored)
            return None
        return CacheEntry(value, None if pttl < 0 else pttl / 1000.0)

    def _remove_corrupt(self, rkey: bytes, stored: bytes) -> None:
        async def remove() -> None:
            with contextlib.suppress(BackendError), translate_errors("remove a damaged value"):
                await self._compare_and_delete(keys=[rkey], args=[stored])

        # In the background: a read does not wait for the clean-up of what it skipped.
        task = asyncio.get_running_loop().create_task(remove())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- health ---------------------------------------------------------------------

    def _live(self) -> None:
        if self._closed:
            raise CacheClosed(_CLOSED)
        if self._listener is None and self._near_max is not None:
            self._start_listener()

    def _failed(self, what: str, exc: BaseException) -> None:
        if self._healthy:
            self._healthy = False
            logger.warning(
                "Redis cache level %r: %s failed (%s); reads are misses and writes are "
                "skipped until Redis answers again",
                self._name,
                what,
                exc,
            )

    # -- the near cache -------------------------------------------------------------

    def _near_get(self, rkey: bytes) -> CacheEntry | None:
        found = self._near.get(rkey)
        if found is None:
            return None
        value, deadline = found
        if deadline is None:
            self._near.move_to_end(rkey)
            return CacheEntry(value, None)
        left = deadline - time.monotonic()
        if left <= 0.0:
            del self._near[rkey]
            return None
        self._near.move_to_end(rkey)
        return CacheEntry(value, left)

    def _take_ticket(self, rkey: bytes) -> _Fill | None:
        if not self._near_on:
            return None  # bypassed: nothing read now may be kept
        fill = self._fills.get(rkey)
        if fill is None:
            fill = self._fills[rkey] = _Fill(self._epoch)
        fill.readers += 1
        return fill

    def _return_ticket(self, rkey: bytes, fill: _Fill, entry: CacheEntry | None) -> None:
        fill.readers -= 1
        if fill.readers == 0 and self._fills.get(rkey) is fill:
            del self._fills[rkey]
        if entry is None or not fill.valid or fill.epoch != self._epoch:
            return
        if not self._near_on or self._near_max is None:
            return
        deadline = None if entry.ttl is None else time.monotonic() + entry.ttl
        near = self._near
        near[rkey] = (entry.value, deadline)
        near.move_to_end(rkey)
        while len(near) > self._near_max:
            near.popitem(last=False)

    def _forget(self, rkey: bytes) -> None:
        """The key changed (here or anywhere): drop its near entry, void reads in flight."""
        self._near.pop(rkey, None)
        fill = self._fills.pop(rkey, None)
        if fill is not None:
            fill.valid = False
        watchers = self._watchers.get(rkey)
        if watchers:
            for event in watchers:
                event.set()

    def _forget_all(self) -> None:
        self._epoch += 1
        self._near.clear()
        for fill in self._fills.values():
            fill.valid = False
        self._fills.clear()
        for watchers in self._watchers.values():
            for event in watchers:
                event.set()

    # -- the listener ---------------------------------------------------------------

    def _start_listener(self) -> None:
        self._listener = asyncio.get_running_loop().create_task(
            self._listen(), name=f"asyncperf.RedisCacheLevel {self._name} invalidations"
        )

    async def _listen(self) -> None:
        """Keep one RESP2 connection subscribed to invalidations; reconnect when it drops."""
        first, longest = self._reconnect_delay
        delay = first
        pool = self._client.connection_pool
        while not self._closed:
            options = dict(pool.connection_kwargs)
            # Invalidations arrive as pub/sub messages only over RESP2.
            options["protocol"] = 2
            connection = pool.connection_class(**options)
            self._listener_connection = connection
            try:
                with translate_errors("the invalidation listener"):
                    await self._subscribe(connection)
                    delay = first
                    await self._receive(connection)
            except Exception as exc:
                # Any failure (BackendError from Redis, or whatever a connection closed
                # under a read raises) is a drop: bypass, then reconnect.
                if self._tracking.is_set() and not self._closed:
                    self._drops += 1
                    logger.warning(
                        "Redis cache level %r: the invalidation listener dropped (%s); "
                        "the near cache is bypassed until it reconnects",
                        self._name,
                        exc,
                    )
            finally:
                if self._tracking.is_set():
                    self._tracking.clear()
                    self._near_on = False
                    self._listener_id = None
                    self._forget_all()
                self._listener_connection = None
                with contextlib.suppress(Exception):
                    await connection.disconnect()
            # Woken early by aclose (an event, not a cancellation: see aclose).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, longest)

    async def _subscribe(self, connection: Any) -> None:
        await connection.connect()
        await connection.send_command("CLIENT", "ID")
        client_id = int(await connection.read_response())
        await connection.send_command(
            "CLIENT",
            "TRACKING",
            "ON",
            "REDIRECT",
            client_id,
            "BCAST",
            "PREFIX",
            self._value_prefix,
            "PREFIX",
            self._lock_prefix,
        )
        await connection.read_response()
        await connection.send_command("SUBSCRIBE", INVALIDATE_CHANNEL)
        await connection.read_response()  # [b"subscribe", channel, 1]
        # Anything read before now is unknown to the listener: start empty.
        self._forget_all()
        if self._closed:
            raise ConnectionError("the level is closing")
        self._listener_id = client_id
        self._connects += 1
        self._tracking.set()
        self._near_on = self._near_max is not None

    async def _receive(self, connection: Any) -> None:
        probing = False
        while True:
            message = await connection.read_response(timeout=self._health_interval)
            if message is None:  # silence for health_interval
                if probing:
                    raise ConnectionError("no answer to PING from the invalidation listener")
                await connection.send_command("PING")
                probing = True
                continue
            probing = False
            if not isinstance(message, list) or len(message) < 3 or message[0] != b"message":
                continue  # the PONG, or the reply to a (re)subscription
            self._messages += 1
            keys = message[2]
            if keys is None:
                self._flushes += 1
                self._forget_all()
                continue
            self._invalidated += len(keys)
            for rkey in keys:
                self._forget(rkey)

    async def wait_tracking(self, timeout: float | None = None) -> bool:
        """Wait until the near cache is in use (the listener subscribed); whether it is.

        Starts the listener if it has not started. Returns False after
        ``timeout`` seconds (None: no limit), or at once without a near cache.
        """
        self._live()
        if self._near_max is None:
            return False
        if not self._tracking.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tracking.wait(), timeout)
        return self._tracking.is_set()

    @property
    def listener_id(self) -> int | None:
        """The Redis client id of the listener connection while it is subscribed."""
        return self._listener_id

    # -- the level API --------------------------------------------------------------

    @property
    def name(self) -> str:
        """The level's name in statistics."""
        return self._name

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def client(self) -> redis_asyncio.Redis:
        """The redis-py client the level sends its data commands through."""
        return self._client

    async def get_entry(self, key: Hashable) -> CacheEntry | None:
        """The value and the seconds it has left, or None on a miss (or when Redis fails)."""
        rkey = self._key(key)
        self._live()
        start = perf_counter()
        fill = None
        if self._near_on:
            entry = self._near_get(rkey)
            if entry is not None:
                self._hits += 1
                self._near_hits += 1
                self._latency.add(perf_counter() - start)
                return entry
            fill = self._take_ticket(rkey)
        entry = None
        try:
            reply = await self._submit(self._reads, rkey)
            if reply is None:
                self._read_errors += 1  # the batch failed: logged there, counted per call
            elif reply[0] is not None:
                # Decoded by each caller: callers coalesced on one key get their own copies.
                entry = self._entry(rkey, reply[0], reply[1])
        finally:
            if fill is not None:
                self._return_ticket(rkey, fill, entry)
        if entry is None:
            self._misses += 1
            return None
        self._hits += 1
        self._latency.add(perf_counter() - start)
        return entry

    async def get(self, key: Hashable, default: Any = MISS) -> Any:
        """The value of ``key``, or ``default`` (MISS unless given) on a miss."""
        entry = await self.get_entry(key)
        return default if entry is None else entry.value

    async def get_many(self, keys: Iterable[Hashable]) -> dict[Hashable, CacheEntry]:
        """The entries found among ``keys``: near-cache hits, the rest in one round trip."""
        wanted = {self._key(key): key for key in keys}  # a bad key raises before any read
        self._live()
        start = perf_counter()
        found: dict[Hashable, CacheEntry] = {}
        remote: list[bytes] = []
        if self._near_on:
            for rkey, key in wanted.items():
                entry = self._near_get(rkey)
                if entry is None:
                    remote.append(rkey)
                else:
                    found[key] = entry
                    self._near_hits += 1
        else:
            remote = list(wanted)
        if remote:
            tickets = [self._take_ticket(rkey) for rkey in remote]
            entries: list[CacheEntry | None] = [None] * len(remote)
            try:
                replies = await self._fetch(remote, "get_many")
                self._healthy = True
                for index, (rkey, (stored, pttl)) in enumerate(zip(remote, replies, strict=True)):
                    if stored is not None:
                        entries[index] = self._entry(rkey, stored, pttl)
            except BackendError as exc:
                self._read_errors += 1
                self._failed("get_many", exc)
            finally:
                for rkey, fill, entry in zip(remote, tickets, entries, strict=True):
                    if fill is not None:
                        self._return_ticket(rkey, fill, entry)
            for rkey, entry in zip(remote, entries, strict=True):
                if entry is not None:
                    found[wanted[rkey]] = entry
        elapsed = perf_counter() - start
        for _ in found:
            self._latency.add(elapsed)
        self._hits += len(found)
        self._misses += len(wanted) - len(found)
        return found

    async def set(self, key: Hashable, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` for ``ttl`` seconds (None: ``default_ttl``); False if Redis failed.

        Raises:
            TypeError: a bad key, or a value the serializer cannot hold.
            ValueError: ``ttl`` is not a positive finite number.
        """
        rkey = self._key(key)
        ttl_ms = self._ttl_ms(ttl)
        stored = self._encode(rkey, value)
        self._live()
        self._forget(rkey)
        # Counted (sets, write_errors) by the batch: a cancelled caller's write still lands.
        return await self._submit(self._writes, (rkey, stored, ttl_ms))

    async def set_many(self, items: Iterable[tuple[Hashable, Any, float | None]]) -> int:
        """Store ``(key, value, ttl)`` items in one pipeline; how many were stored.

        Every item is checked and serialized before anything is sent.
        """
        prepared = []
        for key, value, ttl in items:
            rkey = self._key(key)
            prepared.append((rkey, self._encode(rkey, value), self._ttl_ms(ttl)))
        self._live()
        if not prepared:
            return 0
        for rkey, _stored, _ttl_ms in prepared:
            self._forget(rkey)
        try:
            with translate_errors("set_many"):
                pipe = self._client.pipeline(transaction=False)
                for rkey, stored, ttl_ms in prepared:
                    _ = pipe.set(rkey, stored, px=ttl_ms)
                results = await pipe.execute()
        except BackendError as exc:
            self._write_errors += 1
            self._failed("set_many", exc)
            return 0
        self._healthy = True
        count = sum(1 for result in results if result)
        self._sets += count
        return count

    # -- batches of single-key calls --------------------------------------------------

    async def _submit(self, batcher: Batcher[_Item, _Result], item: _Item) -> _Result:
        """``item``'s result from its batch; CacheClosed if aclose ended the batch."""
        try:
            return await batcher.submit(item)
        except (BatcherClosed, BatchFailed) as exc:
            # The batch was cancelled by a cancelled aclose (or the batcher closed
            # under this call). Anything else that fails a whole batch is a bug here:
            # let it be seen.
            if self._closed:
                raise CacheClosed(_CLOSED) from exc
            raise

    async def _fetch(self, rkeys: list[bytes], what: str) -> list[tuple[bytes | None, int]]:
        """The stored bytes (None: absent) and PTTL of each key, in one MULTI/EXEC.

        MGET rather than GET per key: it answers nil for a key of another type
        instead of failing the whole transaction.
        """
        with translate_errors(what):
            pipe = self._client.pipeline(transaction=True)
            _ = pipe.mget(rkeys)
            for rkey in rkeys:
                _ = pipe.pttl(rkey)
            stored_values, *pttls = await pipe.execute()
        return list(zip(stored_values, pttls, strict=True))

    async def _read_batch(self, rkeys: list[bytes]) -> list[_Reply]:
        """The read Batcher's ``process_batch``: one round trip for the batch's keys."""
        try:
            replies = await self._fetch(rkeys, "get")
        except BackendError as exc:
            # None (not the exception) for each key: its callers count the miss and the
            # read error; a shared exception instance would gather all their tracebacks.
            self._failed("get", exc)
            return [None] * len(rkeys)
        self._healthy = True
        return list(replies)

    async def _write_batch(self, writes: list[_Write]) -> list[bool]:
        """The write Batcher's ``process_batch``: one pipeline of SET PX, in arrival order."""
        results: list[Any]  # True per stored key; an error instance in place of a failed one
        try:
            with translate_errors("set"):
                if len(writes) == 1:
                    # A lone caller: a plain SET costs less than a pipeline of one.
                    rkey, stored, ttl_ms = writes[0]
                    results = [await self._client.set(rkey, stored, px=ttl_ms)]
                else:
                    pipe = self._client.pipeline(transaction=False)
                    for rkey, stored, ttl_ms in writes:
                        _ = pipe.set(rkey, stored, px=ttl_ms)
                    # Errors per command (e.g. OOM) come back in place: they fail their
                    # key only.
                    results = await pipe.execute(raise_on_error=False)
        except BackendError as exc:
            self._write_errors += len(writes)
            self._failed("set", exc)
            return [False] * len(writes)
        # An error instance is truthy: it must not count as stored.
        outcome = [bool(result) and not isinstance(result, Exception) for result in results]
        stored_count = sum(outcome)
        self._sets += stored_count
        failures = [result for result in results if isinstance(result, Exception)]
        if failures:
            self._write_errors += len(writes) - stored_count
            self._failed("set", failures[0])
        else:
            self._healthy = True
        return outcome

    async def delete(self, key: Hashable) -> bool:
        """Remove ``key``; whether it was present.

        Raises:
            BackendUnavailable, BackendError: Redis failed: the key may still be there.
        """
        rkey = self._key(key)
        self._live()
        self._forget(rkey)
        with translate_errors("delete"):
            removed = bool(await self._client.unlink(rkey))
        self._healthy = True
        if removed:
            self._deletes += 1
        return removed

    async def clear(self) -> None:
        """Remove every value of this namespace (SCAN and UNLINK; other keys are left alone).

        Raises:
            BackendUnavailable, BackendError: Redis failed: some values may remain.
        """
        self._live()
        self._forget_all()
        pattern = _glob_escape(self._value_prefix) + b"*"
        with translate_errors("clear"):
            batch: list[bytes] = []
            async for rkey in self._client.scan_iter(match=pattern, count=_CLEAR_BATCH):
                batch.append(rkey)
                if len(batch) >= _CLEAR_BATCH:
                    await self._client.unlink(*batch)
                    batch.clear()
            if batch:
                await self._client.unlink(*batch)
        self._healthy = True

    async def count(self) -> int:
        """Values of this namespace held by Redis now (a SCAN: slow on big databases)."""
        self._live()
        pattern = _glob_escape(self._value_prefix) + b"*"
        held = 0
        with translate_errors("count"):
            async for _rkey in self._client.scan_iter(match=pattern, count=_CLEAR_BATCH):
                held += 1
        return held

    # -- single-flight across processes -----------------------------------------------

    async def get_or_load(
        self, key: Hashable, loader: Callable[[], Awaitable[V]], ttl: float | None = None
    ) -> V:
        """The value of ``key``; on a miss one loader call among every process sharing Redis.

        Raises:
            Exception: what ``loader`` raised (to the callers in this process; a
                waiting process then takes the lock and loads itself).
            TypeError, ValueError: a bad key, loader or ttl.
        """
        entry = await self.get_entry(key)
        if entry is not None:
            value: V = entry.value
            return value
        return await self.load_shared(key, loader, ttl)

    def shared_loader(
        self, key: Hashable, loader: Callable[[], Awaitable[V]], ttl: float | None = None
    ) -> Callable[[], Awaitable[V]]:
        """``loader`` wrapped for ``TieredCache.get_or_load``: one load across processes.

        ``await tier.get_or_load(key, level.shared_loader(key, loader, ttl), ttl)``:
        the tier coalesces the callers in this process; the wrapper coalesces the
        processes (it finds the value another process stored, or holds the lock
        while it loads).
        """
        return functools.partial(self.load_shared, key, loader, ttl)

    async def load_shared(
        self, key: Hashable, loader: Callable[[], Awaitable[V]], ttl: float | None = None
    ) -> V:
        """The value another process stores meanwhile, or ``loader``'s under the lock.

        Does not read the near cache first (see :meth:`get_or_load`); the read is
        part of the lock script.
        """
        rkey = self._key(key)
        if not callable(loader):
            raise TypeError(f"loader must be callable, not {type(loader).__name__}")
        if ttl is not None:
            ttl = check_number("ttl", ttl)
        self._live()
        if self._listener is None:
            self._start_listener()  # waiters wake on invalidations when it is up
        flight = self._flights.get(rkey)
        if flight is None:
            flight = asyncio.get_running_loop().create_task(
                self._run_flight(rkey, loader, ttl), name="asyncperf.RedisCacheLevel load"
            )
            self._flights[rkey] = flight
            flight.add_done_callback(functools.partial(self._flight_done, rkey))
        else:
            self._coalesced += 1
        try:
            # The shield: one caller's cancellation does not cancel the load for the others.
            result: V = await asyncio.shield(flight)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if flight.cancelled() and self._closed and task is not None and not task.cancelling():
                raise CacheClosed(_CLOSED) from None  # aclose cancelled the loader
            raise
        return result

    def _flight_done(self, rkey: bytes, task: asyncio.Task[Any]) -> None:
        if self._flights.get(rkey) is task:
            del self._flights[rkey]
        if not task.cancelled():
            task.exception()  # retrieved: a failure nobody awaited is not logged as lost

    async def _run_flight(
        self, rkey: bytes, loader: Callable[[], Awaitable[Any]], ttl: float | None
    ) -> Any:
        lock = self._lock_prefix + rkey[len(self._value_prefix) :]
        token = secrets.token_hex(16).encode()
        waited = False
        while True:
            if self._closed:
                raise CacheClosed(_CLOSED)
            woken = asyncio.Event()
            self._watch(rkey, lock, woken)
            try:
                try:
                    with translate_errors("single-flight lock"):
                        reply = await self._read_or_lock(
                            keys=[rkey, lock], args=[token, self._lease_ms]
                        )
                except BackendError as exc:
                    # No Redis, nobody to coordinate with: load here (set will fail too).
                    self._read_errors += 1
                    self._failed("single-flight lock", exc)
                    return await self._load(rkey, loader, ttl)
                self._healthy = True
                if reply[0] == 1:
                    entry = self._entry(rkey, reply[1], reply[2])
                    if entry is not None:
                        self._hits += 1
                        return entry.value
                    return await self._load(rkey, loader, ttl)  # damaged: replace it
                if reply[0] == 2:
                    break
                if not waited:
                    waited = True
                    self._lock_waits += 1
                # Held elsewhere: woken by the value's or the lock's invalidation, or at
                # the latest when the poll interval or the holder's lease runs out.
                lease_left = max(int(reply[1]), 1) / 1000.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(self._lock_poll, lease_left))
            finally:
                self._unwatch(rkey, lock, woken)
        if waited:
            self._takeovers += 1  # the holder ended (failed or died) without storing a value
        done = asyncio.Event()
        renewing = asyncio.get_running_loop().create_task(self._renew(lock, token, done))
        try:
            return await self._load(rkey, loader, ttl)
        finally:
            # Stopped by an event, never cancelled: see aclose.
            done.set()
            await renewing
            with contextlib.suppress(BackendError), translate_errors("single-flight unlock"):
                await self._compare_and_delete(keys=[lock], args=[token])

    async def _load(
        self, rkey: bytes, loader: Callable[[], Awaitable[Any]], ttl: float | None
    ) -> Any:
        self._loads += 1
        task = asyncio.current_task()
        assert task is not None  # called from a flight's task
        self._loading.add(task)
        try:
            value = await loader()
        finally:
            self._loading.discard(task)
        if self._closed:
            raise CacheClosed(_CLOSED)
        stored = self._encode(rkey, value)
        ttl_ms = self._ttl_ms(ttl)
        self._forget(rkey)
        try:
            with translate_errors("set"):
                await self._client.set(rkey, stored, px=ttl_ms)
            self._sets += 1
        except BackendError as exc:
            self._write_errors += 1
            self._failed("set", exc)
        return value

    async def _renew(self, lock: bytes, token: bytes, done: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self._lease / 3)
            if done.is_set():
                return
            try:
                with translate_errors("single-flight lease renewal"):
                    extended = await self._compare_and_extend(
                        keys=[lock], args=[token, self._lease_ms]
                    )
            except BackendError:
                continue  # the lease may still hold: try again at the next third
            if not extended:
                self._leases_lost += 1
                return

    def _watch(self, rkey: bytes, lock: bytes, event: asyncio.Event) -> None:
        self._watchers.setdefault(rkey, set()).add(event)
        self._watchers.setdefault(lock, set()).add(event)

    def _unwatch(self, rkey: bytes, lock: bytes, event: asyncio.Event) -> None:
        for name in (rkey, lock):
            watchers = self._watchers.get(name)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[name]

    # -- statistics and lifetime --------------------------------------------------------

    def statistics(self) -> CacheStatistics:
        """This instance's counters (``entries`` and ``bytes`` are 0: Redis holds them)."""
        evictions = dict.fromkeys(EvictionReason, 0)
        evictions[EvictionReason.CORRUPT] = self._corrupt
        p50, p99 = self._latency.percentiles()
        return CacheStatistics(
            name=self._name,
            policy="redis",
            entries=0,
            bytes=0,
            max_entries=None,
            max_bytes=None,
            hits=self._hits,
            misses=self._misses,
            sets=self._sets,
            deletes=self._deletes,
            evictions={str(reason): count for reason, count in evictions.items()},
            hit_latency_p50=p50,
            hit_latency_p99=p99,
        )

    def redis_statistics(self) -> RedisCacheStatistics:
        """The near cache, the listener, errors, single-flight and batch counters."""
        reads, writes = self._reads.statistics(), self._writes.statistics()
        return RedisCacheStatistics(
            name=self._name,
            near_hits=self._near_hits,
            near_entries=len(self._near),
            near_max_entries=self._near_max,
            near_active=self._near_on,
            invalidation_messages=self._messages,
            invalidated_keys=self._invalidated,
            flushes=self._flushes,
            listener_connects=self._connects,
            listener_drops=self._drops,
            read_errors=self._read_errors,
            write_errors=self._write_errors,
            corrupt=self._corrupt,
            loads=self._loads,
            coalesced=self._coalesced,
            lock_waits=self._lock_waits,
            lock_takeovers=self._takeovers,
            leases_lost=self._leases_lost,
            read_batches=reads.batches,
            batched_reads=reads.submitted,
            write_batches=writes.batches,
            batched_writes=writes.submitted,
        )

    def batcher_statistics(self) -> dict[str, BatcherStatistics]:
        """The batchers of ``get_entry`` (``"reads"``) and ``set`` (``"writes"``)."""
        return {"reads": self._reads.statistics(), "writes": self._writes.statistics()}

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """Finish the batches, stop the listener, cancel loads, close the client if it made it.

        Idempotent; every other call afterwards raises CacheClosed. If this call is
        cancelled while batches are in flight, they are cancelled (their callers get
        CacheClosed) and the rest of the shutdown still runs.
        """
        if self._closed:
            return
        self._closed = True
        try:
            # First, while the client and the listener still work: the pending keys are
            # sent and the batches in flight answer their callers (new calls already
            # raise CacheClosed). Both at once, so that a cancelled close cancels (aborts)
            # both: gather cancels its children and waits for them to end.
            await asyncio.gather(self._reads.aclose(), self._writes.aclose())
        finally:
            await self._shut_down()

    async def _shut_down(self) -> None:
        """The rest of aclose, once the batchers are closed: the listener, loads, the client."""
        # Tasks stop on flags and events rather than cancellation wherever they may be
        # inside a redis-py call: with Python 3.11's wait_for (which redis-py sends
        # through) a cancellation that lands there can be lost, and the task then hangs.
        # Only a loader (user code) is cancelled; the listener's read fails when its
        # connection is closed under it; waiters are woken and see the flag.
        self._stopping.set()
        self._forget_all()
        for task in self._loading:
            task.cancel()
        connection = self._listener_connection
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.disconnect()
        tasks = [*self._flights.values(), *self._background]
        if self._listener is not None:
            tasks.append(self._listener)
        if tasks:
            await asyncio.wait(tasks)
            for task in tasks:
                if not task.cancelled():
                    task.exception()  # retrieved: their callers were told, or nobody waits
        self._tracking.clear()
        self._near_on = False
        self._forget_all()
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        """Start the listener (with a near cache) and wait up to 5 s for it to subscribe."""
        await self.wait_tracking(5.0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        near = "" if self._near_max is None else f", near cache {len(self._near)}/{self._near_max}"
        return f"<RedisCacheLevel {self._name!r} {state} namespace={self._namespace!r}{near}>"
