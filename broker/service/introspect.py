"""RFC 7662 introspection for services: active only for valid, unrevoked tokens of the
calling service's own audiences. Everything else is ``{"active": false}``, except a
backend failure, which is 503: an unknown revocation state is never reported active."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from broker.errors import BrokerError, InvalidRequest, TokenRejected
from broker.service.auth import service_of
from broker.service.broker import Broker, Call
from broker.service.own_tokens import own_token_claims

INACTIVE: dict[str, Any] = {"active": False}


def _token_field(body: object) -> str:
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be an object")
    unknown = set(body) - {"token", "token_type_hint"}
    if unknown:
        raise InvalidRequest(f"unknown field(s): {sorted(map(str, unknown))}")
    token = body.get("token")
    hint = body.get("token_type_hint")
    if not isinstance(token, str) or not token:
        raise InvalidRequest("'token' is required")
    if hint is not None and not isinstance(hint, str):
        raise InvalidRequest("'token_type_hint' must be a string")
    return token


async def introspect(broker: Broker, call: Call, read_body: Callable[[], Awaitable[object]]) -> dict[str, Any]:
    try:
        service = service_of(broker.policy, call)
        token = _token_field(await read_body())
    except BrokerError as e:
        await broker.audit.record(
            "introspect", request_id=call.request_id, decision="deny", code=e.code, reason=e.reason
        )
        raise
    try:
        claims = await own_token_claims(broker, token, service.audiences)
    except TokenRejected as e:
        broker.metrics.inc("capbroker_introspections_total", result="inactive")
        await broker.audit.record(
            "introspect", request_id=call.request_id, service=service.name, active=False, reason=e.code
        )
        return INACTIVE
    state = await broker.state.revocation_state(claims.jti, claims.task, claims.agent)
    active = not state.revokes(claims.iat)
    broker.metrics.inc("capbroker_introspections_total", result="active" if active else "revoked")
    await broker.audit.record(
        "introspect",
        request_id=call.request_id,
        service=service.name,
        agent=claims.agent,
        task=claims.task,
        jti=claims.jti,
        active=active,
        reason=None if active else "revoked",
    )
    if not active:
        return INACTIVE
    return {"active": True, "token_type": "cap+jwt", **claims.to_json()}
