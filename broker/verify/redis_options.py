"""The redis-py client options every capbroker Redis client uses: fail fast, never retry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from redis import Redis as SyncRedis
from redis import RedisCluster as SyncRedisCluster
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio import RedisCluster as AsyncRedisCluster
from redis.asyncio.cluster import AsyncStaticPolicyResolver  # type: ignore[attr-defined]
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import ClusterPipeline as AsyncClusterPipeline
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode as SyncClusterNode
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel as SyncSentinel

from broker.verify.redis_keys import CLUSTER_SCHEME, SENTINEL_SCHEME


def database(client: Any) -> int:
    """The database number a redis-py client (sync or asyncio) was built for: pub/sub
    channels are shared by all databases, so channel names carry it. A cluster has only 0."""
    if is_cluster(client):
        return 0
    return int(client.connection_pool.connection_kwargs.get("db", 0) or 0)


def is_cluster(client: object) -> bool:
    """Whether ``client`` is a redis-py Redis Cluster client (sync or asyncio)."""
    return isinstance(client, SyncRedisCluster | AsyncRedisCluster)


def transactions(client: object) -> bool:
    """Whether a pipeline of writes to one key may be a ``MULTI`` transaction: not on a
    cluster, where redis-py 8.1's asyncio transaction pipeline leaves its connection bound
    so that closing the client fails. The pipelines it serves are one key's counter and its
    expiry, where a crash between the two leaves a key that lives too long, never a lost write."""
    return not is_cluster(client)


def publish_command(client: object) -> str:
    """The command that announces on a channel: sharded (``SPUBLISH``) on a cluster, where
    a plain ``PUBLISH`` would be copied to every node; ``PUBLISH`` elsewhere."""
    return "SPUBLISH" if is_cluster(client) else "PUBLISH"


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


def client_options(timeout: float) -> dict[str, Any]:
    """``fail_fast`` for a client built with ``Redis(...)`` rather than ``from_url`` (a
    Sentinel's, a cluster node's), which deprecates ``retry_on_timeout`` and
    ``retry_on_error``: the ``Retry`` with no retries covers them."""
    return {k: v for k, v in fail_fast(timeout).items() if k not in ("retry_on_timeout", "retry_on_error")}


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
    sentinels = _host_ports(hosts)
    if sentinels is None:
        raise ValueError("a redis+sentinel:// URL lists the Sentinels as HOST:PORT[,HOST:PORT…]")
    path = [p for p in parts.path.split("/") if p]
    if not 1 <= len(path) <= 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("a redis+sentinel:// URL ends with /MASTER_NAME or /MASTER_NAME/DB")
    query = dict(parse_qsl(parts.query))
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        raise ValueError(f"a redis+sentinel:// URL takes only sentinel_password, not {', '.join(sorted(unknown))}")
    return SentinelUrl(
        sentinels=sentinels,
        master=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        sentinel_password=query.get("sentinel_password"),
    )


#: ``redis+cluster://[[user]:password@]HOST:PORT[,HOST:PORT…]``: nodes to learn the cluster
#: from (any of them answers with the whole map); no database (a cluster has only 0)


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None = field(repr=False)


def parse_cluster_url(url: str) -> ClusterUrl:
    """The parts of a ``redis+cluster://`` URL; ``ValueError`` naming what is wrong (never
    the password)."""
    parts = urlsplit(url)
    nodes = _host_ports(parts.netloc.rpartition("@")[2])
    if nodes is None:
        raise ValueError("a redis+cluster:// URL lists nodes as HOST:PORT[,HOST:PORT…]")
    if parts.path.strip("/") or parts.query:
        raise ValueError("a redis+cluster:// URL has no database and no options (a cluster has only database 0)")
    return ClusterUrl(
        nodes=nodes,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


class _AsyncCluster(AsyncRedisCluster):
    """redis-py's asyncio ``RedisCluster`` with two mends (redis-py 8.1):

    - it reads the slot map before any command: the first commands sent concurrently to a
      fresh client race to build the map, and some fail (a connection closed under them).
      ``initialize`` is a no-op after the first time, and takes a lock until then;
    - a pipeline that fails to reach a node marks the map for a new read, as one command
      does. redis-py does that for a pipeline only when it retries, and the broker's
      clients never retry (``client_options``): after a primary died and its replica took
      over, every pipeline (the mint's claim round, budgets, delegations) went on to the
      dead node for good."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        await self.initialize()
        return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> AsyncClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # redis-py's refusal
        return _RemappingPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py builds its own

    def map_is_stale(self) -> None:
        """The next command or pipeline reads the slot map again first."""
        self._initialize = True


class _RemappingPipeline(AsyncClusterPipeline):
    """A cluster pipeline that, when a node cannot be reached, has its client read the slot
    map again before the next use (``_AsyncCluster``)."""

    def __init__(self, client: _AsyncCluster, transaction: Any | None = None) -> None:
        super().__init__(client, transaction)
        self._remapped = client

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        try:
            results: list[Any] = await super().execute(raise_on_error, allow_redirections)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            self._remapped.map_is_stale()
            raise
        if any(isinstance(r, (RedisConnectionError, RedisTimeoutError)) for r in results):
            self._remapped.map_is_stale()
        return results


def _host_ports(hosts: str) -> tuple[tuple[str, int], ...] | None:
    out: list[tuple[str, int]] = []
    for entry in hosts.split(","):
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            return None
        out.append((host.strip("[]"), int(port)))
    return tuple(out)


def _cluster_options(parsed: ClusterUrl, timeout: float, extra: dict[str, Any]) -> dict[str, Any]:
    """``fail_fast`` for a cluster client: no retry of a failed connection, but MOVED and
    ASK (a slot moved) are still followed, and the slot map is read again after them."""
    return client_options(timeout) | {"username": parsed.username, "password": parsed.password} | extra


def _sentinel_options(
    parsed: SentinelUrl, timeout: float, extra: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(options of the master's connections, options of the connections to the Sentinels)."""
    options = client_options(timeout)  # redis-py builds the Sentinel clients with Redis(...)
    master = options | {"db": parsed.db, "username": parsed.username, "password": parsed.password} | extra
    sentinel = options | {"password": parsed.sentinel_password}
    return master, sentinel


def sync_redis(url: str, timeout: float, **extra: Any) -> SyncRedis:
    """A redis-py client for ``url`` with ``fail_fast`` options. A ``redis+sentinel://`` URL
    gives a client of the master the Sentinels name, which follows a failover (redis-py's
    Sentinel support: the master is asked for again when a connection fails)."""
    if url.startswith(CLUSTER_SCHEME):
        cluster = parse_cluster_url(url)
        nodes = [SyncClusterNode(host, port) for host, port in cluster.nodes]  # type: ignore[no-untyped-call]
        return SyncRedisCluster(startup_nodes=nodes, **_cluster_options(cluster, timeout, extra))  # type: ignore[return-value]
    if not url.startswith(SENTINEL_SCHEME):
        return SyncRedis.from_url(url, **(fail_fast(timeout) | extra))
    parsed = parse_sentinel_url(url)
    master, sentinel = _sentinel_options(parsed, timeout, extra)
    sentinels = SyncSentinel(list(parsed.sentinels), sentinel_kwargs=sentinel)  # type: ignore[no-untyped-call]
    client: SyncRedis = sentinels.master_for(parsed.master, **master)  # type: ignore[no-untyped-call]
    return client


def async_redis(url: str, timeout: float, **extra: Any) -> AsyncRedis:
    """``sync_redis`` for redis.asyncio."""
    if url.startswith(CLUSTER_SCHEME):
        cluster = parse_cluster_url(url)
        nodes = [AsyncClusterNode(host, port) for host, port in cluster.nodes]
        # a resolver of its own: redis-py's default one is shared by every client, and binds
        # to the event loop of the first
        options = _cluster_options(cluster, timeout, extra) | {"policy_resolver": AsyncStaticPolicyResolver()}
        return _AsyncCluster(startup_nodes=nodes, **options)  # type: ignore[return-value]
    if not url.startswith(SENTINEL_SCHEME):
        return AsyncRedis.from_url(url, **(fail_fast(timeout) | extra))
    parsed = parse_sentinel_url(url)
    master, sentinel = _sentinel_options(parsed, timeout, extra)
    sentinels = AsyncSentinel(list(parsed.sentinels), sentinel_kwargs=sentinel)  # type: ignore[no-untyped-call]
    client: AsyncRedis = sentinels.master_for(parsed.master, **master)
    return client
