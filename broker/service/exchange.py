"""Exchange: the holder of a capability token gets a narrower one for a sub-agent.

Order: read the body (the presented token is the credential); check the token is ours,
valid and unrevoked, down its whole ``act`` chain; if it is DPoP-bound, insist on a proof
by its key (a stolen bearer copy cannot be exchanged); spend the root agent's rate; decide
(``broker.delegation.exchange``); record the new token on the task (refused if the task
was revoked) and under its parent (so revoking the parent revokes it); sign; audit; answer
in RFC 8693's shape.

The delegated token is bound to the request's DPoP key when there is one. A bound parent
can only be exchanged with a proof by its own key, so its children stay bound to that
key: binding is never lost down a chain.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from broker.audit.refusals import Allowance
from broker.delegation.exchange import (
    JWT_TOKEN_TYPE,
    ExchangeAllow,
    ExchangeRequest,
    chain_names,
    decide_exchange,
    parse_exchange_request,
)
from broker.errors import (
    AgentRevoked,
    BackendUnavailable,
    BrokerError,
    InvalidDpopProof,
    RateLimited,
    Unauthenticated,
    error_for_code,
)
from broker.policy.model import Policy
from broker.service.broker import Broker, Call
from broker.service.mint import deny_event, iso, refusal_of
from broker.service.own_tokens import own_token_claims
from broker.service.ports import TaskClaim
from broker.service.proofs import endpoint_url, proof_key
from broker.service.refusals import of_principal
from broker.service.revocations import is_revoked
from broker.token.claims import Claims
from broker.token.mint import issue_claims, new_jti

PATH: Final = "/v1/tokens/exchange"


async def exchange(broker: Broker, call: Call, read_body: Callable[[], Awaitable[object]]) -> dict[str, Any]:
    """The RFC 8693 answer for an exchange request, or a ``BrokerError`` (audited).

    Until the presented token verifies, the caller is a stranger: refusals are echoed to
    stdout only, never stored, so nobody can grow the audit stream without a token.
    """
    policy = broker.policy
    now = broker.now()
    parent: Claims | None = None
    try:
        request = parse_exchange_request(await read_body())
        parent = await _presented(broker, request)
        await _spend_rate(broker, policy, parent)  # before anything else: probing costs allowance
        jkt = await _bound_key(broker, call, request, parent)
    except BrokerError as e:
        agent, task = (parent.agent, parent.task) if parent else (None, None)
        await deny_event(
            broker, call, e, agent, task, action="exchange", store=parent is not None, caller=_caller(policy, parent)
        )
        raise
    decision = decide_exchange(parent, request, policy, now=now, pop=jkt is not None)
    if not isinstance(decision, ExchangeAllow):
        error = error_for_code(decision.code, decision.reason)
        await deny_event(
            broker, call, error, parent.agent, parent.task, action="exchange",
            parent_jti=parent.jti, delegate=request.actor, reasons=list(decision.reasons),
            caller=_caller(policy, parent),
        )  # fmt: skip
        raise error
    return await _issue(broker, call, request, parent, decision, jkt=jkt, now=now)


def _caller(policy: Policy, parent: Claims | None) -> Allowance | None:
    """Refusals of an exchange count against the root agent of the chain (it pays the rate)."""
    return None if parent is None else of_principal(policy.agents.get(parent.root_agent))


async def _presented(broker: Broker, request: ExchangeRequest) -> Claims:
    """The presented token's claims, if it is ours, valid and revoked nowhere up its chain."""
    try:
        claims = await own_token_claims(broker, request.subject_token, None)
    except BrokerError as e:
        raise Unauthenticated(f"subject_token: {e.code}") from None
    if await is_revoked(broker, claims):
        suspended = [a for a in chain_names(claims) if await broker.state.is_suspended(a)]
        if suspended:  # the kill switch: say so, as a mint by the agent would
            raise AgentRevoked(f"subject_token: agent {suspended[0]!r} is suspended")
        raise Unauthenticated("subject_token: revoked")
    return claims


async def _refuse_if_revoked_meanwhile(broker: Broker, call: Call, parent: Claims, child: Claims) -> None:
    state = await broker.state.revocation_state(parent.jti, parent.task, parent.agent, parent.delegators)
    if state.revokes(parent.iat):
        broker.own_revocations.note_token(child.jti, child.exp)
        await broker.state.revoke_token(child.jti, child.exp)
        error = Unauthenticated("subject_token: revoked while it was being exchanged")
        await deny_event(
            broker, call, error, parent.agent, parent.task,
            action="exchange", store=True, caller=_caller(broker.policy, parent),
        )  # fmt: skip
        raise error


async def _bound_key(broker: Broker, call: Call, request: ExchangeRequest, parent: Claims) -> str | None:
    """The key the new token is bound to: the request's DPoP key, if any. A bound parent
    needs a proof by its own key, made for this request and this token (``ath``)."""
    if call.dpop is None:
        if parent.cnf_jkt is not None:
            raise Unauthenticated("subject_token is DPoP-bound and the request has no DPoP proof")
        return None
    jkt = await proof_key(
        broker, call.dpop, method="POST", url=endpoint_url(broker, PATH), access_token=request.subject_token
    )
    if parent.cnf_jkt is not None and jkt != parent.cnf_jkt:
        raise InvalidDpopProof("DPoP proof is not by the key the subject_token is bound to")
    return jkt


async def _spend_rate(broker: Broker, policy: Policy, parent: Claims) -> None:
    """Exchanges spend the allowance of the agent at the root of the chain."""
    root = policy.agents.get(parent.root_agent)
    if root is None or root.rate is None:
        return  # an agent gone from the policy is refused by the decision
    wait = await broker.state.take_rate(root.name, root.rate.count, root.rate.per_seconds)
    if wait > 0:
        raise RateLimited(f"agent {root.name!r} is over its rate of {root.rate}", retry_after=wait)


async def _issue(
    broker: Broker,
    call: Call,
    request: ExchangeRequest,
    parent: Claims,
    decision: ExchangeAllow,
    *,
    jkt: str | None,
    now: int,
) -> dict[str, Any]:
    """``now`` is the decision's: the child's ``exp`` (now + ttl) is never past the parent's."""
    if not broker.ready_for_signing:
        raise BackendUnavailable("the signing self-test has not passed")
    claims = issue_claims(
        issuer=broker.issuer,
        agent=request.actor,
        audience=parent.aud,
        task=parent.task,
        capabilities=decision.capabilities,
        now=now,
        ttl=decision.ttl,
        jti=new_jti(),
        cnf_jkt=jkt,
        act=decision.act,
    )
    claim = await broker.state.claim_task(parent.task, decision.root.name, chain_names(claims), now, claims.exp)
    if claim is not TaskClaim.OWNED:
        error = refusal_of(claim, parent.task)
        await deny_event(
            broker, call, error, parent.agent, parent.task, action="exchange", caller=_caller(broker.policy, parent)
        )
        raise error
    await broker.state.add_delegation(parent.jti, claims.jti, parent.exp)
    # A revocation of the parent that landed after our first check has walked the
    # delegation links before ours existed: look again now that the link is written.
    # (Revocation writes before it walks, so one of the two always sees the other.)
    await _refuse_if_revoked_meanwhile(broker, call, parent, claims)
    token = await broker.signer.sign(claims)
    await broker.audit.record(
        "exchange",
        request_id=call.request_id,
        agent=parent.agent,
        delegate=request.actor,
        task=parent.task,
        scopes=sorted({c.scope for c in claims.cap}),
        decision="allow",
        jti=claims.jti,
        parent_jti=parent.jti,
        depth=decision.depth,
        bound=jkt is not None,
        ttl=decision.ttl,
        reasons=list(decision.reasons),
    )
    broker.metrics.inc("capbroker_decisions_total", decision="allow", code="ok")
    broker.metrics.inc("capbroker_tokens_exchanged_total")
    return {
        "access_token": token,
        "issued_token_type": JWT_TOKEN_TYPE,
        "token_type": "DPoP" if jkt is not None else "Bearer",
        "expires_in": decision.ttl,
        "expires_at": iso(claims.exp),
        "token_id": claims.jti,
        "task": claims.task,
        "audience": claims.aud,
        "capabilities": [c.to_json() for c in claims.cap],
    }
