"""Property: down any random grant tree, every exchanged token is covered by its parent.

A random policy grants an agent some scopes; a random mint makes the root token; then
random exchange requests (narrowing, widening, sibling paths, extra actions, other
tasks and audiences, longer ttls, random delegate names) are applied down random
branches. Whatever ``decide_exchange`` allows, the child token built from it must be
covered capability by capability by its parent (and so by the root grant), expire no
later, keep the task and audience, and extend the ``act`` chain by exactly its parent.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from broker.capability import KINDS, Capability, covers
from broker.delegation.exchange import ExchangeAllow, ExchangeRequest, chain_names, decide_exchange
from broker.policy import Allow, Policy, decide, parse_mint_request
from broker.policy.requests import ScopeRequest
from broker.token import Actor, Claims, issue_claims
from tests.helpers import ISSUER, NOW
from tests.security.test_properties import AGENT, entries, policies, segments

DELEGATES = ["d-a", "d-b", "d-c", "d-d", "d-e", AGENT]


def _variant_resource(draw: st.DrawFn, cap: Capability) -> str | None:
    variant = draw(st.sampled_from(["keep", "keep", "same", "deeper", "deeper", "sibling", "parent"]))
    if variant == "keep":
        return None
    if variant == "same":
        return cap.resource
    if variant == "deeper":
        base = cap.resource if cap.resource.endswith("/") else cap.resource + "/"
        return base + "/".join(draw(st.lists(segments, min_size=1, max_size=2))) + draw(st.sampled_from(["", "/"]))
    body = cap.resource[:-1] if cap.resource.endswith("/") else cap.resource
    if variant == "sibling":
        return body + "-x" + ("/" if cap.resource.endswith("/") else "")
    return body[: body.rindex("/") + 1]


@st.composite
def exchange_requests(draw: st.DrawFn, parent: Claims) -> ExchangeRequest:
    scopes: tuple[ScopeRequest, ...] | None = None
    if draw(st.booleans()):
        picked = draw(st.lists(st.sampled_from(parent.cap), min_size=1, max_size=3))
        out = []
        for cap in picked:
            actions = None
            if draw(st.booleans()):
                actions = tuple(draw(st.lists(st.sampled_from(KINDS[cap.kind].actions), min_size=1, unique=True)))
            out.append(ScopeRequest(cap.scope, _variant_resource(draw, cap), actions))
        if draw(st.integers(0, 5)) == 0:
            out.append(ScopeRequest(draw(st.sampled_from(["scope-0", "scope-3", "undefined"]))))
        scopes = tuple(out)
    return ExchangeRequest(
        subject_token="x.y.z",
        actor=draw(st.sampled_from(DELEGATES))
        if draw(st.integers(0, 3)) == 0
        else f"fresh-{draw(st.integers(0, 10**6))}",
        scopes=scopes,
        audience=draw(st.sampled_from([None, None, parent.aud, "gw-a", "gw-b"])),
        task=draw(st.sampled_from([None, None, parent.task, "other-task"])),
        ttl=draw(st.one_of(st.none(), st.integers(1, 4000))),
    )


def _root_token(draw: st.DrawFn, policy: Policy) -> Claims | None:
    body: dict[str, Any] = {
        "task": "task-1",
        "scopes": [draw(entries(policy, friendly=True))[0] for _ in range(draw(st.integers(1, 3)))],
    }
    decision = decide(policy.agents[AGENT], parse_mint_request(body, pop=True), policy)
    if not isinstance(decision, Allow):
        return None
    plan = draw(st.sampled_from(decision.tokens))
    return issue_claims(
        issuer=ISSUER, agent=AGENT, audience=plan.audience, task="task-1",
        capabilities=plan.capabilities, now=NOW, ttl=decision.ttl,
    )  # fmt: skip


SEEN: Counter[str] = Counter()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_exchanged_token_is_covered_by_its_parent(data: st.DataObject) -> None:
    policy = data.draw(policies())
    root = _root_token(data.draw, policy)
    if root is None:
        event("root mint denied")
        return
    grant = {c.scope: policy.scopes[c.scope].capability for c in root.cap}
    frontier = [root]
    now = NOW
    for _ in range(data.draw(st.integers(1, 10))):
        parent = frontier[-1] if data.draw(st.integers(0, 2)) else data.draw(st.sampled_from(frontier))
        now += data.draw(st.integers(0, 30))
        request = data.draw(exchange_requests(parent))
        pop = data.draw(st.integers(0, 4)) > 0
        result = decide_exchange(parent, request, policy, now=now, pop=pop)
        if not isinstance(result, ExchangeAllow):
            SEEN[f"deny {result.code}"] += 1
            event(f"deny {result.code}")
            continue
        child = issue_claims(
            issuer=ISSUER, agent=request.actor, audience=parent.aud, task=parent.task,
            capabilities=result.capabilities, now=now, ttl=result.ttl, act=result.act,
        )  # fmt: skip
        SEEN[f"allow depth {result.depth}"] += 1
        event(f"allow depth {result.depth}")
        for cap in child.cap:
            assert any(covers(p, cap) for p in parent.cap), (parent.cap, cap)
            assert covers(grant[cap.scope], cap)  # and so, transitively, by the root grant
        assert child.exp <= parent.exp
        assert (child.task, child.aud, child.iss) == (parent.task, parent.aud, parent.iss)
        assert child.act == Actor(parent.sub, parent.act)
        assert chain_names(child)[-1] == AGENT
        assert len(chain_names(child)) - 1 <= policy.agents[AGENT].max_delegation_depth
        assert child.agent not in chain_names(parent)
        assert child.agent not in policy.agents
        if any(policy.scopes[c.scope].require_pop for c in child.cap):
            assert pop
        frontier.append(child)


def test_the_tree_generator_reaches_both_allows_and_every_refusal() -> None:
    """Guards the property above against vacuity: it must see deep allows and each kind of deny."""
    if not SEEN:  # the property did not run first (selected alone)
        test_every_exchanged_token_is_covered_by_its_parent()
    labels = ("allow depth 1", "allow depth 2", "deny scope_not_granted", "deny forbidden", "deny ttl_exceeds_max")
    for label in labels:
        assert SEEN[label] > 0, (label, SEEN)
