"""Two ``broker serve`` processes on a 3-node OpenBao Raft cluster, for the leader-kill test
and bench (``tests/integration/test_bao_ha.py``, ``bench/bao_leader_kill.py``).

Set up as an operator would, on the cluster's active node: Transit and the broker's
least-privilege token (``tests.servers.vault_setup``), KV v2 at ``secret/``, and ``broker
vault sync`` run with the root token over ``vault_addr`` listing every node. Both brokers
list every node too: ``session`` signs with session keys endorsed by Transit, ``transit``
(``signing: transit``, its own issuer) signs every token in Transit. Agent ``ha-agent`` may
mint ``widgets-read`` (a signature only) and ``weather-api-key`` (a vault-kv credential:
a task token and its child, Vault writes) at any rate.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.service.credentials import new_client_secret, secret_sha256
from tests.servers.bao_cluster import BaoCluster
from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.leader_kill import Mint
from tests.servers.processes import RedisServer, free_port
from tests.servers.vault_setup import admin_client, setup_transit

AGENT = """\
agents:
  ha-agent:
    description: Mints under a leader kill (tests/servers/bao_ha_stack.py)
    identity:
      key:
        sha256: {sha}
    scopes: [widgets-read, weather-api-key]
    rate: 100000/h
"""


def broker_cli(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("broker", path=str(Path(sys.executable).parent)) or "broker"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "VAULT_", "BAO_"))}
    return subprocess.run(
        [binary, *args], env=clean | dict(env), capture_output=True, text=True, timeout=60, check=False
    )


@dataclass
class HaStack:
    bao: BaoCluster
    redis: RedisServer
    session: BrokerProcess
    transit: BrokerProcess
    started: list[BrokerProcess] = field(default_factory=list)

    @classmethod
    def start(cls, root: Path, bao: BaoCluster) -> HaStack:
        redis = RedisServer(root / "redis").start()
        token = setup_transit(bao)  # the broker's token: the shipped policy only
        admin = admin_client(bao)
        try:
            if "secret/" not in admin.sys.list_mounted_secrets_engines()["data"]:
                admin.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
        finally:
            admin.adapter.close()
        policy = PolicyDir.create(root / "policy")
        policy.keys["ha-agent"] = new_client_secret()
        (policy.path / "zz-ha.yaml").write_text(AGENT.format(sha=secret_sha256(policy.keys["ha-agent"])))
        session = BrokerProcess(root / "session", policy, redis.url, bao.addrs, token, port=free_port())
        transit = BrokerProcess(
            root / "transit",
            policy,
            redis.url,
            bao.addrs,
            token,
            issuer="http://127.0.0.1:8701",
            extra_env={"BROKER_SIGNING": "transit"},
        )
        stack = cls(bao, redis, session, transit)
        try:
            session.workdir.mkdir(parents=True, exist_ok=True)
            _sync(session.config_path(), bao.root_token)
            stack.started.append(session.start())
            stack.started.append(transit.start())
        except BaseException:
            stack.stop()
            raise
        return stack

    def mints(self, timeout: float) -> dict[str, Mint]:
        """The three kinds of mint, each a new task every time."""
        return {
            "session": _mint(self.session, "ha-s", ["widgets-read"], timeout),
            "transit": _mint(self.transit, "ha-t", ["widgets-read"], timeout),
            "vault-kv": _mint(self.session, "ha-kv", ["widgets-read", "weather-api-key"], timeout),
        }

    def stop(self) -> None:
        for broker in self.started:
            broker.stop()
        self.redis.stop()


def _sync(config: Path, admin_token: str) -> None:
    """``broker vault sync`` as the admin, over ``vault_addr`` listing every node."""
    synced = broker_cli("vault", "sync", "--config", str(config), env={"VAULT_TOKEN": admin_token})
    if synced.returncode != 0:
        raise RuntimeError(f"broker vault sync failed: {synced.stderr}")


def _mint(broker: BrokerProcess, prefix: str, scopes: list[str], timeout: float) -> Mint:
    tasks = itertools.count()

    def mint() -> tuple[int, Any]:
        body = {"task": f"{prefix}-{next(tasks)}", "scopes": scopes}
        status, _, answer = broker.post("/v1/tokens", body, who="ha-agent", timeout=timeout)
        return status, answer

    return mint
