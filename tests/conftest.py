from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from broker.token import KeyRing, LocalSigner


@pytest.fixture(scope="session")
def ed_signer() -> LocalSigner:
    return LocalSigner(ed25519.Ed25519PrivateKey.generate(), "ed-1")


@pytest.fixture(scope="session")
def es_signer() -> LocalSigner:
    return LocalSigner(ec.generate_private_key(ec.SECP256R1()), "es-1")


@pytest.fixture(scope="session")
def ring(ed_signer: LocalSigner, es_signer: LocalSigner) -> KeyRing:
    """EdDSA key first (it signs), ES256 second (it verifies too)."""
    return KeyRing([ed_signer, es_signer])
