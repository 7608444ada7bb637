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
    """A token split and its header checked; payload not yet trusted (nor decoded)."""

    alg: str
    kid: str
    signing_input: bytes
    payload_b64: str
    signature: bytes


def parse_compact(token: object) -> Parsed:
    """Size, alphabet, three segments, strict header. Raises ``TokenRejected``."""
    if not isinstance(token, str):
        raise TokenRejected("malformed", "token is not a string")
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenRejected("too_large", f"token over {MAX_TOKEN_BYTES} bytes")
    if not _TOKEN_CHARS.fullmatch(token):
        raise TokenRejected("malformed", "characters outside [A-Za-z0-9_.-]")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenRejected("malformed", f"{len(parts)} segments, not 3")
    header_b64, payload_b64, sig_b64 = parts
    if len(header_b64) > MAX_HEADER_BYTES:
        raise TokenRejected("bad_header", "header too large")
    try:
        header = loads_object(b64url_decode(header_b64))
        signature = b64url_decode(sig_b64)
        b64url_decode(payload_b64)
    except (Base64Error, StrictJsonError) as e:
        raise TokenRejected("malformed", f"encoding: {e}") from None
    alg, kid = _check_header(header)
    return Parsed(alg, kid, f"{header_b64}.{payload_b64}".encode("ascii"), payload_b64, signature)


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
        return loads_object(b64url_decode(parsed.payload_b64))
    except (Base64Error, StrictJsonError) as e:
        raise TokenRejected("malformed", f"payload: {e}") from None
