"""The ASGI middleware and the Litestar guard, driven in process."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from litestar import Litestar, Request, get
from litestar.testing import TestClient

from broker.token import KeyRing, LocalSigner
from broker.verify.asgi import CapabilityMiddleware
from broker.verify.litestar import capability_guard, grant_of
from tests.helpers import good_token, verifier


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    grant = scope["state"]["capability_grant"]
    body = grant.task.encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def call(app: Any, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "headers": headers, "method": "GET", "path": "/"}, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def run(app: Any, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    return asyncio.run(call(app, headers))


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"authorization", b"Basic abc")],
        [(b"authorization", b"Bearer")],
        [(b"authorization", b"Bearer not.a.token")],
    ],
)
def test_middleware_refuses_without_a_valid_token(ring: KeyRing, headers: list[tuple[bytes, bytes]]) -> None:
    status, body = run(CapabilityMiddleware(echo_app, verifier(ring)), headers)
    assert status == 401
    assert b'"code": "malformed"' in body


def test_middleware_refuses_two_authorization_headers(ring: KeyRing, ed_signer: LocalSigner) -> None:
    token = good_token(ed_signer).encode()
    status, _ = run(
        CapabilityMiddleware(echo_app, verifier(ring)),
        [(b"authorization", b"Bearer " + token), (b"authorization", b"Bearer " + token)],
    )
    assert status == 401


def test_middleware_attaches_the_grant(ring: KeyRing, ed_signer: LocalSigner) -> None:
    token = good_token(ed_signer).encode()
    status, body = run(CapabilityMiddleware(echo_app, verifier(ring)), [(b"authorization", b"Bearer " + token)])
    assert (status, body) == (200, b"t1")


def test_litestar_guard(ring: KeyRing, ed_signer: LocalSigner) -> None:
    @get("/reports/a.csv")
    async def read_report(request: Request[Any, Any, Any]) -> dict[str, Any]:
        grant = grant_of(request)
        return {"allowed": grant.allows("bucket", "s3://acme-reports/agents/t1/a.csv", "read")}

    app = Litestar([read_report], guards=[capability_guard(verifier(ring))])
    with TestClient(app) as client:
        assert client.get("/reports/a.csv").status_code == 401
        bad = client.get("/reports/a.csv", headers={"Authorization": "Bearer x.y.z"})
        assert bad.status_code == 401
        assert bad.json()["extra"]["code"] == "malformed"
        ok = client.get("/reports/a.csv", headers={"Authorization": f"Bearer {good_token(ed_signer)}"})
        assert ok.status_code == 200
        assert ok.json() == {"allowed": True}


def test_middleware_accepts_the_dpop_scheme_and_offers_it(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """An unbound token may come with either scheme (DPoP with a proof, RFC 9449 7.1); a
    401 offers Bearer and DPoP both."""
    from broker.dpop.client import DpopKey
    from tests.helpers import NOW

    app = CapabilityMiddleware(echo_app, verifier(ring), public_url="https://svc.internal")
    token = good_token(ed_signer).encode()
    status, body = run(app, [(b"authorization", b"DPoP " + token)])  # the DPoP scheme with no proof
    assert status == 401
    assert b'"code": "proof_required"' in body
    proof = DpopKey.generate().proof("GET", "https://svc.internal/", now=NOW + 10, access_token=token.decode())
    assert run(app, [(b"authorization", b"DPoP " + token), (b"dpop", proof.encode())]) == (200, b"t1")
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    asyncio.run(app({"type": "http", "headers": [], "method": "GET", "path": "/"}, receive, send))
    challenge = dict(sent[0]["headers"])[b"www-authenticate"]
    assert challenge == b'Bearer error="invalid_token", DPoP error="invalid_token", algs="EdDSA ES256"'
