"""Caching: memory over disk, single-flight loads, stale-while-revalidate and @cached."""

import asyncio
import tempfile

import asyncperf as ap

upstream_calls = 0


async def ask_upstream(prompt: str) -> str:
    """Stands for a slow, rate-limited call (an LLM, an HTTP API)."""
    global upstream_calls
    upstream_calls += 1
    await asyncio.sleep(0.02)
    return prompt.upper()


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        async with ap.TieredCache(
            ap.MemoryCache(max_entries=1_000),
            ap.DiskCache(directory, max_bytes=10 << 20),
            default_ttl=60.0,
            jitter=0.1,
            stale_while_revalidate=30.0,
        ) as cache:
            # 100 sessions ask the same thing at once: one upstream call answers them all.
            answers = await asyncio.gather(
                *(cache.get_or_load("hello", lambda: ask_upstream("hello")) for _ in range(100))
            )
            print(f"100 concurrent callers -> {upstream_calls} upstream call: {answers[0]!r}")

            @ap.cached(cache, ttl=60.0)
            async def complete(prompt: str, temperature: float = 0.0) -> str:
                return await ask_upstream(prompt)

            await complete("ping")
            await complete(prompt="ping", temperature=0.0)  # same arguments, same entry
            print(f"@cached: 2 calls -> {upstream_calls - 1} upstream call")

            # Past its TTL but inside stale_while_revalidate: the old value at once,
            # and one refresh in the background.
            await cache.set("news", "old headline", ttl=0.05)
            await asyncio.sleep(0.06)
            now = await cache.get_or_load("news", lambda: ask_upstream("new headline"))
            # A stale entry reads as a miss in a plain get until the refresh stores the new one.
            while (fresh := await cache.get("news")) is ap.MISS:  # noqa: ASYNC110 - a demo
                await asyncio.sleep(0.01)
            print(f"stale-while-revalidate: {now!r}, then {fresh!r}")

            stats = cache.statistics()
            print(
                f"tier: {stats.hits} hits, {stats.misses} misses, {stats.loads} loads, "
                f"{stats.coalesced} joined a load in flight, {stats.stale_served} stale served, "
                f"{stats.refreshes} refreshed"
            )
            for level in stats.levels:
                print(f"  {level.name}: {level.entries} entries, {level.sets} sets")


if __name__ == "__main__":
    ap.run(main())
