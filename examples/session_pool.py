"""SessionDataPool: per-session state with costly set-up, reused through an ObjectPool."""

import asyncio
import random
from collections.abc import Iterator
from contextlib import contextmanager

import asyncperf as ap
from asyncperf.pools import ObjectPool, ObjectPoolStatistics

SCRATCH_BYTES = 64 * 1024


class SessionData:
    """What handling one message of a session needs: costly to build, cheap to clear."""

    built = 0

    def __init__(self) -> None:
        SessionData.built += 1
        # The costly part: a preallocated work buffer (and, in a real service, a
        # tokenizer, a compiled template, a parser...).
        self.scratch = bytearray(SCRATCH_BYTES)
        self.session_id = ""
        self.history: list[str] = []
        self.headers: dict[str, str] = {}

    def clear(self) -> None:
        """Forget the previous session: the pool calls it on every release."""
        self.session_id = ""
        self.history.clear()
        self.headers.clear()

    def __repr__(self) -> str:
        return f"<SessionData session={self.session_id!r}>"


class SessionDataPool:
    """Lends a SessionData to each message in flight; bounded, measured, leak-checked."""

    def __init__(self, *, max_size: int = 32, debug: bool = False) -> None:
        self._pool = ObjectPool(
            SessionData, SessionData.clear, max_size=max_size, debug=debug, name="sessions"
        )

    @contextmanager
    def session(self, session_id: str) -> Iterator[SessionData]:
        """``with pool.session("s1") as data:`` — clean state, returned at the end."""
        with self._pool.borrow() as data:
            data.session_id = session_id
            yield data

    def statistics(self) -> ObjectPoolStatistics:
        return self._pool.statistics()

    @property
    def pool(self) -> ObjectPool[SessionData]:
        return self._pool


async def main() -> None:
    rng = random.Random(3)
    sessions = SessionDataPool(max_size=32)
    messages = [(f"s{rng.randrange(200)}", f"message {i}") for i in range(2_000)]

    async def handle(item: tuple[str, str]) -> int:
        session_id, text = item
        with sessions.session(session_id) as data:
            assert not data.history, "a pooled object must come back clean"
            data.headers["x-session"] = session_id
            data.history.append(text)
            payload = text.encode()
            data.scratch[: len(payload)] = payload
            await asyncio.sleep(0)  # stands for the call to the upstream
            return len(payload)

    async with ap.WorkerPool(max_workers=16) as workers:
        total = sum([n async for n in workers.map(handle, messages, ordered=False)])

    stats = sessions.statistics()
    print(
        f"{len(messages)} messages ({total} bytes) handled by 16 workers: "
        f"{SessionData.built} SessionData built instead of {len(messages)} "
        f"({stats.hit_ratio:.1%} reused), at most {stats.high_water} in use at once"
    )
    print(
        f"pool: {stats.free} free of capacity {stats.capacity}, "
        f"{stats.dropped_on_release} dropped on release, {stats.in_use} in use"
    )
    (change,) = sessions.pool.optimize(headroom=0.25, floor=1)
    print(
        f"optimize(): capacity {change.old_capacity} -> {change.new_capacity} "
        f"(peak {change.high_water} in use + 25%), {change.trimmed} freed"
    )

    # Debug mode: a session that was never given back is reported with where it was taken.
    debug_sessions = SessionDataPool(debug=True)
    forgotten = debug_sessions.pool.acquire()
    (leak,) = debug_sessions.pool.leaks()
    frame = leak.stack[-1]
    print(f"debug mode: {leak.what} not released, taken in {frame.name}() line {frame.lineno}")
    debug_sessions.pool.release(forgotten)
    print(f"after its release: {len(debug_sessions.pool.close())} leaks reported at close")


if __name__ == "__main__":
    ap.run(main())
