"""Where the broker keeps its downstream credentials' handles (docs/downstream.md, "Records"): the task
token of each task (accessor, sealed token, expiry), the task tokens of each agent, and
the Vault tokens each capability token carried. Accessors only, and the task token
sealed by Transit: nothing here is a usable secret without the broker's Vault token.

``RedisDownstreamRecords`` shares ``RedisState``'s client, prefix and bounded calls
(``RedisState.downstream_records``); ``MemoryDownstreamRecords`` serves the embedded state.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis

from broker.errors import BackendUnavailable
from broker.service.ports import TaskToken
from broker.verify import redis_keys as keys
from broker.verify.redis_options import transactions

T = TypeVar("T")
#: records outlive what they name by this much (clock skew, leeway)
MARGIN = 120


def _to_json(record: TaskToken) -> str:
    return json.dumps({"accessor": record.accessor, "sealed": record.sealed, "expires": record.expires})


def _from_json(raw: str | bytes) -> TaskToken:
    try:
        data = json.loads(raw)
        return TaskToken(str(data["accessor"]), str(data["sealed"]), int(data["expires"]))
    except (ValueError, KeyError, TypeError):
        raise BackendUnavailable("redis: malformed task token record") from None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisDownstreamRecords:
    def __init__(
        self, client: Redis, prefix: str, call: Callable[[Awaitable[Any]], Awaitable[Any]], *, tagged: str = ""
    ) -> None:
        """``tagged``: the prefix of the task records (the state tag on a cluster, where the
        task token and the agent's set are written in one transaction); the carried
        credentials, one key per token, stay under ``prefix``, spread."""
        self._redis, self._prefix, self._call = client, prefix, call
        self._tagged = tagged or prefix

    async def task_token(self, ref: str) -> TaskToken | None:
        raw = await self._call(self._redis.get(keys.task_vault_token(self._tagged, ref)))
        return None if raw is None else _from_json(raw)

    async def put_task_token(self, ref: str, agent: str, record: TaskToken, *, replace: bool) -> TaskToken:
        """Store ``record`` (only if none is stored, unless ``replace``); the one stored."""
        key = keys.task_vault_token(self._tagged, ref)
        agent_key = keys.agent_vault_tasks(self._tagged, agent)
        pipe = self._redis.pipeline(transaction=transactions(self._redis))
        pipe.set(key, _to_json(record), nx=not replace, exat=record.expires + MARGIN)
        pipe.get(key)
        # the agent's tasks, scored by expiry: past ones leave as new ones come (bounded by
        # the tasks live at once); the key itself outlives the latest
        pipe.zadd(agent_key, {ref: record.expires}, gt=True)
        pipe.zremrangebyscore(agent_key, "-inf", int(time.time()) - MARGIN)
        pipe.expireat(agent_key, record.expires + MARGIN, gt=True)
        pipe.expireat(agent_key, record.expires + MARGIN, nx=True)
        _, stored, *_ = await self._call(pipe.execute())
        return _from_json(stored)

    async def forget_task_token(self, ref: str) -> None:
        await self._call(self._redis.delete(keys.task_vault_token(self._tagged, ref)))

    async def agent_task_tokens(self, agent: str) -> list[str]:
        members = await self._call(self._redis.zrange(keys.agent_vault_tasks(self._tagged, agent), 0, -1))
        return sorted(_text(m) for m in members)

    async def note_carried(self, jti: str, accessors: list[str], expires: int) -> None:
        key = keys.carried_credentials(self._prefix, jti)
        pipe = self._redis.pipeline(transaction=transactions(self._redis))
        pipe.sadd(key, *accessors)
        pipe.expireat(key, expires + MARGIN)
        await self._call(pipe.execute())

    async def carried(self, jti: str) -> list[str]:
        members = await self._call(self._redis.smembers(keys.carried_credentials(self._prefix, jti)))
        return sorted(_text(m) for m in members)


class MemoryDownstreamRecords:
    """The same in one process (``broker dev`` with a Vault signer and memory state)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tasks: dict[str, TaskToken] = {}
        self._agents: dict[str, set[str]] = {}
        self._carried: dict[str, set[str]] = {}

    async def task_token(self, ref: str) -> TaskToken | None:
        record = self._tasks.get(ref)
        return record if record is not None and record.expires + MARGIN > self._clock() else None

    async def put_task_token(self, ref: str, agent: str, record: TaskToken, *, replace: bool) -> TaskToken:
        if replace or await self.task_token(ref) is None:
            self._tasks[ref] = record
        self._agents.setdefault(agent, set()).add(ref)
        return self._tasks[ref]

    async def forget_task_token(self, ref: str) -> None:
        self._tasks.pop(ref, None)

    async def agent_task_tokens(self, agent: str) -> list[str]:
        return sorted(self._agents.get(agent, ()))

    async def note_carried(self, jti: str, accessors: list[str], expires: int) -> None:
        self._carried.setdefault(jti, set()).update(accessors)

    async def carried(self, jti: str) -> list[str]:
        return sorted(self._carried.get(jti, ()))
