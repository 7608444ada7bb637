"""Key sets of outside OIDC issuers, for ``jwt`` agent identities (README, "Agent identities"). Pure.

Each key's algorithm is fixed by its type, never taken from a token::

    RSA, 2048 to 8192 bits, e = 65537    RS256
    EC P-256                             ES256
    OKP Ed25519                          EdDSA

A JWK is *skipped* (kept out of the set, the others still used) when it is of another
type or curve, has no ``kid`` in the grammar, says ``use`` other than ``sig``, lists
``key_ops`` without ``verify``, carries an ``alg`` that contradicts its type, or is
malformed. A ``kid`` that appears twice is dropped: it is ambiguous. A set is *refused*
whole (``KeySetError``) when it is not a JWKS, has too many entries, or any entry holds a
private member: an issuer that publishes private keys is broken and nothing it publishes
is trusted.

Discovery (OpenID Connect Discovery 1.0, section 4) is parsed here too: the document's
``issuer`` must equal the configured issuer exactly (the mix-up defence), and its
``jwks_uri`` must be https (plain http only on loopback).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeGuard

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from broker.token.algorithms import verify_signature
from broker.token.b64 import Base64Error, b64url_decode
from broker.token.keys import public_key_of
from broker.token.strictjson import StrictJsonError, loads_object

__all__ = [
    "IDENTITY_ALGORITHMS",
    "IdentityAlgorithm",
    "IdentityKey",
    "IdentityKeys",
    "KeySetError",
    "discovery_url",
    "is_fetchable_url",
    "is_identity_kid",
    "jwks_uri_from_discovery",
]

IdentityAlgorithm = Literal["RS256", "ES256", "EdDSA"]
IDENTITY_ALGORITHMS: Final[frozenset[str]] = frozenset({"RS256", "ES256", "EdDSA"})
IdentityPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

#: at most this many entries in a JWKS document (real issuers publish a handful)
MAX_KEYS: Final = 100
RSA_MIN_BITS: Final = 2048
RSA_MAX_BITS: Final = 8192  # bounds the cost of one verification
RSA_EXPONENT: Final = 65537
#: kids of real issuers: UUIDs (GitHub), base64url thumbprints (Kubernetes), hex (Google).
#: No "/" or "\": a kid is only ever a dictionary key, and never looks like a path.
_KID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._~+=:-]{0,127}")
#: members that only a private or symmetric key has (RFC 7518 section 6)
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_HTTPS = re.compile(r"https://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?(?:[/?][^\s#]*)?")
_LOOPBACK_HTTP = re.compile(r"http://(?:127\.0\.0\.1|localhost|\[::1\])(?::[0-9]{1,5})?(?:[/?][^\s#]*)?")
_MAX_URL = 2048


class KeySetError(ValueError):
    """A JWKS or discovery document that cannot be used at all."""


def is_identity_kid(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _KID.fullmatch(value) is not None


def is_fetchable_url(value: object) -> TypeGuard[str]:
    """https, or plain http on loopback; no user info, no fragment, no whitespace."""
    return (
        isinstance(value, str)
        and len(value) <= _MAX_URL
        and (_HTTPS.fullmatch(value) is not None or _LOOPBACK_HTTP.fullmatch(value) is not None)
    )


@dataclass(frozen=True, slots=True)
class IdentityKey:
    """One issuer public key and the one algorithm it is used with."""

    kid: str
    alg: IdentityAlgorithm
    key: IdentityPublicKey

    def verify(self, message: bytes, signature: bytes) -> bool:
        if isinstance(self.key, rsa.RSAPublicKey):
            if len(signature) != (self.key.key_size + 7) // 8:
                return False
            try:
                self.key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                return False
            return True
        # ES256 here accepts high-S: outside issuers (Go, Java) do not normalise S. The
        # replay guard keys on the jti, never on the signature bytes, so the second
        # spelling of a signature buys an attacker nothing.
        return verify_signature(self.key, message, signature, allow_high_s=True)


class IdentityKeys:
    """An immutable set of an issuer's verification keys, by kid."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, IdentityKey]) -> None:
        self._keys = dict(keys)

    @classmethod
    def from_json(cls, document: bytes) -> IdentityKeys:
        """A JWKS document as fetched: strict JSON (UTF-8, no duplicate keys)."""
        try:
            return cls.from_jwks(loads_object(document))
        except StrictJsonError as e:
            raise KeySetError(f"JWKS is not strict JSON: {e}") from None

    @classmethod
    def from_jwks(cls, jwks: object) -> IdentityKeys:
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise KeySetError("a JWKS is an object with a 'keys' list")
        entries: list[object] = jwks["keys"]
        if len(entries) > MAX_KEYS:
            raise KeySetError(f"JWKS has {len(entries)} entries, more than {MAX_KEYS}")
        for jwk in entries:
            if isinstance(jwk, dict) and jwk.keys() & _PRIVATE_MEMBERS:
                raise KeySetError("JWKS holds private key material: the whole set is refused")
        by_kid: dict[str, IdentityKey] = {}
        ambiguous: set[str] = set()
        for jwk in entries:
            key = identity_key_from_jwk(jwk)
            if key is None:
                continue
            if key.kid in by_kid:
                ambiguous.add(key.kid)
            by_kid[key.kid] = key
        return cls({kid: key for kid, key in by_kid.items() if kid not in ambiguous})

    def key_for(self, kid: str) -> IdentityKey | None:
        return self._keys.get(kid)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __iter__(self) -> Iterator[IdentityKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"IdentityKeys({sorted(self._keys)!r})"


def identity_key_from_jwk(jwk: object) -> IdentityKey | None:
    """The key in one JWK, or ``None`` when it is skipped (see the module docstring)."""
    if not isinstance(jwk, dict):
        return None
    kid = jwk.get("kid")
    if not is_identity_kid(kid) or jwk.get("use", "sig") != "sig":
        return None
    ops = jwk.get("key_ops")
    if ops is not None and not (isinstance(ops, list) and "verify" in ops):
        return None
    try:
        parsed = _public_key(jwk)
    except (Base64Error, ValueError):
        return None  # malformed, or a point not on the curve
    if parsed is None:
        return None
    alg, key = parsed
    if jwk.get("alg", alg) != alg:
        return None
    return IdentityKey(kid, alg, key)


def _public_key(jwk: dict[str, Any]) -> tuple[IdentityAlgorithm, IdentityPublicKey] | None:
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "RSA":
        n = int.from_bytes(_member(jwk, "n"), "big")
        e = int.from_bytes(_member(jwk, "e"), "big")
        if e != RSA_EXPONENT or not RSA_MIN_BITS <= n.bit_length() <= RSA_MAX_BITS:
            return None
        return "RS256", rsa.RSAPublicNumbers(e, n).public_key()
    if kty == "EC" and crv == "P-256":
        return "ES256", public_key_of(jwk, okp=False)  # the capability keys' own parser
    if kty == "OKP" and crv == "Ed25519":
        return "EdDSA", public_key_of(jwk, okp=True)
    return None


def _member(jwk: dict[str, Any], name: str, size: int | None = None) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or len(value) > 2048:
        raise ValueError(f"JWK {name!r} missing")
    data = b64url_decode(value)
    if not data or (size is not None and len(data) != size):
        raise ValueError(f"JWK {name!r} has the wrong length")
    return data


def discovery_url(issuer: str) -> str:
    """Where an issuer publishes its discovery document (the issuer's path kept)."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def jwks_uri_from_discovery(document: bytes, *, issuer: str) -> str:
    """The ``jwks_uri`` of a discovery document published for exactly ``issuer``."""
    try:
        meta = loads_object(document)
    except StrictJsonError as e:
        raise KeySetError(f"discovery document is not strict JSON: {e}") from None
    if meta.get("issuer") != issuer:
        raise KeySetError("discovery document names another issuer (mix-up): refused")
    uri = meta.get("jwks_uri")
    if not is_fetchable_url(uri):
        raise KeySetError("discovery jwks_uri must be https (plain http only on loopback)")
    return uri
