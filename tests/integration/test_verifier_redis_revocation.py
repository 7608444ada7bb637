"""A Verifier given ``RedisRevocation`` (one MGET per verification) sees what RedisState
revoked at once, and fails closed when Redis is down or paused. (A Redis URL builds a
``RevocationFeed`` instead: tests/integration/test_revocation_feed.py.)"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest

from broker.backends.redis_state import RedisState
from broker.errors import TokenRejected
from broker.token import Actor, KeyRing, LocalSigner
from broker.verify import Verifier
from broker.verify.redis_revocation import RedisRevocation
from tests.helpers import good_token, verifier
from tests.servers.processes import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]


class Tokens:
    """Tokens on the real clock (revocations outlive tokens by the real clock, in Redis),
    each test with its own token ids, task and agent on the shared server."""

    def __init__(self, signer: LocalSigner) -> None:
        self.signer = signer
        self.now = int(time.time())
        self.task = f"task-{uuid.uuid4().hex}"
        self.agent = f"agent-{uuid.uuid4().hex[:12]}"

    def mint(self, *, jti: str | None = None, task: str | None = None, iat: int | None = None) -> tuple[str, str]:
        jti = jti or secrets.token_urlsafe(16)
        token = good_token(self.signer, jti=jti, task=task or self.task, agent=self.agent, now=iat or self.now, ttl=300)
        return token, jti


_OPEN: list[RedisRevocation] = []


@pytest.fixture(autouse=True)
def _close_revocation_clients() -> Iterator[None]:
    """Close each test's Redis clients, so no socket is left to the garbage collector."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def redis_verifier(ring: KeyRing, url: str, now: int) -> Verifier:
    _OPEN.append(revocation := RedisRevocation(url, prefix="capbroker:"))
    return verifier(ring, revocation=revocation, clock=lambda: float(now + 10))


def on_redis(url: str, action: Callable[[RedisState], Awaitable[None]]) -> None:
    async def body() -> None:
        state = RedisState.from_url(url)
        try:
            await action(state)
        finally:
            await state.aclose()

    asyncio.run(body())


def rejection(v: Verifier, token: str) -> str:
    with pytest.raises(TokenRejected) as e:
        v.verify(token)
    return e.value.code


def test_unrevoked_token_is_accepted(redis_server: RedisServer, ring: KeyRing, ed_signer: LocalSigner) -> None:
    tokens = Tokens(ed_signer)
    token, jti = tokens.mint()
    assert redis_verifier(ring, redis_server.url, tokens.now).verify(token).token_id == jti


def test_token_revoked_by_id_is_rejected(redis_server: RedisServer, ring: KeyRing, ed_signer: LocalSigner) -> None:
    tokens = Tokens(ed_signer)
    token, jti = tokens.mint()
    other, _ = tokens.mint()
    v = redis_verifier(ring, redis_server.url, tokens.now)
    v.verify(token)
    on_redis(redis_server.url, lambda s: s.revoke_token(jti, tokens.now + 300))
    assert rejection(v, token) == "revoked"
    v.verify(other)  # only that token


def test_every_token_of_a_revoked_task_is_rejected(
    redis_server: RedisServer, ring: KeyRing, ed_signer: LocalSigner
) -> None:
    tokens = Tokens(ed_signer)
    first, _ = tokens.mint()
    second, _ = tokens.mint()
    elsewhere, _ = tokens.mint(task=f"other-{uuid.uuid4().hex}")
    v = redis_verifier(ring, redis_server.url, tokens.now)
    on_redis(redis_server.url, lambda s: s.revoke_task(tokens.task, tokens.agent, tokens.now))
    assert rejection(v, first) == "revoked"
    assert rejection(v, second) == "revoked"
    v.verify(elsewhere)


def test_agent_kill_switch_rejects_tokens_issued_up_to_the_cutoff(
    redis_server: RedisServer, ring: KeyRing, ed_signer: LocalSigner
) -> None:
    tokens = Tokens(ed_signer)
    before, _ = tokens.mint(iat=tokens.now - 5)
    at, _ = tokens.mint(iat=tokens.now)
    after, _ = tokens.mint(iat=tokens.now + 1)
    v = redis_verifier(ring, redis_server.url, tokens.now)
    on_redis(redis_server.url, lambda s: s.revoke_agent(tokens.agent, tokens.now))
    assert rejection(v, before) == "revoked"
    assert rejection(v, at) == "revoked"
    v.verify(after)


def test_the_kill_switch_on_a_delegator_rejects_the_delegated_token(
    redis_server: RedisServer, ring: KeyRing, ed_signer: LocalSigner
) -> None:
    tokens = Tokens(ed_signer)
    root = f"root-{uuid.uuid4().hex[:12]}"
    chain = Actor(f"agent:{tokens.agent}-mid", Actor(f"agent:{root}"))
    delegated = good_token(ed_signer, agent="helper", act=chain, task=tokens.task, now=tokens.now, ttl=300)
    v = redis_verifier(ring, redis_server.url, tokens.now)
    assert v.verify(delegated).agent == "helper"
    on_redis(redis_server.url, lambda s: s.revoke_agent(root, tokens.now))  # the root, two links up
    assert rejection(v, delegated) == "revoked"


def test_stopped_redis_rejects_as_revocation_unavailable(
    own_redis: RedisServer, ring: KeyRing, ed_signer: LocalSigner
) -> None:
    tokens = Tokens(ed_signer)
    token, _ = tokens.mint()
    v = redis_verifier(ring, own_redis.url, tokens.now)
    v.verify(token)
    own_redis.stop()
    started = time.monotonic()
    assert rejection(v, token) == "revocation_unavailable"
    assert time.monotonic() - started < 2.0
    own_redis.start()
    v.verify(token)  # back without rebuilding the verifier


def test_paused_redis_rejects_within_about_the_timeout(
    own_redis: RedisServer, ring: KeyRing, ed_signer: LocalSigner
) -> None:
    tokens = Tokens(ed_signer)
    token, _ = tokens.mint()
    v = redis_verifier(ring, own_redis.url, tokens.now)
    v.verify(token)
    own_redis.pause()
    started = time.monotonic()
    try:
        assert rejection(v, token) == "revocation_unavailable"
    finally:
        own_redis.resume()
    assert time.monotonic() - started < 2.5
    v.verify(token)


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "memcached://x", "redis", "REDIS://127.0.0.1"])
def test_other_strings_are_not_a_revocation_store(ring: KeyRing, url: str) -> None:
    with pytest.raises(TypeError, match="redis://"):
        verifier(ring, revocation=url)


def test_redis_revocation_refuses_a_non_redis_url() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RedisRevocation("http://127.0.0.1:6379")
