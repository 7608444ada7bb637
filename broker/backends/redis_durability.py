"""Is this Redis fit to hold revocations? Checked once, when ``broker serve`` starts.

Revocations, task revocations, kill-switch cut-offs and replay claims live only in
Redis. A Redis that evicts keys under memory pressure drops them silently; one that
keeps nothing on disk forgets them all when it restarts. Either way a revoked token or
task comes back, so:

- ``maxmemory-policy`` other than ``noeviction``: the broker refuses to start;
- neither AOF (``appendonly yes``) nor RDB snapshots (``save`` not empty): it refuses,
  unless the operator accepted exactly that (``redis_durability: accept-volatile``), and
  then it warns;
- RDB snapshots only, or AOF with ``appendfsync no``: it warns (a crash loses the writes
  since the last snapshot or flush).

Where ``CONFIG`` is disabled (renamed, or denied by an ACL), the settings cannot be read
and the operator asserts them: ``asserted-aof`` or ``asserted-rdb`` (each also asserts
``noeviction``). Without an assertion the broker refuses to start. When ``CONFIG``
answers, what it says is checked whatever is asserted: facts win over assertions.

On a Redis Cluster (``redis+cluster://``) every primary is read and judged: the first
refusal wins, and every warning is printed. A plain URL that reaches a cluster node
(``cluster-enabled yes``) is refused: the broker would write untagged keys that the slots
scatter, and announce where no verifier listens (``broker.verify.redis_keys``).

``read_redis_configs`` is the I/O (one ``CONFIG GET`` per primary); ``durability_verdict``
and ``combined`` the pure decision, unit-tested without a server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from redis import Redis
from redis.exceptions import RedisError, ResponseError

from broker.verify.redis_options import is_cluster, sync_redis

#: the values of the ``redis_durability`` setting (``broker.config`` checks them)
DURABILITY_MODES: Final = ("checked", "accept-volatile", "asserted-aof", "asserted-rdb")
#: the settings read, in the order they are reported
CONFIG_NAMES: Final = ("appendonly", "appendfsync", "save", "maxmemory-policy")


class RedisUnreachable(Exception):
    """Redis did not answer at all (not started yet, wrong address, refused)."""


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """What ``CONFIG GET`` says, as Redis spells it."""

    appendonly: str  # "yes" | "no"
    appendfsync: str  # "always" | "everysec" | "no"
    save: str  # "" when RDB snapshots are off, else "3600 1 300 100 ..."
    maxmemory_policy: str  # "noeviction", "allkeys-lru", ...
    cluster_enabled: str = "no"  # "yes" on a Redis Cluster node

    @property
    def aof(self) -> bool:
        return self.appendonly == "yes"

    @property
    def rdb(self) -> bool:
        return self.save.strip() != ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """``refusal`` is why the broker must not start (``None``: it may); ``warnings`` are
    printed once, loudly, when it starts anyway."""

    refusal: str | None
    warnings: tuple[str, ...] = ()


_LOST: Final = "revocations, task revocations, kill-switch cut-offs and replay claims"


def durability_verdict(mode: str, found: RedisConfig | None, *, cluster_url: bool = False) -> Verdict:
    """The decision for ``mode`` given what ``CONFIG GET`` said (``None``: CONFIG is
    unavailable on this server); ``cluster_url``: the URL is a ``redis+cluster://`` one."""
    if mode not in DURABILITY_MODES:  # settings validate it; never an allow by accident
        return Verdict(f"redis_durability {mode!r} is not one of {', '.join(DURABILITY_MODES)}")
    if found is None:
        return _asserted(mode)
    if found.cluster_enabled == "yes" and not cluster_url:
        return Verdict(
            "this Redis is a Redis Cluster node, reached by a plain URL: the broker's keys would not share "
            "the slots its scripts need, and no verifier would hear its announcements. List the nodes in a "
            "redis+cluster://HOST:PORT[,HOST:PORT...] redis_url."
        )
    if found.maxmemory_policy != "noeviction":
        return Verdict(
            f"Redis maxmemory-policy is {found.maxmemory_policy!r}: under memory pressure it would evict "
            f"{_LOST}, and revoked tokens would verify again. Set maxmemory-policy noeviction."
        )
    if not found.aof and not found.rdb:
        volatile = (
            f"Redis keeps nothing on disk (appendonly {found.appendonly!r}, save {found.save!r}): "
            f"a Redis restart forgets all {_LOST}, and revoked tokens and tasks work again"
        )
        if mode != "accept-volatile":
            return Verdict(
                f"{volatile}. Turn on AOF (appendonly yes, appendfsync everysec), or set "
                "redis_durability: accept-volatile to run anyway."
            )
        return Verdict(None, (f"{volatile} (accepted: redis_durability is accept-volatile).",))
    warnings: list[str] = []
    if not found.aof:
        warnings.append(
            f"Redis has RDB snapshots only (appendonly 'no', save {found.save!r}): a crash forgets the "
            f"{_LOST} made since the last snapshot. AOF (appendonly yes, appendfsync everysec) is recommended."
        )
    elif found.appendfsync not in ("always", "everysec"):
        warnings.append(
            f"Redis appendfsync is {found.appendfsync!r}: a crash of the host forgets the {_LOST} the "
            "kernel had not yet written. appendfsync everysec is recommended."
        )
    return Verdict(None, tuple(warnings))


def _asserted(mode: str) -> Verdict:
    if mode == "asserted-aof":
        return Verdict(None)
    if mode == "asserted-rdb":
        warning = (
            "Redis CONFIG is unavailable; the operator asserts RDB snapshots and noeviction "
            f"(redis_durability: asserted-rdb): a crash forgets the {_LOST} made since the last snapshot."
        )
        return Verdict(None, (warning,))
    return Verdict(
        "Redis CONFIG is unavailable (renamed or denied), so its eviction policy and persistence cannot be "
        "checked. Assert them with redis_durability: asserted-aof or asserted-rdb (the server must run "
        "maxmemory-policy noeviction)."
    )


def combined(verdicts: list[Verdict]) -> Verdict:
    """One verdict for several servers (a cluster's primaries): the first refusal, else
    every distinct warning."""
    for verdict in verdicts:
        if verdict.refusal is not None:
            return verdict
    return Verdict(None, tuple(dict.fromkeys(w for v in verdicts for w in v.warnings)))


def read_redis_configs(
    url: str,
    *,
    timeout: float,
    wait: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[RedisConfig | None]:
    """``CONFIG GET`` of the durability settings, of each primary (one for a plain URL);
    ``None`` for a server that refuses the command (renamed or denied).
    ``RedisUnreachable`` when it does not answer within ``wait`` seconds (retried every
    half second: at start, Redis may still be coming up). The error names the exception
    class only, never the URL (it may carry a password)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            client: Redis = sync_redis(url, timeout)  # a cluster client connects at once
            try:
                return [_config(answer) for answer in _answers(client)]
            finally:
                client.close()
        except (RedisError, OSError) as e:
            if time.monotonic() >= deadline:
                raise RedisUnreachable(f"redis: {type(e).__name__}") from None
            sleep(0.5)


def _answers(client: Redis) -> list[object]:
    """Each server's answer to ``CONFIG GET``, or the ``ResponseError`` it gave."""
    nodes = [client.get_redis_connection(n) for n in client.get_primaries()] if is_cluster(client) else [client]  # type: ignore[attr-defined]
    answers: list[object] = []
    for node in nodes:
        try:
            answers.append(node.config_get(*CONFIG_NAMES, "cluster-enabled"))
        except ResponseError as e:  # "unknown command", "NOPERM": the server answered, CONFIG is off
            answers.append(e)
    return answers


def _config(answer: object) -> RedisConfig | None:
    if not isinstance(answer, dict):
        return None
    values = {str(k): str(v) for k, v in answer.items()}
    missing = [name for name in CONFIG_NAMES if name not in values]
    if missing:
        return None  # a proxy or a server that hides them: treat as unavailable (assert)
    return RedisConfig(
        appendonly=values["appendonly"],
        appendfsync=values["appendfsync"],
        save=values["save"],
        maxmemory_policy=values["maxmemory-policy"],
        cluster_enabled=values.get("cluster-enabled", "no"),
    )
