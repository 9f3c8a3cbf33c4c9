"""A small service: interactive, background and batch handlers sharing one asyncperf runtime."""

from __future__ import annotations

import asyncio

import asyncperf as ap

# One runtime for the whole service: a shared pool of 4 workers, calls wait at
# most 0.2 s to be admitted, and shutdown gives work 2 s to finish.
runtime = ap.Runtime(max_workers=4, admission_timeout=0.2, drain_timeout=2.0)

# Documents whose first indexing attempt meets a connection reset.
FLAKY = {3, 10, 17}
attempts: dict[int, int] = {}


@runtime.handler(
    priority=0, timeout=0.5, cache_ttl=30.0, cache_key=lambda session_id, question: question
)
async def answer(session_id: str, question: str) -> str:
    """Interactive: a user waits, so it goes first, is bounded, and repeated questions
    (from any session) are answered from the cache."""
    await asyncio.sleep(0.02)  # the upstream call
    return f"{question.rstrip('?')}: 42"


@runtime.handler(
    priority=2, rate="50/s", burst=5, retries=2, backoff=ap.Backoff(initial=0.01, jitter=0.0)
)
async def index_document(doc_id: int) -> int:
    """Background: rate limited for the upstream, retried when the connection resets."""
    attempts[doc_id] = attempts.get(doc_id, 0) + 1
    await asyncio.sleep(0.005)
    if doc_id in FLAKY and attempts[doc_id] == 1:
        raise ConnectionError(f"reset while indexing {doc_id}")
    return doc_id


@runtime.handler(concurrency=2, timeout=1.0)
async def summarise(batch: tuple[int, ...]) -> int:
    """Batch: its own pool of two workers, so it never takes the interactive workers."""
    await asyncio.sleep(0.05)
    return sum(batch)


async def main() -> None:
    async with runtime:
        # A burst of background work: the rate limit admits what fits in the
        # admission timeout and refuses the rest at once, each refusal counted.
        indexing = [asyncio.create_task(index_document(i)) for i in range(30)]
        batches = [asyncio.create_task(summarise(tuple(range(i, i + 5)))) for i in range(6)]
        questions = ["what is the answer?", "why?", "what is the answer?"]
        replies = await asyncio.gather(
            *(answer(f"session-{i}", q) for i in range(3) for q in questions)
        )
        print(f"interactive: {len(replies)} replies, e.g. {replies[0]!r}")
        indexed = await asyncio.gather(*indexing, return_exceptions=True)
        done = [r for r in indexed if isinstance(r, int)]
        refused = [r for r in indexed if isinstance(r, ap.RateLimited)]
        print(
            f"background: {len(done)} documents indexed, {len(refused)} refused by the rate limit"
        )
        if refused:
            print(f"  e.g. {refused[0]}")
        print(f"batch: sums {list(await asyncio.gather(*batches))}")

    stats = runtime.statistics()
    print()
    print("handler          pool            calls  ok  failed  rejected  hits  retries  p99 ms")
    for name, h in stats.handlers.items():
        print(
            f"{name:<16} {h.pool:<15} {h.calls:>5} {h.succeeded:>3} {h.failed:>7} "
            f"{h.rejected:>9} {h.cache_hits:>5} {h.retries:>8} {h.latency_p99 * 1e3:>7.1f}"
        )
        assert (
            h.calls == h.succeeded + h.failed + h.timed_out + h.rejected + h.dropped + h.cancelled
        )
    for name, pool in stats.pools.items():
        print(f"pool {name}: {pool.completed} jobs completed, at most {pool.max_workers} workers")
    report = stats.shutdown
    assert report is not None
    print(f"shutdown: {report.reason}, {report.unfinished} calls cut short")


if __name__ == "__main__":
    ap.run(main())
