"""Who presented this credential: the identity methods of README's "Agent identities", resolved against one
policy snapshot.

- ``key``: a ``cbk_`` client secret, matched by its SHA-256.
- ``jwt``: an identity JWT (workload identity federation). The unverified ``iss`` only
  picks among the issuers the policy names (a token never supplies a URL to fetch); the
  signature is checked with that issuer's keys, then exactly one principal must match
  (audience, subject, claims); its ``jti`` is claimed once, shared by every replica.
- ``vault``: a Vault token, looked up with the broker's own token (``auth/token/lookup``)
  and matched on AppRole role, entity or metadata; exactly one principal must match.

Any refusal is ``Unauthenticated`` (401), with the precise reason for the audit log.
Vault, Redis or the identity provider being unreachable is ``BackendUnavailable`` (503):
an unanswered question is never a yes, and never "unknown agent" either.
"""

from __future__ import annotations

from broker.errors import Unauthenticated
from broker.identity.jwt_identity import (
    IdentityClaims,
    IdentityRejected,
    looks_like_jwt,
    select_jwt_principal,
    unverified_route,
    verify_identity_jwt,
)
from broker.identity.vault_identity import looks_like_vault_token, select_vault_principal
from broker.policy.model import Agent, JwtIdentity, Policy, Service, VaultIdentity
from broker.service.broker import Broker
from broker.service.credentials import is_client_secret, secret_sha256

Principal = Agent | Service

#: How far an identity JWT's times may be off from ours (identity providers' clocks).
IDENTITY_LEEWAY = 30


def _principals(policy: Policy) -> list[Principal]:
    return [*policy.agents.values(), *policy.services.values()]


async def principal_of(broker: Broker, policy: Policy, credential: str | None) -> Principal | None:
    """The agent or service ``credential`` identifies in ``policy``; None for a credential
    of no known shape; ``Unauthenticated`` with the reason for a refused one."""
    if credential is None:
        return None
    if is_client_secret(credential):
        return policy.principal_for_key(secret_sha256(credential))
    # Vault first: a namespaced Vault token (s.<id>.<ns>) also has three dotted segments,
    # while no JWS ever has a Vault token's shape.
    if looks_like_vault_token(credential):
        return await _vault_principal(broker, policy, credential)
    if looks_like_jwt(credential):
        return await _jwt_principal(broker, policy, credential)
    return None


async def _jwt_principal(broker: Broker, policy: Policy, token: str) -> Principal:
    route = unverified_route(token)
    candidates = [
        p for p in _principals(policy) if isinstance(p.identity, JwtIdentity) and p.identity.issuer == route.issuer
    ]
    if not candidates:
        raise IdentityRejected("jwt identity: no principal trusts this issuer")
    if broker.issuer_keys is None:
        raise IdentityRejected("jwt identity: federation is not configured on this broker")
    matched: list[tuple[Principal, IdentityClaims]] = []
    reasons: list[str] = []
    for jwks_uri in sorted({p.identity.jwks_uri or "" for p in candidates if isinstance(p.identity, JwtIdentity)}):
        group = [
            p for p in candidates if isinstance(p.identity, JwtIdentity) and (p.identity.jwks_uri or "") == jwks_uri
        ]
        keys = await broker.issuer_keys.keys_for(route.issuer, jwks_uri or None, route.kid)
        try:
            claims = verify_identity_jwt(token, keys, issuer=route.issuer, now=broker.now(), leeway=IDENTITY_LEEWAY)
            matched.append((select_jwt_principal(claims, group), claims))
        except IdentityRejected as e:
            reasons.append(e.reason)
    if len(matched) != 1:
        raise IdentityRejected(
            "jwt identity: " + ("; ".join(reasons) if not matched else "matches principals in two key sets")
        )
    principal, claims = matched[0]
    replay_id = claims.replay_id
    if replay_id is not None and not await broker.state.claim_once(
        f"jwt:{replay_id}", claims.replay_until(IDENTITY_LEEWAY)
    ):
        raise IdentityRejected(f"jwt identity: jti already used (replay) for {principal.name!r}")
    return principal


async def _vault_principal(broker: Broker, policy: Policy, presented: str) -> Principal:
    candidates = [p for p in _principals(policy) if isinstance(p.identity, VaultIdentity)]
    if not candidates:
        raise Unauthenticated("vault identity: no principal uses the vault method")
    if broker.vault_tokens is None:
        raise Unauthenticated("vault identity: Vault is not configured on this broker")
    info = await broker.vault_tokens.lookup(presented)
    if info is None:
        raise Unauthenticated("vault identity: the Vault token is unknown, expired or revoked")
    return select_vault_principal(info, candidates)
