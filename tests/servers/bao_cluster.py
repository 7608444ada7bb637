"""A real 3-node OpenBao cluster on integrated Raft storage, on loopback, for the HA suites.

Each node is ``bao server`` with ``storage "raft"`` (``performance_multiplier = 1``: an
election within a few seconds), its own API and cluster ports and data directory. Node 0
is initialised (Shamir 1 of 1) and unsealed; the others join it
(``sys/storage/raft/join``) and are unsealed with the same key. Autopilot promotes a
joined node to a voter after ``STABILIZATION`` (checked every second here, not every 10 s);
``start`` waits until all three vote, so killing any one leaves a quorum.

A test kills a node (``kill``: SIGKILL, as a crash) and brings it back (``restart``: the
same ports and data, unsealed again; it rejoins as a follower). ``addrs`` is the broker's
``vault_addr`` (every node, comma-separated); ``addr`` is the active node's address, for
admin set-up (``tests.servers.vault_setup``), which talks to one node.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers.processes import bao_binary, free_port

#: how long autopilot waits before a joined node votes (OpenBao's default is 10 s)
STABILIZATION = "1s"


def _http(method: str, url: str, body: object = None, token: str = "", timeout: float = 5.0) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Vault-Token"] = token
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        raw = answer.read()
    return json.loads(raw) if raw else {}


def _wait(predicate: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = predicate()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.05)
    raise RuntimeError(f"{what} not reached within {timeout}s")


@dataclass
class BaoNode:
    workdir: Path
    node_id: str
    port: int = 0
    cluster_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "bao.log"

    def start(self) -> BaoNode:
        self.port = self.port or free_port()
        self.cluster_port = self.cluster_port or free_port()
        data = self.workdir / "raft"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "bao.hcl"
        config.write_text(
            f'storage "raft" {{\n  path = "{data}"\n  node_id = "{self.node_id}"\n  performance_multiplier = 1\n'
            '  autopilot_reconcile_interval = "1s"\n  autopilot_update_interval = "500ms"\n}\n'
            f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n'
            f'  cluster_address = "127.0.0.1:{self.cluster_port}"\n  tls_disable = true\n}}\n'
            f'api_addr = "{self.addr}"\ncluster_addr = "https://127.0.0.1:{self.cluster_port}"\n'
            'log_level = "warn"\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env["HOME"] = str(self.workdir)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [bao_binary(), "server", f"-config={config}"], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        _wait(lambda: self.health() is not None, f"bao node {self.node_id} listening")
        return self

    def health(self) -> int | None:
        """``sys/health``'s status: 200 active, 429 standby, 503 sealed, 501 not initialised;
        None if the node does not answer."""
        try:
            with urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=0.5) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    def unseal(self, key: str) -> None:
        _http("PUT", f"{self.addr}/v1/sys/unseal", {"key": key})

    def kill(self) -> None:
        """SIGKILL: the node dies as in a crash, with no step-down."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGCONT)
                self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class BaoCluster:
    workdir: Path
    size: int = 3
    nodes: list[BaoNode] = field(default_factory=list)
    root_token: str = ""
    unseal_key: str = ""

    @property
    def addrs(self) -> str:
        """Every node, comma-separated: the broker's and the gateway's ``vault_addr``."""
        return ",".join(node.addr for node in self.nodes)

    @property
    def addr(self) -> str:
        """The active node's address (waiting for one): for admin set-up on one node."""
        return self.leader().addr

    def env(self) -> dict[str, str]:
        addr = self.addr
        return {**os.environ, "BAO_ADDR": addr, "BAO_TOKEN": self.root_token, "VAULT_ADDR": addr}

    def start(self) -> BaoCluster:
        self.nodes = [BaoNode(self.workdir / f"node{i}", f"node{i}").start() for i in range(self.size)]
        first = self.nodes[0]
        init = _http("PUT", f"{first.addr}/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1})
        self.root_token, self.unseal_key = init["root_token"], init["keys"][0]
        first.unseal(self.unseal_key)
        _wait(lambda: first.health() == 200, "node0 active")
        _http(
            "POST",
            f"{first.addr}/v1/sys/storage/raft/autopilot/configuration",
            {"server_stabilization_time": STABILIZATION},
            self.root_token,
        )
        for node in self.nodes[1:]:
            _http("POST", f"{node.addr}/v1/sys/storage/raft/join", {"leader_api_addr": first.addr})
            node.unseal(self.unseal_key)
        _wait(lambda: all(n.health() == 429 for n in self.nodes[1:]), "the other nodes standing by")
        _wait(lambda: self.voters() == self.size, f"{self.size} raft voters")
        return self

    def voters(self) -> int:
        """How many nodes vote in the Raft configuration now (asked of the leader)."""
        answer = _http("GET", f"{self.addr}/v1/sys/storage/raft/configuration", token=self.root_token)
        return sum(1 for server in answer["data"]["config"]["servers"] if server["voter"])

    def leader(self, timeout: float = 30.0) -> BaoNode:
        """The active node (waiting up to ``timeout`` for an election)."""
        found: BaoNode = _wait(
            lambda: next((n for n in self.nodes if n.running and n.health() == 200), None), "an active node", timeout
        )
        return found

    def kill(self, node: BaoNode) -> None:
        node.kill()

    def restart(self, node: BaoNode) -> BaoNode:
        """Start ``node`` again on its ports and data, unsealed: it rejoins as a follower."""
        node.stop()
        node.start()
        node.unseal(self.unseal_key)
        _wait(lambda: node.health() in (200, 429), f"{node.node_id} unsealed")
        return node

    def heal(self) -> None:
        """Every node running and unsealed again, and a leader: after a test that killed one."""
        for node in self.nodes:
            if not node.running:
                self.restart(node)
        self.leader()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
