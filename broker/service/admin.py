"""Admin use cases: the loaded policy, explain a decision, reload the policy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from broker.errors import BrokerError, InvalidRequest, PolicyInvalid
from broker.policy.decide import Allow, decide
from broker.policy.model import Policy
from broker.policy.requests import parse_mint_request
from broker.service.auth import require_admin
from broker.service.broker import Broker, Call
from broker.service.refusals import ADMIN


async def _admin(broker: Broker, call: Call, action: str) -> None:
    try:
        require_admin(broker, call)
    except BrokerError as e:
        await broker.audit.record("admin", request_id=call.request_id, action=action, decision="deny", code=e.code)
        raise


def policy_view(policy: Policy) -> dict[str, Any]:
    return {
        "digest": policy.digest,
        "files": list(policy.files),
        "global_max_ttl": policy.global_max_ttl,
        "scopes": {
            name: {
                "kind": s.kind,
                "resource": s.resource,
                "actions": list(s.actions),
                "audience": s.audience,
                "max_ttl": s.max_ttl,
                "require_pop": s.require_pop,
                "description": s.description,
            }
            for name, s in sorted(policy.scopes.items())
        },
        "agents": {
            name: {
                "identity": type(a.identity).__name__.removesuffix("Identity").lower(),
                "scopes": list(a.scopes),
                "max_ttl": a.max_ttl,
                "rate": None if a.rate is None else str(a.rate),
            }
            for name, a in sorted(policy.agents.items())
        },
        "services": {
            name: {"audiences": list(s.audiences), "rate": str(s.rate)} for name, s in sorted(policy.services.items())
        },
    }


async def scopes(broker: Broker, call: Call) -> dict[str, Any]:
    await _admin(broker, call, "scopes")
    policy = broker.policy
    await broker.audit.record(
        "admin", request_id=call.request_id, action="scopes", decision="allow", policy=policy.digest
    )
    return policy_view(policy)


async def explain(broker: Broker, call: Call, read_body: Callable[[], Awaitable[object]]) -> dict[str, Any]:
    await _admin(broker, call, "explain")
    try:
        body = await read_body()
        if not isinstance(body, dict):
            raise InvalidRequest("the body must be an object")
        agent_name = body.get("agent")
        request = parse_mint_request({k: v for k, v in body.items() if k != "agent"})
        agent = broker.policy.agents.get(agent_name) if isinstance(agent_name, str) else None
        if agent is None:
            raise InvalidRequest("'agent' must name an agent of the policy in force")
    except BrokerError as e:
        await broker.audit.record(
            "admin", request_id=call.request_id, action="explain", decision="deny", code=e.code, caller=ADMIN
        )
        raise
    decision = decide(agent, request, broker.policy)
    allowed = isinstance(decision, Allow)
    await broker.audit.record(
        "admin",
        request_id=call.request_id,
        action="explain",
        decision="allow",
        agent=agent.name,
        task=request.task,
        outcome="allow" if allowed else "deny",
    )
    if isinstance(decision, Allow):
        return {
            "decision": "allow",
            "code": None,
            "reasons": list(decision.reasons),
            "ttl": decision.ttl,
            "capabilities": [c.to_json() for plan in decision.tokens for c in plan.capabilities],
        }
    return {"decision": "deny", "code": decision.code, "reasons": list(decision.reasons), "capabilities": []}


async def _nothing() -> None:
    return None


async def reload(
    broker: Broker, call: Call, read_body: Callable[[], Awaitable[object]] = _nothing, *, trigger: str = "api"
) -> dict[str, Any]:
    """Reload the policy. Invalid policy: ``PolicyInvalid`` (422), the old policy kept."""
    if trigger == "api":
        await _admin(broker, call, "reload")
        try:
            await read_body()
        except BrokerError as e:
            await broker.audit.record(
                "admin", request_id=call.request_id, action="reload", decision="deny", code=e.code, caller=ADMIN
            )
            raise
    old = broker.policy.digest
    try:
        policy = await broker.reload_policy()
    except PolicyInvalid as e:
        await broker.audit.record(
            "admin",
            request_id=call.request_id,
            action="reload",
            trigger=trigger,
            decision="deny",
            code=e.code,
            reason=e.reason,
            kept=old,
            caller=ADMIN,
        )
        raise
    await broker.audit.record(
        "admin",
        request_id=call.request_id,
        action="reload",
        trigger=trigger,
        decision="allow",
        previous=old,
        policy=policy.digest,
    )
    if trigger == "api":
        # The other workers and replicas load the same files and compare digests
        # (``policy_follower``; SIGHUP reaches every process by itself; a peer's
        # announcement is not passed on again). This process's digest is now the fleet's.
        broker.policy_wanted = None
        await broker.state.announce_policy_reload(broker.origin, policy.digest)
    return {"reloaded": True, "previous": old, "digest": policy.digest, "files": list(policy.files)}
