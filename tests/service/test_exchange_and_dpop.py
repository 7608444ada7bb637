# ruff: noqa: E501  (tables of attack rows read best one per line)
"""Token exchange (``POST /v1/tokens/exchange``) and DPoP at the broker: mint, exchange and
introspection, against an in-process broker (local key, in-memory state)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from litestar.testing import TestClient

from broker.backends.memory_state import MemoryState
from broker.dpop.client import DpopKey
from broker.token.b64 import b64url_decode
from broker.verify import Verifier
from tests.service.harness import ISSUER, Harness, make_harness
from tests.service.support import (
    assert_problem,
    copy_scopes,
    edit,
    introspect,
    mint,
    minted,
    post_json,
    running,
    token_for,
)

AnyClient = TestClient[Any]
GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
REPORTS = [{"scope": "reports-write", "resource": "s3://acme-reports/agents/t1/"}]
MINT_URL = f"{ISSUER}/v1/tokens"
EXCHANGE_URL = f"{ISSUER}/v1/tokens/exchange"


@pytest.fixture
def h() -> Harness:
    return make_harness()


@pytest.fixture
def client(h: Harness) -> Iterator[AnyClient]:
    with running(h) as c:
        yield c


def claims_of(token: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(b64url_decode(token.split(".")[1]))
    return payload


def parent_token(client: AnyClient, h: Harness, task: str = "t1", scopes: list[Any] | None = None) -> str:
    return token_for(minted(client, h, "analyst", task, scopes or REPORTS), "storage-gateway")


def exchange(
    client: AnyClient, token: str, *, proof: str | None = None, form: bool = False, **fields: Any
) -> httpx.Response:
    body: dict[str, Any] = {
        "grant_type": GRANT,
        "subject_token": token,
        "subject_token_type": JWT_TYPE,
        "actor": "helper",
        **fields,
    }
    headers = {"DPoP": proof} if proof else {}
    if form:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return client.post("/v1/tokens/exchange", content=urlencode(body).encode(), headers=headers)
    return post_json(client, "/v1/tokens/exchange", body, headers)


def exchanged(client: AnyClient, token: str, **fields: Any) -> str:
    r = exchange(client, token, **fields)
    assert r.status_code == 200, r.text
    access: str = r.json()["access_token"]
    return access


async def keyset(h: Harness) -> Any:
    return await h.broker.signer.keyset()


def library(client: AnyClient, h: Harness) -> Verifier:
    keys = client.blocking_portal.call(keyset, h)
    return Verifier(issuer=ISSUER, audience="storage-gateway", jwks=keys)


# ====================================================================== exchange


def test_exchange_narrows_for_a_sub_agent_in_rfc_8693_shape(client: AnyClient, h: Harness) -> None:
    parent = parent_token(client, h)
    r = exchange(
        client, parent, scopes=[{"scope": "reports-write", "resource": "s3://acme-reports/agents/t1/out/", "actions": ["write"]}], ttl="2m"
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["issued_token_type"] == JWT_TYPE
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 120
    assert body["capabilities"] == [
        {
            "kind": "bucket",
            "resource": "s3://acme-reports/agents/t1/out/",
            "actions": ["write"],
            "scope": "reports-write",
        }
    ]
    grant = library(client, h).verify(body["access_token"])
    assert grant.agent == "helper"
    assert grant.claims.act is not None
    assert grant.claims.act.sub == "agent:analyst"
    assert grant.task == "t1"
    assert grant.claims.exp <= claims_of(parent)["exp"]
    assert grant.allows("bucket", "s3://acme-reports/agents/t1/out/r.csv", "write")
    assert not grant.allows("bucket", "s3://acme-reports/agents/t1/other.csv", "write")
    assert introspect(client, h, "storage-gateway", body["access_token"])["act"] == {"sub": "agent:analyst"}


def test_exchange_accepts_the_rfc_form_body(client: AnyClient, h: Harness) -> None:
    r = exchange(client, parent_token(client, h), form=True, scope="reports-write", ttl="60")
    assert r.status_code == 200, r.text
    assert r.json()["expires_in"] == 60


def test_exchange_is_audited_with_the_parent(client: AnyClient, h: Harness) -> None:
    parent = parent_token(client, h)
    child = exchanged(client, parent)
    events = [json.loads(line) for line in h.audit_out.getvalue().splitlines()]
    (event,) = [e for e in events if e["type"] == "exchange"]
    assert event["parent_jti"] == claims_of(parent)["jti"]
    assert event["jti"] == claims_of(child)["jti"]
    assert (event["agent"], event["delegate"], event["depth"]) == ("analyst", "helper", 1)
    assert parent not in h.audit_out.getvalue()
    assert child not in h.audit_out.getvalue()


WIDENINGS: dict[str, tuple[dict[str, Any], int, str]] = {
    "other resource": ({"scopes": [{"scope": "reports-write", "resource": "s3://acme-reports/agents/t2/"}]}, 403, "scope_not_granted"),
    "sibling path": ({"scopes": [{"scope": "reports-write", "resource": "s3://acme-reports/agents/t1-old/"}]}, 403, "scope_not_granted"),
    "parent path": ({"scopes": [{"scope": "reports-write", "resource": "s3://acme-reports/agents/"}]}, 403, "scope_not_granted"),
    "traversal": ({"scopes": [{"scope": "reports-write", "resource": "s3://acme-reports/agents/t1/../t2/"}]}, 400, "invalid_request"),
    "extra action": ({"scopes": [{"scope": "reports-write", "actions": ["delete"]}]}, 403, "scope_not_granted"),
    "action of the grant not in the token": ({"scopes": [{"scope": "reports-write", "actions": ["list"]}]}, 403, "scope_not_granted"),
    "scope not in the token": ({"scopes": ["exports-read"]}, 403, "scope_not_granted"),
    "longer ttl": ({"ttl": "10m"}, 400, "ttl_exceeds_max"),
    "other task": ({"task": "t2"}, 403, "forbidden"),
    "other audience": ({"audience": "git-gateway"}, 403, "scope_not_granted"),
    "a policy agent's name": ({"actor": "reviewer"}, 403, "forbidden"),
    "unknown field": ({"resource": "s3://x/"}, 400, "invalid_request"),
}  # fmt: skip


@pytest.mark.parametrize("name", WIDENINGS)
def test_every_widening_is_refused(client: AnyClient, h: Harness, name: str) -> None:
    fields, status, code = WIDENINGS[name]
    parent = token_for(minted(client, h, "analyst", "t1", [{"scope": "reports-write", "resource": "s3://acme-reports/agents/t1/", "actions": ["read", "write"]}], ttl="5m"), "storage-gateway")  # fmt: skip
    assert_problem(exchange(client, parent, **fields), status, code)


def test_depth_is_capped_at_three_by_default(client: AnyClient, h: Harness) -> None:
    token = parent_token(client, h)
    for depth in (1, 2, 3):
        token = exchanged(client, token, actor=f"d{depth}")
        assert len(_chain(claims_of(token))) == depth
    assert_problem(exchange(client, token, actor="d4"), 403, "forbidden")


def _chain(claims: dict[str, Any]) -> list[str]:
    out, act = [], claims.get("act")
    while act:
        out.append(act["sub"])
        act = act.get("act")
    return out


def test_a_token_that_is_not_ours_or_not_valid_is_unauthenticated(client: AnyClient, h: Harness) -> None:
    other = make_harness()
    with running(other) as other_client:
        foreign = parent_token(other_client, other)
    assert_problem(exchange(client, foreign), 401, "unauthenticated")
    assert_problem(exchange(client, parent_token(client, h)[:-4] + "AAAA"), 401, "unauthenticated")
    assert_problem(exchange(client, "cbk_" + "A" * 43), 401, "unauthenticated")


def test_a_revoked_parent_cannot_be_exchanged(client: AnyClient, h: Harness) -> None:
    parent = parent_token(client, h)
    r = post_json(client, "/v1/revoke", {"token": parent}, h.auth("analyst"))
    assert r.status_code == 200, r.text
    assert_problem(exchange(client, parent), 401, "unauthenticated")


def test_revoking_the_task_revokes_every_descendant(client: AnyClient, h: Harness) -> None:
    parent = parent_token(client, h)
    child = exchanged(client, parent)
    grandchild = exchanged(client, child, actor="helper-2")
    assert introspect(client, h, "storage-gateway", grandchild)["active"] is True
    r = post_json(client, "/v1/tasks/t1/revoke", {}, h.auth("analyst"))
    assert r.status_code == 200, r.text
    for token in (parent, child, grandchild):
        assert introspect(client, h, "storage-gateway", token) == {"active": False}
    assert_problem(exchange(client, child, actor="helper-3"), 401, "unauthenticated")


def test_revoking_a_parent_token_revokes_its_descendants_only(client: AnyClient, h: Harness) -> None:
    parent = parent_token(client, h)
    child = exchanged(client, parent)
    grandchild = exchanged(client, child, actor="helper-2")
    sibling = exchanged(client, parent, actor="other")
    r = post_json(client, "/v1/revoke", {"token": child}, h.auth("analyst"))  # the root agent revokes a descendant
    assert r.status_code == 200, r.text
    assert introspect(client, h, "storage-gateway", child) == {"active": False}
    assert introspect(client, h, "storage-gateway", grandchild) == {"active": False}
    assert introspect(client, h, "storage-gateway", parent)["active"] is True
    assert introspect(client, h, "storage-gateway", sibling)["active"] is True


def test_the_kill_switch_on_the_root_agent_reaches_delegated_tokens(client: AnyClient, h: Harness) -> None:
    child = exchanged(client, parent_token(client, h))
    r = client.post("/v1/agents/analyst/revoke", headers=h.auth("admin"))
    assert r.status_code == 200, r.text
    assert introspect(client, h, "storage-gateway", child) == {"active": False}
    # while the root agent is suspended, exchanges of its chain say so
    assert_problem(exchange(client, child, actor="helper-2"), 403, "agent_revoked")


def test_another_agent_cannot_revoke_a_delegated_token(client: AnyClient, h: Harness) -> None:
    child = exchanged(client, parent_token(client, h))
    assert_problem(post_json(client, "/v1/revoke", {"token": child}, h.auth("reviewer")), 403, "forbidden")


def test_exchange_spends_the_root_agents_rate(tmp_path: Path) -> None:
    scopes = copy_scopes(tmp_path)
    edit(scopes / "data.yaml", "rate: 60/min", "rate: 2/min")
    h = make_harness(scopes)
    with running(h) as client:
        parent = parent_token(client, h)  # 1 of 2
        exchanged(client, parent)  # 2 of 2
        r = exchange(client, parent, actor="helper-2")
        assert_problem(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1


# ====================================================================== DPoP at mint


def test_a_mint_with_a_dpop_proof_binds_every_token_to_the_key(client: AnyClient, h: Harness) -> None:
    key = DpopKey.generate()
    r = mint(client, h, "analyst", "t1", REPORTS, headers={"DPoP": key.proof("POST", MINT_URL, now=int(time.time()))})
    assert r.status_code == 201, r.text
    for entry in r.json()["tokens"]:
        assert claims_of(entry["token"])["cnf"] == {"jkt": key.jkt}


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda k, now: k.proof("GET", MINT_URL, now=now), id="wrong method"),
        pytest.param(lambda k, now: k.proof("POST", f"{ISSUER}/v1/revoke", now=now), id="wrong url"),
        pytest.param(lambda k, now: k.proof("POST", "https://evil.example/v1/tokens", now=now), id="other host"),
        pytest.param(lambda k, now: k.proof("POST", MINT_URL, now=now - 600), id="stale"),
        pytest.param(lambda k, now: k.proof("POST", MINT_URL, now=now + 600), id="future"),
        pytest.param(lambda k, now: k.proof("POST", MINT_URL, now=now, access_token="x.y.z"), id="ath at mint"),
        pytest.param(lambda k, now: k.proof("POST", MINT_URL, now=now)[:-3] + "AAA", id="bad signature"),
        pytest.param(lambda k, now: "not-a-proof", id="garbage"),
    ],
)
def test_a_mint_with_a_bad_proof_is_refused(client: AnyClient, h: Harness, make: Any) -> None:
    proof = make(DpopKey.generate(), int(time.time()))
    assert_problem(mint(client, h, "analyst", "t1", REPORTS, headers={"DPoP": proof}), 400, "invalid_dpop_proof")


def test_a_replayed_mint_proof_is_refused(client: AnyClient, h: Harness) -> None:
    proof = DpopKey.generate().proof("POST", MINT_URL, now=int(time.time()))
    assert mint(client, h, "analyst", "t1", REPORTS, headers={"DPoP": proof}).status_code == 201
    assert_problem(mint(client, h, "analyst", "t1", REPORTS, headers={"DPoP": proof}), 400, "invalid_dpop_proof")


def test_two_dpop_headers_are_refused(client: AnyClient, h: Harness) -> None:
    key = DpopKey.generate()
    now = int(time.time())
    headers = [("DPoP", key.proof("POST", MINT_URL, now=now)), ("DPoP", key.proof("POST", MINT_URL, now=now))]
    body = json.dumps({"task": "t1", "scopes": REPORTS}).encode()
    r = client.post(
        "/v1/tokens", content=body, headers=[*headers, ("Content-Type", "application/json"), *h.auth("analyst").items()]
    )
    assert_problem(r, 400, "invalid_dpop_proof")


def test_a_require_pop_scope_needs_a_proof(tmp_path: Path) -> None:
    scopes = copy_scopes(tmp_path)
    edit(
        scopes / "data.yaml",
        "    audience: storage-gateway\n    max_ttl: 10m\n",
        "    audience: storage-gateway\n    max_ttl: 10m\n    require_pop: true\n",
    )
    h = make_harness(scopes)
    with running(h) as client:
        assert_problem(mint(client, h, "analyst", "t1", REPORTS), 400, "invalid_dpop_proof")
        proof = DpopKey.generate().proof("POST", MINT_URL, now=int(time.time()))
        assert mint(client, h, "analyst", "t1", REPORTS, headers={"DPoP": proof}).status_code == 201


# ====================================================================== DPoP at introspection

GATEWAY_URL = "https://storage.internal/objects/t1/out.csv"


def bound_token(client: AnyClient, h: Harness, key: DpopKey) -> str:
    r = mint(client, h, "analyst", "t1", REPORTS, headers={"DPoP": key.proof("POST", MINT_URL, now=int(time.time()))})
    assert r.status_code == 201, r.text
    return token_for(r.json(), "storage-gateway")


def ask(client: AnyClient, h: Harness, token: str, **proof: str) -> dict[str, Any]:
    r = post_json(client, "/v1/introspect", {"token": token, **proof}, h.auth("storage-gateway"))
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def test_a_bound_token_is_active_only_with_a_valid_proof(client: AnyClient, h: Harness) -> None:
    key = DpopKey.generate()
    token = bound_token(client, h, key)
    now = int(time.time())
    good = key.proof("PUT", GATEWAY_URL, now=now, access_token=token)
    assert ask(client, h, token) == {"active": False}  # a stolen bearer copy
    answer = ask(client, h, token, dpop=good, htm="PUT", htu=GATEWAY_URL)
    assert answer["active"] is True
    assert answer["cnf"] == {"jkt": key.jkt}
    assert ask(client, h, token, dpop=good, htm="PUT", htu=GATEWAY_URL) == {"active": False}  # replayed


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda key, other, token, now: other.proof("PUT", GATEWAY_URL, now=now, access_token=token),
            id="another key",
        ),
        pytest.param(
            lambda key, other, token, now: key.proof("GET", GATEWAY_URL, now=now, access_token=token), id="wrong method"
        ),
        pytest.param(
            lambda key, other, token, now: key.proof(
                "PUT", "https://storage.internal/objects/t2/x", now=now, access_token=token
            ),
            id="wrong url",
        ),
        pytest.param(
            lambda key, other, token, now: key.proof("PUT", GATEWAY_URL, now=now - 600, access_token=token), id="stale"
        ),
        pytest.param(
            lambda key, other, token, now: key.proof("PUT", GATEWAY_URL, now=now, access_token="a.b.c"),
            id="other token",
        ),
        pytest.param(lambda key, other, token, now: key.proof("PUT", GATEWAY_URL, now=now), id="no ath"),
    ],
)
def test_a_bound_token_with_a_bad_proof_is_inactive(client: AnyClient, h: Harness, make: Any) -> None:
    key, other = DpopKey.generate(), DpopKey.generate("ES256")
    token = bound_token(client, h, key)
    proof = make(key, other, token, int(time.time()))
    assert ask(client, h, token, dpop=proof, htm="PUT", htu=GATEWAY_URL) == {"active": False}


def test_proof_fields_go_together(client: AnyClient, h: Harness) -> None:
    r = post_json(client, "/v1/introspect", {"token": "a.b.c", "dpop": "x"}, h.auth("storage-gateway"))
    assert_problem(r, 400, "invalid_request")


# ====================================================================== DPoP at exchange


def test_a_bound_parent_needs_a_proof_by_its_key_and_its_child_stays_bound(client: AnyClient, h: Harness) -> None:
    key = DpopKey.generate()
    parent = bound_token(client, h, key)
    assert_problem(exchange(client, parent), 401, "unauthenticated")  # a stolen bearer copy
    now = int(time.time())
    other = DpopKey.generate().proof("POST", EXCHANGE_URL, now=now, access_token=parent)
    assert_problem(exchange(client, parent, proof=other), 400, "invalid_dpop_proof")
    no_ath = key.proof("POST", EXCHANGE_URL, now=now)
    assert_problem(exchange(client, parent, proof=no_ath), 400, "invalid_dpop_proof")
    r = exchange(client, parent, proof=key.proof("POST", EXCHANGE_URL, now=now, access_token=parent))
    assert r.status_code == 200, r.text
    assert r.json()["token_type"] == "DPoP"
    assert claims_of(r.json()["access_token"])["cnf"] == {"jkt": key.jkt}


def test_an_unbound_parent_can_be_exchanged_for_a_token_bound_to_the_sub_agents_key(
    client: AnyClient, h: Harness
) -> None:
    parent = parent_token(client, h)
    sub_key = DpopKey.generate("ES256")
    proof = sub_key.proof("POST", EXCHANGE_URL, now=int(time.time()), access_token=parent)
    r = exchange(client, parent, proof=proof)
    assert r.status_code == 200, r.text
    assert claims_of(r.json()["access_token"])["cnf"] == {"jkt": sub_key.jkt}


# ====================================================================== review findings


def test_an_introspection_proof_checked_against_an_unusable_url_is_inactive_not_500(
    client: AnyClient, h: Harness
) -> None:
    key = DpopKey.generate()
    token = bound_token(client, h, key)
    proof = key.proof("GET", GATEWAY_URL, now=int(time.time()), access_token=token)
    for htu in ("?x", "#x"):
        assert ask(client, h, token, dpop=proof, htm="GET", htu=htu) == {"active": False}


@pytest.mark.parametrize("form", [False, True])
def test_a_huge_digit_ttl_is_a_400_not_a_500(client: AnyClient, form: bool) -> None:
    assert_problem(exchange(client, "a.b.c", form=form, ttl="1" * 5000), 400, "invalid_request")


def test_strangers_cannot_write_to_the_stored_audit_stream_through_exchange(client: AnyClient, h: Harness) -> None:
    async def stored() -> int:
        return len([e async for e in h.broker.state.audit_events()])

    before = client.blocking_portal.call(stored)
    assert_problem(post_json(client, "/v1/tokens/exchange", {}), 400, "invalid_request")
    assert_problem(exchange(client, "a.b.c", ttl="y" * 60000), 400, "invalid_request")
    assert_problem(exchange(client, "a.b.c"), 401, "unauthenticated")
    assert client.blocking_portal.call(stored) == before
    assert '"stored":false' in h.audit_out.getvalue()
    assert "y" * 100 not in h.audit_out.getvalue()  # the raw value is not quoted at length


class RevokedDuringExchange(MemoryState):
    """A revocation of the parent landing between the exchange's first check and the
    recording of the delegation link (the revoke's walk finds no link yet)."""

    target: str | None = None

    async def add_delegation(self, parent_jti: str, child_jti: str, parent_exp: int) -> None:
        if parent_jti == self.target:
            await self.revoke_token(parent_jti, parent_exp)
            assert await self.delegations(parent_jti) == []  # what the concurrent walk saw
        await super().add_delegation(parent_jti, child_jti, parent_exp)


def test_a_parent_revoked_while_being_exchanged_leaves_no_live_child() -> None:
    state = RevokedDuringExchange()
    h = make_harness(state=state)
    with running(h) as client:
        parent = parent_token(client, h)
        state.target = claims_of(parent)["jti"]
        assert_problem(exchange(client, parent), 401, "unauthenticated")
        (child_jti,) = client.blocking_portal.call(state.delegations, state.target)
        revoked = client.blocking_portal.call(state.revocation_state, child_jti, "t1", "helper")
        assert revoked.token_revoked


def test_a_child_never_outlives_its_parent_even_if_the_clock_ticks_mid_request(client: AnyClient, h: Harness) -> None:
    parent = token_for(minted(client, h, "analyst", "t1", REPORTS, ttl="60s"), "storage-gateway")
    start = time.time()
    ticks = iter(range(10_000))
    h.broker.clock = lambda: start + next(ticks)  # one second later at every reading
    child = exchanged(client, parent)
    assert claims_of(child)["exp"] <= claims_of(parent)["exp"]


def test_a_scope_moved_to_another_audience_is_not_passed_down_to_the_old_one(tmp_path: Path) -> None:
    scopes = copy_scopes(tmp_path)
    h = make_harness(scopes)
    with running(h) as client:
        parent = parent_token(client, h)
        edit(
            scopes / "data.yaml",
            "    audience: storage-gateway\n    max_ttl: 10m\n",
            "    audience: git-gateway\n    max_ttl: 10m\n",
        )
        assert client.post("/v1/admin/reload", headers=h.auth("admin")).status_code == 200
        assert_problem(exchange(client, parent), 403, "scope_not_granted")
