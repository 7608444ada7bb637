"""The OpenBao HA deployment files: three Raft nodes that find each other.

``infra/vault/openbao-ha-N.hcl`` (compose): each names its own node and addresses, joins
the other two and elects quickly (``performance_multiplier = 1``); they differ in the
node's name only. ``infra/k8s/openbao-raft.yaml`` passes ``kubernetes-validate --strict``,
runs three pods one per host, keeps a quorum through voluntary evictions, and its
``retry_join`` names every pod of the StatefulSet. A real cluster of this shape is
started by ``tests/servers/bao_cluster.py`` for the ``ha`` suites.
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

REPO = Path(__file__).resolve().parents[2]
HCL = sorted((REPO / "infra" / "vault").glob("openbao-ha-*.hcl"))
K8S = REPO / "infra" / "k8s" / "openbao-raft.yaml"


def test_three_node_files_differ_only_in_the_nodes_name() -> None:
    assert [p.name for p in HCL] == ["openbao-ha-1.hcl", "openbao-ha-2.hcl", "openbao-ha-3.hcl"]
    texts = {int(p.stem[-1]): p.read_text() for p in HCL}
    for n, text in texts.items():
        assert f'node_id = "openbao-{n}"' in text
        assert f'api_addr     = "http://openbao-{n}:8200"' in text
        assert f'cluster_addr = "http://openbao-{n}:8201"' in text
        joins = set(re.findall(r'leader_api_addr = "http://openbao-(\d):8200"', text))
        assert joins == {str(m) for m in texts if m != n}
        assert "performance_multiplier = 1" in text
    normalised = {re.sub(r"openbao-\d|node \d", "X", text) for text in texts.values()}
    assert len(normalised) == 1


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(K8S.read_text()) if d]


def test_the_kubernetes_manifest_passes_kubernetes_validate_strict() -> None:
    tool = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
    if tool is None:
        pytest.fail("kubernetes-validate is not installed (pip install -e '.[dev]')")
    done = subprocess.run([tool, "--strict", str(K8S)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_three_pods_one_per_host_and_a_quorum_through_evictions() -> None:
    (sts,) = [d for d in documents() if d["kind"] == "StatefulSet"]
    assert sts["spec"]["replicas"] == 3
    anti = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
    (pdb,) = [d for d in documents() if d["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == sts["spec"]["selector"]


def test_retry_join_names_every_pod_of_the_statefulset() -> None:
    (config,) = [d for d in documents() if d["kind"] == "ConfigMap"]
    (service,) = [d for d in documents() if d["kind"] == "Service"]
    (sts,) = [d for d in documents() if d["kind"] == "StatefulSet"]
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    hcl = config["data"]["openbao.hcl"]
    joined = re.findall(r'leader_api_addr\s*=\s*"https://(openbao-\d)\.openbao-internal\.vault\.svc:8200"', hcl)
    assert joined == [f"{sts['metadata']['name']}-{i}" for i in range(3)]
    env = {e["name"]: e.get("value") for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BAO_RAFT_NODE_ID"] == "$(POD_NAME)"
    assert env["BAO_API_ADDR"] == "https://$(POD_NAME).openbao-internal.vault.svc:8200"
