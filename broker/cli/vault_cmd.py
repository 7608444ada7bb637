"""``broker vault sync --config FILE [--dry-run]``: an admin writes what the broker may attach.

Run with an admin's Vault token (``VAULT_TOKEN`` or ``BAO_TOKEN``), never the broker's
own: the broker's runtime token cannot write ACL policies (docs/downstream.md). From the policy files
named by the settings it writes

- ``capbroker-scope-<name>`` for every ``vault-kv`` and ``database`` scope (exact paths,
  ``read``/``list`` only) and removes those of scopes no longer defined;
- ``capbroker-task``, the task tokens' own policy;
- the token role ``capbroker-task`` (orphan, ``capbroker-task`` and ``capbroker-scope-*``
  only, explicit max TTL), the broker's only way to create a token;
- the Transit key ``capbroker-task-tokens`` that seals task tokens in the state store.

It warns about a database role whose Vault ``max_ttl`` exceeds its scope's ``max_ttl`` (the
lease dies with the capability's child token anyway; the warning says the role is wider
than the policy means). ``--dry-run`` prints the policies and the role, and touches nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from broker.config import Settings, SettingsError, load_settings
from broker.errors import PolicyInvalid
from broker.policy.loader import load_policy
from broker.policy.model import Policy
from broker.policy.vault import (
    SCOPE_POLICY_PREFIX,
    TASK_POLICY,
    TASK_POLICY_HCL,
    TASK_ROLE,
    TASK_SEAL_KEY,
    scope_policies,
    task_role,
)

#: an admin command, not the request path: Vault gets this long per call
ADMIN_TIMEOUT = 10


def register(commands: Any) -> None:
    vault = commands.add_parser("vault", help="Vault setup for downstream credentials (admin)")
    sub = vault.add_subparsers(dest="vault_command", required=True, metavar="COMMAND")
    sync = sub.add_parser(
        "sync", help="write the per-scope Vault policies and the token role (with VAULT_TOKEN, an admin's)"
    )
    sync.add_argument("--config", required=True, help="settings file (vault_addr, scopes, transit_mount)")
    sync.add_argument("--dry-run", action="store_true", help="print the HCL and the role; change nothing")
    sync.set_defaults(run=run_sync)


def _admin_token() -> str:
    return os.environ.get("VAULT_TOKEN") or os.environ.get("BAO_TOKEN") or ""


def _plan(policy: Policy) -> dict[str, str]:
    return {TASK_POLICY: TASK_POLICY_HCL, **scope_policies(policy)}


def run_sync(args: argparse.Namespace) -> int:
    admin = _admin_token()
    if not admin and not args.dry_run:
        print("broker vault sync: set VAULT_TOKEN (or BAO_TOKEN) to an admin's Vault token", file=sys.stderr)
        return 2
    try:
        # the settings' own token (the broker's) is never read: the admin's stands in for it
        env = {**os.environ, "BROKER_VAULT_TOKEN": admin or "dry-run"}
        settings = load_settings(args.config, env)
        policy = load_policy(settings.scopes)
    except (SettingsError, OSError) as e:
        print(f"broker vault sync: {e}", file=sys.stderr)
        return 2
    except PolicyInvalid as e:
        print(f"broker vault sync: the policy files are invalid ({e.reason})", file=sys.stderr)
        return 1
    plan = _plan(policy)
    if args.dry_run:
        for name, hcl in plan.items():
            print(f"# --- policy {name}\n{hcl}")
        print(f"# --- token role auth/token/roles/{TASK_ROLE}\n{json.dumps(task_role(), indent=2)}")
        return 0
    if not settings.vault_addr:
        print("broker vault sync: the settings name no vault_addr", file=sys.stderr)
        return 2
    try:
        _sync(settings, admin, policy, plan)
    except Exception as e:  # noqa: BLE001 -- an admin command: say what failed, never a token
        print(f"broker vault sync: Vault refused or is unavailable ({type(e).__name__})", file=sys.stderr)
        return 1
    return 0


def _sync(settings: Settings, admin: str, policy: Policy, plan: dict[str, str]) -> None:
    from broker.backends.vault_clients import hvac_client
    from broker.runtime import vault_verify

    transit = settings.transit_mount
    # vault_addr may list an HA cluster's nodes: each request goes to one that performs it
    client = hvac_client(settings.vault_addr, token=admin, timeout=ADMIN_TIMEOUT, verify=vault_verify(settings))
    try:
        for name, hcl in plan.items():
            client.sys.create_or_update_acl_policy(name, hcl)
            print(f"wrote policy {name}")
        existing = client.sys.list_acl_policies()["data"]["keys"]
        for name in sorted(n for n in existing if n.startswith(SCOPE_POLICY_PREFIX) and n not in plan):
            client.sys.delete_acl_policy(name)
            print(f"removed policy {name} (its scope is gone)")
        client.write_data(f"auth/token/roles/{TASK_ROLE}", data=task_role())
        print(f"wrote token role {TASK_ROLE}")
        if TASK_SEAL_KEY not in _transit_keys(client, transit):
            client.secrets.transit.create_key(TASK_SEAL_KEY, key_type="aes256-gcm96", mount_point=transit)
            print(f"created Transit key {transit}/{TASK_SEAL_KEY}")
        for warning in _database_ttl_warnings(client, policy):
            print(f"warning: {warning}", file=sys.stderr)
    finally:
        client.adapter.close()


def _transit_keys(client: Any, transit: str) -> list[str]:
    import hvac.exceptions

    try:
        return list(client.secrets.transit.list_keys(mount_point=transit)["data"]["keys"])
    except hvac.exceptions.InvalidPath:
        return []


def _database_ttl_warnings(client: Any, policy: Policy) -> list[str]:
    """A database role whose Vault max TTL exceeds its scope's ``max_ttl``."""
    import hvac.exceptions

    out = []
    for scope in policy.scopes.values():
        if scope.kind != "database":
            continue
        mount, _, role = scope.resource.partition("/creds/")
        try:
            data = client.read(f"{mount}/roles/{role}")
        except hvac.exceptions.VaultError:
            data = None
        if not data:
            out.append(f"scope {scope.name!r}: database role {mount}/roles/{role} could not be read")
            continue
        max_ttl = int(data["data"].get("max_ttl") or 0)
        if max_ttl == 0 or max_ttl > scope.max_ttl:
            out.append(
                f"scope {scope.name!r}: database role {role} has max_ttl {max_ttl or 'unset (the mount default)'}"
                f"{'s' if max_ttl else ''}, above the scope's max_ttl {scope.max_ttl}s"
            )
    return out
