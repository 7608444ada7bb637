"""MemoryState on a fake clock: GCRA counts and waits, expiry on the retention schedule,
task ownership, the agent cut-off, and the audit hash chain."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from broker.audit.chain import GENESIS, verify_chain
from broker.audit.stored import StoredEvent
from broker.backends.gcra import gcra_parameters
from broker.backends.memory_state import MemoryState
from broker.service import retention
from broker.service.ports import RevocationState, TaskClaim

T = TypeVar("T")
NOW = 1_790_000_000


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def run(awaitable: Awaitable[T]) -> T:
    async def wrap() -> T:
        return await awaitable

    return asyncio.run(wrap())


def revocation(*, token: bool = False, task: bool = False, cutoff: int | None = None) -> RevocationState:
    return RevocationState(token_revoked=token, task_revoked=task, agent_cutoff=cutoff)


def events(state: MemoryState) -> list[StoredEvent]:
    async def collect() -> list[StoredEvent]:
        return [e async for e in state.audit_events()]

    return asyncio.run(collect())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> MemoryState:
    return MemoryState(clock=clock)


# ---------------------------------------------------------------- rate limits


@pytest.mark.parametrize(("count", "per"), [(1, 1), (3, 1), (7, 10), (25, 3600), (1000, 1), (60, 60)])
def test_a_fresh_burst_lets_exactly_count_mints_through(state: MemoryState, count: int, per: int) -> None:
    results = [run(state.take_rate("a", count, per)) for _ in range(count + 3)]
    assert results[:count] == [0.0] * count
    assert all(r > 0 for r in results[count:])


def test_retry_after_is_one_emission_interval_after_a_full_burst(state: MemoryState, clock: Clock) -> None:
    for _ in range(10):
        assert run(state.take_rate("a", 10, 60)) == 0.0
    assert run(state.take_rate("a", 10, 60)) == pytest.approx(6.0)
    clock.t += 2.5
    assert run(state.take_rate("a", 10, 60)) == pytest.approx(3.5)
    clock.t += 3.5
    assert run(state.take_rate("a", 10, 60)) == 0.0  # one slot came back, exactly on time
    assert run(state.take_rate("a", 10, 60)) == pytest.approx(6.0)


def test_a_refused_mint_spends_nothing(state: MemoryState, clock: Clock) -> None:
    assert run(state.take_rate("a", 1, 10)) == 0.0
    for _ in range(50):
        assert run(state.take_rate("a", 1, 10)) == pytest.approx(10.0)
    clock.t += 10
    assert run(state.take_rate("a", 1, 10)) == 0.0


def test_the_allowance_refills_fully_after_the_period(state: MemoryState, clock: Clock) -> None:
    for _ in range(5):
        run(state.take_rate("a", 5, 100))
    clock.t += 100
    assert [run(state.take_rate("a", 5, 100)) for _ in range(6)][-2:] == [0.0, pytest.approx(20.0)]


def test_agents_have_separate_allowances(state: MemoryState) -> None:
    assert run(state.take_rate("a", 1, 60)) == 0.0
    assert run(state.take_rate("a", 1, 60)) > 0
    assert run(state.take_rate("b", 1, 60)) == 0.0


@pytest.mark.parametrize(("count", "per"), [(0, 60), (-1, 60), (5, 0), (True, 60), (1.5, 60)])
def test_a_rate_limit_must_be_positive_integers(state: MemoryState, count: object, per: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        run(state.take_rate("a", count, per))  # type: ignore[arg-type]


def test_gcra_interval_is_rounded_up_so_the_burst_stays_exact() -> None:
    assert gcra_parameters(3, 1) == (333_334, 1_000_002)
    assert gcra_parameters(25, 3600) == (144_000_000, 3_600_000_000)


# ---------------------------------------------------------------- tasks


def claim(state: MemoryState, task: str, agent: str, exp: int, *, iat: int = NOW) -> TaskClaim:
    return run(state.claim_task(task, agent, (agent,), iat, exp))


def test_a_task_id_is_scoped_to_its_agent(state: MemoryState) -> None:
    assert claim(state, "t1", "alice", NOW + 300) is TaskClaim.OWNED
    assert claim(state, "t1", "bob", NOW + 300) is TaskClaim.OWNED  # bob's own t1, not alice's
    assert run(state.task_live("t1", "alice"))
    assert run(state.task_live("t1", "bob"))
    assert not run(state.task_live("t2", "alice"))
    assert run(state.revoke_task("t1", "alice", NOW))
    assert claim(state, "t1", "alice", NOW + 300) is TaskClaim.REVOKED
    assert claim(state, "t1", "bob", NOW + 300) is TaskClaim.OWNED  # untouched by alice's revocation


def test_the_task_record_lives_until_its_last_token_expires(state: MemoryState, clock: Clock) -> None:
    claim(state, "t1", "alice", NOW + 3000)
    claim(state, "t1", "alice", NOW + 300)  # a shorter token does not shorten it
    clock.t = retention.task_record_expiry(NOW + 3000) - 1
    assert run(state.task_live("t1", "alice"))
    clock.t = retention.task_record_expiry(NOW + 3000)
    assert not run(state.task_live("t1", "alice"))


def test_a_revoked_task_takes_no_new_tokens_even_from_its_owner(state: MemoryState, clock: Clock) -> None:
    claim(state, "t1", "alice", NOW + 300)
    run(state.revoke_task("t1", "alice", NOW))
    assert claim(state, "t1", "alice", NOW + 300) is TaskClaim.REVOKED
    assert claim(state, "t9", "alice", NOW + 300) is TaskClaim.OWNED
    clock.t = retention.task_revocation_expiry(NOW)
    assert claim(state, "t1", "alice", int(clock.t) + 300) is TaskClaim.OWNED


def test_an_admin_revocation_without_an_agent_reaches_every_agents_task(state: MemoryState) -> None:
    claim(state, "t1", "alice", NOW + 300)
    assert run(state.revoke_task("t1", None, NOW))
    assert claim(state, "t1", "alice", NOW + 300) is TaskClaim.REVOKED
    assert claim(state, "t1", "bob", NOW + 300) is TaskClaim.REVOKED
    assert run(state.revocation_state("j1", "t1", "carol")).task_revoked


def test_an_agent_revokes_only_a_task_it_has_a_record_of(state: MemoryState) -> None:
    assert not run(state.revoke_task("never-used", "alice", NOW, only_if_live=True))
    assert claim(state, "never-used", "alice", NOW + 300) is TaskClaim.OWNED  # nothing was written
    assert run(state.revoke_task("never-used", "alice", NOW, only_if_live=True))
    assert claim(state, "never-used", "alice", NOW + 300) is TaskClaim.REVOKED


def test_a_delegated_tokens_task_is_its_root_agents(state: MemoryState) -> None:
    run(state.revoke_task("t1", "alice", NOW))
    # bob holds a token delegated by alice: the task is alice's
    assert run(state.revocation_state("j1", "t1", "bob", ("alice",))).task_revoked
    assert not run(state.revocation_state("j1", "t1", "bob")).task_revoked  # bob's own t1


def test_a_suspended_agent_claims_nothing_until_reinstated(state: MemoryState) -> None:
    run(state.revoke_agent("alice", NOW + 5))
    assert run(state.is_suspended("alice"))
    assert claim(state, "t1", "alice", NOW + 300, iat=NOW + 60) is TaskClaim.SUSPENDED
    # an exchange naming a suspended agent anywhere in the chain is refused too
    assert run(state.claim_task("t1", "bob", ("carol", "alice", "bob"), NOW + 60, NOW + 300)) is TaskClaim.SUSPENDED
    assert run(state.reinstate_agent("alice"))
    assert not run(state.reinstate_agent("alice"))
    assert claim(state, "t1", "alice", NOW + 300, iat=NOW + 60) is TaskClaim.OWNED


def test_a_reinstated_agent_gets_no_token_its_cutoff_would_revoke(state: MemoryState) -> None:
    run(state.revoke_agent("alice", NOW + 5))
    run(state.reinstate_agent("alice"))
    assert claim(state, "t1", "alice", NOW + 300, iat=NOW + 5) is TaskClaim.SUSPENDED  # dead on arrival
    assert claim(state, "t1", "alice", NOW + 300, iat=NOW + 6) is TaskClaim.OWNED


# ---------------------------------------------------------------- revocation


def test_nothing_is_revoked_by_default(state: MemoryState) -> None:
    assert run(state.revocation_state("j1", "t1", "alice")) == revocation()


def test_a_token_revocation_lasts_until_the_token_expires_plus_grace(state: MemoryState, clock: Clock) -> None:
    run(state.revoke_token("j1", NOW + 300))
    assert run(state.revocation_state("j1", "t1", "alice")) == revocation(token=True)
    assert run(state.revocation_state("j2", "t1", "alice")).token_revoked is False
    clock.t = retention.token_revocation_expiry(NOW + 300) - 1
    assert run(state.revocation_state("j1", "t1", "alice")).token_revoked is True
    clock.t = retention.token_revocation_expiry(NOW + 300)
    assert run(state.revocation_state("j1", "t1", "alice")).token_revoked is False


def test_a_task_revocation_lasts_the_global_token_cap_plus_grace(state: MemoryState, clock: Clock) -> None:
    run(state.revoke_task("t1", "alice", NOW))
    assert run(state.revocation_state("j1", "t1", "alice")) == revocation(task=True)
    clock.t = retention.task_revocation_expiry(NOW) - 1
    assert run(state.revocation_state("j1", "t1", "alice")).task_revoked is True
    clock.t = retention.task_revocation_expiry(NOW)
    assert run(state.revocation_state("j1", "t1", "alice")).task_revoked is False


def test_the_agent_cutoff_only_moves_forward(state: MemoryState) -> None:
    run(state.revoke_agent("alice", NOW))
    run(state.revoke_agent("alice", NOW - 100))
    assert run(state.revocation_state("j1", "t1", "alice")).agent_cutoff == NOW
    run(state.revoke_agent("alice", NOW + 50))
    revocation = run(state.revocation_state("j1", "t1", "alice"))
    assert revocation.agent_cutoff == NOW + 50
    assert revocation.revokes(NOW + 50)
    assert not revocation.revokes(NOW + 51)
    assert run(state.revocation_state("j1", "t1", "bob")).agent_cutoff is None


def test_the_agent_cutoff_expires_with_the_latest_cutoff(state: MemoryState, clock: Clock) -> None:
    run(state.revoke_agent("alice", NOW + 50))
    run(state.revoke_agent("alice", NOW))  # ignored: it must not shorten the life either
    clock.t = retention.agent_cutoff_expiry(NOW + 50) - 1
    assert run(state.revocation_state("j1", "t1", "alice")).agent_cutoff == NOW + 50
    clock.t = retention.agent_cutoff_expiry(NOW + 50)
    assert run(state.revocation_state("j1", "t1", "alice")).agent_cutoff is None


def test_expired_entries_are_swept_even_if_never_read(state: MemoryState, clock: Clock) -> None:
    for i in range(600):
        run(state.revoke_token(f"j{i}", NOW))
    clock.t = retention.token_revocation_expiry(NOW)
    for i in range(600):
        run(state.revoke_token(f"k{i}", int(clock.t) + 300))
    assert not any(key.startswith("j") for key in state._revoked_tokens)


# ---------------------------------------------------------------- audit


def test_the_audit_chain_links_every_event(state: MemoryState) -> None:
    stored = [run(state.append_audit({"action": "mint", "n": i})) for i in range(5)]
    assert stored[0].event["prev"] == GENESIS
    assert [s.event["prev"] for s in stored[1:]] == [s.event["hash"] for s in stored[:-1]]
    assert events(state) == stored
    report = verify_chain(events(state))
    assert report.ok
    assert report.count == 5
    assert report.head == stored[-1].event["hash"]


def test_stream_ids_increase_even_when_the_clock_stands_still_or_steps_back(state: MemoryState, clock: Clock) -> None:
    ids = [run(state.append_audit({"n": 0})).id, run(state.append_audit({"n": 1})).id]
    clock.t -= 5
    ids.append(run(state.append_audit({"n": 2})).id)
    clock.t += 10
    ids.append(run(state.append_audit({"n": 3})).id)
    ms = NOW * 1000
    assert ids == [f"{ms}-0", f"{ms}-1", f"{ms}-2", f"{ms + 5000}-0"]


def test_a_tampered_event_is_named_by_verify_chain(state: MemoryState) -> None:
    for i in range(4):
        run(state.append_audit({"action": "mint", "n": i}))
    stored = events(state)
    forged = [*stored[:2], dataclasses.replace(stored[2], event={**stored[2].event, "action": "deny"}), *stored[3:]]
    report = verify_chain(forged)
    assert report.broken is not None
    assert (report.broken.index, report.broken.id) == (2, stored[2].id)
    assert report.count == 2


def test_a_removed_event_breaks_the_chain_at_the_next_one(state: MemoryState) -> None:
    for i in range(4):
        run(state.append_audit({"n": i}))
    stored = events(state)
    report = verify_chain([stored[0], *stored[2:]])
    assert report.broken is not None
    assert report.broken.id == stored[2].id


def test_an_event_is_sealed_once(state: MemoryState) -> None:
    with pytest.raises(ValueError, match="sealed once"):
        run(state.append_audit({"prev": GENESIS}))
    assert events(state) == []


def test_ping_and_aclose_succeed(state: MemoryState) -> None:
    run(state.ping())
    run(state.aclose())


def test_the_dev_audit_tail_is_bounded_and_keeps_the_newest_events_chained(clock: Clock) -> None:
    state = MemoryState(clock=clock, audit_tail=5)
    for i in range(12):
        run(state.append_audit({"type": "admin", "n": i}))

    kept = events(state)

    assert [e.event["n"] for e in kept] == [7, 8, 9, 10, 11]
    assert verify_chain(kept, start=kept[0].event["prev"]).ok
