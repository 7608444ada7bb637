"""A service's rate is spent only by its refused requests (issue 11): a successful
introspection costs no rate-limit round trip; past the rate a refusal is 429 with
Retry-After; refusals beyond a caller's allowance are echoed, not stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
from litestar.testing import TestClient

from broker.policy.model import DEFAULT_SERVICE_RATE
from tests.service.harness import Harness
from tests.service.support import assert_problem, introspect, minted, post_json, token_for


@pytest.fixture
def rate_calls(h: Harness, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    take_rate = h.broker.state.take_rate

    async def counted(name: str, count: int, per_seconds: int) -> float:
        calls.append(name)
        return await take_rate(name, count, per_seconds)

    monkeypatch.setattr(h.broker.state, "take_rate", counted)
    return calls


def test_successful_introspections_spend_no_rate(h: Harness, client: TestClient[Any], rate_calls: list[str]) -> None:
    token = token_for(minted(client, h, "reviewer", "t-rate", ["widgets-read"]), "git-gateway")
    rate_calls.clear()
    for _ in range(DEFAULT_SERVICE_RATE.count + 10):
        assert introspect(client, h, "git-gateway", token)["active"] is True
    assert rate_calls == []


def test_a_services_refusals_spend_its_rate_then_are_429(
    h: Harness, client: TestClient[Any], rate_calls: list[str]
) -> None:
    for _ in range(DEFAULT_SERVICE_RATE.count):
        assert_problem(post_json(client, "/v1/introspect", {"nope": 1}, h.auth("git-gateway")), 400, "invalid_request")
    assert set(rate_calls) == {"service:git-gateway"}
    r = post_json(client, "/v1/introspect", {"nope": 1}, h.auth("git-gateway"))
    assert_problem(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1
    # another service has its own rate
    assert_problem(post_json(client, "/v1/introspect", {"nope": 1}, h.auth("storage-gateway")), 400, "invalid_request")


def test_refusals_beyond_the_allowance_are_echoed_not_stored(h: Harness, client: TestClient[Any]) -> None:
    before = len(h.broker.state._events)  # type: ignore[attr-defined]  # MemoryState's stream
    for _ in range(DEFAULT_SERVICE_RATE.count + 20):
        post_json(client, "/v1/introspect", {"nope": 1}, h.auth("git-gateway"))
    stored = len(h.broker.state._events) - before  # type: ignore[attr-defined]
    assert stored == DEFAULT_SERVICE_RATE.count
    echoed = [json.loads(line) for line in h.audit_out.getvalue().splitlines()]
    unstored = [e for e in echoed if e.get("stored") is False and e.get("service") == "git-gateway"]
    assert len(unstored) == 20
    assert {e["code"] for e in unstored} == {"rate_limited"}
