"""Schemathesis against the app's own ``/schema/openapi.json``, in process (ASGI).

Every documented operation gets generated requests (schemathesis' examples, coverage and
fuzzing phases, valid and invalid data) with a real bearer credential, so they get past
authentication into parsing, policy decisions, signing and the state store. What must
hold for every response:

- no 5xx (``not_a_server_error``), and the schema conformance checks
  (``response_schema_conformance``, ``response_headers_conformance``,
  ``status_code_conformance``, ``content_type_conformance``): every status an operation
  answers is documented, errors as problem+json. Success bodies are documented as ``{}``
  (free-form), so their shape is checked by the focused tests instead;
- an ``X-Request-Id``; JSON for answers, problem+json with a known ``code`` for errors,
  text for ``/metrics``; no token or secret in any error;
- every token minted verifies against the published JWKS and is covered by its scope.

Bounded for CI: few examples per operation, derandomized, no example database.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.python.asgi import get_client, shutdown_lifespans

from broker.capability import covers
from broker.http.problems import STATUS
from broker.verify import Verifier
from tests.service.harness import ISSUER, Harness, make_harness
from tests.service.support import (
    JSON,
    PROBLEM_JSON,
    REQUEST_ID,
    assert_no_secrets,
    copy_scopes,
    edit,
    wait_ready,
)

MAX_EXAMPLES = 60
# Who calls what: the principal each operation is meant for (admin for the rest).
CALLER = {"/v1/tokens": "reviewer", "/v1/introspect": "git-gateway", "/v1/tasks/{task}/contain": "git-gateway"}
METRICS_TYPE = "text/plain; version=0.0.4"


@pytest.fixture(scope="module")
def fuzz_harness(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    # The reviewer's rate (120/min) would turn most generated mints into 429s: raise it.
    scopes = copy_scopes(tmp_path_factory.mktemp("schemathesis"))
    edit(scopes / "code-review.yaml", "rate: 120/min", "rate: 1000000/min")
    return make_harness(scopes)


@pytest.fixture(scope="module")
def api_schema(fuzz_harness: Harness) -> Iterator[Any]:
    # Loading the schema starts the app's lifespan (and so the signing self-test) on
    # schemathesis' own event loop, where every generated request then runs.
    loaded = schemathesis.openapi.from_asgi("/schema/openapi.json", fuzz_harness.app)
    wait_ready(fuzz_harness)
    yield loaded
    shutdown_lifespans()


@pytest.fixture(scope="module")
def real_tokens(api_schema: Any, fuzz_harness: Harness) -> dict[str, str]:
    """Two real git-gateway tokens: one generated revocations may hit, one for introspection."""
    tokens = {}
    with get_client(fuzz_harness.app) as client:
        for use in ("revoke", "introspect"):
            r = client.post(
                "/v1/tokens",
                json={"task": f"t-fuzz-{use}", "scopes": ["widgets-read"]},
                headers=fuzz_harness.auth("reviewer"),
            )
            assert r.status_code == 201, r.text
            tokens[use] = r.json()["tokens"][0]["token"]
    return tokens


schema = schemathesis.pytest.from_fixture("api_schema")


# ---------------------------------------------------------------- steering


def _pick(value: str, choices: list[str]) -> str:
    return choices[zlib.crc32(value.encode()) % len(choices)]


def steer(case: Any, h: Harness, real_tokens: dict[str, str]) -> None:
    """Map generated scope and agent names onto the policy's, so that mint and explain
    reach the policy decision and signing rather than stopping at ``unknown_scope``; put
    a real token in some revocations and introspections. Everything else (task ids,
    resources, actions, ttl, invalid data) stays generated."""
    body = case.body
    if case.path in ("/v1/revoke", "/v1/introspect") and isinstance(body, dict):
        token = body.get("token")
        if isinstance(token, str) and zlib.crc32(token.encode()) % 2 == 0:
            body["token"] = real_tokens[case.path.rsplit("/", 1)[1]]
        return
    if case.path not in ("/v1/tokens", "/v1/explain") or not isinstance(body, dict):
        return
    policy = h.broker.policy
    if case.path == "/v1/tokens":
        names = [*policy.agents["reviewer"].scopes, "exports-read"]  # one in four not granted
    else:
        names = sorted(policy.scopes)
        if isinstance(body.get("agent"), str):
            body["agent"] = _pick(body["agent"], sorted(policy.agents))
    scopes = body.get("scopes")
    if not isinstance(scopes, list):
        return
    for i, entry in enumerate(scopes):
        if isinstance(entry, str):
            scopes[i] = _pick(entry, names)
        elif isinstance(entry, dict) and isinstance(entry.get("scope"), str):
            entry["scope"] = _pick(entry["scope"], names)


# ---------------------------------------------------------------- what every response must be


def check_response(case: Any, response: Any, h: Harness) -> None:
    headers = {k.lower(): v for k, v in response.headers.items()}
    (rid,) = headers["x-request-id"]
    assert REQUEST_ID.fullmatch(rid)
    content_type = (headers.get("content-type") or [None])[0]
    status = response.status_code
    if status == 204:  # OPTIONS
        assert not response.content
        return
    if status >= 400:
        assert content_type == PROBLEM_JSON, (status, content_type)
        problem = json.loads(response.content)
        assert problem["code"] in STATUS
        assert STATUS[problem["code"]] == status == problem["status"]
        assert problem["request_id"] == rid
        assert_no_secrets(response.text)
        return
    if case.path == "/metrics":
        assert content_type is not None
        assert content_type.startswith(METRICS_TYPE)
        return
    assert content_type == JSON, (status, content_type)
    answer = json.loads(response.content)
    if case.path == "/v1/tokens" and status == 201:
        check_minted(answer, h)
    if case.path == "/v1/introspect" and answer.get("active") is False:
        assert answer == {"active": False}


def check_minted(answer: dict[str, Any], h: Harness) -> None:
    """Each token verifies, and each capability is covered by the scope it names."""
    audiences = [t["audience"] for t in answer["tokens"]]
    assert len(audiences) == len(set(audiences))
    for entry in answer["tokens"]:
        grant = Verifier(issuer=ISSUER, audience=entry["audience"], jwks=_jwks(h)).verify(entry["token"])
        assert grant.agent == "reviewer"
        assert grant.token_id == entry["token_id"]
        for capability in grant.capabilities:
            scope = h.broker.policy.scopes[capability.scope]
            assert scope.audience == entry["audience"]
            assert covers(scope.capability, capability), (scope.capability, capability)


def _jwks(h: Harness) -> dict[str, Any]:
    with get_client(h.app) as client:
        doc: dict[str, Any] = client.get("/.well-known/jwks.json").json()
    return doc


# ---------------------------------------------------------------- the run


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_generated_requests(case: Any, fuzz_harness: Harness, real_tokens: dict[str, str]) -> None:
    steer(case, fuzz_harness, real_tokens)
    response = case.call(headers=fuzz_harness.auth(CALLER.get(case.path, "admin")))
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            response_schema_conformance,
            response_headers_conformance,
            status_code_conformance,
            content_type_conformance,
        ],
    )
    check_response(case, response, fuzz_harness)


# ---------------------------------------------------------------- what the document states


def _call(api_schema: Any, h: Harness, method: str, path: str, **case_fields: Any) -> tuple[Any, Any]:
    case = api_schema[path][method].Case(**case_fields)
    response = case.call(headers=h.auth(CALLER.get(path, "admin")))
    return case, response


@pytest.mark.parametrize(
    ("method", "path", "fields", "status"),
    [
        pytest.param("POST", "/v1/tokens", {"body": {"task": "t-doc", "scopes": ["widgets-read"]}}, 201, id="mint"),
        pytest.param("GET", "/.well-known/jwks.json", {}, 200, id="jwks"),
        pytest.param("GET", "/v1/scopes", {}, 200, id="scopes"),
        pytest.param("GET", "/healthz", {}, 200, id="healthz"),
        pytest.param("GET", "/readyz", {}, 200, id="readyz"),
        pytest.param("GET", "/.well-known/oauth-authorization-server", {}, 200, id="metadata"),
        pytest.param("GET", "/metrics", {}, 200, id="metrics"),
    ],
)
def test_documented_success_statuses_hold(
    api_schema: Any, fuzz_harness: Harness, *, method: str, path: str, fields: dict[str, Any], status: int
) -> None:
    """Status, content type, and (issue 13 item 7) the body against its documented schema."""
    case, response = _call(api_schema, fuzz_harness, method, path, **fields)
    assert response.status_code == status, response.text
    case.validate_response(
        response, checks=[status_code_conformance, content_type_conformance, response_schema_conformance]
    )


def test_every_success_body_has_a_schema(api_schema: Any) -> None:
    """Issue 13 item 7: the OpenAPI success responses had empty schemas."""
    empty = [
        f"{method.upper()} {path} {code}"
        for path, operations in api_schema.raw_schema["paths"].items()
        for method, operation in operations.items()
        for code, response in operation["responses"].items()
        if code.startswith("2") and not any(media.get("schema") for media in response.get("content", {}).values())
    ]
    assert not empty, empty


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        pytest.param("/v1/revoke", {"body": {"jti": "A" * 22}, "media_type": JSON}, id="revoke"),
        pytest.param("/v1/introspect", {"body": {"token": "x"}, "media_type": JSON}, id="introspect"),
        pytest.param(
            "/v1/explain", {"body": {"agent": "reviewer", "task": "t", "scopes": ["widgets-read"]}}, id="explain"
        ),
        pytest.param("/v1/admin/reload", {}, id="reload"),
        pytest.param("/v1/tasks/{task}/revoke", {"path_parameters": {"task": "t-doc-x"}}, id="task-revoke"),
        pytest.param("/v1/agents/{agent}/revoke", {"path_parameters": {"agent": "nobody"}}, id="agent-revoke"),
    ],
)
def test_documented_status_of_action_endpoints(
    api_schema: Any, fuzz_harness: Harness, path: str, fields: dict[str, Any]
) -> None:
    case, response = _call(api_schema, fuzz_harness, "POST", path, **fields)
    assert response.status_code == 200, response.text
    case.validate_response(response, checks=[status_code_conformance])


@pytest.mark.parametrize("path", ["/v1/tasks/{task}/revoke", "/v1/agents/{agent}/revoke"])
def test_documented_400_content_type(api_schema: Any, fuzz_harness: Harness, path: str) -> None:
    name = path.split("{")[1].split("}", maxsplit=1)[0]
    case, response = _call(api_schema, fuzz_harness, "POST", path, path_parameters={name: "-bad"})
    assert response.status_code == 400, response.text
    case.validate_response(response, checks=[content_type_conformance])


def test_public_endpoints_are_documented_without_credentials(api_schema: Any) -> None:
    raw = api_schema.raw_schema
    public = ["/.well-known/jwks.json", "/.well-known/oauth-authorization-server", "/healthz", "/readyz", "/metrics"]
    for path in public:
        operation = raw["paths"][path]["get"]
        security = operation.get("security", raw.get("security", []))
        assert security in ([], [{}]), f"{path} is documented as needing {security}"


def test_the_document_lists_every_route(api_schema: Any) -> None:
    paths = set(api_schema.raw_schema["paths"])
    assert paths >= {
        "/v1/tokens",
        "/v1/revoke",
        "/v1/tasks/{task}/revoke",
        "/v1/tasks/{task}/contain",
        "/v1/agents/{agent}/revoke",
        "/v1/introspect",
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
        "/v1/scopes",
        "/v1/explain",
        "/v1/admin/reload",
        "/healthz",
        "/readyz",
        "/metrics",
    }


def test_documented_status_of_a_containment(api_schema: Any, fuzz_harness: Harness) -> None:
    with get_client(fuzz_harness.app) as client:
        r = client.post(
            "/v1/tokens",
            json={"task": "t-doc-contain", "scopes": ["widgets-read"]},
            headers=fuzz_harness.auth("reviewer"),
        )
        assert r.status_code == 201, r.text
        token = r.json()["tokens"][0]["token"]
    body = {"token": token, "kind": "git", "resource": "github.com/acme/secrets", "action": "read"}
    case, response = _call(
        api_schema,
        fuzz_harness,
        "POST",
        "/v1/tasks/{task}/contain",
        path_parameters={"task": "t-doc-contain"},
        body=body,
    )
    assert response.status_code == 200, response.text
    case.validate_response(response, checks=[status_code_conformance, content_type_conformance])
