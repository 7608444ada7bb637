"""The deployment files in infra/ stay loadable by the broker's own settings reader."""

from __future__ import annotations

from pathlib import Path

import yaml

from broker.config import load_settings

INFRA = Path(__file__).resolve().parents[2] / "infra"


def test_the_example_settings_file_loads() -> None:
    settings = load_settings(INFRA / "broker.yaml", {"BROKER_VAULT_TOKEN": "t"})
    assert settings.signer == "vault"
    assert settings.state == "redis"
    assert settings.backend_timeout == 1.0


def test_the_kubernetes_settings_load(tmp_path: Path) -> None:
    documents = list(yaml.safe_load_all((INFRA / "k8s" / "capbroker.yaml").read_text()))
    config_map = next(d for d in documents if d["kind"] == "ConfigMap")
    path = tmp_path / "broker.yaml"
    path.write_text(config_map["data"]["broker.yaml"])
    settings = load_settings(path, {"BROKER_VAULT_TOKEN": "t"})
    assert settings.vault_addr.startswith("https://")
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_broker_policy_grants_no_rotate_export_or_backup() -> None:
    policy = (INFRA / "vault" / "capbroker-policy.hcl").read_text()
    paths = [line.split('"')[1] for line in policy.splitlines() if line.startswith("path ")]
    assert paths == [
        "transit/sign/capbroker",
        "transit/keys/capbroker",
        "auth/token/lookup",
        "auth/token/lookup-self",  # its own token's TTL, and renewal (issue 13)
        "auth/token/renew-self",
    ]
