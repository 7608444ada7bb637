"""A Redis Cluster primary lost right after it acknowledged a revocation: its replica takes
over (the cluster's own failover, ``cluster-node-timeout`` 2 s) and nothing is lost.

Real processes: a 3-primary cluster of its own (this test kills a node, so never the
session's), a replica of the state slot's primary, OpenBao and ``broker serve`` on
``redis+cluster://``. With a replica present the broker acknowledges a revocation only
once ``WAIT``, sent to the state slot's primary, says the replica holds it
(``redis_wait_replicas`` auto); so after a SIGKILL at once and the promotion, the revoked
token is still rejected by introspection, by a fresh verifier, and by a verifier whose
feed was listening on the dead primary (it starts again on the promoted one).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.crc import key_slot

from broker.verify import Verifier
from broker.verify import redis_keys as keys
from tests.helpers import rejection
from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.processes import BaoServer, RedisServer
from tests.servers.redis_cluster import RedisCluster
from tests.servers.vault_setup import setup_transit

pytestmark = [
    pytest.mark.integration,
    pytest.mark.ha,
    pytest.mark.enable_socket,
    pytest.mark.allow_hosts(["127.0.0.1"]),
]

KEY = "cluster-failover"
FAILOVER = 30.0  # generous: the replica's election takes node-timeout plus about a second


@dataclass
class Stack:
    cluster: RedisCluster
    primary: RedisServer  # the state slot's primary
    replica: RedisServer
    slot: int
    broker: BrokerProcess


@pytest.fixture
def stack(tmp_path: Path, bao_server: BaoServer) -> Iterator[Stack]:
    cluster = RedisCluster(tmp_path / "cluster", node_timeout_ms=2000).start()
    replica: RedisServer | None = None
    broker = BrokerProcess(
        tmp_path / "broker",
        PolicyDir.create(tmp_path / "policy"),
        cluster.url,
        bao_server.addr,
        setup_transit(bao_server, key=KEY),
        transit_key=KEY,
        redis_prefix=f"clf:{uuid.uuid4().hex[:12]}:",
        redis_durability="checked",  # the nodes keep an AOF
    )
    try:
        slot = key_slot(keys.state_prefix(broker.key_prefix, cluster=True).encode())
        primary = cluster.owner(slot)
        replica = cluster.add_replica(tmp_path / "replica", of=primary)
        broker.start()  # after the replica is in sync: WAIT 1 from the first revocation
        yield Stack(cluster, primary, replica, slot, broker)
    finally:
        broker.stop()
        if replica is not None:
            replica.stop()
        cluster.stop()


def within(seconds: float, condition: Callable[[], bool], state: Callable[[], object] = lambda: "") -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"not within {seconds}s {state()}"
        time.sleep(0.05)
    return time.monotonic() - started


def settled(answer: Callable[[], object], unsettled: object) -> object:
    """The first answer other than ``unsettled`` (a 503, ``revocation_unavailable``: failing
    closed while a client catches up after the failover), within ``FAILOVER``."""
    started = time.monotonic()
    while (value := answer()) == unsettled:
        assert time.monotonic() - started < FAILOVER, f"still {unsettled!r} after {FAILOVER}s"
        time.sleep(0.05)
    return value


def verifier(s: Stack) -> Verifier:
    return Verifier(
        issuer=s.broker.issuer,
        audience="git-gateway",
        jwks_url=f"{s.broker.url}/.well-known/jwks.json",
        revocation=s.cluster.url,
        redis_prefix=s.broker.redis_prefix,
    )


def promoted(s: Stack) -> bool:
    """The replica serves the state slot, in its own view and in every live primary's."""
    views = s.cluster.slot_views(s.slot)
    live = [port for port in views if port != s.primary.port]
    replica_view = RedisCluster.view_of(s.replica.port, s.slot)
    return replica_view == s.replica.port and all(views[port] == s.replica.port for port in live)


def test_an_acknowledged_revocation_survives_the_cluster_primary_dying_at_once(stack: Stack) -> None:
    token = stack.broker.token("cluster-failover")
    bystander = stack.broker.token("cluster-bystander")
    with verifier(stack) as running:
        assert rejection(running, token) is None
        status, _, body = stack.broker.post("/v1/tasks/cluster-failover/revoke", who="reviewer")
        assert status == 200, body
        assert stack.primary.proc is not None
        stack.primary.proc.kill()  # SIGKILL right after the acknowledgement: nothing more replicates
        stack.primary.proc.wait(10)
        within(FAILOVER, lambda: promoted(stack), lambda: stack.cluster.slot_views(stack.slot))

        within(FAILOVER, lambda: stack.broker.introspected(bystander) is True)  # the broker follows
        assert settled(lambda: stack.broker.introspected(token), None) is False
        within(FAILOVER, lambda: rejection(running, bystander) is None)  # the running feed follows
        assert settled(lambda: rejection(running, token), "revocation_unavailable") == "revoked"
        with verifier(stack) as fresh:
            assert settled(lambda: rejection(fresh, token), "revocation_unavailable") == "revoked"
            assert settled(lambda: rejection(fresh, bystander), "revocation_unavailable") is None
        # the promoted primary (no replica now) takes writes again: after at most a 503 or
        # two while the broker reads the slot map again (before the mend, 503 for good)
        tries = iter(range(10_000))
        assert settled(lambda: stack.broker.mint(f"cluster-after-{next(tries)}", ["widgets-read"])[0], 503) == 201
