"""Plain connections to the primary that serves a slot, beside a redis-py cluster client.

Two things must not go through ``RedisCluster``'s routing:

- ``WAIT`` counts the replicas that hold the writes of *its own connection*. redis-py sends
  a keyless ``WAIT`` to every primary and adds the answers up, which says nothing about
  the revocation just written. So a durable revocation sends its script and ``WAIT`` on one
  plain connection to the primary of the state slot, in one pipeline.
- A sharded subscription (``SSUBSCRIBE``) lives on the node that serves the channel's slot;
  when the slot moves, that node says ``sunsubscribe`` and the subscriber starts again on
  the new owner (and reads again what it may have missed).

The node is looked up in the cluster client's slot map at each use. A slot that moved
since the map was read answers ``MOVED``; the caller fails (closed) and ``refresh`` makes
the cluster client read the map again before the next attempt.
"""

from __future__ import annotations

import contextlib
from typing import Any

from redis.asyncio import Redis as AsyncRedis
from redis.asyncio import RedisCluster as AsyncRedisCluster
from redis.exceptions import RedisError

from broker.verify.redis_options import client_options


class SlotPrimaries:
    """Plain asyncio clients of a cluster's primaries, one per node, built on first use."""

    def __init__(self, cluster: AsyncRedisCluster, timeout: float) -> None:
        self._cluster = cluster
        self._timeout = timeout
        self._clients: dict[str, AsyncRedis] = {}

    async def client_for(self, key: str) -> AsyncRedis:
        """A plain client of the primary serving ``key``'s slot, as the slot map says now."""
        await self._cluster.initialize()
        node = self._cluster.get_node_from_key(key)
        if node is None:
            raise RedisError("no node serves the slot")
        client = self._clients.get(node.name)
        if client is None:
            kwargs: dict[str, Any] = self._cluster.get_connection_kwargs()
            credentials = {k: kwargs.get(k) for k in ("username", "password")}
            options = client_options(self._timeout) | credentials
            client = self._clients[node.name] = AsyncRedis(host=node.host, port=int(node.port), **options)
        return client

    async def refresh(self, key: str) -> None:
        """Let the cluster client follow a moved slot: one routed read of ``key`` (it
        follows ``MOVED`` and reads the map again)."""
        with contextlib.suppress(RedisError, OSError):
            await self._cluster.exists(key)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()
