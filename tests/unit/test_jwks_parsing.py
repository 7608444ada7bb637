"""JWKS import is strict: a key set we cannot fully trust is refused, not half-used."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from broker.token import KeyRing, KeySet
from broker.token.keys import KeyFormatError, key_from_jwk


def jwks(ring: KeyRing) -> dict[str, Any]:
    return copy.deepcopy(ring.keyset.to_jwks())


def test_export_then_import_round_trips(ring: KeyRing) -> None:
    keys = KeySet.from_jwks(jwks(ring))
    assert [k.kid for k in keys] == ["ed-1", "es-1"]
    assert [k.alg for k in keys] == ["EdDSA", "ES256"]
    assert keys.to_jwks() == ring.keyset.to_jwks()


@pytest.mark.parametrize(
    ("index", "change"),
    [
        (0, {"x": "AAAA"}),  # wrong length
        (0, {"x": "not base64!"}),
        (0, {"x": None}),
        (0, {"alg": "ES256"}),  # alg does not fit the key
        (1, {"alg": "EdDSA"}),
        (0, {"use": "enc"}),
        (0, {"kid": "../../etc/passwd"}),
        (0, {"kid": 7}),
        (1, {"y": "AQ" + "A" * 41}),  # a point not on P-256
        (0, {"d": "AAAA"}),  # private part
    ],
)
def test_malformed_keys_are_refused(ring: KeyRing, index: int, change: dict[str, Any]) -> None:
    doc = jwks(ring)
    doc["keys"][index].update(change)
    with pytest.raises(KeyFormatError):
        KeySet.from_jwks(doc)


@pytest.mark.parametrize("doc", [None, [], {"keys": {}}, {"keys": ["x"]}, {"nokeys": []}])
def test_malformed_documents_are_refused(doc: object) -> None:
    with pytest.raises(KeyFormatError):
        KeySet.from_jwks(doc)


def test_too_many_keys_are_refused(ring: KeyRing) -> None:
    doc = jwks(ring)
    doc["keys"] = [dict(doc["keys"][0], kid=f"k{i}") for i in range(65)]
    with pytest.raises(KeyFormatError, match="too many"):
        KeySet.from_jwks(doc)


def test_duplicate_kid_is_refused(ring: KeyRing) -> None:
    doc = jwks(ring)
    doc["keys"][1]["kid"] = "ed-1"
    with pytest.raises(KeyFormatError, match="twice"):
        KeySet.from_jwks(doc)


def test_rsa_and_other_types_are_skipped_not_trusted() -> None:
    assert key_from_jwk({"kty": "RSA", "n": "x", "e": "AQAB", "kid": "r"}) is None
    assert key_from_jwk({"kty": "OKP", "crv": "X25519", "x": "x", "kid": "x"}) is None
