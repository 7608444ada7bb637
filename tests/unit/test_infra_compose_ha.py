"""infra/compose-ha.yaml, the highly available layout, is complete and consistent.

It validates against the compose specification, declares every volume it mounts and its
host files exist; it runs three OpenBao Raft nodes (infra/vault/openbao-ha-N.hcl), all
unsealed by the one-shot init; a Redis primary and its replica watched by three
Sentinels with a quorum of two; three brokers on one audit archive whose settings
(infra/compose-broker-ha.yaml) load and name every Sentinel and every OpenBao node; and
haproxy, whose config (infra/haproxy.cfg) haproxy itself accepts, balancing over every
broker and taking a replica out while its /readyz fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.config import load_settings

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
COMPOSE = INFRA / "compose-ha.yaml"
HAPROXY = INFRA / "haproxy.cfg"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services(prefix: str) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose()["services"].items() if re.fullmatch(rf"{prefix}-\d", name)}


def test_the_ha_compose_file_validates_against_the_compose_spec() -> None:
    checker = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert checker is not None, "check-jsonschema is not installed (pip install -e '.[dev]')"
    done = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_it_declares_its_volumes_and_its_host_files_exist() -> None:
    declared = set(compose()["volumes"])
    for name, service in compose()["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name}: {source}"
            else:
                assert source in declared, f"{name}: {source}"


def test_three_openbao_raft_nodes_all_unsealed_by_the_init() -> None:
    nodes = services("openbao")
    assert sorted(nodes) == ["openbao-1", "openbao-2", "openbao-3"]
    for name, node in nodes.items():
        assert node["command"][-1] == f"-config=/setup/openbao-ha-{name[-1]}.hcl"
        assert (INFRA / "vault" / f"openbao-ha-{name[-1]}.hcl").exists()
    init = compose()["services"]["openbao-init"]
    named = {init["environment"]["BAO_ADDR"], *init["environment"]["BAO_UNSEAL_ADDRS"].split()}
    assert named == {f"http://{name}:8200" for name in nodes}
    assert "BAO_UNSEAL_ADDRS" in (INFRA / "vault" / "compose-init.sh").read_text()


def test_redis_primary_and_replica_watched_by_three_sentinels_with_a_quorum_of_two() -> None:
    every = compose()["services"]
    assert every["redis-replica"]["command"][-3:] == ["--replicaof", "redis-primary", "6379"]
    for name in ("redis-primary", "redis-replica"):
        assert "--appendonly" in every[name]["command"]  # SECURITY.md: AOF, noeviction
        assert "noeviction" in every[name]["command"]
    sentinels = services("sentinel")
    assert len(sentinels) == 3
    for sentinel in sentinels.values():
        assert "sentinel monitor capbroker redis-primary 6379 2" in sentinel["command"][-1]


def test_three_brokers_on_one_archive_whose_settings_name_every_sentinel_and_node(tmp_path: Path) -> None:
    brokers = services("broker")
    assert len(brokers) == 3
    for broker in brokers.values():
        assert "audit-archive:/var/lib/capbroker/audit" in broker["volumes"]
        assert "/readyz" in broker["healthcheck"]["test"][-1]
    subprocess.run(
        [sys.executable, str(INFRA / "compose_keys.py"), str(REPO / "scopes"), str(INFRA / "compose-broker-ha.yaml"),
         str(tmp_path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    settings = load_settings(tmp_path / "broker.yaml", {"BROKER_VAULT_TOKEN": "t"})
    assert settings.redis_url.startswith("redis+sentinel://")
    for name in services("sentinel"):
        assert f"{name}:26379" in settings.redis_url
    for name in services("openbao"):
        assert f"http://{name}:8200" in settings.vault_addr


def test_haproxy_accepts_its_config_and_balances_over_every_ready_broker() -> None:
    text = HAPROXY.read_text()
    assert set(re.findall(r"^\s+server (\S+) (\S+):8700", text, re.M)) == {(b, b) for b in services("broker")}
    assert "option httpchk GET /readyz" in text
    assert "balance roundrobin" in text
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if haproxy is None:
        pytest.fail("haproxy is not installed (make servers)")
    done = subprocess.run([haproxy, "-c", "-f", str(HAPROXY)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lb = compose()["services"]["haproxy"]
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in lb["volumes"]
