"""Compact JWS in our one profile: encode the signing input, attach a signature, and
split a presented token strictly before anything is trusted.

Splitting and signing are separate steps so a signer elsewhere (Vault Transit, batched)
can sign many inputs at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from broker.errors import TokenRejected
from broker.token.algorithms import ALGORITHMS, Algorithm
from broker.token.b64 import Base64Error, b64url_decode, b64url_encode
from broker.token.claims import Claims
from broker.token.keys import is_kid
from broker.token.strictjson import StrictJsonError, dumps_canonical, loads_object

TYP: Final = "cap+jwt"
MAX_TOKEN_BYTES: Final = 8192
MAX_HEADER_BYTES: Final = 512
#: the only header fields of our profile; anything else (crit, jku, jwk, x5u, x5c, ...)
#: is refused rather than ignored
HEADER_FIELDS: Final = frozenset({"alg", "typ", "kid"})
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_.-]+")


def header_for(alg: Algorithm, kid: str) -> dict[str, str]:
    return {"alg": alg, "typ": TYP, "kid": kid}


def signing_input(alg: Algorithm, kid: str, claims: Claims) -> bytes:
    header = b64url_encode(dumps_canonical(header_for(alg, kid)))
    payload = b64url_encode(dumps_canonical(claims.to_json()))
    return f"{header}.{payload}".encode("ascii")


def assemble(signing_input_: bytes, signature: bytes) -> str:
    return f"{signing_input_.decode('ascii')}.{b64url_encode(signature)}"


@dataclass(frozen=True, slots=True)
class Parsed:
    """A token split and its header checked; payload decoded from base64url but not yet
    trusted (nor parsed as JSON: that waits for the signature)."""

    alg: str
    kid: str
    signing_input: bytes
    payload_b64: str
    signature: bytes
    payload: bytes


#: the three segments of a token whose characters are all in the alphabet; anything else
#: is explained by the step-by-step checks in ``_malformed``
_COMPACT = re.compile(r"([A-Za-z0-9_-]*)\.([A-Za-z0-9_-]*)\.[A-Za-z0-9_-]*")
#: header segments already checked, with their (alg, kid): the same few headers come on
#: every token of a key, and a segment that passed once passes again. Bounded: emptied
#: when full, so a stream of made-up headers only costs what an empty cache costs.
_CHECKED_HEADERS: dict[str, tuple[str, str]] = {}
_MAX_CHECKED_HEADERS: Final = 256


def parse_compact(token: object) -> Parsed:
    """Size, alphabet, three segments, strict header. Raises ``TokenRejected``."""
    if not isinstance(token, str):
        raise TokenRejected("malformed", "token is not a string")
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenRejected("too_large", f"token over {MAX_TOKEN_BYTES} bytes")
    match = _COMPACT.fullmatch(token)
    if match is None:
        raise _malformed(token)
    header_b64, payload_b64 = match.group(1, 2)
    if len(header_b64) > MAX_HEADER_BYTES:
        raise TokenRejected("bad_header", "header too large")
    checked = _CHECKED_HEADERS.get(header_b64)
    try:
        header = {} if checked is not None else loads_object(b64url_decode(header_b64))
        signature = b64url_decode(token[match.end(2) + 1 :])
        payload = b64url_decode(payload_b64)
    except (Base64Error, StrictJsonError) as e:
        raise TokenRejected("malformed", f"encoding: {e}") from None
    if checked is None:
        checked = _check_header(header)
        if len(_CHECKED_HEADERS) >= _MAX_CHECKED_HEADERS:
            _CHECKED_HEADERS.clear()
        _CHECKED_HEADERS[header_b64] = checked
    alg, kid = checked
    return Parsed(alg, kid, token[: match.end(2)].encode("ascii"), payload_b64, signature, payload)


def _malformed(token: str) -> TokenRejected:
    """Why a token is not three segments of the alphabet, in the order of the checks."""
    if not _TOKEN_CHARS.fullmatch(token):
        return TokenRejected("malformed", "characters outside [A-Za-z0-9_.-]")
    return TokenRejected("malformed", f"{len(token.split('.'))} segments, not 3")


def _check_header(header: dict[str, Any]) -> tuple[str, str]:
    extra = set(header) - HEADER_FIELDS
    if extra:
        raise TokenRejected("bad_header", f"header fields not in the profile: {sorted(extra)}")
    alg, typ, kid = header.get("alg"), header.get("typ"), header.get("kid")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise TokenRejected("bad_header", f"alg {alg!r} is not accepted")
    if typ != TYP:
        raise TokenRejected("bad_header", f"typ {typ!r} is not {TYP}")
    if not is_kid(kid):
        raise TokenRejected("bad_header", "kid missing or outside the grammar")
    return alg, kid


def decode_payload(parsed: Parsed) -> dict[str, Any]:
    """Only after the signature verified."""
    try:
        return loads_object(parsed.payload)
    except StrictJsonError as e:
        raise TokenRejected("malformed", f"payload: {e}") from None
