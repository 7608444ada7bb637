"""``RedisRevocation``: a verifier's revocation check against the broker's Redis.

Synchronous, one ``MGET`` per check (token id, task, and the kill-switch cut-off of the
token's agent and of every agent up its delegation chain), with
the same key names as the broker's ``RedisState``. Built with explicit socket timeouts and
no retries: if Redis is down or slow the check raises within about ``timeout`` seconds,
and the ``Verifier`` rejects the token (``revocation_unavailable``). It never skips.
"""

from __future__ import annotations

from broker.token.claims import Claims
from broker.token.revoked import revoked
from broker.verify import redis_keys as keys
from broker.verify.redis_keys import URL_SCHEMES
from broker.verify.redis_options import sync_redis


class RedisRevocation:
    """Reads the revocations the broker writes, for one verifying service."""

    #: every check is a Redis round trip: async callers verify off the event loop
    waits_on_network = True

    def __init__(self, url: str, *, issuer: str | None = None, prefix: str | None = None, timeout: float = 1.0) -> None:
        if not url.startswith(URL_SCHEMES):
            raise ValueError(f"a Redis URL starts with one of {', '.join(URL_SCHEMES)}")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        # the revocation keys carry the state tag on a cluster (``redis_keys``): one MGET, one slot
        self._prefix = keys.state_prefix(keys.deployment_prefix(issuer, prefix), cluster=keys.on_cluster(url))
        self._redis = sync_redis(url, timeout)

    def is_revoked(self, claims: Claims) -> bool:
        """True if the token, its task, or its agent or any delegator up to a cut-off is
        revoked. Raises (any redis or OS error) when the answer cannot be read."""
        names = keys.revocation(self._prefix, claims.jti, claims.task, claims.agent, claims.delegators)
        token, task, any_agents_task, *cutoffs = self._redis.mget(names)
        return revoked(
            claims.iat,
            token=token is not None,
            task=task is not None or any_agents_task is not None,
            cutoffs=(None if cutoff is None else int(cutoff) for cutoff in cutoffs),
        )

    def close(self) -> None:
        self._redis.close()
