"""Redis Sentinel and durable revocation (issue 18; SPEC 5, 10), on real processes: a
Redis primary, its replica, a Sentinel watching them, OpenBao and `broker serve` whose
``redis_url`` is ``redis+sentinel://``.

Redis replication is asynchronous: a revocation the primary acknowledged and then lost in
a crash, before its replica had it, would be gone after the failover, and the revoked
token would verify again. With replicas present the broker acknowledges a revocation only
once ``WAIT`` says a replica holds it; so:

- while the replica cannot confirm (paused), a revocation is answered 503 within the
  backend timeout (plus a margin), never 200;
- a revocation answered 200, the primary killed at once (SIGKILL) and the replica promoted
  by Sentinel: the revoked token is still rejected by introspection, by a fresh verifier
  and by a verifier that was running through the failover (its feed follows Sentinel).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.verify import Verifier
from tests.helpers import rejection
from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.processes import BaoServer, RedisServer, SentinelServer
from tests.servers.vault_setup import setup_transit

pytestmark = [
    pytest.mark.integration,
    pytest.mark.ha,
    pytest.mark.enable_socket,
    pytest.mark.allow_hosts(["127.0.0.1"]),
]

KEY = "sentinel"
BACKEND_TIMEOUT = 0.8  # BrokerProcess's backend_timeout
FAILOVER = 30.0  # generous bound for Sentinel to promote the replica on a loaded machine


@dataclass
class Cluster:
    primary: RedisServer
    replica: RedisServer
    sentinel: SentinelServer
    broker: BrokerProcess


@pytest.fixture
def cluster(tmp_path: Path, bao_server: BaoServer) -> Iterator[Cluster]:
    primary = RedisServer(tmp_path / "primary").start()
    replica = RedisServer(tmp_path / "replica", args=("--replicaof", "127.0.0.1", str(primary.port))).start()
    sentinel = SentinelServer(tmp_path / "sentinel", primary).start()
    broker = BrokerProcess(
        tmp_path / "broker",
        PolicyDir.create(tmp_path / "policy"),
        sentinel.url,
        bao_server.addr,
        setup_transit(bao_server, key=KEY),
        transit_key=KEY,
    )
    try:
        within(20.0, lambda: replica_in_sync(primary))
        broker.start()
        yield Cluster(primary, replica, sentinel, broker)
    finally:
        broker.stop()
        for server in (sentinel, replica, primary):
            server.stop()


def replica_in_sync(primary: RedisServer) -> bool:
    import redis

    with redis.Redis.from_url(primary.url, decode_responses=True) as client:
        info = client.info("replication")
    replica = info.get("slave0") or {}
    return int(info.get("connected_slaves", 0)) == 1 and isinstance(replica, dict) and replica.get("state") == "online"


def within(seconds: float, condition: Callable[[], bool]) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"not within {seconds}s"
        time.sleep(0.05)
    return time.monotonic() - started


def verifier(c: Cluster) -> Verifier:
    return Verifier(
        issuer=c.broker.issuer,
        audience="git-gateway",
        jwks_url=f"{c.broker.url}/.well-known/jwks.json",
        revocation=c.sentinel.url,
    )


def test_a_revocation_is_not_acknowledged_while_no_replica_confirms_it(cluster: Cluster) -> None:
    token = cluster.broker.token("sentinel-unconfirmed")
    cluster.replica.pause()
    try:
        started = time.monotonic()
        status, headers, body = cluster.broker.post("/v1/tasks/sentinel-unconfirmed/revoke", who="reviewer")
        took = time.monotonic() - started
    finally:
        cluster.replica.resume()
    assert (status, body["code"]) == (503, "backend_unavailable"), body
    assert "retry-after" in headers
    assert took < BACKEND_TIMEOUT + 1.0
    # confirmed once the replica is back: the caller's retry is acknowledged
    status, _, body = cluster.broker.post("/v1/tasks/sentinel-unconfirmed/revoke", who="reviewer")
    assert status == 200, body
    assert cluster.broker.introspected(token) is False


def test_an_acknowledged_revocation_survives_the_primary_dying_at_once(cluster: Cluster) -> None:
    token = cluster.broker.token("sentinel-failover")
    bystander = cluster.broker.token("sentinel-bystander")
    with verifier(cluster) as running:
        assert rejection(running, token) is None
        status, _, body = cluster.broker.post("/v1/tasks/sentinel-failover/revoke", who="reviewer")
        assert status == 200, body
        assert cluster.primary.proc is not None
        cluster.primary.proc.kill()  # SIGKILL right after the acknowledgement: nothing more replicates
        cluster.primary.proc.wait(10)
        old = cluster.primary.port
        within(FAILOVER, lambda: cluster.sentinel.master_port() == cluster.replica.port)
        assert old != cluster.replica.port

        within(FAILOVER, lambda: cluster.broker.introspected(bystander) is True)  # the broker follows
        assert cluster.broker.introspected(token) is False
        within(FAILOVER, lambda: rejection(running, bystander) is None)  # the running feed follows
        assert rejection(running, token) == "revoked"
        with verifier(cluster) as fresh:
            assert rejection(fresh, token) == "revoked"
            assert rejection(fresh, bystander) is None
        status, _, body = cluster.broker.mint("sentinel-after", ["widgets-read"])
        assert status == 201, body  # the promoted primary (no replica now) takes writes again
