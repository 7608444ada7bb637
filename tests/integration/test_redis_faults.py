"""RedisState fails closed and fast when Redis is stopped or paused, and the same object
works again once Redis is back: no retry ladder, no object to rebuild."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from broker.audit.chain import verify_chain
from broker.backends.redis_state import RedisState
from broker.errors import BackendUnavailable
from broker.service.ports import TaskClaim
from tests.servers.processes import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

Operation = Callable[[RedisState], Awaitable[object]]

OPERATIONS: dict[str, Operation] = {
    "take_rate": lambda s: s.take_rate("alice", 100, 60),
    "claim_task": lambda s: s.claim_task("t1", "alice", ("alice",), int(time.time()), int(time.time()) + 300),
    "revocation_state": lambda s: s.revocation_state("j1", "t1", "alice"),
    "append_audit": lambda s: s.append_audit({"action": "mint"}),
}


async def fails_fast(operation: Operation, state: RedisState) -> float:
    """Run ``operation`` expecting BackendUnavailable naming only an exception class."""
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as e:
        await operation(state)
    took = time.monotonic() - started
    assert e.value.code == "backend_unavailable"
    assert e.value.reason.startswith("redis: ")
    assert e.value.reason.removeprefix("redis: ").isidentifier()
    return took


async def works(state: RedisState) -> None:
    assert await state.take_rate("alice", 100, 60) == 0.0
    now = int(time.time())
    assert await state.claim_task("t1", "alice", ("alice",), now, now + 300) is TaskClaim.OWNED
    assert (await state.revocation_state("j1", "t1", "alice")).revokes(0) is False
    await state.append_audit({"action": "mint"})
    await state.ping()
    assert verify_chain([e async for e in state.audit_events()]).ok


@pytest.mark.parametrize("name", OPERATIONS)
def test_stopped_redis_fails_fast_then_recovers_on_restart(own_redis: RedisServer, name: str) -> None:
    async def body() -> None:
        state = RedisState.from_url(own_redis.url)
        try:
            await works(state)
            own_redis.stop()
            # connection refused: at once, not after a ladder of retries and back-offs
            assert await fails_fast(OPERATIONS[name], state) < 0.5
            assert await fails_fast(OPERATIONS[name], state) < 0.5  # and again: nothing piles up
            own_redis.start()  # same port, empty
            await works(state)
        finally:
            await state.aclose()

    asyncio.run(body())


@pytest.mark.parametrize("name", OPERATIONS)
def test_paused_redis_fails_in_about_the_timeout_then_recovers(own_redis: RedisServer, name: str) -> None:
    async def body() -> None:
        state = RedisState.from_url(own_redis.url, timeout=1.0)
        try:
            await works(state)
            own_redis.pause()  # SIGSTOP: connections are accepted by the kernel, never answered
            try:
                took = await fails_fast(OPERATIONS[name], state)
            finally:
                own_redis.resume()
            assert 0.9 < took < 2.0
            await works(state)
        finally:
            await state.aclose()

    asyncio.run(body())


def test_a_fresh_connection_to_a_paused_redis_fails_fast_too(own_redis: RedisServer) -> None:
    """No pooled connection yet: the connect succeeds (kernel backlog), the handshake never
    answers. The timeout still bounds it."""

    async def body() -> None:
        state = RedisState.from_url(own_redis.url, timeout=0.5)
        own_redis.pause()
        try:
            took = await fails_fast(OPERATIONS["revocation_state"], state)
        finally:
            own_redis.resume()
        assert took < 1.5
        await works(state)
        await state.aclose()

    asyncio.run(body())


def test_idle_pooled_connections_survive_a_restart(own_redis: RedisServer) -> None:
    """Redis restarts while this object sits idle with open connections: the next call
    must not fail on a dead pooled socket. (Idle means the event loop runs meanwhile and
    sees the server close them; a call racing the restart itself may get one 503.)"""

    async def body() -> None:
        state = RedisState.from_url(own_redis.url)
        try:
            await asyncio.gather(*(works(state) for _ in range(3)))
            own_redis.stop()
            await asyncio.sleep(0.1)  # idle, the loop running, as in a server between requests
            own_redis.start()
            await works(state)
        finally:
            await state.aclose()

    asyncio.run(body())


def test_a_queued_audit_append_gives_up_within_the_timeout(own_redis: RedisServer) -> None:
    """Appends from one object take turns; behind a stuck one, the others still answer
    within about the timeout, not one timeout each."""

    async def body() -> None:
        state = RedisState.from_url(own_redis.url, timeout=0.5)
        await works(state)
        own_redis.pause()
        started = time.monotonic()
        try:
            results = await asyncio.gather(*(state.append_audit({"n": i}) for i in range(10)), return_exceptions=True)
        finally:
            own_redis.resume()
        assert time.monotonic() - started < 1.5
        assert all(isinstance(r, BackendUnavailable) for r in results)
        await works(state)
        await state.aclose()

    asyncio.run(body())


# ---------------------------------------------------------------- replies lost in transit


@dataclass
class _Link:
    writers: list[asyncio.StreamWriter]
    lose_replies: bool = False


@dataclass
class LossyProxy:
    """A TCP proxy in front of Redis that can drop Redis's replies on the connections open
    now, as a network losing them would: the command runs, the client never hears back.
    Unless told otherwise, connections opened later work normally, so a retry would get
    through."""

    upstream: int
    port: int = 0
    connections: int = 0
    lose_all: bool = False
    links: list[_Link] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> LossyProxy:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def lose_replies(self, *, new_connections_too: bool = False) -> None:
        self.lose_all = new_connections_too
        for link in self.links:
            link.lose_replies = True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        link = _Link([writer, up_writer], lose_replies=self.lose_all)
        self.links.append(link)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, replies: bool) -> None:
            while data := await src.read(65536):
                if not (replies and link.lose_replies):
                    dst.write(data)
                    await dst.drain()

        for task in (
            asyncio.ensure_future(pump(reader, up_writer, replies=False)),
            asyncio.ensure_future(pump(up_reader, writer, replies=True)),
        ):
            self.tasks.add(task)

    async def aclose(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for link in self.links:
            for w in link.writers:
                w.close()
                await asyncio.gather(w.wait_closed(), return_exceptions=True)
        await self.server.wait_closed()


def test_a_lost_reply_is_never_retried(own_redis: RedisServer) -> None:
    """No retries: a command whose reply was lost ran once, and must not run again (a
    retried rate-limit script would spend the allowance twice)."""

    async def body() -> None:
        proxy = await LossyProxy(own_redis.port).start()
        state = RedisState.from_url(proxy.url, timeout=0.3)
        try:
            assert await state.take_rate("alice", 3, 3600) == 0.0
            proxy.lose_replies()
            await fails_fast(lambda s: s.take_rate("alice", 3, 3600), state)
            await asyncio.sleep(0.5)  # time for a retry, if there were one
            assert proxy.connections == 1
            # two slots spent (the warm-up and the lost one): exactly one left
            assert await state.take_rate("alice", 3, 3600) == 0.0
            assert await state.take_rate("alice", 3, 3600) > 0
        finally:
            await state.aclose()
            await proxy.aclose()

    asyncio.run(body())


def test_wait_for_bounds_a_client_without_socket_timeouts(own_redis: RedisServer) -> None:
    """The second line of defence: even a client built without socket timeouts is cut
    off after about ``timeout``, and asyncio's TimeoutError is translated too."""

    async def body() -> None:
        proxy = await LossyProxy(own_redis.port).start()
        client = Redis.from_url(
            proxy.url, socket_timeout=None, retry=Retry(NoBackoff(), 0), protocol=2, decode_responses=True
        )
        state = RedisState(client, timeout=0.3)
        try:
            await state.ping()
            proxy.lose_replies(new_connections_too=True)
            for name, operation in OPERATIONS.items():
                took = await asyncio.wait_for(fails_fast(operation, state), 3.0)
                assert took < 1.0, name
        finally:
            await state.aclose()
            await proxy.aclose()

    asyncio.run(body())
