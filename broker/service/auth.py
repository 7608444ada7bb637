"""Who is calling: an agent, a service or an admin, from the bearer credential.

Only the ``key`` identity exists so far (SPEC 2.2): the credential is a ``cbk_`` client
secret whose SHA-256 the policy (agents, services) or the settings (admins) hold.
"""

from __future__ import annotations

from broker.errors import Forbidden, Unauthenticated
from broker.policy.model import Agent, Policy, Service
from broker.service.broker import Broker, Call
from broker.service.credentials import is_client_secret, matches_any, secret_sha256


def _principal(source: Broker | Policy, call: Call) -> Agent | Service | None:
    if call.credential is None or not is_client_secret(call.credential):
        return None
    policy = source.policy if isinstance(source, Broker) else source
    return policy.principal_for_key(secret_sha256(call.credential))


def is_admin(broker: Broker, call: Call) -> bool:
    return (
        call.credential is not None
        and is_client_secret(call.credential)
        and matches_any(call.credential, broker.admin_key_hashes)
    )


def agent_of(policy: Policy, call: Call) -> Agent:
    """The calling agent in ``policy`` (a snapshot the caller keeps for the request)."""
    principal = _principal(policy, call)
    if not isinstance(principal, Agent):
        raise Unauthenticated("no agent has this credential")
    return principal


def service_of(policy: Policy, call: Call) -> Service:
    principal = _principal(policy, call)
    if not isinstance(principal, Service):
        raise Unauthenticated("no service has this credential")
    return principal


def require_admin(broker: Broker, call: Call) -> None:
    if is_admin(broker, call):
        return
    if _principal(broker, call) is not None:
        raise Forbidden("admin only")
    raise Unauthenticated("no admin has this credential")


def agent_or_admin(broker: Broker, call: Call) -> Agent | None:
    """The calling agent, or None for an admin; anyone else is refused."""
    if is_admin(broker, call):
        return None
    principal = _principal(broker, call)
    if isinstance(principal, Agent):
        return principal
    if principal is not None:
        raise Forbidden("services cannot revoke")
    raise Unauthenticated("no agent or admin has this credential")
