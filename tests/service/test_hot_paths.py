"""The hot paths (``POST /v1/tokens`` and ``POST /v1/introspect`` served straight from
ASGI) answer exactly as the Litestar routes do: one script of requests, good and bad, is
sent to a broker with the hot paths and to one without, and every answer (status,
headers, body), audit event and request metric must match, up to the values that differ
by nature (token strings, token ids, times, keys)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from broker.backends.memory_state import MemoryState
from broker.http.app import create_app
from broker.http.hot_paths import HOT_ROUTES
from tests.service.harness import Harness, make_harness
from tests.service.support import DownState, running

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
REPORTS = [{"scope": "reports-write", "resource": "s3://acme-reports/agents/t1/"}]
VARYING = {"token", "token_id", "jti", "expires_at", "iat", "nbf", "exp", "ts", "hash", "prev", "audit_id"}
JWS = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

Step = Callable[[TestClient[Any], Harness], httpx.Response]


def _post(
    path: str,
    who: str | None,
    content: bytes,
    content_type: str | None = JSON,
    also: list[tuple[str, str]] = (),  # type: ignore[assignment]
    **headers: str,
) -> Step:
    def step(client: TestClient[Any], h: Harness) -> httpx.Response:
        sent = {"X-Request-Id": "parity-1", **headers}
        if content_type is not None:
            sent["Content-Type"] = content_type
        if who is not None:
            sent.update(h.auth(who))
        return client.post(path, content=content, headers=[*sent.items(), *also])

    return step


def _mint(who: str | None, body: object, **kw: Any) -> Step:
    return _post("/v1/tokens", who, json.dumps(body).encode(), **kw)


def _introspect_minted(service: str, *, form: bool = False) -> Step:
    """Introspect the token this client's first mint gave (kept on the harness)."""

    def step(client: TestClient[Any], h: Harness) -> httpx.Response:
        token = h.minted_tokens[0]  # type: ignore[attr-defined]
        content = f"token={token}".encode() if form else json.dumps({"token": token}).encode()
        return _post("/v1/introspect", service, content, FORM if form else JSON)(client, h)

    return step


def _chunked(who: str, size: int) -> Step:
    def step(client: TestClient[Any], h: Harness) -> httpx.Response:
        body = iter([b"{" + b" " * (size // 2), b" " * (size // 2) + b"}"])
        return client.post(
            "/v1/tokens", content=body, headers={"Content-Type": JSON, "X-Request-Id": "parity-2", **h.auth(who)}
        )

    return step


SCRIPT: list[tuple[str, Step]] = [
    ("mint", _mint("analyst", {"task": "t1", "scopes": REPORTS})),
    ("mint again, same task", _mint("analyst", {"task": "t1", "scopes": REPORTS})),
    ("task of another agent", _mint("reviewer", {"task": "t1", "scopes": ["widgets-read"]})),
    ("no credential", _mint(None, {"task": "t2", "scopes": REPORTS})),
    ("a credential of no known shape", _mint(None, {"task": "t2", "scopes": REPORTS}, Authorization="Bearer nope")),
    ("not Bearer", _mint(None, {"task": "t2", "scopes": REPORTS}, Authorization="Basic Zm9vOmJhcg==")),
    ("a service cannot mint", _mint("git-gateway", {"task": "t2", "scopes": REPORTS})),
    ("no content type", _mint("analyst", {"task": "t2", "scopes": REPORTS}, content_type=None)),
    ("form to mint", _post("/v1/tokens", "analyst", b"task=t2", FORM)),
    (
        "utf-8 charset",
        _mint("analyst", {"task": "t3", "scopes": REPORTS}, content_type="application/json; charset=utf-8"),
    ),
    (
        "other charset",
        _mint("analyst", {"task": "t2", "scopes": REPORTS}, content_type="application/json; charset=latin-1"),
    ),
    ("broken JSON", _post("/v1/tokens", "analyst", b'{"task": ')),
    ("duplicate keys", _post("/v1/tokens", "analyst", b'{"task": "a", "task": "b", "scopes": []}')),
    ("not an object", _post("/v1/tokens", "analyst", b"[1, 2]")),
    ("not UTF-8", _post("/v1/tokens", "analyst", b'{"task": "\xff"}')),
    ("empty body", _post("/v1/tokens", "analyst", b"")),
    ("unknown scope", _mint("analyst", {"task": "t2", "scopes": ["nope"]})),
    ("scope not granted", _mint("analyst", {"task": "t2", "scopes": ["widgets-read"]})),
    (
        "traversal",
        _mint(
            "analyst",
            {"task": "t2", "scopes": [{"scope": "reports-write", "resource": "s3://acme-reports/agents/../x/"}]},
        ),
    ),
    ("ttl too long", _mint("analyst", {"task": "t2", "scopes": REPORTS, "ttl": 99999})),
    ("unknown field", _mint("analyst", {"task": "t2", "scopes": REPORTS, "extra": 1})),
    ("body over the limit, declared", _post("/v1/tokens", "analyst", b"{" + b" " * 70_000 + b"}")),
    ("body over the limit, chunked", _chunked("analyst", 70_000)),
    ("body under the limit, chunked", _chunked("analyst", 1_000)),
    ("two DPoP headers", _post("/v1/tokens", "analyst", b"{}", also=[("DPoP", "a"), ("DPoP", "a")])),
    ("a bad DPoP proof", _mint("analyst", {"task": "t2", "scopes": REPORTS}, DPoP="not.a.proof")),
    ("a long request id", _mint("analyst", {"task": "t4", "scopes": REPORTS}, **{"X-Request-Id": "x" * 65})),
    ("introspect", _introspect_minted("storage-gateway")),
    ("introspect, form", _introspect_minted("storage-gateway", form=True)),
    ("introspect, other audience", _introspect_minted("git-gateway")),
    ("introspect by an agent", _introspect_minted("analyst")),
    ("introspect, no credential", _post("/v1/introspect", None, b'{"token": "x"}')),
    ("introspect, garbage", _post("/v1/introspect", "git-gateway", b'{"token": "x"}')),
    ("introspect, no token", _post("/v1/introspect", "git-gateway", b"{}")),
    ("introspect, text/plain", _post("/v1/introspect", "git-gateway", b"token=x", "text/plain")),
    ("introspect, repeated form field", _post("/v1/introspect", "git-gateway", b"token=x&token=y", FORM)),
    ("introspect, half a proof", _post("/v1/introspect", "git-gateway", b'{"token": "x", "dpop": "y"}')),
    ("GET goes to the framework", lambda c, h: c.get("/v1/tokens", headers={"X-Request-Id": "parity-3"})),
    ("a trailing slash goes to the framework", _post("/v1/tokens/", "analyst", b"{}")),
]


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: "<varies>" if k in VARYING or (k == "request_id" and not str(v).startswith("parity")) else _normal(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, str):
        return JWS.sub("<jws>", value)
    return value


def _answer(r: httpx.Response) -> dict[str, Any]:
    headers = [(k, v) for k, v in r.headers.raw if k.lower() not in (b"content-length", b"date", b"server")]
    assert int(r.headers["content-length"]) == len(r.content)
    rid = r.headers.get("x-request-id", "")
    try:
        body = _normal(r.json())
    except ValueError:
        body = r.text
    if rid.startswith("parity"):
        return {"status": r.status_code, "headers": headers, "body": body}
    # a generated request id differs by nature; the shape must not
    assert re.fullmatch(r"[0-9a-f]{24}", rid)
    return {"status": r.status_code, "headers": [h for h in headers if h[0] != b"x-request-id"], "body": body}


def _run(hot: bool, state: MemoryState | None = None) -> tuple[list[dict[str, Any]], list[Any], str]:
    h = make_harness(state=state)
    h.app = create_app(h.broker, hot_paths=hot)
    h.minted_tokens = []  # type: ignore[attr-defined]
    answers = []
    with running(h) as client:
        for _name, step in SCRIPT:
            r = step(client, h)
            if r.status_code == 201 and not h.minted_tokens:  # type: ignore[attr-defined]
                h.minted_tokens.append(next(t["token"] for t in r.json()["tokens"]))  # type: ignore[attr-defined]
            answers.append(_answer(r))
        metrics = client.get("/metrics").text
    audit = [_normal(json.loads(line)) for line in h.audit_out.getvalue().splitlines()]
    requests = "\n".join(
        sorted(
            line
            for line in metrics.splitlines()
            if line.startswith(("capbroker_http_requests_total", "capbroker_http_request_duration_seconds_count"))
        )
    )
    return answers, audit, requests


@pytest.fixture(scope="module")
def both() -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    return _run(hot=True), _run(hot=False)


@pytest.mark.parametrize("index", range(len(SCRIPT)), ids=[name for name, _ in SCRIPT])
def test_the_hot_path_answers_as_the_framework_does(both: Any, index: int) -> None:
    hot, framework = both
    assert hot[0][index] == framework[0][index]


def test_the_script_reaches_every_kind_of_answer(both: Any) -> None:
    statuses = {a["status"] for a in both[0][0]}
    assert {200, 201, 400, 401, 403, 405, 413} <= statuses


def test_the_audit_trail_is_the_same(both: Any) -> None:
    hot, framework = both
    assert hot[1] == framework[1]
    assert len(hot[1]) > 20


def test_the_request_metrics_are_the_same(both: Any) -> None:
    hot, framework = both
    assert hot[2] == framework[2]
    assert 'status="4xx"' in hot[2]


def test_every_answered_request_is_timed_once(both: Any) -> None:
    """The counter and the latency come from one wrapper (``broker.http.request_id.observed``)
    around the hot paths and the framework: each response counted is timed, none twice."""
    for _answers, _audit, lines in both:
        counted = sum(float(line.split()[-1]) for line in lines.splitlines() if "requests_total" in line)
        timed = next(float(line.split()[-1]) for line in lines.splitlines() if "_count" in line)
        assert counted == timed >= len(SCRIPT)


def test_a_backend_down_is_the_same_503_with_retry_after() -> None:
    hot = _answer_one(DownState(), hot=True)
    framework = _answer_one(DownState(), hot=False)
    assert hot == framework
    assert hot["status"] == 503
    assert (b"retry-after", b"2") in hot["headers"]


def _answer_one(state: MemoryState, *, hot: bool) -> dict[str, Any]:
    h = make_harness(state=state)
    h.app = create_app(h.broker, hot_paths=hot)
    with TestClient(h.app) as client:
        return _answer(_mint("analyst", {"task": "t1", "scopes": REPORTS})(client, h))


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_bug_is_the_same_500_and_is_logged() -> None:
    records = _Records()  # on the logger itself: the framework's logging config replaces root handlers
    logging.getLogger("broker.http").addHandler(records)
    answers = []
    for hot in (True, False):
        h = make_harness()
        h.app = create_app(h.broker, hot_paths=hot)

        def broken(*_: Any, **__: Any) -> Any:
            raise RuntimeError("a bug")

        with running(h) as client:
            h.broker.decisions.decide = broken  # type: ignore[method-assign]
            answers.append(_answer(_mint("analyst", {"task": "t1", "scopes": REPORTS})(client, h)))
    assert answers[0] == answers[1]
    assert answers[0]["status"] == 500
    assert answers[0]["body"]["code"] == "internal_error"
    logging.getLogger("broker.http").removeHandler(records)
    assert records.messages == ["unhandled error on request parity-1"] * 2


def test_only_the_two_hot_operations_are_hot() -> None:
    assert set(HOT_ROUTES) == {"/v1/tokens", "/v1/introspect"}
