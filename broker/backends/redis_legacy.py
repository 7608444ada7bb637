"""Is there a deployment from before ``redis_prefix`` in this Redis?

Before ``redis_prefix``, every deployment wrote under ``capbroker:`` (the audit stream
``capbroker:audit``, the revocations ``capbroker:rev:*``). An upgraded broker whose prefix is
derived from its issuer would start on empty keys: every revocation, task record and
suspension of the old keys forgotten, and revoked tokens accepted again. ``broker serve``
therefore refuses to start when the derived prefix would leave such a deployment behind,
and says how to keep it (``redis_prefix: "capbroker:"``). See docs: SECURITY.md, upgrades.
"""

from __future__ import annotations

from typing import Final

from redis import Redis

from broker.verify.redis_keys import LEGACY_PREFIX, audit_head, audit_stream
from broker.verify.redis_options import sync_redis

#: keys every deployment before ``redis_prefix`` wrote (its audit chain, its session keys)
LEGACY_MARKERS: Final = (
    audit_stream(LEGACY_PREFIX),
    audit_head(audit_stream(LEGACY_PREFIX)),
    f"{LEGACY_PREFIX}endorsed-keys",
)


def legacy_keys_present(url: str, *, timeout: float) -> bool:
    """True if any key of a pre-``redis_prefix`` deployment is in this Redis database."""
    client: Redis = sync_redis(url, timeout)
    try:
        return int(client.exists(*LEGACY_MARKERS)) > 0
    finally:
        client.close()


def legacy_refusal(redis_prefix: str, key_prefix: str, legacy_present: bool) -> str | None:
    """Why ``broker serve`` must not start, or ``None``: the prefix is derived (not set) and
    differs from the legacy one while the legacy deployment's keys are there."""
    if redis_prefix or key_prefix == LEGACY_PREFIX or not legacy_present:
        return None
    return (
        f"this Redis holds a capbroker deployment from before redis_prefix (keys under {LEGACY_PREFIX!r}), "
        f"and this broker's prefix would be {key_prefix!r} (derived from its issuer): it would start on "
        'empty state and accept tokens revoked there. Set redis_prefix: "capbroker:" to keep that '
        "deployment's keys, or set redis_prefix explicitly to start a new one beside it."
    )
