"""Keys: verification keys and JWKS (import and export), local signing keys, key rings.

A key carries its own algorithm; the token's ``alg`` must equal it. ``kid`` follows a
closed grammar so it can never carry a path, a URL or SQL.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeGuard

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from broker.token.algorithms import (
    Algorithm,
    PrivateKey,
    PublicKey,
    algorithm_of,
    sign,
    sign_with_sodium,
    sodium_secret,
)
from broker.token.b64 import Base64Error, b64url_decode, b64url_encode

KID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_JWKS_KEYS: Final = 64


class KeyFormatError(ValueError):
    """A key or key set is malformed."""


def is_kid(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and KID.fullmatch(value) is not None


#: JWK members that publish a key's signing window (epoch seconds): the key signs only
#: tokens with ``sign_from <= iat < sign_until``. Other JWT libraries ignore them.
SIGN_FROM: Final = "sign_from"
SIGN_UNTIL: Final = "sign_until"


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str
    key: PublicKey
    #: the window in which the key may sign, if it has one (an endorsed session key):
    #: a token it signed with ``iat`` outside it is refused, so a stolen session key is
    #: worth its window only. None for keys that sign for as long as they are published.
    window: tuple[int, int] | None = None
    #: the key's one algorithm, taken from the key once (it is asked on every verification)
    alg: Algorithm = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "alg", algorithm_of(self.key))
        if self.window is not None:
            start, end = self.window
            if type(start) is not int or type(end) is not int or not 0 <= start < end:
                raise KeyFormatError("a signing window is two integers, start before end")

    def signs_at(self, iat: int, early: int) -> bool:
        """Whether a token stamped ``iat`` is inside the key's signing window. The start
        is widened by ``early`` seconds (a mint whose claims were stamped just before a new
        key took over); the end is exact: the one process holding the key stamps ``iat``
        and stops signing at ``sign_until`` by the same clock."""
        if self.window is None:
            return True
        start, end = self.window
        return start - early <= iat < end

    def to_jwk(self) -> dict[str, Any]:
        """The public JWK, with the signing window (``sign_from``, ``sign_until``) if any."""
        jwk: dict[str, Any] = self.bare_jwk()
        if self.window is not None:
            jwk[SIGN_FROM], jwk[SIGN_UNTIL] = self.window
        return jwk

    def bare_jwk(self) -> dict[str, str]:
        """The public JWK without the window: what an endorsement names."""
        if isinstance(self.key, ed25519.Ed25519PublicKey):
            x = self.key.public_bytes(Encoding.Raw, PublicFormat.Raw)
            return {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": b64url_encode(x),
                "kid": self.kid,
                "alg": "EdDSA",
                "use": "sig",
            }
        numbers = self.key.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url_encode(numbers.x.to_bytes(32, "big")),
            "y": b64url_encode(numbers.y.to_bytes(32, "big")),
            "kid": self.kid,
            "alg": "ES256",
            "use": "sig",
        }


def public_key_of(jwk: Mapping[str, Any], *, okp: bool) -> PublicKey:
    """The Ed25519 (``okp``) or P-256 public key of a JWK whose kty/crv the caller checked;
    ``KeyFormatError`` if a member is missing, not canonical base64url, or off the curve."""
    if okp:
        return ed25519.Ed25519PublicKey.from_public_bytes(_jwk_bytes(jwk, "x", 32))
    x = int.from_bytes(_jwk_bytes(jwk, "x", 32), "big")
    y = int.from_bytes(_jwk_bytes(jwk, "y", 32), "big")
    try:
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except ValueError as e:
        raise KeyFormatError("JWK point is not on P-256") from e


def _jwk_bytes(jwk: Mapping[str, Any], name: str, size: int) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise KeyFormatError(f"JWK member {name!r} missing")
    try:
        data = b64url_decode(value)
    except Base64Error as e:
        raise KeyFormatError(f"JWK member {name!r} is not base64url") from e
    if len(data) != size:
        raise KeyFormatError(f"JWK member {name!r} has the wrong length")
    return data


def key_from_jwk(jwk: object) -> VerificationKey | None:
    """A public key from one JWK; ``None`` for key types we never use (skipped, not trusted).

    Refused: private parts, a missing or malformed ``kid``, an ``alg`` or ``use`` that does
    not fit the key, points not on the curve.
    """
    if not isinstance(jwk, dict):
        raise KeyFormatError("a JWK is an object")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if not ((kty == "OKP" and crv == "Ed25519") or (kty == "EC" and crv == "P-256")):
        return None
    if "d" in jwk:
        raise KeyFormatError("a JWKS must never hold private keys")
    kid = jwk.get("kid")
    if not is_kid(kid):
        raise KeyFormatError("JWK kid missing or outside the grammar")
    if jwk.get("use", "sig") != "sig":
        raise KeyFormatError("JWK use must be sig")
    key = public_key_of(jwk, okp=kty == "OKP")
    vk = VerificationKey(kid, key, _window(jwk))
    if jwk.get("alg", vk.alg) != vk.alg:
        raise KeyFormatError("JWK alg does not fit the key")
    return vk


def _window(jwk: Mapping[str, Any]) -> tuple[int, int] | None:
    """The signing window a JWK publishes: both members or neither."""
    start, end = jwk.get(SIGN_FROM), jwk.get(SIGN_UNTIL)
    if start is None and end is None:
        return None
    if type(start) is not int or type(end) is not int or not 0 <= start < end:
        raise KeyFormatError("JWK signing window: sign_from and sign_until, integers, in order")
    return start, end


class KeyLookup(Protocol):
    """Where a verifier finds the key for a ``kid``."""

    def key_for(self, kid: str) -> VerificationKey | None: ...


class KeySet:
    """An immutable set of verification keys by kid."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[VerificationKey]) -> None:
        by_kid: dict[str, VerificationKey] = {}
        for key in keys:
            if key.kid in by_kid:
                raise KeyFormatError(f"kid {key.kid!r} appears twice")
            by_kid[key.kid] = key
        self._keys = by_kid

    @classmethod
    def from_jwks(cls, jwks: object) -> KeySet:
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise KeyFormatError("a JWKS is an object with a 'keys' list")
        if len(jwks["keys"]) > MAX_JWKS_KEYS:
            raise KeyFormatError("too many keys in the JWKS")
        return cls(k for k in map(key_from_jwk, jwks["keys"]) if k is not None)

    def key_for(self, kid: str) -> VerificationKey | None:
        return self._keys.get(kid)

    def __iter__(self) -> Iterator[VerificationKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def to_jwks(self) -> dict[str, list[dict[str, Any]]]:
        return {"keys": [k.to_jwk() for k in self._keys.values()]}


class Signer(Protocol):
    """Anything that signs JWS input with one key: a local key, or Vault Transit."""

    @property
    def kid(self) -> str: ...

    @property
    def alg(self) -> Algorithm: ...

    def sign(self, message: bytes) -> bytes: ...


class LocalSigner:
    """A private key held in this process. Used by the embedded default and tests."""

    __slots__ = ("_key", "_kid", "_public", "_sodium")

    def __init__(self, key: PrivateKey, kid: str) -> None:
        if not is_kid(kid):
            raise KeyFormatError("kid outside the grammar")
        algorithm_of(key)
        self._key = key
        self._kid = kid
        self._public = VerificationKey(kid, key.public_key())
        self._sodium = sodium_secret(key)  # Ed25519: the same key, in libsodium's form

    @classmethod
    def generate(cls, alg: Algorithm = "EdDSA", kid: str | None = None) -> LocalSigner:
        key: PrivateKey = (
            ed25519.Ed25519PrivateKey.generate() if alg == "EdDSA" else ec.generate_private_key(ec.SECP256R1())
        )
        return cls(key, kid or f"local-{secrets.token_hex(4)}")

    @property
    def kid(self) -> str:
        return self._kid

    @property
    def alg(self) -> Algorithm:
        return self._public.alg

    @property
    def public(self) -> VerificationKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        if self._sodium is not None:
            return sign_with_sodium(self._sodium, message)
        return sign(self._key, message)

    def __repr__(self) -> str:
        return f"LocalSigner(kid={self._kid!r}, alg={self.alg!r})"  # never the key


class KeyRing:
    """Ordered, non-empty: the first key signs; every key verifies (like MultiFernet)."""

    __slots__ = ("_keyset", "_signers")

    def __init__(self, signers: Iterable[LocalSigner]) -> None:
        self._signers = tuple(signers)
        if not self._signers:
            raise KeyFormatError("a key ring needs at least one key")
        self._keyset = KeySet(s.public for s in self._signers)

    @property
    def signer(self) -> LocalSigner:
        return self._signers[0]

    @property
    def keyset(self) -> KeySet:
        return self._keyset

    def key_for(self, kid: str) -> VerificationKey | None:
        return self._keyset.key_for(kid)
