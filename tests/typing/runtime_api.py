"""Read by mypy only (never run): @runtime.handler keeps each handler's real types.

An unused ``# type: ignore`` is an error under ``mypy --strict``, so each
ignore below also asserts that the call it marks is refused.
"""

from __future__ import annotations

from typing import assert_type

from asyncperf.runtime import (
    HandlerStatistics,
    Runtime,
    RuntimeConfig,
    RuntimeStatistics,
    ShutdownReport,
)

runtime = Runtime(RuntimeConfig(max_workers=8), max_workers=16, tick=0.5)


@runtime.handler(priority=0, timeout=5.0, concurrency=32, cache_ttl=60.0, rate="300/min")
async def complete(session_id: str, prompt: str, *, temperature: float = 0.7) -> str:
    return prompt


@runtime.handler
async def ids(count: int) -> list[int]:
    return list(range(count))


class Service:
    @runtime.handler(pool="io")
    async def fetch(self, url: str) -> bytes:
        return url.encode()


@runtime.handler(batch=16, batch_delay=0.002)
async def embed(texts: list[str]) -> list[float]:
    return [float(len(text)) for text in texts]


async def api(service: Service) -> None:
    assert_type(await embed("one text"), float)
    await embed(["a list"])  # type: ignore[arg-type]
    assert_type(await complete("s1", "hello"), str)
    assert_type(await complete("s1", "hello", temperature=0.1), str)
    assert_type(await ids(3), list[int])
    assert_type(await service.fetch("https://example.org"), bytes)
    await complete("s1", 2)  # type: ignore[arg-type]
    await complete("s1")  # type: ignore[call-arg]
    await complete("s1", "hi", temp=1.0)  # type: ignore[call-arg]
    await service.fetch(1)  # type: ignore[arg-type]
    assert_type(complete.statistics(), HandlerStatistics)
    assert_type(complete.handler_name, str)
    assert_type(runtime.statistics(), RuntimeStatistics)
    assert_type(await runtime.drain(), ShutdownReport)
    async with runtime as entered:
        assert_type(entered, Runtime)


def bad_options() -> None:
    Runtime(max_workers="8")  # type: ignore[arg-type]
    Runtime(max_worker=8)  # type: ignore[call-arg]
    Runtime(overflow="explode")  # type: ignore[arg-type]

    def sync(x: int) -> int:
        return x

    runtime.handler(sync)  # type: ignore[arg-type]
