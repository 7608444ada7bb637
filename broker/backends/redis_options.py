"""The redis-py client options every capbroker Redis client uses: fail fast, never retry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from redis import Redis as SyncRedis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel as SyncSentinel

from broker.backends.redis_keys import SENTINEL_SCHEME


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


#: ``redis+sentinel://[[user]:password@]HOST:PORT[,HOST:PORT…]/MASTER[/DB][?sentinel_password=…]``:
#: the Sentinels to ask, the master's name, its database; the password is the master's


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    username: str | None
    password: str | None = field(repr=False)
    sentinel_password: str | None = field(repr=False)


def parse_sentinel_url(url: str) -> SentinelUrl:
    """The parts of a ``redis+sentinel://`` URL; ``ValueError`` naming what is wrong (never
    the password)."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    sentinels: list[tuple[str, int]] = []
    for entry in hosts.split(","):
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("a redis+sentinel:// URL lists the Sentinels as HOST:PORT[,HOST:PORT…]")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not 1 <= len(path) <= 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("a redis+sentinel:// URL ends with /MASTER_NAME or /MASTER_NAME/DB")
    query = dict(parse_qsl(parts.query))
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        raise ValueError(f"a redis+sentinel:// URL takes only sentinel_password, not {', '.join(sorted(unknown))}")
    return SentinelUrl(
        sentinels=tuple(sentinels),
        master=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        sentinel_password=query.get("sentinel_password"),
    )


def _sentinel_options(
    parsed: SentinelUrl, timeout: float, extra: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(options of the master's connections, options of the connections to the Sentinels)."""
    # redis-py builds the Sentinel clients with Redis(...), which deprecates these two
    # (a timeout is retried by default: the Retry with no retries covers it)
    options = {k: v for k, v in fail_fast(timeout).items() if k not in ("retry_on_timeout", "retry_on_error")}
    master = options | {"db": parsed.db, "username": parsed.username, "password": parsed.password} | extra
    sentinel = options | {"password": parsed.sentinel_password}
    return master, sentinel


def sync_redis(url: str, timeout: float, **extra: Any) -> SyncRedis:
    """A redis-py client for ``url`` with ``fail_fast`` options. A ``redis+sentinel://`` URL
    gives a client of the master the Sentinels name, which follows a failover (redis-py's
    Sentinel support: the master is asked for again when a connection fails)."""
    if not url.startswith(SENTINEL_SCHEME):
        return SyncRedis.from_url(url, **(fail_fast(timeout) | extra))
    parsed = parse_sentinel_url(url)
    master, sentinel = _sentinel_options(parsed, timeout, extra)
    sentinels = SyncSentinel(list(parsed.sentinels), sentinel_kwargs=sentinel)  # type: ignore[no-untyped-call]
    client: SyncRedis = sentinels.master_for(parsed.master, **master)  # type: ignore[no-untyped-call]
    return client


def async_redis(url: str, timeout: float, **extra: Any) -> AsyncRedis:
    """``sync_redis`` for redis.asyncio."""
    if not url.startswith(SENTINEL_SCHEME):
        return AsyncRedis.from_url(url, **(fail_fast(timeout) | extra))
    parsed = parse_sentinel_url(url)
    master, sentinel = _sentinel_options(parsed, timeout, extra)
    sentinels = AsyncSentinel(list(parsed.sentinels), sentinel_kwargs=sentinel)  # type: ignore[no-untyped-call]
    client: AsyncRedis = sentinels.master_for(parsed.master, **master)
    return client
