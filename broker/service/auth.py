"""Who is calling: an agent, a service or an admin, from the bearer credential.

Agents and services prove who they are with any identity method (README, "Agent identities")
(``broker.service.identify``); admins only with a ``cbk_`` client secret whose SHA-256
the settings hold.
"""

from __future__ import annotations

from broker.errors import Forbidden, Unauthenticated
from broker.policy.model import Agent, Policy, Service
from broker.service.broker import Broker, Call
from broker.service.credentials import ADMIN_CLIENT_ID, is_client_secret, matches_any, secret_sha256
from broker.service.identify import Principal, principal_of


def is_admin(broker: Broker, call: Call) -> bool:
    return (
        call.credential is not None
        and call.client_id in (None, ADMIN_CLIENT_ID)
        and is_client_secret(call.credential)
        and matches_any(call.credential, broker.admin_key_hashes)
    )


async def _principal(broker: Broker, policy: Policy, call: Call) -> Principal | None:
    """The caller's principal; with client_secret_basic, only if the client id names it."""
    principal = await principal_of(broker, policy, call.credential)
    if call.client_id is not None and (principal is None or principal.name != call.client_id):
        raise Unauthenticated("client_secret_basic: the client id is not the name of the secret's owner")
    return principal


async def agent_of(broker: Broker, policy: Policy, call: Call) -> Agent:
    """The calling agent in ``policy`` (a snapshot the caller keeps for the request)."""
    principal = await _principal(broker, policy, call)
    if not isinstance(principal, Agent):
        raise Unauthenticated("no agent has this credential")
    return principal


async def service_of(broker: Broker, policy: Policy, call: Call) -> Service:
    principal = await _principal(broker, policy, call)
    if not isinstance(principal, Service):
        raise Unauthenticated("no service has this credential")
    return principal


def require_admin(broker: Broker, call: Call) -> None:
    """Admins present a client secret; so a 403 (not 401) goes only to another key's
    holder: a JWT or Vault token is never resolved (nor its jti spent) on admin routes."""
    if is_admin(broker, call):
        return
    if (
        call.credential is not None
        and is_client_secret(call.credential)
        and broker.policy.principal_for_key(secret_sha256(call.credential)) is not None
    ):
        raise Forbidden("admin only")
    raise Unauthenticated("no admin has this credential")


async def agent_or_admin(broker: Broker, call: Call) -> Agent | None:
    """The calling agent, or None for an admin; anyone else is refused."""
    if is_admin(broker, call):
        return None
    principal = await _principal(broker, broker.policy, call)
    if isinstance(principal, Agent):
        return principal
    if principal is not None:
        raise Forbidden("services cannot revoke")
    raise Unauthenticated("no agent or admin has this credential")
