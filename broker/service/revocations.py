"""Is this token revoked? Answered without a Redis round trip when the broker has a local
revocation set (``broker.verify.RevocationFeed``, fed by the revocations every replica
announces), else from the state store.

A process's own revocations apply in it at once, before their announcement comes back
through Redis (``OwnRevocations``): a caller who revokes and then introspects on the same
replica never sees the token active. The feed fails closed: while it cannot vouch for its
set (down, or more than a second behind) the answer is ``BackendUnavailable``, a 503.
"""

from __future__ import annotations

from broker.errors import BackendUnavailable
from broker.service.broker import Broker
from broker.token.claims import Claims


async def is_revoked(broker: Broker, claims: Claims) -> bool:
    """The token, its task, or its agent or any delegator's kill switch."""
    if broker.own_revocations.revokes(claims):
        return True
    if broker.revocations is None:
        state = await broker.state.revocation_state(claims.jti, claims.task, claims.agent, claims.delegators)
        return state.revokes(claims.iat)
    try:
        return broker.revocations.is_revoked(claims)
    except Exception as e:  # noqa: BLE001 -- a set that cannot vouch for itself is a 503, never "not revoked"
        raise BackendUnavailable(f"revocation feed: {type(e).__name__}") from None
