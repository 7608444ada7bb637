"""Warnings for policy that is valid but probably wider than meant.

``broker policy check --strict`` turns each warning into an error.
"""

from __future__ import annotations

from broker.capability import is_root_resource
from broker.errors import PolicyIssue
from broker.policy.model import Policy

#: the kinds a gateway serves, and so counts budgets for (docs/gateway.md)
GATEWAY_KINDS = frozenset({"git", "http", "bucket"})
#: git write tokens live at most this long before a warning
GIT_WRITE_MAX_TTL = 15 * 60
#: a vault-kv scope's ``uses:`` above this is probably not what a task needs
KV_MANY_USES = 100
#: an agent whose scopes reach more audiences than this is probably doing several jobs
DEFAULT_MAX_AUDIENCES = 3


def lint(policy: Policy, *, max_audiences: int = DEFAULT_MAX_AUDIENCES) -> list[PolicyIssue]:
    warnings: list[PolicyIssue] = []

    def warn(file: str, line: int, message: str) -> None:
        warnings.append(PolicyIssue(file, line, message, severity="warning"))

    used = {name for agent in policy.agents.values() for name in agent.scopes}
    for scope in policy.scopes.values():
        at = scope.where
        if is_root_resource(scope.kind, scope.resource):
            warn(at.file, at.line, f"scope {scope.name!r} grants a whole {scope.kind} root {scope.resource}")
        if scope.kind == "git" and "write" in scope.actions and scope.max_ttl > GIT_WRITE_MAX_TTL:
            warn(
                at.file,
                at.line,
                f"scope {scope.name!r} gives git write for up to {scope.max_ttl}s; "
                f"keep write tokens at {GIT_WRITE_MAX_TTL}s or less",
            )
        if scope.kind == "vault-kv" and scope.uses is not None and scope.uses > KV_MANY_USES:
            warn(
                at.file,
                at.line,
                f"scope {scope.name!r} gives a Vault token {scope.uses} uses; "
                f"a token that reads one secret needs a few ({KV_MANY_USES} or less)",
            )
        if scope.budget is not None and scope.kind not in GATEWAY_KINDS:
            warn(
                at.file,
                at.line,
                f"scope {scope.name!r} sets a budget, but no gateway serves kind {scope.kind!r}: nothing counts it",
            )
        if scope.name not in used:
            warn(at.file, at.line, f"scope {scope.name!r} is granted to no agent")
    for agent in policy.agents.values():
        audiences = sorted({policy.scopes[s].audience for s in agent.scopes})
        if len(audiences) > max_audiences:
            warn(
                agent.where.file,
                agent.where.line,
                f"agent {agent.name!r} reaches {len(audiences)} audiences ({', '.join(audiences)}); "
                f"more than {max_audiences} suggests one agent doing several jobs",
            )
        if agent.rate is None:
            warn(agent.where.file, agent.where.line, f"agent {agent.name!r} has no rate limit")
    return sorted(warnings, key=lambda w: (w.file, w.line, w.message))
