"""Checking a token this broker issued, for introspection and revocation."""

from __future__ import annotations

from collections.abc import Collection

from broker.errors import TokenRejected
from broker.service.broker import Broker
from broker.token.claims import Claims
from broker.token.codec import parse_compact
from broker.token.keys import KeyLookup
from broker.token.verify import check_claims, signed_claims_and_key
from broker.verify.withdrawn import WithoutWithdrawn, withdrawn_check


def _unwithdrawn(broker: Broker, keys: KeyLookup) -> KeyLookup:
    """The published keys minus those the revocation feed heard withdrawn: a withdrawal
    another worker announced counts here at once, before this worker re-reads the view."""
    withdrawn = withdrawn_check(broker.revocations)
    return keys if withdrawn is None else WithoutWithdrawn(keys, withdrawn)


async def own_token_claims(
    broker: Broker, token: object, audiences: Collection[str] | None, *, leeway: int | None = None
) -> Claims:
    """Claims of a valid token of ours for one of ``audiences`` (None: any audience).

    A token verified here before skips the parse and the signature while the key set
    still holds its key (``broker.seen_tokens``); audience and times are checked always.

    The leeway defaults to ``broker.clock_skew``: a token minted by a replica whose
    clock runs a little ahead is not "not yet valid" here.
    """
    keyset = _unwithdrawn(broker, await broker.signer.keyset())  # also the Vault gate, on every call
    claims = broker.seen_tokens.get(token, keyset)
    key = None
    if claims is None:
        try:
            claims, key = signed_claims_and_key(token, keyset)
        except TokenRejected as e:
            if e.code != "unknown_key":
                raise
            # a key another worker published a moment ago: the signer may look again, once
            again = await broker.signer.keyset(kid=parse_compact(token).kid)
            claims, key = signed_claims_and_key(token, _unwithdrawn(broker, again))
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
    if key is not None:
        broker.seen_tokens.remember(token, claims, key)
    return claims
