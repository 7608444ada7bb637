"""How long state is kept: revocations outlive every token they could still apply to."""

from __future__ import annotations

from broker.capability.lifetime import MAX_TOKEN_TTL, REVOCATION_GRACE


def token_revocation_expiry(exp: int) -> int:
    return exp + REVOCATION_GRACE


def task_revocation_expiry(now: int) -> int:
    """A task revoked now may hold tokens issued up to now, valid for the global cap."""
    return now + MAX_TOKEN_TTL + REVOCATION_GRACE


def agent_cutoff_expiry(cutoff: int) -> int:
    return cutoff + MAX_TOKEN_TTL + REVOCATION_GRACE


def task_record_expiry(last_exp: int) -> int:
    return last_exp + REVOCATION_GRACE
