"""Settings: a strict YAML file, BROKER_* overrides, no secrets in the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import SettingsError, load_settings

ADMIN = "a" * 64


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broker.yaml"
    path.write_text(text)
    return path


BASE = f"""\
issuer: https://broker.internal
scopes: /etc/capbroker/scopes
admin_key_sha256: [{ADMIN}]
vault_addr: https://vault.internal:8200
redis_url: redis://redis.internal:6379/0
backend_timeout: 800ms
key_refresh: 2s
"""


def test_file_settings_with_env_overrides(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s.abcdefghijklmnopqrstuvwx\n")
    path = write(tmp_path, BASE + f"vault_token_file: {token_file}\n")
    s = load_settings(path, {"BROKER_PORT": "9000", "BROKER_TRANSIT_KEY": "other"})
    assert s.port == 9000
    assert s.transit_key == "other"
    assert s.backend_timeout == 0.8
    assert s.key_refresh == 2.0
    assert s.vault_token == "s.abcdefghijklmnopqrstuvwx"
    assert s.admin_key_sha256 == (ADMIN,)
    assert "abcdefghij" not in repr(s)  # the token never shows in a repr or a log of the settings


def test_env_only(tmp_path: Path) -> None:
    env = {
        "BROKER_ISSUER": "https://b.internal",
        "BROKER_SCOPES": str(tmp_path),
        "BROKER_ADMIN_KEY_SHA256": f"{ADMIN},{'b' * 64}",
        "BROKER_VAULT_ADDR": "http://127.0.0.1:8200",
        "BROKER_VAULT_TOKEN": "t",
        "BROKER_REDIS_URL": "redis://127.0.0.1/0",
    }
    s = load_settings(None, env)
    assert s.admin_key_sha256 == (ADMIN, "b" * 64)
    assert s.vault_token == "t"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("vault_token: s.secret\n", "no secrets in the settings file"),
        ("colour: blue\n", "unknown setting 'colour'"),
        ("port: lots\n", "port must be a whole number"),
        ("signing_alg: RS256\n", "EdDSA or ES256"),
        ("backend_timeout: 30s\n", "backend_timeout"),
        ("issuer: http://broker.internal\n", "https"),
        ("state: sqlite\n", "redis|memory"),
        ("signing: hsm\n", "signing is session"),
        ("session_key_window: 10s\n", "session_key_window"),
        ("workers: 65\n", "workers"),
        ('redis_prefix: "capbroker:{tag}:"\n', "no braces"),
        ('redis_prefix: "a b"\n', "redis_prefix is 1 to 200"),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(tmp_path: Path, extra: str, message: str) -> None:
    name = extra.split(":", maxsplit=1)[0]
    text = "\n".join(line for line in BASE.splitlines() if not line.startswith(name + ":")) + "\n"
    path = write(tmp_path, text + extra)
    with pytest.raises(SettingsError, match=message):
        load_settings(path, {"BROKER_VAULT_TOKEN": "t"})


@pytest.mark.parametrize("missing", ["issuer", "scopes", "admin_key_sha256"])
def test_required_settings(tmp_path: Path, missing: str) -> None:
    text = "\n".join(line for line in BASE.splitlines() if not line.startswith(missing)) + "\n"
    with pytest.raises(SettingsError, match=missing):
        load_settings(write(tmp_path, text), {"BROKER_VAULT_TOKEN": "t"})


def test_vault_signer_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="Vault token"):
        load_settings(write(tmp_path, BASE), {})


def test_admin_hashes_must_be_sha256_hex(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="admin_key_sha256"):
        load_settings(write(tmp_path, BASE), {"BROKER_VAULT_TOKEN": "t", "BROKER_ADMIN_KEY_SHA256": "cbk_notahash"})


def test_duplicate_keys_in_the_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="duplicate key"):
        load_settings(write(tmp_path, BASE + "port: 1\nport: 2\n"), {"BROKER_VAULT_TOKEN": "t"})


def test_session_key_durations_and_workers(tmp_path: Path) -> None:
    text = BASE + "session_key_window: 1h\nsession_key_lead: 15m\nworkers: 2\nsigning: transit\n"
    s = load_settings(write(tmp_path, text), {"BROKER_VAULT_TOKEN": "t"})
    assert (s.session_key_window, s.session_key_lead, s.workers, s.signing) == (3600.0, 900.0, 2, "transit")
    assert load_settings(write(tmp_path, BASE), {"BROKER_VAULT_TOKEN": "t"}).signing == "session"


def test_the_redis_prefix_is_derived_from_the_issuer_unless_set(tmp_path: Path) -> None:
    derived = load_settings(write(tmp_path, BASE), {"BROKER_VAULT_TOKEN": "t"})
    assert derived.key_prefix == "capbroker:https://broker.internal:"
    assert derived.stream == "capbroker:https://broker.internal:audit"
    other = load_settings(write(tmp_path, BASE), {"BROKER_VAULT_TOKEN": "t", "BROKER_ISSUER": "https://b2.internal"})
    assert other.key_prefix != derived.key_prefix
    chosen = load_settings(
        write(tmp_path, BASE + 'redis_prefix: "capbroker:"\naudit_stream: "audit-x"\n'), {"BROKER_VAULT_TOKEN": "t"}
    )
    assert (chosen.key_prefix, chosen.stream) == ("capbroker:", "audit-x")
