"""The gateway's token checks: one ``Verifier`` per route audience, sharing one
revocation source.

* ``revocation: redis://...``: one ``RevocationFeed`` on the broker's Redis, under the
  deployment's ``redis_prefix`` (revocations and key withdrawals applied within a
  second, no round trip per request, failing closed while it is down);
* ``revocation: introspection``: the broker's ``/v1/introspect`` with the gateway's
  service key, each token's answer remembered for at most ``INTROSPECTION_CACHE``
  seconds (a proof-bound request is always asked afresh: its proof is new each time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

from broker.verify import IntrospectionClient, RevocationFeed, Verifier

INTROSPECTION_CACHE: Final = 1.0
_MAX_CACHED: Final = 10_000


class CachedIntrospection(IntrospectionClient):
    """An ``IntrospectionClient`` whose proof-less answers are kept up to ``ttl`` seconds."""

    def __init__(
        self,
        url: str,
        credential: str,
        *,
        ttl: float = INTROSPECTION_CACHE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < ttl <= INTROSPECTION_CACHE:
            raise ValueError("an introspection answer is kept at most one second")
        super().__init__(url, credential)
        self._ttl, self._clock = ttl, clock
        self._answers: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def is_active(
        self, token: str, *, dpop: str | None = None, method: str | None = None, url: str | None = None
    ) -> bool:
        if dpop is not None:
            return super().is_active(token, dpop=dpop, method=method, url=url)
        now = self._clock()
        with self._lock:
            known = self._answers.get(token)
        if known is not None and now - known[0] < self._ttl:
            return known[1]
        active = super().is_active(token)
        with self._lock:
            if len(self._answers) >= _MAX_CACHED:
                self._answers = {t: a for t, a in self._answers.items() if now - a[0] < self._ttl}
            self._answers[token] = (now, active)
        return active


class Verifiers:
    """The verifiers of a gateway, by audience, and the revocation source they share."""

    def __init__(
        self,
        *,
        issuer: str,
        jwks_url: str,
        audiences: tuple[str, ...],
        revocation: str,
        redis_prefix: str,
        service_key: str | None,
    ) -> None:
        self.feed: RevocationFeed | None = None
        introspection: CachedIntrospection | None = None
        if revocation == "introspection":
            if not service_key:
                raise ValueError("introspection needs the gateway's service key")
            introspection = CachedIntrospection(f"{issuer}/v1/introspect", service_key)
        else:
            self.feed = RevocationFeed(revocation, prefix=redis_prefix)
        self.by_audience = {
            aud: Verifier(
                issuer=issuer,
                audience=aud,
                jwks_url=jwks_url,
                revocation=self.feed,
                introspection=introspection,
                jwks_cooldown=1.0,
            )
            for aud in audiences
        }
        self.introspection = introspection is not None

    def wait_ready(self, timeout: float) -> bool:
        return self.feed.wait_ready(timeout) if self.feed is not None else True

    @property
    def live(self) -> bool:
        """Is the revocation source answering (the feed loaded and confirmed recently)?"""
        return self.feed.ready if self.feed is not None else True

    def close(self) -> None:
        if self.feed is not None:
            self.feed.close()
