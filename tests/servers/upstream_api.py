"""A real upstream HTTP API: an ASGI app run as its own uvicorn process.

It requires the real API key (header ``X-Api-Key``, or the query parameter ``key``) and records every request it
receives (method, path, query, every header) as one JSON line in ``UPSTREAM_LOG``, so
tests can prove what arrived and what did not. Paths:

* ``/redirect``: 302 to ``/elsewhere`` (the gateway must pass it back, not follow it);
* ``/cookie``: sets a cookie (the gateway must drop ``Set-Cookie``);
* ``/bytes/N``: N bytes, streamed in 64 KiB chunks;
* ``/slow``: answers after 3 s;
* anything else: 200 with JSON ``{"ok": true, "path": ..., "received": N}`` (N body bytes).

Run: ``UPSTREAM_KEY_FILE=... UPSTREAM_LOG=... python -m uvicorn tests.servers.upstream_api:app --port P``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

_KEY = Path(os.environ["UPSTREAM_KEY_FILE"]).read_text().strip() if "UPSTREAM_KEY_FILE" in os.environ else ""
_LOG = Path(os.environ.get("UPSTREAM_LOG", "/dev/null"))


async def app(
    scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
) -> None:
    if scope["type"] != "http":
        return
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
    path = scope["path"]
    received = 0
    while True:
        message = await receive()
        received += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    key = next((v for k, v in headers if k == "x-api-key"), "")
    query_keys = [unquote(p[4:]) for p in scope["query_string"].decode("latin-1").split("&") if p.startswith("key=")]
    if not key and len(query_keys) == 1:
        key = query_keys[0]  # the key as a query parameter (a route with as: query)
    authorised = bool(_KEY) and hmac.compare_digest(key, _KEY)
    with _LOG.open("a") as f:
        f.write(
            json.dumps(
                {
                    "method": scope["method"],
                    "path": path,
                    "raw_path": scope.get("raw_path", b"").decode("latin-1"),
                    "query": scope["query_string"].decode("latin-1"),
                    "headers": headers,
                    "authorised": authorised,
                    "received": received,
                }
            )
            + "\n"
        )

    async def answer(status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": hdrs + (extra or [])})
        await send({"type": "http.response.body", "body": body})

    if not authorised:
        await answer(401, b'{"error":"api key required"}')
        return
    if path.endswith("/redirect"):
        await answer(302, b"{}", [(b"location", b"/elsewhere")])
    elif path.endswith("/cookie"):
        await answer(200, b'{"ok":true}', [(b"set-cookie", b"session=upstream-session; Path=/")])
    elif path.endswith("/slow"):
        await asyncio.sleep(3)
        await answer(200, b'{"ok":true}')
    elif "/bytes/" in path:
        size = int(path.rsplit("/", 1)[1])
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", str(size).encode())],
            }
        )
        chunk = b"x" * 65536
        left = size
        while left > 0:
            part = chunk[: min(left, len(chunk))]
            left -= len(part)
            await send({"type": "http.response.body", "body": part, "more_body": left > 0})
        if size == 0:
            await send({"type": "http.response.body", "body": b""})
    else:
        await answer(200, json.dumps({"ok": True, "path": path, "received": received}).encode())
