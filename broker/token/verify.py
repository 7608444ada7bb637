"""Verify a capability token strictly (docs/tokens.md). Every failure is a ``TokenRejected``.

Order: size and alphabet; three segments; header (alg in {EdDSA, ES256}, typ cap+jwt,
kid grammar, no other field); key by kid; the token's alg must equal the key's; the
signature; only then the payload (strict JSON, typed claims); ``iat`` inside the key's
signing window, if it publishes one (widened by the largest leeway); issuer and audience
exact; times with a bounded leeway; lifetime under the cap.
"""

from __future__ import annotations

from typing import Final

from broker.capability.lifetime import MAX_TOKEN_TTL
from broker.errors import TokenRejected
from broker.token.algorithms import verify_signature
from broker.token.claims import Claims, ClaimsError, claims_from_json
from broker.token.codec import decode_payload, parse_compact
from broker.token.keys import KeyLookup, VerificationKey

DEFAULT_LEEWAY: Final = 30
MAX_LEEWAY: Final = 60


def check_leeway(leeway: int) -> int:
    if type(leeway) is not int or not 0 <= leeway <= MAX_LEEWAY:
        raise ValueError(f"leeway must be an integer from 0 to {MAX_LEEWAY} seconds")
    return leeway


def verify_token(
    token: object,
    keys: KeyLookup,
    *,
    issuer: str,
    audience: str,
    now: int,
    leeway: int = DEFAULT_LEEWAY,
    max_ttl: int = MAX_TOKEN_TTL,
) -> Claims:
    """The token's claims, or ``TokenRejected``. ``now`` is injected (seconds)."""
    check_leeway(leeway)
    claims = signed_claims(token, keys)
    check_claims(claims, issuer=issuer, audience=audience, now=now, leeway=leeway, max_ttl=max_ttl)
    return claims


def signed_claims(token: object, keys: KeyLookup) -> Claims:
    """The claims of a well-formed token whose signature verifies; times, issuer and
    audience NOT checked yet: always follow with ``check_claims``."""
    return signed_claims_and_key(token, keys)[0]


def signed_claims_and_key(token: object, keys: KeyLookup) -> tuple[Claims, VerificationKey]:
    """``signed_claims``, and the key the signature verified under."""
    parsed = parse_compact(token)
    key = keys.key_for(parsed.kid)
    if key is None:
        raise TokenRejected("unknown_key", f"no key {parsed.kid!r}")
    if parsed.alg != key.alg:
        raise TokenRejected("bad_header", f"alg {parsed.alg} does not fit key {key.kid} ({key.alg})")
    if not verify_signature(key.key, parsed.signing_input, parsed.signature):
        raise TokenRejected("bad_signature")
    try:
        claims = claims_from_json(decode_payload(parsed))
    except ClaimsError as e:
        raise TokenRejected("bad_claims", str(e)) from None
    # A session key's signature counts only for tokens stamped in its signing window
    # (published with the key): a stolen key is worth its window, not its publication.
    if not key.signs_at(claims.iat, MAX_LEEWAY):
        raise TokenRejected("outside_key_window", f"iat {claims.iat} outside key {key.kid}'s signing window")
    return claims, key


def check_claims(claims: Claims, *, issuer: str, audience: str, now: int, leeway: int, max_ttl: int) -> None:
    if claims.iss != issuer:
        raise TokenRejected("wrong_issuer", f"iss {claims.iss!r}")
    if claims.aud != audience:
        raise TokenRejected("wrong_audience", f"aud {claims.aud!r}")
    if not claims.iat <= claims.nbf < claims.exp:
        raise TokenRejected("bad_claims", "times must satisfy iat <= nbf < exp")
    if claims.exp - claims.iat > max_ttl:
        raise TokenRejected("ttl_exceeds_max", f"lifetime {claims.exp - claims.iat}s over {max_ttl}s")
    if now >= claims.exp + leeway:
        raise TokenRejected("expired")
    if now + leeway < claims.nbf:  # iat <= nbf, so this also refuses an iat in the future
        raise TokenRejected("not_yet_valid")
