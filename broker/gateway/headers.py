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
from urllib.parse import quote, unquote_plus

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
#: headers some frameworks take as another method or path than the request's (a GET-only
#: token would become a DELETE), or as who the client is: never forwarded
OVERRIDES: Final = frozenset(
    {
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
        b"x-original-method",
        b"x-original-url",
        b"x-rewrite-url",
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-server",
    }
)


def header_key(name: bytes) -> bytes:
    """A header name as CGI, WSGI and many frameworks see it: ``X_Api_Key`` and
    ``x-api-key`` are one header there, so they are one here too."""
    return name.lower().replace(b"_", b"-")


RESPONSE_DROPPED: Final = frozenset({b"set-cookie", b"set-cookie2"})


def _connection_named(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    return named


def dropped_names(route: Route) -> frozenset[bytes]:
    """Every request header name the route never forwards (lower case)."""
    names = set(HOP_BY_HOP | AGENT_CREDENTIALS | _ALSO_DROPPED | OVERRIDES)
    names.update(header_key(h.encode("latin-1")) for h in route.strip_headers)
    if route.credential.header is not None:
        names.add(header_key(route.credential.header.encode("latin-1")))
    return frozenset(header_key(n) for n in names)


def credentials_sent(route: Route, headers: Iterable[tuple[bytes, bytes]], raw_query: str) -> list[str]:
    """The credentials of its own the agent sent, which the gateway drops: the route's
    credential header and ``strip_headers``, ``Cookie`` and ``Proxy-Authorization``, the
    route's ``strip_query`` parameters and credential parameter (names only, lower case,
    sorted). Recorded in the audit line: an agent sending a key of its own (an attacker's,
    say, on injected instructions) is worth an operator's look even though it never
    reaches the upstream."""
    header_names = {header_key(h.encode("latin-1")) for h in route.strip_headers} | {b"cookie", b"proxy-authorization"}
    if route.credential.header is not None:
        header_names.add(header_key(route.credential.header.encode("latin-1")))
    params = {p.lower() for p in route.strip_query}
    if route.credential.param is not None:
        params.add(route.credential.param.lower())
    found = {k.lower().decode("latin-1") for k, _ in headers if header_key(k) in header_names}
    found.update(f"?{name}" for name in query_names(raw_query) if name in params)
    return sorted(found)


def query_names(raw_query: str) -> list[str]:
    """The parameter names of a query as lenient servers read them: decoded, lower case,
    cut at ``[`` (``api_key[]``) and at a NUL or space, split on ``&`` and ``;``."""
    names = []
    for pair in raw_query.replace(";", "&").split("&"):
        name = unquote_plus(pair.partition("=")[0]).lower()
        for stop in ("[", "\x00", " "):
            name = name.partition(stop)[0]
        names.append(name.strip())
    return names


def upstream_headers(headers: Iterable[tuple[bytes, bytes]], dropped: frozenset[bytes]) -> HeaderList:
    given = list(headers)
    named = {header_key(n) for n in _connection_named(given)}
    return [(k, v) for k, v in given if (key := header_key(k)) not in dropped and key not in named]


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


def response_headers(
    headers: Iterable[tuple[bytes, bytes]], secret: str | tuple[str, ...] = "", credential: Credential | None = None
) -> HeaderList:
    """The upstream's headers for the agent; a header that echoes the secret, or any of
    several (a redirect to a URL carrying a query credential, say), is dropped too."""
    given = list(headers)
    named = _connection_named(given)
    echoes = tuple(
        e for one in ((secret,) if isinstance(secret, str) else secret) for e in secret_spellings(one, credential)
    )
    return [
        (k, v)
        for k, v in given
        if (low := k.lower()) not in HOP_BY_HOP
        and low not in RESPONSE_DROPPED
        and low not in named
        and not any(e in v for e in echoes)
    ]


def secret_spellings(secret: str, credential: Credential | None = None) -> tuple[bytes, ...]:
    """The forms an upstream may echo the secret in: as sent (and as the Basic pair's
    base64, which is what an echoed ``Authorization`` holds), percent-encoded with either
    case of hex digits and with ``/`` kept or not, JSON-escaped, base64."""
    if not secret:
        return ()
    raw = secret.encode("latin-1", "replace")
    forms = {raw, base64.b64encode(raw), secret.replace("/", "\\/").encode("latin-1", "replace")}
    for safe in ("", "/"):
        encoded = quote(secret, safe=safe)
        forms.update({encoded.encode("ascii"), _lower_hex(encoded).encode("ascii")})
    if credential is not None and credential.present == "basic":
        forms.add(base64.b64encode(f"{credential.username}:{secret}".encode()))
    return tuple(forms)


def has_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """A body announced: any ``Transfer-Encoding``, or a ``Content-Length`` other than 0."""
    for name, value in headers:
        low = name.lower()
        if low == b"transfer-encoding" or (low == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _lower_hex(encoded: str) -> str:
    parts = encoded.split("%")
    return parts[0] + "".join("%" + p[:2].lower() + p[2:] for p in parts[1:])
