"""RedisPriorityQueue: a leased priority queue shared by processes through Redis.

Layout (every key of one queue shares the hash tag ``{name}``, so one cluster slot):

- ``ready``    sorted set of job ids; score ``rank * 2**40 + seq`` (rank: the level's
  place, most important first; seq: an arrival counter, ``INCR seq``), so ZPOPMIN
  serves strictly by priority, first in first out within a level;
- ``leases``   sorted set of leased job ids scored by their deadline (server time, ms);
- ``jobs``, ``score``, ``attempts``, ``dkey``, ``reason``: hashes by job id (payload,
  score to go back to, deliveries so far, dedupe key, why it died);
- ``dead``     list of dead-lettered job ids (their payload is kept for inspection);
- ``stats``    hash of counters; ``wake`` and ``room:<rank>`` lists of wake-up tokens;
  ``blocked``  hash of putters waiting for room, by rank;
- ``dedupe:<key>`` the job id holding that dedupe key (``SET`` with a TTL).

Every operation is one call of one Lua script (atomic, one round trip). Time is
the server's (``TIME``), so lease deadlines mean the same to every host. Waiting
consumers block on ``BLPOP wake`` (a put pushes one token: one consumer wakes,
not all) with ``poll_interval`` as the safety net; each take first moves expired
leases back to ready, so a waiting consumer is also the reaper.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar

import redis.asyncio as redis_asyncio

from asyncperf._errors import DropReason, Rejected
from asyncperf._validate import check_int, check_number
from asyncperf.abc import DeadLetter, Lease, LeasedLevelStatistics, LeasedQueueStatistics
from asyncperf.backends._leasing import JobLease, LeasingQueue, Settle, check_timeout
from asyncperf.backends._local_queue import check_levels
from asyncperf.backends.redis._client import key_join, translate_errors
from asyncperf.cache import Serializer
from asyncperf.cache._serializers import SerializerName, make_serializer
from asyncperf.queues import Level

__all__ = ["RedisPriorityQueue"]

T = TypeVar("T")

#: Wake-up tokens kept at most: enough to wake every consumer, bounded when none waits.
_WAKE_CAP: Final = 1024
#: Expired leases one script call moves back at most (the rest on the next call).
_REAP_BATCH: Final = 32

_SCRIPT: Final = """
local READY, LEASES, JOBS, SCORE, ATTEMPTS, DKEY, REASON, DEAD, STATS, WAKE, SEQ, BLOCKED =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10],
  KEYS[11], KEYS[12]
local op = ARGV[1]
local nlevels = tonumber(ARGV[2])
local max_attempts = tonumber(ARGV[3])
local lease_ms = tonumber(ARGV[4])
local wake_cap = tonumber(ARGV[5])
local reap_batch = tonumber(ARGV[6])
local SPAN = 1099511627776

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function wake()
  if redis.call('LLEN', WAKE) < wake_cap then redis.call('LPUSH', WAKE, '1') end
end

local function free_dedupe(id)
  local dk = redis.call('HGET', DKEY, id)
  if dk then
    if redis.call('GET', dk) == id then redis.call('DEL', dk) end
    redis.call('HDEL', DKEY, id)
  end
end

local function bury(id, reason)
  redis.call('RPUSH', DEAD, id)
  redis.call('HSET', REASON, id, reason)
  redis.call('HINCRBY', STATS, 'dead', 1)
  free_dedupe(id)
end

local function ready_again(id)
  redis.call('ZADD', READY, redis.call('HGET', SCORE, id), id)
  wake()
end

local function reap(now)
  local expired = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now, 'LIMIT', 0, reap_batch)
  for _, id in ipairs(expired) do
    redis.call('ZREM', LEASES, id)
    redis.call('HINCRBY', STATS, 'expired', 1)
    local attempts = tonumber(redis.call('HGET', ATTEMPTS, id))
    if attempts >= max_attempts then
      bury(id, 'lease expired on attempt ' .. attempts)
    else
      ready_again(id)
    end
  end
end

local function rank_of(score)
  return math.floor(tonumber(score) / SPAN)
end

if op == 'put' then
  local payload, rank, bound, strategy = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
  local dedupe = KEYS[13 + nlevels]
  if dedupe and redis.call('EXISTS', dedupe) == 1 then
    redis.call('HINCRBY', STATS, 'deduplicated:' .. rank, 1)
    return {'duplicate'}
  end
  local low = rank * SPAN
  local high = low + SPAN - 1
  local victim, victim_payload = false, false
  if redis.call('ZCOUNT', READY, low, high) >= bound then
    if strategy == 'block' then
      redis.call('HINCRBY', BLOCKED, rank, 1)
      return {'full'}
    end
    if strategy == 'reject' then
      redis.call('HINCRBY', STATS, 'rejected:' .. rank, 1)
      return {'rejected'}
    end
    local found
    if strategy == 'drop_oldest' then
      found = redis.call('ZRANGEBYSCORE', READY, low, high, 'LIMIT', 0, 1)
    else
      found = redis.call('ZREVRANGEBYSCORE', READY, high, low, 'LIMIT', 0, 1)
    end
    victim = found[1]
    victim_payload = redis.call('HGET', JOBS, victim)
    redis.call('ZREM', READY, victim)
    redis.call('HDEL', JOBS, victim)
    redis.call('HDEL', SCORE, victim)
    redis.call('HDEL', ATTEMPTS, victim)
    free_dedupe(victim)
    redis.call('HINCRBY', STATS, 'dropped:' .. rank, 1)
  end
  local seq = redis.call('INCR', SEQ)
  local id = string.format('%.0f', seq)
  local score = string.format('%.0f', low + seq)
  redis.call('ZADD', READY, score, id)
  redis.call('HSET', JOBS, id, payload)
  redis.call('HSET', SCORE, id, score)
  if dedupe then
    redis.call('SET', dedupe, id, 'PX', ARGV[11])
    redis.call('HSET', DKEY, id, dedupe)
  end
  redis.call('HINCRBY', STATS, 'enqueued:' .. rank, 1)
  wake()
  if victim then return {'ok', id, victim, victim_payload} end
  return {'ok', id}

elseif op == 'take' then
  local now = now_ms()
  reap(now)
  local popped = redis.call('ZPOPMIN', READY)
  if #popped == 0 then return false end
  local id = popped[1]
  local rank = rank_of(popped[2])
  local attempt = redis.call('HINCRBY', ATTEMPTS, id, 1)
  redis.call('ZADD', LEASES, now + lease_ms, id)
  redis.call('HINCRBY', STATS, 'delivered', 1)
  -- A ready job left this level: let a putter waiting for room try again.
  local blocked = tonumber(redis.call('HGET', BLOCKED, rank) or '0')
  if blocked > 0 then
    local room = KEYS[13 + rank]
    if redis.call('LLEN', room) < blocked then redis.call('LPUSH', room, '1') end
  end
  return {id, redis.call('HGET', JOBS, id), attempt, rank}

elseif op == 'stats' then
  local depths = {}
  for rank = 0, nlevels - 1 do
    depths[rank + 1] = redis.call('ZCOUNT', READY, rank * SPAN, rank * SPAN + SPAN - 1)
  end
  return {redis.call('HGETALL', STATS), depths, redis.call('ZCARD', LEASES)}

elseif op == 'letters' then
  local ids = redis.call('LRANGE', DEAD, 0, tonumber(ARGV[7]) - 1)
  local letters = {}
  for i, id in ipairs(ids) do
    letters[i] = {id, redis.call('HGET', JOBS, id), redis.call('HGET', ATTEMPTS, id),
                  rank_of(redis.call('HGET', SCORE, id)), redis.call('HGET', REASON, id)}
  end
  return letters

else
  -- Settling a lease: ack, nack, dead, release, renew. ARGV: id, attempt, reason.
  local id, attempt = ARGV[7], tonumber(ARGV[8])
  local now = now_ms()
  local deadline = redis.call('ZSCORE', LEASES, id)
  if (not deadline) or tonumber(deadline) <= now
      or tonumber(redis.call('HGET', ATTEMPTS, id)) ~= attempt then
    if op ~= 'renew' then redis.call('HINCRBY', STATS, 'stale', 1) end
    reap(now)
    return 0
  end
  if op == 'renew' then
    redis.call('ZADD', LEASES, 'XX', now + lease_ms, id)
    return 1
  end
  redis.call('ZREM', LEASES, id)
  if op == 'ack' then
    redis.call('HDEL', JOBS, id)
    redis.call('HDEL', SCORE, id)
    redis.call('HDEL', ATTEMPTS, id)
    free_dedupe(id)
    redis.call('HINCRBY', STATS, 'acked', 1)
  elseif op == 'release' then
    redis.call('HINCRBY', ATTEMPTS, id, -1)
    redis.call('HINCRBY', STATS, 'released', 1)
    ready_again(id)
  elseif op == 'dead' or attempt >= max_attempts then
    bury(id, ARGV[9])
  else
    redis.call('HINCRBY', STATS, 'retried', 1)
    ready_again(id)
  end
  return 1
end
"""


class RedisPriorityQueue(LeasingQueue[T]):
    """A priority queue in Redis whose consumers, in any process, take jobs as leases.

    Delivery is **at least once**: a job is removed only when acked; a lease
    that is not renewed in time (its consumer died, hung, or lost Redis) runs
    out and the job is delivered again, with ``attempt`` one higher, so a job
    can run twice. Make handlers idempotent (or check ``job.attempt``). After
    ``max_attempts`` deliveries without an ack, a job goes to the dead letters
    with the reason (the last nack's, or the expiry).

    The contract is the one of :class:`~asyncperf.backends.LocalLeasedQueue`:
    strict priority (``Level.weight``/``share`` are ignored), per-level bounds
    on ready jobs with the level's :class:`~asyncperf.DropStrategy` (BLOCK waits
    for room: a take pushes a token to the level's ``room`` list, and
    ``poll_interval`` is the safety net), ``dedupe_key`` (a job is refused
    while another live job holds the key, up to ``dedupe_ttl``), and
    ``statistics()`` over every process sharing the queue. Processes sharing
    one queue should use the same levels; bounds and ``max_attempts`` are
    applied as the calling process configured them.

    When Redis is unreachable every operation raises
    :class:`~asyncperf.BackendUnavailable`: producers see backpressure, never a
    silent local fallback. A lease held meanwhile keeps renewing in the
    background and is lost if Redis stays away past its deadline.

    Args:
        client: a ``redis.asyncio.Redis`` with bytes replies (see
            :func:`~asyncperf.backends.redis.connect`); its socket timeout must
            exceed ``poll_interval``. The caller closes it.
        name: the queue's name (its namespace in Redis).
        levels, default_priority: as :class:`~asyncperf.PriorityQueue`.
        lease: seconds a lease lasts unless renewed.
        max_attempts: deliveries before a failing job is dead-lettered.
        dedupe_ttl: seconds a dedupe key lives at most.
        serializer: "json" (default), "msgpack", "pickle" (only if everyone who
            can write to the Redis is trusted: unpickling runs code) or an object
            with ``dumps``/``loads``/``name``.
        poll_interval: seconds a waiting consumer or blocked putter waits for a
            wake-up before it looks again (the safety net, and the reaper's tick).
            A waiting ``take`` or ``put`` that is cancelled returns within this
            long: its ``BLPOP`` is let run out rather than cut (see ``_block_on``).
        on_drop: called as ``on_drop(item, reason)`` in the putting process for
            each item rejected or evicted.

    Raises:
        ValueError, TypeError: a parameter out of range (named).
    """

    def __init__(
        self,
        client: redis_asyncio.Redis,
        name: str,
        *,
        levels: Iterable[Level] | None = None,
        default_priority: int | None = None,
        lease: float = 30.0,
        max_attempts: int = 5,
        dedupe_ttl: float = 3600.0,
        serializer: SerializerName | Serializer = "json",
        poll_interval: float = 0.5,
        on_drop: Callable[[T, DropReason], None] | None = None,
    ) -> None:
        self._levels = check_levels(levels)
        priorities = [level.priority for level in self._levels]
        if default_priority is None:
            default_priority = priorities[len(priorities) // 2]
        if default_priority not in priorities:
            raise ValueError(
                f"default_priority must be one of {priorities}, not {default_priority!r}"
            )
        self._default_priority = default_priority
        self._rank = {priority: rank for rank, priority in enumerate(priorities)}
        self._lease_seconds = check_number("lease", lease)
        if self._lease_seconds < 0.01:
            raise ValueError("lease must be at least 0.01 seconds")
        self._max_attempts = check_int("max_attempts", max_attempts, minimum=1)
        self._dedupe_ttl = check_number("dedupe_ttl", dedupe_ttl)
        self._poll = check_number("poll_interval", poll_interval)
        self._serializer = make_serializer(serializer)
        self._on_drop = on_drop
        self._client = client
        self.name = name
        # The order is the script's KEYS[1..12]; the rooms follow, then a dedupe key.
        parts = ["ready", "leases", "jobs", "score", "attempts", "dkey", "reason", "dead"]
        parts += ["stats", "wake", "seq", "blocked"]
        self._keys = [key_join(name, part) for part in parts]
        self._keys += [key_join(name, "room", str(rank)) for rank in range(len(self._levels))]
        self._wake_key = self._keys[9]
        self._blocked_key = self._keys[11]
        self._script = client.register_script(_SCRIPT)
        self._common = [
            len(self._levels),
            self._max_attempts,
            max(1, round(self._lease_seconds * 1000)),
            _WAKE_CAP,
            _REAP_BATCH,
        ]

    async def _call(self, what: str, op: str, *args: Any, dedupe: str | None = None) -> Any:
        keys = self._keys if dedupe is None else [*self._keys, dedupe]
        with translate_errors(what):
            return await self._script(keys=keys, args=[op, *self._common, *args])

    # -- putting ------------------------------------------------------------------

    async def put(
        self, item: T, priority: int | None = None, *, dedupe_key: str | None = None
    ) -> str | None:
        """Queue ``item``; its job id, or None when a live job holds ``dedupe_key``.

        A full BLOCK level makes this wait for room (cancelling it queues nothing).

        Raises:
            ValueError: ``priority`` names no level.
            TypeError: the serializer cannot hold ``item``.
            Rejected: the level is full and REJECTs.
            BackendUnavailable: Redis cannot be reached.
        """
        if priority is None:
            priority = self._default_priority
        rank = self._rank.get(priority)
        if rank is None:
            raise ValueError(f"priority must be one of {list(self._rank)}, not {priority!r}")
        level = self._levels[rank]
        payload = self._serializer.dumps(item)
        dedupe = None if dedupe_key is None else key_join(self.name, "dedupe", dedupe_key)
        ttl_ms = max(1, round(self._dedupe_ttl * 1000))
        args = (payload, rank, level.max_size, level.strategy.value, ttl_ms)
        while True:
            reply = await self._call("put a job", "put", *args, dedupe=dedupe)
            status = reply[0]
            if status == b"ok":
                if len(reply) == 4 and self._on_drop is not None:
                    self._on_drop(self._serializer.loads(reply[3]), DropReason.EVICTED)
                return str(reply[1].decode())
            if status == b"duplicate":
                return None
            if status == b"rejected":
                if self._on_drop is not None:
                    self._on_drop(item, DropReason.REJECTED)
                raise Rejected(
                    f"level {priority} is full ({level.max_size} items) and rejects new items",
                    reason=DropReason.REJECTED,
                    priority=priority,
                )
            await self._wait_for_room(rank)

    async def _wait_for_room(self, rank: int) -> None:
        """The put script counted us as blocked on ``rank``: wait for a token, then uncount."""
        try:
            await self._block_on(self._keys[12 + rank], self._poll, "wait for room")
        finally:
            uncount = asyncio.ensure_future(self._client.hincrby(self._blocked_key, str(rank), -1))
            with translate_errors("wait for room"):
                await asyncio.shield(uncount)

    async def _block_on(self, key: str, seconds: float, what: str) -> None:
        """``BLPOP key`` for at most ``seconds``, never cancelled half-way.

        redis-py can swallow a cancellation that lands inside a blocking command
        and leave the connection waiting (redis/redis-py#2028), so the BLPOP runs
        in its own task: a cancelled caller lets it end by itself (within
        ``seconds``), hands on a wake-up token it took, and only then re-raises.
        """
        call = asyncio.ensure_future(self._client.blpop([key], timeout=seconds))
        try:
            with translate_errors(what):
                await asyncio.shield(call)
        except asyncio.CancelledError:
            await asyncio.wait({call})
            if not call.cancelled() and call.exception() is None and call.result() is not None:
                # The token was meant for a consumer that is still waiting: pass it on.
                push = asyncio.ensure_future(self._client.lpush(key, b"1"))
                await asyncio.wait({push})
                if not push.cancelled():
                    push.exception()  # Redis gone: the others' poll is the safety net
            raise

    # -- taking -------------------------------------------------------------------

    async def _take_now(self) -> JobLease[T] | None:
        """One take script call, run to its end even if the caller is cancelled meanwhile:
        a job it leased for a cancelled caller is released at once, so nothing is lost."""
        call = asyncio.ensure_future(self._call("take a job", "take"))
        try:
            reply = await asyncio.shield(call)
        except asyncio.CancelledError:
            await asyncio.wait({call})
            if not call.cancelled() and call.exception() is None and call.result() is not None:
                given_back = asyncio.ensure_future(self._lease_of(call.result()).release())
                await asyncio.wait({given_back})
            raise
        return None if reply is None else self._lease_of(reply)

    def _lease_of(self, reply: list[Any]) -> JobLease[T]:
        job_id, payload, attempt, rank = reply
        item = self._serializer.loads(payload)
        return JobLease(self, job_id.decode(), item, self._levels[rank].priority, int(attempt))

    async def take(self, timeout: float | None = None) -> Lease[T]:
        """Lease the next job; see :meth:`asyncperf.abc.LeasedQueue.take`.

        Raises:
            TimeoutError: no job within ``timeout`` seconds.
            BackendUnavailable: Redis cannot be reached.
        """
        timeout = check_timeout(timeout)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            lease = await self._take_now()
            if lease is not None:
                return lease
            wait = self._poll
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(f"no job within {timeout} s")
                # BLPOP's timeout 0 means for ever: never ask for less than 10 ms.
                wait = max(min(wait, remaining), 0.01)
            await self._block_on(self._wake_key, wait, "wait for a job")

    async def _settle(self, lease: JobLease[T], how: Settle, reason: str) -> bool:
        what = "renew a lease" if how == "renew" else f"{how} a job"
        reply = await self._call(what, how, lease.id, lease.attempt, reason or _default(how, lease))
        return bool(reply)

    # -- inspection ---------------------------------------------------------------

    async def statistics(self) -> LeasedQueueStatistics:
        """A snapshot over every process sharing the queue.

        ``enqueued == acked + dead + dropped + depth + in_flight`` always holds.

        Raises:
            BackendUnavailable: Redis cannot be reached.
        """
        flat, depths, in_flight = await self._call("read statistics", "stats")
        counts = {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        levels = tuple(
            LeasedLevelStatistics(
                priority=level.priority,
                bound=level.max_size,
                strategy=level.strategy.value,
                depth=int(depths[rank]),
                enqueued=counts.get(f"enqueued:{rank}", 0),
                dropped=counts.get(f"dropped:{rank}", 0),
                rejected=counts.get(f"rejected:{rank}", 0),
                deduplicated=counts.get(f"deduplicated:{rank}", 0),
            )
            for rank, level in enumerate(self._levels)
        )
        return LeasedQueueStatistics(
            levels=levels,
            depth=sum(level.depth for level in levels),
            in_flight=int(in_flight),
            enqueued=sum(level.enqueued for level in levels),
            dropped=sum(level.dropped for level in levels),
            delivered=counts.get("delivered", 0),
            acked=counts.get("acked", 0),
            retried=counts.get("retried", 0),
            expired=counts.get("expired", 0),
            released=counts.get("released", 0),
            dead_letters=counts.get("dead", 0),
            stale_settles=counts.get("stale", 0),
        )

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter[T]]:
        """The oldest ``limit`` dead letters (their payloads stay in Redis until purged)."""
        check_int("limit", limit, minimum=1)
        rows = await self._call("read dead letters", "letters", limit)
        return [
            DeadLetter(
                job_id.decode(),
                self._serializer.loads(payload),
                self._levels[int(rank)].priority,
                int(attempts),
                reason.decode(),
            )
            for job_id, payload, attempts, rank, reason in rows
        ]

    async def purge(self) -> None:
        """Delete every key of this queue (jobs, leases, dead letters, counters, dedupe keys)."""
        with translate_errors("purge the queue"):
            pattern = key_join(self.name, "dedupe", "*")
            dedupe = [key async for key in self._client.scan_iter(match=pattern, count=1000)]
            await self._client.delete(*self._keys, *dedupe)

    def __repr__(self) -> str:
        return f"<RedisPriorityQueue {self.name!r} {len(self._levels)} levels>"


def _default(how: Settle, lease: JobLease[Any]) -> str:
    if how == "dead":
        return f"dead-lettered on attempt {lease.attempt}"
    return f"failed on attempt {lease.attempt}"
