"""Redis Cluster (``redis+cluster://``), on a real 3-primary cluster started by the session:

- a verifier's revocation feed hears a revocation within its second (sharded pub/sub on
  the primary of the state slot), and follows that slot when it moves to another primary;
- the synchronous reader (one ``MGET`` per check) reads the same tagged keys;
- a durable revocation's ``WAIT`` is asked of the state slot's primary alone: a replica of
  another primary does not count;
- the audit archiver moves and trims the stream in its own slot;
- ``broker serve`` end to end: mint, revoke, introspect, ``broker audit verify``;
- a plain ``redis://`` URL that reaches a cluster node: ``broker serve`` refuses to start
  and a verifier's feed stays down (failing closed).

The state contract tests run on the same cluster (``test_state_contract.py``, ``cluster``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis as redis_py
from redis.crc import key_slot

from broker.backends.audit_archive import ArchiveDir
from broker.backends.audit_archiver import AuditArchiver
from broker.backends.redis_state import RedisState
from broker.capability import Budget
from broker.errors import BackendUnavailable, BudgetExhausted
from broker.gateway.budgets import RedisLedger
from broker.token import Actor
from broker.verify import redis_keys as keys
from broker.verify.redis_revocation import RedisRevocation
from broker.verify.revocation_feed import RevocationFeed, RevocationUnavailable
from tests.helpers import claims
from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.processes import BaoServer, free_port
from tests.servers.redis_cluster import RedisCluster
from tests.servers.vault_setup import setup_transit

pytestmark = [
    pytest.mark.integration,
    pytest.mark.ha,
    pytest.mark.enable_socket,
    pytest.mark.allow_hosts(["127.0.0.1"]),
]

BOUND = 1.0  # a revocation reaches every verifier within a second (docs/operations.md)


def within(seconds: float, condition: Callable[[], bool], state: Callable[[], object] = lambda: "") -> float:
    """Poll ``condition`` until it holds; fail after ``seconds``, saying what ``state`` says."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"not within {seconds}s {state()}"
        time.sleep(0.01)
    return time.monotonic() - started


def feed_state(feed: RevocationFeed) -> str:
    return f"(feed ready={feed.ready}, last error={feed.last_error}, {len(feed)} revocations)"


def revoked(feed: RevocationFeed, jti: str) -> bool:
    """The feed's answer for a token ``jti``; False while it cannot answer (catching up)."""
    try:
        return feed.is_revoked(claims(jti=jti))
    except RevocationUnavailable:
        return False


def prefix() -> str:
    return f"cl:{uuid.uuid4().hex[:12]}:"


def revoke(url: str, key_prefix: str, jti: str, **options: object) -> None:
    async def body() -> None:
        store = RedisState.from_url(url, prefix=key_prefix, **options)  # type: ignore[arg-type]
        try:
            await store.revoke_token(jti, int(time.time()) + 300)
        finally:
            await store.aclose()

    asyncio.run(body())


def test_the_feed_hears_a_revocation_within_a_second(redis_cluster: RedisCluster) -> None:
    p = prefix()
    revoke(redis_cluster.url, p, "before")  # in the durable state, loaded at start
    feed = RevocationFeed(redis_cluster.url, prefix=p)
    try:
        assert feed.wait_ready(10.0)
        assert revoked(feed, "before")
        assert not revoked(feed, "after")
        revoke(redis_cluster.url, p, "after")
        acknowledged = time.monotonic()
        within(BOUND, lambda: revoked(feed, "after"))
        assert time.monotonic() - acknowledged < BOUND
    finally:
        feed.close()


def test_the_sync_reader_reads_the_tagged_keys_in_one_slot(redis_cluster: RedisCluster) -> None:
    p = prefix()
    reader = RedisRevocation(redis_cluster.url, prefix=p)
    now = int(time.time())
    delegated = claims(jti="delegated", agent="helper", act=Actor("agent:lead", Actor("agent:root")), now=now)
    try:
        assert not reader.is_revoked(delegated)  # token, task twice, three cut-offs: one MGET

        async def kill_root() -> None:
            store = RedisState.from_url(redis_cluster.url, prefix=p)
            try:
                await store.revoke_agent("root", delegated.iat)
            finally:
                await store.aclose()

        asyncio.run(kill_root())
        assert reader.is_revoked(delegated)  # by the cut-off of the agent at the top of the chain
        assert not reader.is_revoked(claims(jti="other", agent="helper", now=now))
    finally:
        reader.close()


def test_the_feed_follows_the_state_slot_to_another_primary(redis_cluster: RedisCluster) -> None:
    """A reshard moves the slot of the state tag (keys and all) while a feed listens: the
    old node drops the sharded subscription, and the feed starts again on the new owner."""
    p = prefix()
    slot = key_slot(keys.revocation_channel(keys.state_prefix(p, cluster=True)).encode())
    revoke(redis_cluster.url, p, "old")
    feed = RevocationFeed(redis_cluster.url, prefix=p)
    try:
        assert feed.wait_ready(10.0)
        source = redis_cluster.owner(slot)
        target = next(n for n in redis_cluster.nodes if n.port != source.port)
        redis_cluster.move_slot(slot, target)
        assert redis_cluster.owner(slot).port == target.port, redis_cluster.slot_views(slot)
        revoke(redis_cluster.url, p, "new")  # written on the new owner
        # reconnecting: a few back-offs, then its second; polled, as a loaded machine may
        # leave the feed a moment past its staleness bound (it then fails closed: False here)
        within(10.0, lambda: revoked(feed, "new"), lambda: (feed_state(feed), redis_cluster.slot_views(slot)))
        within(10.0, lambda: revoked(feed, "old"), lambda: feed_state(feed))  # moved with the slot
        assert feed.wait_ready(10.0), feed_state(feed)
    finally:
        feed.close()


def test_policy_announcements_reach_other_processes_on_the_cluster(redis_cluster: RedisCluster) -> None:
    p = prefix()

    async def body() -> None:
        listener = RedisState.from_url(redis_cluster.url, prefix=p)
        speaker = RedisState.from_url(redis_cluster.url, prefix=p)
        reloads = listener.policy_reloads("listener")
        try:
            heard = asyncio.ensure_future(anext(reloads))
            deadline = time.monotonic() + 10.0
            while not heard.done():  # announced until heard: the subscription is made in the generator
                assert time.monotonic() < deadline, "no announcement heard within 10s"
                await speaker.announce_policy_reload("speaker", "digest-1")
                await asyncio.wait([heard], timeout=0.2)
            assert await heard == "digest-1"  # the announcement carries the policy's digest
        finally:
            await reloads.aclose()
            await listener.aclose()
            await speaker.aclose()

    asyncio.run(body())


def test_wait_counts_only_the_replicas_of_the_state_slots_primary(tmp_path: Path, redis_cluster: RedisCluster) -> None:
    """A replica of another primary: redis-py, left to itself, would send WAIT to every
    primary and add the answers, acknowledging a revocation no replica of its primary holds."""
    p = prefix()
    slot = key_slot(keys.revocation_channel(keys.state_prefix(p, cluster=True)).encode())
    state_primary = redis_cluster.owner(slot)
    other = next(n for n in redis_cluster.nodes if n.port != state_primary.port)
    replica = redis_cluster.add_replica(tmp_path / "replica", of=other)
    try:
        with pytest.raises(BackendUnavailable, match="reached 0 of 1 replicas"):
            revoke(redis_cluster.url, p, "unconfirmed", wait_replicas=1, timeout=0.5)
        redis_cluster.remove(replica)
        replica = redis_cluster.add_replica(tmp_path / "replica2", of=state_primary)
        revoke(redis_cluster.url, p, "confirmed", wait_replicas=1)  # its own replica: acknowledged
        revoke(redis_cluster.url, p, "auto")  # auto: the state primary has a replica, so WAIT 1
    finally:
        redis_cluster.remove(replica)


def test_the_audit_archiver_archives_and_trims_the_stream_on_the_cluster(
    tmp_path: Path, redis_cluster: RedisCluster
) -> None:
    p = prefix()
    stream = keys.cluster_stream(keys.audit_stream(p), cluster=True)

    async def body() -> list[str]:
        store = RedisState.from_url(redis_cluster.url, prefix=p, stream=stream)
        (tmp_path / "archive").mkdir()
        archiver = AuditArchiver.connect(
            redis_cluster.url, ArchiveDir(tmp_path / "archive"), stream=stream, tail_events=5, segment_events=10
        )
        try:
            for i in range(30):
                await store.append_audit({"type": "test", "n": i})
            while await archiver.step():
                pass
            return [e.event["type"] async for e in store.audit_events()]
        finally:
            await archiver.aclose()
            await store.aclose()

    left = asyncio.run(body())
    assert 5 <= len(left) < 15  # the tail stays; whole segments moved out
    assert len(list((tmp_path / "archive").iterdir())) >= 2


def test_gateway_budgets_count_across_ledgers_on_the_cluster(redis_cluster: RedisCluster) -> None:
    p = prefix()
    budget = Budget(requests=2, bytes=1000)

    async def body() -> None:
        a, b = RedisLedger(redis_cluster.url, p), RedisLedger(redis_cluster.url, p)
        exp = int(time.time()) + 300
        try:
            await a.begin("jti-1", exp, budget)
            await b.begin("jti-1", exp, budget)
            with pytest.raises(BudgetExhausted):
                await a.begin("jti-1", exp, budget)
            assert await b.add_bytes("jti-2", exp, 300) == 300
            assert await a.add_bytes("jti-2", exp, 300) == 600
        finally:
            await a.close()
            await b.close()

    asyncio.run(body())


# ---------------------------------------------------------------- broker serve


def broker_cli(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("broker", path=str(Path(sys.executable).parent)) or "broker"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "VAULT_", "BAO_"))}
    return subprocess.run([binary, *args], env=clean, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def broker(tmp_path: Path, redis_cluster: RedisCluster, bao_server: BaoServer) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path / "broker",
        PolicyDir.create(tmp_path / "policy"),
        redis_cluster.url,
        bao_server.addr,
        setup_transit(bao_server, key="cluster"),
        transit_key="cluster",
        redis_prefix=prefix(),
        redis_durability="checked",  # the cluster's nodes keep an AOF
    )
    try:
        yield process.start()
    finally:
        process.stop()


def test_broker_serve_on_the_cluster_mints_revokes_introspects_and_audits(
    broker: BrokerProcess, redis_cluster: RedisCluster
) -> None:
    status, _, body = broker.mint("cluster-task", ["widgets-read"])
    assert status == 201, body
    token = body["tokens"][0]["token"]
    assert broker.post("/v1/introspect", {"token": token}, who="git-gateway")[2]["active"] is True
    status, _, body = broker.post("/v1/tasks/cluster-task/revoke", who="reviewer")
    assert status == 200, body
    within(BOUND, lambda: broker.post("/v1/introspect", {"token": token}, who="git-gateway")[2]["active"] is False)
    assert broker.mint("cluster-task", ["widgets-read"])[0] == 403  # the revoked task takes no new token
    # the keys are where the docs say: the task under the state tag, the chain in its own slot
    with redis_py.Redis(host="127.0.0.1", port=redis_cluster.nodes[0].port) as any_node:
        state = keys.state_prefix(broker.key_prefix, cluster=True)
        assert any_node.cluster("keyslot", keys.revoked_task(state, "*/cluster-task")) == key_slot(state.encode())
    result = broker_cli("audit", "verify", "--config", str(broker.config_path()))
    assert result.returncode == 0, result.stdout + result.stderr


def test_broker_serve_refuses_a_plain_url_to_a_cluster_node(
    tmp_path: Path, redis_cluster: RedisCluster, bao_server: BaoServer
) -> None:
    process = BrokerProcess(
        tmp_path / "broker",
        PolicyDir.create(tmp_path / "policy"),
        redis_cluster.node_url,
        bao_server.addr,
        setup_transit(bao_server, key="cluster-plain"),
        transit_key="cluster-plain",
        port=free_port(),
        redis_prefix=prefix(),
    )
    with pytest.raises(RuntimeError, match="broker exited"):
        process.start()
    assert "redis+cluster://" in process.log_path.read_text()
    assert "Redis Cluster node" in process.log_path.read_text()


def test_a_feed_on_a_plain_url_to_a_cluster_node_stays_down(redis_cluster: RedisCluster) -> None:
    feed = RevocationFeed(redis_cluster.node_url, prefix=prefix())
    try:
        assert not feed.wait_ready(1.5)
        with pytest.raises(RevocationUnavailable):
            feed.is_revoked(claims())
        assert feed.last_error == "FeedProtocolError"
    finally:
        feed.close()
