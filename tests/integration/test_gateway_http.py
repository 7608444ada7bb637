"""The gateway's ``http`` kind against a real upstream API (its own uvicorn process) that
requires the real API key and records every request: what the agent sent that was a
credential never arrives, the key does, bodies stream, and each refusal is decided
before anything reaches the upstream.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from broker.dpop.client import DpopKey
from tests.servers.gateway_stack import AGENT, GatewayStack, own_stack
from tests.servers.processes import BaoServer

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

REVOCATION_DEADLINE = 1.0  # SPEC 5: a revocation is seen everywhere within one second


@pytest.fixture(scope="module")
def stack(bao_server: BaoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    with own_stack(tmp_path_factory.mktemp("gateway-http"), bao_server) as built:
        yield built


def test_the_agents_credentials_never_arrive_and_the_upstream_key_does(stack: GatewayStack) -> None:
    token = stack.token("http-strip", ["gw-api"])
    status, headers, body = stack.request(
        "GET",
        "/http/api.test/v1/items?page=2&api_key=agents-own-key&API%5FKEY=again&q=a%20b",
        token=token,
        headers={
            "Cookie": "session=agent-cookie",
            "Proxy-Authorization": "Basic agent-proxy",
            "X-Upstream-Token": "agent-header-credential",
            "X-Api-Key": "agents-own-api-key",
            "DPoP": "agent-proof",
            "Connection": "close, X-Hop",
            "X-Hop": "hop-by-hop",
            "X-Trace": "kept",
        },
    )
    assert status == 200, body
    assert headers["x-request-id"]
    arrived = stack.api_requests()[-1]
    assert arrived["authorised"] is True
    sent = dict(arrived["headers"])
    assert sent["x-api-key"] == stack.api_key  # the one key header there is: the gateway's
    assert [k for k, _ in arrived["headers"]].count("x-api-key") == 1
    for name in ("authorization", "cookie", "proxy-authorization", "x-upstream-token", "dpop", "x-hop"):
        assert name not in sent, name
    assert sent["x-trace"] == "kept"
    assert arrived["query"] == "page=2&q=a%20b"
    assert token not in str(arrived)
    # dropped, and named (never their values) in the audit line for an operator to see
    line = stack.audit_for(headers["x-request-id"])
    assert line["credentials_dropped"] == ["?api_key", "cookie", "proxy-authorization", "x-api-key", "x-upstream-token"]
    assert "agents-own" not in json.dumps(line)


def test_set_cookie_is_dropped_and_redirects_are_returned_not_followed(stack: GatewayStack) -> None:
    token = stack.token("http-redirect", ["gw-api"])
    status, headers, _ = stack.request("GET", "/http/api.test/v1/cookie", token=token)
    assert status == 200
    assert "set-cookie" not in headers
    before = len(stack.api_requests())
    status, headers, _ = stack.request("GET", "/http/api.test/v1/redirect", token=token)
    assert status == 302
    assert headers["location"] == "/elsewhere"
    assert [r["path"] for r in stack.api_requests()[before:]] == ["/v1/redirect"]


def test_bodies_stream_both_ways(stack: GatewayStack) -> None:
    token = stack.token("http-stream", ["gw-api"])
    upload = b"u" * (5 << 20)
    status, _, body = stack.request(
        "POST", "/http/api.test/v1/upload", token=token, body=upload, headers={"Content-Type": "text/plain"}
    )
    assert status == 200, body
    assert stack.api_requests()[-1]["received"] == len(upload)
    status, headers, body = stack.request("GET", "/http/api.test/v1/bytes/3000000", token=token)
    assert status == 200
    assert len(body) == 3_000_000
    line = stack.audit_for(headers["x-request-id"])  # written once the answer is out: waited for
    assert line["bytes_out"] == 3_000_000
    assert line["decision"] == "allow"


@pytest.mark.parametrize(
    "path",
    [
        "/http/api.test/v1/../admin",
        "/http/api.test/v1/%2e%2e/admin",
        "/http/api.test/v1/%2E%2E/admin",
        "/http/api.test/v1//items",
        "/http/api.test/v1/a%2fb",
        "/http/api.test/v1/a%2Fb",
        "/http/api.test/v1/./items",
        "/http/api.test/v1\\items",
        "/http/api.test/v1/items%00",
        "/http/API.test/v1/items",
        "/http/api.test:443/v1/items",
        "/http/api.test/v2/items",
        "/http/other.test/v1/items",
    ],
)
def test_path_tricks_are_refused_and_nothing_reaches_the_upstream(stack: GatewayStack, path: str) -> None:
    token = stack.token(stack.fresh_task("http-tricks"), ["gw-api"])
    before = len(stack.api_requests())
    status, _, body = stack.request("GET", path, token=token)
    assert (status, stack.refused(403, body)) == (403, "capability_denied")
    assert stack.api_requests()[before:] == []


@pytest.mark.parametrize("method", ["DELETE", "PUT", "PATCH", "TRACE", "CONNECT", "PROPFIND"])
def test_a_method_the_token_does_not_allow_is_refused(stack: GatewayStack, method: str) -> None:
    token = stack.token(stack.fresh_task("http-method"), ["gw-api"])  # GET and POST only
    before = len(stack.api_requests())
    status, _, body = stack.request(method, "/http/api.test/v1/items", token=token)
    assert (status, stack.refused(403, body)) == (403, "capability_denied")
    assert stack.api_requests()[before:] == []


def test_missing_or_invalid_tokens_are_401_with_the_verifiers_code(stack: GatewayStack) -> None:
    before = len(stack.api_requests())
    status, headers, body = stack.request("GET", "/http/api.test/v1/items")
    assert (status, stack.refused(401, body)) == (401, "malformed")
    assert "www-authenticate" in headers
    git_token = stack.token("http-aud", ["gw-repo-read"])  # for git-gateway, not billing-api
    status, _, body = stack.request("GET", "/http/api.test/v1/items", token=git_token)
    assert (status, stack.refused(401, body)) == (401, "wrong_audience")
    assert stack.api_requests()[before:] == []


def test_a_revoked_task_is_refused_within_a_second(stack: GatewayStack) -> None:
    token = stack.token("http-revoked", ["gw-api"])
    assert stack.request("GET", "/http/api.test/v1/items", token=token)[0] == 200
    stack.revoke_task("http-revoked")
    revoked_at = time.monotonic()
    while True:
        status, _, body = stack.request("GET", "/http/api.test/v1/items", token=token)
        if status == 401:
            break
        assert time.monotonic() - revoked_at < 10, "the revocation never reached the gateway"
    assert stack.refused(401, body) == "revoked"
    before = len(stack.api_requests())
    status, _, body = stack.request("GET", "/http/api.test/v1/items", token=token)
    assert (status, stack.refused(401, body)) == (401, "revoked")
    assert stack.api_requests()[before:] == []


def test_a_spent_budget_is_429_and_counted_in_redis(stack: GatewayStack) -> None:
    token = stack.token("http-budget", ["gw-api-budget"])  # 3 requests, 1 MiB
    before = len(stack.api_requests())
    for _ in range(3):
        assert stack.request("GET", "/http/api.test/v1/items", token=token)[0] == 200
    status, headers, body = stack.request("GET", "/http/api.test/v1/items", token=token)
    assert (status, stack.refused(429, body)) == (429, "budget_exhausted")
    assert headers["retry-after"] == "1"
    assert len(stack.api_requests()[before:]) == 3
    client = redis.Redis.from_url(stack.redis.url, decode_responses=True)
    try:
        jti = [a for a in stack.audit_lines() if a["task"] == "http-budget"][-1]["jti"]
        counted = client.hgetall(f"{stack.redis_prefix}budget:{jti}")
        assert int(counted["requests"]) == 4
        assert client.ttl(f"{stack.redis_prefix}budget:{jti}") > 0
    finally:
        client.close()


def test_a_spent_byte_budget_is_429(stack: GatewayStack) -> None:
    token = stack.token("http-bytes", ["gw-api-budget"])  # bytes: 1MiB
    # a download past the budget is cut as soon as the request's own bytes pass it
    conn = http.client.HTTPConnection("127.0.0.1", stack.gateway_port, timeout=10)
    conn.request("GET", "/http/api.test/v1/bytes/1100000", headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    assert response.status == 200
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    conn.close()
    assert len(cut.value.partial) <= (1 << 20) + (256 << 10)  # the budget, and at most the chunk that passed it
    before = len(stack.api_requests())
    status, _, body = stack.request("GET", "/http/api.test/v1/items", token=token)
    assert (status, stack.refused(429, body)) == (429, "budget_exhausted")
    assert stack.api_requests()[before:] == []


def test_upstream_down_is_502_and_slow_is_504(stack: GatewayStack) -> None:
    token = stack.token("http-down", ["gw-down"])
    status, _, body = stack.request("GET", "/http/down.test/anything", token=token)
    assert (status, stack.refused(502, body)) == (502, "upstream_unavailable")
    assert stack.api_key.encode() not in body
    token = stack.token("http-slow", ["gw-api"])
    status, _, body = stack.request("GET", "/http/api.test/v1/slow", token=token)  # upstream_timeout: 2s
    assert (status, stack.refused(504, body)) == (504, "upstream_timeout")


def test_health_readiness_and_metrics(stack: GatewayStack) -> None:
    status, _, body = stack.request("GET", "/readyz")
    assert status == 200
    assert b'"secrets": true' in body
    status, _, body = stack.request("GET", "/metrics")
    assert status == 200
    assert b"capbroker_gateway_requests_total" in body


def test_every_request_has_one_audit_line(stack: GatewayStack) -> None:
    token = stack.token("http-audit", ["gw-api"])
    status, headers, _ = stack.request("POST", "/http/api.test/v1/items", token=token, body=b"12345")
    assert status == 200
    line = stack.audit_for(headers["x-request-id"])
    assert line["task"] == "http-audit"
    assert line["agent"] == "gw-agent"
    assert (line["kind"], line["resource"], line["action"]) == ("http", "https://api.test/v1/items", "POST")
    assert (line["decision"], line["status"], line["bytes_in"]) == ("allow", 200, 5)
    assert line["upstream_ms"] > 0
    assert token not in Path(stack.audit_path).read_text()


def test_a_dpop_bound_token_needs_its_proof_for_this_request(stack: GatewayStack) -> None:
    key = DpopKey.generate()
    now = int(time.time())
    mint_proof = {"DPoP": key.proof("POST", f"{stack.broker.issuer}/v1/tokens", now=now)}
    status, _, body = stack.broker.post(
        "/v1/tokens", {"task": "http-dpop", "scopes": ["gw-api"]}, who=AGENT, headers=mint_proof
    )
    assert status == 201, body
    token = body["tokens"][0]["token"]
    path = "/http/api.test/v1/items"
    url = f"{stack.gateway_url}{path}"
    before = len(stack.api_requests())
    status, _, body = stack.request("GET", path, token=token)  # a stolen bearer copy
    assert (status, stack.refused(401, body)) == (401, "proof_required")
    other = key.proof("GET", f"{stack.gateway_url}/http/api.test/v1/other", now=now, access_token=token)
    status, _, body = stack.request("GET", path, headers={"Authorization": f"DPoP {token}", "DPoP": other})
    assert (status, stack.refused(401, body)) == (401, "bad_proof")
    assert stack.api_requests()[before:] == []
    proof = key.proof("GET", url, now=now, access_token=token)
    status, _, body = stack.request("GET", path, headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert status == 200, body
    arrived = dict(stack.api_requests()[-1]["headers"])
    assert "dpop" not in arrived
    assert "authorization" not in arrived
    status, _, body = stack.request("GET", path, headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert (status, stack.refused(401, body)) == (401, "bad_proof")  # a proof is used once


def test_a_query_credential_replaces_the_agents_own(stack: GatewayStack) -> None:
    token = stack.token("http-query", ["gw-query"])
    status, _, body = stack.request("GET", "/http/query.test/v1/items?key=attacker&x=1&KEY=again", token=token)
    assert status == 200, body
    arrived = stack.api_requests()[-1]
    assert arrived["authorised"] is True
    assert "attacker" not in arrived["query"]
    assert "again" not in arrived["query"]
    assert arrived["query"].startswith("x=1&key=")
    assert stack.api_key not in body.decode()


def test_budgets_and_revocations_hold_across_replicas(stack: GatewayStack) -> None:
    replica = stack.start_replica()
    token = stack.token("http-replicas", ["gw-api-budget"])  # 3 requests
    assert stack.request("GET", "/http/api.test/v1/items", token=token)[0] == 200
    assert stack.request("GET", "/http/api.test/v1/items", token=token, port=replica)[0] == 200
    assert stack.request("GET", "/http/api.test/v1/items", token=token)[0] == 200
    status, _, body = stack.request("GET", "/http/api.test/v1/items", token=token, port=replica)
    assert (status, stack.refused(429, body)) == (429, "budget_exhausted")
    other = stack.token("http-replicas-revoked", ["gw-api"])
    assert stack.request("GET", "/http/api.test/v1/items", token=other, port=replica)[0] == 200
    stack.revoke_task("http-replicas-revoked")
    deadline = time.monotonic() + 10
    for port in (None, replica):
        while stack.request("GET", "/http/api.test/v1/items", token=other, port=port)[0] != 401:
            assert time.monotonic() < deadline, f"the revocation never reached the gateway on {port}"


def test_several_worker_processes_serve_one_port(stack: GatewayStack) -> None:
    stack.start_gateway(workers=2)
    try:
        stack.wait_ready()
        token = stack.token("http-workers", ["gw-api-budget"])  # 3 requests, counted across the workers
        statuses = [stack.request("GET", "/http/api.test/v1/items", token=token)[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        assert "workers 2" in stack.gateway_log.read_text()
    finally:
        stack.start_gateway()
        stack.wait_ready()
