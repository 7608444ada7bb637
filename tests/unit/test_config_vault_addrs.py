"""``vault_addr`` lists an HA cluster's nodes, in the broker's and the gateway's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import SettingsError, load_settings
from broker.gateway.config import ConfigError, load_config
from tests.gateway.test_config import SPEC_EXAMPLE

NODES = "https://bao-0:8200, https://bao-1:8200/,https://bao-2:8200"


def broker_settings(tmp_path: Path, vault_addr: str) -> Path:
    path = tmp_path / "broker.yaml"
    path.write_text(
        "issuer: https://broker.internal\nscopes: /etc/capbroker/scopes\n"
        f"admin_key_sha256: [{'a' * 64}]\nvault_addr: {vault_addr}\nredis_url: redis://redis:6379/0\n"
    )
    return path


def test_the_broker_takes_every_node(tmp_path: Path) -> None:
    settings = load_settings(broker_settings(tmp_path, NODES), {"BROKER_VAULT_TOKEN": "t"})
    assert settings.vault_addr == NODES  # the clients parse it (broker.vault_addrs)


@pytest.mark.parametrize(
    "bad", ["https://bao-0:8200,,https://bao-1:8200", "https://bao-0:8200,http://bao-1:8200", "bao-0:8200"]
)
def test_the_broker_refuses_a_bad_list_at_start(tmp_path: Path, bad: str) -> None:
    with pytest.raises(SettingsError, match="vault_addr"):
        load_settings(broker_settings(tmp_path, bad), {"BROKER_VAULT_TOKEN": "t"})


def test_the_gateway_takes_every_node() -> None:
    config = load_config(SPEC_EXAMPLE.replace("vault_addr: https://vault:8200", f"vault_addr: {NODES}"))
    assert config.vault_addr == "https://bao-0:8200,https://bao-1:8200,https://bao-2:8200"


def test_the_gateway_refuses_a_bad_list() -> None:
    with pytest.raises(ConfigError, match="vault_addr: a node is listed twice"):
        load_config(SPEC_EXAMPLE.replace("vault_addr: https://vault:8200", "vault_addr: https://a,https://a/"))
