"""``Verifier``: what internal services use to check a capability token (README, "Verifying tokens in a service").

DPoP (RFC 9449). A token bound to a key (``cnf.jkt``) is accepted only with a proof
from that key for this request: no proof is ``proof_required``; a proof that is
malformed, stale, for another request, another token (``ath``) or another key, or seen
before, is ``bad_proof``. Checks run in this order: token (signature, claims), proof
(everything but replay), revocation, introspection, and last the replay claim of the
proof's ``(jkt, jti)``, kept until the proof could no longer pass the freshness check.
Claiming last means a request refused for any other reason never uses up its proof, and
only accepted proofs occupy the bounded cache. A proof sent with an unbound token is
ignored: that token is a bearer token by design, and the proof adds nothing to check.

Seen tokens. A gateway sees the same token on every call, so a verifier remembers the
tokens it accepted (at most ``cache_size``, the oldest forgotten first), by their exact
string: the claims and the key they verified under. A token seen before skips only
what cannot change for that string: parsing and the signature (issuer, audience and the
lifetime cap are this verifier's own and fixed). Everything that can change is checked
again on every call: the key is still in the key set (and is the same key), the time
window, the revocation source and introspection, and the DPoP proof of a bound token,
whose result is never remembered. Only accepted tokens are remembered; a token found
outside its time window or under a changed key is forgotten and verified afresh, so the
answer is always the one a fresh verification gives.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from broker.capability.lifetime import MAX_TOKEN_TTL
from broker.dpop import DEFAULT_MAX_AGE, MAX_MAX_AGE, MemoryReplayCache, ProofError, ProofReplayCache, check_proof
from broker.dpop.proof import CheckedProof
from broker.errors import TokenRejected
from broker.token.claims import Claims
from broker.token.keys import KeyLookup, KeySet
from broker.token.seen import SeenTokens
from broker.token.verify import DEFAULT_LEEWAY, check_claims, check_leeway, signed_claims_and_key
from broker.verify.grant import Grant
from broker.verify.introspection import IntrospectionClient
from broker.verify.jwks import Fetch, RemoteJwks
from broker.verify.redis_keys import URL_SCHEMES
from broker.verify.revocation import RevocationCheck, import_with_redis
from broker.verify.withdrawn import WithoutWithdrawn, withdrawn_check

if TYPE_CHECKING:
    from broker.verify.revocation_feed import RevocationFeed

DEFAULT_CACHE_SIZE: Final = 10_000
#: how long a verifier built with a Redis URL waits, when built, for its feed's first load
#: (it does not fail if Redis is not there yet: its checks fail closed until the feed is up)
FEED_START_WAIT: Final = 2.0


class Verifier:
    """Verify tokens for one audience from one issuer.

    Give exactly one of ``jwks_url`` (fetched, cached, refreshed) or ``jwks`` (a JWKS
    document or a ``KeySet``). With ``revocation`` (a ``RevocationCheck``), every
    verification also asks it; if it cannot answer, the token is rejected
    (``revocation_unavailable``). Given the broker's Redis URL, the verifier builds a
    ``RevocationFeed``: a local set kept current by Redis pub/sub, no round trip per
    verification, revocations seen within a second, failing closed while the feed is down
    (``close()`` stops it); its keys and channel are under ``redis_prefix``, the broker's
    setting of that name (default: derived from ``issuer``, as the broker derives it).
    ``RedisRevocation(url, issuer=...)`` instead asks Redis on every
    verification (one ``MGET``): no thread, and the newest state, for a round trip each.
    With ``introspection`` (an ``IntrospectionClient``), every verification also asks the
    broker whether the token is active, with the same fail-closed rule.

    ``cache_size`` is how many accepted tokens are remembered (0: none); see the module
    docstring for what a remembered token still has checked.

    ``proof_replay`` remembers the DPoP proofs already accepted (default: a bounded
    in-process ``MemoryReplayCache``, with a quota per key so that one key cannot fill it
    for the others; a service with several replicas should share one);
    ``proof_max_age`` is how old a proof's ``iat`` may be, in seconds (1..300).

    ``allow_insecure_jwks``: accept a plain ``http://`` ``jwks_url`` to a named host (a
    sibling container, a cluster-internal service), logged as UNSAFE when built. Without
    it, http is allowed on loopback only.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str | None = None,
        jwks: dict[str, Any] | KeySet | None = None,
        revocation: RevocationCheck | str | None = None,
        redis_prefix: str | None = None,
        introspection: IntrospectionClient | None = None,
        leeway: int = DEFAULT_LEEWAY,
        max_ttl: int = MAX_TOKEN_TTL,
        clock: Callable[[], float] = time.time,
        fetch: Fetch | None = None,
        jwks_cooldown: float = 30.0,
        jwks_max_stale: float = 3600.0,
        proof_replay: ProofReplayCache | None = None,
        proof_max_age: int = DEFAULT_MAX_AGE,
        cache_size: int = DEFAULT_CACHE_SIZE,
        allow_insecure_jwks: bool = False,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("issuer and audience are required")
        _check_sources(revocation, introspection, proof_replay)
        _check_limits(max_ttl, proof_max_age, cache_size)
        self._issuer = issuer
        self._audience = audience
        self._leeway = check_leeway(leeway)
        self._max_ttl = max_ttl
        self._clock = clock
        #: accepted tokens, by their exact string: the grant, and the key it verified under
        self._seen: SeenTokens[Grant] = SeenTokens(cache_size)
        self._introspection = introspection
        self.proof_max_age = proof_max_age
        self._proof_replay: ProofReplayCache = proof_replay if proof_replay is not None else MemoryReplayCache()
        remote = JwksSource(fetch, jwks_cooldown, jwks_max_stale, allow_insecure_jwks)
        self._keys: KeyLookup = _key_lookup(jwks_url, jwks, remote)
        #: some verifications wait on the network (introspection, a JWKS fetch, a Redis read):
        #: the async middleware and guard then verify on a worker thread, off the event loop
        self.may_block = (
            introspection is not None
            or jwks_url is not None
            or bool(getattr(revocation, "waits_on_network", False))  # a RedisRevocation: a read per call
        )
        self._own_feed: RevocationFeed | None = None
        if isinstance(revocation, str):  # last: nothing after it can fail and orphan the feed
            revocation = self._own_feed = _started_feed(revocation, redis_prefix, issuer)
        self._revocation: RevocationCheck | None = revocation
        withdrawn = withdrawn_check(revocation)
        if withdrawn is not None:  # a feed also carries key withdrawals: their tokens stop at once
            self._keys = WithoutWithdrawn(self._keys, withdrawn)

    @classmethod
    def with_redis_feed(
        cls,
        *,
        issuer: str,
        audience: str,
        jwks_url: str,
        redis_url: str,
        redis_prefix: str | None = None,
        **tuning: Any,
    ) -> Verifier:
        """The usual service: keys from the broker's JWKS, revocations from a local set the
        broker's Redis keeps current (``RevocationFeed``; ``close()`` stops it)."""
        return cls(
            issuer=issuer,
            audience=audience,
            jwks_url=jwks_url,
            revocation=redis_url,
            redis_prefix=redis_prefix,
            **tuning,
        )

    @classmethod
    def with_introspection(
        cls, *, issuer: str, audience: str, jwks_url: str, introspection: IntrospectionClient, **tuning: Any
    ) -> Verifier:
        """A service without access to the broker's Redis: every verification also asks the
        broker (RFC 7662) whether the token is still active."""
        return cls(issuer=issuer, audience=audience, jwks_url=jwks_url, introspection=introspection, **tuning)

    @classmethod
    def with_keys(
        cls,
        *,
        issuer: str,
        audience: str,
        jwks: dict[str, Any] | KeySet,
        revocation: RevocationCheck | None = None,
        **tuning: Any,
    ) -> Verifier:
        """Keys given, never fetched (tests, air-gapped services), with an optional
        revocation source such as ``StaticRevocationList``."""
        return cls(issuer=issuer, audience=audience, jwks=jwks, revocation=revocation, **tuning)

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def audience(self) -> str:
        return self._audience

    @property
    def leeway(self) -> int:
        return self._leeway

    @property
    def max_ttl(self) -> int:
        return self._max_ttl

    def close(self) -> None:
        """Stop the revocation feed this verifier built from a Redis URL, if any (one
        passed in belongs to the caller)."""
        if self._own_feed is not None:
            self._own_feed.close()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def verify(
        self,
        token: object,
        *,
        now: int | None = None,
        dpop: str | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> Grant:
        """The grant of a valid, unrevoked token; otherwise ``TokenRejected`` with a code.

        ``dpop`` is the request's DPoP proof header, if any; with it, ``method`` and ``url``
        (the full URL the client requested) are required: leaving them out is a bug in
        the caller, a ``ValueError``, not a rejected token.
        """
        if dpop is not None and (not method or not url):
            raise ValueError("a DPoP proof is checked against the request: give its method and url")
        at = int(self._clock()) if now is None else now
        seen = self._seen_before(token, at)
        if seen is None:
            claims, key = signed_claims_and_key(token, self._keys)
            check_claims(
                claims, issuer=self._issuer, audience=self._audience, now=at, leeway=self._leeway, max_ttl=self._max_ttl
            )
            grant = Grant(claims)
        else:
            grant = seen
            claims = grant.claims
        if claims.cnf_jkt is None:
            self._check_revocation(claims, str(token), None)
        else:
            if dpop is None or method is None or url is None:
                raise TokenRejected("proof_required", "token is DPoP-bound; no proof came with it")
            proof = self._checked_proof(claims.cnf_jkt, str(token), dpop=dpop, method=method, url=url, at=at)
            self._check_revocation(claims, str(token), {"dpop": dpop, "method": method, "url": url})
            self._claim(proof, at)
        if seen is None:
            self._seen.remember(token, grant, key)
        return grant

    def _seen_before(self, token: object, at: int) -> Grant | None:
        """The grant of a token accepted before, if its key is still the key set's and it
        is inside its time window at ``at``; otherwise ``None`` (and it is forgotten), and
        the caller verifies it afresh."""
        grant = self._seen.get(token, self._keys)
        if grant is None:
            return None
        claims = grant.claims
        if claims.nbf - self._leeway <= at < claims.exp + self._leeway:
            return grant
        self._seen.forget(str(token))
        return None

    def _checked_proof(self, cnf_jkt: str, token: str, *, dpop: str, method: str, url: str, at: int) -> CheckedProof:
        try:
            proof = check_proof(dpop, method=method, url=url, now=at, access_token=token, max_age=self.proof_max_age)
        except ProofError as e:
            raise TokenRejected("bad_proof", e.reason) from None
        if not hmac.compare_digest(proof.jkt, cnf_jkt):
            raise TokenRejected("bad_proof", "proof signed by another key than the token is bound to")
        return proof

    def _claim(self, proof: CheckedProof, at: int) -> None:
        try:
            first = self._proof_replay.claim(proof.jkt, proof.jti, proof.expires_at, at)
        except Exception as e:  # noqa: BLE001 -- a replay state we cannot read fails closed
            raise TokenRejected("revocation_unavailable", f"proof replay cache: {type(e).__name__}") from None
        if not first:
            raise TokenRejected(
                "bad_proof", "proof seen before (or its key is over its replay quota, or the replay cache is full)"
            )

    def _check_revocation(self, claims: Claims, token: str, proof: dict[str, str] | None) -> None:
        """The revocation store, then introspection (sent the proof and the request it
        came with, when there is one). Either failing to answer fails closed."""
        if self._revocation is not None:
            try:
                revoked = self._revocation.is_revoked(claims)
            except Exception as e:  # noqa: BLE001 -- any failure of the check fails closed
                raise TokenRejected("revocation_unavailable", type(e).__name__) from None
            if revoked:
                raise TokenRejected("revoked")
        if self._introspection is not None:
            try:
                active = (
                    self._introspection.is_active(token, **proof)
                    if proof is not None
                    else self._introspection.is_active(token)
                )
            except Exception as e:  # noqa: BLE001 -- any failure of the check fails closed
                raise TokenRejected("revocation_unavailable", type(e).__name__) from None
            if not active:
                raise TokenRejected("revoked", "introspection: not active")

    def require(
        self,
        token: object,
        *,
        kind: str,
        resource: str,
        action: str,
        now: int | None = None,
        dpop: str | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> Grant:
        """Verify (with the same DPoP arguments), then insist the token allows ``action`` on
        ``resource``."""
        grant = self.verify(token, now=now, dpop=dpop, method=method, url=url)
        if not grant.allows(kind, resource, action):
            raise TokenRejected("not_allowed", f"{action} on {kind!r}")
        return grant


@dataclass(frozen=True, slots=True)
class JwksSource:
    """How a ``jwks_url`` is fetched: the fetch function, the cooldown between refetches of
    an unknown kid, how stale a set may be served, and whether plain http to a named host
    is accepted (logged as UNSAFE)."""

    fetch: Fetch | None
    cooldown: float
    max_stale: float
    allow_insecure: bool


def _key_lookup(jwks_url: str | None, jwks: dict[str, Any] | KeySet | None, remote: JwksSource) -> KeyLookup:
    """Exactly one of a URL (fetched, cached, refreshed) or keys given."""
    if (jwks_url is None) == (jwks is None):
        raise ValueError("give exactly one of jwks_url or jwks")
    if jwks_url is not None:
        return RemoteJwks(
            jwks_url,
            fetch=remote.fetch,
            cooldown=remote.cooldown,
            refresh=min(300.0, remote.max_stale),
            max_stale=remote.max_stale,
            allow_insecure=remote.allow_insecure,
        )
    return jwks if isinstance(jwks, KeySet) else KeySet.from_jwks(jwks)


def _check_sources(revocation: object, introspection: object, proof_replay: object) -> None:
    """The pluggable sources have the one method each is called through."""
    if isinstance(revocation, str):
        if not revocation.startswith(URL_SCHEMES):
            raise TypeError(f"revocation must be a Redis URL ({', '.join(URL_SCHEMES)}) or an object with is_revoked")
    elif revocation is not None and not callable(getattr(revocation, "is_revoked", None)):
        raise TypeError("revocation must be an object with is_revoked(claims), such as StaticRevocationList")
    if proof_replay is not None and not callable(getattr(proof_replay, "claim", None)):
        raise TypeError("proof_replay must have claim(jkt, jti, expires_at, now), such as MemoryReplayCache")
    if introspection is not None and not callable(getattr(introspection, "is_active", None)):
        raise TypeError("introspection must be an IntrospectionClient (or have is_active(token))")


def _check_limits(max_ttl: object, proof_max_age: object, cache_size: object) -> None:
    if type(max_ttl) is not int or not 0 < max_ttl <= MAX_TOKEN_TTL:
        raise ValueError(f"max_ttl must be 1..{MAX_TOKEN_TTL} seconds: the global cap is never raised")
    if type(proof_max_age) is not int or not 0 < proof_max_age <= MAX_MAX_AGE:
        raise ValueError(f"proof_max_age must be 1..{MAX_MAX_AGE} seconds")
    if type(cache_size) is not int or cache_size < 0:
        raise ValueError("cache_size must be a non-negative integer")


def _started_feed(redis_url: str, redis_prefix: str | None, issuer: str) -> RevocationFeed:
    """A feed on the broker's Redis, its keys under ``redis_prefix`` (else derived from the
    issuer, as the broker derives it), given a moment to load before the first check."""
    feeds = import_with_redis("broker.verify.revocation_feed")  # redis-py only for a Redis URL
    feed: RevocationFeed = feeds.RevocationFeed(
        redis_url, prefix=redis_prefix or None, issuer=None if redis_prefix else issuer
    )
    feed.wait_ready(FEED_START_WAIT)
    return feed
