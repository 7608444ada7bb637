"""``decide``: would this agent get these capabilities? A value, decided once.

Empty means deny; every path that is not an explicit allow is a ``Deny`` with a stable
code. The reasons are for the audit log and ``explain``, not for the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.capability import Budget, Capability, covers
from broker.errors import BrokerError
from broker.policy.model import DEFAULT_KV_USES, DEFAULT_TTL, Agent, Policy, Scope
from broker.policy.requests import MintRequest, ScopeRequest
from broker.policy.sizes import format_size
from broker.policy.vault import is_downstream, scope_policy_name


@dataclass(frozen=True, slots=True)
class TokenPlan:
    """One token to mint: one audience, the capabilities it carries."""

    audience: str
    capabilities: tuple[Capability, ...]


@dataclass(frozen=True, slots=True)
class Allow:
    tokens: tuple[TokenPlan, ...]
    ttl: int
    max_ttl: int
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Deny:
    code: str
    reason: str
    reasons: tuple[str, ...] = ()


Decision = Allow | Deny


def budget_text(budget: Budget) -> str:
    parts = []
    if budget.requests is not None:
        parts.append(f"{budget.requests} requests")
    if budget.bytes is not None:
        parts.append(f"{format_size(budget.bytes)} of bodies")
    return " and ".join(parts)


class _Refuse(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _narrow(agent: Agent, scope: Scope, entry: ScopeRequest) -> Capability:
    granted = scope.capability
    try:
        requested = Capability.build(
            scope.kind,
            entry.resource if entry.resource is not None else scope.resource,
            entry.actions if entry.actions is not None else scope.actions,
            scope.name,
            scope.budget,
        )
    except BrokerError as e:
        raise _Refuse("invalid_request", f"scope {scope.name!r}: {e.reason}") from None
    if not covers(granted, requested):
        raise _Refuse(
            "scope_not_granted",
            f"scope {scope.name!r}: {requested.resource} {list(requested.actions)} is wider than "
            f"the grant {granted.resource} {list(granted.actions)}",
        )
    if is_downstream(scope) and requested != granted:
        # its Vault credential carries the scope's own policy: a narrower one does not exist
        raise _Refuse(
            "invalid_request",
            f"scope {scope.name!r}: a {scope.kind} credential is issued for its whole scope; "
            "narrowing it is refused (define a narrower scope instead)",
        )
    return requested


def _decide(agent: Agent, request: MintRequest, policy: Policy, reasons: list[str]) -> Allow:
    caps_by_audience: dict[str, list[Capability]] = {}
    cap_ttl = min(policy.global_max_ttl, agent.max_ttl)
    cap_source = f"agent {agent.name!r} max_ttl" if agent.max_ttl < policy.global_max_ttl else "global max_ttl"
    for entry in request.scopes:
        scope = policy.scopes.get(entry.scope)
        if scope is None:
            raise _Refuse("unknown_scope", f"scope {entry.scope!r} is not defined")
        if entry.scope not in agent.scopes:
            raise _Refuse("scope_not_granted", f"agent {agent.name!r} is not granted scope {entry.scope!r}")
        if scope.require_pop and not request.pop:
            raise _Refuse("invalid_dpop_proof", f"scope {scope.name!r} requires a DPoP-bound token: send a DPoP proof")
        cap = _narrow(agent, scope, entry)
        reasons.append(
            f"scope {scope.name!r}: granted to {agent.name!r}; {cap.kind} {cap.resource} {list(cap.actions)}"
        )
        if is_downstream(scope):
            uses = f", {scope.uses or DEFAULT_KV_USES} uses" if scope.kind == "vault-kv" else ""
            reasons.append(
                f"scope {scope.name!r}: a Vault credential with policy {scope_policy_name(scope.name)!r}{uses}"
            )
        if cap.budget is not None:
            reasons.append(f"scope {scope.name!r}: gateway budget {budget_text(cap.budget)} per token")
        bucket = caps_by_audience.setdefault(scope.audience, [])
        if cap not in bucket:
            bucket.append(cap)
        if scope.max_ttl < cap_ttl:
            cap_ttl, cap_source = scope.max_ttl, f"scope {scope.name!r} max_ttl"
    ttl = DEFAULT_TTL if request.ttl is None else request.ttl
    if request.ttl is None and ttl > cap_ttl:
        ttl = cap_ttl  # the default is a suggestion; an explicit ttl above the cap is an error
    if ttl > cap_ttl:
        raise _Refuse("ttl_exceeds_max", f"ttl {ttl}s is above the {cap_source} of {cap_ttl}s")
    reasons.append(f"ttl {ttl}s within the cap of {cap_ttl}s ({cap_source})")
    tokens = tuple(TokenPlan(aud, tuple(caps)) for aud, caps in caps_by_audience.items())
    return Allow(tokens=tokens, ttl=ttl, max_ttl=cap_ttl, reasons=tuple(reasons))


def decide(agent: Agent, request: MintRequest, policy: Policy) -> Decision:
    """Allow with the capabilities to mint, one plan per audience; or Deny with a code."""
    if policy.agents.get(agent.name) is not agent:
        return Deny("forbidden", f"agent {agent.name!r} is not in the policy in force")
    reasons: list[str] = []
    try:
        return _decide(agent, request, policy, reasons)
    except _Refuse as refusal:
        return Deny(refusal.code, refusal.reason, (*reasons, refusal.reason))
