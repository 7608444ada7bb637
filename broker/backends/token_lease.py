"""When to renew the broker's own Vault token: a pure core (``now`` in, decisions out).

A lease is what Vault last said of the token (``lookup-self`` or ``renew-self``): seconds
left and whether it may be renewed, as seen at a moment. A renewable token with a TTL is
renewed half way through what was left (a periodic token from ``infra/vault/setup.sh``
then never expires while the broker runs); a token with no TTL (``ttl 0``) never needs it;
a token that cannot be renewed is used until it expires and the operator warned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenLease:
    ttl: float  # seconds left at ``seen_at``; 0: the token does not expire
    renewable: bool
    seen_at: float

    @property
    def expires_at(self) -> float | None:
        return self.seen_at + self.ttl if self.ttl > 0 else None

    def renew_due(self, now: float) -> bool:
        return self.renewable and self.ttl > 0 and now >= self.seen_at + self.ttl / 2

    def login_due(self, now: float) -> bool:
        """For a broker that logs in by itself: a token it cannot renew is replaced half way."""
        return not self.renewable and self.ttl > 0 and now >= self.seen_at + self.ttl / 2


def lease_from_lookup(response: object, now: float) -> TokenLease:
    """From ``auth/token/lookup-self``'s answer (``data.ttl``, ``data.renewable``)."""
    data = response.get("data") if isinstance(response, Mapping) else None
    return _lease(data, "ttl", now)


def lease_from_renewal(response: object, now: float) -> TokenLease:
    """From ``auth/token/renew-self``'s answer (``auth.lease_duration``, ``auth.renewable``)."""
    auth = response.get("auth") if isinstance(response, Mapping) else None
    return _lease(auth, "lease_duration", now)


def _lease(part: object, ttl_key: str, now: float) -> TokenLease:
    if not isinstance(part, Mapping):
        raise ValueError("Vault's answer about the token is malformed")
    ttl, renewable = part.get(ttl_key), part.get("renewable")
    if type(ttl) is not int or ttl < 0 or not isinstance(renewable, bool):
        raise ValueError("Vault's answer about the token is malformed")
    return TokenLease(float(ttl), renewable, now)
