"""``X-Request-Id``, the request counter and the latency, on every response: the hot paths'
and the framework's, 404s and errors included.

A caller's own request id is kept when it is short and plain; otherwise a new one is
made. It is decided once per request, kept in the ASGI scope, and stamped on the
response by ``observed``, which ``broker.http.hot_paths.BrokerApp`` wraps around every
HTTP request before it picks the hot path or the Litestar app.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any, Final

from litestar.types import Message, Send

from broker.service.metrics import Metrics

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


def observed(send: Send, scope: Any, metrics: Metrics) -> Send:
    """``send``, with what every response gets, hot path or framework, said once: the
    request's ``X-Request-Id`` (replacing any a handler set), the request counter by status
    class, and the latency from now to the response's start."""
    started = time.perf_counter()
    rid = request_id_of(scope).encode("ascii")

    async def send_observed(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
            headers.append((b"x-request-id", rid))
            message["headers"] = headers
            metrics.inc("capbroker_http_requests_total", status=f"{message['status'] // 100}xx")
            metrics.observe_latency(time.perf_counter() - started)
        await send(message)

    return send_observed
