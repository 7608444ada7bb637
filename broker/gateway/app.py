"""The gateway as a plain ASGI app (docs/gateway.md): check, then strip, then attach, then stream.

Per request, in this order, each step refusing with problem+json before anything is
forwarded:

1. the route, from the path's kind and host (none: 403 ``capability_denied``);
2. the token, with the route audience's verifier (401 with the verifier's code);
3. (kind, resource, action) from the path, query and method, never normalised; then
   ``covers`` (403 ``capability_denied``; with ``containment: revoke-task`` the task is
   reported to the broker first);
4. for a git push under ``push_refs``: the ref-update commands at the start of the body;
5. the upstream secret (503 ``backend_unavailable`` when it is not loaded);
6. the token's budget (429 ``budget_exhausted``; budget store down: 503);
7. forward: the agent's credentials and hop-by-hop headers dropped, the secret attached,
   bodies streamed both ways, redirects passed back (502/504 when the upstream is down
   or slow).

One audit line per request on stdout; ``/healthz``, ``/readyz`` and ``/metrics`` besides.
``/s3/...`` is the bucket route (``broker.gateway.s3route``): the same steps, S3's way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, TextIO

import httpx

from broker.capability import allows
from broker.capability.budget import tightest
from broker.errors import (
    BackendUnavailable,
    BrokerError,
    CapabilityDenied,
    InvalidRequest,
    TokenRejected,
)
from broker.gateway import audit
from broker.gateway.audit import AuditLine
from broker.gateway.budgets import Ledger, Meter
from broker.gateway.config import GatewayConfig
from broker.gateway.containment import Containment
from broker.gateway.headers import (
    credential_header,
    credentials_sent,
    dropped_names,
    has_body,
    response_headers,
    upstream_headers,
    with_credential_query,
)
from broker.gateway.mapping import RECEIVE_PACK, Target, split_route, target_of
from broker.gateway.metrics import Metrics
from broker.gateway.pktline import outside_prefix
from broker.gateway.pushcheck import push_prefix, read_push_commands
from broker.gateway.relay import AgentLeft, StreamAborted, agent_body, stream_back
from broker.gateway.s3route import BucketRoute
from broker.gateway.secrets import SecretStore
from broker.gateway.upstream import UpstreamPool
from broker.gateway.verification import Verifiers
from broker.verify.asgi import authenticate, check_public_url, credentials
from broker.verify.asgi import problem as unauthorized
from broker.verify.grant import Grant

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_STATUS: Final = {
    "capability_denied": (403, "Forbidden", "this capability token does not allow the request"),
    "budget_exhausted": (429, "Too Many Requests", "this token's budget is spent"),
    "upstream_unavailable": (502, "Bad Gateway", "the upstream could not be reached"),
    "upstream_timeout": (504, "Gateway Timeout", "the upstream did not answer in time"),
    "backend_unavailable": (503, "Service Unavailable", "a backend the gateway needs is unavailable"),
    "invalid_request": (400, "Bad Request", "the request is malformed"),
}


#: verifier codes that say a backend is down, not that the token is bad (docs/gateway.md, "Answers": 503)
UNAVAILABLE: Final = frozenset({"revocation_unavailable", "keys_unavailable"})


def problem(code: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The problem+json of a refusal: the stable code and one generic sentence."""
    status, title, detail = _STATUS.get(code, _STATUS["invalid_request"])
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "code": code, "detail": detail})
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    if status in (429, 503):
        headers.append((b"retry-after", b"1"))
    return status, headers, body.encode()


class GatewayApp:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        verifiers: Verifiers,
        secrets_store: SecretStore,
        ledger: Ledger,
        upstream: UpstreamPool,
        client: httpx.AsyncClient,
        containment: Containment | None,
        out: TextIO | None = None,
    ) -> None:
        self.config = config
        self.verifiers = verifiers
        self.secrets = secrets_store
        self.ledger = ledger
        self.upstream = upstream
        self.client = client
        self.containment = containment if config.containment == "revoke-task" else None
        self.metrics = Metrics()
        self.public_url = check_public_url(config.public_url) if config.public_url else None
        self._dropped = {route: dropped_names(route) for route in config.routes}
        self._out = out
        self._bucket = BucketRoute(self)

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        # The request's headers as they are now, for every check and for what is forwarded:
        # the server appends a chunked body's trailers to its own list when they arrive,
        # which may be after the checks and before the forwarding (an outside tester
        # smuggled an x-amz-copy-source past the bucket route that way).
        scope = {**scope, "headers": tuple(scope.get("headers", ()))}
        path = str(scope.get("path", ""))
        if path in ("/healthz", "/readyz", "/metrics") and scope.get("method") in ("GET", "HEAD"):
            await self._operational(path, send)
            return
        if path.startswith("/s3/"):
            await self._bucket(scope, receive, send)
            return
        await self._proxy(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.client.aclose()
                await self.upstream.close()
                await self.ledger.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _operational(self, path: str, send: Send) -> None:
        if path == "/healthz":
            status, body, ctype = 200, b'{"status":"ok"}', b"application/json"
        elif path == "/readyz":
            checks = {"secrets": self.secrets.ready, "revocation": self.verifiers.live}
            ready = all(checks.values())
            status, ctype = (200 if ready else 503), b"application/json"
            body = json.dumps({"status": "ready" if ready else "unavailable", "checks": checks}).encode()
        else:
            status, body, ctype = 200, self.metrics.render().encode(), b"text/plain; version=0.0.4"
        await _respond(send, status, [(b"content-type", ctype), (b"content-length", str(len(body)).encode())], body)

    # ------------------------------------------------------------------ the proxy

    async def _proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        line = AuditLine(secrets.token_hex(12))
        upstream_s = 0.0
        try:
            upstream_s = await self._handle(scope, receive, send, line)
        except TokenRejected as e:
            line.code, line.decision = e.code, "deny"
            if e.code in UNAVAILABLE:  # the revocation source or the keys: 503, never a 401 that blames the token
                await self._refuse(send, line, BackendUnavailable(e.code))
                return
            status, headers, body = unauthorized(e.code)
            line.status = status
            await _respond(send, status, [*headers, _rid(line)], body)
        except (BrokerError, StreamAborted) as e:
            await self._refuse(send, line, e)
        except AgentLeft:
            line.decision, line.code = "error", "agent_left"  # nobody to answer
        finally:
            if line.upstream_ms is None and upstream_s:
                line.upstream_ms = round(upstream_s * 1000, 2)
            audit.write(line, self._out)
            self.metrics.record(line, upstream_s)

    async def _refuse(self, send: Send, line: AuditLine, error: Exception) -> None:
        if isinstance(error, StreamAborted):
            line.decision, line.code = "error", "upstream_unavailable"
            raise error
        code = getattr(error, "code", "invalid_request")
        line.code = code
        line.decision = "deny" if code in ("capability_denied", "budget_exhausted", "invalid_request") else "error"
        if code not in _STATUS:
            log.error("gateway: unexpected refusal %s", code)
            code = "backend_unavailable"
        status, headers, body = problem(code)
        line.status = status
        await _respond(send, status, [*headers, _rid(line)], body)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, line: AuditLine) -> float:
        raw = scope.get("raw_path")
        raw_path = raw.decode("latin-1") if isinstance(raw, bytes) and raw else str(scope.get("path", ""))
        raw_query = bytes(scope.get("query_string", b"")).decode("latin-1")
        method = str(scope.get("method", ""))
        if method in ("GET", "HEAD") and has_body(scope.get("headers", [])):
            # refused, never forwarded: an upstream that ignores a GET's body would read it
            # as the next request on a connection that carries the real credential
            raise InvalidRequest("a GET or HEAD request carries no body")
        route, rest = split_route(self.config, raw_path)
        verifier = self.verifiers.by_audience[route.audience]
        if self.verifiers.introspection:
            grant = await asyncio.to_thread(authenticate, verifier, scope, self.public_url)
        else:
            grant = authenticate(verifier, scope, self.public_url)
        line.task, line.agent, line.jti = grant.task, grant.agent, grant.token_id
        line.credentials_dropped = credentials_sent(route, scope.get("headers", []), raw_query) or None
        if self.containment is not None and self.containment.contained(grant.claims.task_ref):
            raise TokenRejected("revoked", "the task was contained by this gateway")
        try:
            target = target_of(route, rest, raw_query, method)
        except CapabilityDenied:
            line.kind = route.kind
            await self._contain(scope, grant, line, kind=route.kind, resource=raw_path, action=method)
            raise
        line.kind, line.resource, line.action = target.kind, target.resource, target.action
        if not grant.allows(target.kind, target.resource, target.action):
            await self._contain(scope, grant, line, kind=target.kind, resource=target.resource, action=target.action)
            raise CapabilityDenied("the token does not allow this request")
        prefix: tuple[bytes, ...] = ()
        more = True
        if target.service == RECEIVE_PACK and route.push_refs is not None:
            prefix, more = await self._checked_push(
                scope, receive, grant=grant, line=line, target=target, push_refs=route.push_refs
            )
        secret = self.secrets.get(route.credential)  # before the budget: a 503 spends none of it
        budget = tightest(
            [c.budget for c in grant.capabilities if allows((c,), target.kind, target.resource, target.action)]
        )
        if budget is not None:
            await self.ledger.begin(grant.token_id, grant.expires_at, budget)
        meter = Meter(self.ledger, grant.token_id, grant.expires_at, budget)
        try:
            return await self._forward(
                scope, receive, send, line=line, target=target, secret=secret, meter=meter, prefix=prefix, more=more
            )
        finally:
            line.bytes_in, line.bytes_out = meter.bytes_in, meter.bytes_out
            with contextlib.suppress(BrokerError):  # counted as far as the store allowed; the answer is out
                await meter.flush()

    async def _contain(
        self, scope: Scope, grant: Grant, line: AuditLine, *, kind: str, resource: str, action: str
    ) -> None:
        token = credentials(scope.get("headers", [])).token
        await self.contain(token, grant, line, kind=kind, resource=resource, action=action)

    async def contain(
        self, token: str, grant: Grant, line: AuditLine, *, kind: str, resource: str, action: str
    ) -> None:
        """Report a refused request with a valid token to the broker (``containment:
        revoke-task``), on every route; its answer goes into the audit line."""
        if self.containment is None:
            return
        line.containment = await self.containment.contain(
            token=token,
            task_ref=grant.claims.task_ref,
            task=grant.task,
            kind=kind,
            resource=resource[:1024],
            action=action[:16],
            request_id=line.request_id,
        )

    async def _checked_push(
        self, scope: Scope, receive: Receive, *, grant: Grant, line: AuditLine, target: Target, push_refs: str
    ) -> tuple[tuple[bytes, ...], bool]:
        async def next_chunk() -> tuple[bytes, bool]:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidRequest("client went away")
            return bytes(message.get("body", b"")), bool(message.get("more_body", False))

        encoding = _header(scope, b"content-encoding").lower()
        read = await read_push_commands(next_chunk, encoding)
        allowed_prefix = push_prefix(push_refs, grant.task, grant.claims.root_agent)
        outside = outside_prefix(read.refs, allowed_prefix)
        if outside:
            await self._contain(scope, grant, line, kind=target.kind, resource=target.resource, action=target.action)
            raise CapabilityDenied(f"push to {len(outside)} ref(s) outside {allowed_prefix}")
        return read.chunks, read.more

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        line: AuditLine,
        target: Target,
        secret: str,
        meter: Meter,
        prefix: tuple[bytes, ...],
        more: bool,
    ) -> float:
        route = target.route
        headers = upstream_headers(scope.get("headers", []), self._dropped[route])
        attached = credential_header(route.credential, secret)
        if attached is not None:
            headers.append(attached)
        url = with_credential_query(target.upstream_url, route.credential, secret)
        method = str(scope["method"])
        has_body = method not in ("GET", "HEAD")  # a GET or HEAD with a body was refused before
        body = agent_body(receive, meter, prefix, more=more) if has_body else None
        began = time.monotonic()
        response = await self.upstream.send(method, url, headers, body)
        waited = time.monotonic() - began
        line.upstream_ms = round(waited * 1000, 2)
        back = [*response_headers(response.headers, secret, route.credential), _rid(line)]
        await stream_back(send, response, back, meter, line)
        return waited


def _header(scope: Scope, name: bytes) -> str:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return bytes(v).decode("latin-1").strip()
    return ""


def _rid(line: AuditLine) -> tuple[bytes, bytes]:
    return b"x-request-id", line.request_id.encode("ascii")


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
