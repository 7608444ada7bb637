"""Shared test helpers: fixed keys, a fixed clock, and a raw token forger for attack tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from broker.capability import Capability
from broker.errors import TokenRejected
from broker.token import Claims, KeyRing, LocalSigner, issue_claims, mint
from broker.token.algorithms import PrivateKey, sign
from broker.token.b64 import b64url_encode
from broker.verify import Verifier

ISSUER = "https://broker.test"
AUDIENCE = "storage-gateway"
NOW = 1_790_000_000  # fixed clock for every unit test

JTI = "test-token-id-00000001"  # 22 base64url characters, like a real 128-bit id
CAP = Capability.build("bucket", "s3://acme-reports/agents/t1/", ["read", "write"], "reports-write")


def claims(**overrides: Any) -> Claims:
    base: dict[str, Any] = {
        "issuer": ISSUER,
        "agent": "analyst",
        "audience": AUDIENCE,
        "task": "t1",
        "capabilities": [CAP],
        "now": NOW,
        "ttl": 300,
        "jti": JTI,
    }
    base.update(overrides)
    return issue_claims(**base)


def payload(**overrides: Any) -> dict[str, Any]:
    """The JSON claims of a valid token, to tamper with; ``None`` values delete a claim."""
    out = claims().to_json()
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def forge(
    header: dict[str, Any] | bytes,
    body: dict[str, Any] | bytes,
    key: PrivateKey | None,
    *,
    signature: bytes | None = None,
) -> str:
    """Any header and payload (dicts, or raw bytes for malformed JSON), signed with ``key``
    (a real private key), or with ``signature`` as given."""
    h = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    p = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
    signing_input = f"{b64url_encode(h)}.{b64url_encode(p)}".encode()
    if signature is None:
        assert key is not None
        signature = sign(key, signing_input)
    return f"{signing_input.decode()}.{b64url_encode(signature)}"


def verifier(ring: KeyRing, **kw: Any) -> Verifier:
    kw.setdefault("clock", lambda: float(NOW + 10))
    return Verifier(issuer=ISSUER, audience=AUDIENCE, jwks=ring.keyset, **kw)


def good_token(signer: LocalSigner, **overrides: Any) -> str:
    return mint(claims(**overrides), signer)


REPO = Path(__file__).resolve().parents[1]


def policy_check(*args: str) -> subprocess.CompletedProcess[str]:
    """``broker policy check ARGS`` in a real process, as an admin or a CI job runs it."""
    return subprocess.run(
        [sys.executable, "-m", "broker", "policy", "check", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def rejection(verifier: Verifier, token: str) -> str | None:
    """The code ``verifier`` rejects ``token`` with, or None if the token verifies."""
    try:
        verifier.verify(token)
    except TokenRejected as e:
        return e.code
    return None
