"""Mint: authenticate the agent, rate-limit, decide, claim the task, sign, audit.

Order matters. The rate limit is spent before the decision, so probing the policy costs
allowance. The task is claimed before signing, so a revoked task or a suspended agent
never gets a token, not even one already dead. The audit event is written after signing
and before the tokens leave: if it cannot be written, the caller gets 503 and no token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from broker.errors import (
    AgentRevoked,
    BackendUnavailable,
    BrokerError,
    RateLimited,
    RequestError,
    TaskRevoked,
    error_for_code,
)
from broker.policy.decide import Allow, Deny
from broker.policy.model import Agent
from broker.policy.requests import MintRequest, parse_mint_request
from broker.service import downstream
from broker.service.auth import agent_of
from broker.service.broker import Broker, Call
from broker.service.ports import TaskClaim
from broker.service.proofs import endpoint_url, proof_key
from broker.service.refusals import of_agent
from broker.token.claims import Claims
from broker.token.mint import issue_claims, new_jti

PATH: Final = "/v1/tokens"


def iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


async def deny_event(
    broker: Broker, call: Call, error: BrokerError, agent: str | None, task: str | None, **extra: Any
) -> None:
    broker.metrics.inc("capbroker_decisions_total", decision="deny", code=error.code)
    await broker.audit.record(
        "deny",
        request_id=call.request_id,
        agent=agent,
        task=task,
        decision="deny",
        code=error.code,
        reason=error.reason,
        **extra,
    )


def _scopes(request: MintRequest) -> list[str]:
    return [s.scope for s in request.scopes]


async def mint(broker: Broker, call: Call, read_body: Callable[[], Awaitable[object]]) -> dict[str, Any]:
    """The 201 body for a mint request, or a ``BrokerError`` (audited) explaining why not.

    The caller is authenticated before the body is read: a stranger learns nothing about
    what a well-formed request looks like. Every request of an authenticated agent spends
    its rate allowance exactly once: a refused one (malformed, probing) on its way out, an
    allowed one together with the task claim, in one round trip (``claim_mint``). Over the
    rate is 429 whatever else is wrong. One policy snapshot serves the whole request, so a
    reload in between cannot mix two policies.
    """
    policy = broker.policy
    try:
        agent = await agent_of(broker, policy, call)
    except BrokerError as e:
        await deny_event(broker, call, e, None, None)
        raise
    try:
        body = await read_body()
        jkt = None
        if call.dpop is not None:
            jkt = await proof_key(broker, call.dpop, method="POST", url=endpoint_url(broker, PATH), access_token=None)
        request = parse_mint_request(body, pop=jkt is not None)
    except BrokerError as e:
        if isinstance(e, RequestError):
            e.told()  # the agent's own body: which field, and what it must be
        await _spend_rate(broker, call, agent)
        await deny_event(broker, call, e, agent.name, None, caller=of_agent(agent))
        raise
    decision = broker.decisions.decide(agent, request, policy)
    if isinstance(decision, Deny):
        await _spend_rate(broker, call, agent)
        error = error_for_code(decision.code, decision.reason).told()  # its own scopes, grants and caps
        await deny_event(
            broker, call, error, agent.name, request.task,
            scopes=_scopes(request), reasons=list(decision.reasons), caller=of_agent(agent),
        )  # fmt: skip
        raise error
    return await _issue(broker, call, agent, request, decision, jkt=jkt)


def _rate(agent: Agent) -> tuple[int, int] | None:
    return None if agent.rate is None else (agent.rate.count, agent.rate.per_seconds)


async def _rate_limited(broker: Broker, call: Call, agent: Agent, wait: float) -> RateLimited:
    error = RateLimited(f"agent {agent.name!r} is over its rate of {agent.rate}", retry_after=wait)
    await deny_event(broker, call, error, agent.name, None, caller=of_agent(agent))
    return error


async def _spend_rate(broker: Broker, call: Call, agent: Agent) -> None:
    """For a request that is refused anyway: spend allowance; over it, the refusal is 429."""
    rate = _rate(agent)
    if rate is None:
        return
    wait = await broker.state.take_rate(agent.name, *rate)
    if wait > 0:
        raise await _rate_limited(broker, call, agent, wait)


async def _issue(
    broker: Broker, call: Call, agent: Agent, request: MintRequest, decision: Allow, *, jkt: str | None
) -> dict[str, Any]:
    if not broker.ready_for_signing:
        raise BackendUnavailable("the signing self-test has not passed")
    now = broker.now()
    claims = [
        issue_claims(
            issuer=broker.issuer,
            agent=agent.name,
            audience=plan.audience,
            task=request.task,
            capabilities=plan.capabilities,
            now=now,
            ttl=decision.ttl,
            jti=new_jti(),
            cnf_jkt=jkt,
        )
        for plan in decision.tokens
    ]
    jtis = [c.jti for c in claims]
    outcome = await broker.state.claim_mint(agent.name, _rate(agent), request.task, now, now + decision.ttl)
    if outcome.task is None:
        raise await _rate_limited(broker, call, agent, outcome.wait)
    claim = outcome.task
    if claim is not TaskClaim.OWNED:
        error = refusal_of(claim, request.task)
        await deny_event(broker, call, error, agent.name, request.task, scopes=_scopes(request), caller=of_agent(agent))
        raise error
    # one token (the common case) without the cost of a task; several at once (Transit)
    tokens = [await broker.signer.sign(claims[0])] if len(claims) == 1 else await sign_all(broker, claims)
    wanted = downstream.downstream_capabilities((c.jti, c.cap) for c in claims)
    issued = await downstream.issue(broker, agent.name, request.task, wanted, now=now, ttl=decision.ttl)
    try:
        await broker.audit.record(
            "mint",
            request_id=call.request_id,
            agent=agent.name,
            task=request.task,
            scopes=_scopes(request),
            decision="allow",
            jti=jtis,
            audiences=[c.aud for c in claims],
            ttl=decision.ttl,
            bound=jkt is not None,
            reasons=list(decision.reasons),
            downstream=issued.audit or None,  # accessors and lease ids, never a secret
        )
    except BrokerError:
        await downstream.withdraw(broker, [a for accessors in issued.carried.values() for a in accessors])
        raise
    broker.metrics.inc("capbroker_decisions_total", decision="allow", code="ok")
    broker.metrics.inc("capbroker_tokens_minted_total", len(tokens))
    return {
        "task": request.task,
        "expires_at": iso(now + decision.ttl),
        "tokens": [_token_entry(c, t, decision.ttl) for c, t in zip(claims, tokens, strict=True)],
        "credentials": issued.entries,
    }


def refusal_of(claim: TaskClaim, task: str) -> BrokerError:
    """Why a task claim refused: its task revoked, or an agent of the token suspended."""
    if claim is TaskClaim.SUSPENDED:
        return AgentRevoked(f"an agent of the token is suspended (kill switch) for task {task!r}")
    return TaskRevoked(f"task {task!r} was revoked: mint under a new task id").told()


async def sign_all(broker: Broker, claims: list[Claims]) -> list[str]:
    return list(await asyncio.gather(*(broker.signer.sign(c) for c in claims)))


def _token_entry(claims: Claims, token: str, ttl: int) -> dict[str, Any]:
    return {
        "audience": claims.aud,
        "token": token,
        "token_id": claims.jti,
        "expires_in": ttl,
        "capabilities": [c.to_json() for c in claims.cap],
    }
