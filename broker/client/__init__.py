"""The agent's side of capbroker: get tokens from the broker, cached, optionally DPoP-bound.

``BrokerClient`` (blocking) and ``AsyncBrokerClient`` (asyncio) mint with the agent's
credential, cache each token per (task, scope, resource, action) until a quarter of its
lifetime (at most 60 s) remains, and revoke tasks. Failures raise ``BrokerCallFailed``
carrying the broker's problem+json ``code`` (``BrokerUnreachable`` when there is no
usable answer). The ``broker token get``, ``broker run`` and ``broker git-credential``
commands are built on it (docs/agents.md).
"""

from __future__ import annotations

from broker.client.aio import AsyncBrokerClient
from broker.client.cache import CacheKey, MemoryTokenCache, TokenCache
from broker.client.calls import Credential
from broker.client.errors import BrokerCallFailed, BrokerUnreachable
from broker.client.freshness import IssuedToken
from broker.client.sync import BrokerClient

__all__ = [
    "AsyncBrokerClient",
    "BrokerCallFailed",
    "BrokerClient",
    "BrokerUnreachable",
    "CacheKey",
    "Credential",
    "IssuedToken",
    "MemoryTokenCache",
    "TokenCache",
]
