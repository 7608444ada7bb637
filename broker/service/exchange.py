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

from broker.delegation.exchange import (
    JWT_TOKEN_TYPE,
    ExchangeAllow,
    ExchangeRequest,
    decide_exchange,
    parse_exchange_request,
)
from broker.errors import (
    BackendUnavailable,
    BrokerError,
    Forbidden,
    InvalidDpopProof,
    RateLimited,
    Unauthenticated,
    error_for_code,
)
from broker.service.broker import Broker, Call
from broker.service.mint import deny_event, iso
from broker.service.own_tokens import own_token_claims
from broker.service.ports import TaskClaim
from broker.service.proofs import endpoint_url, proof_key
from broker.token.claims import Claims
from broker.token.mint import issue_claims, new_jti

PATH: Final = "/v1/tokens/exchange"


async def exchange(broker: Broker, call: Call, read_body: Callable[[], Awaitable[object]]) -> dict[str, Any]:
    """The RFC 8693 answer for an exchange request, or a ``BrokerError`` (audited)."""
    policy = broker.policy
    parent: Claims | None = None
    try:
        request = parse_exchange_request(await read_body())
        parent = await _presented(broker, request)
        jkt = await _bound_key(broker, call, request, parent)
    except BrokerError as e:
        agent, task = (parent.agent, parent.task) if parent else (None, None)
        await deny_event(broker, call, e, agent, task, action="exchange")
        raise
    decision = decide_exchange(parent, request, policy, now=broker.now(), pop=jkt is not None)
    if not isinstance(decision, ExchangeAllow):
        error = error_for_code(decision.code, decision.reason)
        await deny_event(
            broker, call, error, parent.agent, parent.task, action="exchange",
            parent_jti=parent.jti, delegate=request.actor, reasons=list(decision.reasons),
        )  # fmt: skip
        raise error
    await _spend_rate(broker, call, decision, parent)
    return await _issue(broker, call, request, parent, decision, jkt=jkt)


async def _presented(broker: Broker, request: ExchangeRequest) -> Claims:
    """The presented token's claims, if it is ours, valid and revoked nowhere up its chain."""
    try:
        claims = await own_token_claims(broker, request.subject_token, None)
    except BrokerError as e:
        raise Unauthenticated(f"subject_token: {e.code}") from None
    state = await broker.state.revocation_state(claims.jti, claims.task, claims.agent, claims.delegators)
    if state.revokes(claims.iat):
        raise Unauthenticated("subject_token: revoked")
    return claims


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


async def _spend_rate(broker: Broker, call: Call, decision: ExchangeAllow, parent: Claims) -> None:
    rate = decision.root.rate
    if rate is None:
        return
    wait = await broker.state.take_rate(decision.root.name, rate.count, rate.per_seconds)
    if wait > 0:
        error = RateLimited(f"agent {decision.root.name!r} is over its rate of {rate}", retry_after=wait)
        await deny_event(broker, call, error, parent.agent, parent.task, action="exchange")
        raise error


async def _issue(
    broker: Broker, call: Call, request: ExchangeRequest, parent: Claims, decision: ExchangeAllow, *, jkt: str | None
) -> dict[str, Any]:
    if not broker.ready_for_signing:
        raise BackendUnavailable("the signing self-test has not passed")
    now = broker.now()
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
    claim = await broker.state.claim_task(parent.task, decision.root.name, [claims.jti], claims.exp)
    if claim is not TaskClaim.OWNED:
        error = Forbidden(f"task {parent.task!r} was revoked or is not {decision.root.name!r}'s")
        await deny_event(broker, call, error, parent.agent, parent.task, action="exchange")
        raise error
    await broker.state.add_delegation(parent.jti, claims.jti, parent.exp)
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
