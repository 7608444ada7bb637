"""OpenBao HA: the broker on a 3-node Raft cluster whose leader is killed under load."""

from __future__ import annotations

import pytest

from tests.servers.bao_cluster import BaoCluster
from tests.servers.vault_setup import setup_transit

pytestmark = [
    pytest.mark.integration,
    pytest.mark.ha,
    pytest.mark.enable_socket,
    pytest.mark.allow_hosts(["127.0.0.1"]),
]


def test_the_cluster_elects_a_new_leader_when_the_active_node_is_killed(bao_raft: BaoCluster) -> None:
    token = setup_transit(bao_raft)
    assert token
    old = bao_raft.leader()
    try:
        bao_raft.kill(old)
        new = bao_raft.leader()
        assert new is not old
    finally:
        bao_raft.heal()
    assert len(bao_raft.addrs.split(",")) == 3
