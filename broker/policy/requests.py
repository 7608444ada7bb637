"""Mint requests, parsed strictly from their JSON form (docs/api.md)."""

from __future__ import annotations

from dataclasses import dataclass

from broker.capability.names import is_name, is_task
from broker.errors import InvalidRequest, quoted
from broker.policy.durations import parse_duration

MAX_SCOPES_PER_REQUEST = 16


@dataclass(frozen=True, slots=True)
class ScopeRequest:
    """One entry of ``scopes``: a scope name, optionally narrowed."""

    scope: str
    resource: str | None = None
    actions: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class MintRequest:
    task: str
    scopes: tuple[ScopeRequest, ...]
    ttl: int | None = None  # seconds; None means the default
    pop: bool = False  # the request carries a proof-of-possession key


def refuse_unknown_fields(value: dict[object, object], allowed: set[str], where: str) -> None:
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise InvalidRequest(f"unknown field(s) in {where}: {quoted(unknown)}")
    nulls = [k for k, v in value.items() if v is None]
    if nulls:
        raise InvalidRequest(f"null is not a value in {where} (leave the field out): {quoted(nulls)}")


def scope_entry(value: object) -> ScopeRequest:
    if isinstance(value, str):
        if not is_name(value):
            raise InvalidRequest("a scope name is [a-z0-9][a-z0-9-]{0,62}")
        return ScopeRequest(value)
    if not isinstance(value, dict):
        raise InvalidRequest("each scope is a name or an object {scope, resource?, actions?}")
    refuse_unknown_fields(value, {"scope", "resource", "actions"}, "a scope entry")
    name = value.get("scope")
    if not is_name(name):
        raise InvalidRequest("each scope object needs a valid 'scope' name")
    resource = value.get("resource")
    if resource is not None and not isinstance(resource, str):
        raise InvalidRequest("'resource' must be a string")
    actions = value.get("actions")
    if actions is not None:
        if not isinstance(actions, list) or not actions or not all(isinstance(a, str) for a in actions):
            raise InvalidRequest("'actions' must be a non-empty list of strings")
        if len(set(actions)) != len(actions):
            raise InvalidRequest("'actions' must not repeat")
        actions = tuple(actions)
    return ScopeRequest(name, resource, actions)


def parse_mint_request(body: object, *, pop: bool = False) -> MintRequest:
    """``body`` is the decoded JSON object; raises ``InvalidRequest`` on anything off."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    refuse_unknown_fields(body, {"task", "scopes", "ttl"}, "the request")
    task = body.get("task")
    if task is None:
        raise InvalidRequest("'task' is required: the task id, [A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
    if not is_task(task):
        raise InvalidRequest("'task' must match [A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
    scopes = body.get("scopes")
    if scopes is None:
        raise InvalidRequest("'scopes' is required: a non-empty list of scope names or {scope, resource?, actions?}")
    if not isinstance(scopes, list) or not scopes:
        raise InvalidRequest("'scopes' must be a non-empty list")
    if len(scopes) > MAX_SCOPES_PER_REQUEST:
        raise InvalidRequest(f"at most {MAX_SCOPES_PER_REQUEST} scopes per request")
    ttl = body.get("ttl")
    return MintRequest(
        task=task,
        scopes=tuple(scope_entry(s) for s in scopes),
        ttl=None if ttl is None else parse_duration(ttl),
        pop=pop,
    )
