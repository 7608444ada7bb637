"""``X-Request-Id`` on every response, 404s and errors included.

A caller's own request id is kept when it is short and plain; otherwise a new one is
made. It is decided once per request, kept in the ASGI scope, and stamped on the
response by a ``before_send`` hook (which runs for every response the app sends).
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any, Final

from litestar.types import ASGIApp, Message, Receive, Scope, Send

_SCOPE_KEY: Final = "capbroker_request_id"
_ACCEPTED: Final = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


def request_id_of(scope: Any) -> str:
    found = scope.get(_SCOPE_KEY)
    if isinstance(found, str):
        return found
    rid: str = next(
        (v.decode("ascii") for k, v in scope.get("headers", ()) if k == b"x-request-id" and _ACCEPTED.fullmatch(v)),
        None,
    ) or secrets.token_hex(12)
    scope[_SCOPE_KEY] = rid
    return rid


async def stamp_request_id(message: Message, scope: Any) -> None:
    if message["type"] == "http.response.start":
        rid = request_id_of(scope).encode("ascii")
        headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
        headers.append((b"x-request-id", rid))
        message["headers"] = headers
        app = scope.get("app")
        broker = getattr(getattr(app, "state", None), "broker", None)
        if broker is not None:
            broker.metrics.inc("capbroker_http_requests_total", status=f"{message['status'] // 100}xx")


def timing_middleware(app: ASGIApp) -> ASGIApp:
    """Observe each routed request's latency in the broker's metrics."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                broker = getattr(scope["app"].state, "broker", None)
                if broker is not None:
                    broker.metrics.observe_latency(time.perf_counter() - started)
            await send(message)

        await app(scope, receive, timed_send)

    return middleware
