"""Helpers for the HTTP tests: a running client, problem+json checks, policy copies.

The in-process broker itself comes from ``harness.py``; this module only adds what the
API, bad-input and schemathesis tests share.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from litestar.testing import TestClient

from broker.backends.memory_state import MemoryState
from broker.errors import BackendUnavailable
from broker.service.credentials import secret_sha256
from tests.service.harness import SCOPES, Harness

PROBLEM_JSON = "application/problem+json"
JSON = "application/json"
MAX_BODY = 64 * 1024

# A compact JWS (what every capability token is) and a client secret, wherever they sit.
JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
CLIENT_SECRET = re.compile(r"cbk_[A-Za-z0-9_-]{20,}")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


# ---------------------------------------------------------------- running the app


def wait_ready(h: Harness, timeout: float = 5.0) -> None:
    """The lifespan runs the signing self-test in the background: wait for it."""
    deadline = time.monotonic() + timeout
    while not h.broker.ready_for_signing:
        if time.monotonic() > deadline:
            raise AssertionError("the signing self-test did not pass in time")
        time.sleep(0.002)


@contextmanager
def running(h: Harness) -> Iterator[TestClient[Any]]:
    with TestClient(h.app) as client:
        wait_ready(h)
        yield client


class DownState(MemoryState):
    """A state store whose backend (Redis, in production) is down: rate limits, task
    claims and pings fail the way the real adapter fails, with ``BackendUnavailable``."""

    async def take_rate(self, agent: str, count: int, per_seconds: int) -> float:
        raise BackendUnavailable("state store down (test)", retry_after=2.0)

    async def ping(self) -> None:
        raise BackendUnavailable("state store down (test)", retry_after=2.0)


# ---------------------------------------------------------------- policy copies


def copy_scopes(dest: Path) -> Path:
    """A writable copy of the example policy directory."""
    target = dest / "scopes"
    shutil.copytree(SCOPES, target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    """Replace ``old`` (which must occur exactly once) by ``new`` in a policy file."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path.name}"
    path.write_text(text.replace(old, new))


# ---------------------------------------------------------------- calls


def post_json(
    client: TestClient[Any], path: str, body: object, headers: Mapping[str, str] | None = None
) -> httpx.Response:
    return client.post(path, content=json.dumps(body).encode(), headers={"Content-Type": JSON, **(headers or {})})


def mint(
    client: TestClient[Any],
    h: Harness,
    agent: str,
    task: str,
    scopes: list[Any],
    *,
    ttl: object = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"task": task, "scopes": scopes}
    if ttl is not None:
        body["ttl"] = ttl
    return post_json(client, "/v1/tokens", body, {**h.auth(agent), **(headers or {})})


def minted(
    client: TestClient[Any], h: Harness, agent: str, task: str, scopes: list[Any], *, ttl: object = None
) -> dict[str, Any]:
    """The 201 body of a mint that must succeed."""
    r = mint(client, h, agent, task, scopes, ttl=ttl)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def token_for(body: Mapping[str, Any], audience: str) -> str:
    (token,) = [t["token"] for t in body["tokens"] if t["audience"] == audience]
    assert isinstance(token, str)
    return token


def introspect(client: TestClient[Any], h: Harness, service: str, token: str, *, form: bool = False) -> dict[str, Any]:
    if form:
        r = client.post(
            "/v1/introspect",
            content=urlencode({"token": token}).encode(),
            headers={**h.auth(service), "Content-Type": "application/x-www-form-urlencoded"},
        )
    else:
        r = post_json(client, "/v1/introspect", {"token": token}, h.auth(service))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    answer: dict[str, Any] = r.json()
    return answer


def metric(client: TestClient[Any], name: str, **labels: str) -> float:
    """One sample of ``/metrics`` (0 when the series is not there yet)."""
    r = client.get("/metrics")
    assert r.status_code == 200
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    series = f"{name}{{{inner}}}" if inner else name
    for line in r.text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == series:
            return float(value)
    return 0.0


def stream(
    client: TestClient[Any], method: str, path: str, headers: Mapping[str, str], chunks: list[bytes]
) -> httpx.Response:
    """Send a body as separate ASGI messages with no Content-Length (what a chunked
    upload looks like to the app), straight to the app on the client's event loop."""

    async def call() -> httpx.Response:
        pending = list(chunks)
        start: dict[str, Any] = {}
        body = bytearray()

        async def receive() -> dict[str, Any]:
            if pending:
                chunk = pending.pop(0)
                return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
            return {"type": "http.disconnect"}

        async def send(message: Mapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            + [(b"transfer-encoding", b"chunked")],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "state": {},
        }
        await client.app(scope, receive, send)
        return httpx.Response(
            start["status"],
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])],
            content=bytes(body),
        )

    return client.blocking_portal.call(call)


# ---------------------------------------------------------------- checks


def assert_no_secrets(text: str, *also: str) -> None:
    """No capability token, client secret (or any of ``also``) in a response body."""
    assert not JWT.search(text), f"a token leaked into: {text[:300]}"
    assert not CLIENT_SECRET.search(text), f"a client secret leaked into: {text[:300]}"
    for secret in also:
        assert secret not in text, f"{secret[:16]}... leaked into: {text[:300]}"


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An RFC 9457 problem with the stable ``code``, the request id, and nothing secret."""
    assert (r.status_code, _code_of(r)) == (status, code), r.text
    assert r.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["request_id"] == r.headers["x-request-id"]
    assert_no_secrets(r.text)
    return body


def _code_of(r: httpx.Response) -> object:
    try:
        return r.json().get("code")
    except ValueError:
        return None


def key_hashes(h: Harness) -> list[str]:
    """The SHA-256 of every harness secret (what the policy holds)."""
    return [secret_sha256(secret) for secret in h.keys.values()]
