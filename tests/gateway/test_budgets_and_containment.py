"""Budgets counted in memory, the containment call as built, and the introspection cache."""

from __future__ import annotations

import asyncio
import json

import pytest

from broker.capability import Budget
from broker.errors import BudgetExhausted
from broker.gateway.budgets import MemoryLedger, Meter, spent
from broker.gateway.containment import contain_request
from broker.gateway.verification import CachedIntrospection


def test_spent() -> None:
    budget = Budget(requests=2, bytes=100)
    assert not spent(budget, 2, 99)
    assert spent(budget, 3, 0)
    assert spent(budget, 1, 100)
    assert not spent(Budget(bytes=10), 10**6, 0)


def test_memory_ledger_counts_requests_and_bytes() -> None:
    async def run() -> None:
        ledger = MemoryLedger()
        budget = Budget(requests=2, bytes=1000)
        await ledger.begin("j", 10**10, budget)
        meter = Meter(ledger, "j", 10**10, budget)
        await meter.count(600, inbound=True)
        await meter.count(300, inbound=False)
        await meter.flush()
        await ledger.begin("j", 10**10, budget)
        with pytest.raises(BudgetExhausted):
            await ledger.begin("j", 10**10, budget)
        await ledger.begin("other", 10**10, budget)  # per token

    asyncio.run(run())


def test_a_meter_without_budget_never_touches_the_ledger() -> None:
    class Refusing(MemoryLedger):
        async def add_bytes(self, jti: str, exp: int, size: int) -> int:
            raise AssertionError("no budget, no round trip")

    async def run() -> None:
        meter = Meter(Refusing(), "j", 1, None)
        await meter.count(10 << 20, inbound=True)
        await meter.flush()
        assert meter.bytes_in == 10 << 20

    asyncio.run(run())


def test_the_containment_call() -> None:
    call = contain_request(
        "https://broker.internal/",
        "cbk_servicekey",
        token="tok.en.sig",
        task="t/1",
        kind="git",
        resource="github.com/acme/widgets",
        action="write",
        request_id="r1",
    )
    assert call.url == "https://broker.internal/v1/tasks/t%2F1/contain"
    assert call.headers["Authorization"] == "Bearer cbk_servicekey"
    assert json.loads(call.body) == {
        "token": "tok.en.sig",
        "kind": "git",
        "resource": "github.com/acme/widgets",
        "action": "write",
        "request_id": "r1",
    }


def test_introspection_answers_are_kept_at_most_one_second() -> None:
    now = [0.0]
    calls: list[bytes] = []

    def post(url: str, body: bytes, headers: dict[str, str]) -> bytes:
        calls.append(body)
        return b'{"active": true}'

    client = CachedIntrospection("https://broker.internal/v1/introspect", "cbk_k", clock=lambda: now[0])
    client._post = post  # the transport, for this unit test of the cache
    assert client.is_active("t")
    now[0] = 0.99
    assert client.is_active("t")
    assert len(calls) == 1
    now[0] = 1.0
    assert client.is_active("t")
    assert len(calls) == 2
    with pytest.raises(ValueError, match="at most one second"):
        CachedIntrospection("https://broker.internal/v1/introspect", "k", ttl=2.0)
