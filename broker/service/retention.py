"""How long state is kept: revocations outlive every token they could still apply to."""

from __future__ import annotations

from broker.policy.model import GLOBAL_MAX_TTL

# A verifier accepts a token up to its leeway (at most 60 s) after ``exp``; keep each
# revocation a little longer than that.
REVOCATION_GRACE = 120


def token_revocation_expiry(exp: int) -> int:
    return exp + REVOCATION_GRACE


def task_revocation_expiry(now: int) -> int:
    """A task revoked now may hold tokens issued up to now, valid for the global cap."""
    return now + GLOBAL_MAX_TTL + REVOCATION_GRACE


def agent_cutoff_expiry(cutoff: int) -> int:
    return cutoff + GLOBAL_MAX_TTL + REVOCATION_GRACE


def task_record_expiry(last_exp: int) -> int:
    return last_exp + REVOCATION_GRACE
