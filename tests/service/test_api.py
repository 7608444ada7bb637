"""The HTTP API of SPEC 4, endpoint by endpoint, against an in-process broker."""

from __future__ import annotations

import json
import re
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from broker.errors import TokenRejected
from broker.verify import Verifier
from tests.service.harness import ISSUER, Harness, make_harness
from tests.service.support import (
    JSON,
    MAX_BODY,
    PROBLEM_JSON,
    REQUEST_ID,
    DownState,
    assert_no_secrets,
    assert_problem,
    copy_scopes,
    edit,
    introspect,
    key_hashes,
    metric,
    mint,
    minted,
    post_json,
    running,
    token_for,
)

AnyClient = TestClient[Any]
REVIEWER_ALL = ["widgets-read", "widgets-pulls-read", "widgets-review-comment"]
WIDGETS_READ = {"kind": "git", "resource": "github.com/acme/widgets", "actions": ["read"], "scope": "widgets-read"}
PULLS_READ = {
    "kind": "http",
    "resource": "https://api.github.com/repos/acme/widgets/pulls/",
    "actions": ["GET", "HEAD"],
    "scope": "widgets-pulls-read",
}
REVIEW_COMMENT = {
    "kind": "http",
    "resource": "https://api.github.com/repos/acme/widgets/pulls/",
    "actions": ["POST"],
    "scope": "widgets-review-comment",
}


def jwks_of(client: AnyClient) -> dict[str, Any]:
    r = client.get("/.well-known/jwks.json")
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()
    return doc


def verifier(client: AnyClient, audience: str) -> Verifier:
    return Verifier(issuer=ISSUER, audience=audience, jwks=jwks_of(client))


def problem_body_without_request_id(r: Any) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    body.pop("request_id")
    return body


# ================================================================ the app itself


def test_the_app_builds_without_deprecation_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_harness()


# ================================================================ POST /v1/tokens


def test_mint_answers_201_with_one_verifiable_token_per_audience(client: AnyClient, h: Harness) -> None:
    r = mint(client, h, "reviewer", "fix-issue-123", REVIEWER_ALL)

    assert r.status_code == 201, r.text
    assert r.headers["content-type"] == JSON
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {"task", "expires_at", "tokens", "credentials"}
    assert body["task"] == "fix-issue-123"
    assert body["credentials"] == []
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["expires_at"])
    expires_at = int(datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())
    assert abs(expires_at - (time.time() + 300)) <= 5

    tokens = {t["audience"]: t for t in body["tokens"]}
    assert len(tokens) == len(body["tokens"]), "one token per audience"
    assert set(tokens) == {"git-gateway", "github-proxy"}
    assert tokens["git-gateway"]["capabilities"] == [WIDGETS_READ]
    assert tokens["github-proxy"]["capabilities"] == [PULLS_READ, REVIEW_COMMENT]
    for audience, entry in tokens.items():
        assert set(entry) == {"audience", "token", "token_id", "expires_in", "capabilities"}
        assert entry["expires_in"] == 300
        grant = verifier(client, audience).verify(entry["token"])
        assert grant.token_id == entry["token_id"]
        assert grant.task == "fix-issue-123"
        assert grant.agent == "reviewer"
        assert grant.claims.aud == audience
        assert grant.claims.exp == expires_at
        assert grant.claims.exp - grant.claims.iat == 300
        assert [c.to_json() for c in grant.capabilities] == entry["capabilities"]
    assert len({t["token_id"] for t in body["tokens"]}) == 2

    # Each token is for its audience only.
    with pytest.raises(TokenRejected) as refused:
        verifier(client, "github-proxy").verify(tokens["git-gateway"]["token"])
    assert refused.value.code == "wrong_audience"
    # The audit trail records the mint, never the token itself.
    audit = h.audit_out.getvalue()
    assert tokens["git-gateway"]["token_id"] in audit
    assert_no_secrets(audit)


def test_mint_narrows_a_scope_to_a_deeper_resource_and_fewer_actions(client: AnyClient, h: Harness) -> None:
    narrowed = {"scope": "reports-write", "resource": "s3://acme-reports/agents/t-42/", "actions": ["write"]}
    body = minted(client, h, "analyst", "t-42", [narrowed, "exports-read"])

    (entry,) = body["tokens"]
    assert entry["audience"] == "storage-gateway"
    assert entry["capabilities"] == [
        {
            "kind": "bucket",
            "resource": "s3://acme-reports/agents/t-42/",
            "actions": ["write"],
            "scope": "reports-write",
        },
        {
            "kind": "bucket",
            "resource": "s3://acme-exports/nightly/",
            "actions": ["list", "read"],
            "scope": "exports-read",
        },
    ]
    grant = verifier(client, "storage-gateway").verify(entry["token"])
    assert grant.allows("bucket", "s3://acme-reports/agents/t-42/out.csv", "write")
    assert not grant.allows("bucket", "s3://acme-reports/agents/t-42/out.csv", "read")
    assert not grant.allows("bucket", "s3://acme-reports/agents/t-43/out.csv", "write")
    assert grant.allows("bucket", "s3://acme-exports/nightly/2026-11-20.csv", "read")


@pytest.mark.parametrize(
    ("agent", "entry"),
    [
        pytest.param("analyst", {"scope": "reports-write", "resource": "s3://acme-reports/"}, id="shallower-resource"),
        pytest.param(
            "analyst", {"scope": "reports-write", "resource": "s3://acme-reports/agents-old/x/"}, id="sibling-prefix"
        ),
        pytest.param("analyst", {"scope": "reports-write", "actions": ["delete"]}, id="more-actions"),
        pytest.param("reviewer", {"scope": "widgets-read", "actions": ["write"]}, id="write-on-read-scope"),
        pytest.param("reviewer", "exports-read", id="scope-of-another-agent"),
    ],
)
def test_mint_never_widens_a_grant(client: AnyClient, h: Harness, agent: str, entry: object) -> None:
    assert_problem(mint(client, h, agent, "t-wide", [entry]), 403, "scope_not_granted")


def test_ttl_defaults_to_five_minutes(client: AnyClient, h: Harness) -> None:
    body = minted(client, h, "analyst", "t-default", ["exports-read"])
    assert body["tokens"][0]["expires_in"] == 300


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [("90s", 90), (90, 90), ("5m", 300), ("30m", 1800), (1800, 1800)],
)
def test_ttl_up_to_the_cap_is_granted_exactly(client: AnyClient, h: Harness, ttl: object, seconds: int) -> None:
    body = minted(client, h, "analyst", "t-ttl", ["exports-read"], ttl=ttl)
    (entry,) = body["tokens"]
    assert entry["expires_in"] == seconds
    grant = verifier(client, "storage-gateway").verify(entry["token"])
    assert grant.claims.exp - grant.claims.iat == seconds


@pytest.mark.parametrize(
    ("agent", "scope", "ttl"),
    [
        pytest.param("analyst", "exports-read", "31m", id="agent-cap-30m"),
        pytest.param("analyst", "reports-write", "11m", id="scope-cap-10m"),
        pytest.param("analyst", "exports-read", 1801, id="agent-cap-by-one-second"),
        pytest.param("deployer", "staging-deploy", "2h", id="global-cap-1h"),
    ],
)
def test_ttl_above_the_cap_is_an_error_not_a_clamp(
    client: AnyClient, h: Harness, agent: str, scope: str, ttl: object
) -> None:
    assert_problem(mint(client, h, agent, "t-long", [scope], ttl=ttl), 400, "ttl_exceeds_max")
    assert metric(client, "capbroker_tokens_minted_total") == 0


def test_the_default_ttl_yields_to_a_lower_cap(tmp_path: Path) -> None:
    scopes = copy_scopes(tmp_path)
    edit(scopes / "code-review.yaml", "    max_ttl: 5m\n", "    max_ttl: 2m\n")  # widgets-review-comment
    h = make_harness(scopes)
    with running(h) as client:
        body = minted(client, h, "reviewer", "t-short", ["widgets-review-comment"])
        assert body["tokens"][0]["expires_in"] == 120
        assert_problem(
            mint(client, h, "reviewer", "t-short", ["widgets-review-comment"], ttl="3m"), 400, "ttl_exceeds_max"
        )


def test_task_squatting_another_agent_minting_first_locks_nobody_out(client: AnyClient, h: Harness) -> None:
    """Issue 11 reproduction 4: task ids were one namespace, first minter wins. Now each
    agent's task is its own: a squatter's mint for the id neither locks the owner out nor
    tells the squatter anything, and its revocation touches only its own task."""
    squatter = token_for(minted(client, h, "reviewer", "fix-issue-124", ["widgets-read"]), "git-gateway")
    owner = token_for(minted(client, h, "analyst", "fix-issue-124", ["exports-read"]), "storage-gateway")
    minted(client, h, "analyst", "fix-issue-124", ["reports-write"])  # the owner keeps minting

    r = client.post("/v1/tasks/fix-issue-124/revoke", headers=h.auth("reviewer"))

    assert r.json() == {"revoked": True, "task": "fix-issue-124", "agent": "reviewer"}
    assert introspect(client, h, "git-gateway", squatter) == {"active": False}
    assert introspect(client, h, "storage-gateway", owner)["active"] is True
    minted(client, h, "analyst", "fix-issue-124", ["exports-read"])
    assert metric(client, "capbroker_tokens_minted_total") == 4


def test_an_agent_over_its_rate_gets_429_with_retry_after(tmp_path: Path) -> None:
    scopes = copy_scopes(tmp_path)
    edit(scopes / "code-review.yaml", "rate: 120/min", "rate: 2/min")
    h = make_harness(scopes)
    with running(h) as client:
        minted(client, h, "reviewer", "t-rate-1", ["widgets-read"])
        minted(client, h, "reviewer", "t-rate-2", ["widgets-read"])

        r = mint(client, h, "reviewer", "t-rate-3", ["widgets-read"])

        assert_problem(r, 429, "rate_limited")
        retry_after = int(r.headers["retry-after"])
        assert 1 <= retry_after <= 30  # 2/min: the next mint is free within 30 s
        # The rate is checked before the policy decision: probing the policy is limited too.
        assert_problem(mint(client, h, "reviewer", "t-rate-3", ["no-such-scope"]), 429, "rate_limited")
        # The limit is per agent.
        minted(client, h, "analyst", "t-rate-4", ["exports-read"])
        assert metric(client, "capbroker_decisions_total", code="rate_limited", decision="deny") == 2


def test_mint_with_the_state_store_down_is_503_and_no_token() -> None:
    h = make_harness(state=DownState())
    with running(h) as client:
        r = mint(client, h, "reviewer", "t-down", ["widgets-read"])
        assert_problem(r, 503, "backend_unavailable")
        assert int(r.headers["retry-after"]) >= 1
        assert metric(client, "capbroker_backend_errors_total") == 1
        assert metric(client, "capbroker_tokens_minted_total") == 0


# ================================================================ POST /v1/revoke


def test_an_agent_revokes_its_own_token_by_presenting_it(client: AnyClient, h: Harness) -> None:
    body = minted(client, h, "reviewer", "t-rv", ["widgets-read"])
    token, jti = body["tokens"][0]["token"], body["tokens"][0]["token_id"]
    assert introspect(client, h, "git-gateway", token)["active"] is True

    r = post_json(client, "/v1/revoke", {"token": token}, h.auth("reviewer"))

    assert r.status_code == 200, r.text
    assert r.json() == {"revoked": True, "jti": jti}
    assert introspect(client, h, "git-gateway", token) == {"active": False}
    assert metric(client, "capbroker_revocations_total", kind="token") == 1


def test_an_admin_revokes_a_token_by_id(client: AnyClient, h: Harness) -> None:
    body = minted(client, h, "reviewer", "t-rv-admin", ["widgets-read"])
    token, jti = body["tokens"][0]["token"], body["tokens"][0]["token_id"]

    r = post_json(client, "/v1/revoke", {"jti": jti}, h.auth("admin"))

    assert r.status_code == 200, r.text
    assert r.json() == {"revoked": True, "jti": jti}
    assert introspect(client, h, "git-gateway", token) == {"active": False}


def test_an_admin_also_revokes_by_token(client: AnyClient, h: Harness) -> None:
    body = minted(client, h, "reviewer", "t-rv-admin2", ["widgets-read"])
    token = body["tokens"][0]["token"]
    r = post_json(client, "/v1/revoke", {"token": token}, h.auth("admin"))
    assert r.status_code == 200, r.text
    assert introspect(client, h, "git-gateway", token) == {"active": False}


def test_an_agent_cannot_revoke_another_agents_token(client: AnyClient, h: Harness) -> None:
    token = token_for(minted(client, h, "deployer", "t-other", ["widgets-push"]), "git-gateway")

    assert_problem(post_json(client, "/v1/revoke", {"token": token}, h.auth("reviewer")), 403, "forbidden")
    assert introspect(client, h, "git-gateway", token)["active"] is True


def test_an_agent_cannot_revoke_by_id_even_its_own_token(client: AnyClient, h: Harness) -> None:
    body = minted(client, h, "reviewer", "t-by-id", ["widgets-read"])
    token, jti = body["tokens"][0]["token"], body["tokens"][0]["token_id"]

    assert_problem(post_json(client, "/v1/revoke", {"jti": jti}, h.auth("reviewer")), 403, "forbidden")
    assert introspect(client, h, "git-gateway", token)["active"] is True


# ================================================================ POST /v1/tasks/{task}/revoke


@pytest.mark.parametrize(
    ("who", "body", "agent"),
    [("reviewer", None, "reviewer"), ("admin", {"agent": "reviewer"}, "reviewer"), ("admin", None, "*")],
    ids=["own-agent", "admin-naming-the-agent", "admin-every-agent"],
)
def test_the_tasks_agent_or_an_admin_revokes_a_whole_task(
    client: AnyClient, h: Harness, who: str, body: dict[str, str] | None, agent: str
) -> None:
    minted_body = minted(client, h, "reviewer", "t-task", ["widgets-read", "widgets-pulls-read"])
    other = token_for(minted(client, h, "reviewer", "t-kept", ["widgets-read"]), "git-gateway")

    r = client.post("/v1/tasks/t-task/revoke", headers=h.auth(who), json=body)

    assert r.status_code == 200, r.text
    assert r.json() == {"revoked": True, "task": "t-task", "agent": agent}
    body = minted_body
    assert introspect(client, h, "git-gateway", token_for(body, "git-gateway")) == {"active": False}
    assert introspect(client, h, "git-gateway", other)["active"] is True, "only that task's tokens"
    # A revoked task gets no new tokens.
    assert_problem(mint(client, h, "reviewer", "t-task", ["widgets-read"]), 403, "task_revoked")
    assert metric(client, "capbroker_revocations_total", kind="task") == 1


def test_an_empty_json_object_is_an_empty_body(client: AnyClient, h: Harness) -> None:
    minted(client, h, "reviewer", "t-empty", ["widgets-read"])
    r = post_json(client, "/v1/tasks/t-empty/revoke", {}, h.auth("reviewer"))
    assert r.status_code == 200, r.text


def test_an_agent_cannot_revoke_or_probe_another_agents_task(client: AnyClient, h: Harness) -> None:
    token = token_for(minted(client, h, "analyst", "t-owned", ["exports-read"]), "storage-gateway")

    used = client.post("/v1/tasks/t-owned/revoke", headers=h.auth("reviewer"))
    unused = client.post("/v1/tasks/t-nobody/revoke", headers=h.auth("reviewer"))

    assert introspect(client, h, "storage-gateway", token)["active"] is True
    # the same answer for an id another agent uses and one nobody uses: nothing leaks
    assert (used.status_code, unused.status_code) == (200, 200)
    assert used.json() == {"revoked": False, "task": "t-owned", "reason": "no live tokens for this task"}
    assert unused.json() == {**used.json(), "task": "t-nobody"}
    naming = client.post("/v1/tasks/t-owned/revoke", headers=h.auth("reviewer"), json={"agent": "analyst"})
    assert_problem(naming, 403, "forbidden")
    assert introspect(client, h, "storage-gateway", token)["active"] is True
    # an unused id stays unrevoked: the agent can still mint for it
    minted(client, h, "reviewer", "t-nobody", ["widgets-read"])
    # and every refusal says who asked (found by an outside test: they did not)
    refused = [json.loads(line) for line in h.audit_out.getvalue().splitlines() if '"type":"revoke"' in line]
    assert [(e["task"], e["decision"], e["by"]) for e in refused] == [
        ("t-owned", "deny", "agent:reviewer"),
        ("t-nobody", "deny", "agent:reviewer"),
        ("t-owned", "deny", "agent:reviewer"),
    ]


# ================================================================ POST /v1/agents/{agent}/revoke


def test_the_kill_switch_is_admin_only_and_revokes_every_token_of_the_agent(client: AnyClient, h: Harness) -> None:
    first = token_for(minted(client, h, "reviewer", "t-k1", ["widgets-read"]), "git-gateway")
    second = token_for(minted(client, h, "reviewer", "t-k2", ["widgets-read"]), "git-gateway")
    bystander = token_for(minted(client, h, "deployer", "t-k3", ["widgets-push"]), "git-gateway")

    for who in ("reviewer", "deployer", "git-gateway"):
        assert_problem(client.post("/v1/agents/reviewer/revoke", headers=h.auth(who)), 403, "forbidden")
    assert introspect(client, h, "git-gateway", first)["active"] is True

    r = client.post("/v1/agents/reviewer/revoke", headers=h.auth("admin"))

    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["revoked"] is True
    assert answer["agent"] == "reviewer"
    assert isinstance(answer["issued_at_or_before"], int)
    assert abs(answer["issued_at_or_before"] - time.time()) <= 5
    assert introspect(client, h, "git-gateway", first) == {"active": False}
    assert introspect(client, h, "git-gateway", second) == {"active": False}
    assert introspect(client, h, "git-gateway", bystander)["active"] is True
    assert metric(client, "capbroker_revocations_total", kind="agent") == 1


def test_the_kill_switch_locks_the_agent_out_until_an_admin_reinstates_it(client: AnyClient, h: Harness) -> None:
    """Issue 11 reproduction 5: a mint 1 s after the kill switch answered 201 with a token
    already revoked, and 6 s later the agent minted live tokens again. Now the agent is
    suspended: 403 agent_revoked, never a dead token, until an admin reinstates it."""
    now = [1_900_000_000.0]
    h.broker.clock = lambda: now[0]
    minted(client, h, "reviewer", "t-before", ["widgets-read"])
    r = client.post("/v1/agents/reviewer/revoke", headers=h.auth("admin"))
    assert r.json()["suspended"] is True
    for later in (1, 6, 600):
        now[0] = 1_900_000_000.0 + later
        assert_problem(mint(client, h, "reviewer", "t-after", ["widgets-read"]), 403, "agent_revoked")
    assert_problem(client.post("/v1/agents/reviewer/reinstate", headers=h.auth("reviewer")), 403, "forbidden")
    # a policy reload does not reinstate
    assert client.post("/v1/admin/reload", headers=h.auth("admin")).status_code == 200
    assert_problem(mint(client, h, "reviewer", "t-after", ["widgets-read"]), 403, "agent_revoked")

    r = client.post("/v1/agents/reviewer/reinstate", headers=h.auth("admin"))

    assert r.status_code == 200, r.text
    assert r.json() == {"reinstated": True, "agent": "reviewer"}
    token = token_for(minted(client, h, "reviewer", "t-after", ["widgets-read"]), "git-gateway")
    assert introspect(client, h, "git-gateway", token)["active"] is True
    reinstated = [json.loads(line) for line in h.audit_out.getvalue().splitlines() if '"reinstate"' in line]
    assert [(e["agent"], e["decision"], e["was_suspended"]) for e in reinstated] == [("reviewer", "allow", True)]


def test_a_mint_right_after_reinstatement_never_returns_a_dead_token(client: AnyClient, h: Harness) -> None:
    now = [1_900_000_000.0]
    h.broker.clock = lambda: now[0]
    cutoff = client.post("/v1/agents/reviewer/revoke", headers=h.auth("admin")).json()["issued_at_or_before"]
    assert client.post("/v1/agents/reviewer/reinstate", headers=h.auth("admin")).json()["reinstated"] is True
    # until the cut-off (now + clock skew) has passed, a token would be born revoked: refused
    assert_problem(mint(client, h, "reviewer", "t-x", ["widgets-read"]), 403, "agent_revoked")
    now[0] = cutoff + 1
    token = token_for(minted(client, h, "reviewer", "t-x", ["widgets-read"]), "git-gateway")
    assert introspect(client, h, "git-gateway", token)["active"] is True


# ================================================================ POST /v1/introspect


@pytest.mark.parametrize("form", [False, True], ids=["json", "form"])
def test_a_service_sees_its_own_audiences_tokens_active_with_their_claims(
    client: AnyClient, h: Harness, form: bool
) -> None:
    body = minted(client, h, "reviewer", "t-intro", ["widgets-read"])
    token, entry = body["tokens"][0]["token"], body["tokens"][0]

    answer = introspect(client, h, "git-gateway", token, form=form)

    assert answer["active"] is True
    assert answer["sub"] == "agent:reviewer"
    assert answer["aud"] == "git-gateway"
    assert answer["iss"] == ISSUER
    assert answer["jti"] == entry["token_id"]
    assert answer["task"] == "t-intro"
    assert answer["cap"] == [WIDGETS_READ]
    assert answer["exp"] - answer["iat"] == 300
    assert_no_secrets(json.dumps(answer))


@pytest.mark.parametrize("form", [False, True], ids=["json", "form"])
def test_another_services_token_is_only_inactive(client: AnyClient, h: Harness, form: bool) -> None:
    body = minted(client, h, "reviewer", "t-intro2", ["widgets-read", "widgets-pulls-read"])

    assert introspect(client, h, "storage-gateway", token_for(body, "git-gateway"), form=form) == {"active": False}
    assert introspect(client, h, "git-gateway", token_for(body, "github-proxy"), form=form) == {"active": False}
    assert introspect(client, h, "git-gateway", token_for(body, "git-gateway"), form=form)["active"] is True


@pytest.mark.parametrize("form", [False, True], ids=["json", "form"])
def test_a_revoked_or_bogus_token_is_only_inactive(client: AnyClient, h: Harness, form: bool) -> None:
    token = token_for(minted(client, h, "reviewer", "t-intro3", ["widgets-read"]), "git-gateway")
    post_json(client, "/v1/revoke", {"token": token}, h.auth("reviewer"))

    assert introspect(client, h, "git-gateway", token, form=form) == {"active": False}
    assert introspect(client, h, "git-gateway", "not-a-token", form=form) == {"active": False}
    assert introspect(client, h, "git-gateway", token[:-4] + "AAAA", form=form) == {"active": False}
    assert metric(client, "capbroker_introspections_total", result="revoked") == 1


def test_introspection_takes_a_token_type_hint(client: AnyClient, h: Harness) -> None:
    token = token_for(minted(client, h, "reviewer", "t-hint", ["widgets-read"]), "git-gateway")
    r = post_json(client, "/v1/introspect", {"token": token, "token_type_hint": "access_token"}, h.auth("git-gateway"))
    assert r.status_code == 200
    assert r.json()["active"] is True


# ================================================================ POST /v1/explain


def test_explain_allow_gives_reasons_and_capabilities_and_mints_nothing(client: AnyClient, h: Harness) -> None:
    r = post_json(
        client,
        "/v1/explain",
        {"agent": "reviewer", "task": "t-explain", "scopes": ["widgets-read"], "ttl": "2m"},
        h.auth("admin"),
    )

    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["decision"] == "allow"
    assert answer["code"] is None
    assert answer["capabilities"] == [WIDGETS_READ]
    assert answer["reasons"]
    assert all(isinstance(reason, str) for reason in answer["reasons"])
    assert any("widgets-read" in reason for reason in answer["reasons"])
    assert "token" not in answer
    assert "tokens" not in answer
    assert_no_secrets(r.text)
    assert metric(client, "capbroker_tokens_minted_total") == 0
    # Nothing was claimed either: another agent can still take the task id.
    minted(client, h, "analyst", "t-explain", ["exports-read"])


@pytest.mark.parametrize(
    ("request_body", "code", "mentions"),
    [
        pytest.param(
            {"agent": "reviewer", "task": "t", "scopes": ["exports-read"]},
            "scope_not_granted",
            "exports-read",
            id="not-granted",
        ),
        pytest.param(
            {"agent": "reviewer", "task": "t", "scopes": ["no-such-scope"]},
            "unknown_scope",
            "no-such-scope",
            id="unknown",
        ),
        pytest.param(
            {"agent": "reviewer", "task": "t", "scopes": ["widgets-read"], "ttl": "1h"},
            "ttl_exceeds_max",
            "600s",
            id="ttl",
        ),
        pytest.param(
            {"agent": "analyst", "task": "t", "scopes": [{"scope": "reports-write", "resource": "s3://acme-reports/"}]},
            "scope_not_granted",
            "s3://acme-reports/",
            id="wider-resource",
        ),
    ],
)
def test_explain_deny_gives_the_code_and_the_precise_reasons(
    client: AnyClient, h: Harness, request_body: dict[str, Any], code: str, mentions: str
) -> None:
    r = post_json(client, "/v1/explain", request_body, h.auth("admin"))

    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["decision"] == "deny"
    assert answer["code"] == code
    assert answer["capabilities"] == []
    assert any(mentions in reason for reason in answer["reasons"]), answer["reasons"]
    assert_no_secrets(r.text)


@pytest.mark.parametrize(("who", "status", "code"), [("reviewer", 403, "forbidden"), ("git-gateway", 403, "forbidden")])
def test_explain_is_admin_only(client: AnyClient, h: Harness, who: str, status: int, code: str) -> None:
    body = {"agent": "reviewer", "task": "t", "scopes": ["widgets-read"]}
    assert_problem(post_json(client, "/v1/explain", body, h.auth(who)), status, code)


# ================================================================ GET /v1/scopes


def test_scopes_shows_the_loaded_policy_with_its_digest_to_admins(client: AnyClient, h: Harness) -> None:
    r = client.get("/v1/scopes", headers=h.auth("admin"))

    assert r.status_code == 200, r.text
    view = r.json()
    assert re.fullmatch(r"[0-9a-f]{64}", view["digest"])
    assert view["digest"] == h.broker.policy.digest
    assert view["global_max_ttl"] == 3600
    assert view["scopes"]["widgets-read"] == {
        "kind": "git",
        "resource": "github.com/acme/widgets",
        "actions": ["read"],
        "audience": "git-gateway",
        "max_ttl": 900,
        "require_pop": False,
        "description": "Clone and fetch acme/widgets",
    }
    assert view["agents"]["reviewer"]["scopes"] == REVIEWER_ALL
    assert view["agents"]["reviewer"]["rate"] == "120/min"
    assert view["services"]["git-gateway"] == {"audiences": ["git-gateway"], "rate": "60/min"}
    # The policy's key hashes are not handed out.
    assert_no_secrets(r.text, *key_hashes(h))


@pytest.mark.parametrize(("who", "status", "code"), [("reviewer", 403, "forbidden"), ("git-gateway", 403, "forbidden")])
def test_scopes_is_admin_only(client: AnyClient, h: Harness, who: str, status: int, code: str) -> None:
    assert_problem(client.get("/v1/scopes", headers=h.auth(who)), status, code)
    assert_problem(client.get("/v1/scopes"), 401, "unauthenticated")


# ================================================================ POST /v1/admin/reload


def _digest(client: AnyClient, h: Harness) -> str:
    digest: str = client.get("/v1/scopes", headers=h.auth("admin")).json()["digest"]
    return digest


def test_reload_puts_a_valid_changed_policy_in_force(tmp_path: Path) -> None:
    scopes = copy_scopes(tmp_path)
    h = make_harness(scopes)
    with running(h) as client:
        old = _digest(client, h)
        minted(client, h, "reviewer", "t-before", ["widgets-review-comment"])
        edit(
            scopes / "code-review.yaml",
            "scopes: [widgets-read, widgets-pulls-read, widgets-review-comment]",
            "scopes: [widgets-read, widgets-pulls-read]",
        )

        r = client.post("/v1/admin/reload", headers=h.auth("admin"))

        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["reloaded"] is True
        assert answer["previous"] == old
        assert answer["digest"] != old
        assert _digest(client, h) == answer["digest"]
        assert_problem(mint(client, h, "reviewer", "t-after", ["widgets-review-comment"]), 403, "scope_not_granted")
        minted(client, h, "reviewer", "t-after", ["widgets-read"])  # the same secrets still authenticate
        assert metric(client, "capbroker_policy_reloads_total", result="loaded") == 1


def test_reload_of_an_unchanged_policy_keeps_the_digest(client: AnyClient, h: Harness) -> None:
    old = _digest(client, h)
    r = client.post("/v1/admin/reload", headers=h.auth("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["digest"] == old == r.json()["previous"]


BAD_FILE = """\
scopes:
  broken-scope:
    kind: git
    resource: github.com/acme/widgets
    actions: [read]
    audience: git-gateway
    max_ttl: 15m
    colour: blue
"""


def _break_by_new_file(scopes: Path) -> str:
    (scopes / "bad.yaml").write_text(BAD_FILE)
    return f"{scopes / 'bad.yaml'}:8:"


def _break_existing_file(scopes: Path) -> str:
    # Drops widgets-review-comment from the reviewer AND adds a duplicate key: refused whole.
    edit(
        scopes / "code-review.yaml",
        "    scopes: [widgets-read, widgets-pulls-read, widgets-review-comment]\n",
        "    scopes: [widgets-read, widgets-pulls-read]\n    max_ttl: 5m\n",
    )
    return f"{scopes / 'code-review.yaml'}:34:"


@pytest.mark.parametrize("breaker", [_break_by_new_file, _break_existing_file], ids=["new-bad-file", "broken-edit"])
def test_an_invalid_policy_is_refused_with_file_and_line_and_the_old_policy_stays(tmp_path: Path, breaker: Any) -> None:
    scopes = copy_scopes(tmp_path)
    h = make_harness(scopes)
    with running(h) as client:
        old = _digest(client, h)
        where = breaker(scopes)

        r = client.post("/v1/admin/reload", headers=h.auth("admin"))

        problem = assert_problem(r, 422, "policy_invalid")
        assert isinstance(problem["errors"], list)
        assert problem["errors"]
        assert any(e.startswith(where) for e in problem["errors"]), problem["errors"]
        assert _digest(client, h) == old
        # The old policy is in force: the scope the broken edit dropped still mints.
        minted(client, h, "reviewer", "t-kept", ["widgets-review-comment"])
        assert metric(client, "capbroker_policy_reloads_total", result="refused") == 1


@pytest.mark.parametrize(
    ("who", "status", "code"), [("reviewer", 403, "forbidden"), ("storage-gateway", 403, "forbidden")]
)
def test_reload_is_admin_only(client: AnyClient, h: Harness, who: str, status: int, code: str) -> None:
    assert_problem(client.post("/v1/admin/reload", headers=h.auth(who)), status, code)


# ================================================================ keys, metadata, health, metrics


def test_jwks_publishes_public_keys_only(client: AnyClient) -> None:
    r = client.get("/.well-known/jwks.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == JSON
    keys = r.json()["keys"]
    assert keys
    for key in keys:
        assert key["kid"]
        assert key["kty"]
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(key), "private key material in the JWKS"


def test_authorization_server_metadata_follows_rfc_8414(client: AnyClient) -> None:
    r = client.get("/.well-known/oauth-authorization-server")

    assert r.status_code == 200
    assert r.headers["content-type"] == JSON
    meta = r.json()
    assert meta["issuer"] == ISSUER
    assert meta["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert meta["token_endpoint"] == f"{ISSUER}/v1/tokens/exchange"  # the token-exchange grant's endpoint
    assert meta["revocation_endpoint"] == f"{ISSUER}/v1/revoke"
    assert meta["introspection_endpoint"] == f"{ISSUER}/v1/introspect"
    assert isinstance(meta["response_types_supported"], list)  # REQUIRED by RFC 8414
    assert meta["access_token_signing_alg_values_supported"] == ["EdDSA"]
    # registered names only (RFC 8414 / IANA): client_secret_bearer is not one
    assert meta["token_endpoint_auth_methods_supported"] == ["none"]  # the subject token is the proof
    for field in ("revocation_endpoint", "introspection_endpoint"):
        assert meta[f"{field}_auth_methods_supported"] == ["client_secret_basic"]
    # The advertised JWKS is the one served.
    path = meta["jwks_uri"].removeprefix(ISSUER)
    assert client.get(path).json() == jwks_of(client)


def test_healthz_and_readyz_when_all_is_well(client: AnyClient, h: Harness) -> None:
    r = client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {
        "ready": True,
        "checks": {"state": "ok", "signing": "ok", "policy": "ok"},
        "policy": _digest(client, h),
    }


def test_readyz_is_503_while_the_state_store_is_down() -> None:
    h = make_harness(state=DownState())
    with running(h) as client:
        assert client.get("/healthz").status_code == 200  # alive, not ready
        r = client.get("/readyz")
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["checks"] == {"state": "backend_unavailable", "signing": "ok", "policy": "ok"}
        assert r.json()["ready"] is False


def test_metrics_counters_move(client: AnyClient, h: Harness) -> None:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE capbroker_tokens_minted_total counter" in r.text
    ok_before = metric(client, "capbroker_http_requests_total", status="2xx")
    assert metric(client, "capbroker_tokens_minted_total") == 0

    body = minted(client, h, "reviewer", "t-metrics", ["widgets-read", "widgets-pulls-read"])
    assert_problem(mint(client, h, "reviewer", "t-metrics", ["no-such-scope"]), 400, "unknown_scope")
    introspect(client, h, "git-gateway", token_for(body, "git-gateway"))
    client.get("/nope")

    assert metric(client, "capbroker_tokens_minted_total") == 2
    assert metric(client, "capbroker_decisions_total", code="ok", decision="allow") == 1
    assert metric(client, "capbroker_decisions_total", code="unknown_scope", decision="deny") == 1
    assert metric(client, "capbroker_introspections_total", result="active") == 1
    assert metric(client, "capbroker_http_requests_total", status="2xx") > ok_before
    assert metric(client, "capbroker_http_requests_total", status="4xx") >= 2


# ================================================================ X-Request-Id


def _oversize(client: AnyClient, h: Harness) -> Any:
    return client.post(
        "/v1/tokens", content=b" " * (MAX_BODY + 1), headers={**h.auth("reviewer"), "Content-Type": JSON}
    )


def _reload_a_bad_policy(client: AnyClient, h: Harness) -> Any:
    (h.broker.policy_dir / "bad.yaml").write_text(BAD_FILE)
    return client.post("/v1/admin/reload", headers=h.auth("admin"))


RESPONSES = {
    "200": lambda c, h: c.get("/healthz"),
    "201": lambda c, h: mint(c, h, "reviewer", "t-rid", ["widgets-read"]),
    "400": lambda c, h: mint(c, h, "reviewer", "t-rid", ["no-such-scope"]),
    "401": lambda c, h: c.post("/v1/tokens", json={}),
    "403": lambda c, h: c.get("/v1/scopes", headers=h.auth("reviewer")),
    "404": lambda c, h: c.get("/no/such/path"),
    "405": lambda c, h: c.get("/v1/tokens"),
    "413": _oversize,
    "422": _reload_a_bad_policy,
    "503": lambda c, h: mint(c, h, "reviewer", "t-rid", ["widgets-read"]),
}


@pytest.mark.parametrize("status", list(RESPONSES))
def test_every_response_carries_a_request_id(tmp_path: Path, status: str) -> None:
    h = make_harness(copy_scopes(tmp_path), state=DownState() if status == "503" else None)
    with running(h) as client:
        first, second = RESPONSES[status](client, h), RESPONSES[status](client, h)

    assert first.status_code == int(status), first.text
    rid = first.headers["x-request-id"]
    assert REQUEST_ID.fullmatch(rid)
    assert rid != second.headers["x-request-id"], "a fresh id per request"
    if first.status_code >= 400:
        assert first.headers["content-type"] == PROBLEM_JSON
        assert first.json()["request_id"] == rid


@pytest.mark.parametrize("rid", ["abc", "req-123.a:b_C", "A" * 64, "0"])
def test_a_sane_caller_request_id_is_echoed_and_audited(client: AnyClient, h: Harness, rid: str) -> None:
    ok = mint(client, h, "reviewer", "t-echo", ["widgets-read"], headers={"X-Request-Id": rid})
    refused = mint(client, h, "reviewer", "t-echo", ["no-such-scope"], headers={"X-Request-Id": rid})

    assert ok.headers["x-request-id"] == rid
    assert refused.headers["x-request-id"] == rid
    assert refused.json()["request_id"] == rid
    assert f'"request_id":"{rid}"' in h.audit_out.getvalue().replace(" ", "")


@pytest.mark.parametrize(
    "rid",
    [
        pytest.param(b"A" * 65, id="too-long"),
        pytest.param(b"has space", id="space"),
        pytest.param(b"<script>", id="markup"),
        pytest.param(b"a/b", id="slash"),
        pytest.param(b"semi;colon", id="semicolon"),
        pytest.param(b"", id="empty"),
        pytest.param("ünï".encode(), id="non-ascii"),
        pytest.param(b"a\tb", id="tab"),
    ],
)
def test_a_weird_caller_request_id_is_replaced(client: AnyClient, h: Harness, rid: bytes) -> None:
    ok = client.get("/healthz", headers={"X-Request-Id": rid})
    refused = client.post("/v1/tokens", headers={"X-Request-Id": rid})
    for r in (ok, refused):
        replaced = r.headers["x-request-id"]
        assert replaced.encode() != rid
        assert REQUEST_ID.fullmatch(replaced)
    assert refused.json()["request_id"] == refused.headers["x-request-id"]


# ================================================================ problem bodies are generic


DENIALS = [
    pytest.param("reviewer", ["zz-secret-scope-one"], "zz-secret-scope-one", 400, "unknown_scope", id="unknown-scope"),
    pytest.param(
        "analyst",
        [{"scope": "reports-write", "resource": "s3://acme-reports/agents/zz-marker/../x/"}],
        "zz-marker",
        400,
        "invalid_request",
        id="bad-resource",
    ),
    pytest.param(
        "analyst",
        [{"scope": "reports-write", "resource": "s3://acme-reports/zz-wider/"}],
        "zz-wider",
        403,
        "scope_not_granted",
        id="wider-resource",
    ),
    pytest.param("reviewer", ["exports-read"], "exports-read", 403, "scope_not_granted", id="not-granted"),
]


@pytest.mark.parametrize(("agent", "scopes", "marker", "status", "code"), DENIALS)
def test_problem_details_name_what_is_wrong_for_the_agent(
    client: AnyClient, h: Harness, *, agent: str, scopes: list[Any], marker: str, status: int, code: str
) -> None:
    """Issue 13 item 6 (it replaces SPEC 4's generic detail for authenticated callers): the
    agent is told which scope or resource of its own request is at fault; the audit log has
    it too. test_problem_details.py holds the rest (fields, caps, revoked task, strangers)."""
    r = mint(client, h, agent, "t-generic", scopes)

    body = assert_problem(r, status, code)
    assert marker in body["detail"]
    assert body["detail"] != body["title"]
    assert marker in h.audit_out.getvalue()


@pytest.mark.parametrize(
    ("agent", "one", "other", "status", "code"),
    [
        pytest.param("reviewer", ["zz-one"], ["zz-two"], 400, "unknown_scope", id="unknown-scope"),
        pytest.param(
            "reviewer",
            ["exports-read"],
            [{"scope": "widgets-read", "actions": ["write"]}],
            403,
            "scope_not_granted",
            id="not-granted",
        ),
        pytest.param("reviewer", ["widgets-read"], ["widgets-review-comment"], 400, "ttl_exceeds_max", id="ttl"),
    ],
)
def test_the_problem_body_differs_only_in_its_detail(
    client: AnyClient, h: Harness, *, agent: str, one: list[Any], other: list[Any], status: int, code: str
) -> None:
    first = mint(client, h, agent, "t-a", one, ttl="11m")
    second = mint(client, h, agent, "t-b", other, ttl="11m")
    assert_problem(first, status, code)
    assert_problem(second, status, code)
    without = ("detail",)
    assert {k: v for k, v in problem_body_without_request_id(first).items() if k not in without} == {
        k: v for k, v in problem_body_without_request_id(second).items() if k not in without
    }
