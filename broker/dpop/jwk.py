"""The public key a DPoP proof carries in its ``jwk`` header, and RFC 7638 thumbprints.

A proof key is EC P-256 (ES256) or OKP Ed25519 (EdDSA), nothing else. The header value
is read strictly: required members present and canonical, points on the curve, no
private member, no member outside a short list of harmless optional ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from broker.token.algorithms import Algorithm, PublicKey, algorithm_of
from broker.token.b64 import b64url_encode
from broker.token.keys import KeyFormatError, public_key_of

#: RFC 7638 section 3.2: the members a thumbprint hashes, per key type. RSA is listed so
#: the RFC's own example can be checked; an RSA key never verifies a proof.
THUMBPRINT_MEMBERS: Final[Mapping[str, tuple[str, ...]]] = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}
#: private (or symmetric) key members of any JWK type: their presence is refused outright
PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
#: optional public members a client library may add; they are checked or ignored, never hashed
OPTIONAL_MEMBERS: Final = frozenset({"alg", "use", "kid"})
MAX_KID_CHARS: Final = 128


class JwkError(ValueError):
    """The ``jwk`` of a proof is not an acceptable public key."""


@dataclass(frozen=True, slots=True)
class ProofKey:
    """A proof's public key with its RFC 7638 thumbprint (``jkt``)."""

    key: PublicKey
    jkt: str

    @property
    def alg(self) -> Algorithm:
        return algorithm_of(self.key)


def thumbprint(jwk: Mapping[str, object]) -> str:
    """RFC 7638 SHA-256 thumbprint: the required members only, in lexicographic order,
    no whitespace, hashed, base64url without padding."""
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in THUMBPRINT_MEMBERS:
        raise JwkError(f"no thumbprint for key type {kty!r}")
    members: dict[str, str] = {}
    for name in THUMBPRINT_MEMBERS[kty]:  # already in lexicographic order
        value = jwk.get(name)
        if not isinstance(value, str):
            raise JwkError(f"JWK member {name!r} missing")
        members[name] = value
    canonical = json.dumps(members, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return b64url_encode(hashlib.sha256(canonical).digest())


def public_jwk(key: PublicKey) -> dict[str, str]:
    """The required members of a public key's JWK (what a client puts in its proofs)."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw))}
    algorithm_of(key)  # P-256 only
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url_encode(numbers.x.to_bytes(32, "big")),
        "y": b64url_encode(numbers.y.to_bytes(32, "big")),
    }


def proof_key(jwk: object) -> ProofKey:
    """Read a proof's ``jwk`` header strictly; raise ``JwkError`` on anything off."""
    if not isinstance(jwk, dict):
        raise JwkError("jwk must be an object")
    private = set(jwk) & PRIVATE_MEMBERS
    if private:
        raise JwkError(f"jwk holds private key members {sorted(private)}")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if (kty, crv) == ("OKP", "Ed25519"):
        required = THUMBPRINT_MEMBERS["OKP"]
    elif (kty, crv) == ("EC", "P-256"):
        required = THUMBPRINT_MEMBERS["EC"]
    else:
        raise JwkError(f"key type {kty!r}/{crv!r} is not accepted (EC P-256 or OKP Ed25519)")
    unknown = set(jwk) - set(required) - OPTIONAL_MEMBERS
    if unknown:
        raise JwkError(f"jwk members outside the profile: {sorted(unknown)}")
    try:
        key = public_key_of(jwk, okp=kty == "OKP")
    except KeyFormatError as e:
        raise JwkError(str(e)) from e
    alg = algorithm_of(key)
    if jwk.get("alg", alg) != alg:
        raise JwkError("jwk alg does not fit the key")
    if jwk.get("use", "sig") != "sig":
        raise JwkError("jwk use must be sig")
    kid = jwk.get("kid", "")
    if not isinstance(kid, str) or len(kid) > MAX_KID_CHARS:
        raise JwkError("jwk kid must be a short string")
    return ProofKey(key, thumbprint(jwk))
