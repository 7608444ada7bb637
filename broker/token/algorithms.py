"""The two signature algorithms a deployment may choose: EdDSA (Ed25519) and ES256.

ES256 signatures are the 64-byte JWS (P1363) form ``r || s``. Tokens we make always carry
the low-S form, and the token profile refuses high-S, so a signature has one spelling.

Ed25519 signatures are checked by libsodium (PyNaCl), which measured twice as fast as
OpenSSL's here (about 22,000 against 10,400 per second on one core) and is stricter: it
refuses a non-canonical S, small-order R or public keys, and non-canonical key encodings,
so no signature has a second spelling either. The Wycheproof vectors run against it
(``tests/security/test_wycheproof.py``). Keys stay ``cryptography`` objects everywhere.
"""

from __future__ import annotations

from typing import Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError, CryptoError

Algorithm = Literal["EdDSA", "ES256"]
ALGORITHMS: Final[frozenset[str]] = frozenset({"EdDSA", "ES256"})

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_HALF_ORDER: Final = P256_ORDER // 2


def algorithm_of(key: PublicKey | PrivateKey) -> Algorithm:
    """The one algorithm a key is used with: taken from the key, never from a token."""
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return "EdDSA"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError("only Ed25519 and ECDSA P-256 keys are supported")


def p1363_from_der(der: bytes) -> bytes:
    """DER ECDSA signature to JWS form, normalised to low-S."""
    r, s = decode_dss_signature(der)
    if s > _HALF_ORDER:
        s = P256_ORDER - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def sodium_secret(key: PrivateKey) -> bytes | None:
    """libsodium's 64-byte signing key for an Ed25519 key (seed and public key), else None.
    Signing with it gives the very bytes OpenSSL gives (Ed25519 is deterministic), in about
    60% of the time here."""
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    return bytes(crypto_sign_seed_keypair(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))[1])


def sign_with_sodium(secret: bytes, message: bytes) -> bytes:
    return bytes(crypto_sign(message, secret)[:64])


def sign(key: PrivateKey, message: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return p1363_from_der(key.sign(message, ec.ECDSA(hashes.SHA256())))
    raise ValueError("only Ed25519 and ECDSA P-256 keys are supported")


def verify_signature(key: PublicKey, message: bytes, signature: bytes, *, allow_high_s: bool = False) -> bool:
    """True only for a valid signature in its one accepted spelling.

    ``allow_high_s`` exists for running the raw primitive against test vectors; the token
    profile never sets it.
    """
    if isinstance(key, ed25519.Ed25519PublicKey):
        if len(signature) != 64:
            return False
        try:
            crypto_sign_open(signature + message, key.public_bytes(Encoding.Raw, PublicFormat.Raw))
        except (BadSignatureError, CryptoError, ValueError):
            return False
        return True
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        if len(signature) != 64:  # DER or any other length is refused outright
            return False
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        if not (0 < r < P256_ORDER and 0 < s < P256_ORDER):
            return False
        if s > _HALF_ORDER and not allow_high_s:
            return False
        try:
            key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True
    return False
