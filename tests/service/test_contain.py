"""``POST /v1/tasks/{task}/contain`` (SPEC 4, 9) against an in-process broker: a service,
with the agent's token as evidence, revokes the token's task; the refusals and their
codes. The attacks (another service's token, a forged or expired token, another task)
are in tests/security/test_contain_attacks.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from broker.backends.memory_state import MemoryState
from broker.errors import BackendUnavailable
from tests.service.harness import Harness, make_harness
from tests.service.support import (
    assert_problem,
    copy_scopes,
    edit,
    introspect,
    metric,
    mint,
    minted,
    post_json,
    running,
    token_for,
)

AnyClient = TestClient[Any]
SEEN = {"kind": "git", "resource": "github.com/acme/secrets", "action": "read", "request_id": "gw-req-1"}


def contain(client: AnyClient, h: Harness, task: str, token: str, who: str = "git-gateway", **extra: Any) -> Any:
    return post_json(client, f"/v1/tasks/{task}/contain", {"token": token, **SEEN, **extra}, h.auth(who))


def events(h: Harness, kind: str = "contained") -> list[dict[str, Any]]:
    lines = (json.loads(line) for line in h.audit_out.getvalue().splitlines())
    return [e for e in lines if e["type"] == kind]


def test_a_service_contains_the_task_of_a_token_of_its_audience(client: AnyClient, h: Harness) -> None:
    body = minted(client, h, "reviewer", "t-contain", ["widgets-read", "widgets-pulls-read"])
    git = token_for(body, "git-gateway")
    kept = token_for(minted(client, h, "reviewer", "t-kept", ["widgets-read"]), "git-gateway")

    r = contain(client, h, "t-contain", git)

    assert r.status_code == 200, r.text
    assert r.json() == {"task": "t-contain", "revoked": True}
    assert introspect(client, h, "git-gateway", git) == {"active": False}
    assert introspect(client, h, "git-gateway", kept)["active"] is True, "only that task"
    # the whole task: its token for another audience too, and no new token for it
    api_jti = introspect_jti(body, "github-proxy")
    assert asyncio.run(h.broker.state.revocation_state(api_jti, "t-contain", "reviewer")).task_revoked
    assert_problem(mint(client, h, "reviewer", "t-contain", ["widgets-read"]), 403, "task_revoked")
    (event,) = events(h)
    assert event["decision"] == "allow"
    assert (event["service"], event["task"], event["agent"]) == ("git-gateway", "t-contain", "reviewer")
    assert (event["kind"], event["resource"], event["action"]) == ("git", "github.com/acme/secrets", "read")
    assert event["service_request_id"] == "gw-req-1"
    assert event["jti"] == introspect_jti(body, "git-gateway")
    assert event["already"] is False
    assert git not in h.audit_out.getvalue()
    assert metric(client, "capbroker_revocations_total", kind="contained") == 1


def introspect_jti(body: dict[str, Any], audience: str) -> str:
    (jti,) = [t["token_id"] for t in body["tokens"] if t["audience"] == audience]
    return str(jti)


def test_containing_again_is_idempotent(client: AnyClient, h: Harness) -> None:
    token = token_for(minted(client, h, "reviewer", "t-twice", ["widgets-read"]), "git-gateway")

    first, again = contain(client, h, "t-twice", token), contain(client, h, "t-twice", token)

    assert (first.status_code, again.status_code) == (200, 200), again.text
    assert again.json() == {"task": "t-twice", "revoked": True}
    assert [e["already"] for e in events(h)] == [False, True]


def test_a_task_the_agent_revoked_itself_is_contained_all_the_same(client: AnyClient, h: Harness) -> None:
    token = token_for(minted(client, h, "reviewer", "t-self", ["widgets-read"]), "git-gateway")
    assert client.post("/v1/tasks/t-self/revoke", headers=h.auth("reviewer")).status_code == 200

    r = contain(client, h, "t-self", token)

    assert (r.status_code, r.json()) == (200, {"task": "t-self", "revoked": True})


def test_the_request_id_is_optional(client: AnyClient, h: Harness) -> None:
    token = token_for(minted(client, h, "reviewer", "t-noid", ["widgets-read"]), "git-gateway")
    body = {"token": token, "kind": "http", "resource": "https://x.internal/a", "action": "DELETE"}

    r = post_json(client, "/v1/tasks/t-noid/contain", body, h.auth("git-gateway"))

    assert r.status_code == 200, r.text
    assert "service_request_id" not in events(h)[0]


def test_only_a_service_may_contain(client: AnyClient, h: Harness) -> None:
    token = token_for(minted(client, h, "reviewer", "t-who", ["widgets-read"]), "git-gateway")

    for who in ("reviewer", "admin"):
        assert_problem(contain(client, h, "t-who", token, who=who), 401, "unauthenticated")
    bad = post_json(client, "/v1/tasks/t-who/contain", {"token": token, **SEEN}, {"Authorization": "Bearer cbk_nope"})
    assert_problem(bad, 401, "unauthenticated")
    assert introspect(client, h, "git-gateway", token)["active"] is True


def test_malformed_reports_are_invalid_requests(client: AnyClient, h: Harness) -> None:
    token = token_for(minted(client, h, "reviewer", "t-bad", ["widgets-read"]), "git-gateway")
    bad_bodies: list[dict[str, Any]] = [
        {"token": token, **SEEN, "extra": 1},
        {"token": token, **SEEN, "kind": "ftp"},
        {"token": token, **SEEN, "action": "GET /x"},
        {"token": token, **SEEN, "resource": "a\nb"},
        {"token": token, **SEEN, "resource": "x" * 2049},
        {"token": token, **SEEN, "request_id": "has space"},
        {"token": 1, **SEEN},
        {k: v for k, v in SEEN.items() if k != "action"} | {"token": token},
    ]
    for body in bad_bodies:
        assert_problem(
            post_json(client, "/v1/tasks/t-bad/contain", body, h.auth("git-gateway")), 400, "invalid_request"
        )
    assert_problem(contain(client, h, "-bad", token), 400, "invalid_request")
    assert introspect(client, h, "git-gateway", token)["active"] is True


def test_a_services_refusals_spend_its_rate(tmp_path: Path) -> None:
    scopes = copy_scopes(tmp_path)
    edit(scopes / "services.yaml", "audiences: [git-gateway]", "audiences: [git-gateway]\n    rate: 2/min")
    h = make_harness(scopes)
    with running(h) as client:
        token = token_for(minted(client, h, "reviewer", "t-rate", ["widgets-read"]), "git-gateway")
        refused = [contain(client, h, "t-other", token) for _ in range(3)]

        assert [r.status_code for r in refused] == [403, 403, 429]
        assert "retry-after" in refused[2].headers
        # the rate limits refusals only: a valid containment still goes through (as a
        # successful introspection does), so a flood of bad reports cannot stop a real one
        assert contain(client, h, "t-rate", token).status_code == 200


class RevocationsDown(MemoryState):
    """The state store fails exactly the write a containment needs."""

    async def revoke_task(self, task: str, owner: str | None, now: int, *, only_if_live: bool = False) -> bool:
        raise BackendUnavailable("state store down (test)")


def test_a_backend_down_is_503_and_leaves_nothing_revoked() -> None:
    h = make_harness(state=RevocationsDown())
    with running(h) as client:
        token = token_for(minted(client, h, "reviewer", "t-down", ["widgets-read"]), "git-gateway")

        r = contain(client, h, "t-down", token)

        assert_problem(r, 503, "backend_unavailable")
        assert "retry-after" in r.headers
        # nothing half-done: not even this process's own set holds the task
        assert introspect(client, h, "git-gateway", token)["active"] is True
        assert events(h)[-1]["decision"] == "deny"


def test_a_delegated_tokens_containment_revokes_the_root_agents_task(client: AnyClient, h: Harness) -> None:
    minted_body = minted(client, h, "analyst", "t-deleg", ["exports-read"])
    parent = token_for(minted_body, "storage-gateway")
    body = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": parent,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "actor": "helper",
    }
    r = post_json(client, "/v1/tokens/exchange", body)
    assert r.status_code == 200, r.text
    child = r.json()["access_token"]
    report = {"token": child, "kind": "bucket", "resource": "s3://acme-exports/other/x", "action": "read"}

    r = post_json(client, "/v1/tasks/t-deleg/contain", report, h.auth("storage-gateway"))

    assert r.status_code == 200, r.text
    assert introspect(client, h, "storage-gateway", parent) == {"active": False}, "the task is the root agent's"
    assert introspect(client, h, "storage-gateway", child) == {"active": False}
    # in the shared store (what every other replica and verifier reads), not only this process's set
    jti = introspect_jti(minted_body, "storage-gateway")
    assert asyncio.run(h.broker.state.revocation_state(jti, "t-deleg", "analyst")).task_revoked
    (event,) = events(h)
    assert (event["agent"], event["owner"], event["kind"]) == ("helper", "analyst", "bucket")
