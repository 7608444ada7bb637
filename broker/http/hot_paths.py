"""``POST /v1/tokens`` and ``POST /v1/introspect`` served straight from ASGI.

Every agent task starts with a mint, and a service may introspect on every request it
serves, so these two skip the framework's per-request machinery (routing tree, request and
response objects, handler signature, middleware stack), which cost about as much CPU as the
use cases themselves. They are not a second implementation: the same use case, the same
body rules (``broker.http.bodies``), the same problem+json errors
(``broker.http.problems``), and one wrapper around both for the request id, the request
counter and the latency (``broker.http.request_id.observed``). ``tests/service/test_hot_paths``
sends one set of requests, good and bad, to both and requires the same answers.

Only these exact method-and-path pairs come here. Anything else (another method, these
paths spelled another way, lifespan) goes to the Litestar app, which also documents
these two operations in the OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from litestar import Litestar

from broker.errors import BrokerError, InvalidRequest, PayloadTooLarge
from broker.http.bodies import JSON, Parser, json_or_form_parser, json_parser, media_type_of
from broker.http.calls import call_of, header
from broker.http.problems import PROBLEM_JSON, STATUS, problem_body, problem_of_error, unhandled
from broker.http.request_id import observed
from broker.service import introspect, mint
from broker.service.broker import Broker, Call

# ASGI's scope, receive and send, untyped: the framework's TypedDicts are for its own layers
Scope = Any
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
UseCase = Callable[[Broker, Call, Callable[[], Awaitable[object]]], Awaitable[dict[str, Any]]]

_NO_STORE: Final = (b"cache-control", b"no-store")
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class HotRoute:
    use_case: UseCase
    status: int
    parser_for: Callable[[str | None], Parser]  # by media type; InvalidRequest for one it does not read


HOT_ROUTES: Final[dict[str, HotRoute]] = {
    "/v1/tokens": HotRoute(mint.mint, 201, json_parser),
    "/v1/introspect": HotRoute(introspect.introspect, 200, json_or_form_parser),
}


class BrokerApp:
    """The ASGI app ``broker serve`` runs: the hot paths, and the Litestar app for the rest."""

    def __init__(self, litestar: Litestar, broker: Broker, *, max_body_bytes: int, routes: dict[str, HotRoute]) -> None:
        self.litestar = litestar
        self.broker = broker
        self.max_body_bytes = max_body_bytes
        self.routes = routes

    @property
    def state(self) -> Any:
        return self.litestar.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.litestar(scope, receive, send)  # lifespan
            return
        send = observed(send, scope, self.broker.metrics)  # request id, counter, latency: once, for both
        if scope["method"] == "POST":
            route = self.routes.get(scope["path"])
            if route is not None:
                await self._serve(route, scope, receive, send)
                return
        await self.litestar(scope, receive, send)

    async def _serve(self, route: HotRoute, scope: Scope, receive: Receive, send: Send) -> None:
        call = call_of(scope)

        async def read_body() -> object:
            parse = route.parser_for(media_type_of(header(scope, b"content-type")))
            return parse(await self._body(scope, receive))

        headers: list[tuple[bytes, bytes]]
        try:
            result = await route.use_case(self.broker, call, read_body)
            status, headers, payload = route.status, [_NO_STORE, (b"content-type", JSON.encode())], _encode(result)
        except BrokerError as e:
            code, body, extra = problem_of_error(e, call.request_id, self.broker.metrics)
            status, payload = STATUS[code], _encode(body)
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (extra or {}).items()]
            headers.append((b"content-type", PROBLEM_JSON.encode()))
        except Exception as e:  # noqa: BLE001 -- a bug: logged, and the caller sees internal_error
            code = unhandled(e, call.request_id)
            status, headers, payload = (
                STATUS[code],
                [(b"content-type", PROBLEM_JSON.encode())],
                _encode(problem_body(code, call.request_id)),
            )
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body, or ``PayloadTooLarge`` as soon as it is known to be over the limit."""
        limit = self.max_body_bytes
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge("request body over the size limit")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidRequest("body: the client went away")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge("request body over the size limit")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
