"""Issue claims and sign them into a token."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from broker.capability import Capability
from broker.capability.names import is_audience, is_name, is_task
from broker.errors import InvalidRequest
from broker.token.b64 import b64url_encode
from broker.token.claims import SUBJECT_PREFIX, Actor, Claims
from broker.token.codec import assemble, signing_input
from broker.token.keys import Signer


def new_jti() -> str:
    """128 bits from the OS CSPRNG, base64url (22 characters)."""
    return b64url_encode(secrets.token_bytes(16))


def issue_claims(
    *,
    issuer: str,
    agent: str,
    audience: str,
    task: str,
    capabilities: Sequence[Capability],
    now: int,
    ttl: int,
    jti: str | None = None,
    cnf_jkt: str | None = None,
    act: Actor | None = None,
) -> Claims:
    """Claims for one token. ``now`` is injected: this module reads no clock."""
    if not is_name(agent) or not is_audience(audience) or not is_task(task):
        raise InvalidRequest("agent, audience or task outside the grammar")
    if not capabilities:
        raise InvalidRequest("a token carries at least one capability")
    if ttl <= 0:
        raise InvalidRequest("ttl must be positive")
    return Claims(
        iss=issuer,
        sub=f"{SUBJECT_PREFIX}{agent}",
        aud=audience,
        iat=now,
        nbf=now,
        exp=now + ttl,
        jti=jti or new_jti(),
        task=task,
        cap=tuple(capabilities),
        cnf_jkt=cnf_jkt,
        act=act,
    )


def mint(claims: Claims, signer: Signer) -> str:
    """Sign ``claims`` with ``signer`` into a compact JWS."""
    message = signing_input(signer.alg, signer.kid, claims)
    return assemble(message, signer.sign(message))
