"""A real Redis Cluster on loopback: three primaries (``redis-server --cluster-enabled yes``),
no replicas, the 16384 slots split in three and the nodes introduced to one another
(``CLUSTER ADDSLOTSRANGE`` and ``CLUSTER MEET``, as ``redis-cli --cluster create`` does).

Each node is a ``RedisServer`` in its own directory (its ``nodes.conf`` is its own), so
one can be paused or stopped like any other test server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import redis as redis_py

from tests.servers.processes import RedisServer, free_port

SLOTS = 16384


def _node(port: int) -> redis_py.Redis:
    return redis_py.Redis(host="127.0.0.1", port=port, socket_timeout=5, decode_responses=True)


@dataclass
class RedisCluster:
    workdir: Path
    primaries: int = 3
    nodes: list[RedisServer] = field(default_factory=list)
    buses: list[int] = field(default_factory=list)  # each node's cluster bus port
    #: ``cluster-node-timeout``: how long a primary may be silent before its replica takes
    #: over; None keeps Redis's 15 s (the session cluster never fails over)
    node_timeout_ms: int | None = None

    @property
    def url(self) -> str:
        """The broker's ``redis_url``: every node, any of which gives the whole map."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def node_url(self) -> str:
        """A plain URL of one node (which a broker must refuse)."""
        return self.nodes[0].url

    def start(self) -> RedisCluster:
        for i in range(self.primaries):
            server, bus = self._node_server(self.workdir / f"node{i}")
            self.nodes.append(server)
            self.buses.append(bus)
        share = SLOTS // self.primaries
        for i, server in enumerate(self.nodes):
            last = SLOTS - 1 if i == self.primaries - 1 else (i + 1) * share - 1
            with _node(server.port) as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
        with _node(self.nodes[0].port) as first:
            for server, bus in zip(self.nodes[1:], self.buses[1:], strict=True):
                first.execute_command("CLUSTER", "MEET", "127.0.0.1", server.port, bus)
        self._wait_ok()
        return self

    def _wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node says the cluster is ok and knows every other node."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._node_ok(server.port) for server in self.nodes):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the Redis cluster did not form within {timeout}s")

    def _node_ok(self, port: int) -> bool:
        with _node(port) as client:
            info = client.execute_command("CLUSTER", "INFO")
            text = info if isinstance(info, str) else str(info)
            known = client.execute_command("CLUSTER", "NODES")
        return "cluster_state:ok" in text and str(known).count("connected") >= self.primaries

    def owner(self, slot: int) -> RedisServer:
        """The node that serves ``slot`` now."""
        for server in self.nodes:
            with _node(server.port) as client:
                for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if int(start) <= slot <= int(end):
                        return next(s for s in self.nodes if s.port == int(primary[1]))
        raise LookupError(slot)

    def slot_views(self, slot: int) -> dict[int, int | None]:
        """Which primary (by port) each node says serves ``slot`` (None: no answer)."""
        return {server.port: self.view_of(server.port, slot) for server in self.nodes}

    @staticmethod
    def view_of(port: int, slot: int) -> int | None:
        """The port of the primary that the node on ``port`` says serves ``slot``."""
        try:
            with _node(port) as client:
                ranges = client.execute_command("CLUSTER", "SLOTS")
        except redis_py.RedisError:
            return None
        owners = [int(primary[1]) for start, end, primary, *_ in ranges if int(start) <= slot <= int(end)]
        return owners[0] if owners else None

    def move_slot(self, slot: int, to: RedisServer) -> None:
        """Reshard one slot, keys and all, as ``redis-cli --cluster reshard`` does it:
        IMPORTING on the target, MIGRATING on the source, MIGRATE every key, then
        ``SETSLOT NODE`` on both (and the others learn it from the cluster bus)."""
        source = self.owner(slot)
        if source.port == to.port:
            return
        with _node(source.port) as src, _node(to.port) as dst:
            source_id = src.execute_command("CLUSTER", "MYID")
            target_id = dst.execute_command("CLUSTER", "MYID")
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", *keys)
            dst.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        for server in self.nodes:
            if server.port not in (source.port, to.port):
                with _node(server.port) as other:
                    other.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def _node_server(self, workdir: Path) -> tuple[RedisServer, int]:
        bus = free_port()  # the cluster bus: its own free port (not port + 10000, maybe past 65535)
        server = RedisServer(
            workdir,
            args=(
                *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                *("--cluster-port", str(bus), "--appendonly", "yes"),
                *(("--cluster-node-timeout", str(self.node_timeout_ms)) if self.node_timeout_ms else ()),
            ),
        )
        return server.start(), bus

    def add_replica(self, workdir: Path, *, of: RedisServer) -> RedisServer:
        """A new node that replicates the primary ``of``, once it is in sync."""
        replica, bus = self._node_server(workdir)
        with _node(of.port) as primary:
            primary_id = primary.execute_command("CLUSTER", "MYID")
            primary.execute_command("CLUSTER", "MEET", "127.0.0.1", replica.port, bus)
        deadline = time.monotonic() + 30.0
        with _node(replica.port) as client:
            while True:  # REPLICATE needs the node to know its primary first (gossip)
                try:
                    client.execute_command("CLUSTER", "REPLICATE", primary_id)
                    break
                except redis_py.ResponseError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        with _node(of.port) as primary:
            while primary.info("replication").get("slave0", {}).get("state") != "online":
                if time.monotonic() > deadline:
                    raise RuntimeError("the replica did not sync within 30s")
                time.sleep(0.1)
        return replica

    def remove(self, server: RedisServer) -> None:
        """Stop a node added by ``add_replica`` and make the others forget it."""
        with _node(server.port) as client:
            node_id = client.execute_command("CLUSTER", "MYID")
        server.stop()
        for node in self.nodes:
            with _node(node.port) as client:
                client.execute_command("CLUSTER", "FORGET", node_id)

    def flush(self) -> None:
        for server in self.nodes:
            with _node(server.port) as client:
                client.flushall()

    def stop(self) -> None:
        for server in self.nodes:
            server.stop()
