"""Token exchange (RFC 8693 shape, docs/api.md): narrow a capability token for a sub-agent.

``parse_exchange_request`` reads the body strictly; ``decide_exchange`` decides, as a
value, what the delegated token may carry. The rules, each a ``Deny`` with a stable code:

- the result is covered by the presented (parent) token: every capability is covered by
  one of the parent's, same audience, same task, ``exp`` no later than the parent's;
- and by the policy in force: the agent at the root of the chain (the task owner) must
  still exist and still hold each scope, so a grant withdrawn since the parent was minted
  cannot be passed down;
- the chain (``act``) grows by one and may not exceed the root agent's
  ``max_delegation_depth``;
- the delegate is a fresh name: never a policy agent's name (a sub-agent cannot borrow a
  configured agent's identity) and never a name already in the chain.

The signature, times and revocation of the parent are the service's to check first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

from broker.capability import Capability, covers
from broker.capability.budget import tightest
from broker.capability.names import is_audience, is_name, is_task
from broker.errors import BrokerError, InvalidRequest
from broker.policy.decide import Deny
from broker.policy.durations import parse_duration
from broker.policy.model import DEFAULT_TTL, Agent, Policy
from broker.policy.requests import MAX_SCOPES_PER_REQUEST, ScopeRequest, refuse_unknown_fields, scope_entry
from broker.token.claims import Actor, Claims

GRANT_TYPE: Final = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 -- a type name
ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 -- a type name
_TOKEN_TYPES: Final = frozenset({JWT_TOKEN_TYPE, ACCESS_TOKEN_TYPE})
_FIELDS: Final = frozenset(
    {
        "grant_type",
        "subject_token",
        "subject_token_type",
        "requested_token_type",
        "actor",
        "scope",
        "scopes",
        "audience",
        "task",
        "ttl",
    }
)
MAX_SUBJECT_TOKEN: Final = 8192


@dataclass(frozen=True, slots=True)
class ExchangeRequest:
    subject_token: str
    actor: str  # the sub-agent's name: the delegated token's ``sub`` is agent:<actor>
    scopes: tuple[ScopeRequest, ...] | None  # None: every capability of the parent
    audience: str | None = None
    task: str | None = None
    ttl: int | None = None


@dataclass(frozen=True, slots=True)
class ExchangeAllow:
    capabilities: tuple[Capability, ...]
    ttl: int
    act: Actor  # the new token's chain: the parent's subject, then the parent's chain
    root: Agent  # the agent at the root of the chain: owns the task, pays the rate
    reasons: tuple[str, ...]

    @property
    def depth(self) -> int:
        return self.act.depth


def _text(body: dict[object, object], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"{name!r} is required")
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{name!r} must be a non-empty string")
    return value


def _scopes(body: dict[object, object]) -> tuple[ScopeRequest, ...] | None:
    if "scope" in body and "scopes" in body:
        raise InvalidRequest("give 'scope' (space-separated names) or 'scopes' (a list), not both")
    if "scope" in body:
        text = _text(body, "scope") or ""
        entries: list[object] = list(text.split(" "))
    elif "scopes" in body:
        listed = body["scopes"]
        if not isinstance(listed, list):
            raise InvalidRequest("'scopes' must be a list")
        entries = listed
    else:
        return None
    if not entries or len(entries) > MAX_SCOPES_PER_REQUEST:
        raise InvalidRequest(f"1 to {MAX_SCOPES_PER_REQUEST} scopes")
    return tuple(scope_entry(e) for e in entries)


def parse_exchange_request(body: object) -> ExchangeRequest:
    """``body`` is the decoded JSON object or form; raises ``InvalidRequest`` on anything off."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object or a form")
    refuse_unknown_fields(body, set(_FIELDS), "the request")
    if _text(body, "grant_type", required=True) != GRANT_TYPE:
        raise InvalidRequest(f"'grant_type' must be {GRANT_TYPE}")
    if _text(body, "subject_token_type", required=True) not in _TOKEN_TYPES:
        raise InvalidRequest("'subject_token_type' must be the jwt or access_token type")
    requested_type = _text(body, "requested_token_type")
    if requested_type is not None and requested_type not in _TOKEN_TYPES:
        raise InvalidRequest("'requested_token_type' must be the jwt or access_token type")
    subject_token = _text(body, "subject_token", required=True) or ""
    if len(subject_token) > MAX_SUBJECT_TOKEN:
        raise InvalidRequest("'subject_token' is too long")
    actor = _text(body, "actor", required=True)
    if not is_name(actor):
        raise InvalidRequest("'actor' (the sub-agent's name) is [a-z0-9][a-z0-9-]{0,62}")
    audience = _text(body, "audience")
    if audience is not None and not is_audience(audience):
        raise InvalidRequest("'audience' is not a valid audience")
    task = _text(body, "task")
    if task is not None and not is_task(task):
        raise InvalidRequest("'task' must match [A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
    ttl = body.get("ttl")
    if isinstance(ttl, str) and ttl.isascii() and ttl.isdigit() and len(ttl) <= 7:
        ttl = int(ttl)  # a form body carries every value as a string
    return ExchangeRequest(
        subject_token=subject_token,
        actor=actor,
        scopes=_scopes(body),
        audience=audience,
        task=task,
        ttl=None if ttl is None else parse_duration(ttl),
    )


def chain_names(claims: Claims) -> tuple[str, ...]:
    """Every agent named by a token: its subject, then each delegator up to the root."""
    return (claims.agent, *claims.delegators)


class _Refuse(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _narrowed(parent: Claims, entry: ScopeRequest) -> list[Capability]:
    """The capabilities ``entry`` asks for, each checked against the parent's."""
    held = [c for c in parent.cap if c.scope == entry.scope]
    if not held:
        raise _Refuse("scope_not_granted", f"the presented token carries no scope {entry.scope!r}")
    out: list[Capability] = []
    for cap in held if entry.resource is None else held[:1]:
        try:
            requested = Capability.build(
                cap.kind,
                entry.resource if entry.resource is not None else cap.resource,
                entry.actions if entry.actions is not None else cap.actions,
                entry.scope,
            )
        except BrokerError as e:
            raise _Refuse("invalid_request", f"scope {entry.scope!r}: {e.reason}") from None
        covering = [c for c in held if covers(c, requested)]
        if not covering:
            raise _Refuse(
                "scope_not_granted",
                f"scope {entry.scope!r}: {requested.resource} {list(requested.actions)} "
                "is wider than the presented token",
            )
        # the budget is kept, never widened: the tightest of the parent's covering entries
        out.append(dataclasses.replace(requested, budget=tightest([c.budget for c in covering])))
    return out


def _still_granted(cap: Capability, root: Agent, policy: Policy, *, audience: str, pop: bool) -> int:
    """The scope's ``max_ttl``, if the policy in force still grants ``cap`` to ``root``."""
    scope = policy.scopes.get(cap.scope)
    if scope is None or cap.scope not in root.scopes or not covers(scope.capability, cap):
        raise _Refuse("scope_not_granted", f"scope {cap.scope!r} is no longer granted to {root.name!r}")
    if scope.audience != audience:
        raise _Refuse("scope_not_granted", f"scope {cap.scope!r} is now for another audience")
    if scope.require_pop and not pop:
        raise _Refuse("invalid_dpop_proof", f"scope {scope.name!r} requires a DPoP-bound token")
    return scope.max_ttl


def _decide(
    parent: Claims, request: ExchangeRequest, policy: Policy, *, now: int, pop: bool, reasons: list[str]
) -> ExchangeAllow:
    chain = chain_names(parent)
    root = policy.agents.get(chain[-1])
    if root is None:
        raise _Refuse("forbidden", f"agent {chain[-1]!r}, the root of the chain, is not in the policy in force")
    depth = (parent.act.depth if parent.act else 0) + 1
    if depth > root.max_delegation_depth:
        raise _Refuse(
            "forbidden", f"delegation depth {depth} is over {root.name!r}'s limit of {root.max_delegation_depth}"
        )
    reasons.append(f"delegation depth {depth} within {root.name!r}'s limit of {root.max_delegation_depth}")
    if request.actor in policy.agents:
        raise _Refuse("forbidden", f"delegate {request.actor!r} is the name of a policy agent")
    if request.actor in chain:
        raise _Refuse("forbidden", f"delegate {request.actor!r} is already in the chain")
    if request.task is not None and request.task != parent.task:
        raise _Refuse("forbidden", f"task {request.task!r} is not the presented token's task")
    if request.audience is not None and request.audience != parent.aud:
        raise _Refuse("scope_not_granted", f"audience {request.audience!r} is not the presented token's")
    caps: list[Capability] = []
    if request.scopes is None:
        caps = list(parent.cap)
    else:
        for entry in request.scopes:
            caps.extend(c for c in _narrowed(parent, entry) if c not in caps)
    cap_ttl = min(policy.global_max_ttl, root.max_ttl)
    for cap in caps:
        cap_ttl = min(cap_ttl, _still_granted(cap, root, policy, audience=parent.aud, pop=pop))
        reasons.append(
            f"scope {cap.scope!r}: {cap.kind} {cap.resource} {list(cap.actions)} covered by the presented token"
        )
    remaining = parent.exp - now
    if remaining <= 0:
        raise _Refuse("forbidden", "the presented token has expired")
    limit = min(cap_ttl, remaining)
    ttl = min(DEFAULT_TTL, limit) if request.ttl is None else request.ttl
    if ttl > limit:
        raise _Refuse("ttl_exceeds_max", f"ttl {ttl}s is above {limit}s (the parent's remaining life and the caps)")
    reasons.append(f"ttl {ttl}s within {limit}s")
    act = Actor(parent.sub, parent.act)
    return ExchangeAllow(tuple(caps), ttl, act, root, tuple(reasons))


def decide_exchange(
    parent: Claims, request: ExchangeRequest, policy: Policy, *, now: int, pop: bool = False
) -> ExchangeAllow | Deny:
    """What the delegated token may carry, or why not. ``parent`` is already verified."""
    reasons: list[str] = []
    try:
        return _decide(parent, request, policy, now=now, pop=pop, reasons=reasons)
    except _Refuse as refusal:
        return Deny(refusal.code, refusal.reason, (*reasons, refusal.reason))
