"""The bucket route: S3 path-style requests at ``/s3/BUCKET/KEY...`` (docs/gateway.md).

Per request, in this order, each step refusing with an S3 XML error (``broker.gateway.
s3xml``) before anything is forwarded:

1. the route, from the bucket named in the path (none: 403 ``AccessDenied``);
2. the token: ``X-Amz-Security-Token`` (what an S3 client sends as its session token), or
   ``Authorization: Bearer`` when there is none; 401 ``InvalidToken`` with the verifier's
   code, 503 when the revocation source or the keys are down;
3. the operation and its accesses (``broker.gateway.s3ops.classify``, an allow-list), each
   checked with ``covers``; DeleteObjects reads its body (bounded) and checks every key.
   A denial with a valid token contains the task, as on the other routes;
4. the route's keys (503 when not loaded), then the token's budget (429);
5. forward: the agent's signature, date, payload hash, session token, credentials and
   hop-by-hop headers dropped; a signed ``aws-chunked`` body de-chunked on the way; the
   request signed again by botocore (``broker.gateway.s3sign``); bodies streamed both
   ways (``broker.gateway.relay``); S3's own answers, errors included, passed back with
   headers echoing a key dropped. 502/504 when the upstream is down or slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from broker.capability import allows
from broker.capability.budget import tightest
from broker.errors import BrokerError, PayloadTooLarge, TokenRejected
from broker.gateway import audit
from broker.gateway.audit import AuditLine
from broker.gateway.awschunked import SIGNED_STREAMING, UNSIGNED_STREAMING, dechunked, decoded_length
from broker.gateway.budgets import Meter
from broker.gateway.config import Route
from broker.gateway.headers import (
    AGENT_CREDENTIALS,
    HOP_BY_HOP,
    OVERRIDES,
    has_body,
    header_key,
    response_headers,
    upstream_headers,
)
from broker.gateway.relay import AgentLeft, StreamAborted, agent_body, stream_back
from broker.gateway.s3ops import MAX_DELETE_BODY, S3Refused, classify, delete_accesses, header_map
from broker.gateway.s3sign import EMPTY_SHA256, UNSIGNED_PAYLOAD, declared_hash, sign
from broker.gateway.s3xml import denied, error_response, invalid, refusal_response
from broker.gateway.secrets import S3Keys
from broker.verify.grant import Grant

if TYPE_CHECKING:
    from broker.gateway.app import GatewayApp

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PREFIX: Final = "/s3"
KIND: Final = "bucket"
#: never forwarded: the agent's signature and what it covers, its session token (the
#: capability token), framing the gateway redoes, and everything the other routes drop
DROPPED: Final = frozenset(
    HOP_BY_HOP
    | AGENT_CREDENTIALS
    | OVERRIDES
    | {
        b"host",
        b"expect",
        b"date",
        b"x-amz-date",
        b"x-amz-content-sha256",
        b"x-amz-security-token",
        b"content-length",
    }
)
#: dropped as well when an aws-chunked body is de-chunked
_CHUNK_HEADERS: Final = frozenset({b"x-amz-decoded-content-length", b"x-amz-trailer", b"content-encoding"})
UNAVAILABLE: Final = frozenset({"revocation_unavailable", "keys_unavailable"})
#: refusals that are the request's doing (audited "deny"; the rest are "error")
_AGENTS_FAULT: Final = frozenset({"budget_exhausted", "invalid_request", "payload_too_large"})


class BucketRoute:
    """Serves ``/s3/...`` with the gateway's verifiers, secrets, budgets and upstream pool."""

    def __init__(self, app: GatewayApp) -> None:
        self.app = app
        self.routes = {r.match: r for r in app.config.routes if r.kind == KIND}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        line = AuditLine(secrets.token_hex(12), kind=KIND)
        upstream_s = 0.0
        # a refusal leaves an announced body unread (the client may hold it back for a
        # 100 Continue that never comes): the connection is closed after the answer, so
        # the next request is never read from the middle of this one's body
        announced = has_body(scope.get("headers", []))
        try:
            upstream_s = await self._handle(scope, receive, send, line)
        except TokenRejected as e:
            line.code, line.decision = e.code, "deny"
            code = "backend_unavailable" if e.code in UNAVAILABLE else e.code
            await self._respond(send, line, announced, error_response(code, line.request_id))
        except S3Refused as e:
            line.code = e.code
            line.decision = "deny" if e.code in ("capability_denied", "invalid_request") else "error"
            await self._respond(send, line, announced, refusal_response(e, line.request_id))
        except BrokerError as e:
            line.code = e.code
            line.decision = "deny" if e.code in _AGENTS_FAULT else "error"
            await self._respond(send, line, announced, error_response(e.code, line.request_id))
        except StreamAborted:
            line.decision, line.code = "error", line.code or "upstream_unavailable"
            raise
        except AgentLeft:
            line.decision, line.code = "error", "agent_left"
        finally:
            if line.upstream_ms is None and upstream_s:
                line.upstream_ms = round(upstream_s * 1000, 2)
            audit.write(line, self.app._out)
            self.app.metrics.record(line, upstream_s)

    async def _respond(
        self, send: Send, line: AuditLine, announced: bool, answer: tuple[int, list[tuple[bytes, bytes]], bytes]
    ) -> None:
        status, headers, body = answer
        line.status = status
        close = [(b"connection", b"close")] if announced else []
        await send({"type": "http.response.start", "status": status, "headers": [*headers, _rid(line), *close]})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: Scope, receive: Receive, send: Send, line: AuditLine) -> float:
        raw = scope.get("raw_path")
        full = raw.decode("latin-1") if isinstance(raw, bytes) and raw else str(scope.get("path", ""))
        path = full[len(PREFIX) :]
        raw_query = bytes(scope.get("query_string", b"")).decode("latin-1")
        method = str(scope.get("method", ""))
        raw_headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
        route = self.routes.get(path[1:].partition("/")[0])
        token = _token(raw_headers)
        if route is None or route.bucket is None:
            # another bucket: refused as any access outside the token, so the token is
            # checked first, and the refusal is the task's (audited to it, containing it)
            grant = await self._verified(token, line, *self.routes.values())
            await self._contain(token, grant, line, resource=f"s3:/{path}"[:1024], action=method)
            raise denied("no bucket route for this bucket")
        if method in ("GET", "HEAD") and has_body(raw_headers):
            raise invalid("a GET or HEAD request carries no body")
        grant = await self._verified(token, line, route)
        try:
            headers = header_map(raw_headers)
            op = classify(method, path, raw_query, headers, route.bucket)
        except S3Refused as e:
            if e.code == "capability_denied":
                await self._contain(token, grant, line, resource=f"s3:/{path}"[:1024], action=method)
            raise
        body: bytes | None = None
        accesses = op.accesses
        if op.name == "DeleteObjects":
            body = await _read_bounded(receive, MAX_DELETE_BODY)
            try:
                accesses = delete_accesses(route.bucket, body)
            except S3Refused as e:
                if e.code == "capability_denied":
                    await self._contain(token, grant, line, resource=f"s3://{route.bucket}/", action="delete")
                raise
        line.resource = accesses[0].resource if accesses else f"s3://{route.bucket}/"
        line.action = accesses[0].action if accesses else "delete"
        for access in accesses:
            if not grant.allows(KIND, access.resource, access.action):
                line.resource, line.action = access.resource, access.action
                await self._contain(token, grant, line, resource=access.resource, action=access.action)
                raise denied(f"{access.action} on {access.resource} is not allowed")
        keys = self.app.secrets.s3_keys(route.credential)  # before the budget: a 503 spends none of it
        budget = tightest(
            [c.budget for c in grant.capabilities if any(allows((c,), KIND, a.resource, a.action) for a in accesses)]
        )
        if budget is not None:
            await self.app.ledger.begin(grant.token_id, grant.expires_at, budget)
        meter = Meter(self.app.ledger, grant.token_id, grant.expires_at, budget)
        try:
            return await self._forward(
                scope, receive, send, route=route, path=path, raw_query=raw_query,
                headers=headers, body=body, keys=keys, meter=meter, line=line,
            )  # fmt: skip
        finally:
            line.bytes_in, line.bytes_out = meter.bytes_in, meter.bytes_out
            with contextlib.suppress(BrokerError):
                await meter.flush()

    async def _verified(self, token: str, line: AuditLine, *routes: Route) -> Grant:
        """The token's grant for the first of ``routes`` whose audience it is for (the
        other routes' refusals are only ``wrong_audience``); its task is not contained."""
        refusal: TokenRejected | None = None
        for route in routes:
            verifier = self.app.verifiers.by_audience[route.audience]
            try:
                if self.app.verifiers.introspection:
                    grant = await asyncio.to_thread(verifier.verify, token)
                else:
                    grant = verifier.verify(token)
            except TokenRejected as e:
                if refusal is None or refusal.code == "wrong_audience":
                    refusal = e
                continue
            line.task, line.agent, line.jti = grant.task, grant.agent, grant.token_id
            containment = self.app.containment
            if containment is not None and containment.contained(grant.claims.task_ref):
                raise TokenRejected("revoked", "the task was contained by this gateway")
            return grant
        raise refusal if refusal is not None else TokenRejected("wrong_audience", "no bucket route")

    async def _contain(self, token: str, grant: Grant, line: AuditLine, *, resource: str, action: str) -> None:
        await self.app.contain(token, grant, line, kind=KIND, resource=resource, action=action)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        route: Route,
        path: str,
        raw_query: str,
        headers: dict[str, str],
        body: bytes | None,
        keys: S3Keys,
        meter: Meter,
        line: AuditLine,
    ) -> float:
        method = str(scope["method"])
        sent_hash = headers.get("x-amz-content-sha256")
        kept = _joined(upstream_headers(scope.get("headers", []), DROPPED))
        out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in kept.items()]
        stream: AsyncIterator[bytes] | None = None
        if body is not None:  # DeleteObjects: read whole (bounded) and checked
            payload_hash = hashlib.sha256(body).hexdigest()
            out.append((b"content-length", str(len(body)).encode()))
            await meter.count(len(body), inbound=True)
            stream = _once(body)
        elif not has_body(scope.get("headers", [])):
            payload_hash = EMPTY_SHA256
            if method in ("PUT", "POST"):
                out.append((b"content-length", b"0"))
        elif sent_hash in SIGNED_STREAMING:
            length = decoded_length(headers.get("x-amz-decoded-content-length"))
            encoding = [e for e in _tokens(headers.get("content-encoding", "")) if e != "aws-chunked"]
            out = [(k, v) for k, v in out if k not in _CHUNK_HEADERS]
            if encoding:
                out.append((b"content-encoding", ",".join(encoding).encode("latin-1")))
            out.append((b"content-length", str(length).encode()))
            payload_hash = UNSIGNED_PAYLOAD
            stream = dechunked(agent_body(receive, meter), length)
        elif sent_hash is not None and sent_hash.startswith("STREAMING-") and sent_hash != UNSIGNED_STREAMING:
            raise invalid("this streaming signature (SigV4A?) is not served")
        else:
            payload_hash = UNSIGNED_STREAMING if sent_hash == UNSIGNED_STREAMING else (
                declared_hash(sent_hash) or UNSIGNED_PAYLOAD
            )  # fmt: skip
            if "content-length" in headers:
                out.append((b"content-length", headers["content-length"].encode("latin-1")))
            stream = agent_body(receive, meter)
        url = route.upstream + path + (f"?{raw_query}" if raw_query else "")
        signed = sign(method, url, out, keys, region=route.region or "us-east-1", payload_hash=payload_hash)
        began = time.monotonic()
        response = await self.app.upstream.send(method, url, signed, stream)
        waited = time.monotonic() - began
        line.upstream_ms = round(waited * 1000, 2)
        back = response_headers(response.headers, keys.secrets())
        await stream_back(send, response, [*back, _rid(line)], meter, line)
        return waited


def _token(headers: list[tuple[bytes, bytes]]) -> str:
    """The capability token: the one ``X-Amz-Security-Token``, else one ``Authorization:
    Bearer``."""
    session = [v for k, v in headers if k.lower() == b"x-amz-security-token"]
    if len(session) > 1:
        raise TokenRejected("malformed", "several X-Amz-Security-Token headers")
    if session:
        token = session[0].decode("latin-1").strip()
    else:
        auth = [v for k, v in headers if k.lower() == b"authorization"]
        scheme, _, token = auth[0].decode("latin-1").partition(" ") if len(auth) == 1 else ("", "", "")
        if scheme.lower() != "bearer":
            raise TokenRejected("malformed", "no X-Amz-Security-Token and no bearer token")
    if not token or " " in token:
        raise TokenRejected("malformed", "an empty or spaced token")
    return token


def _joined(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header names lower case with ``_`` as ``-`` (as CGI would read them), repeated
    values joined with commas: one value per name, which is what gets signed and sent."""
    joined: dict[str, str] = {}
    for name, value in headers:
        key = header_key(name).decode("latin-1")
        text = value.decode("latin-1").strip()
        joined[key] = f"{joined[key]},{text}" if key in joined else text
    return joined


def _tokens(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


async def _read_bounded(receive: Receive, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise AgentLeft
        chunk = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge("DeleteObjects body too large")
        parts.append(chunk)
    return b"".join(parts)


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


def _rid(line: AuditLine) -> tuple[bytes, bytes]:
    return b"x-request-id", line.request_id.encode("ascii")
