"""``RedisState``: the ``StateStore`` every broker replica shares, in Redis.

Failure is bounded and translated here, at the boundary. The client is built with
explicit socket timeouts, no retries and no health checks, and every call is also
wrapped in ``asyncio.wait_for``: a paused server still accepts TCP connections (the
kernel's backlog) but never answers. Any redis, OS or timeout error becomes
``BackendUnavailable("redis: <ExceptionClassName>")``, never the server's text. The
connection pool reconnects on its own, so the same object works again once Redis is back.

Every read-modify-write is one Lua script, atomic across replicas:

- ``take_rate``: GCRA on Redis's own clock (``TIME``), so replicas' clocks do not matter.
- ``claim_task``: task revoked? agent suspended? record the task and extend its life.
- ``claim_mint``: the rate, then the task, for every mint queued meanwhile, in one call
  (group commit, ``broker.backends.redis_rounds``): each claim runs as if alone, in order.
  The same round trip carries the queued audit appends.
- ``revoke_agent``: suspend the agent and keep the latest cut-off.
- ``append_audit``: compare-and-append. Lua in Redis has no SHA-256, so the client seals
  the event onto the head it read, and the script appends it only if the head is still
  that hash; otherwise the client re-seals onto the new head and the events go first in
  the next round. Appends from one object take turns (group commit too), so only other
  processes ever race it.

A call that timed out may still have been executed (a paused server runs what it had
buffered when it resumes). Each such effect errs on the safe side: an allowance spent,
a task claimed by the agent that asked, an audit event for a mint that then failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio import RedisCluster as AsyncRedisCluster
from redis.exceptions import RedisError

from broker.audit.chain import GENESIS
from broker.audit.stored import StoredEvent
from broker.backends.downstream_records import RedisDownstreamRecords
from broker.backends.gcra import gcra_parameters
from broker.backends.redis_cluster import SlotPrimaries
from broker.backends.redis_rounds import Claim, Scripts, SharedRounds
from broker.capability.names import ANY_AGENT, task_ref
from broker.errors import BackendUnavailable
from broker.service import retention
from broker.service.ports import MintClaim, RevocationState, TaskClaim
from broker.verify import redis_keys as keys
from broker.verify.redis_options import async_redis, database, is_cluster, publish_command, transactions

T = TypeVar("T")

# asyncio.wait_for gets a little longer than the socket timeout, so that redis-py's own
# timeout (which closes the connection cleanly) fires first when it can.
_MARGIN = 0.25
#: how often ``ReplicaCount`` asks the primary how many replicas it has (seconds)
REPLICAS_REFRESH = 5.0
_PAGE = 500  # audit events per XRANGE

# KEYS: rate key. ARGV: emission interval, limit on tat - now (both whole microseconds).
# Returns 0 when allowed, else the microseconds until the next mint is allowed.
_TAKE_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > limit then
  return new_tat - limit - now
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return 0
"""

# A task claim, as a Lua function of its keys and arguments (tables), shared by the
# standalone script and the batched mint claims.
# k: revoked task (owner/task), the task id revoked for every agent (*/task), the task
#    record (hash), then per agent the new token names (subject and every delegator):
#    its suspension, its kill-switch cut-off.
# a: the new tokens' iat, the record's expiry (epoch seconds).
# 'revoked' or 'suspended' refuse; 'owned' records the task and extends its life. A token
# whose iat is at or before a cut-off would be dead on arrival: refused as suspended.
_CLAIM_TASK_FUNCTION = """
local function claim_task(k, a)
  if redis.call('EXISTS', k[1], k[2]) > 0 then return 'revoked' end
  local iat = tonumber(a[1])
  for i = 4, #k, 2 do
    if redis.call('EXISTS', k[i]) == 1 then return 'suspended' end
    local cutoff = tonumber(redis.call('GET', k[i + 1]))
    if cutoff and cutoff >= iat then return 'suspended' end
  end
  local expiry = tonumber(a[2])
  local current = tonumber(redis.call('HGET', k[3], 'expiry'))
  if current and current > expiry then expiry = current end
  redis.call('HSET', k[3], 'expiry', string.format('%d', expiry))
  redis.call('EXPIREAT', k[3], expiry)
  return 'owned'
end
"""

_CLAIM_TASK = _CLAIM_TASK_FUNCTION + "return claim_task(KEYS, ARGV)\n"

# Mint claims, any number of them, in order, as if each were its own script. Per claim
# six KEYS: rate key, then the task claim's keys for one agent (revoked task, revoked for
# every agent, task record, suspended, cut-off); four ARGV: emission interval and limit
# (0 0 for no rate), iat, record expiry.
# Returns per claim {wait in microseconds, claim}: the rate first; the task only if it allowed.
_CLAIM_MINT = (
    """
local function take_rate(key, interval, limit)
"""
    + _TAKE_RATE.replace("KEYS[1]", "key")
    .replace("tonumber(ARGV[1])", "interval")
    .replace("tonumber(ARGV[2])", "limit")
    + """
end
"""
    + _CLAIM_TASK_FUNCTION
    + """
local out = {}
for c = 0, #KEYS / 6 - 1 do
  local k, a = c * 6, c * 4
  local interval, limit = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local wait = 0
  if interval > 0 then wait = take_rate(KEYS[k + 1], interval, limit) end
  if wait > 0 then
    out[#out + 1] = {wait, ''}
  else
    local task_keys = {KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], KEYS[k + 6]}
    out[#out + 1] = {0, claim_task(task_keys, {ARGV[a + 3], ARGV[a + 4]})}
  end
end
return out
"""
)

# KEYS: agent cut-off, agent suspension. ARGV: cut-off, its expiry (epoch seconds).
# Suspends the agent (no expiry: until reinstated) and keeps the larger cut-off.
# ARGV[3], ARGV[4]: the revocation channel and the announcement, published in the same
# script as the write, so a revocation is never stored without being announced.
_REVOKE_AGENT = """
redis.call('SET', KEYS[2], ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]))
if not (current and current >= tonumber(ARGV[1])) then
  redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""

# KEYS: the revocation key, and optionally a key that must exist for the revocation to be
# written (a task's record, when its agent revokes it). ARGV: its expiry (epoch seconds),
# the channel, the announcement. Returns 1 if written (and announced), else 0.
_REVOKE = """
if #KEYS > 1 and redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('SET', KEYS[1], '1', 'EXAT', ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

# KEYS: audit head, audit stream. ARGV: GENESIS, the head the batch was sealed onto, each
# sealed event's canonical JSON in order, the last event's hash. Appends all or nothing.
# Returns {1, {stream ids}} or {0, current head}.
_APPEND_AUDIT = """
local head = redis.call('GET', KEYS[1]) or ARGV[1]
if head ~= ARGV[2] then return {0, head} end
local ids = {}
for i = 3, #ARGV - 1 do
  ids[#ids + 1] = redis.call('XADD', KEYS[2], '*', 'e', ARGV[i])
end
redis.call('SET', KEYS[1], ARGV[#ARGV])
return {1, ids}
"""


class ReplicaCount:
    """How many replicas must acknowledge a revocation when ``redis_wait_replicas`` is
    ``auto``: one if the primary reports any connected replica, else none (a single Redis).
    ``INFO replication`` is read at most every ``REPLICAS_REFRESH`` seconds (on a cluster,
    from the primary of the state slot: ``primary`` gives its client)."""

    def __init__(self, primary: Callable[[], Awaitable[Redis]], clock: Callable[[], float]) -> None:
        self._primary = primary
        self._clock = clock
        self._known: tuple[float, int] | None = None  # (read at, replicas needed)

    async def needed(self, call: Callable[[Awaitable[Any]], Awaitable[Any]]) -> int:
        now = self._clock()
        if self._known is None or now - self._known[0] >= REPLICAS_REFRESH:
            client = await call(self._primary())
            info = await call(client.info("replication"))
            self._known = (now, 1 if int(info.get("connected_slaves", 0)) > 0 else 0)
        return self._known[1]


class RedisState:
    """Rate limits, task records, revocations and the audit chain, shared in Redis."""

    def __init__(
        self,
        client: Redis,
        *,
        timeout: float = 1.0,
        stream: str = keys.DEFAULT_STREAM,
        prefix: str = keys.DEFAULT_PREFIX,
        wait_replicas: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Use ``from_url``: it builds ``client`` with the timeouts and no retries."""
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self._redis = client
        self._timeout = timeout
        cluster = is_cluster(client)
        self._stream = stream = keys.cluster_stream(stream, cluster=cluster)
        self._prefix = prefix  # the keys spread over a cluster's slots (``redis_keys``)
        self._tagged = keys.state_prefix(prefix, cluster=cluster)  # the keys of the state slot
        # on a cluster: plain connections to the state slot's primary, for WAIT and SSUBSCRIBE
        self._primaries = SlotPrimaries(cast(AsyncRedisCluster, client), timeout) if cluster else None
        # replicas that must hold a revocation before it is acknowledged (``WAIT``);
        # None: one when the primary has any (``ReplicaCount``), else none
        self._replicas = ReplicaCount(self._state_primary, clock) if wait_replicas is None else wait_replicas
        self._db = database(client)  # channel names carry it: pub/sub ignores the DB number
        self._publish = publish_command(client)  # sharded on a cluster
        self._revoke_script = _REVOKE.replace("'PUBLISH'", repr(self._publish))
        self._revoke_agent_script = _REVOKE_AGENT.replace("'PUBLISH'", repr(self._publish))
        # mint claims and audit appends: every one queued meanwhile, in one shared round trip
        self._rounds = SharedRounds(
            client,
            Scripts(claim=_CLAIM_MINT, append=_APPEND_AUDIT),
            call=self._call,
            head_key=keys.audit_head(stream),
            stream=stream,
            deadline=timeout + _MARGIN,
        )
        self._take_rate = client.register_script(_TAKE_RATE)
        self._claim_task = client.register_script(_CLAIM_TASK)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = 1.0,
        stream: str = keys.DEFAULT_STREAM,
        prefix: str = keys.DEFAULT_PREFIX,
        wait_replicas: int | None = None,
    ) -> RedisState:
        client = async_redis(url, timeout)
        return cls(client, timeout=timeout, stream=stream, prefix=prefix, wait_replicas=wait_replicas)

    def downstream_records(self) -> RedisDownstreamRecords:
        """The downstream credentials' records, under this store's prefix and client."""
        return RedisDownstreamRecords(self._redis, self._prefix, self._call, tagged=self._tagged)

    async def _state_primary(self) -> Redis:
        """The client that reaches the primary holding the state slot: on a cluster a plain
        connection to it, else the store's own client."""
        if self._primaries is None:
            return self._redis
        return await self._primaries.client_for(self._revocation_channel())

    def _revocation_channel(self) -> str:
        return keys.revocation_channel(self._tagged, self._db)

    async def _call(self, awaitable: Awaitable[T]) -> T:
        """One bounded round trip; every I/O failure becomes ``BackendUnavailable``."""
        try:
            return await asyncio.wait_for(awaitable, self._timeout + _MARGIN)
        except (RedisError, OSError) as e:  # OSError covers TimeoutError
            raise BackendUnavailable(f"redis: {type(e).__name__}") from None  # no server text, even chained

    # ------------------------------------------------------------------ rate limits

    async def take_rate(self, agent: str, count: int, per_seconds: int) -> float:
        interval, limit = gcra_parameters(count, per_seconds)
        wait = await self._call(self._take_rate(keys=[keys.rate(self._tagged, agent)], args=[interval, limit]))
        return _integer(wait) / 1_000_000

    # ------------------------------------------------------------------ tasks

    def _task_claim_keys(self, task: str, owner: str, agents: Sequence[str]) -> list[str]:
        out = [
            keys.revoked_task(self._tagged, task_ref(owner, task)),
            keys.revoked_task(self._tagged, task_ref(ANY_AGENT, task)),
            keys.task(self._tagged, task_ref(owner, task)),
        ]
        for agent in agents:
            out += [keys.suspended(self._tagged, agent), keys.agent_cutoff(self._tagged, agent)]
        return out

    async def claim_task(self, task: str, owner: str, agents: Sequence[str], iat: int, expires_at: int) -> TaskClaim:
        result = await self._call(
            self._claim_task(
                keys=self._task_claim_keys(task, owner, agents),
                args=[iat, retention.task_record_expiry(expires_at)],
            )
        )
        try:
            return TaskClaim(result)
        except ValueError:
            raise BackendUnavailable("redis: unexpected reply") from None

    async def claim_mint(
        self, agent: str, rate: tuple[int, int] | None, task: str, iat: int, expires_at: int
    ) -> MintClaim:
        """Rate, then task, atomically; concurrent mints share one script call (group
        commit, ``SharedRounds``), which runs their claims in arrival order, each as if alone."""
        interval, limit = gcra_parameters(*rate) if rate is not None else (0, 0)
        revoked, any_agents, record, suspended, cutoff = self._task_claim_keys(task, agent, (agent,))
        claim_keys = (keys.rate(self._tagged, agent), revoked, any_agents, record, suspended, cutoff)
        expiry = retention.task_record_expiry(expires_at)
        return await self._rounds.claim(Claim(claim_keys, (interval, limit, iat, expiry)))

    async def task_live(self, task: str, owner: str) -> bool:
        return bool(await self._call(self._redis.exists(keys.task(self._tagged, task_ref(owner, task)))))

    # ------------------------------------------------------------------ revocation

    async def _revoke(self, key: str, expiry: int, kind: str, ident: str, value: int, *, if_exists: str = "") -> bool:
        """The durable write and its announcement, atomically (one script); with
        ``if_exists``, only if that key exists."""
        message = keys.revocation_message(kind, ident, value)
        names = [key, if_exists] if if_exists else [key]
        args: list[str | int] = [expiry, keys.revocation_channel(self._tagged, self._db), message]
        return bool(await self._durably(self._revoke_script, names, args))

    async def _durably(self, script: str, names: list[str], args: list[str | int]) -> Any:
        """Run a revocation script; where the deployment has replicas, acknowledged only once
        ``WAIT`` says enough of them hold it (sent on the same connection, right after it),
        else ``BackendUnavailable``: a primary that dies before replicating must not take
        an acknowledged revocation with it. The write itself stays (it is idempotent; the
        caller retries)."""
        needed = self._replicas if isinstance(self._replicas, int) else await self._replicas.needed(self._call)
        if needed == 0:
            return await self._call(self._redis.eval(script, len(names), *names, *args))
        # on a cluster, a plain connection to the slot's primary (``redis_cluster``)
        primary = await self._call(self._state_primary())
        pipe = primary.pipeline(transaction=False)
        pipe.eval(script, len(names), *names, *args)
        pipe.execute_command("WAIT", needed, max(1, int(self._timeout * 750)))  # within the socket timeout
        try:
            result, acknowledged = await self._call(pipe.execute())
        except BackendUnavailable:
            if self._primaries is not None:  # the slot may have moved (MOVED): read the map again
                await self._primaries.refresh(names[0])
            raise
        if int(acknowledged) < needed:
            raise BackendUnavailable(f"redis: the revocation reached {acknowledged} of {needed} replicas in time")
        return result

    async def revoke_token(self, jti: str, expires_at: int) -> None:
        key = keys.revoked_token(self._tagged, jti)
        await self._revoke(key, retention.token_revocation_expiry(expires_at), "token", jti, expires_at)

    async def revoke_task(self, task: str, owner: str | None, now: int, *, only_if_live: bool = False) -> bool:
        ref = task_ref(ANY_AGENT if owner is None else owner, task)
        key = keys.revoked_task(self._tagged, ref)
        record = keys.task(self._tagged, ref) if only_if_live else ""
        return await self._revoke(key, retention.task_revocation_expiry(now), "task", ref, now, if_exists=record)

    async def revoke_agent(self, agent: str, cutoff: int) -> None:
        names = [keys.agent_cutoff(self._tagged, agent), keys.suspended(self._tagged, agent)]
        message = keys.revocation_message("agent", agent, cutoff)
        channel = keys.revocation_channel(self._tagged, self._db)
        args: list[str | int] = [cutoff, retention.agent_cutoff_expiry(cutoff), channel, message]
        await self._durably(self._revoke_agent_script, names, args)

    async def reinstate_agent(self, agent: str) -> bool:
        return bool(await self._call(self._redis.delete(keys.suspended(self._tagged, agent))))

    async def is_suspended(self, agent: str) -> bool:
        return bool(await self._call(self._redis.exists(keys.suspended(self._tagged, agent))))

    async def revocation_state(
        self, jti: str, task: str, agent: str, delegators: Sequence[str] = ()
    ) -> RevocationState:
        token, task_revoked, any_agents_task, *cutoffs = await self._call(
            self._redis.mget(keys.revocation(self._tagged, jti, task, agent, tuple(delegators)))
        )
        known = [_integer(c) for c in cutoffs if c is not None]
        return RevocationState(
            token_revoked=token is not None,
            task_revoked=task_revoked is not None or any_agents_task is not None,
            agent_cutoff=max(known) if known else None,
        )

    async def claim_once(self, key: str, expires_at: int) -> bool:
        # Relative expiry: a Redis whose clock runs ahead must not forget a claim early.
        ttl = max(1, expires_at - int(time.time()))
        first = await self._call(self._redis.set(keys.once(self._prefix, key), "1", nx=True, ex=ttl))
        return first is True

    async def add_delegation(self, parent_jti: str, child_jti: str, parent_exp: int) -> None:
        key = keys.delegations(self._prefix, parent_jti)
        pipe = self._redis.pipeline(transaction=transactions(self._redis))
        pipe.sadd(key, child_jti)
        pipe.expireat(key, retention.token_revocation_expiry(parent_exp))
        await self._call(pipe.execute())

    async def delegations(self, jti: str) -> list[str]:
        members = await self._call(self._redis.smembers(keys.delegations(self._prefix, jti)))
        return sorted(_text(m) for m in members)

    # ------------------------------------------------------------------ audit

    async def append_audit(self, event: Mapping[str, Any]) -> StoredEvent:
        """Group commit (``SharedRounds``): events queue, and one compare-and-append carries
        everything queued while the previous round was in flight (queue order is chain
        order). Each caller gets its own event back once stored, or ``BackendUnavailable``
        if its round failed."""
        return await self._rounds.append(event)

    async def audit_events(self) -> AsyncIterator[StoredEvent]:
        """Every event, oldest first, in pages. An entry that is not a JSON object comes
        out as an empty event, so ``verify_chain`` reports it rather than crashing."""
        start = "-"
        while True:
            page = await self._call(self._redis.xrange(self._stream, min=start, max="+", count=_PAGE)) or []
            for entry_id, fields in page:
                yield StoredEvent(_text(entry_id), _decode_event((fields or {}).get("e")))
            if len(page) < _PAGE:
                return
            start = f"({_text(page[-1][0])}"

    async def audit_head(self) -> str:
        head = await self._call(self._redis.get(keys.audit_head(self._stream)))
        return GENESIS if head is None else _text(head)

    async def announce_policy_reload(self, origin: str, digest: str) -> None:
        channel = keys.policy_channel(self._tagged, self._db)
        message = f"{origin} {digest}"  # an older process compares the whole message with its origin
        await self._call(self._redis.execute_command(self._publish, channel, message))  # type: ignore[no-untyped-call]

    async def policy_reloads(self, origin: str) -> AsyncIterator[str | None]:
        """Subscribe (retrying every second while Redis is away); after each re-subscribe
        yield once, since an announcement may have been missed while disconnected."""
        channel = keys.policy_channel(self._tagged, self._db)
        reconnect = False  # the first subscription misses nothing: the policy was just loaded
        while True:
            pubsub = None
            try:
                if self._primaries is None:
                    pubsub = self._redis.pubsub()
                    await pubsub.subscribe(channel)
                else:  # sharded, on the node serving the channel's slot (``redis_cluster``)
                    pubsub = (await self._primaries.client_for(channel)).pubsub()
                    await pubsub.ssubscribe(channel)
                if reconnect:
                    yield None
                while True:
                    message = await pubsub.get_message(timeout=5.0) or {}
                    kind = message.get("type")
                    if kind == "sunsubscribe":  # the slot moved: subscribe again, on its new owner
                        reconnect = True
                        break
                    if kind not in ("message", "smessage"):
                        continue
                    sender, _, digest = _text(message.get("data")).partition(" ")
                    if sender != origin:
                        yield digest or None
            except (RedisError, OSError):
                reconnect = True
                if self._primaries is not None:  # the slot may have moved: read the map again
                    await self._primaries.refresh(channel)
                await asyncio.sleep(1.0)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def ping(self) -> None:
        await self._call(self._redis.ping())

    async def aclose(self) -> None:
        await self._rounds.aclose()
        if self._primaries is not None:
            await self._primaries.aclose()
        await self._call(self._redis.aclose())


def _integer(value: object) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise BackendUnavailable("redis: unexpected reply")


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    raise BackendUnavailable("redis: unexpected reply")


def _decode_event(raw: object) -> Mapping[str, Any]:
    try:
        event = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}
