"""Checking a token this broker issued, for introspection and revocation."""

from __future__ import annotations

from collections.abc import Collection

from broker.errors import TokenRejected
from broker.service.broker import Broker
from broker.token.claims import Claims
from broker.token.codec import parse_compact
from broker.token.verify import check_claims, signed_claims


async def own_token_claims(
    broker: Broker, token: object, audiences: Collection[str] | None, *, leeway: int | None = None
) -> Claims:
    """Claims of a valid token of ours for one of ``audiences`` (None: any audience).

    The leeway defaults to ``broker.clock_skew``: a token minted by a replica whose
    clock runs a little ahead is not "not yet valid" here.
    """
    try:
        claims = signed_claims(token, await broker.signer.keyset())
    except TokenRejected as e:
        if e.code != "unknown_key":
            raise
        # a key another worker published a moment ago: the signer may look again, once
        claims = signed_claims(token, await broker.signer.keyset(kid=parse_compact(token).kid))
    if audiences is not None and claims.aud not in audiences:
        raise TokenRejected("wrong_audience", f"aud {claims.aud!r}")
    check_claims(
        claims,
        issuer=broker.issuer,
        audience=claims.aud,
        now=broker.now(),
        leeway=broker.clock_skew if leeway is None else leeway,
        max_ttl=broker.policy.global_max_ttl,
    )
    return claims
