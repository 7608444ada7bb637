"""Set up Transit signing and AppRole agents on a test OpenBao server, the way an operator would.

With the root token: enable the transit engine, create the key, write the shipped
least-privilege policy (``infra/vault/``, rewritten for the key's name), and hand back a
token holding only that policy, so tests and benches sign (and look up agents' tokens) as
the broker would in production, never as root.

Agents (identity method ``vault``): ``setup_approle`` makes an AppRole role and hands back
a role_id and secret_id, and ``approle_login`` logs in with them as an agent would.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import hvac

from broker.backends.transit import ensure_key
from broker.token.algorithms import Algorithm


class BaoServer(Protocol):
    """A server to set up as its admin: ``tests.servers.processes.BaoServer``, or a Raft
    cluster (``tests.servers.bao_cluster.BaoCluster``, whose ``addr`` is its active node)."""

    @property
    def addr(self) -> str: ...

    @property
    def root_token(self) -> str: ...


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


def setup_transit(
    bao: BaoServer,
    *,
    key: str = "capbroker",
    alg: Algorithm = "EdDSA",
    rotate: bool = False,
    period: str | None = None,
    renewable: bool = True,
) -> str:
    """Enable transit (once), create ``key``, and return a non-root token holding only the
    capbroker policy for it (plus the rotate policy if ``rotate``), valid for two hours,
    or a periodic token (``period``, as ``infra/vault/setup.sh`` makes) that lives only
    as long as it is renewed."""
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
        lifetime: dict[str, Any] = {"period": period} if period is not None else {"ttl": "2h"}
        created = client.auth.token.create(policies=policies, no_default_policy=True, renewable=renewable, **lifetime)
        return str(created["auth"]["client_token"])
    finally:
        client.adapter.close()


def setup_approle(
    bao: BaoServer,
    *,
    role: str,
    token_policies: Sequence[str] = ("default",),
    metadata: Mapping[str, str] | None = None,
    token_ttl: str = "1h",  # noqa: S107 -- a duration, not a secret
    token_num_uses: int = 0,
    token_type: str = "service",  # noqa: S107 -- a token type, not a secret
    mount: str = "approle",
) -> tuple[str, str]:
    """Enable AppRole on ``mount`` (once), create or update ``role`` and return a fresh
    ``(role_id, secret_id)``. ``metadata`` is the secret-id's: AppRole copies it into the
    ``meta`` of every token that logs in with that secret-id, next to ``role_name``. Tokens
    live ``token_ttl`` at most (it is also the max TTL)."""
    client = admin_client(bao)
    try:
        if f"{mount}/" not in client.sys.list_auth_methods()["data"]:
            client.sys.enable_auth_method("approle", path=mount)
        client.auth.approle.create_or_update_approle(
            role,
            token_policies=list(token_policies),
            token_ttl=token_ttl,
            token_max_ttl=token_ttl,
            token_num_uses=token_num_uses,
            token_type=token_type,
            mount_point=mount,
        )
        role_id = client.auth.approle.read_role_id(role, mount_point=mount)["data"]["role_id"]
        secret = client.auth.approle.generate_secret_id(role, metadata=dict(metadata or {}), mount_point=mount)
        return str(role_id), str(secret["data"]["secret_id"])
    finally:
        client.adapter.close()


def approle_login(bao: BaoServer, role_id: str, secret_id: str, *, mount: str = "approle") -> str:
    """Log in as an agent would (no token needed) and return the Vault token it gets."""
    client = hvac.Client(url=bao.addr, timeout=10)
    try:
        response = client.auth.approle.login(role_id, secret_id, use_token=False, mount_point=mount)
        return str(response["auth"]["client_token"])
    finally:
        client.adapter.close()
