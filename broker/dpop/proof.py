"""Check one DPoP proof (RFC 9449 section 4.3) against the request it came with. Pure:
no clock (``now`` is injected), no I/O, no replay state.

The profile, stricter than the RFC wherever the RFC leaves room:

* at most 4 KiB, characters ``[A-Za-z0-9_.-]`` checked before anything is decoded,
  exactly three segments, strict JSON (duplicate keys refused);
* header exactly ``{typ, alg, jwk}``: ``typ`` is ``dpop+jwt``, ``alg`` is EdDSA or ES256
  and equal to the algorithm of the ``jwk`` key (the algorithm comes from the key);
  ``kid``, ``jku``, ``x5u``, ``x5c``, ``crit`` and every other field are refused;
* the signature verifies with the ``jwk`` key before a claim is read. ES256 proofs may
  carry a high-S signature (other client libraries make them half of the time); that is
  harmless here because replay is keyed on ``(jkt, jti)``, never on the proof's bytes;
* claims exactly ``jti``, ``htm``, ``htu``, ``iat`` and, when an access token is
  presented, ``ath``. ``nonce`` is refused: we never send a ``DPoP-Nonce`` challenge, so a
  proof carrying one answers some other server. Any other claim is refused too: a claim
  we do not understand may be a restriction we would silently drop;
* ``jti`` 16 to 128 URL-unreserved characters; ``htm`` equal to the method, case and
  all; ``htu`` equal to the request URL once the query and fragment are cut from both
  (no other normalisation: a client signs exactly the URL it sends); ``iat`` an integer
  with ``now - max_age <= iat <= now + leeway``;
* ``ath`` equal to base64url(SHA-256(access token)) when a token is presented, absent
  when none is.

Replay is the caller's part: keep ``CheckedProof.replay_key`` until
``CheckedProof.expires_at`` and refuse a key seen before (``replay.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any, Final

from broker.dpop.jwk import JwkError, ProofKey, proof_key
from broker.errors import excerpt, quoted
from broker.token.algorithms import ALGORITHMS, verify_signature
from broker.token.b64 import Base64Error, b64url_decode, b64url_encode
from broker.token.strictjson import StrictJsonError, loads_object

TYP: Final = "dpop+jwt"
MAX_PROOF_BYTES: Final = 4096
MAX_HEADER_CHARS: Final = 1024
HEADER_FIELDS: Final = frozenset({"typ", "alg", "jwk"})
REQUIRED_CLAIMS: Final = frozenset({"jti", "htm", "htu", "iat"})
DEFAULT_MAX_AGE: Final = 60
MAX_MAX_AGE: Final = 300
DEFAULT_LEEWAY: Final = 5
MAX_LEEWAY: Final = 60
_PROOF_CHARS = re.compile(r"[A-Za-z0-9_.-]+")
_JTI = re.compile(r"[A-Za-z0-9._~-]{16,128}")


class ProofError(ValueError):
    """A DPoP proof is refused; ``reason`` says why (for logs, never for the caller)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CheckedProof:
    """A proof that passed every check but replay."""

    jkt: str  # RFC 7638 thumbprint of the key that signed the proof
    jti: str
    iat: int
    expires_at: int  # the last second at which this proof could still be accepted

    @property
    def replay_key(self) -> str:
        """Unique per key and proof id: the thumbprint has a fixed length and no ``:``."""
        return f"{self.jkt}:{self.jti}"


def htu_of(url: str) -> str:
    """``url`` without its fragment and query (RFC 9449 section 4.3, check 9)."""
    return url.split("#", 1)[0].split("?", 1)[0]


def ath_of(access_token: str) -> str:
    """The ``ath`` claim for an access token: base64url(SHA-256(its ASCII bytes))."""
    try:
        raw = access_token.encode("ascii")
    except UnicodeEncodeError:
        raise ProofError("the access token is not ASCII") from None
    return b64url_encode(hashlib.sha256(raw).digest())


def check_proof(
    proof: object,
    *,
    method: str,
    url: str,
    now: int,
    access_token: str | None,
    max_age: int = DEFAULT_MAX_AGE,
    leeway: int = DEFAULT_LEEWAY,
) -> CheckedProof:
    """The checked proof, or ``ProofError``. ``method`` and ``url`` are the request the
    proof came with; ``access_token`` the token presented with it (``None`` when none)."""
    if type(max_age) is not int or not 0 < max_age <= MAX_MAX_AGE:
        raise ValueError(f"max_age must be an integer from 1 to {MAX_MAX_AGE} seconds")
    if type(leeway) is not int or not 0 <= leeway <= MAX_LEEWAY:
        raise ValueError(f"leeway must be an integer from 0 to {MAX_LEEWAY} seconds")
    if not method or not htu_of(url):
        raise ValueError("the request's method and URL are required")
    header, payload, signing_input, signature = _split(proof)
    key = _header_key(header)
    if not verify_signature(key.key, signing_input, signature, allow_high_s=True):
        raise ProofError("signature does not verify with the proof's jwk")
    claims = _decode(payload, "payload")
    jti, iat = _check_claims(claims, method=method, url=url, access_token=access_token)
    if iat < now - max_age:
        raise ProofError(f"iat {iat} is older than {max_age}s")
    if iat > now + leeway:
        raise ProofError(f"iat {iat} is in the future")
    return CheckedProof(jkt=key.jkt, jti=jti, iat=iat, expires_at=iat + max_age + leeway)


def _split(proof: object) -> tuple[dict[str, Any], str, bytes, bytes]:
    if not isinstance(proof, str):
        raise ProofError("proof is not a string")
    if len(proof) > MAX_PROOF_BYTES:
        raise ProofError(f"proof over {MAX_PROOF_BYTES} bytes")
    if not _PROOF_CHARS.fullmatch(proof):
        raise ProofError("characters outside [A-Za-z0-9_.-]")
    parts = proof.split(".")
    if len(parts) != 3:
        raise ProofError(f"{len(parts)} segments, not 3")
    header_b64, payload_b64, signature_b64 = parts
    if len(header_b64) > MAX_HEADER_CHARS:
        raise ProofError("header too large")
    header = _decode(header_b64, "header")
    try:
        signature = b64url_decode(signature_b64)
    except Base64Error as e:
        raise ProofError(f"signature: {e}") from None
    return header, payload_b64, f"{header_b64}.{payload_b64}".encode("ascii"), signature


def _decode(segment: str, what: str) -> dict[str, Any]:
    try:
        return loads_object(b64url_decode(segment))
    except (Base64Error, StrictJsonError) as e:
        raise ProofError(f"{what}: {e}") from None


def _header_key(header: dict[str, Any]) -> ProofKey:
    extra = set(header) - HEADER_FIELDS
    if extra:
        raise ProofError(f"header fields outside the profile: {quoted(sorted(map(str, extra)))}")
    if header.get("typ") != TYP:
        raise ProofError(f"typ {excerpt(header.get('typ'))} is not {TYP}")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise ProofError(f"alg {excerpt(alg)} is not accepted")
    if "jwk" not in header:
        raise ProofError("jwk missing")
    try:
        key = proof_key(header["jwk"])
    except JwkError as e:
        raise ProofError(f"jwk: {e}") from None
    if key.alg != alg:
        raise ProofError(f"alg {alg} does not fit the jwk ({key.alg})")
    return key


def _check_claims(claims: dict[str, Any], *, method: str, url: str, access_token: str | None) -> tuple[str, int]:
    missing = REQUIRED_CLAIMS - set(claims)
    if missing:
        raise ProofError(f"missing claim(s) {sorted(missing)}")
    if "nonce" in claims:
        raise ProofError("nonce present, but this server never asks for one")
    unknown = set(claims) - REQUIRED_CLAIMS - {"ath"}
    if unknown:
        raise ProofError(f"unknown claim(s) {sorted(unknown)}")
    jti, htm, htu, iat = claims["jti"], claims["htm"], claims["htu"], claims["iat"]
    if not isinstance(jti, str) or not _JTI.fullmatch(jti):
        raise ProofError("jti must be 16 to 128 URL-safe characters")
    if type(iat) is not int:  # a bool is not an int here
        raise ProofError("iat must be an integer")
    if not isinstance(htm, str) or htm != method:
        raise ProofError("htm is not the request's method")
    if not isinstance(htu, str) or htu_of(htu) != htu_of(url):
        raise ProofError("htu is not the request's URL")
    if access_token is None:
        if "ath" in claims:
            raise ProofError("ath present, but no access token came with the proof")
    else:
        ath = claims.get("ath")
        if not isinstance(ath, str):
            raise ProofError("ath missing or not a string")
        if not hmac.compare_digest(ath.encode("ascii", "replace"), ath_of(access_token).encode("ascii")):
            raise ProofError("ath is not the hash of the access token presented")
    return jti, iat
