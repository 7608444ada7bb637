"""Capability tokens: claims, the strict JWS profile, keys, mint and verify. Pure."""

from broker.token.claims import Actor, Claims
from broker.token.codec import MAX_TOKEN_BYTES, TYP
from broker.token.keys import KeyLookup, KeyRing, KeySet, LocalSigner, Signer, VerificationKey, key_from_jwk
from broker.token.mint import issue_claims, mint, new_jti
from broker.token.verify import DEFAULT_LEEWAY, MAX_LEEWAY, verify_token

__all__ = [
    "Claims",
    "Actor",
    "mint",
    "issue_claims",
    "new_jti",
    "verify_token",
    "KeyRing",
    "KeySet",
    "KeyLookup",
    "LocalSigner",
    "Signer",
    "VerificationKey",
    "key_from_jwk",
    "TYP",
    "MAX_TOKEN_BYTES",
    "DEFAULT_LEEWAY",
    "MAX_LEEWAY",
]
