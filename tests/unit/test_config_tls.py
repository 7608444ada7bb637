"""TLS settings (issue 13, item 2): a private CA for Vault and for Redis over TLS."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import SettingsError, load_settings

BASE = {
    "BROKER_ISSUER": "https://broker.internal",
    "BROKER_SCOPES": "scopes",
    "BROKER_ADMIN_KEY_SHA256": "0" * 63 + "1",
    "BROKER_VAULT_TOKEN": "t",
}


def test_the_redis_ca_reaches_every_redis_client_through_the_url(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    env = BASE | {
        "BROKER_VAULT_ADDR": "https://vault:8200",
        "BROKER_VAULT_CA_FILE": str(ca),
        "BROKER_REDIS_URL": "rediss://redis:6380/0",
        "BROKER_REDIS_CA_FILE": str(ca),
    }
    settings = load_settings(None, env)
    assert settings.vault_ca_file == str(ca)
    assert settings.redis_url == f"rediss://redis:6380/0?ssl_ca_certs={str(ca).replace('/', '%2F')}"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"BROKER_VAULT_CA_FILE": "/nonexistent/ca.pem"}, "vault_ca_file: no such file"),
        ({"BROKER_REDIS_CA_FILE": "/nonexistent/ca.pem"}, "redis_ca_file: no such file"),
        ({"BROKER_VAULT_ADDR": "http://vault:8200", "BROKER_VAULT_CA_FILE": "CA"}, "https:// vault_addr"),
        ({"BROKER_REDIS_URL": "redis://redis:6379/0", "BROKER_REDIS_CA_FILE": "CA"}, "rediss:// redis_url"),
    ],
)
def test_a_ca_setting_that_cannot_work_is_named(tmp_path: Path, extra: dict[str, str], message: str) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    env = BASE | {"BROKER_VAULT_ADDR": "https://vault:8200", "BROKER_REDIS_URL": "rediss://redis:6380/0"}
    env |= {k: str(ca) if v == "CA" else v for k, v in extra.items()}
    with pytest.raises(SettingsError, match=message):
        load_settings(None, env)


# ---------------------------------------------------------------- issue 13 item 8: settings errors


def _file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "broker.yaml"
    path.write_text(f"issuer: https://broker.internal\nscopes: scopes\nadmin_key_sha256: ['{'0' * 63}1']\n{body}")
    return path


@pytest.mark.parametrize(("written", "seconds"), [("0.5", 0.5), ("1.25", 1.25), ("800ms", 0.8), ("2", 2.0)])
def test_a_decimal_duration_is_accepted(tmp_path: Path, written: str, seconds: float) -> None:
    env = BASE | {"BROKER_SIGNER": "local", "BROKER_STATE": "memory"}
    settings = load_settings(_file(tmp_path, f"backend_timeout: {written}\n"), env)
    assert settings.backend_timeout == seconds


def test_an_unknown_setting_gets_a_did_you_mean_and_its_line(tmp_path: Path) -> None:
    with pytest.raises(
        SettingsError, match=r"broker.yaml:4: unknown setting 'vault_adr' \(did you mean 'vault_addr'\?\)"
    ):
        load_settings(_file(tmp_path, "vault_adr: https://vault:8200\n"), BASE)


def test_a_bad_duration_says_the_accepted_forms(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"backend_timeout must be a duration: seconds or '800ms'.*not '5 parsecs'"):
        load_settings(_file(tmp_path, "backend_timeout: 5 parsecs\n"), BASE)


def test_policy_files_still_refuse_floats(tmp_path: Path) -> None:
    from broker.errors import PolicyIssue
    from broker.policy.yamlstrict import parse_yaml

    assert isinstance(parse_yaml("max_ttl: 0.5\n", "p.yaml"), PolicyIssue)
