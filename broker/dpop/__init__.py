"""DPoP (RFC 9449): proof-of-possession proofs, checked purely (no clock, no I/O).

jwk.py      the proof's public key (EC P-256, OKP Ed25519) and RFC 7638 thumbprints
proof.py    check_proof: one proof against the request it came with
replay.py   the replay cache contract, and a bounded in-memory cache
client.py   the agent's side: a key, its thumbprint, proofs
"""

from broker.dpop.client import DpopKey, new_proof_jti, sign_proof
from broker.dpop.jwk import JwkError, ProofKey, proof_key, public_jwk, thumbprint
from broker.dpop.proof import (
    DEFAULT_LEEWAY,
    DEFAULT_MAX_AGE,
    MAX_MAX_AGE,
    MAX_PROOF_BYTES,
    TYP,
    CheckedProof,
    ProofError,
    ath_of,
    check_proof,
    htu_of,
)
from broker.dpop.replay import MemoryReplayCache, ProofReplayCache

__all__ = [
    "check_proof",
    "CheckedProof",
    "ProofError",
    "ath_of",
    "htu_of",
    "TYP",
    "MAX_PROOF_BYTES",
    "DEFAULT_MAX_AGE",
    "MAX_MAX_AGE",
    "DEFAULT_LEEWAY",
    "thumbprint",
    "proof_key",
    "public_jwk",
    "ProofKey",
    "JwkError",
    "ProofReplayCache",
    "MemoryReplayCache",
    "DpopKey",
    "sign_proof",
    "new_proof_jti",
]
