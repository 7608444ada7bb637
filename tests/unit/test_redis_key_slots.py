"""On a Redis Cluster every multi-key command and script must touch one slot (else Redis
answers CROSSSLOT). The slots are computed as Redis does (redis-py's CRC16 ``key_slot``)
for the key sets the code builds, with any prefix, agent, task or token id:

- one revocation check's MGET; a mint claim (many agents' rate, task and suspension keys);
  a task claim up a delegation chain; the revocation scripts with their channel; a key
  withdrawal; the Vault task records; every ``rev:*`` key the feed loads with one SCAN
  of one node — all in the state slot;
- the audit stream, its head and its archiver lease — in the audit slot;
- off a cluster, no name changes (a broker upgraded over a single Redis keeps its keys).

That the code builds its key sets from these names (and not from an untagged prefix) is
held by the state contract and ``test_redis_cluster.py`` on a real cluster, where any
other set would be answered CROSSSLOT.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from broker.backends.endorsed_signer import endorsed_keys_key
from broker.capability.names import ANY_AGENT, task_ref
from broker.verify import redis_keys as keys

prefixes = st.from_regex(r"[A-Za-z0-9:/._~-]{1,40}", fullmatch=True)
names = st.text(min_size=1, max_size=30)  # ids may hold anything, braces included
agent_lists = st.lists(names, min_size=1, max_size=6)


def one_slot(*names: str) -> bool:
    return len({key_slot(name.encode()) for name in names}) == 1


@given(prefixes, names, names, names, st.lists(names, max_size=5))
def test_a_revocation_check_reads_one_slot(prefix: str, jti: str, task: str, agent: str, chain: list[str]) -> None:
    state = keys.state_prefix(prefix, cluster=True)
    assert one_slot(*keys.revocation(state, jti, task, agent, tuple(chain)))


@given(prefixes, st.lists(st.tuples(names, names), min_size=1, max_size=8))
def test_one_mint_claim_round_over_many_agents_touches_one_slot(prefix: str, claims: list[tuple[str, str]]) -> None:
    """``redis_state.claim_mint``: per claim the rate, the task's two revocations, its
    record, the agent's suspension and cut-off; one script carries every queued claim."""
    state = keys.state_prefix(prefix, cluster=True)
    touched: list[str] = []
    for agent, task in claims:
        touched += [
            keys.rate(state, agent),
            keys.revoked_task(state, task_ref(agent, task)),
            keys.revoked_task(state, task_ref(ANY_AGENT, task)),
            keys.task(state, task_ref(agent, task)),
            keys.suspended(state, agent),
            keys.agent_cutoff(state, agent),
        ]
    assert one_slot(*touched)


@given(prefixes, st.tuples(names, names, names, names), agent_lists)
def test_revocation_scripts_and_their_announcement_share_the_slot(
    prefix: str, ids: tuple[str, str, str, str], agents: list[str]
) -> None:
    jti, task, kid, ref = ids
    state = keys.state_prefix(prefix, cluster=True)
    touched = [
        keys.revocation_channel(state),
        keys.policy_channel(state),
        keys.revoked_token(state, jti),
        keys.revoked_task(state, task_ref(agents[0], task)),
        keys.task(state, task_ref(agents[0], task)),
        *(keys.agent_cutoff(state, a) for a in agents),
        *(keys.suspended(state, a) for a in agents),
        endorsed_keys_key(state),  # a withdrawal: the hash, the kids' marks, the channel
        keys.withdrawn_key(state, kid),
        keys.task_vault_token(state, ref),  # one transaction: the task token and the agent's set
        keys.agent_vault_tasks(state, agents[0]),
    ]
    assert one_slot(*touched)


@given(prefixes)
def test_the_audit_chain_has_a_slot_of_its_own_with_its_head_and_lease(prefix: str) -> None:
    stream = keys.cluster_stream(keys.audit_stream(prefix), cluster=True)
    assert one_slot(stream, keys.audit_head(stream), keys.audit_archiver_lease(stream))


def test_a_configured_stream_with_its_own_tag_is_kept() -> None:
    assert keys.cluster_stream("{audit}:prod", cluster=True) == "{audit}:prod"
    assert keys.cluster_stream("a{}b", cluster=True) == "{a{}b}"  # "{}" is no tag


@given(prefixes, names, names)
def test_off_a_cluster_no_name_changes(prefix: str, jti: str, stream: str) -> None:
    assert keys.state_prefix(prefix, cluster=False) == prefix
    assert keys.cluster_stream(stream, cluster=False) == stream
    assert keys.revoked_token(keys.state_prefix(prefix, cluster=False), jti) == f"{prefix}rev:jti:{jti}"


def test_the_spread_keys_carry_no_tag_and_land_on_many_slots() -> None:
    """Replay claims, delegations, carried credentials and budgets spread over the primaries."""
    from broker.gateway.budgets import budget_key

    prefix = "capbroker:prod:"
    for make in (keys.once, keys.delegations, keys.carried_credentials, budget_key):
        made = [make(prefix, f"id-{i}") for i in range(200)]
        assert not any(keys.has_tag(name) for name in made)
        assert len({key_slot(name.encode()) for name in made}) > 150


def test_the_state_tag_is_the_first_tag_in_every_name() -> None:
    """An id holding braces cannot move a key out of the state slot: Redis hashes the
    first ``{...}``, which is the prefix's."""
    state = keys.state_prefix("capbroker:prod:", cluster=True)
    assert one_slot(keys.rate(state, "{evil}"), keys.revoked_token(state, "x}{y"), keys.revocation_channel(state))
