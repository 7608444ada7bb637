"""The embedded default's in-process signing backend: sign, verify, rotate."""

from __future__ import annotations

import asyncio
import re

import pytest

from broker.backends.local_signer import LocalSigningBackend
from broker.errors import TokenRejected
from broker.service.ports import SigningBackend
from broker.token.algorithms import Algorithm
from broker.token.codec import parse_compact
from broker.token.keys import LocalSigner
from broker.token.verify import verify_token
from tests.helpers import AUDIENCE, ISSUER, NOW, claims

ALGS: list[Algorithm] = ["EdDSA", "ES256"]


def verify(token: str, backend: LocalSigningBackend) -> None:
    keys = asyncio.run(backend.keyset())
    assert verify_token(token, keys, issuer=ISSUER, audience=AUDIENCE, now=NOW) == claims()


@pytest.mark.parametrize("alg", ALGS)
def test_sign_verifies_against_keyset(alg: Algorithm) -> None:
    backend = LocalSigningBackend.generate(alg)
    token = asyncio.run(backend.sign(claims()))
    parsed = parse_compact(token)
    assert (parsed.alg, parsed.kid) == (alg, backend.kid)
    assert re.fullmatch(r"local-[0-9a-f]{8}-v1", backend.kid)
    assert backend.alg == alg
    verify(token, backend)


@pytest.mark.parametrize("alg", ALGS)
def test_rotate_keeps_old_tokens_verifying_and_signs_with_the_new_kid(alg: Algorithm) -> None:
    backend = LocalSigningBackend.generate(alg)
    old_kid = backend.kid
    old = asyncio.run(backend.sign(claims()))

    new_kid = asyncio.run(backend.rotate())

    assert new_kid == old_kid.removesuffix("-v1") + "-v2"
    assert backend.kid == new_kid
    new = asyncio.run(backend.sign(claims()))
    assert parse_compact(new).kid == new_kid
    assert {k.kid for k in asyncio.run(backend.keyset())} == {old_kid, new_kid}
    verify(old, backend)
    verify(new, backend)
    assert asyncio.run(backend.rotate()).endswith("-v3")


def test_new_token_is_signed_by_the_new_key_not_the_old() -> None:
    """The kid in the header is the key that signed: v2's token fails under v1's key alone."""
    backend = LocalSigningBackend.generate(name="dev")
    v1_only = asyncio.run(backend.keyset())
    asyncio.run(backend.rotate())
    token = asyncio.run(backend.sign(claims()))
    with pytest.raises(TokenRejected) as e:
        verify_token(token, v1_only, issuer=ISSUER, audience=AUDIENCE, now=NOW)
    assert e.value.code == "unknown_key"


def test_check_passes_and_close_is_harmless() -> None:
    backend: SigningBackend = LocalSigningBackend.generate("ES256")
    asyncio.run(backend.check())
    asyncio.run(backend.aclose())


def test_generate_with_a_name() -> None:
    backend = LocalSigningBackend.generate(name="dev-key")
    assert backend.kid == "dev-key-v1"
    assert "dev-key-v1" in repr(backend)


@pytest.mark.parametrize("name", ["-x", "a.b", "a/b", "x" * 49, "a b"])
def test_key_name_outside_the_grammar_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="key name"):
        LocalSigningBackend.generate(name=name)


def test_constructor_refuses_inconsistent_versions() -> None:
    with pytest.raises(ValueError, match="key name"):
        LocalSigningBackend("", [LocalSigner.generate("EdDSA", "k-v1")])
    with pytest.raises(ValueError, match="at least one"):
        LocalSigningBackend("k", [])
    with pytest.raises(ValueError, match="same algorithm"):
        LocalSigningBackend("k", [LocalSigner.generate("EdDSA", "k-v1"), LocalSigner.generate("ES256", "k-v2")])
    with pytest.raises(ValueError, match="in order"):
        LocalSigningBackend("k", [LocalSigner.generate("EdDSA", "k-v2")])
    two = [LocalSigner.generate("EdDSA", "k-v1"), LocalSigner.generate("EdDSA", "k-v2")]
    assert LocalSigningBackend("k", two).kid == "k-v2"


def test_an_ed25519_signer_signs_with_libsodium_the_very_bytes_openssl_gives() -> None:
    """Ed25519 is deterministic: the libsodium form of the key must give OpenSSL's bytes."""
    from broker.token.algorithms import sign, verify_signature
    from broker.token.keys import LocalSigner

    signer = LocalSigner.generate("EdDSA", "k1")
    for message in (b"", b"header.payload", bytes(range(256)) * 4):
        via_sodium = signer.sign(message)
        assert via_sodium == sign(signer._key, message)  # OpenSSL, through cryptography
        assert verify_signature(signer.public.key, message, via_sodium)
