"""Where endorsed session keys are published: the ``EndorsementStore`` port of the session-
key signer (``broker.backends.endorsed_signer``), and its two adapters.

- ``RedisEndorsementStore``: one Redis hash, ``<prefix>endorsed-keys`` (session kid ->
  compact endorsement), shared by every worker and replica, and a withdrawal mark per kid
  (``<prefix>rev:key:<kid>``) announced on the revocation channel, so every verifier with
  a revocation feed refuses a withdrawn key's tokens within a second.
- ``MemoryEndorsementStore``: the same contract in one process (tests, and the signer's
  unit tests without Redis).

Both are held to one contract (``tests/integration/test_endorsement_store_contract.py``).
Every I/O failure is ``BackendUnavailable``; nothing here decides what to publish or sign.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final, Protocol, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from broker.errors import BackendUnavailable
from broker.verify import redis_keys
from broker.verify.redis_options import database, publish_command

__all__ = [
    "EndorsementStore",
    "MemoryEndorsementStore",
    "RedisEndorsementStore",
    "endorsed_keys_key",
    "withdraw_keys",
]

_MARGIN: Final = 0.25  # past the Redis socket timeout, as RedisState
_T = TypeVar("_T")


class EndorsementStore(Protocol):
    async def entries(self) -> dict[str, str]:
        """Every stored endorsement: session kid -> compact endorsement."""
        ...

    async def withdrawn(self, kids: Iterable[str]) -> frozenset[str]:
        """Those of ``kids`` marked withdrawn (for good, whatever their entry says)."""
        ...

    async def add(self, kid: str, compact: str) -> bool:
        """Store an endorsement under a kid not stored yet; False if one is."""
        ...

    async def remove(self, kids: Sequence[str]) -> None:
        """Delete these entries (nothing else: not a withdrawal)."""
        ...

    async def withdraw(self, until: dict[str, int]) -> None:
        """Mark each kid withdrawn until its epoch second, delete its entry, announce it."""
        ...

    async def aclose(self) -> None: ...


def endorsed_keys_key(prefix: str) -> str:
    """The hash of stored endorsements: session kid -> compact endorsement."""
    return f"{prefix}endorsed-keys"


# KEYS: the endorsed-keys hash, then the withdrawal key of each kid. ARGV: the channel,
# then per kid: the kid, the withdrawal's expiry (epoch seconds), its announcement.
# Marks each kid withdrawn (durable, for every reader) and removes its entry, then
# announces it: never announced unstored, as revocations.
_WITHDRAW = """
for i = 2, #KEYS do
  local a = 2 + (i - 2) * 3
  redis.call('SET', KEYS[i], '1', 'EXAT', ARGV[a + 1])
  redis.call('HDEL', KEYS[1], ARGV[a])
  redis.call('PUBLISH', ARGV[1], ARGV[a + 2])
end
return #KEYS - 1
"""


async def withdraw_keys(redis: Redis, prefix: str, until: dict[str, int]) -> None:
    """Withdraw session keys (kid -> the end of their publication) for good: every broker
    stops publishing and signing with them, and every verifier with a revocation feed
    refuses their tokens, within a second; an entry written back later is ignored."""
    kids = sorted(until)
    if not kids:
        return
    args: list[str | int] = [redis_keys.revocation_channel(prefix, database(redis))]
    for kid in kids:
        args += [kid, until[kid], redis_keys.revocation_message("key", kid, until[kid])]
    names = [endorsed_keys_key(prefix), *(redis_keys.withdrawn_key(prefix, kid) for kid in kids)]
    script = _WITHDRAW.replace("'PUBLISH'", repr(publish_command(redis)))  # sharded on a cluster
    await redis.eval(script, len(names), *names, *args)


class RedisEndorsementStore:
    """The store on the broker's Redis (decoded replies); takes ownership of ``redis``."""

    def __init__(self, redis: Redis, prefix: str, timeout: float) -> None:
        self._redis, self._prefix, self._timeout = redis, prefix, timeout
        self._hash = endorsed_keys_key(prefix)

    async def entries(self) -> dict[str, str]:
        reply = await self._call(self._redis.hgetall(self._hash))
        stored = {k: v for k, v in reply.items() if isinstance(k, str) and isinstance(v, str)}
        if len(stored) != len(reply):
            raise BackendUnavailable("redis: the endorsed-keys hash is malformed")
        return stored

    async def withdrawn(self, kids: Iterable[str]) -> frozenset[str]:
        names = list(kids)
        if not names:
            return frozenset()
        flags = await self._call(self._redis.mget([redis_keys.withdrawn_key(self._prefix, kid) for kid in names]))
        return frozenset(kid for kid, flag in zip(names, flags, strict=True) if flag is not None)

    async def add(self, kid: str, compact: str) -> bool:
        return bool(await self._call(self._redis.hsetnx(self._hash, kid, compact)) == 1)

    async def remove(self, kids: Sequence[str]) -> None:
        if kids:
            await self._call(self._redis.hdel(self._hash, *kids))

    async def withdraw(self, until: dict[str, int]) -> None:
        await self._call(withdraw_keys(self._redis, self._prefix, until))

    async def aclose(self) -> None:
        await self._redis.aclose()

    def __repr__(self) -> str:
        return f"RedisEndorsementStore(hash={self._hash!r})"

    async def _call(self, awaitable: Awaitable[_T]) -> _T:
        """One bounded round trip; every I/O failure becomes ``BackendUnavailable``."""
        try:
            return await asyncio.wait_for(awaitable, self._timeout + _MARGIN)
        except (RedisError, OSError) as e:  # OSError covers TimeoutError
            raise BackendUnavailable(f"redis: {type(e).__name__}") from None
        except UnicodeDecodeError:  # a value written by someone else, not by a broker
            raise BackendUnavailable("redis: the endorsed-keys hash is malformed (not UTF-8)") from None


class MemoryEndorsementStore:
    """The store in this process's memory. ``clock`` (epoch seconds) ends withdrawals."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._entries: dict[str, str] = {}
        self._withdrawn: dict[str, int] = {}  # kid -> withdrawn until (epoch seconds)
        self._clock = clock
        self.closed = False

    async def entries(self) -> dict[str, str]:
        self._check_open()
        return dict(self._entries)

    async def withdrawn(self, kids: Iterable[str]) -> frozenset[str]:
        self._check_open()
        now = self._clock()
        return frozenset(kid for kid in kids if self._withdrawn.get(kid, -1) > now)

    async def add(self, kid: str, compact: str) -> bool:
        self._check_open()
        if kid in self._entries:
            return False
        self._entries[kid] = compact
        return True

    async def remove(self, kids: Sequence[str]) -> None:
        self._check_open()
        for kid in kids:
            self._entries.pop(kid, None)

    async def withdraw(self, until: dict[str, int]) -> None:
        self._check_open()
        for kid, end in until.items():
            self._withdrawn[kid] = end
            self._entries.pop(kid, None)

    async def aclose(self) -> None:
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise BackendUnavailable("memory: the endorsement store is closed")
