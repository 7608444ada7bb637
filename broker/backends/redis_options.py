"""The redis-py client options every capbroker Redis client uses: fail fast, never retry."""

from __future__ import annotations

from typing import Any

from redis.backoff import NoBackoff
from redis.retry import Retry


def database(client: Any) -> int:
    """The database number a redis-py client (sync or asyncio) was built for: pub/sub
    channels are shared by all databases, so channel names carry it."""
    return int(client.connection_pool.connection_kwargs.get("db", 0) or 0)


def fail_fast(timeout: float) -> dict[str, Any]:
    """Options for ``Redis.from_url`` (sync or asyncio): a dead or paused Redis fails in
    about ``timeout`` seconds, with no retry ladder."""
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_timeout": False,
        "retry_on_error": [],
        "health_check_interval": 0,
        # RESP2: with RESP3, redis-py 8 turns on "maintenance notifications", which can
        # relax the timeouts on a server's say-so and skip the pool's check for
        # connections the server closed while they sat idle.
        "protocol": 2,
        "decode_responses": True,
    }
