"""A second process for the DiskCache tests: ``python tests/_disk_worker.py MODE DIR``.

``serve``: read JSON commands from stdin, one a line, answer each with one JSON line:
  ``{"op": "write", "prefix": "a", "n": 50}`` stores ``value_for(prefix + str(i), 1)``;
  ``{"op": "read", "prefix": "b", "n": 50}`` answers the keys found with the right value;
  ``{"op": "quit"}`` closes the cache and exits.
``churn``: store every key of :data:`CHURN_KEYS` at version 1, 2, 3, ... forever, printing
  ``round N`` once every key holds version N; the test kills it with SIGKILL.

Each value names its key and version and carries a payload derived from both, so
a torn or mixed-up value is detectable (:func:`check_value`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from typing import Any

from asyncperf.cache._disk import DiskCache

#: Inline values (~2 KB) and file-backed ones (~100 KB).
CHURN_KEYS = [(f"small-{i}", 2_000) for i in range(40)] + [
    (f"large-{i}", 100_000) for i in range(10)
]


def value_for(key: str, version: int, size: int = 1_000) -> dict[str, Any]:
    """The value stored under ``key`` at ``version``: its payload depends on both."""
    digest = hashlib.sha256(f"{key}:{version}".encode()).digest()
    return {"key": key, "version": version, "payload": digest * (size // len(digest) + 1)}


def check_value(key: str, value: Any, size: int = 1_000) -> int:
    """The version of a complete value for ``key``; AssertionError if torn or foreign."""
    assert isinstance(value, dict), value
    assert value["key"] == key, (key, value["key"])
    version = value["version"]
    assert value == value_for(key, version, size), f"{key}: payload does not match {version}"
    return int(version)


async def serve(directory: str) -> None:
    loop = asyncio.get_running_loop()
    async with DiskCache(directory) as cache:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            command = json.loads(line)
            if command["op"] == "quit":
                return
            keys = [f"{command['prefix']}{i}" for i in range(command["n"])]
            if command["op"] == "write":
                stored = await cache.set_many((key, value_for(key, 1), None) for key in keys)
                answer: dict[str, Any] = {"stored": stored}
            else:
                values = await asyncio.gather(*(cache.get(key) for key in keys))
                answer = {
                    "found": [k for k, v in zip(keys, values, strict=True) if v == value_for(k, 1)]
                }
            print(json.dumps(answer), flush=True)


async def churn(directory: str) -> None:
    async with DiskCache(directory) as cache:
        version = 0
        while True:
            version += 1
            await asyncio.gather(
                *(cache.set(key, value_for(key, version, size)) for key, size in CHURN_KEYS)
            )
            print(f"round {version}", flush=True)


def main() -> None:
    mode, directory = sys.argv[1], sys.argv[2]
    asyncio.run(serve(directory) if mode == "serve" else churn(directory))


if __name__ == "__main__":
    main()
