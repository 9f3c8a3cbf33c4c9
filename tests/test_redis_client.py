"""The Redis client helper and the error translation, against the private test server."""

from __future__ import annotations

import pytest
from redis import exceptions as redis_errors

import asyncperf as ap
from asyncperf.backends.redis import connect, key_join, translate_errors


async def test_connect_talks_resp2_to_the_test_server(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        with translate_errors("ping"):
            assert await client.ping()
            await client.set(key_join("t", "k"), b"v")
            assert await client.get(key_join("t", "k")) == b"v"  # bytes: no decoding
    finally:
        await client.aclose()


async def test_an_unreachable_server_is_backend_unavailable() -> None:
    client = connect("redis://127.0.0.1:1/0", timeout=0.5)
    try:
        with (
            pytest.raises(ap.BackendUnavailable, match=r"^ping: Redis is unreachable") as info,
            translate_errors("ping"),
        ):
            await client.ping()
        assert isinstance(info.value.__cause__, redis_errors.ConnectionError)
        assert isinstance(info.value, ConnectionError)  # also catchable as the builtin
    finally:
        await client.aclose()


async def test_a_wrong_password_is_a_backend_error_not_unavailable(redis_url: str) -> None:
    client = connect(redis_url, password="wrong")
    try:
        with (
            pytest.raises(ap.BackendError, match="refused the credentials") as info,
            translate_errors("ping"),
        ):
            await client.ping()
        assert not isinstance(info.value, ap.BackendUnavailable)
    finally:
        await client.aclose()


async def test_a_command_error_is_a_backend_error(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        await client.set("s", b"text")
        with (
            pytest.raises(ap.BackendError, match=r"^incr: Redis answered with an error"),
            translate_errors("incr"),
        ):
            await client.incr("s")
    finally:
        await client.aclose()


def test_bad_arguments_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="url must be a redis://"):
        _ = connect("http://x")
    with pytest.raises(ValueError, match="timeout must be > 0"):
        _ = connect("redis://x", timeout=0)


def test_keys_share_one_cluster_slot() -> None:
    assert key_join("jobs", "ready") == "asyncperf:{jobs}:ready"
    with pytest.raises(ValueError, match="namespace must be"):
        key_join("a{b}", "x")
