"""DPoP proofs (RFC 9449) sent to the broker itself: at mint, exchange and introspection.

A proof is checked against the broker's own URL for the endpoint (the issuer is the
broker's external base URL), then its ``(jkt, jti)`` is claimed once in the state store,
so a proof cannot be replayed at any replica while it could still be accepted.
"""

from __future__ import annotations

from broker.dpop.proof import ProofError, check_proof
from broker.errors import InvalidDpopProof
from broker.service.broker import Broker


def endpoint_url(broker: Broker, path: str) -> str:
    return broker.issuer.rstrip("/") + path


async def proof_key(broker: Broker, proof: str, *, method: str, url: str, access_token: str | None) -> str:
    """The thumbprint (``jkt``) of the key that signed a valid, unreplayed ``proof``;
    ``InvalidDpopProof`` otherwise. The leeway for a proof's ``iat`` is the clock skew."""
    try:
        checked = check_proof(
            proof,
            method=method,
            url=url,
            now=broker.now(),
            access_token=access_token,
            leeway=broker.clock_skew,
        )
    except ProofError as e:
        raise InvalidDpopProof(f"DPoP proof: {e.reason}") from None
    except ValueError:  # the request the proof is checked against is itself unusable (htu "?x")
        raise InvalidDpopProof("DPoP proof: no usable method or URL to check it against") from None
    if not await broker.state.claim_once(f"dpop:{checked.replay_key}", checked.expires_at + 1):
        raise InvalidDpopProof("DPoP proof: replayed")
    return checked.jkt
