"""``with_client_key``: a policy in which one principal's key identity is replaced;
``with_added_client_key``: one in which a principal also answers to one more key.

``broker dev`` adds the fresh keys it prints beside the policy's own identities (the
example files hold hashes of secrets nobody has; a user's own policy keys keep working).
The files themselves are never changed.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from broker.policy.model import Agent, KeyIdentity, Policy, Service


def with_client_key(policy: Policy, name: str, sha256_hex: str) -> Policy:
    """``policy`` with the agent or service ``name`` authenticated by ``sha256_hex``."""
    agents = dict(policy.agents)
    services = dict(policy.services)
    principal: Agent | Service
    if name in agents:
        principal = agents[name] = dataclasses.replace(agents[name], identity=KeyIdentity(sha256_hex))
    elif name in services:
        principal = services[name] = dataclasses.replace(services[name], identity=KeyIdentity(sha256_hex))
    else:
        raise KeyError(name)
    everyone: list[Agent | Service] = [*agents.values(), *services.values()]
    by_key: dict[str, Agent | Service] = {
        p.identity.sha256: p for p in everyone if isinstance(p.identity, KeyIdentity) and p.name != name
    }
    by_key[sha256_hex] = principal
    return dataclasses.replace(
        policy, agents=MappingProxyType(agents), services=MappingProxyType(services), _by_key=MappingProxyType(by_key)
    )


def with_added_client_key(policy: Policy, name: str, sha256_hex: str) -> Policy:
    """``policy`` in which the agent or service ``name`` is also authenticated by
    ``sha256_hex``; its own identity (key, jwt or vault) keeps working. A hash that is
    already another principal's is refused (one key, one principal)."""
    principal = policy.agents.get(name) or policy.services.get(name)
    if principal is None:
        raise KeyError(name)
    holder = policy.principal_for_key(sha256_hex)
    if holder is not None and holder.name != name:
        raise ValueError(f"that key is already {holder.name!r}'s")
    by_key = {**policy._by_key, sha256_hex: principal}  # the policy's own index, as in with_client_key
    return dataclasses.replace(policy, _by_key=MappingProxyType(by_key))
