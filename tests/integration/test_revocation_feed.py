"""``RevocationFeed`` on a real redis-server: a verifier that has already accepted (and
remembered) a token rejects it within one second of the broker's revocation, without a
Redis round trip per verification, and fails closed while the feed cannot vouch for its
set (Redis stopped or paused).

Revocations are made by the broker's own ``RedisState`` (durable write, then the
announcement); "within one second" is polled against a deadline from the moment the
revocation call returned.
"""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing
import threading
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from redis import Redis

from broker.backends.redis_state import RedisState
from broker.capability.lifetime import MAX_TOKEN_TTL, REVOCATION_GRACE
from broker.errors import TokenRejected
from broker.service import retention
from broker.token import Actor, KeyRing, LocalSigner
from broker.verify import Verifier
from broker.verify import redis_keys as keys
from broker.verify.revocation_feed import RevocationFeed, RevocationUnavailable
from tests.helpers import claims, good_token, rejection, verifier
from tests.servers.processes import RedisServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

DEADLINE = 1.0  # SPEC 5: a revocation reaches every verifier within one second
FEED_THREAD = "capbroker-revocation-feed"


class World:
    """Real-clock tokens with this test's own ids, task, agent and key prefix, so tests on
    the shared server never see each other's revocations."""

    def __init__(self, url: str, signer: LocalSigner) -> None:
        self.url = url
        self.signer = signer
        self.now = int(time.time())
        self.prefix = f"feedtest-{uuid.uuid4().hex[:8]}:"
        self.task = f"task-{uuid.uuid4().hex}"
        self.agent = f"agent-{uuid.uuid4().hex[:12]}"
        self.serial = 0

    def jti(self) -> str:
        self.serial += 1
        return f"{uuid.uuid4().hex[:14]}{self.serial:08d}"

    def token(self, *, jti: str | None = None, task: str | None = None, iat: int | None = None, **kw: object) -> str:
        return good_token(
            self.signer,
            jti=jti or self.jti(),
            task=task or self.task,
            agent=kw.pop("agent", self.agent),
            now=self.now if iat is None else iat,
            ttl=300,
            **kw,
        )

    def state(self, action: Callable[[RedisState], Awaitable[None]]) -> None:
        async def body() -> None:
            state = RedisState.from_url(self.url, prefix=self.prefix)
            try:
                await action(state)
            finally:
                await state.aclose()

        asyncio.run(body())

    def feed(self, **kw: object) -> RevocationFeed:
        feed = RevocationFeed(self.url, prefix=self.prefix, **kw)  # type: ignore[arg-type]
        assert feed.wait_ready(5.0), feed.last_error
        return feed


@pytest.fixture
def feeds() -> Iterator[list[RevocationFeed]]:
    """Feeds a test builds; closed after it."""
    made: list[RevocationFeed] = []
    yield made
    for feed in made:
        feed.close()


def with_feed(world: World, ring: KeyRing, feeds: list[RevocationFeed], **kw: object) -> Verifier:
    feed = world.feed(**kw)
    feeds.append(feed)
    return verifier(ring, revocation=feed, clock=lambda: float(world.now + 10))


def within(seconds: float, condition: Callable[[], bool], *, since: float) -> float:
    """Poll until ``condition``; fail if it takes longer than ``seconds`` after ``since``."""
    while not condition():
        if time.monotonic() - since > seconds:
            pytest.fail(f"not within {seconds} s")
        time.sleep(0.002)
    return time.monotonic() - since


def remembered(v: Verifier, token: str) -> None:
    first = v.verify(token)
    assert v.verify(token) is first  # the verifier's memory answers from now on


# ------------------------------------------------------------------ revocations reach a verifier that saw the token


def test_revoke_token_reaches_a_verifier_that_remembered_the_token(
    redis_server: RedisServer, ring: KeyRing, ed_signer: LocalSigner, feeds: list[RevocationFeed]
) -> None:
    world = World(redis_server.url, ed_signer)
    jti = world.jti()
    token, other = world.token(jti=jti), world.token()
    v = with_feed(world, ring, feeds)
    remembered(v, token)
    remembered(v, other)
    world.state(lambda s: s.revoke_token(jti, world.now + 300))
    within(DEADLINE, lambda: rejection(v, token) == "revoked", since=time.monotonic())
    assert rejection(v, other) is None  # only that token


def test_revoke_task_reaches_a_verifier_that_remembered_its_tokens(
    redis_server: RedisServer, ring: KeyRing, ed_signer: LocalSigner, feeds: list[RevocationFeed]
) -> None:
    world = World(redis_server.url, ed_signer)
    first, second = world.token(), world.token()
    elsewhere = world.token(task=f"other-{uuid.uuid4().hex}")
    same_id_other_agent = world.token(agent=f"other-{uuid.uuid4().hex[:12]}")  # its own task
    v = with_feed(world, ring, feeds)
    for token in (first, second, elsewhere, same_id_other_agent):
        remembered(v, token)
    world.state(lambda s: s.revoke_task(world.task, world.agent, world.now))
    revoked_at = time.monotonic()
    within(DEADLINE, lambda: rejection(v, first) == "revoked", since=revoked_at)
    within(DEADLINE, lambda: rejection(v, second) == "revoked", since=revoked_at)
    assert rejection(v, elsewhere) is None
    assert rejection(v, same_id_other_agent) is None
    world.state(lambda s: s.revoke_task(world.task, None, world.now))  # an admin's, for every agent
    within(DEADLINE, lambda: rejection(v, same_id_other_agent) == "revoked", since=time.monotonic())


def test_the_agent_kill_switch_reaches_a_verifier_that_remembered_the_tokens(
    redis_server: RedisServer, ring: KeyRing, ed_signer: LocalSigner, feeds: list[RevocationFeed]
) -> None:
    world = World(redis_server.url, ed_signer)
    before, at = world.token(iat=world.now - 5), world.token(iat=world.now)
    after = world.token(iat=world.now + 1)
    v = with_feed(world, ring, feeds)
    for token in (before, at, after):
        remembered(v, token)
    world.state(lambda s: s.revoke_agent(world.agent, world.now))
    revoked_at = time.monotonic()
    within(DEADLINE, lambda: rejection(v, before) == "revoked", since=revoked_at)
    within(DEADLINE, lambda: rejection(v, at) == "revoked", since=revoked_at)
    assert rejection(v, after) is None  # issued after the cut-off


def test_the_kill_switch_on_an_agent_up_the_act_chain_reaches_a_remembered_delegated_token(
    redis_server: RedisServer, ring: KeyRing, ed_signer: LocalSigner, feeds: list[RevocationFeed]
) -> None:
    world = World(redis_server.url, ed_signer)
    root = f"root-{uuid.uuid4().hex[:12]}"
    delegated = world.token(agent="helper", act=Actor(f"agent:{world.agent}", Actor(f"agent:{root}")))
    v = with_feed(world, ring, feeds)
    remembered(v, delegated)
    world.state(lambda s: s.revoke_agent(root, world.now))  # two links up
    within(DEADLINE, lambda: rejection(v, delegated) == "revoked", since=time.monotonic())


def test_a_later_announcement_of_an_earlier_cut_off_does_not_lower_it(
    redis_server: RedisServer, ring: KeyRing, ed_signer: LocalSigner, feeds: list[RevocationFeed]
) -> None:
    world = World(redis_server.url, ed_signer)
    token = world.token(iat=world.now - 50)
    v = with_feed(world, ring, feeds)

    async def twice(s: RedisState) -> None:
        await s.revoke_agent(world.agent, world.now)
        await s.revoke_agent(world.agent, world.now - 100)  # Redis keeps the later cut-off; so must the feed

    world.state(twice)
    within(DEADLINE, lambda: rejection(v, token) == "revoked", since=time.monotonic())
    time.sleep(0.1)  # both announcements applied
    assert rejection(v, token) == "revoked"


def test_revocations_made_before_the_verifier_started_are_loaded(
    redis_server: RedisServer, ring: KeyRing, ed_signer: LocalSigner, feeds: list[RevocationFeed]
) -> None:
    world = World(redis_server.url, ed_signer)
    by_id, by_task_jti = world.jti(), world.jti()
    revoked_task = f"gone-{uuid.uuid4().hex}"
    killed = f"killed-{uuid.uuid4().hex[:12]}"
    tokens = {
        "token": world.token(jti=by_id),
        "task": world.token(jti=by_task_jti, task=revoked_task),
        "agent": world.token(agent=killed),
        "delegator": world.token(agent="helper", act=Actor(f"agent:{killed}")),
    }
    fine = world.token()

    async def revoke_all(s: RedisState) -> None:
        await s.revoke_token(by_id, world.now + 300)
        await s.revoke_task(revoked_task, world.agent, world.now)
        await s.revoke_agent(killed, world.now)

    world.state(revoke_all)
    v = with_feed(world, ring, feeds)  # subscribes and loads after all of them
    assert {what: rejection(v, token) for what, token in tokens.items()} == dict.fromkeys(tokens, "revoked")
    assert rejection(v, fine) is None


def test_a_redis_url_builds_a_feed_that_the_verifier_closes(
    redis_server: RedisServer, ring: KeyRing, ed_signer: LocalSigner
) -> None:
    world = World(redis_server.url, ed_signer)
    jti = world.jti()
    token = world.token(jti=jti)
    with Verifier(
        issuer="https://broker.test",
        audience="storage-gateway",
        jwks=ring.keyset,
        revocation=redis_server.url,  # the prefix derived from the issuer, as the broker derives it
        clock=lambda: float(world.now + 10),
    ) as v:
        remembered(v, token)
        on_default_prefix = World(redis_server.url, ed_signer)
        on_default_prefix.prefix = keys.default_prefix("https://broker.test")
        on_default_prefix.state(lambda s: s.revoke_token(jti, world.now + 300))
        within(DEADLINE, lambda: rejection(v, token) == "revoked", since=time.monotonic())
        assert any(t.name == FEED_THREAD for t in threading.enumerate())
    assert rejection(v, token) == "revocation_unavailable"  # closed: nothing vouches for the set any more


def test_the_redis_feed_preset_is_a_feed_on_the_brokers_prefix(
    redis_server: RedisServer, ring: KeyRing, ed_signer: LocalSigner
) -> None:
    """``Verifier.with_redis_feed``: keys from the JWKS URL, revocations from a feed."""
    world = World(redis_server.url, ed_signer)
    jti = world.jti()
    token = world.token(jti=jti)
    with Verifier.with_redis_feed(
        issuer="https://broker.test",
        audience="storage-gateway",
        jwks_url="http://127.0.0.1:1/.well-known/jwks.json",
        redis_url=redis_server.url,
        fetch=lambda _url: json.dumps(ring.keyset.to_jwks()).encode(),
        clock=lambda: float(world.now + 10),
    ) as v:
        assert rejection(v, token) is None
        on_default_prefix = World(redis_server.url, ed_signer)
        on_default_prefix.prefix = keys.default_prefix("https://broker.test")
        on_default_prefix.state(lambda s: s.revoke_token(jti, world.now + 300))
        within(DEADLINE, lambda: rejection(v, token) == "revoked", since=time.monotonic())
    assert rejection(v, token) == "revocation_unavailable"


def test_a_verification_costs_no_redis_round_trip(
    own_redis: RedisServer, ring: KeyRing, ed_signer: LocalSigner, feeds: list[RevocationFeed]
) -> None:
    world = World(own_redis.url, ed_signer)
    token, fresh = world.token(), [world.token() for _ in range(200)]
    v = with_feed(world, ring, feeds)
    client = Redis.from_url(own_redis.url, decode_responses=True)
    try:
        before = client.info("commandstats")
        for _ in range(5000):
            v.verify(token)
        for other in fresh:
            v.verify(other)
        after = client.info("commandstats")
    finally:
        client.close()
    spent = {name: stats["calls"] - before.get(name, {"calls": 0})["calls"] for name, stats in after.items()}
    # 5,200 verifications (200 first sights): only the feed's PINGs and this test's INFO
    assert {name for name, calls in spent.items() if calls} <= {"cmdstat_ping", "cmdstat_info"}


# ------------------------------------------------------------------ failing closed


def test_a_stopped_redis_fails_closed_and_the_feed_recovers_with_what_was_revoked_meanwhile(
    own_redis: RedisServer, ring: KeyRing, ed_signer: LocalSigner, feeds: list[RevocationFeed]
) -> None:
    world = World(own_redis.url, ed_signer)
    jti = world.jti()
    token, other = world.token(jti=jti), world.token()
    v = with_feed(world, ring, feeds)
    remembered(v, token)
    remembered(v, other)
    own_redis.stop()
    within(DEADLINE, lambda: rejection(v, token) == "revocation_unavailable", since=time.monotonic())
    assert rejection(v, other) == "revocation_unavailable"
    own_redis.start()  # an empty server on the same port: revoke before the feed is back
    revoked_at = time.monotonic()
    world.state(lambda s: s.revoke_token(jti, world.now + 300))
    within(5.0, lambda: rejection(v, other) is None, since=time.monotonic())
    # the feed may be back (and confirmed by a PING sent before the announcement) a moment
    # before it reads the announcement: SPEC 5 allows a second
    within(5.0, lambda: rejection(v, token) == "revoked", since=revoked_at)


def test_a_revocation_the_feed_missed_while_disconnected_is_loaded_when_it_reconnects(
    own_redis: RedisServer, ring: KeyRing, ed_signer: LocalSigner, feeds: list[RevocationFeed]
) -> None:
    """Deterministically the load path: the durable key is written with no announcement,
    as if the announcement had been sent while the feed was away."""
    world = World(own_redis.url, ed_signer)
    jti = world.jti()
    token = world.token(jti=jti)
    v = with_feed(world, ring, feeds)
    remembered(v, token)
    client = Redis.from_url(own_redis.url, decode_responses=True)
    try:
        client.set(keys.revoked_token(world.prefix, jti), "1", exat=retention.token_revocation_expiry(world.now + 300))
        time.sleep(0.3)
        assert rejection(v, token) is None  # not announced: the feed cannot know yet
        assert client.client_kill_filter(_type="pubsub") == 1  # the feed's connection
    finally:
        client.close()
    within(2.0, lambda: rejection(v, token) == "revoked", since=time.monotonic())


def test_an_announcement_the_feed_cannot_read_makes_it_reload(
    own_redis: RedisServer, ring: KeyRing, ed_signer: LocalSigner, feeds: list[RevocationFeed]
) -> None:
    world = World(own_redis.url, ed_signer)
    jti = world.jti()
    token = world.token(jti=jti)
    v = with_feed(world, ring, feeds)
    remembered(v, token)
    client = Redis.from_url(own_redis.url, decode_responses=True)
    try:
        client.set(keys.revoked_token(world.prefix, jti), "1", exat=retention.token_revocation_expiry(world.now + 300))
        client.publish(keys.revocation_channel(world.prefix), '{"kind":"lease","id":"x","value":1}')
    finally:
        client.close()
    within(2.0, lambda: rejection(v, token) == "revoked", since=time.monotonic())


def test_a_revocation_key_of_an_unknown_family_keeps_the_feed_down_until_it_is_gone(
    own_redis: RedisServer, ed_signer: LocalSigner
) -> None:
    world = World(own_redis.url, ed_signer)
    client = Redis.from_url(own_redis.url, decode_responses=True)
    feed = None
    try:
        client.set(f"{world.prefix}rev:signing-key:k1", "1", ex=60)  # a kind this verifier cannot apply
        feed = RevocationFeed(own_redis.url, prefix=world.prefix)
        assert not feed.wait_ready(0.5)
        assert feed.last_error == "FeedProtocolError"
        client.delete(f"{world.prefix}rev:signing-key:k1")
        assert feed.wait_ready(3.0)
    finally:
        client.close()
        if feed is not None:
            feed.close()


def test_a_paused_redis_fails_closed_within_the_staleness_bound(
    own_redis: RedisServer, ring: KeyRing, ed_signer: LocalSigner, feeds: list[RevocationFeed]
) -> None:
    world = World(own_redis.url, ed_signer)
    token = world.token()
    v = with_feed(world, ring, feeds)
    remembered(v, token)
    own_redis.pause()
    paused_at = time.monotonic()
    try:
        # the last PING answered was sent before the pause, so by 1 s after it every check fails
        took = within(DEADLINE + 0.1, lambda: rejection(v, token) == "revocation_unavailable", since=paused_at)
    finally:
        own_redis.resume()
    assert took > 0.5  # it did not fail for another reason: it served until its bound ran out
    within(5.0, lambda: rejection(v, token) is None, since=time.monotonic())


def test_nothing_is_answered_before_the_first_load(ring: KeyRing, ed_signer: LocalSigner) -> None:
    feed = RevocationFeed(
        f"redis://127.0.0.1:{free_port()}/0", prefix="capbroker:", timeout=0.2
    )  # nobody listens there
    try:
        assert not feed.wait_ready(0.3)
        assert feed.last_error == "ConnectionError"
        with pytest.raises(TokenRejected) as e:
            verifier(ring, revocation=feed).verify(good_token(ed_signer))
        assert e.value.code == "revocation_unavailable"
    finally:
        feed.close()


# ------------------------------------------------------------------ bounded memory


def test_entries_expire_when_no_acceptable_token_can_need_them(
    redis_server: RedisServer, ed_signer: LocalSigner
) -> None:
    world = World(redis_server.url, ed_signer)
    now = [float(world.now)]
    feed = world.feed(clock=lambda: now[0], purge_every=0.02)
    try:
        exp = world.now + 300

        async def revoke_all(s: RedisState) -> None:
            await s.revoke_token("expiring-token-000001", exp)
            await s.revoke_task("expiring-task", "expiring-agent", world.now)
            await s.revoke_agent("expiring-agent", world.now)

        world.state(revoke_all)
        within(DEADLINE, lambda: len(feed) == 3, since=time.monotonic())

        def at(seconds: float) -> int:
            """Entries left once the feed has purged twice with its clock at ``seconds``."""
            now[0] = seconds
            purges = feed._state.purges
            within(DEADLINE, lambda: feed._state.purges >= purges + 2, since=time.monotonic())
            return len(feed)

        assert at(exp + REVOCATION_GRACE - 1) == 3
        assert at(exp + REVOCATION_GRACE + 1) == 2  # the token's entry: its exp plus the grace
        assert at(world.now + MAX_TOKEN_TTL + REVOCATION_GRACE - 1) == 2
        assert at(world.now + MAX_TOKEN_TTL + REVOCATION_GRACE + 1) == 0  # the task's and the agent's
        revoked = claims(jti="expiring-token-000001", task="expiring-task", agent="expiring-agent")
        assert not feed.is_revoked(revoked)  # (every token they applied to has expired)
    finally:
        feed.close()


def test_the_feed_keeps_entries_as_long_as_the_broker_keeps_its_keys() -> None:
    """The feed and the broker's retention read one lifetime and one grace
    (``broker/capability/lifetime.py``); the feed's expiries are checked above."""
    assert retention.token_revocation_expiry(1000) == 1000 + REVOCATION_GRACE
    assert retention.task_revocation_expiry(1000) == 1000 + MAX_TOKEN_TTL + REVOCATION_GRACE
    assert retention.agent_cutoff_expiry(1000) == 1000 + MAX_TOKEN_TTL + REVOCATION_GRACE


def test_a_feed_nobody_holds_stops_its_thread(redis_server: RedisServer, ed_signer: LocalSigner) -> None:
    def running() -> int:
        return sum(t.name == FEED_THREAD for t in threading.enumerate())

    before = running()
    feed = World(redis_server.url, ed_signer).feed()
    assert running() == before + 1
    del feed
    gc.collect()
    within(2.0, lambda: running() == before, since=time.monotonic())


def _child_sees_revocation(feed: RevocationFeed, jti: str, ready: Any, go: Any, answer: Any) -> None:
    """In a forked child: the inherited feed comes up again and keeps receiving."""
    ready.send(feed.wait_ready(5.0))
    go.recv()
    revoked = claims(jti=jti)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            if feed.is_revoked(revoked):
                answer.send("revoked")
                return
        except RevocationUnavailable:
            pass
        time.sleep(0.01)
    answer.send(f"not seen ({feed.last_error})")


def test_a_forked_worker_restarts_the_feed_it_inherited(
    own_redis: RedisServer, ed_signer: LocalSigner, feeds: list[RevocationFeed]
) -> None:
    world = World(own_redis.url, ed_signer)
    feed = world.feed()
    feeds.append(feed)
    jti = world.jti()
    ctx = multiprocessing.get_context("fork")  # what a pre-loading worker server does
    ready_r, ready_w = ctx.Pipe(duplex=False)
    go_r, go_w = ctx.Pipe(duplex=False)
    answer_r, answer_w = ctx.Pipe(duplex=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # forking with threads: that is the point
        child = ctx.Process(target=_child_sees_revocation, args=(feed, jti, ready_w, go_r, answer_w), daemon=True)
        child.start()
    try:
        assert ready_r.poll(10.0)
        assert ready_r.recv() is True
        time.sleep(1.2)  # past the staleness bound of anything the child inherited
        world.state(lambda s: s.revoke_token(jti, world.now + 300))
        go_w.send("go")
        assert answer_r.poll(10.0)
        assert answer_r.recv() == "revoked"
    finally:
        child.join(5.0)
        if child.is_alive():
            child.kill()
