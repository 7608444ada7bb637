"""An in-process broker (local key, in-memory state, the example policy) for HTTP tests.

``make_harness()`` gives the app plus fresh secrets for one agent of each example
policy file, two services and an admin; the audit JSON lines go to ``harness.audit_out``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from broker.backends.local_signer import LocalSigningBackend
from broker.backends.memory_state import MemoryState
from broker.http.app import create_app
from broker.http.hot_paths import BrokerApp
from broker.policy.loader import load_policy
from broker.policy.model import Policy
from broker.policy.rekey import with_client_key
from broker.service.audit_recorder import AuditRecorder
from broker.service.broker import Broker
from broker.service.credentials import new_client_secret, secret_sha256

REPO = Path(__file__).resolve().parents[2]
SCOPES = REPO / "scopes"
ISSUER = "http://127.0.0.1:8700"
PRINCIPALS = ("reviewer", "analyst", "deployer", "git-gateway", "storage-gateway")


@dataclass
class Harness:
    app: BrokerApp
    broker: Broker
    keys: dict[str, str]  # principal name (or "admin") -> its secret
    audit_out: io.StringIO = field(default_factory=io.StringIO)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


def _overlay(policy: Policy, hashes: dict[str, str]) -> Policy:
    for name, digest in hashes.items():
        policy = with_client_key(policy, name, digest)
    return policy


def make_harness(
    scopes: Path = SCOPES, *, state: MemoryState | None = None, signer: LocalSigningBackend | None = None
) -> Harness:
    keys = {name: new_client_secret() for name in (*PRINCIPALS, "admin")}
    hashes = {name: secret_sha256(secret) for name, secret in keys.items() if name != "admin"}
    state = state or MemoryState()
    out = io.StringIO()
    broker = Broker(
        issuer=ISSUER,
        policy_dir=scopes,
        policy=_overlay(load_policy(scopes), hashes),
        signer=signer or LocalSigningBackend.generate(),
        state=state,
        audit=AuditRecorder(state, out=out),
        admin_key_hashes=(secret_sha256(keys["admin"]),),
        overlay=lambda p: _overlay(p, hashes),
    )
    return Harness(create_app(broker), broker, keys, out)
