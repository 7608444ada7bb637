"""``Verifier``: what internal services use to check a capability token (SPEC 8)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from broker.errors import TokenRejected
from broker.token.keys import KeyLookup, KeySet
from broker.token.verify import DEFAULT_LEEWAY, DEFAULT_MAX_TTL, check_leeway, verify_token
from broker.verify.grant import Grant
from broker.verify.introspection import IntrospectionClient
from broker.verify.jwks import Fetch, RemoteJwks
from broker.verify.redis_revocation import URL_SCHEMES, RedisRevocation
from broker.verify.revocation import RevocationCheck


class Verifier:
    """Verify tokens for one audience from one issuer.

    Give exactly one of ``jwks_url`` (fetched, cached, refreshed) or ``jwks`` (a JWKS
    document or a ``KeySet``). With ``revocation`` (a ``RevocationCheck``, or the broker's
    Redis URL, read by ``RedisRevocation``), every verification also asks it; if it cannot
    answer, the token is rejected (``revocation_unavailable``). With ``introspection`` (an
    ``IntrospectionClient``), every verification also asks the broker whether the token
    is active, with the same fail-closed rule.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str | None = None,
        jwks: dict[str, Any] | KeySet | None = None,
        revocation: RevocationCheck | str | None = None,
        introspection: IntrospectionClient | None = None,
        leeway: int = DEFAULT_LEEWAY,
        max_ttl: int = DEFAULT_MAX_TTL,
        clock: Callable[[], float] = time.time,
        fetch: Fetch | None = None,
        jwks_cooldown: float = 30.0,
        jwks_max_stale: float = 3600.0,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("issuer and audience are required")
        if (jwks_url is None) == (jwks is None):
            raise ValueError("give exactly one of jwks_url or jwks")
        if isinstance(revocation, str):
            if not revocation.startswith(URL_SCHEMES):
                raise TypeError("revocation must be a redis://, rediss:// or unix:// URL, or an object with is_revoked")
            revocation = RedisRevocation(revocation)
        if revocation is not None and not callable(getattr(revocation, "is_revoked", None)):
            raise TypeError("revocation must be an object with is_revoked(claims), such as StaticRevocationList")
        if type(max_ttl) is not int or not 0 < max_ttl <= DEFAULT_MAX_TTL:
            raise ValueError(f"max_ttl must be 1..{DEFAULT_MAX_TTL} seconds: the global cap is never raised")
        self.issuer = issuer
        self.audience = audience
        self.leeway = check_leeway(leeway)
        self.max_ttl = max_ttl
        self._clock = clock
        self._revocation = revocation
        if introspection is not None and not callable(getattr(introspection, "is_active", None)):
            raise TypeError("introspection must be an IntrospectionClient (or have is_active(token))")
        self._introspection = introspection
        self._keys: KeyLookup
        if jwks_url is not None:
            self._keys = RemoteJwks(
                jwks_url,
                fetch=fetch,
                cooldown=jwks_cooldown,
                refresh=min(300.0, jwks_max_stale),
                max_stale=jwks_max_stale,
            )
        elif isinstance(jwks, KeySet):
            self._keys = jwks
        else:
            self._keys = KeySet.from_jwks(jwks)

    def verify(self, token: object, *, now: int | None = None) -> Grant:
        """The grant of a valid, unrevoked token; otherwise ``TokenRejected`` with a code."""
        at = int(self._clock()) if now is None else now
        claims = verify_token(
            token,
            self._keys,
            issuer=self.issuer,
            audience=self.audience,
            now=at,
            leeway=self.leeway,
            max_ttl=self.max_ttl,
        )
        if claims.cnf_jkt is not None:
            # A key-bound token is only as good as the proof that comes with it. This
            # verifier does not check DPoP proofs yet, so it refuses such tokens outright
            # rather than accepting a stolen bearer copy.
            raise TokenRejected("proof_required", "token is DPoP-bound")
        if self._revocation is not None:
            try:
                revoked = self._revocation.is_revoked(claims)
            except Exception as e:  # noqa: BLE001 -- any failure of the check fails closed
                raise TokenRejected("revocation_unavailable", type(e).__name__) from None
            if revoked:
                raise TokenRejected("revoked")
        if self._introspection is not None:
            try:
                active = self._introspection.is_active(str(token))
            except Exception as e:  # noqa: BLE001 -- any failure of the check fails closed
                raise TokenRejected("revocation_unavailable", type(e).__name__) from None
            if not active:
                raise TokenRejected("revoked", "introspection: not active")
        return Grant(claims)

    def require(self, token: object, *, kind: str, resource: str, action: str, now: int | None = None) -> Grant:
        """Verify, then insist the token allows ``action`` on ``resource``."""
        grant = self.verify(token, now=now)
        if not grant.allows(kind, resource, action):
            raise TokenRejected("not_allowed", f"{action} on {kind!r}")
        return grant
