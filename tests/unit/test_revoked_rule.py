"""The one revocation rule (``broker/token/revoked.py``), and every local holder of
revocations answering through it alike: the broker's own recent revocations, the
verifier's static list and the state store's fetched record."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broker.capability.names import ANY_AGENT, task_ref
from broker.service.own_revocations import OwnRevocations
from broker.service.ports import RevocationState
from broker.token.claims import Actor, Claims
from broker.token.revoked import chain, revoked, revoked_in
from broker.verify.revocation import StaticRevocationList
from tests.helpers import NOW, claims

AGENTS = ("analyst", "helper", "root")


def delegated(agent: str = "analyst", *, by: tuple[str, ...] = (), iat: int = NOW, jti: str = "j1") -> Claims:
    actor: Actor | None = None
    for name in reversed(by):
        actor = Actor(f"agent:{name}", actor)
    return claims(agent=agent, act=actor, now=iat, jti=jti)


def test_the_chain_is_the_agent_then_every_delegator_nearest_first() -> None:
    assert chain(delegated()) == ("analyst",)
    assert chain(delegated(by=("helper", "root"))) == ("analyst", "helper", "root")


def test_a_cutoff_revokes_tokens_issued_at_or_before_it_only() -> None:
    assert revoked(NOW, token=False, task=False, cutoffs=(NOW,))
    assert not revoked(NOW, token=False, task=False, cutoffs=(NOW - 1,))
    assert not revoked(NOW, token=False, task=False, cutoffs=(None,))


def test_the_token_or_its_task_revokes_whatever_the_cutoffs() -> None:
    assert revoked(NOW, token=True, task=False, cutoffs=())
    assert revoked(NOW, token=False, task=True, cutoffs=(None,))


def test_a_delegators_kill_switch_reaches_the_delegated_token() -> None:
    token = delegated(by=("helper", "root"))
    assert revoked_in(token, set(), set(), {"root": NOW})
    assert not revoked_in(token, set(), set(), {"other": NOW})


def test_a_task_revoked_for_every_agent_reaches_each_agents_task() -> None:
    token = delegated()
    assert revoked_in(token, set(), {task_ref(ANY_AGENT, token.task)}, {})
    assert not revoked_in(token, set(), {task_ref("someone-else", token.task)}, {})


@given(
    jtis=st.sets(st.sampled_from(["j1", "j2"])),
    tasks=st.sets(st.sampled_from([task_ref("analyst", "t1"), task_ref(ANY_AGENT, "t1"), task_ref("x", "t1")])),
    cutoffs=st.dictionaries(st.sampled_from(AGENTS), st.integers(NOW - 2, NOW + 2)),
    jti=st.sampled_from(["j1", "j3"]),
    iat=st.integers(NOW - 3, NOW + 3),
    delegators=st.lists(st.sampled_from(AGENTS[1:]), max_size=2),
)
def test_every_holder_answers_as_the_rule(
    *, jtis: set[str], tasks: set[str], cutoffs: dict[str, int], jti: str, iat: int, delegators: list[str]
) -> None:
    token = delegated(by=tuple(delegators), iat=iat, jti=jti)
    expected = (
        jti in jtis
        or any(ref in tasks for ref in token.task_refs)
        or any(agent in cutoffs and iat <= cutoffs[agent] for agent in ("analyst", *delegators))
    )
    assert revoked_in(token, jtis, tasks, cutoffs) is expected

    static = StaticRevocationList()
    static.token_ids, static.tasks, static.agents_before = set(jtis), set(tasks), dict(cutoffs)
    assert static.is_revoked(token) is expected

    own = OwnRevocations()
    for each in jtis:
        own.note_token(each, NOW + 300)
    for ref in tasks:
        own.note_task(ref, NOW)
    for agent, cutoff in cutoffs.items():
        own.note_agent(agent, cutoff)
    assert own.revokes(token) is expected

    known = [cutoffs[agent] for agent in chain(token) if agent in cutoffs]
    record = RevocationState(
        token_revoked=jti in jtis,
        task_revoked=any(ref in tasks for ref in token.task_refs),
        agent_cutoff=max(known) if known else None,
    )
    assert record.revokes(iat) is expected
