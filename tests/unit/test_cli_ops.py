"""`broker serve`, `broker keys rotate`, `broker audit verify`: their refusals, in process.

Their work on real OpenBao and Redis is in tests/integration/test_service_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.cli import main
from tests.helpers import REPO

ADMIN = "a" * 64


def settings(tmp_path: Path, **overrides: str) -> Path:
    values = {
        "issuer": "http://127.0.0.1:8700",
        "scopes": str(REPO / "scopes"),
        "admin_key_sha256": f"[{ADMIN}]",
        "signer": "local",
        "state": "memory",
    } | overrides
    path = tmp_path / "broker.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in values.items()))
    return path


def test_serve_refuses_a_missing_settings_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_serve_refuses_the_embedded_backends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(settings(tmp_path))]) == 2
    assert "Vault + Redis only" in capsys.readouterr().err


def test_serve_refuses_bad_settings_naming_the_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(settings(tmp_path, workers="65"))]) == 2
    assert "workers" in capsys.readouterr().err


def test_audit_verify_on_an_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--config", str(settings(tmp_path))]) == 0
    assert "audit chain OK: 0 event(s)" in capsys.readouterr().out


def test_keys_rotate_names_the_new_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "rotate", "--config", str(settings(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "-v2 (the JWKS now publishes 2 key version(s))" in out


def test_ops_commands_report_bad_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = settings(tmp_path, colour="blue")
    assert main(["keys", "rotate", "--config", str(bad)]) == 2
    assert main(["audit", "verify", "--config", str(bad)]) == 2
    assert capsys.readouterr().err.count("unknown setting 'colour'") == 2


def test_audit_verify_reports_a_keys_file_that_is_not_a_jwks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text('{"keys": "none"}')
    assert main(["audit", "verify", "--config", str(settings(tmp_path)), "--keys", str(keys)]) == 2
    assert "not a JWKS" in capsys.readouterr().err
    assert main(["audit", "verify", "--config", str(settings(tmp_path)), "--keys", str(tmp_path / "nope")]) == 2


def test_the_checkpoint_settings_take_durations_and_are_bounded(tmp_path: Path) -> None:
    from broker.config import SettingsError, load_settings

    loaded = load_settings(settings(tmp_path, audit_checkpoint_events="50", audit_checkpoint_interval="2m"), env={})
    assert (loaded.audit_checkpoint_events, loaded.audit_checkpoint_interval) == (50, 120.0)
    assert (load_settings(settings(tmp_path), env={}).audit_checkpoint_interval) == 60.0
    for bad in ({"audit_checkpoint_events": "0"}, {"audit_checkpoint_interval": "0s"}):
        with pytest.raises(SettingsError, match="audit_checkpoint"):
            load_settings(settings(tmp_path, **bad), env={})


def production(tmp_path: Path, **overrides: str) -> Path:
    token = tmp_path / "vault-token"
    token.write_text("not-a-real-token")
    return settings(
        tmp_path,
        signer="vault",
        state="redis",
        vault_addr="http://127.0.0.1:1",
        vault_token_file=str(token),
        redis_url="redis://127.0.0.1:1/0",
        **overrides,
    )


def test_serve_refuses_to_start_without_an_audit_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(production(tmp_path))]) == 2
    assert "audit_archive_dir is required" in capsys.readouterr().err


def test_serve_refuses_an_archive_directory_that_is_not_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "not-mounted"
    assert main(["serve", "--config", str(production(tmp_path, audit_archive_dir=str(missing)))]) == 2
    assert f"audit archive directory {missing} does not exist" in capsys.readouterr().err


def test_export_refuses_a_since_it_cannot_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "export", "--config", str(settings(tmp_path)), "--since", "last week"]) == 2
    assert "--since 'last week'" in capsys.readouterr().err


def test_export_of_the_memory_state_is_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "export", "--config", str(settings(tmp_path)), "--since", "1h"]) == 0
    assert capsys.readouterr().out == ""
