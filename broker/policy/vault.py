"""What the policy files mean in Vault (docs/downstream.md): the per-scope ACL policies, the task
policy and the token role that ``broker vault sync`` writes. Pure: text and values only.

- ``capbroker-scope-<name>`` for each ``vault-kv`` and ``database`` scope: exactly the
  scope's paths with ``read`` / ``list`` capabilities, nothing else. A ``vault-kv``
  resource ``MOUNT/data/PATH`` reads ``MOUNT/data/PATH`` (a ``/``-ended one: everything
  below it) and lists ``MOUNT/metadata/PATH``; a ``database`` resource reads
  ``MOUNT/creds/ROLE``.
- ``capbroker-task``: what a task token needs besides the scope policies: create its
  children (``auth/token/create``, where Vault keeps a child's policies within its
  parent's) and renew itself.
- The token role ``capbroker-task``: the only way the broker's runtime token creates a
  token. Orphan, no default policy, policies only ``capbroker-task`` and
  ``capbroker-scope-*``, an explicit max TTL.

Narrowing: a downstream credential is always its whole scope (``DOWNSTREAM_KINDS`` in
``broker.policy.decide``): a per-scope policy cannot express a narrower grant, and the
broker cannot write one, so a narrowed ``vault-kv`` or ``database`` request is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from broker.policy.model import Policy, Scope

#: the kinds whose capabilities come with a credential from Vault
DOWNSTREAM_KINDS: Final = frozenset({"vault-kv", "database"})
SCOPE_POLICY_PREFIX: Final = "capbroker-scope-"
TASK_POLICY: Final = "capbroker-task"
TASK_ROLE: Final = "capbroker-task"
#: a task token never lives longer than this from its creation (the role's explicit max TTL)
TASK_TOKEN_MAX_TTL: Final = 24 * 3600
#: the Transit key that seals task tokens at rest in the state store
TASK_SEAL_KEY: Final = "capbroker-task-tokens"

TASK_POLICY_HCL: Final = """\
# capbroker task token: create its own children (Vault keeps their policies within the
# task token's) and renew itself up to the role's explicit max TTL. Written by broker vault sync.
path "auth/token/create" {
  capabilities = ["update"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
"""


def scope_policy_name(scope: str) -> str:
    return f"{SCOPE_POLICY_PREFIX}{scope}"


def is_downstream(scope: Scope) -> bool:
    return scope.kind in DOWNSTREAM_KINDS


def _path(path: str, capabilities: Iterable[str]) -> str:
    caps = ", ".join(f'"{c}"' for c in capabilities)
    return f'path "{path}" {{\n  capabilities = [{caps}]\n}}\n'


def scope_policy_hcl(scope: Scope) -> str:
    """The ACL policy of one downstream scope: its paths, ``read``/``list`` only."""
    head = f"# capbroker scope {scope.name!r} ({scope.kind} {scope.resource}). Written by broker vault sync.\n"
    if scope.kind == "database":
        return head + _path(scope.resource, ["read"])
    if scope.kind != "vault-kv":
        raise ValueError(f"scope {scope.name!r} of kind {scope.kind} has no Vault policy")
    mount, _, rest = scope.resource.partition("/data/")
    blocks = []
    subtree = scope.resource.endswith("/")
    if "read" in scope.actions:
        blocks.append(_path(scope.resource + "*" if subtree else scope.resource, ["read"]))
    if "list" in scope.actions:
        listed = f"{mount}/metadata/{rest}"
        blocks.append(_path(listed, ["list"]))
        if subtree:
            blocks.append(_path(listed + "*", ["list"]))
    return head + "".join(blocks)


def scope_policies(policy: Policy) -> dict[str, str]:
    """Every downstream scope's policy, by Vault policy name."""
    return {scope_policy_name(s.name): scope_policy_hcl(s) for s in policy.scopes.values() if is_downstream(s)}


def agent_scope_policies(policy: Policy, agent: str) -> tuple[str, ...]:
    """The scope policies a task token of ``agent`` carries: every downstream scope the
    agent is granted (its children get a subset: exactly the scopes of one capability)."""
    granted = policy.agents[agent].scopes
    return tuple(sorted(scope_policy_name(n) for n in granted if is_downstream(policy.scopes[n])))


def task_role(max_ttl: int = TASK_TOKEN_MAX_TTL) -> dict[str, object]:
    """The token role's parameters (``auth/token/roles/capbroker-task``)."""
    return {
        "allowed_policies": [TASK_POLICY],
        "allowed_policies_glob": [f"{SCOPE_POLICY_PREFIX}*"],
        "orphan": True,
        "renewable": True,
        "token_explicit_max_ttl": max_ttl,
        "token_no_default_policy": True,
        "token_type": "service",
    }
