"""decide(): narrowing, never widening; ttl caps; stable deny codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.errors import InvalidRequest
from broker.policy import Allow, Deny, Policy, decide, load_policy, parse_mint_request

SCOPES = Path(__file__).resolve().parents[2] / "scopes"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(SCOPES)


def run(policy: Policy, agent: str, body: dict[str, Any]) -> Allow | Deny:
    return decide(policy.agents[agent], parse_mint_request(body), policy)


def narrowed(scope: str, resource: str | None = None, actions: list[str] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"scope": scope}
    if resource is not None:
        entry["resource"] = resource
    if actions is not None:
        entry["actions"] = actions
    return entry


def test_plain_scope_grants_the_whole_scope(policy: Policy) -> None:
    d = run(policy, "analyst", {"task": "t1", "scopes": ["reports-write"]})
    assert isinstance(d, Allow)
    (plan,) = d.tokens
    assert plan.audience == "storage-gateway"
    assert plan.capabilities[0] == policy.scopes["reports-write"].capability
    assert d.ttl == 300


def test_narrowing_to_a_deeper_resource_and_fewer_actions(policy: Policy) -> None:
    d = run(
        policy,
        "analyst",
        {"task": "t1", "scopes": [narrowed("reports-write", "s3://acme-reports/agents/t1/", ["write"])]},
    )
    assert isinstance(d, Allow)
    cap = d.tokens[0].capabilities[0]
    assert (cap.resource, cap.actions) == ("s3://acme-reports/agents/t1/", ("write",))


@pytest.mark.parametrize(
    ("entry", "code"),
    [
        (narrowed("reports-write", "s3://acme-reports/agents-old/"), "scope_not_granted"),  # sibling by prefix
        (narrowed("reports-write", "s3://acme-reports/"), "scope_not_granted"),  # parent
        (narrowed("reports-write", "s3://acme-exports/nightly/"), "scope_not_granted"),  # other bucket
        (narrowed("reports-write", actions=["delete"]), "scope_not_granted"),  # extra action
        (narrowed("reports-write", actions=["write", "delete"]), "scope_not_granted"),
        (narrowed("reports-write", actions=["fly"]), "invalid_request"),  # not an action of the kind
        (narrowed("reports-write", "s3://acme-reports/agents/../x/"), "invalid_request"),
        (narrowed("reports-write", "github.com/acme/widgets"), "invalid_request"),  # other kind's form
        (narrowed("widgets-read"), "scope_not_granted"),  # exists, not granted to analyst
        (narrowed("no-such-scope"), "unknown_scope"),
    ],
)
def test_widening_or_wrong_requests_are_denied(policy: Policy, entry: dict[str, Any], code: str) -> None:
    d = run(policy, "analyst", {"task": "t1", "scopes": [entry]})
    assert isinstance(d, Deny)
    assert d.code == code


def test_ttl_above_the_tightest_cap_is_an_error_not_a_clamp(policy: Policy) -> None:
    # reports-write caps at 10m, analyst at 30m: the scope's cap wins
    d = run(policy, "analyst", {"task": "t1", "scopes": ["exports-read", "reports-write"], "ttl": "11m"})
    assert isinstance(d, Deny)
    assert d.code == "ttl_exceeds_max"
    assert "reports-write" in d.reason
    ok = run(policy, "analyst", {"task": "t1", "scopes": ["exports-read", "reports-write"], "ttl": 600})
    assert isinstance(ok, Allow)
    assert ok.ttl == 600


def test_default_ttl_shrinks_to_a_smaller_cap(policy: Policy) -> None:
    # widgets-review-comment caps at 5m = the default; weather-api-key too
    d = run(policy, "reviewer", {"task": "t1", "scopes": ["widgets-review-comment"]})
    assert isinstance(d, Allow)
    assert d.ttl == 300 == d.max_ttl


def test_one_token_per_audience(policy: Policy) -> None:
    d = run(
        policy, "reviewer", {"task": "t1", "scopes": ["widgets-read", "widgets-pulls-read", "widgets-review-comment"]}
    )
    assert isinstance(d, Allow)
    by_aud = {p.audience: [c.scope for c in p.capabilities] for p in d.tokens}
    assert by_aud == {"git-gateway": ["widgets-read"], "github-proxy": ["widgets-pulls-read", "widgets-review-comment"]}


def test_require_pop_scope_needs_a_bound_token(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "scopes:\n  s:\n    kind: git\n    resource: github.com/a/b\n    actions: [read]\n    audience: gw\n"
        "    max_ttl: 5m\n    require_pop: true\n"
        "agents:\n  a:\n    identity: {key: {sha256: " + "a" * 64 + "}}\n    scopes: [s]\n"
    )
    policy = load_policy(tmp_path)
    agent = policy.agents["a"]
    denied = decide(agent, parse_mint_request({"task": "t", "scopes": ["s"]}), policy)
    assert isinstance(denied, Deny)
    assert denied.code == "invalid_dpop_proof"
    assert isinstance(decide(agent, parse_mint_request({"task": "t", "scopes": ["s"]}, pop=True), policy), Allow)


def test_agent_from_another_policy_is_refused(policy: Policy, tmp_path: Path) -> None:
    other = load_policy(SCOPES)
    d = decide(other.agents["analyst"], parse_mint_request({"task": "t", "scopes": ["exports-read"]}), policy)
    assert isinstance(d, Deny)
    assert d.code == "forbidden"


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"task": "t1"},
        {"task": "t1", "scopes": []},
        {"task": "t1", "scopes": "reports-write"},
        {"task": "", "scopes": ["x"]},
        {"task": "-bad", "scopes": ["x"]},
        {"task": "a" * 129, "scopes": ["x"]},
        {"task": "t 1", "scopes": ["x"]},
        {"task": "t1", "scopes": ["x"], "ttl": 0},
        {"task": "t1", "scopes": ["x"], "ttl": -5},
        {"task": "t1", "scopes": ["x"], "ttl": True},
        {"task": "t1", "scopes": ["x"], "ttl": 1.5},
        {"task": "t1", "scopes": ["x"], "ttl": "5 minutes"},
        {"task": "t1", "scopes": ["x"], "extra": 1},
        {"task": "t1", "scopes": [{"scope": "x", "resourse": "y"}]},
        {"task": "t1", "scopes": [{"scope": "x", "actions": []}]},
        {"task": "t1", "scopes": [{"scope": "x", "actions": ["read", "read"]}]},
        {"task": "t1", "scopes": [{"scope": "x", "resource": 5}]},
        {"task": "t1", "scopes": ["Upper"]},
        {"task": "t1", "scopes": ["x"] * 17},
    ],
)
def test_malformed_mint_requests_are_invalid_request(body: object) -> None:
    with pytest.raises(InvalidRequest):
        parse_mint_request(body)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("5m", 300), ("1h", 3600), (42, 42)])
def test_durations(text: object, seconds: int) -> None:
    from broker.policy import parse_duration

    assert parse_duration(text) == seconds
