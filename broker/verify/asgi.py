"""Plain ASGI middleware: read ``Authorization: Bearer``, verify, attach the grant.

The grant lands in ``scope["state"]["capability_grant"]``. A missing or rejected token gets
a 401 ``application/problem+json`` with a stable ``code`` and nothing about why beyond it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from broker.errors import TokenRejected
from broker.verify.grant import Grant
from broker.verify.verifier import Verifier

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATE_KEY = "capability_grant"


def bearer_token(headers: list[tuple[bytes, bytes]] | Any) -> str | None:
    """The bearer token of an ASGI header list, or ``None``. Several Authorization headers
    are refused (``None``): which one would a proxy have checked?"""
    values = [v for k, v in headers if k.lower() == b"authorization"]
    if len(values) != 1:
        return None
    scheme, _, token = values[0].decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def problem(code: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps(
        {
            "type": "about:blank",
            "title": "Unauthorized",
            "status": 401,
            "code": code,
            "detail": "a valid capability token is required",
        }
    ).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"www-authenticate", b'Bearer error="invalid_token"'),
        (b"content-length", str(len(body)).encode()),
    ]
    return 401, headers, body


def authenticate(verifier: Verifier, headers: list[tuple[bytes, bytes]] | Any) -> Grant:
    token = bearer_token(headers)
    if token is None:
        raise TokenRejected("malformed", "no single bearer token")
    return verifier.verify(token)


class CapabilityMiddleware:
    def __init__(self, app: ASGIApp, verifier: Verifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            grant = authenticate(self.verifier, scope.get("headers", []))
        except TokenRejected as e:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            status, headers, body = problem(e.code)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {})[STATE_KEY] = grant
        await self.app(scope, receive, send)
