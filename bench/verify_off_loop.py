"""How long N concurrent requests take through ``CapabilityMiddleware`` when introspection
takes ``--delay`` seconds (issue 13 item 11): about one delay when verification runs off the
event loop, N delays when it blocks the loop.

    .venv/bin/python -m bench.verify_off_loop [--requests 10] [--delay 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from broker.capability import Capability
from broker.token import KeyRing, LocalSigner, issue_claims, mint
from broker.verify import Verifier
from broker.verify.asgi import CapabilityMiddleware
from broker.verify.introspection import IntrospectionClient

ISSUER, AUDIENCE = "https://broker.bench", "bench-service"


def introspection_server(delay: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(delay)
            body = json.dumps({"active": True}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def run(requests: int, delay: float) -> None:
    server = introspection_server(delay)
    signer = LocalSigner.generate("EdDSA", "bench-1")
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/introspect"
    verifier = Verifier(
        issuer=ISSUER, audience=AUDIENCE, jwks=KeyRing([signer]).keyset,
        introspection=IntrospectionClient(url, "cbk_" + "A" * 43, timeout=delay * requests + 5),
    )  # fmt: skip
    app = CapabilityMiddleware(ok, verifier)
    cap = Capability.build("http", "https://bench.invalid/", ("GET",), "bench")
    now = int(time.time())
    tokens = [
        mint(
            issue_claims(issuer=ISSUER, agent="a", audience=AUDIENCE, task="t", capabilities=[cap], now=now, ttl=300),
            signer,
        )
        for _ in range(requests)
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        started = time.perf_counter()
        answers = await asyncio.gather(*(client.get("/", headers={"Authorization": f"Bearer {t}"}) for t in tokens))
        elapsed = time.perf_counter() - started
    server.shutdown()
    statuses = sorted({a.status_code for a in answers})
    print(f"{requests} concurrent requests, introspection {delay:g} s each: {elapsed:.2f} s (statuses {statuses})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--delay", type=float, default=0.5)
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.delay))


if __name__ == "__main__":
    main()
