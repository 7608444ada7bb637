"""Plain ASGI middleware: read the capability token, verify it, attach the grant.

Credentials: exactly one ``Authorization`` header, scheme ``Bearer`` or ``DPoP`` (any
case), and for a DPoP-bound token exactly one ``DPoP`` proof header (several are
refused). A bound token sent with the ``Bearer`` scheme is refused (``proof_required``)
whatever else comes with it: a stolen bearer copy is useless (RFC 9449 section 7.2).

The proof is checked against the request's method and URL. The URL is ``public_url``
(the service's external origin, such as ``https://git.internal``, plus any path prefix a
proxy strips without setting ``root_path``) followed by ``root_path`` and the path; or,
without ``public_url``, scheme and ``Host`` header (or ``server``) from the ASGI scope,
then ``root_path`` and the path. The path is the one the client sent (``raw_path``,
still percent-encoded) when the server reports it; a ``Host`` outside the host grammar,
or a path holding ``?`` or ``#``, is refused rather than guessed at. Behind a proxy that
terminates TLS or rewrites ``Host``, set ``public_url``: otherwise the client names the
host part the proof is compared with.

The grant lands in ``scope["state"]["capability_grant"]``. A missing or rejected token gets
a 401 ``application/problem+json`` with a stable ``code`` and nothing about why beyond it,
and a ``WWW-Authenticate`` offering both schemes (RFC 9449 section 7.1).
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

from broker.errors import TokenRejected
from broker.verify.grant import Grant
from broker.verify.verifier import Verifier

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]] | Any

STATE_KEY = "capability_grant"
DPOP_ALGS: Final = "EdDSA ES256"
_HOST = re.compile(r"([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")
_PUBLIC_URL = re.compile(r"https?://" + _HOST.pattern + r"(/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Presented:
    """What a request presented: the Authorization scheme (lower case), the token, and
    the ``DPoP`` header if there was one."""

    scheme: str
    token: str
    proof: str | None


def check_public_url(url: str) -> str:
    """An external base URL: ``http(s)://host[:port][/prefix]``, no query, no fragment;
    returned without a trailing slash."""
    if not _PUBLIC_URL.fullmatch(url):
        raise ValueError("public_url must be http(s)://host[:port][/prefix], without query or fragment")
    return url.rstrip("/")


def credentials(headers: Headers) -> Presented:
    """The token and proof of an ASGI header list; ``TokenRejected`` if they are not
    exactly one Authorization header (Bearer or DPoP) and at most one DPoP header."""
    values = [v for k, v in headers if k.lower() == b"authorization"]
    if len(values) != 1:  # several: which one would a proxy have checked?
        raise TokenRejected("malformed", "no single Authorization header")
    scheme, _, token = values[0].decode("latin-1").partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "dpop") or not token or " " in token:
        raise TokenRejected("malformed", "no single bearer or DPoP token")
    proofs = [v for k, v in headers if k.lower() == b"dpop"]
    if len(proofs) > 1:
        raise TokenRejected("bad_proof", "several DPoP headers")
    return Presented(scheme, token, proofs[0].decode("latin-1") if proofs else None)


def _header(headers: Headers, name: bytes) -> str | None:
    values = [v for k, v in headers if k.lower() == name]
    return values[0].decode("latin-1") if len(values) == 1 else None


def request_path(scope: Scope) -> str:
    """The path the client requested, ``root_path`` included, still percent-encoded when
    the server reports ``raw_path``. A ``?`` or ``#`` in it is refused: it would let the
    path differ from the one the proof's ``htu`` is compared with."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) and raw else str(scope.get("path", ""))
    root = str(scope.get("root_path", "")).rstrip("/")
    if root and path != root and not path.startswith(root + "/"):
        path = root + path  # servers differ on whether path includes root_path
    if not path.startswith("/") or "?" in path or "#" in path:
        raise TokenRejected("bad_proof", "request path unfit for a proof")
    return path


def request_url(scope: Scope, public_url: str | None = None) -> str:
    """The URL a DPoP proof's ``htu`` must name for this request (without query)."""
    path = request_path(scope)
    if public_url is not None:
        return public_url + path
    scheme = str(scope.get("scheme", "http"))
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)  # a WebSocket upgrade is a GET
    host = _header(scope.get("headers", []), b"host")
    if host is None and scope.get("server"):
        name, port = scope["server"]
        host = name if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{name}:{port}"
    if scheme not in _DEFAULT_PORTS or host is None or not _HOST.fullmatch(host):
        raise TokenRejected("bad_proof", "cannot tell the request URL")
    return f"{scheme}://{host}{path}"


def challenge(code: str) -> str:
    """``WWW-Authenticate`` for a 401: both schemes, DPoP with the algorithms we accept."""
    dpop_error = "invalid_dpop_proof" if code == "bad_proof" else "invalid_token"
    return f'Bearer error="invalid_token", DPoP error="{dpop_error}", algs="{DPOP_ALGS}"'


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
        (b"www-authenticate", challenge(code).encode("ascii")),
        (b"content-length", str(len(body)).encode()),
    ]
    return 401, headers, body


def authenticate(verifier: Verifier, scope: Scope, public_url: str | None = None) -> Grant:
    """Verify the request's credentials. With the Bearer scheme no proof is passed on, so
    a bound token is ``proof_required``; with DPoP, the proof is checked against this
    request's method and URL."""
    presented = credentials(scope.get("headers", []))
    if presented.scheme == "bearer":
        return verifier.verify(presented.token)
    if presented.proof is None:  # RFC 9449 7.1: the DPoP scheme always comes with a proof
        raise TokenRejected("proof_required", "Authorization: DPoP without a DPoP proof header")
    method = "GET" if scope.get("type") == "websocket" else str(scope.get("method", ""))
    return verifier.verify(presented.token, dpop=presented.proof, method=method, url=request_url(scope, public_url))


#: threads for verifications that wait on the network: as many as requests may wait at
#: once (asyncio's default pool has cores + 4, which would queue the 7th behind the 6th)
OFF_LOOP_THREADS: Final = 64
_off_loop: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _off_loop  # noqa: PLW0603 -- one pool per process, made on first use
    if _off_loop is None:
        _off_loop = ThreadPoolExecutor(max_workers=OFF_LOOP_THREADS, thread_name_prefix="capbroker-verify")
    return _off_loop


async def authenticate_off_loop(verifier: Verifier, scope: Scope, public_url: str | None = None) -> Grant:
    """``authenticate`` for async apps: on a worker thread when the verifier may wait on the
    network (introspection, a JWKS refresh, a Redis read), so one slow answer does not
    hold every other request of the event loop; inline otherwise (no thread hop)."""
    if verifier.may_block:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_executor(), functools.partial(authenticate, verifier, scope, public_url))
    return authenticate(verifier, scope, public_url)


class CapabilityMiddleware:
    def __init__(self, app: ASGIApp, verifier: Verifier, *, public_url: str | None = None) -> None:
        self.app = app
        self.verifier = verifier
        self.public_url = check_public_url(public_url) if public_url is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            grant = await authenticate_off_loop(self.verifier, scope, self.public_url)
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
