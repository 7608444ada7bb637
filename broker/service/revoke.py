"""Revocation: one token, a whole task, or every token of an agent (kill switch).

Revocations are written to the state store, which every replica and every verifier
given the store reads, so they take effect everywhere at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from broker.audit.refusals import Allowance
from broker.capability.names import ANY_AGENT, is_name, is_task, task_ref
from broker.delegation.exchange import chain_names
from broker.errors import BrokerError, Forbidden, InvalidRequest, TokenRejected
from broker.policy.model import Agent
from broker.service import downstream
from broker.service.auth import agent_or_admin, require_admin
from broker.service.broker import Broker, Call
from broker.service.own_tokens import own_token_claims
from broker.service.refusals import ADMIN, of_agent
from broker.token.claims import MAX_ACT_DEPTH, is_jti
from broker.token.verify import MAX_LEEWAY


def _allowance(caller: Agent | None) -> Allowance:
    """Whose allowance a refusal counts against, once the caller is known (None: admin)."""
    return ADMIN if caller is None else of_agent(caller)


async def _refused(
    broker: Broker, call: Call, error: BrokerError, *, caller: Allowance | None = None, **fields: Any
) -> None:
    """A refused revocation, stored with who asked (``by``, once the caller is known)."""
    by = None if caller is None else caller.caller
    await broker.audit.record(
        "revoke",
        request_id=call.request_id,
        decision="deny",
        code=error.code,
        reason=error.reason,
        by=by,
        caller=caller,
        **fields,
    )


async def _revoked(broker: Broker, call: Call, caller: Agent | None, target: str, **fields: Any) -> None:
    broker.metrics.inc("capbroker_revocations_total", kind=target)
    await broker.audit.record(
        "revoke",
        request_id=call.request_id,
        decision="allow",
        target=target,
        by="admin" if caller is None else f"agent:{caller.name}",
        **fields,
    )


async def revoke_token(broker: Broker, call: Call, read_body: Callable[[], Awaitable[object]]) -> dict[str, Any]:
    """``{"token": ...}`` by the token's agent or an admin; ``{"jti": ...}`` by an admin.

    Agents revoke by presenting the token itself (proof they hold it); revoking by id
    alone is an admin action, so a leaked id cannot be used to disrupt another agent.
    """
    who: Allowance | None = None
    try:
        caller = await agent_or_admin(broker, call)
        who = _allowance(caller)
        body = await read_body()
        if isinstance(body, dict) and isinstance(body.get("token"), str) and "jti" not in body:
            # RFC 7009: token_type_hint may come along; the broker has one kind of token
            hint = body.pop("token_type_hint", None)
            if hint is not None and not isinstance(hint, str):
                raise InvalidRequest("'token_type_hint' is a string (RFC 7009)")
        if not isinstance(body, dict) or len(body) != 1 or not ({"token", "jti"} & set(body)):
            raise InvalidRequest(
                "send exactly one of {'token': ...} or {'jti': ...} (and, with token, token_type_hint)"
            )
        if "jti" in body:
            if caller is not None:
                raise Forbidden("agents revoke by token; revoking by id is for admins")
            jti = body["jti"]
            if not is_jti(jti):
                raise InvalidRequest("'jti' is not a token id")
            exp = broker.now() + broker.policy.global_max_ttl
            agent = None
        else:
            try:
                # Revocable for as long as any verifier could still accept it (the largest leeway).
                claims = await own_token_claims(broker, body["token"], None, leeway=MAX_LEEWAY)
            except TokenRejected as e:
                if e.code == "expired":
                    return {"revoked": False, "reason": "expired"}
                raise InvalidRequest(f"not a valid token of this broker ({e.code})") from None
            if caller is not None and caller.name not in chain_names(claims):
                raise Forbidden("agents revoke only their own tokens and those delegated from them")
            jti, exp, agent = claims.jti, claims.exp, claims.agent
    except BrokerError as e:
        await _refused(broker, call, e, caller=who)
        raise
    broker.own_revocations.note_token(jti, exp)  # first: even a failed write errs closed here
    await broker.state.revoke_token(jti, exp)
    descendants = await _revoke_descendants(broker, jti, exp)
    vault = await downstream.revoke_carried(broker, [jti])
    await _revoked(
        broker, call, caller, "token", jti=jti, agent=agent, descendants=descendants or None, vault=vault or None
    )
    return {"revoked": True, "jti": jti}


async def _revoke_descendants(broker: Broker, jti: str, exp: int) -> list[str]:
    """Revoke every token exchanged from ``jti``, down the whole tree. A child never
    outlives its parent, so the parent's ``exp`` bounds how long each is remembered."""
    revoked: list[str] = []
    frontier = [jti]
    for _ in range(MAX_ACT_DEPTH):
        children = [c for parent in frontier for c in await broker.state.delegations(parent)]
        for child in children:
            broker.own_revocations.note_token(child, exp)
            await broker.state.revoke_token(child, exp)
        revoked.extend(children)
        frontier = children
        if not frontier:
            break
    return revoked


async def revoke_task(
    broker: Broker, call: Call, task: str, read_body: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """A task is its agent's (docs/api.md). An agent revokes its own task, and only one it has
    tokens for (``revoked: false`` otherwise: it cannot create revocations for ids it
    never used, nor learn anything of another agent's). An admin names the agent
    (``{"agent": ...}``), or names none and revokes the task id for every agent."""
    who: Allowance | None = None
    try:
        caller = await agent_or_admin(broker, call)
        who = _allowance(caller)
        owner = _task_owner(caller, await read_body())
        if not is_task(task):
            raise InvalidRequest("task id outside the grammar")
    except BrokerError as e:
        await _refused(broker, call, e, task=task if is_task(task) else None, caller=who)
        raise
    now = broker.now()
    ref = task_ref(ANY_AGENT if owner is None else owner, task)
    if caller is None:
        broker.own_revocations.note_task(ref, now)  # first: even a failed write errs closed here
    if not await broker.state.revoke_task(task, owner, now, only_if_live=caller is not None):
        await _refused(broker, call, Forbidden("no live tokens for this task"), task=task, caller=who)
        return {"revoked": False, "task": task, "reason": "no live tokens for this task"}
    if caller is not None:
        broker.own_revocations.note_task(ref, now)
    vault = await downstream.revoke_task(broker, owner, task)  # the task token: its tree and leases
    await _revoked(broker, call, caller, "task", task=task, agent=owner or ANY_AGENT, vault=vault or None)
    return {"revoked": True, "task": task, "agent": owner or ANY_AGENT}


def _task_owner(caller: Agent | None, body: dict[str, Any]) -> str | None:
    """Whose task: the calling agent's own; for an admin, the agent named, or None (every agent)."""
    if set(body) - {"agent"}:
        raise InvalidRequest("the only field is 'agent'")
    named = body.get("agent")
    if "agent" in body and not is_name(named):
        raise InvalidRequest("'agent' is not an agent name")
    if caller is None:
        return named
    if named is not None and named != caller.name:
        raise Forbidden("agents revoke only their own tasks")
    return caller.name


async def _admin_on_agent(broker: Broker, call: Call, agent: str, read_body: Callable[[], Awaitable[object]]) -> None:
    """An admin's request about ``agent``, with no body; refusals audited."""
    who: Allowance | None = None
    try:
        require_admin(broker, call)
        who = ADMIN
        await read_body()
        if not is_name(agent):
            raise InvalidRequest("agent name outside the grammar")
    except BrokerError as e:
        await _refused(broker, call, e, agent=agent if is_name(agent) else None, caller=who)
        raise


async def revoke_agent(
    broker: Broker, call: Call, agent: str, read_body: Callable[[], Awaitable[object]]
) -> dict[str, Any]:
    """Kill switch: every token of the agent and every token delegated from them is revoked,
    and the agent is suspended (its mints and exchanges are 403 ``agent_revoked``) until an
    admin reinstates it. The suspension lives in the state store: shared by every replica,
    kept across restarts and policy reloads."""
    await _admin_on_agent(broker, call, agent, read_body)
    # Replica clocks may disagree by up to clock_skew: reach that far ahead, so a token
    # stamped by a replica whose clock runs fast is still caught. Mints are refused until
    # both the suspension is lifted and the cut-off has passed (never a dead token).
    cutoff = broker.now() + broker.clock_skew
    broker.own_revocations.note_agent(agent, cutoff)
    await broker.state.revoke_agent(agent, cutoff)
    vault = await downstream.revoke_agent(broker, agent)
    await _revoked(
        broker, call, None, "agent", agent=agent, issued_at_or_before=cutoff, suspended=True, vault=vault or None
    )
    return {"revoked": True, "agent": agent, "issued_at_or_before": cutoff, "suspended": True}


async def reinstate_agent(
    broker: Broker, call: Call, agent: str, read_body: Callable[[], Awaitable[object]]
) -> dict[str, Any]:
    """Lift the kill switch's suspension (admin, audited). Tokens revoked stay revoked."""
    await _admin_on_agent(broker, call, agent, read_body)
    was = await broker.state.reinstate_agent(agent)
    await broker.audit.record(
        "admin", request_id=call.request_id, action="reinstate", decision="allow", agent=agent, was_suspended=was
    )
    return {"reinstated": was, "agent": agent}
