"""The ``EndorsementStore`` contract (``broker/backends/endorsement_store.py``): the memory
adapter and the Redis adapter (on a real redis-server) answer alike."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from redis import Redis

from broker.backends.endorsement_store import (
    EndorsementStore,
    MemoryEndorsementStore,
    RedisEndorsementStore,
    endorsed_keys_key,
)
from broker.errors import BackendUnavailable
from broker.verify import redis_keys
from broker.verify.redis_options import async_redis
from tests.servers.processes import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

Run = Callable[[Callable[[EndorsementStore], Coroutine[Any, Any, Any]]], Any]


@pytest.fixture(params=["memory", "redis"])
def run(request: pytest.FixtureRequest, redis_server: RedisServer) -> Run:
    """Run an async step against a fresh store of the parametrised kind."""
    prefix = f"contract-{uuid.uuid4().hex[:8]}:"
    memory = MemoryEndorsementStore(time.time)  # one store for the test, as Redis is

    def step(work: Callable[[EndorsementStore], Coroutine[Any, Any, Any]]) -> Any:
        async def go() -> Any:
            store: EndorsementStore
            if request.param == "memory":
                return await work(memory)
            store = RedisEndorsementStore(async_redis(redis_server.url, 1.0), prefix, 1.0)
            try:
                return await work(store)
            finally:
                await store.aclose()

        return asyncio.run(go())

    return step


def test_an_added_entry_is_read_back_and_a_kid_is_stored_once(run: Run) -> None:
    assert run(lambda s: s.add("s-0000000000000001", "first")) is True
    assert run(lambda s: s.add("s-0000000000000001", "second")) is False
    assert run(lambda s: s.entries()) == {"s-0000000000000001": "first"}


def test_removed_entries_are_gone_and_not_withdrawn(run: Run) -> None:
    run(lambda s: s.add("s-0000000000000001", "a"))
    run(lambda s: s.add("s-0000000000000002", "b"))
    run(lambda s: s.remove(["s-0000000000000001"]))
    assert run(lambda s: s.entries()) == {"s-0000000000000002": "b"}
    assert run(lambda s: s.withdrawn(["s-0000000000000001", "s-0000000000000002"])) == frozenset()


def test_a_withdrawn_kid_loses_its_entry_and_stays_withdrawn_until_its_end(run: Run) -> None:
    run(lambda s: s.add("s-0000000000000001", "a"))
    run(lambda s: s.withdraw({"s-0000000000000001": int(time.time()) + 60}))
    assert run(lambda s: s.entries()) == {}
    run(lambda s: s.add("s-0000000000000001", "written back"))  # by someone with write access
    assert run(lambda s: s.withdrawn(["s-0000000000000001", "s-0000000000000002"])) == {"s-0000000000000001"}
    assert run(lambda s: s.withdrawn([])) == frozenset()


def test_nothing_is_withdrawn_when_nothing_is_named(run: Run) -> None:
    run(lambda s: s.withdraw({}))
    assert run(lambda s: s.entries()) == {}


def test_a_closed_or_unreachable_store_is_backend_unavailable() -> None:
    memory = MemoryEndorsementStore(time.time)

    async def closed() -> None:
        await memory.aclose()
        await memory.entries()

    with pytest.raises(BackendUnavailable):
        asyncio.run(closed())

    async def nowhere() -> None:
        store = RedisEndorsementStore(async_redis("redis://127.0.0.1:1/0", 0.2), "x:", 0.2)
        try:
            await store.entries()
        finally:
            await store.aclose()

    with pytest.raises(BackendUnavailable):
        asyncio.run(nowhere())


def test_the_redis_store_announces_a_withdrawal_on_the_revocation_channel(redis_server: RedisServer) -> None:
    prefix = f"contract-{uuid.uuid4().hex[:8]}:"
    with Redis.from_url(redis_server.url, decode_responses=True) as r:
        pubsub = r.pubsub()
        pubsub.subscribe(redis_keys.revocation_channel(prefix, 0))
        assert pubsub.get_message(timeout=1.0) is not None  # the subscription itself

        async def withdraw() -> None:
            store = RedisEndorsementStore(async_redis(redis_server.url, 1.0), prefix, 1.0)
            try:
                await store.add("s-0000000000000001", "a")
                await store.withdraw({"s-0000000000000001": int(time.time()) + 60})
            finally:
                await store.aclose()

        asyncio.run(withdraw())
        message = pubsub.get_message(timeout=2.0)
        assert message is not None
        assert "s-0000000000000001" in message["data"]
        assert r.hgetall(endorsed_keys_key(prefix)) == {}
        pubsub.close()


def test_a_hash_value_that_is_not_utf8_is_backend_unavailable_not_a_crash(redis_server: RedisServer) -> None:
    """Someone with Redis write access stores bytes that do not decode: the signer's read
    fails closed like any unreadable store (it raised UnicodeDecodeError before)."""
    prefix = f"contract-{uuid.uuid4().hex[:8]}:"
    with Redis.from_url(redis_server.url) as r:
        r.hset(endorsed_keys_key(prefix), b"s-0000000000000001", b"\xff\xfe")

    async def read() -> dict[str, str]:
        store = RedisEndorsementStore(async_redis(redis_server.url, 1.0), prefix, 1.0)
        try:
            return await store.entries()
        finally:
            await store.aclose()

    with pytest.raises(BackendUnavailable, match="malformed"):
        asyncio.run(read())

