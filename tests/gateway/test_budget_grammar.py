"""``budget: {requests: N, bytes: SIZE}`` on scopes: policy grammar, lint, explain; the
optional ``budget`` member of a token's ``cap`` entries, copied at mint, kept (never
widened) through exchange, and parsed strictly by the verifier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.capability import Budget, Capability
from broker.delegation.exchange import ExchangeAllow, ExchangeRequest, decide_exchange
from broker.errors import PolicyInvalid
from broker.policy import Allow, Policy, decide, load_policy, parse_mint_request
from broker.policy.lint import lint
from broker.policy.requests import ScopeRequest
from broker.policy.sizes import parse_size
from broker.token.claims import ClaimsError, claims_from_json
from tests.helpers import NOW, claims

POLICY = """
scopes:
  api:
    kind: http
    resource: https://api.test/v1/
    actions: [GET, POST]
    audience: billing-api
    max_ttl: 10m
    budget: {requests: 100, bytes: 500MB}
  kv:
    kind: vault-kv
    resource: secret/data/x
    actions: [read]
    audience: vault
    max_ttl: 10m
    budget: {requests: 5}
agents:
  a:
    identity: {key: {sha256: %s}}
    scopes: [api, kv]
    rate: 10/min
"""


def load(tmp_path: Path, text: str) -> Policy:
    (tmp_path / "p.yaml").write_text(text % ("a" * 64))
    return load_policy(tmp_path)


def test_the_grammar(tmp_path: Path) -> None:
    policy = load(tmp_path, POLICY)
    assert policy.scopes["api"].budget == Budget(100, 500_000_000)
    assert policy.scopes["kv"].budget == Budget(requests=5)
    assert policy.scopes["api"].capability.budget == Budget(100, 500_000_000)


@pytest.mark.parametrize(
    "budget",
    [
        "{}",
        "{requests: 0}",
        "{requests: -1}",
        "{bytes: 5XB}",
        "{bytes: 1.5GB}",
        "{requests: 1, other: 2}",
        "5",
        "{requests: true}",
        "{bytes: '0B'}",
    ],
)
def test_bad_budgets_are_refused_with_their_line(tmp_path: Path, budget: str) -> None:
    with pytest.raises(PolicyInvalid) as e:
        load(tmp_path, POLICY.replace("{requests: 100, bytes: 500MB}", budget))
    assert any(issue.line == 9 for issue in e.value.issues), e.value.issues


def test_sizes() -> None:
    assert parse_size("1MiB") == 1 << 20
    assert parse_size("2GB") == 2_000_000_000
    assert parse_size(512) == 512
    for bad in ("1 MB", "1mb", "0B", True, "01MB"):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)


def test_lint_warns_of_a_budget_no_gateway_counts(tmp_path: Path) -> None:
    warnings = [str(w) for w in lint(load(tmp_path, POLICY))]
    assert any("'kv' sets a budget" in w for w in warnings)
    assert not any("'api' sets a budget" in w for w in warnings)


def test_mint_copies_the_budget_and_explain_says_so(tmp_path: Path) -> None:
    policy = load(tmp_path, POLICY)
    decision = decide(policy.agents["a"], parse_mint_request({"task": "t", "scopes": ["api"]}), policy)
    assert isinstance(decision, Allow)
    (plan,) = decision.tokens
    (cap,) = plan.capabilities
    assert cap.budget == Budget(100, 500_000_000)
    assert "scope 'api': gateway budget 100 requests and 500MB of bodies per token" in decision.reasons


def test_the_token_carries_it_last_and_only_when_set() -> None:
    cap = Capability.build("http", "https://api.test/v1/", ["GET"], "api", Budget(3, 1024))
    assert list(cap.to_json()) == ["kind", "resource", "actions", "scope", "budget"]
    assert cap.to_json()["budget"] == {"requests": 3, "bytes": 1024}
    plain = Capability.build("http", "https://api.test/v1/", ["GET"], "api")
    assert "budget" not in plain.to_json()
    payload = claims(capabilities=[cap]).to_json()
    assert claims_from_json(payload).cap[0].budget == Budget(3, 1024)


@pytest.mark.parametrize(
    "budget",
    [
        {},
        {"requests": 0},
        {"requests": True},
        {"requests": 1.5},
        {"requests": "3"},
        {"requests": 1, "x": 1},
        {"bytes": 2**60},
        None,
        [1],
    ],
)
def test_the_verifier_parses_it_strictly(budget: Any) -> None:
    payload = claims(capabilities=[Capability.build("http", "https://api.test/v1/", ["GET"], "api")]).to_json()
    payload["cap"][0]["budget"] = budget
    with pytest.raises(ClaimsError):
        claims_from_json(payload)


def test_exchange_keeps_the_budget_never_widens_it(tmp_path: Path) -> None:
    policy = load(tmp_path, POLICY)
    cap = Capability.build("http", "https://api.test/v1/", ["GET", "POST"], "api", Budget(100, 500_000_000))
    parent = claims(agent="a", audience="billing-api", capabilities=[cap], task="t")
    for scopes in (None, (ScopeRequest("api", "https://api.test/v1/x/", ("GET",)),)):
        request = ExchangeRequest(subject_token="x.y.z", actor="helper", scopes=scopes)
        got = decide_exchange(parent, request, policy, now=NOW)
        assert isinstance(got, ExchangeAllow), got
        assert all(c.budget == Budget(100, 500_000_000) for c in got.capabilities)
