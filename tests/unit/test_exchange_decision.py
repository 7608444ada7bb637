"""Token exchange, the pure part: the request parser and ``decide_exchange``.

Each refusal the issue names (other resource, sibling path, extra action, longer ttl,
other task, other audience, exceeding depth) has its own test; so do the rules the
service relies on (policy withdrawn since the parent was minted, delegate names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.capability import Capability, covers
from broker.delegation.exchange import (
    GRANT_TYPE,
    JWT_TOKEN_TYPE,
    ExchangeAllow,
    ExchangeRequest,
    chain_names,
    decide_exchange,
    parse_exchange_request,
)
from broker.errors import InvalidRequest
from broker.policy import Deny, Policy, load_policy
from broker.policy.requests import ScopeRequest
from broker.token import Actor, Claims
from tests.helpers import NOW, claims

POLICY = """
scopes:
  reports-write:
    kind: bucket
    resource: s3://acme-reports/agents/
    actions: [list, read, write]
    audience: storage-gateway
    max_ttl: 30m
  widgets-read:
    kind: git
    resource: github.com/acme/widgets
    actions: [read, write]
    audience: git-gateway
    max_ttl: 30m
  secure-write:
    kind: bucket
    resource: s3://secure/
    actions: [read, write]
    audience: storage-gateway
    max_ttl: 30m
    require_pop: true
agents:
  analyst:
    identity: {key: {sha256: %(a)s}}
    scopes: [reports-write, widgets-read, secure-write]
  shallow:
    identity: {key: {sha256: %(b)s}}
    scopes: [reports-write]
    max_delegation_depth: 1
"""
REPORTS = Capability.build("bucket", "s3://acme-reports/agents/t1/", ["read", "write"], "reports-write")


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    d: Path = tmp_path_factory.mktemp("pol")
    (d / "p.yaml").write_text(POLICY % {"a": "a" * 64, "b": "b" * 64})
    return load_policy(d)


def parent(**kw: Any) -> Claims:
    kw.setdefault("capabilities", [REPORTS])
    return claims(**kw)


def request(**kw: Any) -> ExchangeRequest:
    kw.setdefault("subject_token", "x.y.z")
    kw.setdefault("actor", "helper")
    kw.setdefault("scopes", None)
    return ExchangeRequest(**kw)


def narrowed(scope: str, resource: str | None = None, actions: tuple[str, ...] | None = None) -> tuple[ScopeRequest]:
    return (ScopeRequest(scope, resource, actions),)


def allow(result: object) -> ExchangeAllow:
    assert isinstance(result, ExchangeAllow), result
    return result


def deny(result: object, code: str) -> Deny:
    assert isinstance(result, Deny), result
    assert result.code == code, result
    return result


# ------------------------------------------------------------------ what is allowed


def test_without_scopes_the_delegate_gets_the_parents_capabilities(policy: Policy) -> None:
    got = allow(decide_exchange(parent(), request(), policy, now=NOW + 10))
    assert got.capabilities == (REPORTS,)
    assert got.act == Actor("agent:analyst")
    assert got.root is policy.agents["analyst"]
    assert got.ttl == 290  # the parent's remaining life, under the 5 min default


def test_a_deeper_resource_and_fewer_actions_are_a_narrowing(policy: Policy) -> None:
    entry = narrowed("reports-write", "s3://acme-reports/agents/t1/sub/", ("read",))
    got = allow(decide_exchange(parent(), request(scopes=entry), policy, now=NOW))
    assert got.capabilities == (
        Capability.build("bucket", "s3://acme-reports/agents/t1/sub/", ["read"], "reports-write"),
    )
    assert covers(REPORTS, got.capabilities[0])


def test_the_chain_grows_by_the_parents_subject(policy: Policy) -> None:
    mid = parent(agent="helper", act=Actor("agent:analyst"))
    got = allow(decide_exchange(mid, request(actor="helper-2"), policy, now=NOW))
    assert got.act == Actor("agent:helper", Actor("agent:analyst"))
    assert got.depth == 2
    assert got.root.name == "analyst"


def test_an_explicit_shorter_ttl_is_kept(policy: Policy) -> None:
    assert allow(decide_exchange(parent(), request(ttl=60), policy, now=NOW)).ttl == 60


# ------------------------------------------------------------------ every widening is refused


def test_another_resource_is_refused(policy: Policy) -> None:
    entry = narrowed("reports-write", "s3://acme-reports/agents/t2/")
    deny(decide_exchange(parent(), request(scopes=entry), policy, now=NOW), "scope_not_granted")


def test_a_sibling_path_is_refused(policy: Policy) -> None:
    entry = narrowed("reports-write", "s3://acme-reports/agents/t1-old/")
    deny(decide_exchange(parent(), request(scopes=entry), policy, now=NOW), "scope_not_granted")


def test_the_parent_directory_is_refused(policy: Policy) -> None:
    entry = narrowed("reports-write", "s3://acme-reports/agents/")
    deny(decide_exchange(parent(), request(scopes=entry), policy, now=NOW), "scope_not_granted")


def test_an_extra_action_is_refused(policy: Policy) -> None:
    entry = narrowed("reports-write", None, ("list", "read"))  # the parent has read, write
    deny(decide_exchange(parent(), request(scopes=entry), policy, now=NOW), "scope_not_granted")


def test_a_scope_the_parent_does_not_carry_is_refused(policy: Policy) -> None:
    entry = narrowed("widgets-read")  # granted to the agent, but not in this token
    deny(decide_exchange(parent(), request(scopes=entry), policy, now=NOW), "scope_not_granted")


def test_a_longer_ttl_than_the_parent_has_left_is_refused(policy: Policy) -> None:
    d = deny(decide_exchange(parent(), request(ttl=291), policy, now=NOW + 10), "ttl_exceeds_max")
    assert "290" in d.reason


def test_another_task_is_refused(policy: Policy) -> None:
    deny(decide_exchange(parent(), request(task="t2"), policy, now=NOW), "forbidden")


def test_another_audience_is_refused(policy: Policy) -> None:
    deny(decide_exchange(parent(), request(audience="git-gateway"), policy, now=NOW), "scope_not_granted")


def test_the_same_task_and_audience_named_explicitly_are_fine(policy: Policy) -> None:
    allow(decide_exchange(parent(), request(task="t1", audience="storage-gateway"), policy, now=NOW))


def test_exceeding_the_default_depth_of_three_is_refused(policy: Policy) -> None:
    chain = Actor("agent:d2", Actor("agent:d1", Actor("agent:analyst")))
    at_three = parent(agent="d3", act=chain)
    d = deny(decide_exchange(at_three, request(actor="d4"), policy, now=NOW), "forbidden")
    assert "depth 4" in d.reason
    allow(decide_exchange(parent(agent="d2", act=chain.act), request(actor="d3"), policy, now=NOW))


def test_the_root_agents_own_depth_limit_applies(policy: Policy) -> None:
    first = parent(agent="d1", act=Actor("agent:shallow"))
    deny(decide_exchange(first, request(actor="d2"), policy, now=NOW), "forbidden")
    allow(decide_exchange(parent(agent="shallow"), request(actor="d1"), policy, now=NOW))


def test_a_delegate_cannot_take_a_policy_agents_name(policy: Policy) -> None:
    deny(decide_exchange(parent(), request(actor="shallow"), policy, now=NOW), "forbidden")


def test_a_delegate_already_in_the_chain_is_refused(policy: Policy) -> None:
    mid = parent(agent="helper", act=Actor("agent:analyst"))
    deny(decide_exchange(mid, request(actor="helper"), policy, now=NOW), "forbidden")


def test_a_scope_withdrawn_from_the_policy_cannot_be_passed_down(policy: Policy) -> None:
    stray = Capability.build("bucket", "s3://acme-reports/agents/t1/", ["read"], "reports-write")
    not_granted = parent(
        agent="shallow", capabilities=[Capability.build("git", "github.com/acme/widgets", ["read"], "widgets-read")]
    )
    deny(decide_exchange(not_granted, request(), policy, now=NOW), "scope_not_granted")
    allow(decide_exchange(parent(agent="shallow", capabilities=[stray]), request(), policy, now=NOW))


def test_a_root_agent_removed_from_the_policy_ends_delegation(policy: Policy) -> None:
    deny(decide_exchange(parent(agent="gone"), request(), policy, now=NOW), "forbidden")


def test_a_require_pop_scope_needs_a_bound_delegate(policy: Policy) -> None:
    secure = Capability.build("bucket", "s3://secure/x/", ["read"], "secure-write")
    deny(decide_exchange(parent(capabilities=[secure]), request(), policy, now=NOW), "invalid_dpop_proof")
    allow(decide_exchange(parent(capabilities=[secure]), request(), policy, now=NOW, pop=True))


def test_an_expired_parent_gets_nothing(policy: Policy) -> None:
    deny(decide_exchange(parent(), request(), policy, now=NOW + 300), "forbidden")


def test_chain_names_lists_subject_then_delegators() -> None:
    c = parent(agent="c", act=Actor("agent:b", Actor("agent:a")))
    assert chain_names(c) == ("c", "b", "a")


# ------------------------------------------------------------------ parsing


def body(**kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "grant_type": GRANT_TYPE,
        "subject_token": "a.b.c",
        "subject_token_type": JWT_TOKEN_TYPE,
        "actor": "helper",
    }
    out.update(kw)
    return {k: v for k, v in out.items() if v is not None}


def test_parse_a_full_json_request() -> None:
    got = parse_exchange_request(
        body(scopes=["a", {"scope": "b", "actions": ["read"]}], ttl="2m", audience="gw", task="t1")
    )
    assert got.scopes == (ScopeRequest("a"), ScopeRequest("b", None, ("read",)))
    assert (got.ttl, got.audience, got.task, got.actor) == (120, "gw", "t1", "helper")


def test_parse_the_rfc_form_with_space_separated_scope() -> None:
    got = parse_exchange_request(body(scope="a b", ttl="60"))
    assert got.scopes == (ScopeRequest("a"), ScopeRequest("b"))
    assert got.ttl == 60


@pytest.mark.parametrize(
    "change",
    [
        {"grant_type": "client_credentials"},
        {"grant_type": None},
        {"subject_token": None},
        {"subject_token": ""},
        {"subject_token": "x" * 9000},
        {"subject_token_type": "urn:ietf:params:oauth:token-type:id_token"},
        {"subject_token_type": None},
        {"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
        {"actor": None},
        {"actor": "Helper"},
        {"actor": 7},
        {"audience": "bad audience"},
        {"task": "-bad"},
        {"ttl": "0s"},
        {"ttl": "forever"},
        {"scope": "a", "scopes": ["a"]},
        {"scopes": "a"},
        {"scopes": []},
        {"scope": "a  b"},
        {"extra": 1},
    ],
)
def test_parse_refuses(change: dict[str, Any]) -> None:
    raw = body()
    for k, v in change.items():
        if v is None:
            raw.pop(k, None)
        else:
            raw[k] = v
    with pytest.raises(InvalidRequest):
        parse_exchange_request(raw)


def test_parse_refuses_a_non_object() -> None:
    with pytest.raises(InvalidRequest):
        parse_exchange_request(["grant_type"])
