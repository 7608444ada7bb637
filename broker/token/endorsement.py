"""Endorsements: the long-term key's signed word that a short-lived key may sign tokens.

A broker worker signs tokens with a session key held in its memory
(``broker.backends.endorsed_signer``); the long-term key (Vault Transit) never signs a
token, it signs an *endorsement* of the session key's public half and its time windows.
An endorsement is a compact JWS of its own type, never a token:

    header   {"alg": <the long-term key's alg>, "typ": "capbroker-endorsement+jwt",
              "kid": <the long-term key version, e.g. "capbroker-v3">}
    payload  {"iss": <the broker's issuer>,
              "jwk": <the session key exactly as the JWKS publishes it:
                      kty, crv, x[, y], kid, alg, use>,
              "not_before": <int>, "sign_until": <int>, "publish_until": <int>}

Canonical: compact JSON, the fields in that order, times in epoch seconds. Its ``typ`` is
not ``cap+jwt``, so a token verifier refuses an endorsement presented as a token, and an
endorsement verifier refuses a token presented as an endorsement.

Meaning: the key may sign tokens of ``iss`` while ``not_before <= now < sign_until``, and
only tokens with ``exp <= publish_until - MAX_LEEWAY``; it is published (in the JWKS)
while ``now < publish_until``. ``publish_until = sign_until + <global ttl cap> + 120 s``,
so every token it signed is still verifiable, with any verifier's leeway, until it
expires. Session kids are ``s-<16 hex digits>``: never a Transit kid (``<key>-v<N>``).

Pure: no I/O, no clock (``now`` is always passed in).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any, Final

from broker.capability.lifetime import MAX_TOKEN_TTL
from broker.token.algorithms import ALGORITHMS, Algorithm, verify_signature
from broker.token.b64 import Base64Error, b64url_decode, b64url_encode
from broker.token.claims import MAX_TIME
from broker.token.keys import KeyFormatError, KeyLookup, Signer, VerificationKey, is_kid, key_from_jwk
from broker.token.strictjson import StrictJsonError, dumps_canonical, loads_object
from broker.token.verify import MAX_LEEWAY

__all__ = [
    "ENDORSEMENT_TYP",
    "PUBLISH_MARGIN",
    "MAX_SIGN_SPAN",
    "MAX_PUBLISH_TAIL",
    "Endorsement",
    "EndorsementError",
    "Windows",
    "claimed_publish_until",
    "endorsement_payload",
    "endorse_locally",
    "is_session_kid",
    "new_session_kid",
    "open_statement",
    "statement_input",
    "verify_endorsement",
    "windows",
]

ENDORSEMENT_TYP: Final = "capbroker-endorsement+jwt"
#: how long past (sign_until + the ttl cap) a key stays published: more than the largest
#: verifier leeway (60 s) plus the replicas' clock skew
PUBLISH_MARGIN: Final = 120
#: the longest an endorsement may let a key sign: short-lived is checked, not hoped for
MAX_SIGN_SPAN: Final = 2 * 86400
#: the longest a key may stay published after it stopped signing
MAX_PUBLISH_TAIL: Final = MAX_TOKEN_TTL + PUBLISH_MARGIN
MAX_ENDORSEMENT_BYTES: Final = 2048
_FIELDS: Final = ("iss", "jwk", "not_before", "sign_until", "publish_until")
_HEADER_FIELDS: Final = frozenset({"alg", "typ", "kid"})
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_SESSION_KID = re.compile(r"s-[0-9a-f]{16}")


class EndorsementError(ValueError):
    """An endorsement that is malformed, not ours, or not signed by a published long-term
    key. ``code``: ``malformed``, ``unknown_endorser``, ``bad_signature`` or ``not_ours``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code


@dataclass(frozen=True, slots=True)
class Windows:
    not_before: int
    sign_until: int
    publish_until: int


def windows(now: int, sign_span: int, max_token_ttl: int = MAX_TOKEN_TTL) -> Windows:
    """The windows of a key endorsed at ``now`` that may sign for ``sign_span`` seconds and
    signs tokens of at most ``max_token_ttl`` seconds."""
    if not 0 < sign_span <= MAX_SIGN_SPAN:
        raise ValueError(f"sign span must be 1..{MAX_SIGN_SPAN} seconds")
    if not 0 < max_token_ttl <= MAX_TOKEN_TTL:
        raise ValueError(f"max token ttl must be 1..{MAX_TOKEN_TTL} seconds")
    return Windows(now, now + sign_span, now + sign_span + max_token_ttl + PUBLISH_MARGIN)


def new_session_kid() -> str:
    """``s-`` and 64 random bits in hex."""
    return f"s-{secrets.token_hex(8)}"


@dataclass(frozen=True, slots=True)
class Endorsement:
    """A verified endorsement: ``key`` may sign tokens of ``issuer`` in its windows."""

    key: VerificationKey
    issuer: str
    windows: Windows
    endorser: str  # the long-term kid that signed it
    compact: str  # the endorsement as stored

    @property
    def kid(self) -> str:
        return self.key.kid

    @property
    def not_before(self) -> int:
        return self.windows.not_before

    @property
    def sign_until(self) -> int:
        return self.windows.sign_until

    @property
    def publish_until(self) -> int:
        return self.windows.publish_until

    def signs_at(self, now: float) -> bool:
        return self.not_before <= now < self.sign_until

    @property
    def published_key(self) -> VerificationKey:
        """The session key as the JWKS publishes it: with its signing window, which every
        verifier of ours enforces on the tokens it signed (``iat`` inside it)."""
        return VerificationKey(self.key.kid, self.key.key, (self.not_before, self.sign_until))

    def published_at(self, now: float) -> bool:
        return now < self.publish_until

    def covers_exp(self, exp: int) -> bool:
        """Whether a token expiring at ``exp`` stays verifiable, with the largest leeway,
        for as long as any verifier accepts it."""
        return exp <= self.publish_until - MAX_LEEWAY


def endorsement_payload(key: VerificationKey, issuer: str, w: Windows) -> bytes:
    """The canonical payload endorsing ``key`` (whose kid is a session kid)."""
    if not _SESSION_KID.fullmatch(key.kid):
        raise ValueError("a session kid is s-<16 hex digits>")
    _check_windows(w)
    return dumps_canonical(
        {
            "iss": issuer,
            "jwk": key.bare_jwk(),
            "not_before": w.not_before,
            "sign_until": w.sign_until,
            "publish_until": w.publish_until,
        }
    )


def statement_input(alg: Algorithm, typ: str, kid: str, payload: bytes) -> bytes:
    """The JWS signing input of a statement (``header.payload``) with the header
    ``{"alg", "typ", "kid"}`` in that order."""
    header = dumps_canonical({"alg": alg, "typ": typ, "kid": kid})
    return f"{b64url_encode(header)}.{b64url_encode(payload)}".encode("ascii")


def endorse_locally(payload: bytes, endorser: Signer) -> str:
    """An endorsement signed by a key in this process: for tests only (in production the
    long-term key is in Vault, ``TransitSigningBackend.sign_statement``)."""
    message = statement_input(endorser.alg, ENDORSEMENT_TYP, endorser.kid, payload)
    return f"{message.decode('ascii')}.{b64url_encode(endorser.sign(message))}"


def verify_endorsement(compact: object, endorsers: KeyLookup, *, issuer: str, alg: Algorithm) -> Endorsement:
    """The endorsement in ``compact`` if it is well formed, signed by one of ``endorsers``
    (the published long-term keys), for ``issuer`` and a session key of algorithm ``alg``;
    otherwise ``EndorsementError``. Time is not checked here: see ``Endorsement``."""
    endorser_kid, payload_bytes = open_statement(compact, endorsers, typ=ENDORSEMENT_TYP)
    try:
        payload = loads_object(payload_bytes)
    except StrictJsonError:
        raise EndorsementError("malformed", "payload") from None
    key, w = _payload(payload)
    if payload["iss"] != issuer:
        raise EndorsementError("not_ours", "another issuer")
    if key.alg != alg:
        raise EndorsementError("not_ours", "another algorithm")
    return Endorsement(key, issuer, w, endorser_kid, str(compact))  # a str: open_statement checked


def open_statement(
    compact: object, signers: KeyLookup, *, typ: str, max_bytes: int = MAX_ENDORSEMENT_BYTES
) -> tuple[str, bytes]:
    """The signing kid and the payload bytes of a statement of type ``typ`` (header exactly
    ``{"alg", "typ", "kid"}``) signed by one of ``signers``; otherwise ``EndorsementError``
    (``malformed``, ``unknown_endorser`` or ``bad_signature``). The payload is not parsed.
    Every statement the long-term key signs (endorsements, audit checkpoints) opens here."""
    if not isinstance(compact, str) or len(compact) > max_bytes or not _COMPACT.fullmatch(compact):
        raise EndorsementError("malformed", "not a compact JWS of bounded size")
    header_b64, payload_b64, signature_b64 = compact.split(".")
    try:
        header = loads_object(b64url_decode(header_b64))
        signature = b64url_decode(signature_b64)
        payload_bytes = b64url_decode(payload_b64)
    except (Base64Error, StrictJsonError):
        raise EndorsementError("malformed", "encoding") from None
    if set(header) != _HEADER_FIELDS or header["typ"] != typ or header["alg"] not in ALGORITHMS:
        raise EndorsementError("malformed", "header")
    signer_kid = header["kid"]
    if not is_kid(signer_kid):
        raise EndorsementError("malformed", "header kid")
    signer = signers.key_for(signer_kid)
    if signer is None:
        raise EndorsementError("unknown_endorser", f"no published long-term key {signer_kid!r}")
    if header["alg"] != signer.alg:
        raise EndorsementError("malformed", "alg does not fit the long-term key")
    if not verify_signature(signer.key, f"{header_b64}.{payload_b64}".encode("ascii"), signature):
        raise EndorsementError("bad_signature", "the long-term key did not sign this")
    return signer_kid, payload_bytes


def is_session_kid(kid: str) -> bool:
    """Whether ``kid`` names a session key (``s-<16 hex>``), never a long-term key."""
    return _SESSION_KID.fullmatch(kid) is not None


def claimed_publish_until(compact: object) -> int | None:
    """The ``publish_until`` a stored endorsement states, NOT verified: only for removing
    entries long past it from storage, never for trusting one. None if it does not parse."""
    if not isinstance(compact, str) or len(compact) > MAX_ENDORSEMENT_BYTES or not _COMPACT.fullmatch(compact):
        return None
    try:
        until = loads_object(b64url_decode(compact.split(".")[1])).get("publish_until")
    except (Base64Error, StrictJsonError):
        return None
    return until if type(until) is int else None


def _payload(payload: dict[str, Any]) -> tuple[VerificationKey, Windows]:
    if tuple(payload) != _FIELDS or not isinstance(payload["iss"], str):
        raise EndorsementError("malformed", "payload fields")
    jwk = payload["jwk"]
    try:
        key = key_from_jwk(jwk)
    except (KeyFormatError, ValueError):
        raise EndorsementError("malformed", "jwk") from None
    # the published form exactly: no extra members, nothing the JWKS would drop
    if key is None or key.window is not None or key.bare_jwk() != jwk or not _SESSION_KID.fullmatch(key.kid):
        raise EndorsementError("malformed", "jwk")
    times = [payload[name] for name in _FIELDS[2:]]
    if any(type(t) is not int for t in times):  # bool is not an int here
        raise EndorsementError("malformed", "times")
    w = Windows(*times)
    try:
        _check_windows(w)
    except ValueError:
        raise EndorsementError("malformed", "windows") from None
    return key, w


def _check_windows(w: Windows) -> None:
    if not 0 < w.not_before < w.sign_until < w.publish_until < MAX_TIME:
        raise ValueError("windows out of order")
    if w.sign_until - w.not_before > MAX_SIGN_SPAN or w.publish_until - w.sign_until > MAX_PUBLISH_TAIL:
        raise ValueError("windows too long")
