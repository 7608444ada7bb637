"""The deployment files in infra/ are complete and consistent (issue 13, item 5).

Statically: the Kubernetes manifests pass ``kubernetes-validate --strict`` and every
ConfigMap, Secret, key and claim the Deployment names is defined, in a Namespace that is
defined; the Secret is readable by the non-root broker (fsGroup, group-readable mode); the
egress policy lets jwt identities reach their issuers. The compose file validates against
the compose specification, declares every volume it mounts, and its host files exist.
``compose_keys.py`` makes keys that the policy and settings it writes accept. The scripts
run against real OpenBao in tests/integration/test_infra_setup.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.config import load_settings
from broker.policy.loader import load_policy
from broker.policy.model import KeyIdentity
from broker.service.credentials import secret_sha256

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
K8S = INFRA / "k8s" / "capbroker.yaml"
COMPOSE = INFRA / "compose.yaml"
ADMIN = {"BROKER_ADMIN_KEY_SHA256": "ab" * 32, "BROKER_VAULT_TOKEN": "t"}


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(K8S.read_text()) if d]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [d for d in documents() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return found


def test_the_example_settings_file_loads() -> None:
    settings = load_settings(INFRA / "broker.yaml", ADMIN)
    assert settings.signer == "vault"
    assert settings.state == "redis"
    assert settings.backend_timeout == 1.0
    assert "0" * 64 not in (INFRA / "broker.yaml").read_text()  # no all-zero admin hash to copy


def test_the_kubernetes_manifests_pass_kubernetes_validate_strict() -> None:
    done = subprocess.run(
        [tool("kubernetes-validate"), "--strict", str(K8S)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_object_the_deployment_names_is_defined_in_a_defined_namespace() -> None:
    docs = documents()
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    assert namespaces == {"capbroker"}
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] in namespaces, d["metadata"]
    defined = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    pod = one("Deployment")["spec"]["template"]["spec"]
    for volume in pod["volumes"]:
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in defined, volume
        if "secret" in volume:
            secret = defined[("Secret", volume["secret"]["secretName"])]
            for item in volume["secret"].get("items", []):
                assert item["key"] in secret["stringData"], item
        if "persistentVolumeClaim" in volume:
            assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in defined, volume
    (container,) = pod["containers"]
    for env in container.get("env", []):
        ref = env["valueFrom"]["secretKeyRef"]
        assert ref["key"] in defined[("Secret", ref["name"])]["stringData"], ref
    mounted = {m["name"] for m in container["volumeMounts"]}
    assert mounted == {v["name"] for v in pod["volumes"]}


def test_the_secret_is_readable_by_the_non_root_broker() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] != 0
    assert security["fsGroup"] == security["runAsGroup"]  # the Secret's files are root:fsGroup
    (secret,) = [v["secret"] for v in pod["volumes"] if "secret" in v]
    assert secret["defaultMode"] & 0o040, "group-readable: the owner is root"
    assert not secret["defaultMode"] & 0o007, "nobody else"


def test_the_pods_have_probes_a_budget_and_spread() -> None:
    spec = one("Deployment")["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}  # noqa: S108 -- a mount path: the metrics files
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"]
    assert spec["replicas"] == 3
    assert one("PodDisruptionBudget")["spec"]["minAvailable"] == 2  # one evicted at a time


def test_egress_lets_jwt_identities_reach_their_issuers() -> None:
    egress = one("NetworkPolicy")["spec"]["egress"]
    https = [rule for rule in egress if "to" not in rule and any(p["port"] == 443 for p in rule["ports"])]
    assert https, "no egress to the OIDC issuers' HTTPS"


def test_the_kubernetes_settings_load(tmp_path: Path) -> None:
    text = one("ConfigMap", "capbroker-settings")["data"]["broker.yaml"]
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    path = tmp_path / "broker.yaml"
    path.write_text(text.replace("/etc/capbroker/ca/ca.pem", str(ca)))
    settings = load_settings(path, ADMIN)
    assert settings.vault_addr.startswith("https://")
    secret_mount = "/var/run/secrets/capbroker"
    assert f"vault_token_file: {secret_mount}/vault-token" in text
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert secret_mount in {m["mountPath"] for m in container["volumeMounts"]}
    assert "BROKER_ADMIN_KEY_SHA256" in K8S.read_text()


def test_the_kubernetes_policy_loads(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(one("ConfigMap", "capbroker-scopes")["data"]["policy.yaml"])
    assert "reviewer" in load_policy(tmp_path).agents


def test_the_compose_file_validates_against_the_compose_spec() -> None:
    done = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_compose_file_declares_its_volumes_and_its_host_files_exist() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name}: {source}"
            else:
                assert source in declared, f"{name}: {source}"
    brokers = [s for n, s in compose["services"].items() if n.startswith("broker")]
    assert len(brokers) == 2
    for broker in brokers:
        assert "/tmp" in broker["tmpfs"]  # noqa: S108 -- a mount path: the workers metrics files
        assert broker["command"][-1].startswith("/generated/")
    assert compose["services"]["redis"]["volumes"] == ["redis-data:/data"]
    assert "raft" in (INFRA / "vault" / "openbao.hcl").read_text()


def test_compose_keys_makes_keys_the_written_policy_and_settings_accept(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(INFRA / "compose_keys.py"), str(REPO / "scopes"), str(INFRA / "compose-broker.yaml"),
         str(tmp_path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    printed = dict(line.split(" key:") for line in done.stdout.splitlines()[1:])
    keys = {who.strip(): secret.strip() for who, secret in printed.items()}
    settings = load_settings(tmp_path / "broker.yaml", {"BROKER_VAULT_TOKEN": "t"})
    assert settings.admin_key_sha256 == (secret_sha256(keys.pop("admin")),)
    policy = load_policy(settings.scopes)
    hashes = {
        p.identity.sha256 for p in (*policy.agents.values(), *policy.services.values())
        if isinstance(p.identity, KeyIdentity)
    }  # fmt: skip
    assert hashes == {secret_sha256(secret) for secret in keys.values()}
    assert "agent reviewer" in keys
    assert "service git-gateway" in keys


def test_the_broker_policy_grants_no_rotate_export_or_backup() -> None:
    policy = (INFRA / "vault" / "capbroker-policy.hcl").read_text()
    paths = [line.split('"')[1] for line in policy.splitlines() if line.startswith("path ")]
    assert paths == [
        "transit/sign/capbroker",
        "transit/keys/capbroker",
        "auth/token/lookup",
        # downstream credentials (SPEC 6): tokens only through the role, no sys/policy path
        "auth/token/create/capbroker-task",
        "auth/token/revoke-accessor",
        "transit/encrypt/capbroker-task-tokens",
        "transit/decrypt/capbroker-task-tokens",
        "auth/token/lookup-self",  # its own token's TTL, and renewal (issue 13)
        "auth/token/renew-self",
    ]
