"""The CLI for scripts and people (issue 13, item 8): ``--version``, ``-o json``, exit codes
(0 ok, 1 finding or deny, 2 usage), and token times as dates with "expires in"."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from broker.cli import EXIT_FINDING, EXIT_OK, EXIT_USAGE, main, version
from broker.token import LocalSigner, issue_claims, mint
from tests.helpers import CAP
from tests.unit.test_cli import SCOPES, broker


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:  # argparse's version action exits
        main(["--version"])
    assert e.value.code == EXIT_OK
    assert capsys.readouterr().out.strip() == f"capbroker {version()}"
    assert version() != "unknown"


def test_policy_check_as_json(tmp_path: Path) -> None:
    r = broker("policy", "check", SCOPES, "-o", "json")
    assert r.returncode == EXIT_OK, r.stderr
    result = json.loads(r.stdout)
    assert result["ok"] is True
    assert result["agents"] >= 3
    (tmp_path / "bad.yaml").write_text("scopes:\n  x:\n    kind: nope\n    kind: git\n")
    r = broker("policy", "check", str(tmp_path), "-o", "json")
    assert r.returncode == EXIT_FINDING
    errors = json.loads(r.stdout)["errors"]
    assert errors[0]["file"].endswith("bad.yaml")
    assert errors[0]["line"] == 4


def test_policy_explain_as_json_and_deny_is_a_finding() -> None:
    allow = broker("policy", "explain", SCOPES, "--agent", "reviewer", "--scope", "widgets-read", "-o", "json")
    assert allow.returncode == EXIT_OK
    result = json.loads(allow.stdout)
    assert result["decision"] == "allow"
    assert result["capabilities"][0]["audience"] == "git-gateway"
    deny = broker("policy", "explain", SCOPES, "--agent", "analyst", "--scope", "widgets-read", "-o", "json")
    assert deny.returncode == EXIT_FINDING
    assert json.loads(deny.stdout)["code"] == "scope_not_granted"


def test_a_usage_error_is_2() -> None:
    with pytest.raises(SystemExit) as e:
        main(["policy", "explain", SCOPES, "--agent", "reviewer"])
    assert e.value.code == EXIT_USAGE


def test_token_inspect_shows_dates_and_expiry() -> None:
    now = int(time.time())
    signer = LocalSigner.generate("EdDSA", "k1")
    live = mint(
        issue_claims(issuer="https://b", agent="a", audience="gw", task="t", capabilities=[CAP], now=now, ttl=300),
        signer,
    )
    r = broker("token", "inspect", live, "-o", "json")
    assert r.returncode == EXIT_OK
    shown = json.loads(r.stdout)
    assert shown["verdict"] == "unverified"
    assert shown["times"]["exp"].startswith(time.strftime("%Y-%m-%dT", time.gmtime(now + 300)))
    assert "expires in 4m" in shown["times"]["exp"] or "expires in 5m" in shown["times"]["exp"]
    old = mint(
        issue_claims(
            issuer="https://b", agent="a", audience="gw", task="t", capabilities=[CAP], now=now - 4000, ttl=300
        ),
        signer,
    )
    r = broker("token", "inspect", old)
    assert "exp: " in r.stderr
    assert "expired 1h 1m" in r.stderr


def test_every_option_has_help_text() -> None:
    import argparse

    from broker.cli import build_parser

    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif action.help is None:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "broker")
    assert not missing, missing


def test_workers_without_a_writable_tmp_say_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A read-only root without a tmpfs at /tmp: a clear refusal, not a traceback (and no
    worker is started)."""
    import subprocess
    import tempfile

    from broker.cli import workers

    def read_only(**_: object) -> str:
        raise OSError(30, "Read-only file system")

    def no_worker(*_: object, **__: object) -> None:
        raise AssertionError("a worker was started")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    monkeypatch.setattr(subprocess, "Popen", no_worker)
    assert workers.supervise(None, 2) == EXIT_USAGE
    assert "writable temporary directory" in capsys.readouterr().err
