"""``with_client_key``: a policy in which one principal's key identity is replaced.

Used only by ``broker dev``, which makes fresh secrets for the example policy (whose
files hold hashes of secrets nobody has). The files themselves are never changed.
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
