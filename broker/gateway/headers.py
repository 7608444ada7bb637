"""Check, then strip, then attach: the headers that cross the gateway. Pure.

Towards the upstream: every credential the agent sent is dropped (``Authorization``,
``Proxy-Authorization``, ``Cookie``, ``DPoP``, the route's ``strip_headers`` and the
header the route's own credential goes in), and hop-by-hop headers (RFC 9110 7.6.1, and
any named in ``Connection``) and ``Host`` are dropped; then the upstream credential is
added. Back to the agent: everything but ``Set-Cookie`` and hop-by-hop headers.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote

from broker.gateway.config import Credential, Route

HeaderList = list[tuple[bytes, bytes]]

HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
    }
)
AGENT_CREDENTIALS: Final = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"dpop"})
_ALSO_DROPPED: Final = frozenset({b"host", b"expect"})
RESPONSE_DROPPED: Final = frozenset({b"set-cookie", b"set-cookie2"})


def _connection_named(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    return named


def dropped_names(route: Route) -> frozenset[bytes]:
    """Every request header name the route never forwards (lower case)."""
    names = set(HOP_BY_HOP | AGENT_CREDENTIALS | _ALSO_DROPPED)
    names.update(h.encode("latin-1") for h in route.strip_headers)
    if route.credential.header is not None:
        names.add(route.credential.header.lower().encode("latin-1"))
    return frozenset(names)


def upstream_headers(headers: Iterable[tuple[bytes, bytes]], dropped: frozenset[bytes]) -> HeaderList:
    given = list(headers)
    named = _connection_named(given)
    return [(k, v) for k, v in given if (low := k.lower()) not in dropped and low not in named]


def credential_header(credential: Credential, secret: str) -> tuple[bytes, bytes] | None:
    """The header carrying ``secret`` upstream (``None`` for ``as: query``)."""
    if credential.present == "basic":
        pair = f"{credential.username}:{secret}".encode()
        return b"authorization", b"Basic " + base64.b64encode(pair)
    if credential.present == "bearer":
        return b"authorization", b"Bearer " + secret.encode("latin-1")
    if credential.present == "header":
        return str(credential.header).lower().encode("latin-1"), secret.encode("latin-1")
    return None


def with_credential_query(url: str, credential: Credential, secret: str) -> str:
    if credential.present != "query":
        return url
    pair = f"{credential.param}={quote(secret, safe='')}"
    return url + ("&" if "?" in url else "?") + pair


def response_headers(headers: Iterable[tuple[bytes, bytes]], secret: str = "") -> HeaderList:
    """The upstream's headers for the agent; a header that echoes the secret (a redirect
    to a URL carrying a query credential, say) is dropped too."""
    given = list(headers)
    named = _connection_named(given)
    echoes = _spellings(secret)
    return [
        (k, v)
        for k, v in given
        if (low := k.lower()) not in HOP_BY_HOP
        and low not in RESPONSE_DROPPED
        and low not in named
        and not any(e in v for e in echoes)
    ]


def _spellings(secret: str) -> tuple[bytes, ...]:
    if not secret:
        return ()
    return tuple({secret.encode("latin-1", "replace"), quote(secret, safe="").encode("ascii")})
