"""The broker command line, run as a user would."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker.cli import main
from broker.token import KeyRing, LocalSigner, issue_claims, mint
from tests.helpers import CAP, good_token

SCOPES = str(Path(__file__).resolve().parents[2] / "scopes")


def broker(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in process (so coverage sees it), as ``broker ARGS``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(["broker", *args], code, out.getvalue(), err.getvalue())


def test_console_script_runs_as_a_module() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "broker", "policy", "check", SCOPES],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("policy ok: 10 scopes, 3 agents, 2 services")


def test_unknown_command_exits_2() -> None:
    with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(io.StringIO()):
        main(["frobnicate"])
    assert e.value.code == 2


def test_explain_allow_lists_reasons_and_capabilities() -> None:
    r = broker(
        "policy",
        "explain",
        SCOPES,
        "--agent",
        "analyst",
        "--scope",
        "reports-write",
        "--resource",
        "s3://acme-reports/agents/t1/",
        "--action",
        "write",
    )
    assert r.returncode == 0, r.stderr
    assert "decision: allow" in r.stdout
    assert "token for storage-gateway: bucket s3://acme-reports/agents/t1/ write" in r.stdout


def test_explain_deny_says_why() -> None:
    r = broker("policy", "explain", SCOPES, "--agent", "analyst", "--scope", "widgets-read")
    assert r.returncode == 1  # a deny is a finding (1), not a usage error (2)
    assert "decision: deny (scope_not_granted)" in r.stdout
    assert "not granted scope 'widgets-read'" in r.stdout
    r = broker("policy", "explain", SCOPES, "--agent", "nobody", "--scope", "widgets-read")
    assert r.returncode == 1
    assert "deny (forbidden)" in r.stdout


def test_new_client_prints_a_secret_and_its_hash() -> None:
    r = broker("keys", "new-client")
    assert r.returncode == 0
    lines = dict(line.split(": ", 1) for line in r.stdout.splitlines() if not line.startswith("#"))
    assert lines["secret"].startswith("cbk_")
    assert len(lines["secret"]) == 4 + 43  # 32 bytes, base64url
    assert hashlib.sha256(lines["secret"].encode()).hexdigest() == lines["sha256"]


def test_token_inspect_marks_unverified(ed_signer: LocalSigner) -> None:
    token = good_token(ed_signer)
    r = broker("token", "inspect", token)
    assert r.returncode == 0
    shown = json.loads(r.stdout)
    assert shown["header"] == {"alg": "EdDSA", "typ": "cap+jwt", "kid": "ed-1"}
    assert shown["claims"]["task"] == "t1"
    assert "UNVERIFIED" in r.stderr


def test_token_inspect_with_jwks_verifies_and_rejects(tmp_path: Path, ring: KeyRing) -> None:
    signer = LocalSigner.generate("EdDSA", "fresh-1")

    token = mint(
        issue_claims(
            issuer="https://b", agent="a", audience="gw", task="t", capabilities=[CAP], now=int(time.time()), ttl=300
        ),
        signer,
    )
    good = tmp_path / "good.json"
    good.write_text(json.dumps(KeyRing([signer]).keyset.to_jwks()))
    other = tmp_path / "other.json"
    other.write_text(json.dumps(ring.keyset.to_jwks()))
    ok = broker("token", "inspect", token, "--jwks", str(good))
    assert ok.returncode == 0, ok.stderr
    assert "VERIFIED" in ok.stderr
    bad = broker("token", "inspect", token, "--jwks", str(other))
    assert bad.returncode == 1
    assert "REJECTED: unknown_key" in bad.stderr
    tampered = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    assert broker("token", "inspect", tampered, "--jwks", str(good)).returncode == 1


def test_token_inspect_with_a_pem_key(tmp_path: Path, ed_signer: LocalSigner, es_signer: LocalSigner) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from tests.helpers import claims

    fresh = LocalSigner.generate("EdDSA", "pem-1")
    token = mint(claims(now=int(time.time()), issuer="https://b"), fresh)
    pem = tmp_path / "key.pem"
    pem.write_bytes(fresh.public.key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    other = tmp_path / "other.pem"
    other.write_bytes(es_signer.public.key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    ok = broker("token", "inspect", token, "--key", str(pem))
    assert ok.returncode == 0, ok.stderr
    assert "VERIFIED" in ok.stderr
    bad = broker("token", "inspect", token, "--key", str(other))
    assert bad.returncode == 1
    assert "REJECTED: bad_header" in bad.stderr  # an EC key cannot verify an EdDSA token


def test_token_inspect_refuses_garbage() -> None:
    r = broker("token", "inspect", "not-a-token")
    assert r.returncode == 1
    assert "not a capability token" in r.stderr
