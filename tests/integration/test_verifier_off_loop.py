"""The verifier does not block the event loop (issue 13, item 11).

Before: ``CapabilityMiddleware`` called introspection (urllib) on the event loop, so 6
concurrent requests with a 0.5 s introspection took 0.5 ... 3.0 s, one after another. Here
the introspection endpoint (a real HTTP server on loopback) answers only once all 10
requests are in flight together (a barrier, with a generous timeout): if the middleware
serialised them, the first would wait at the barrier alone, the barrier would break, and
every request would be refused. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from broker.token import KeyRing, LocalSigner
from broker.verify import Verifier
from broker.verify.asgi import CapabilityMiddleware
from broker.verify.introspection import IntrospectionClient
from tests.helpers import AUDIENCE, ISSUER, NOW, good_token

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

CONCURRENT = 10


@pytest.fixture
def introspection() -> Iterator[tuple[str, threading.Barrier]]:
    barrier = threading.Barrier(CONCURRENT, timeout=15)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            try:
                barrier.wait()
                body, status = json.dumps({"active": True}).encode(), 200
            except threading.BrokenBarrierError:
                body, status = b"{}", 500
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/introspect", barrier
    finally:
        barrier.abort()
        server.shutdown()
        server.server_close()


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_ten_requests_introspect_at_once(
    introspection: tuple[str, threading.Barrier], ring: KeyRing, ed_signer: LocalSigner
) -> None:
    url, _ = introspection
    verifier = Verifier(
        issuer=ISSUER, audience=AUDIENCE, jwks=ring.keyset, clock=lambda: NOW + 5.0,
        introspection=IntrospectionClient(url, "cbk_" + "A" * 43, timeout=20.0),
    )  # fmt: skip
    app = CapabilityMiddleware(ok_app, verifier)
    tokens = [good_token(ed_signer, jti=f"concurrent-token-{n:05d}") for n in range(CONCURRENT)]

    async def run() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
            answers = await asyncio.gather(*(client.get("/", headers={"Authorization": f"Bearer {t}"}) for t in tokens))
        return [a.status_code for a in answers]

    assert asyncio.run(run()) == [200] * CONCURRENT
