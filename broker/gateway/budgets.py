"""Budgets: how much one token has used through the gateway (docs/gateway.md), per token id.

Counted across replicas in Redis (hash ``<prefix>budget:<jti>``, fields ``requests`` and
``bytes``, expiring with the token) or, without ``redis_url``, in this process. A request
costs one round trip when it starts (count it, read the bytes so far) and one when it
ends (its bytes, both directions); a long stream adds one per ``FLUSH_BYTES``, never one
per chunk. A token without a budget costs nothing. Redis unreachable: the request is
refused (``BackendUnavailable``), never let through uncounted.
"""

from __future__ import annotations

import time
from typing import Final, Protocol

from redis.asyncio import Redis

from broker.capability import Budget
from broker.errors import BackendUnavailable, BudgetExhausted
from broker.verify.redis_options import async_redis, transactions

FLUSH_BYTES: Final = 8 << 20
#: a byte budget is counted at least every eighth of it (at most every 16 KiB), so one
#: request overshoots it by at most that much past the point it was spent
FLUSH_FRACTION: Final = 8
MIN_FLUSH_BYTES: Final = 16 << 10


def flush_every(budget: Budget | None) -> int:
    """How many bytes a request counts locally before adding them to the shared ledger."""
    if budget is None or budget.bytes is None:
        return FLUSH_BYTES
    return max(MIN_FLUSH_BYTES, min(FLUSH_BYTES, budget.bytes // FLUSH_FRACTION))


#: the counters outlive the token by this much (a request that started just before exp)
KEEP_AFTER_EXPIRY: Final = 120


def budget_key(prefix: str, jti: str) -> str:
    return f"{prefix}budget:{jti}"


def spent(budget: Budget, requests: int, size: int) -> bool:
    """Is the budget used up, counting this request (``requests`` includes it)?"""
    return (budget.requests is not None and requests > budget.requests) or (
        budget.bytes is not None and size >= budget.bytes
    )


class Ledger(Protocol):
    async def begin(self, jti: str, exp: int, budget: Budget) -> None:
        """Count one request; ``BudgetExhausted`` if the budget is spent."""

    async def add_bytes(self, jti: str, exp: int, size: int) -> int:
        """Add ``size`` bytes; the total so far."""

    async def close(self) -> None: ...


class MemoryLedger:
    def __init__(self) -> None:
        self._used: dict[str, list[int]] = {}  # jti -> [requests, bytes, exp]

    def _entry(self, jti: str, exp: int) -> list[int]:
        entry = self._used.get(jti)
        if entry is None:
            if len(self._used) > 100_000:
                now = int(time.time())
                self._used = {k: v for k, v in self._used.items() if v[2] + KEEP_AFTER_EXPIRY > now}
            entry = self._used[jti] = [0, 0, exp]
        return entry

    async def begin(self, jti: str, exp: int, budget: Budget) -> None:
        entry = self._entry(jti, exp)
        entry[0] += 1
        if spent(budget, entry[0], entry[1]):
            raise BudgetExhausted("budget spent")

    async def add_bytes(self, jti: str, exp: int, size: int) -> int:
        entry = self._entry(jti, exp)
        entry[1] += size
        return entry[1]

    async def close(self) -> None:
        return None


class RedisLedger:
    def __init__(self, url: str, prefix: str, *, timeout: float = 1.0) -> None:
        self._redis: Redis = async_redis(url, timeout)
        self._prefix = prefix

    async def begin(self, jti: str, exp: int, budget: Budget) -> None:
        key = budget_key(self._prefix, jti)
        try:
            async with self._redis.pipeline(transaction=transactions(self._redis)) as pipe:
                pipe.hincrby(key, "requests", 1)
                pipe.hget(key, "bytes")
                pipe.expireat(key, exp + KEEP_AFTER_EXPIRY)
                requests, size, _ = await pipe.execute()
        except Exception as e:  # noqa: BLE001 -- a budget we cannot read fails closed
            raise BackendUnavailable(f"budget store: {type(e).__name__}") from None
        if spent(budget, int(requests), int(size or 0)):
            raise BudgetExhausted("budget spent")

    async def add_bytes(self, jti: str, exp: int, size: int) -> int:
        key = budget_key(self._prefix, jti)
        try:
            async with self._redis.pipeline(transaction=transactions(self._redis)) as pipe:
                pipe.hincrby(key, "bytes", size)
                pipe.expireat(key, exp + KEEP_AFTER_EXPIRY)
                total, _ = await pipe.execute()
        except Exception as e:  # noqa: BLE001
            raise BackendUnavailable(f"budget store: {type(e).__name__}") from None
        return int(total)

    async def close(self) -> None:
        await self._redis.aclose()


class Meter:
    """One request's byte count: flushed to the ledger every ``flush_every(budget)`` bytes
    and at the end; a request whose own bytes pass the budget stops at once."""

    def __init__(self, ledger: Ledger, jti: str, exp: int, budget: Budget | None) -> None:
        self._ledger, self._jti, self._exp, self._budget = ledger, jti, exp, budget
        self._flush_every = flush_every(budget)
        self.bytes_in = 0
        self.bytes_out = 0
        self._pending = 0

    async def count(self, size: int, *, inbound: bool) -> None:
        if inbound:
            self.bytes_in += size
        else:
            self.bytes_out += size
        if self._budget is None:
            return
        self._pending += size
        limit = self._budget.bytes
        if limit is not None and self.bytes_in + self.bytes_out > limit:
            await self.flush()  # counted, then refused: this request alone spent the budget
            raise BudgetExhausted("byte budget spent mid-stream")
        if self._pending >= self._flush_every:
            await self.flush()

    async def flush(self) -> None:
        if self._budget is None or not self._pending:
            return
        pending, self._pending = self._pending, 0
        total = await self._ledger.add_bytes(self._jti, self._exp, pending)
        if self._budget.bytes is not None and total > self._budget.bytes:
            raise BudgetExhausted("byte budget spent mid-stream")
