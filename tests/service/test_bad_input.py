"""Bad input against every endpoint that takes a body or a path parameter.

One row per case: the request, the status and the stable ``code`` it must get. Every
refusal must be problem+json, carry no token or secret, and mint nothing. A few rows
with valid input (``ok-*``) prove each endpoint's base request is accepted, so the other
rows fail for the one thing they change.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.service.harness import Harness
from tests.service.support import (
    JSON,
    MAX_BODY,
    assert_no_secrets,
    assert_problem,
    minted,
    stream,
    token_for,
)

AnyClient = TestClient[Any]
Ctx = dict[str, str]
Setup = Callable[[AnyClient, Harness], Ctx]

FORM = "application/x-www-form-urlencoded"
NO_BODY = b""
UNKNOWN_SECRET = "cbk_" + "Q" * 43
# Stand-in for "the credential of this principal" in Case.who.
NONE = "none"


def js(value: object) -> bytes:
    return json.dumps(value).encode()


@dataclass(frozen=True)
class Case:
    path: str
    who: str  # a harness principal, "admin", NONE, or "raw:<Authorization header>"
    body: bytes | Callable[[Ctx], bytes]
    status: int
    code: str | None
    content_type: str | None = JSON
    setup: Setup | None = None
    send: str = "plain"  # "plain", "chunked" (httpx generator) or "streamed" (ASGI messages)
    marks: tuple[Any, ...] = field(default=())


# ---------------------------------------------------------------- setups


def analyst_owns_t1(client: AnyClient, h: Harness) -> Ctx:
    return {"token": token_for(minted(client, h, "analyst", "t-1", ["exports-read"]), "storage-gateway")}


def reviewer_token(client: AnyClient, h: Harness) -> Ctx:
    return {"token": token_for(minted(client, h, "reviewer", "t-9", ["widgets-read"]), "git-gateway")}


def t1_revoked(client: AnyClient, h: Harness) -> Ctx:
    assert client.post("/v1/tasks/t-1/revoke", headers=h.auth("admin")).status_code == 200
    return {}


# ---------------------------------------------------------------- the endpoints' valid requests

TOKENS, REVOKE, INTROSPECT, EXPLAIN = "/v1/tokens", "/v1/revoke", "/v1/introspect", "/v1/explain"
TASK_REVOKE, AGENT_REVOKE, RELOAD = "/v1/tasks/t-1/revoke", "/v1/agents/reviewer/revoke", "/v1/admin/reload"

MINT_OK: dict[str, Any] = {"task": "t-1", "scopes": ["widgets-read"]}
EXPLAIN_OK: dict[str, Any] = {"agent": "reviewer", **MINT_OK}
JSON_ENDPOINTS: dict[str, tuple[str, dict[str, Any], int]] = {
    # path -> (caller, a valid body, its success status)
    TOKENS: ("reviewer", MINT_OK, 201),
    REVOKE: ("admin", {"jti": "A" * 22}, 200),
    INTROSPECT: ("git-gateway", {"token": "not-a-token"}, 200),
    EXPLAIN: ("admin", EXPLAIN_OK, 200),
}
EMPTY_BODY_ENDPOINTS = {TASK_REVOKE: "admin", AGENT_REVOKE: "admin", RELOAD: "admin"}
SHORT = {TOKENS: "tokens", REVOKE: "revoke", INTROSPECT: "introspect", EXPLAIN: "explain"}
SHORT |= {TASK_REVOKE: "task-revoke", AGENT_REVOKE: "agent-revoke", RELOAD: "reload"}

CASES: list[Any] = []


def add(case_id: str, case: Case) -> None:
    CASES.append(pytest.param(case, id=case_id, marks=case.marks))


def bad_mint(case_id: str, body: object, status: int = 400, code: str = "invalid_request", **kw: Any) -> None:
    add(f"tokens-{case_id}", Case(TOKENS, "reviewer", js(body), status, code, **kw))


def mint_scope(entry: object, **extra: Any) -> dict[str, Any]:
    return {"task": "t-1", "scopes": [entry], **extra}


# ---------------------------------------------------------------- every JSON endpoint

for path, (who, ok, ok_status) in JSON_ENDPOINTS.items():
    name = SHORT[path]
    raw = js(ok)
    first_key = next(iter(ok))
    add(f"{name}-ok", Case(path, who, raw, ok_status, None))
    add(f"{name}-ok-charset-utf-8", Case(path, who, raw, ok_status, None, content_type=f"{JSON}; charset=utf-8"))
    add(f"{name}-ok-streamed", Case(path, who, raw, ok_status, None, send="streamed"))
    # malformed JSON
    add(f"{name}-truncated-json", Case(path, who, raw[:-1], 400, "invalid_request"))
    add(f"{name}-trailing-comma", Case(path, who, raw[:-1] + b",}", 400, "invalid_request"))
    add(f"{name}-not-json", Case(path, who, b"task=t-1", 400, "invalid_request"))
    add(f"{name}-empty-body", Case(path, who, NO_BODY, 400, "invalid_request"))
    add(f"{name}-json-array", Case(path, who, js([ok]), 400, "invalid_request"))
    add(f"{name}-json-null", Case(path, who, b"null", 400, "invalid_request"))
    add(f"{name}-json-string", Case(path, who, b'"x"', 400, "invalid_request"))
    add(f"{name}-not-utf8", Case(path, who, raw.replace(b'"', b'"\xff', 1), 400, "invalid_request"))
    add(f"{name}-utf16", Case(path, who, json.dumps(ok).encode("utf-16"), 400, "invalid_request"))
    add(f"{name}-utf8-bom", Case(path, who, b"\xef\xbb\xbf" + raw, 400, "invalid_request"))
    add(f"{name}-deep-nesting", Case(path, who, b'{"x":' + b"[" * 20000 + b"]" * 20000 + b"}", 400, "invalid_request"))
    # duplicate keys, even with the same value
    dup = raw.replace(b"{", b"{" + js(first_key) + b": " + js(ok[first_key]) + b", ", 1)
    add(f"{name}-duplicate-key", Case(path, who, dup, 400, "invalid_request"))
    # unknown fields
    add(f"{name}-unknown-field", Case(path, who, js({**ok, "extra": 1}), 400, "invalid_request"))
    # wrong content types
    for ct_id, ct in [
        ("text-plain", "text/plain"),
        ("missing", None),
        ("charset-latin-1", f"{JSON}; charset=latin-1"),
        ("extra-parameter", f"{JSON}; profile=x"),
        ("jsonp", "application/jsonp"),
        ("multipart", "multipart/form-data; boundary=x"),
    ]:
        add(f"{name}-content-type-{ct_id}", Case(path, who, raw, 400, "invalid_request", content_type=ct))
    if path != INTROSPECT:
        add(f"{name}-content-type-form", Case(path, who, raw, 400, "invalid_request", content_type=FORM))
    # oversize: refused before it is parsed, announced or not
    big = raw[:-1] + b"," + b" " * MAX_BODY + b"}"
    add(f"{name}-oversize-content-length", Case(path, who, big, 413, "payload_too_large"))
    add(f"{name}-oversize-chunked", Case(path, who, big, 413, "payload_too_large", send="chunked"))
    add(f"{name}-oversize-streamed", Case(path, who, big, 413, "payload_too_large", send="streamed"))
    # credentials
    add(f"{name}-no-credentials", Case(path, NONE, raw, 401, "unauthenticated"))
    add(f"{name}-garbage-bearer", Case(path, "raw:Bearer garbage", raw, 401, "unauthenticated"))
    add(f"{name}-unknown-secret", Case(path, f"raw:Bearer {UNKNOWN_SECRET}", raw, 401, "unauthenticated"))
    add(f"{name}-basic-scheme", Case(path, "raw:Basic cmV2aWV3ZXI6eA==", raw, 401, "unauthenticated"))
    add(
        f"{name}-capability-token-as-credential",
        Case(path, "ctx:token", raw, 401, "unauthenticated", setup=reviewer_token),
    )

# The size limit is 64 KiB exactly: at the limit is fine, one byte over is not.
_at_limit = js(MINT_OK)[:-1] + b"}"
_at_limit = _at_limit[:-1] + b" " * (MAX_BODY - len(_at_limit)) + b"}"
add("tokens-ok-exactly-64-KiB", Case(TOKENS, "reviewer", _at_limit, 201, None))
add("tokens-one-byte-over-64-KiB", Case(TOKENS, "reviewer", _at_limit + b" ", 413, "payload_too_large"))

# ---------------------------------------------------------------- POST /v1/tokens

for dup_id, dup_body in [
    ("duplicate-key-in-scope-object", b'{"task":"t-1","scopes":[{"scope":"widgets-read","scope":"widgets-read"}]}'),
    ("duplicate-key-differing-values", b'{"task":"t-1","scopes":["widgets-read"],"task":"t-2"}'),
]:
    add(f"tokens-{dup_id}", Case(TOKENS, "reviewer", dup_body, 400, "invalid_request"))
bad_mint("unknown-field-in-scope-object", mint_scope({"scope": "widgets-read", "audience": "git-gateway"}))
bad_mint("explain-only-field-agent", {**MINT_OK, "agent": "reviewer"})
bad_mint("missing-task", {"scopes": ["widgets-read"]})
bad_mint("missing-scopes", {"task": "t-1"})
for type_id, value in [("int", 123), ("null", None), ("list", ["t-1"]), ("bool", True), ("object", {"id": "t-1"})]:
    bad_mint(f"task-{type_id}", {**MINT_OK, "task": value})
for type_id, value in [
    ("string", "widgets-read"),
    ("empty-list", []),
    ("object", {"widgets-read": True}),
    ("null", None),
    ("list-of-int", [123]),
    ("list-of-null", [None]),
    ("list-of-list", [["widgets-read"]]),
    ("seventeen-entries", ["widgets-read"] * 17),
]:
    bad_mint(f"scopes-{type_id}", {**MINT_OK, "scopes": value})
for type_id, entry in [
    ("scope-int", {"scope": 1}),
    ("scope-missing", {"resource": "github.com/acme/widgets"}),
    ("resource-int", {"scope": "widgets-read", "resource": 5}),
    ("actions-string", {"scope": "widgets-read", "actions": "read"}),
    ("actions-empty", {"scope": "widgets-read", "actions": []}),
    ("actions-int", {"scope": "widgets-read", "actions": [1]}),
    ("actions-repeated", {"scope": "widgets-read", "actions": ["read", "read"]}),
]:
    bad_mint(f"scope-entry-{type_id}", mint_scope(entry))
for null_id, entry in [
    ("resource-null", {"scope": "widgets-read", "resource": None}),
    ("actions-null", {"scope": "widgets-read", "actions": None}),
]:
    bad_mint(f"scope-entry-{null_id}", mint_scope(entry))
bad_mint("ttl-null", {**MINT_OK, "ttl": None})

# task ids outside [A-Za-z0-9][A-Za-z0-9._:-]{0,127}
for task_id, task in [
    ("empty", ""),
    ("leading-dash", "-x"),
    ("leading-dot", ".x"),
    ("dot-dot", ".."),
    ("slash", "a/b"),
    ("space", "a b"),
    ("non-ascii", "tâsk"),
    ("too-long", "x" * 129),
    ("newline", "t-1\n"),
    ("nul", "t\x001"),
    ("percent", "a%2e"),
    ("underscore-first", "_x"),
]:
    bad_mint(f"task-{task_id}", {**MINT_OK, "task": task})
add("tokens-ok-task-128-chars", Case(TOKENS, "reviewer", js({**MINT_OK, "task": "x" * 128}), 201, None))
add("tokens-ok-task-every-char-class", Case(TOKENS, "reviewer", js({**MINT_OK, "task": "A.b:c_d-9"}), 201, None))

# resources outside the grammar (SPEC 2.1): refused, never normalised
for res_id, scope, resource in [
    ("dot-dot", "reports-write", "s3://acme-reports/agents/../x/"),
    ("encoded-dot-dot", "reports-write", "s3://acme-reports/agents/%2e%2e/x/"),
    ("dot-segment", "reports-write", "s3://acme-reports/agents/t1/./"),
    ("empty-segment", "reports-write", "s3://acme-reports/agents//t1/"),
    ("backslash", "reports-write", "s3://acme-reports/agents/t1\\x/"),
    ("space", "reports-write", "s3://acme-reports/agents/t 1/"),
    ("wildcard", "reports-write", "s3://acme-reports/agents/t1/*"),
    ("question-mark", "reports-write", "s3://acme-reports/agents/t1/?"),
    ("bracket", "reports-write", "s3://acme-reports/agents/t1/[x]/"),
    ("nul", "reports-write", "s3://acme-reports/agents/t1/\x00/"),
    ("non-ascii", "reports-write", "s3://acme-reports/agents/tä/"),
    ("upper-case-bucket", "reports-write", "s3://ACME-reports/agents/t1/"),
    ("upper-case-scheme", "reports-write", "S3://acme-reports/agents/t1/"),
    ("trailing-space", "reports-write", "s3://acme-reports/agents/t1/ "),
    ("empty", "reports-write", ""),
    ("git-trailing-slash", "widgets-read", "github.com/acme/widgets/"),
    ("git-extra-segment", "widgets-read", "github.com/acme/widgets/extra"),
    ("git-upper-case-host", "widgets-read", "GitHub.com/acme/widgets"),
    ("git-query", "widgets-read", "github.com/acme/widgets?x"),
    ("git-fragment", "widgets-read", "github.com/acme/widgets#x"),
    ("git-trailing-newline", "widgets-read", "github.com/acme/widgets\n"),
    ("http-upper-case-host", "widgets-pulls-read", "https://API.github.com/repos/acme/widgets/pulls/1"),
    ("http-query", "widgets-pulls-read", "https://api.github.com/repos/acme/widgets/pulls/1?x=1"),
    ("http-dot-dot", "widgets-pulls-read", "https://api.github.com/repos/acme/widgets/pulls/../../issues/"),
    ("http-encoded-dot-dot", "widgets-pulls-read", "https://api.github.com/repos/acme/widgets/pulls/%2e%2e/x"),
    ("http-plain-http", "widgets-pulls-read", "http://api.github.com/repos/acme/widgets/pulls/1"),
    ("http-userinfo", "widgets-pulls-read", "https://user@api.github.com/repos/acme/widgets/pulls/1"),
    ("http-default-port", "widgets-pulls-read", "https://api.github.com:443/repos/acme/widgets/pulls/1"),
]:
    agent = "analyst" if scope == "reports-write" else "reviewer"
    add(
        f"tokens-resource-{res_id}",
        Case(TOKENS, agent, js(mint_scope({"scope": scope, "resource": resource})), 400, "invalid_request"),
    )
for act_id, scope, actions in [
    ("upper-case-git", "widgets-read", ["READ"]),
    ("unknown", "widgets-read", ["admin"]),
    ("star", "widgets-read", ["*"]),
    ("lower-case-http", "widgets-pulls-read", ["get"]),
]:
    bad_mint(f"actions-{act_id}", mint_scope({"scope": scope, "actions": actions}))
# in the grammar, but wider than the grant: 403
for wide_id, agent, entry in [
    ("sibling-prefix", "analyst", {"scope": "reports-write", "resource": "s3://acme-reports/agents-old/x/"}),
    ("whole-bucket", "analyst", {"scope": "reports-write", "resource": "s3://acme-reports/"}),
    ("other-repo", "reviewer", {"scope": "widgets-read", "resource": "github.com/acme/widgets.git"}),
    ("action-not-granted", "reviewer", {"scope": "widgets-read", "actions": ["write"]}),
    ("scope-of-another-agent", "reviewer", "exports-read"),
]:
    add(f"tokens-wider-{wide_id}", Case(TOKENS, agent, js(mint_scope(entry)), 403, "scope_not_granted"))

# unknown scopes
for unk_id, scopes in [
    ("name", ["no-such-scope"]),
    ("object", [{"scope": "no-such-scope"}]),
    ("after-a-good-one", ["widgets-read", "no-such-scope"]),
]:
    bad_mint(f"unknown-scope-{unk_id}", {**MINT_OK, "scopes": scopes}, code="unknown_scope")
for name_id, scope_name in [("upper-case", "Widgets-Read"), ("too-long", "a" * 64), ("underscore", "widgets_read")]:
    bad_mint(f"scope-name-{name_id}", {**MINT_OK, "scopes": [scope_name]})

# ttl above the caps: an error, not a clamp
for ttl_id, ttl, scope in [
    ("agent-cap-11m", "11m", "widgets-read"),
    ("agent-cap-601s", 601, "widgets-read"),
    ("scope-cap-6m", "6m", "widgets-review-comment"),
    ("global-cap-2h", "2h", "widgets-read"),
    ("huge-duration", "9999999h", "widgets-read"),
    ("largest-integer", 10**7, "widgets-read"),
]:
    bad_mint(f"ttl-{ttl_id}", {"task": "t-1", "scopes": [scope], "ttl": ttl}, code="ttl_exceeds_max")
# ttl that is no duration at all
for ttl_id, ttl in [
    ("zero", 0),
    ("negative", -1),
    ("negative-300", -300),
    ("float", 1.5),
    ("float-whole", 300.0),
    ("true", True),
    ("false", False),
    ("list", [300]),
    ("object", {"m": 5}),
    ("zero-string", "0s"),
    ("zero-minutes", "0m"),
    ("negative-string", "-5m"),
    ("fraction-string", "1.5m"),
    ("upper-case-unit", "5M"),
    ("inner-space", "5 m"),
    ("leading-space", " 5m"),
    ("long-unit", "5min"),
    ("days", "1d"),
    ("no-unit", "300"),
    ("empty", ""),
    ("above-integer-range", 10**7 + 1),
    ("integer-too-large-for-json", 10**20),
]:
    bad_mint(f"ttl-{ttl_id}", {**MINT_OK, "ttl": ttl})

for raw_id, number in [("nan", b"NaN"), ("infinity", b"Infinity"), ("exponent", b"3e2"), ("negative-zero", b"-0")]:
    body = b'{"task": "t-1", "scopes": ["widgets-read"], "ttl": ' + number + b"}"
    add(f"tokens-ttl-{raw_id}", Case(TOKENS, "reviewer", body, 400, "invalid_request"))
    add(
        f"explain-ttl-{raw_id}",
        Case(EXPLAIN, "admin", body[:1] + b'"agent": "reviewer", ' + body[1:], 400, "invalid_request"),
    )

# tasks: another agent's, or revoked
add(
    "tokens-ok-task-id-another-agent-uses",  # task ids are scoped to their agent
    Case(TOKENS, "reviewer", js(MINT_OK), 201, None, setup=analyst_owns_t1),
)
add("tokens-revoked-task", Case(TOKENS, "reviewer", js(MINT_OK), 403, "task_revoked", setup=t1_revoked))
# other principals
add("tokens-as-service", Case(TOKENS, "git-gateway", js(MINT_OK), 401, "unauthenticated"))
add("tokens-as-admin", Case(TOKENS, "admin", js(MINT_OK), 401, "unauthenticated"))

# ---------------------------------------------------------------- POST /v1/revoke

for rv_id, who, body, status, code in [
    ("both-token-and-jti", "admin", {"token": "x", "jti": "A" * 22}, 400, "invalid_request"),
    ("empty-object", "admin", {}, 400, "invalid_request"),
    ("other-field", "admin", {"id": "A" * 22}, 400, "invalid_request"),
    ("token-int", "admin", {"token": 5}, 400, "invalid_request"),
    ("token-null", "admin", {"token": None}, 400, "invalid_request"),
    ("token-empty", "admin", {"token": ""}, 400, "invalid_request"),
    ("token-garbage", "admin", {"token": "garbage"}, 400, "invalid_request"),
    ("token-oversize", "admin", {"token": "eyJ" + "A" * 9000 + ".e30.AA"}, 400, "invalid_request"),
    ("jti-int", "admin", {"jti": 5}, 400, "invalid_request"),
    ("jti-null", "admin", {"jti": None}, 400, "invalid_request"),
    ("jti-short", "admin", {"jti": "A" * 21}, 400, "invalid_request"),
    ("jti-long", "admin", {"jti": "A" * 23}, 400, "invalid_request"),
    ("jti-bad-char", "admin", {"jti": "A" * 21 + "="}, 400, "invalid_request"),
    ("agent-by-jti", "reviewer", {"jti": "A" * 22}, 403, "forbidden"),
    ("as-service", "git-gateway", {"jti": "A" * 22}, 403, "forbidden"),
]:
    add(f"revoke-{rv_id}", Case(REVOKE, who, js(body), status, code))
add(
    "revoke-another-agents-token",
    Case(REVOKE, "reviewer", lambda ctx: js({"token": ctx["token"]}), 403, "forbidden", setup=analyst_owns_t1),
)
add(
    "revoke-ok-own-token",
    Case(REVOKE, "analyst", lambda ctx: js({"token": ctx["token"]}), 200, None, setup=analyst_owns_t1),
)

# ---------------------------------------------------------------- POST /v1/introspect

for in_id, body in [
    ("missing-token", {}),
    ("token-empty", {"token": ""}),
    ("token-int", {"token": 5}),
    ("token-null", {"token": None}),
    ("token-list", {"token": ["x"]}),
    ("hint-int", {"token": "x", "token_type_hint": 5}),
]:
    add(f"introspect-{in_id}", Case(INTROSPECT, "git-gateway", js(body), 400, "invalid_request"))
add("introspect-token-not-utf8", Case(INTROSPECT, "git-gateway", b'{"token": "x\xff"}', 400, "invalid_request"))
add("introspect-form-ok", Case(INTROSPECT, "git-gateway", b"token=x", 200, None, content_type=FORM))
add(
    "introspect-form-ok-charset-utf-8",
    Case(INTROSPECT, "git-gateway", b"token=x", 200, None, content_type=f"{FORM}; charset=utf-8"),
)
for form_id, body in [
    ("repeated-token", b"token=a&token=b"),
    ("unknown-field", b"token=a&foo=b"),
    ("missing-token", b"token_type_hint=access_token"),
    ("empty-token", b"token="),
    ("no-equals", b"token"),
    ("non-ascii", "token=ä".encode()),
    ("too-many-fields", b"&".join(b"f%d=1" % i for i in range(9))),
    ("empty-body", NO_BODY),
]:
    add(f"introspect-form-{form_id}", Case(INTROSPECT, "git-gateway", body, 400, "invalid_request", content_type=FORM))
add(
    "introspect-form-charset-latin-1",
    Case(INTROSPECT, "git-gateway", b"token=x", 400, "invalid_request", content_type=f"{FORM}; charset=latin-1"),
)
for who_id, who in [("as-agent", "reviewer"), ("as-admin", "admin"), ("as-other-agent", "deployer")]:
    add(f"introspect-{who_id}", Case(INTROSPECT, who, js({"token": "x"}), 401, "unauthenticated"))

# ---------------------------------------------------------------- POST /v1/explain

for ex_id, body in [
    ("agent-missing", MINT_OK),
    ("agent-int", {**MINT_OK, "agent": 5}),
    ("agent-null", {**MINT_OK, "agent": None}),
    ("agent-unknown", {**MINT_OK, "agent": "nobody"}),
    ("agent-upper-case", {**MINT_OK, "agent": "Reviewer"}),
    ("task-bad", {**EXPLAIN_OK, "task": "-x"}),
    ("scopes-empty", {**EXPLAIN_OK, "scopes": []}),
    ("ttl-zero", {**EXPLAIN_OK, "ttl": 0}),
    ("ttl-float", {**EXPLAIN_OK, "ttl": 1.5}),
    ("unknown-field-in-scope-object", {**EXPLAIN_OK, "scopes": [{"scope": "widgets-read", "x": 1}]}),
]:
    add(f"explain-{ex_id}", Case(EXPLAIN, "admin", js(body), 400, "invalid_request"))
# A well-formed question answers 200 with the decision; these are denials.
for ex_id, body, code in [
    ("deny-unknown-scope", {**EXPLAIN_OK, "scopes": ["no-such-scope"]}, "unknown_scope"),
    (
        "deny-resource-dot-dot",
        {**EXPLAIN_OK, "scopes": [{"scope": "widgets-read", "resource": "github.com/acme/../x"}]},
        "invalid_request",
    ),
    ("deny-ttl", {**EXPLAIN_OK, "ttl": "11m"}, "ttl_exceeds_max"),
    ("deny-not-granted", {**EXPLAIN_OK, "scopes": ["exports-read"]}, "scope_not_granted"),
]:
    add(f"explain-{ex_id}", Case(EXPLAIN, "admin", js(body), 200, code))
for who_id, who in [("as-agent", "reviewer"), ("as-service", "git-gateway")]:
    add(f"explain-{who_id}", Case(EXPLAIN, who, js(EXPLAIN_OK), 403, "forbidden"))

# ---------------------------------------------------------------- the action endpoints (no body)

for path, who in EMPTY_BODY_ENDPOINTS.items():
    name = SHORT[path]
    add(f"{name}-ok-no-body", Case(path, who, NO_BODY, 200, None, content_type=None))
    add(f"{name}-ok-empty-json-object", Case(path, who, b"{}", 200, None))
    add(f"{name}-field", Case(path, who, js({"task": "t-1"}), 400, "invalid_request"))
    add(f"{name}-malformed-json", Case(path, who, b"{", 400, "invalid_request"))
    add(f"{name}-duplicate-key", Case(path, who, b'{"a":1,"a":1}', 400, "invalid_request"))
    add(f"{name}-json-array", Case(path, who, b"[]", 400, "invalid_request"))
    add(f"{name}-json-null", Case(path, who, b"null", 400, "invalid_request"))
    add(f"{name}-text-plain", Case(path, who, b"please", 400, "invalid_request", content_type="text/plain"))
    add(f"{name}-content-type-missing", Case(path, who, b"{}", 400, "invalid_request", content_type=None))
    add(
        f"{name}-charset-latin-1",
        Case(path, who, b"{}", 400, "invalid_request", content_type=f"{JSON}; charset=latin-1"),
    )
    big = b"{" + b" " * MAX_BODY + b"}"
    add(f"{name}-oversize-content-length", Case(path, who, big, 413, "payload_too_large"))
    add(f"{name}-oversize-chunked", Case(path, who, big, 413, "payload_too_large", send="chunked"))
    add(f"{name}-oversize-streamed", Case(path, who, big, 413, "payload_too_large", send="streamed"))
    add(f"{name}-no-credentials", Case(path, NONE, NO_BODY, 401, "unauthenticated", content_type=None))
    add(f"{name}-garbage-bearer", Case(path, "raw:Bearer garbage", NO_BODY, 401, "unauthenticated", content_type=None))
    add(
        f"{name}-unknown-secret",
        Case(path, f"raw:Bearer {UNKNOWN_SECRET}", NO_BODY, 401, "unauthenticated", content_type=None),
    )
    add(f"{name}-as-service", Case(path, "storage-gateway", NO_BODY, 403, "forbidden", content_type=None))
for path in (AGENT_REVOKE, RELOAD):
    add(f"{SHORT[path]}-as-agent", Case(path, "reviewer", NO_BODY, 403, "forbidden", content_type=None))
add(
    "task-revoke-ok-as-owner",
    Case(TASK_REVOKE, "analyst", NO_BODY, 200, None, content_type=None, setup=analyst_owns_t1),
)
# another agent's task of the same id is not the caller's: answered as for any unused id
add(
    "task-revoke-ok-id-another-agent-uses",
    Case(TASK_REVOKE, "reviewer", NO_BODY, 200, None, content_type=None, setup=analyst_owns_t1),
)
add("task-revoke-ok-unused-task-as-agent", Case(TASK_REVOKE, "reviewer", NO_BODY, 200, None, content_type=None))
add(
    "task-revoke-agent-names-another-agent",
    Case(TASK_REVOKE, "reviewer", js({"agent": "analyst"}), 403, "forbidden", setup=analyst_owns_t1),
)
add("task-revoke-ok-admin-names-agent", Case(TASK_REVOKE, "admin", js({"agent": "analyst"}), 200, None))
add("task-revoke-admin-bad-agent-name", Case(TASK_REVOKE, "admin", js({"agent": "Analyst"}), 400, "invalid_request"))
add("task-revoke-admin-agent-not-a-string", Case(TASK_REVOKE, "admin", js({"agent": 7}), 400, "invalid_request"))

# bad path parameters (percent-encoded as a client would send them)
for task_id, segment, status, code in [
    ("leading-dash", "-x", 400, "invalid_request"),
    ("leading-dot", ".x", 400, "invalid_request"),
    ("encoded-dot-dot", "%2e%2e", 400, "invalid_request"),
    ("encoded-space", "a%20b", 400, "invalid_request"),
    ("too-long", "x" * 129, 400, "invalid_request"),
    ("non-ascii", "t%C3%A2", 400, "invalid_request"),
    ("encoded-nul", "a%00b", 400, "invalid_request"),
    ("underscore-first", "_x", 400, "invalid_request"),
    ("encoded-slash", "a%2Fb", 404, "not_found"),
]:
    path = f"/v1/tasks/{segment}/revoke"
    add(f"task-revoke-path-{task_id}", Case(path, "admin", NO_BODY, status, code, content_type=None))
add(
    "task-revoke-ok-path-128-chars",
    Case(f"/v1/tasks/{'x' * 128}/revoke", "admin", NO_BODY, 200, None, content_type=None),
)
for agent_id, segment, status, code in [
    ("upper-case", "Reviewer", 400, "invalid_request"),
    ("leading-dash", "-x", 400, "invalid_request"),
    ("underscore", "a_b", 400, "invalid_request"),
    ("dot", "a.b", 400, "invalid_request"),
    ("too-long", "a" * 64, 400, "invalid_request"),
    ("encoded-dot-dot", "%2e%2e", 400, "invalid_request"),
    ("non-ascii", "%C3%A4", 400, "invalid_request"),
    ("encoded-space", "a%20b", 400, "invalid_request"),
    ("encoded-slash", "a%2Fb", 404, "not_found"),
]:
    path = f"/v1/agents/{segment}/revoke"
    add(f"agent-revoke-path-{agent_id}", Case(path, "admin", NO_BODY, status, code, content_type=None))


# ---------------------------------------------------------------- the test


def _authorization(case: Case, h: Harness, ctx: Ctx) -> dict[str, str]:
    if case.who == NONE:
        return {}
    if case.who.startswith("raw:"):
        return {"Authorization": case.who.removeprefix("raw:")}
    if case.who.startswith("ctx:"):
        return {"Authorization": f"Bearer {ctx[case.who.removeprefix('ctx:')]}"}
    return h.auth(case.who)


def _send(client: AnyClient, h: Harness, case: Case, ctx: Ctx) -> Any:
    body = case.body(ctx) if callable(case.body) else case.body
    headers = _authorization(case, h, ctx)
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    if case.send == "streamed":
        size = 8 * 1024
        return stream(client, "POST", case.path, headers, [body[i : i + size] for i in range(0, len(body), size)])
    if case.send == "chunked":

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(body), 4096):
                yield body[i : i + 4096]

        return client.post(case.path, content=chunks(), headers=headers)
    return client.post(case.path, content=body, headers=headers)


@pytest.mark.parametrize("case", CASES)
def test_bad_input(client: AnyClient, h: Harness, case: Case) -> None:
    ctx = case.setup(client, h) if case.setup else {}
    minted_before = h.broker.metrics.value("capbroker_tokens_minted_total")

    r = _send(client, h, case, ctx)

    if case.code is None:  # a valid request, for contrast
        assert r.status_code == case.status, r.text
        assert r.headers["content-type"] == JSON
        return
    if case.status == 200:  # explain answers a well-formed question with its decision
        assert r.status_code == 200, r.text
        assert (r.json()["decision"], r.json()["code"]) == ("deny", case.code)
        assert r.json()["capabilities"] == []
    else:
        assert_problem(r, case.status, case.code)
    assert_no_secrets(r.text, *ctx.values())
    assert h.broker.metrics.value("capbroker_tokens_minted_total") == minted_before, "a refusal minted a token"


def test_the_matrix_covers_every_endpoint_with_a_body_or_path_parameter() -> None:
    paths = {p.values[0].path for p in CASES}
    for endpoint in (TOKENS, REVOKE, INTROSPECT, EXPLAIN, TASK_REVOKE, AGENT_REVOKE, RELOAD):
        assert endpoint in paths
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids)), "case ids are unique"
