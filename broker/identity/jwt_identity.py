"""The ``jwt`` agent identity (README, "Agent identities"): verify an outside issuer's JWT, match it to policy. Pure.

An agent presents an identity JWT (a GitHub Actions OIDC token, a Kubernetes projected
service-account token, a SPIFFE JWT-SVID) as its bearer credential. The broker

1. routes it by its *unverified* ``iss`` (``unverified_route``) to an issuer the policy
   names, and only then fetches that issuer's keys (``broker.backends.oidc_keys``);
2. verifies it (``verify_identity_jwt``): strict compact JWS; header fields ``alg``,
   ``kid``, ``typ``, ``x5t``, ``x5t#S256`` and nothing else (``crit``, ``jku``, ``x5u``,
   ``jwk``, ``x5c``, ``cty``... refused); ``alg`` one of RS256, ES256, EdDSA and equal to
   the algorithm of the key named by ``kid`` (there is no HMAC path at all); the
   signature; strict JSON claims; ``iss`` exact; ``exp`` required; ``nbf``, ``iat``
   optional; a bounded leeway; a lifetime cap, so the replay record is bounded;
3. matches the verified claims against a policy identity (``match_jwt_identity``):
   audience among ``aud``, subject exact, each ``claims:`` value exact and type-exact.

Every refusal is ``IdentityRejected`` (an ``Unauthenticated``): the caller gets 401
``unauthenticated``; ``reason`` is for the audit log and never quotes token content
beyond short, bounded values.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from broker.errors import Unauthenticated
from broker.identity.jwt_keys import IDENTITY_ALGORITHMS, IdentityKeys, is_identity_kid
from broker.identity.single_match import NoSingleMatch, P, single_match
from broker.policy.model import JwtIdentity
from broker.token.b64 import Base64Error, b64url_decode
from broker.token.strictjson import StrictJsonError, loads_object

__all__ = [
    "DEFAULT_LEEWAY",
    "DEFAULT_MAX_LIFETIME",
    "MAX_IDENTITY_TOKEN_BYTES",
    "IdentityClaims",
    "IdentityKeys",
    "IdentityRejected",
    "IdentityRoute",
    "looks_like_jwt",
    "match_jwt_identity",
    "select_jwt_principal",
    "unverified_issuer",
    "unverified_route",
    "verify_identity_jwt",
]

MAX_IDENTITY_TOKEN_BYTES: Final = 16 * 1024
MAX_HEADER_CHARS: Final = 2048
DEFAULT_LEEWAY: Final = 30
MAX_LEEWAY: Final = 300
DEFAULT_MAX_LIFETIME: Final = 24 * 3600
MAX_STRING: Final = 1024  # iss, sub, each aud
MAX_JTI: Final = 256
MAX_AUDIENCES: Final = 32
MAX_DEPTH: Final = 16  # nesting of claim values (Kubernetes uses 3)
#: header fields that are read (alg, kid, typ) or harmless hints (x5t: a certificate
#: thumbprint GitHub and Azure send). Everything else is refused, not ignored.
HEADER_FIELDS: Final = frozenset({"alg", "kid", "typ", "x5t", "x5t#S256"})
#: typ absent (Kubernetes), "JWT" (GitHub Actions, Google, GitLab), "JOSE" (allowed for
#: SPIFFE JWT-SVIDs); compared case-insensitively (RFC 7515 4.1.9). Explicitly typed
#: other tokens (at+jwt access tokens, our own cap+jwt, dpop+jwt proofs) are refused.
TYPES: Final = frozenset({"jwt", "jose"})
_KEY_HEADERS: Final = ("jku", "x5u", "jwk", "x5c")
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class IdentityRejected(Unauthenticated):
    """An identity JWT was refused; ``reason`` says why, for the audit log only."""


def looks_like_jwt(credential: str) -> bool:
    """Three non-empty base64url segments, within the size cap: worth routing as a JWT."""
    return len(credential) <= MAX_IDENTITY_TOKEN_BYTES and _COMPACT.fullmatch(credential) is not None


@dataclass(frozen=True, slots=True)
class IdentityRoute:
    """What an *unverified* token says about where its keys are: routing only, never trust."""

    issuer: str
    kid: str


@dataclass(frozen=True, slots=True)
class _Parts:
    alg: str
    kid: str
    signing_input: bytes
    payload_b64: str
    signature: bytes


def unverified_route(token: object) -> IdentityRoute:
    """The ``iss`` and ``kid`` of a well-formed token with an acceptable header.

    Only to pick the issuer's key set: the caller must look ``issuer`` up among the
    issuers its policy names, and never fetch from a URL a token supplies.
    """
    parts = _split(token)
    issuer = _payload(parts).get("iss")
    if not isinstance(issuer, str) or not 0 < len(issuer) <= MAX_STRING:
        raise IdentityRejected("iss missing or not a string")
    return IdentityRoute(issuer, parts.kid)


def unverified_issuer(token: object) -> str:
    return unverified_route(token).issuer


@dataclass(frozen=True, slots=True)
class IdentityClaims:
    """The claims of a verified identity JWT. ``claims`` is every claim, read-only."""

    iss: str
    sub: str
    aud: tuple[str, ...]
    exp: int
    iat: int | None
    nbf: int | None
    jti: str | None
    claims: Mapping[str, object] = field(repr=False, compare=False, hash=False)

    @property
    def replay_id(self) -> str | None:
        """The key for the replay guard: SHA-256 over issuer and ``jti`` (a jti is unique
        per issuer only), or ``None`` when the token carries no ``jti``."""
        if self.jti is None:
            return None
        return hashlib.sha256(f"{self.iss}\x00{self.jti}".encode()).hexdigest()

    def replay_until(self, leeway: int = DEFAULT_LEEWAY) -> int:
        """Until when (epoch seconds) the replay record must be kept: the token is
        accepted while ``now < exp + leeway``."""
        return self.exp + leeway


def verify_identity_jwt(
    token: object,
    keys: IdentityKeys,
    *,
    issuer: str,
    now: int,
    leeway: int = DEFAULT_LEEWAY,
    max_lifetime: int = DEFAULT_MAX_LIFETIME,
) -> IdentityClaims:
    """The verified claims of ``token`` from ``issuer``, or ``IdentityRejected``.

    ``now`` is injected (epoch seconds). Audience, subject and the policy's claims are
    not checked here: ``match_jwt_identity`` does that per policy identity.
    """
    if type(leeway) is not int or not 0 <= leeway <= MAX_LEEWAY:
        raise ValueError(f"leeway must be an integer from 0 to {MAX_LEEWAY} seconds")
    if type(max_lifetime) is not int or max_lifetime <= 0:
        raise ValueError("max_lifetime must be a positive integer")
    parts = _split(token)
    key = keys.key_for(parts.kid)
    if key is None:
        raise IdentityRejected(f"no key {parts.kid!r} in the key set of {issuer}")
    if parts.alg != key.alg:
        raise IdentityRejected(f"alg {parts.alg} does not fit key {parts.kid!r} ({key.alg})")
    if not key.verify(parts.signing_input, parts.signature):
        raise IdentityRejected("signature does not verify")
    claims = _claims(_payload(parts))
    if claims.iss != issuer:
        raise IdentityRejected(f"iss is not {issuer}")
    _check_times(claims, now=now, leeway=leeway, max_lifetime=max_lifetime)
    return claims


def match_jwt_identity(claims: IdentityClaims, identity: JwtIdentity) -> str | None:
    """``None`` when verified ``claims`` fit the policy ``identity``, else the reason."""
    if claims.iss != identity.issuer:
        return f"issuer is not {identity.issuer}"
    if identity.audience not in claims.aud:
        return f"audience {identity.audience!r} is not in aud"
    if claims.sub != identity.subject:
        return f"subject is not {identity.subject!r}"
    for name, expected in identity.claims:
        if name not in claims.claims:
            return f"claim {name!r} is missing"
        actual = claims.claims[name]
        if type(actual) is not type(expected) or actual != expected:  # 1 != True, "1" != 1
            return f"claim {name!r} is not {expected!r}"
    return None


def select_jwt_principal(claims: IdentityClaims, principals: Iterable[P]) -> P:
    """The one principal (agent or service) whose ``jwt`` identity ``claims`` match.

    None matching, or more than one (an ambiguous policy), is ``IdentityRejected``: a
    token never picks between two principals.
    """

    def reason_against(principal: P) -> str | None:
        assert isinstance(principal.identity, JwtIdentity)  # noqa: S101 -- filtered below
        return match_jwt_identity(claims, principal.identity)

    try:
        return single_match((p for p in principals if isinstance(p.identity, JwtIdentity)), reason_against)
    except NoSingleMatch as e:
        if e.matched:
            names = ", ".join(sorted(p.name for p in e.matched))
            raise IdentityRejected(
                f"identity matches {len(e.matched)} principals ({names}): ambiguous, refused"
            ) from None
        detail = "; ".join(e.misses[:8]) or f"no jwt identity names issuer {claims.iss}"
        raise IdentityRejected(f"no principal matches: {detail}") from None


# ---------------------------------------------------------------- internals


def _shown(value: object) -> str:
    """A short, bounded rendering of an untrusted value for a reason."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _split(token: object) -> _Parts:
    if not isinstance(token, str):
        raise IdentityRejected("token is not a string")
    if len(token) > MAX_IDENTITY_TOKEN_BYTES:
        raise IdentityRejected(f"token over {MAX_IDENTITY_TOKEN_BYTES} bytes")
    if not _COMPACT.fullmatch(token):
        raise IdentityRejected("not a compact JWS (three base64url segments)")
    header_b64, payload_b64, signature_b64 = token.split(".")
    if len(header_b64) > MAX_HEADER_CHARS:
        raise IdentityRejected("header too large")
    try:
        header = loads_object(b64url_decode(header_b64))
        signature = b64url_decode(signature_b64)
    except (Base64Error, StrictJsonError) as e:
        raise IdentityRejected(f"malformed header or signature: {e}") from None
    alg, kid = _check_header(header)
    return _Parts(alg, kid, f"{header_b64}.{payload_b64}".encode("ascii"), payload_b64, signature)


def _check_header(header: dict[str, Any]) -> tuple[str, str]:
    for name in _KEY_HEADERS:
        if name in header:
            raise IdentityRejected(f"header carries {name}: keys come only from the issuer's configured key set")
    if "crit" in header:
        raise IdentityRejected("header carries crit: no extension is understood")
    extra = set(header) - HEADER_FIELDS
    if extra:
        raise IdentityRejected(f"header fields not accepted: {_shown(sorted(extra))}")
    alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
    if not isinstance(alg, str) or alg not in IDENTITY_ALGORITHMS:
        raise IdentityRejected(f"alg {_shown(alg)} is not accepted (RS256, ES256, EdDSA only)")
    if typ is not None and not (isinstance(typ, str) and typ.lower() in TYPES):
        raise IdentityRejected(f"typ {_shown(typ)} is not an identity JWT")
    for hint in ("x5t", "x5t#S256"):
        if hint in header and not isinstance(header[hint], str):
            raise IdentityRejected(f"{hint} is not a string")
    if kid is None:
        raise IdentityRejected("kid missing: the key is always named")
    if not is_identity_kid(kid):
        raise IdentityRejected(f"kid {_shown(kid)} is outside the grammar")
    return alg, kid


def _payload(parts: _Parts) -> dict[str, Any]:
    try:
        return loads_object(b64url_decode(parts.payload_b64))
    except (Base64Error, StrictJsonError) as e:
        raise IdentityRejected(f"malformed payload: {e}") from None


def _string(payload: dict[str, Any], name: str, limit: int = MAX_STRING) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise IdentityRejected(f"{name} missing, not a string, or longer than {limit}")
    return value


def _time(payload: dict[str, Any], name: str) -> int | None:
    value = payload.get(name)
    if value is None and name not in payload:
        return None
    if type(value) is not int or value < 0:
        raise IdentityRejected(f"{name} is not a non-negative integer")
    return value


def _claims(payload: dict[str, Any]) -> IdentityClaims:
    iss, sub = _string(payload, "iss"), _string(payload, "sub")
    aud = payload.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if (
        not isinstance(audiences, list)
        or not 0 < len(audiences) <= MAX_AUDIENCES
        or not all(isinstance(a, str) and 0 < len(a) <= MAX_STRING for a in audiences)
    ):
        raise IdentityRejected("aud missing, or not a string or a list of strings")
    exp = _time(payload, "exp")
    if exp is None:
        raise IdentityRejected("exp missing")
    jti = _string(payload, "jti", MAX_JTI) if "jti" in payload else None
    return IdentityClaims(
        iss=iss,
        sub=sub,
        aud=tuple(audiences),
        exp=exp,
        iat=_time(payload, "iat"),
        nbf=_time(payload, "nbf"),
        jti=jti,
        claims=_frozen(payload),
    )


def _check_times(claims: IdentityClaims, *, now: int, leeway: int, max_lifetime: int) -> None:
    exp, iat, nbf = claims.exp, claims.iat, claims.nbf
    if (iat is not None and iat > exp) or (nbf is not None and nbf >= exp):
        raise IdentityRejected("times must satisfy iat <= exp and nbf < exp")
    lifetime = exp - (iat if iat is not None else now)
    if lifetime > max_lifetime:
        raise IdentityRejected(f"lifetime {lifetime}s is over the cap {max_lifetime}s")
    if now >= exp + leeway:
        raise IdentityRejected("expired")
    if nbf is not None and nbf > now + leeway:
        raise IdentityRejected("not yet valid (nbf)")
    if iat is not None and iat > now + leeway:
        raise IdentityRejected("issued in the future (iat)")


def _frozen(value: Any, depth: int = 0) -> Any:
    """Claims deep read-only: objects as mapping proxies, arrays as tuples; nesting bounded."""
    if depth > MAX_DEPTH:
        raise IdentityRejected(f"claims nested deeper than {MAX_DEPTH}")
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v, depth + 1) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v, depth + 1) for v in value)
    return value
