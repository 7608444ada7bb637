"""One contract, two StateStores: every test runs against MemoryState, against RedisState
on a real redis-server and (``ha`` suite) against RedisState on a real 3-primary Redis
Cluster. "Two replicas" are two RedisState objects on the same Redis (and, for the
one-process MemoryState, the same object twice).

Each test gets a fresh key prefix and stream, so tests never see each other's state.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import pytest
from redis.asyncio import Redis

from broker.audit.chain import GENESIS, verify_chain
from broker.audit.stored import StoredEvent
from broker.backends import redis_rounds, redis_state
from broker.backends.memory_state import MemoryState
from broker.backends.redis_rounds import SharedRounds
from broker.backends.redis_state import RedisState
from broker.capability.lifetime import REVOCATION_GRACE
from broker.errors import BackendUnavailable
from broker.service import retention
from broker.service.ports import MintClaim, RevocationState, StateStore, TaskClaim
from broker.verify import redis_keys as keys
from broker.verify.redis_options import async_redis
from tests.servers.processes import RedisServer
from tests.servers.redis_cluster import RedisCluster

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]


@dataclass
class Backend:
    """How to open replicas onto one shared state, and how to tamper with its audit stream."""

    name: str
    url: str = ""
    prefix: str = ""
    stream: str = ""
    memory: MemoryState | None = None

    def open(self) -> StateStore:
        if self.memory is not None:
            return self.memory
        return RedisState.from_url(self.url, prefix=self.prefix, stream=self.stream)

    @asynccontextmanager
    async def replicas(self, n: int = 2) -> AsyncIterator[list[StateStore]]:
        stores = [self.open() for _ in range(n)]
        try:
            yield stores
        finally:
            for store in stores:
                await store.aclose()

    async def rewrite_event(self, index: int, field: str, value: object) -> None:
        """Change one field of one stored event in place, keeping its stream id."""
        if self.memory is not None:
            stored = self.memory._events[index]
            self.memory._events[index] = replace(stored, event={**stored.event, field: value})
            return
        raw = async_redis(self.url, 5.0)
        try:
            entries = await raw.xrange(self.stream) or []
            await raw.delete(self.stream)
            for i, (entry_id, fields) in enumerate(entries):
                assert entry_id is not None
                assert fields is not None
                body = json.loads(fields["e"])
                if i == index:
                    body[field] = value
                await raw.xadd(self.stream, {"e": json.dumps(body)}, id=entry_id)
        finally:
            await raw.aclose()


@pytest.fixture(params=["memory", "redis", pytest.param("cluster", marks=pytest.mark.ha)])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return Backend("memory", memory=MemoryState())
    prefix = f"test:{uuid.uuid4().hex}:"
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        stream = keys.cluster_stream(f"{prefix}audit", cluster=True)
        return Backend("cluster", url=cluster.url, prefix=prefix, stream=stream)
    server: RedisServer = request.getfixturevalue("redis_server")
    return Backend("redis", url=server.url, prefix=prefix, stream=f"{prefix}audit")


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


def revocation(*, token: bool = False, task: bool = False, cutoff: int | None = None) -> RevocationState:
    return RevocationState(token_revoked=token, task_revoked=task, agent_cutoff=cutoff)


async def all_events(store: StateStore) -> list[StoredEvent]:
    return [e async for e in store.audit_events()]


# ---------------------------------------------------------------- rate limits


def test_rate_limit_is_exact_across_two_replicas_hammering_at_once(backend: Backend) -> None:
    async def body() -> None:
        async with backend.replicas(2) as (a, b):
            results = await asyncio.gather(*(s.take_rate("alice", 25, 3600) for _ in range(50) for s in (a, b)))
            assert sum(r == 0.0 for r in results) == 25
            refused = [r for r in results if r > 0]
            assert len(refused) == 75
            # the next slot frees one emission interval (144 s) after the burst began
            assert all(140 < r <= 144 for r in refused)

    run(body)


def test_retry_after_is_the_time_to_the_next_slot(backend: Backend) -> None:
    async def body() -> None:
        async with backend.replicas(1) as (store,):
            assert [await store.take_rate("alice", 2, 600) for _ in range(2)] == [0.0, 0.0]
            wait = await store.take_rate("alice", 2, 600)
            assert 295 < wait <= 300
            assert await store.take_rate("bob", 2, 600) == 0.0  # another agent, another allowance

    run(body)


def test_refused_mints_spend_nothing(backend: Backend) -> None:
    async def body() -> None:
        async with backend.replicas(1) as (store,):
            assert await store.take_rate("alice", 1, 1) == 0.0
            assert all(r > 0 for r in [await store.take_rate("alice", 1, 1) for _ in range(20)])
            await asyncio.sleep(1.05)
            assert await store.take_rate("alice", 1, 1) == 0.0

    run(body)


# ---------------------------------------------------------------- tasks


def test_two_agents_using_one_task_id_each_get_their_own_task(backend: Backend) -> None:
    """Task squatting (issue 11): a task id is scoped to its agent, on every replica."""

    async def body() -> None:
        async with backend.replicas(2) as (a, b):
            now = int(time.time())
            calls = [
                store.claim_task("race", agent, (agent,), now, now + 300)
                for _ in range(25)
                for store, agent in ((a, "alice"), (b, "bob"))
            ]
            assert set(await asyncio.gather(*calls)) == {TaskClaim.OWNED}
            assert await a.revoke_task("race", "alice", now)
            assert await b.claim_task("race", "alice", ("alice",), now, now + 300) is TaskClaim.REVOKED
            assert await a.claim_task("race", "bob", ("bob",), now, now + 300) is TaskClaim.OWNED
            assert (await b.revocation_state("j", "race", "alice")).task_revoked
            assert not (await b.revocation_state("j", "race", "bob")).task_revoked
            # a token bob holds by delegation from alice belongs to alice's task
            assert (await b.revocation_state("j", "race", "bob", ("alice",))).task_revoked

    run(body)


def test_the_kill_switch_suspends_an_agent_on_every_replica_until_reinstated(backend: Backend) -> None:
    async def body() -> None:
        async with backend.replicas(2) as (a, b):
            now = int(time.time())
            agent = f"k-{uuid.uuid4().hex[:8]}"
            await a.revoke_agent(agent, now + 5)
            assert await b.is_suspended(agent)
            assert (await b.claim_mint(agent, None, "t1", now + 60, now + 300)).task is TaskClaim.SUSPENDED
            # an exchange whose token names the suspended agent anywhere in its chain
            chain = ("helper", agent)
            assert await b.claim_task("t1", agent, chain, now + 60, now + 300) is TaskClaim.SUSPENDED
            assert await b.reinstate_agent(agent)
            assert not await a.is_suspended(agent)
            assert not await a.reinstate_agent(agent)
            # reinstated, but a token stamped at or before the cut-off would be born revoked
            assert (await a.claim_mint(agent, None, "t1", now + 5, now + 300)).task is TaskClaim.SUSPENDED
            assert (await a.claim_mint(agent, None, "t1", now + 6, now + 300)).task is TaskClaim.OWNED

    run(body)


def test_claim_mint_spends_the_rate_then_claims_the_task_in_one_call(backend: Backend) -> None:
    async def body() -> None:
        async with backend.replicas(2) as (a, b):
            now = int(time.time())
            agent = f"m-{uuid.uuid4().hex[:8]}"
            first = await a.claim_mint(agent, (2, 3600), "t-m1", now, now + 300)
            assert first == MintClaim(0.0, TaskClaim.OWNED)
            other = await b.claim_mint("someone-else", None, "t-m1", now, now + 300)
            assert other == MintClaim(0.0, TaskClaim.OWNED)  # no rate: straight to its own task
            assert (await b.claim_mint(agent, (2, 3600), "t-m2", now, now + 300)).task is TaskClaim.OWNED
            refused = await a.claim_mint(agent, (2, 3600), "t-m3", now, now + 300)
            assert refused.task is None
            assert 1700 < refused.wait <= 1800  # the next of 2 per hour
            assert not await a.task_live("t-m3", agent)  # a refused rate claims nothing
            await a.revoke_task("t-m4", None, now)
            assert (await b.claim_mint("x", None, "t-m4", now, now + 300)).task is TaskClaim.REVOKED

    run(body)


def test_concurrent_mint_claims_answer_as_if_each_ran_alone(backend: Backend) -> None:
    """Many claims at once (on Redis: group-committed into few script calls) keep every
    rule: each agent's rate binds exactly, each agent its own task, revoked tasks refused,
    and every owned claim recorded."""

    async def body() -> None:
        async with backend.replicas(2) as (a, b):
            now = int(time.time())
            run_id = uuid.uuid4().hex[:8]
            limited, free = f"lim-{run_id}", f"free-{run_id}"
            await a.revoke_task(f"gone-{run_id}", None, now)
            other = f"lim2-{run_id}"
            calls = [
                *((a if i % 2 else b).claim_mint(limited, (5, 3600), f"l-{run_id}-{i}", now, now + 300)
                  if i % 3 else a.claim_mint(other, (2, 3600), f"o-{run_id}-{i}", now, now + 300)
                  for i in range(12)),
                *((a if i % 2 else b).claim_mint(free if i % 2 else f"{free}-2", None, f"race-{run_id}-{i // 2}",
                                                 now, now + 300)
                  for i in range(40)),
                a.claim_mint(free, None, f"gone-{run_id}", now, now + 300),
            ]  # fmt: skip
            results = await asyncio.gather(*calls)
            rate, races, gone = results[:12], results[12:52], results[52]
            assert sum(r.task is TaskClaim.OWNED for i, r in enumerate(rate) if i % 3) == 5  # of 8
            assert sum(r.task is TaskClaim.OWNED for i, r in enumerate(rate) if not i % 3) == 2  # of 4
            assert all(r.task is None and r.wait > 0 for r in rate if r.task is not TaskClaim.OWNED)
            for pair in range(20):
                outcomes = sorted(r.task.value for r in races[2 * pair : 2 * pair + 2] if r.task is not None)
                assert outcomes == ["owned", "owned"], (pair, outcomes)
            assert gone == MintClaim(0.0, TaskClaim.REVOKED)
            owned = [i for i, r in enumerate(rate) if r.task is TaskClaim.OWNED and i % 3]
            for i in owned:
                state = await b.revocation_state(f"lj{i}", f"l-{run_id}-{i}", limited)
                assert state == RevocationState(token_revoked=False, task_revoked=False, agent_cutoff=None)
                assert await a.task_live(f"l-{run_id}-{i}", limited)

    run(body)


@pytest.fixture
def rounds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Each shared round trip: (claims, events) in it."""
    seen: list[tuple[int, int]] = []
    original = SharedRounds._round

    async def counting(self: SharedRounds, claims: list[Any], events: list[Any]) -> Any:
        seen.append((len(claims), len(events)))
        return await original(self, claims, events)

    monkeypatch.setattr(SharedRounds, "_round", counting)
    return seen


def test_redis_group_commits_concurrent_mint_claims(redis_backend: Backend, rounds: list[tuple[int, int]]) -> None:
    async def body() -> None:
        async with redis_backend.replicas(1) as (store,):
            now = int(time.time())
            run_id = uuid.uuid4().hex[:8]
            results = await asyncio.gather(
                *(store.claim_mint(f"a-{run_id}", None, f"t-{run_id}-{i}", now, now + 300) for i in range(300))
            )
            assert all(r == MintClaim(0.0, TaskClaim.OWNED) for r in results)

    run(body)
    assert sum(c for c, _ in rounds) == 300
    assert len(rounds) <= 10, rounds  # the first alone, then everything queued meanwhile


def test_redis_claims_and_audit_events_share_round_trips(redis_backend: Backend, rounds: list[tuple[int, int]]) -> None:
    """Mint-shaped traffic: claim, then append; the appends ride with later claims."""

    async def body() -> None:
        async with redis_backend.replicas(1) as (store,):
            now = int(time.time())
            run_id = uuid.uuid4().hex[:8]

            async def one_mint(i: int) -> StoredEvent:
                claim = await store.claim_mint(f"a-{run_id}", None, f"t-{run_id}-{i}", now, now + 300)
                assert claim.task is TaskClaim.OWNED
                return await store.append_audit({"type": "mint", "n": i})

            await asyncio.gather(*(one_mint(i) for i in range(300)))  # more than one round's claims
            assert verify_chain(await all_events(store)).ok

    run(body)
    assert sum(c for c, _ in rounds) == 300
    assert sum(e for _, e in rounds) == 300
    assert any(c and e for c, e in rounds), rounds  # claims and events in one round trip
    assert len(rounds) <= 20, rounds


def test_redis_a_failed_round_fails_every_claim_and_event_in_it(redis_server: RedisServer) -> None:
    async def body() -> None:
        store = RedisState.from_url(redis_server.url, prefix=f"fail-{uuid.uuid4().hex[:8]}:")
        try:

            def broken(**_: Any) -> Any:
                raise ConnectionError("dropped")

            store._redis.pipeline = broken  # type: ignore[assignment,method-assign]
            now = int(time.time())
            results = await asyncio.gather(
                *(store.claim_mint("a", None, f"t{i}", now, now + 300) for i in range(50)),
                *(store.append_audit({"type": "mint", "n": i}) for i in range(50)),
                return_exceptions=True,
            )
            assert all(isinstance(r, BackendUnavailable) for r in results), results
            assert {str(r) for r in results} == {"redis: ConnectionError"}
        finally:
            await store.aclose()

    asyncio.run(body())


def test_redis_scripts_flushed_from_redis_are_loaded_again(redis_server: RedisServer) -> None:
    """A restarted (or SCRIPT FLUSHed) Redis forgets the scripts: the next round loads them."""

    async def body() -> None:
        store = RedisState.from_url(redis_server.url, prefix=f"flush-{uuid.uuid4().hex[:8]}:")
        raw = Redis.from_url(redis_server.url)
        try:
            now = int(time.time())
            assert (await store.claim_mint("a", None, "t1", now, now + 300)).task is TaskClaim.OWNED
            await raw.script_flush()
            assert (await store.claim_mint("a", None, "t2", now, now + 300)).task is TaskClaim.OWNED
            assert (await store.append_audit({"type": "mint"})).event["type"] == "mint"
        finally:
            await store.aclose()
            await raw.aclose()

    asyncio.run(body())


def test_redis_a_round_half_refused_as_noscript_sends_only_that_half_again(redis_server: RedisServer) -> None:
    """Redis ran the append but not the claims (their script unknown): only the claims go
    again, so no event is appended twice."""

    async def body() -> None:
        store = RedisState.from_url(
            redis_server.url, prefix=f"half-{uuid.uuid4().hex[:8]}:", stream=f"s-{uuid.uuid4().hex[:8]}"
        )
        try:
            now = int(time.time())
            assert (await store.claim_mint("a", None, "t0", now, now + 300)).task is TaskClaim.OWNED
            shas = store._rounds._shas
            assert shas is not None
            store._rounds._shas = ("0" * 40, shas[1])  # the claim script "forgotten", the append's known
            claimed, stored = await asyncio.gather(
                store.claim_mint("a", None, "t1", now, now + 300), store.append_audit({"type": "mint", "n": 1})
            )
            assert claimed.task is TaskClaim.OWNED
            events = await all_events(store)
            assert [e.event["n"] for e in events] == [1]
            assert events[0].id == stored.id
        finally:
            await store.aclose()

    asyncio.run(body())


def test_task_records_and_revocation(backend: Backend) -> None:
    async def body() -> None:
        async with backend.replicas(1) as (store,):
            now = int(time.time())

            async def claim(task: str, agent: str) -> TaskClaim:
                return await store.claim_task(task, agent, (agent,), now, now + 300)

            assert not await store.task_live("t1", "alice")
            assert await claim("t1", "alice") is TaskClaim.OWNED
            assert await claim("t1", "alice") is TaskClaim.OWNED
            assert await store.task_live("t1", "alice")
            assert not await store.task_live("t1", "bob")
            # an agent's revocation is written only for a task it has a record of
            assert not await store.revoke_task("t1", "bob", now, only_if_live=True)
            assert await claim("t1", "bob") is TaskClaim.OWNED
            assert await store.revoke_task("t1", "alice", now, only_if_live=True)
            assert await claim("t1", "alice") is TaskClaim.REVOKED
            assert await claim("t1", "bob") is TaskClaim.OWNED
            assert await claim("t-unrevoked", "alice") is TaskClaim.OWNED
            assert await store.revoke_task("t-new", None, now)  # an admin's: every agent, before any mint
            assert await claim("t-new", "bob") is TaskClaim.REVOKED
            assert await claim("t-new", "alice") is TaskClaim.REVOKED
            assert not await store.task_live("t-new", "bob")

    run(body)


# ---------------------------------------------------------------- revocation


def test_revocations_are_seen_by_every_replica(backend: Backend) -> None:
    async def body() -> None:
        async with backend.replicas(2) as (a, b):
            now = int(time.time())
            assert await b.revocation_state("j1", "t1", "alice") == revocation()
            await a.revoke_token("j1", now + 300)
            assert await b.revocation_state("j1", "t1", "alice") == revocation(token=True)
            assert await b.revocation_state("j2", "t1", "alice") == revocation()
            await a.revoke_task("t1", "alice", now)
            assert await b.revocation_state("j2", "t1", "alice") == revocation(task=True)
            assert await b.revocation_state("j2", "t1", "bob") == revocation()  # bob's own t1
            assert await b.revocation_state("j2", "t2", "alice") == revocation()
            await a.revoke_agent("alice", now)
            assert await b.revocation_state("j2", "t2", "alice") == revocation(cutoff=now)
            assert await b.revocation_state("j2", "t2", "bob") == revocation()

    run(body)


def test_a_kill_switch_up_the_delegation_chain_revokes_the_delegated_token(backend: Backend) -> None:
    async def body() -> None:
        async with backend.replicas(2) as (a, b):
            now = int(time.time())
            assert await b.revocation_state("j1", "t1", "helper", ("alice",)) == revocation()
            await a.revoke_agent("alice", now)  # the root of the chain
            assert await b.revocation_state("j1", "t1", "helper", ("alice",)) == revocation(cutoff=now)
            assert await b.revocation_state("j1", "t1", "helper") == revocation()  # chain not given
            await a.revoke_agent("helper", now - 50)
            await a.revoke_agent("mid", now + 9)
            state = await b.revocation_state("j1", "t1", "helper", ("mid", "alice"))
            assert state.agent_cutoff == now + 9  # the latest cut-off in the chain wins

    run(body)


def test_claim_once_is_true_exactly_once_across_replicas(backend: Backend) -> None:
    async def body() -> None:
        async with backend.replicas(2) as (a, b):
            until = int(time.time()) + 60
            results = await asyncio.gather(*(s.claim_once("jwt:abc", until) for _ in range(10) for s in (a, b)))
            assert results.count(True) == 1
            assert await a.claim_once("jwt:other", until) is True

    run(body)


def test_claim_once_is_forgotten_after_its_expiry(backend: Backend) -> None:
    async def body() -> None:
        async with backend.replicas(1) as (a,):
            soon = int(time.time()) + 1
            assert await a.claim_once("proof:x", soon) is True
            assert await a.claim_once("proof:x", soon) is False
            await asyncio.sleep(2.1)
            assert await a.claim_once("proof:x", soon + 3600) is True

    run(body)


def test_delegations_are_recorded_per_parent(backend: Backend) -> None:
    async def body() -> None:
        async with backend.replicas(2) as (a, b):
            exp = int(time.time()) + 300
            assert await b.delegations("p1") == []
            await a.add_delegation("p1", "c1", exp)
            await b.add_delegation("p1", "c2", exp)
            await a.add_delegation("c1", "g1", exp)
            assert await b.delegations("p1") == ["c1", "c2"]
            assert await a.delegations("c1") == ["g1"]
            assert await a.delegations("c2") == []

    run(body)


def test_the_agent_cutoff_keeps_the_maximum_under_concurrent_kills(backend: Backend) -> None:
    async def body() -> None:
        async with backend.replicas(2) as (a, b):
            now = int(time.time())
            cutoffs = [now - 500 + (i * 37) % 400 for i in range(40)] + [now]
            await asyncio.gather(*(s.revoke_agent("alice", c) for c in cutoffs for s in (a, b)))
            await a.revoke_agent("alice", now - 1000)  # an older kill never undoes a newer one
            state = await b.revocation_state("j1", "t1", "alice")
            assert state.agent_cutoff == now
            assert state.revokes(now)
            assert not state.revokes(now + 1)

    run(body)


# ---------------------------------------------------------------- audit


def test_audit_chain_stays_linear_under_concurrent_appends(backend: Backend) -> None:
    async def body() -> None:
        async with backend.replicas(2) as (a, b):
            stores = (a, b)
            returned = await asyncio.gather(
                *(stores[i % 2].append_audit({"action": "mint", "n": i}) for i in range(200))
            )
            stored = await all_events(a)
            report = verify_chain(stored)
            assert report.ok, report.broken
            assert report.count == len(stored) == 200
            assert report.head == stored[-1].event["hash"]
            assert stored[0].event["prev"] == GENESIS
            assert sorted(e.event["n"] for e in stored) == list(range(200))
            assert sorted(returned, key=lambda e: e.event["n"]) == sorted(stored, key=lambda e: e.event["n"])
            ids = [_id_key(e.id) for e in stored]
            assert ids == sorted(ids)
            assert len(set(ids)) == 200

    run(body)


def test_redis_an_append_onto_a_moved_head_goes_again_in_order(redis_backend: Backend) -> None:
    """Another replica moved the head: the events are sealed again and go first in the next
    round, before newer ones, so each replica's events keep their order in the chain."""

    async def body() -> None:
        async with redis_backend.replicas(2) as (a, b):
            await b.append_audit({"who": "b", "n": -1})  # a's idea of the head is now stale
            first = [asyncio.ensure_future(a.append_audit({"who": "a", "n": i})) for i in range(25)]
            for _ in range(3):
                await asyncio.sleep(0)  # a's first round (bound to find the head moved) is in flight
            later = [asyncio.ensure_future(a.append_audit({"who": "a", "n": i})) for i in range(25, 50)]
            results = await asyncio.gather(*first, *later, *(b.append_audit({"who": "b", "n": i}) for i in range(50)))
            stored = await all_events(a)
            assert verify_chain(stored).ok
            for who in ("a", "b"):
                order = [e.event["n"] for e in stored if e.event["who"] == who and e.event["n"] >= 0]
                assert order == list(range(50)), who
            assert {r.id for r in results} <= {e.id for e in stored}

    run(body)


def test_redis_an_append_that_keeps_finding_the_head_moved_fails_closed(
    redis_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body() -> None:
        async with redis_backend.replicas(2) as (a, b):
            await a.append_audit({"n": 0})
            await b.append_audit({"n": 1})  # a's head guess is stale: its next append conflicts
            monkeypatch.setattr(redis_rounds, "AUDIT_ATTEMPTS", 1)
            with pytest.raises(BackendUnavailable, match="audit stream too busy"):
                await a.append_audit({"n": 2})
            stored = await all_events(a)
            assert [e.event["n"] for e in stored] == [0, 1]  # nothing half-written
            assert verify_chain(stored).ok

    run(body)


def test_audit_events_reads_every_page_in_order(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_state, "_PAGE", 7)

    async def body() -> None:
        async with backend.replicas(1) as (store,):
            assert await all_events(store) == []
            for i in range(21):  # three full pages, then an empty one
                await store.append_audit({"n": i})
            await store.append_audit({"n": 21})
            stored = await all_events(store)
            assert [e.event["n"] for e in stored] == list(range(22))
            assert verify_chain(stored).ok

    run(body)


@pytest.mark.parametrize("index", [0, 3, 5])
def test_a_tampered_event_is_named_by_verify_chain(backend: Backend, index: int) -> None:
    async def body() -> None:
        async with backend.replicas(1) as (store,):
            for i in range(6):
                await store.append_audit({"action": "mint", "agent": "alice", "n": i})
            before = await all_events(store)
            assert verify_chain(before).ok
            await backend.rewrite_event(index, "agent", "mallory")
            after = await all_events(store)
            assert [e.id for e in after] == [e.id for e in before]
            report = verify_chain(after)
            assert report.broken is not None
            assert (report.broken.index, report.broken.id) == (index, before[index].id)
            assert report.count == index

    run(body)


def test_ping(backend: Backend) -> None:
    async def body() -> None:
        async with backend.replicas(1) as (store,):
            await store.ping()

    run(body)


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, seq = stream_id.split("-")
    return int(ms), int(seq)


# ---------------------------------------------------------------- Redis only: how long keys live


@pytest.fixture
def redis_backend(redis_server: RedisServer) -> Backend:
    prefix = f"test:{uuid.uuid4().hex}:"
    return Backend("redis", url=redis_server.url, prefix=prefix, stream=f"{prefix}audit")


def test_no_key_grows_unread_every_key_expires_but_suspensions_and_the_chain(redis_backend: Backend) -> None:
    """Issue 11 reproduction 7: ``task-jtis:<task>`` got one member per mint and a sliding
    expiry, and nothing read it. After every kind of write the store makes, each key under
    the prefix has a TTL, except the ones SECURITY.md lists as bounded otherwise: an
    agent's suspension (until reinstated) and the audit stream with its head."""
    p = redis_backend.prefix

    async def body() -> None:
        raw = Redis.from_url(redis_backend.url, decode_responses=True)
        async with redis_backend.replicas(1) as (store,):
            now = int(time.time())
            for i in range(20):
                await store.claim_mint("alice", (100, 60), "t-many", now, now + 300)  # one task, many mints
                await store.claim_mint("bob", None, f"t-{i}", now, now + 300)
            await store.revoke_token("j1", now + 300)
            await store.revoke_task("t-many", "alice", now)
            await store.revoke_task("t-any", None, now)
            await store.revoke_agent("carol", now)
            await store.claim_once("proof-1", now + 60)
            await store.add_delegation("j1", "j2", now + 300)
            await store.append_audit({"type": "mint"})
            names = [name async for name in raw.scan_iter(match=f"{p}*")]
            assert not [n for n in names if "task-jtis" in n]
            assert len([n for n in names if n.startswith(f"{p}task:alice/")]) == 1  # one record per task
            no_ttl = sorted([n for n in names if await raw.ttl(n) == -1])
            assert no_ttl == sorted([f"{p}audit", f"{p}audit:head", keys.suspended(p, "carol")])
        await raw.aclose()

    run(body)


def test_redis_keys_expire_on_the_retention_schedule(redis_backend: Backend) -> None:
    p = redis_backend.prefix

    async def body() -> None:
        raw = Redis.from_url(redis_backend.url, decode_responses=True)
        async with redis_backend.replicas(1) as (store,):
            now = int(time.time())
            await store.revoke_token("j1", now + 300)
            await store.revoke_task("t1", "alice", now)
            await store.revoke_agent("alice", now - 10)
            await store.revoke_agent("alice", now)
            await store.claim_task("t2", "bob", ("bob",), now, now + 3000)
            await store.claim_task("t2", "bob", ("bob",), now, now + 300)  # does not shorten the record
            await store.take_rate("alice", 10, 60)
            assert await raw.expiretime(keys.revoked_token(p, "j1")) == retention.token_revocation_expiry(now + 300)
            assert await raw.expiretime(keys.revoked_task(p, "alice/t1")) == retention.task_revocation_expiry(now)
            assert await raw.expiretime(keys.agent_cutoff(p, "alice")) == retention.agent_cutoff_expiry(now)
            record_expiry = retention.task_record_expiry(now + 3000)
            assert await raw.expiretime(keys.task(p, "bob/t2")) == record_expiry
            assert await raw.ttl(keys.suspended(p, "alice")) == -1  # until reinstated, by design
            assert 0 < await raw.pttl(keys.rate(p, "alice")) <= 6000  # one emission interval
        await raw.aclose()

    run(body)


def test_redis_task_record_is_gone_once_its_last_token_expired(redis_backend: Backend) -> None:
    async def body() -> None:
        async with redis_backend.replicas(1) as (store,):
            long_ago = int(time.time()) - REVOCATION_GRACE - 10
            await store.claim_task("t-old", "alice", ("alice",), long_ago - 300, long_ago)
            assert not await store.task_live("t-old", "alice")

    run(body)


def test_redis_script_cache_flush_is_transparent(redis_backend: Backend) -> None:
    async def body() -> None:
        raw = Redis.from_url(redis_backend.url)
        async with redis_backend.replicas(1) as (store,):
            assert await store.take_rate("alice", 5, 60) == 0.0
            await raw.script_flush()
            assert await store.take_rate("alice", 5, 60) == 0.0
            assert (await store.append_audit({"n": 1})).event["prev"] == GENESIS
        await raw.aclose()

    run(body)


def test_redis_two_streams_on_one_redis_keep_two_intact_chains(redis_server: RedisServer) -> None:
    """Two deployments sharing one Redis and one key prefix, each with its own stream."""
    prefix = f"test:{uuid.uuid4().hex}:"
    prod = Backend("redis", url=redis_server.url, prefix=prefix, stream=f"{prefix}prod:audit")
    staging = Backend("redis", url=redis_server.url, prefix=prefix, stream=f"{prefix}staging:audit")

    async def body() -> None:
        async with prod.replicas(1) as (p,), staging.replicas(1) as (s,):
            for i in range(5):
                await p.append_audit({"action": "mint", "n": i})
                await s.append_audit({"action": "mint", "n": i})
            for store in (p, s):
                report = verify_chain(await all_events(store))
                assert report.ok, report.broken
                assert report.count == 5

    run(body)


def test_redis_announces_every_revocation_after_writing_it(redis_server: RedisServer) -> None:
    prefix = f"ann-{uuid.uuid4().hex[:8]}:"

    async def body() -> None:
        listener = Redis.from_url(redis_server.url, decode_responses=True)
        pubsub = listener.pubsub()
        await pubsub.subscribe(keys.revocation_channel(prefix))
        await pubsub.get_message(timeout=1.0)  # the subscription confirmation
        store = RedisState.from_url(redis_server.url, prefix=prefix)
        try:
            now = int(time.time())
            await store.revoke_token("j1", now + 300)
            await store.revoke_task("t1", "alice", now)
            await store.revoke_agent("alice", now)
            seen = []
            while len(seen) < 3:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                assert message is not None, seen
                seen.append(json.loads(message["data"]))
            assert seen == [
                {"kind": "token", "id": "j1", "value": now + 300},
                {"kind": "task", "id": "alice/t1", "value": now},
                {"kind": "agent", "id": "alice", "value": now},
            ]
            # the durable state was written first: a subscriber reading on the message sees it
            assert (await store.revocation_state("j1", "t1", "alice")).token_revoked
        finally:
            await store.aclose()
            await pubsub.aclose()
            await listener.aclose()

    asyncio.run(body())


def test_redis_group_commit_appends_concurrent_events_in_few_round_trips(
    redis_backend: Backend, rounds: list[tuple[int, int]]
) -> None:
    async def body() -> None:
        async with redis_backend.replicas(1) as (store,):
            await asyncio.gather(*(store.append_audit({"action": "mint", "n": i}) for i in range(300)))
            stored = await all_events(store)
            assert verify_chain(stored).ok
            assert [e.event["n"] for e in stored] == list(range(300))  # queue order is chain order

    run(body)
    assert sum(e for _, e in rounds) == 300
    assert len(rounds) <= 10, rounds  # one round for the first, then everything queued meanwhile


def test_redis_never_stores_a_revocation_without_announcing_it(redis_server: RedisServer) -> None:
    """The write and its announcement are one script: a client that loses the connection
    after sending it cannot have stored a revocation nobody was told of."""
    prefix = f"atomic-{uuid.uuid4().hex[:8]}:"

    async def body() -> None:
        store = RedisState.from_url(redis_server.url, prefix=prefix)
        try:
            sent: list[str] = []
            original = store._redis.publish

            async def no_publish(*args: Any, **kw: Any) -> Any:  # a separate PUBLISH would be lost here
                sent.append("separate publish")
                raise ConnectionError("dropped")

            store._redis.publish = no_publish  # type: ignore[method-assign]
            listener = Redis.from_url(redis_server.url, decode_responses=True)
            pubsub = listener.pubsub()
            await pubsub.subscribe(keys.revocation_channel(prefix))
            await pubsub.get_message(timeout=1.0)
            now = int(time.time())
            await store.revoke_token("j1", now + 300)
            await store.revoke_task("t1", "a1", now)
            await store.revoke_agent("a1", now)
            await store.revoke_agent("a1", now - 5)  # an older cut-off: announced too, stored never
            heard = []
            while len(heard) < 4:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                assert message is not None, heard
                heard.append(json.loads(message["data"])["kind"])
            assert heard == ["token", "task", "agent", "agent"]
            assert sent == []  # no separate publish call at all
            assert (await store.revocation_state("j1", "t1", "a1")).agent_cutoff == now
            store._redis.publish = original  # type: ignore[method-assign]
            await pubsub.aclose()
            await listener.aclose()
        finally:
            await store.aclose()

    asyncio.run(body())
