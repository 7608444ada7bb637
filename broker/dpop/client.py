"""The agent's side: a DPoP key, its thumbprint for the mint request, and proofs.

    key = DpopKey.generate()                 # EdDSA; or DpopKey.generate("ES256")
    key.jkt                                   # what the broker binds the token to (cnf.jkt)
    proof = key.proof("GET", "https://git.internal/repos/acme/widgets", now=int(time.time()),
                      access_token=token)
    # send: Authorization: DPoP <token>, DPoP: <proof>

``sign_proof`` signs any header and claims as given; tests use it to craft bad proofs.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from broker.dpop.jwk import public_jwk, thumbprint
from broker.dpop.proof import TYP, ath_of, htu_of
from broker.token.algorithms import Algorithm, PrivateKey, algorithm_of, sign
from broker.token.b64 import b64url_encode


def new_proof_jti() -> str:
    """128 bits from the OS CSPRNG, base64url (22 characters)."""
    return b64url_encode(secrets.token_bytes(16))


def sign_proof(header: Mapping[str, Any], claims: Mapping[str, Any], key: PrivateKey) -> str:
    """A compact JWS of exactly this header and these claims, signed with ``key``."""
    h = b64url_encode(json.dumps(dict(header), separators=(",", ":")).encode("utf-8"))
    p = b64url_encode(json.dumps(dict(claims), separators=(",", ":")).encode("utf-8"))
    signing_input = f"{h}.{p}".encode("ascii")
    return f"{h}.{p}.{b64url_encode(sign(key, signing_input))}"


class DpopKey:
    """A private key an agent holds for the life of its tokens; never leaves the agent."""

    __slots__ = ("_alg", "_jkt", "_jwk", "_key")

    def __init__(self, key: PrivateKey) -> None:
        self._alg = algorithm_of(key)  # Ed25519 or P-256 only
        self._key = key
        self._jwk = public_jwk(key.public_key())
        self._jkt = thumbprint(self._jwk)

    @classmethod
    def generate(cls, alg: Algorithm = "EdDSA") -> DpopKey:
        if alg == "EdDSA":
            return cls(ed25519.Ed25519PrivateKey.generate())
        if alg == "ES256":
            return cls(ec.generate_private_key(ec.SECP256R1()))
        raise ValueError("alg must be EdDSA or ES256")

    @property
    def alg(self) -> Algorithm:
        return self._alg

    @property
    def jkt(self) -> str:
        """The RFC 7638 thumbprint of the public key: the token's ``cnf.jkt``."""
        return self._jkt

    @property
    def public_jwk(self) -> dict[str, str]:
        return dict(self._jwk)

    @property
    def private_key(self) -> PrivateKey:
        return self._key

    def proof(self, method: str, url: str, *, now: int, access_token: str | None = None, jti: str | None = None) -> str:
        """A proof for one request: ``htu`` is ``url`` without query and fragment; ``ath``
        binds the proof to ``access_token`` when one is sent with it."""
        claims: dict[str, Any] = {"jti": jti or new_proof_jti(), "htm": method, "htu": htu_of(url), "iat": now}
        if access_token is not None:
            claims["ath"] = ath_of(access_token)
        return sign_proof({"typ": TYP, "alg": self._alg, "jwk": self._jwk}, claims, self._key)

    def __repr__(self) -> str:
        return f"DpopKey(alg={self._alg!r}, jkt={self._jkt!r})"  # never the key
