"""Set up Transit signing on a test OpenBao server, the way an operator would.

With the root token: enable the transit engine, create the key, write the shipped
least-privilege policy (``infra/vault/``, rewritten for the key's name), and hand back a
token holding only that policy, so tests and benches sign as the broker would in
production, never as root.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hvac

from broker.backends.transit import ensure_key
from broker.token.algorithms import Algorithm
from tests.servers.processes import BaoServer

POLICY_DIR = Path(__file__).resolve().parents[2] / "infra" / "vault"
BROKER_POLICY = POLICY_DIR / "capbroker-policy.hcl"
ROTATE_POLICY = POLICY_DIR / "capbroker-rotate-policy.hcl"
_KEY_PATH = re.compile(r'"transit/(sign|keys)/capbroker(/rotate)?"')


def admin_client(bao: BaoServer) -> Any:
    """An hvac client with the root token (typed ``Any``: hvac's API methods are untyped)."""
    return hvac.Client(url=bao.addr, token=bao.root_token, timeout=10)


def policy_for_key(path: Path, key: str) -> str:
    """The shipped policy file with the key name ``capbroker`` replaced by ``key``."""
    text, count = _KEY_PATH.subn(lambda m: f'"transit/{m[1]}/{key}{m[2] or ""}"', path.read_text())
    if count == 0:
        raise ValueError(f"{path} names no transit/.../capbroker path")
    return text


def setup_transit(bao: BaoServer, *, key: str = "capbroker", alg: Algorithm = "EdDSA", rotate: bool = False) -> str:
    """Enable transit (once), create ``key``, and return a non-root token holding only the
    capbroker policy for it (plus the rotate policy if ``rotate``), valid for two hours."""
    client = admin_client(bao)
    try:
        if "transit/" not in client.sys.list_mounted_secrets_engines()["data"]:
            client.sys.enable_secrets_engine("transit", path="transit")
        ensure_key(addr=bao.addr, token=bao.root_token, key=key, alg=alg)
        policies = [f"capbroker-{key}"]
        client.sys.create_or_update_policy(policies[0], policy_for_key(BROKER_POLICY, key))
        if rotate:
            policies.append(f"capbroker-rotate-{key}")
            client.sys.create_or_update_policy(policies[1], policy_for_key(ROTATE_POLICY, key))
        created = client.auth.token.create(policies=policies, ttl="2h", no_default_policy=True)
        return str(created["auth"]["client_token"])
    finally:
        client.adapter.close()
