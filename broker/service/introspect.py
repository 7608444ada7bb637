"""RFC 7662 introspection for services: active only for valid, unrevoked tokens of the
calling service's own audiences. Everything else is ``{"active": false}``, except a
backend failure, which is 503: an unknown revocation state is never reported active.

A DPoP-bound token (``cnf.jkt``) is active only with the proof the agent sent to the
service: the service passes it as ``dpop`` with the request it came with (``htm``,
``htu``); the proof must be by the bound key, for that request and that token (``ath``),
fresh, and not seen before by any replica.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from broker.errors import BrokerError, InvalidDpopProof, InvalidRequest, TokenRejected, quoted
from broker.policy.model import Service
from broker.service.auth import service_of
from broker.service.broker import Broker, Call
from broker.service.own_tokens import own_token_claims
from broker.service.proofs import proof_key
from broker.service.refusals import of_principal, refused_by_service
from broker.service.revocations import is_revoked
from broker.token.claims import Claims

INACTIVE: dict[str, Any] = {"active": False}
_FIELDS = frozenset({"token", "token_type_hint", "dpop", "htm", "htu"})


@dataclass(frozen=True, slots=True)
class _Question:
    token: str
    proof: tuple[str, str, str] | None  # (dpop, htm, htu)


def _question(body: object) -> _Question:
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be an object")
    unknown = [k for k in body if k not in _FIELDS]
    if unknown:
        raise InvalidRequest(f"unknown field(s): {quoted(unknown)}")
    for name, value in body.items():
        if not isinstance(value, str):
            raise InvalidRequest(f"{name!r} must be a string")
    token = body.get("token")
    if not token:
        raise InvalidRequest("'token' is required")
    dpop, htm, htu = (str(body.get(name) or "") for name in ("dpop", "htm", "htu"))
    if (dpop or htm or htu) and not (dpop and htm and htu):
        raise InvalidRequest("'dpop', 'htm' and 'htu' go together")
    return _Question(token, (dpop, htm, htu) if dpop else None)


async def _proven(broker: Broker, question: _Question, claims: Claims) -> str | None:
    """None when the token needs no proof or its proof holds; else why it is inactive."""
    if claims.cnf_jkt is None:
        return None
    if question.proof is None:
        return "proof_required"
    dpop, htm, htu = question.proof
    try:
        jkt = await proof_key(broker, dpop, method=htm, url=htu, access_token=question.token)
    except InvalidDpopProof:
        return "bad_proof"
    return None if jkt == claims.cnf_jkt else "bad_proof"


async def introspect(broker: Broker, call: Call, read_body: Callable[[], Awaitable[object]]) -> dict[str, Any]:
    service: Service | None = None
    try:
        service = await service_of(broker, broker.policy, call)
        question = _question(await read_body())
    except BrokerError as e:
        error = await refused_by_service(broker, service, e)
        await broker.audit.record(
            "introspect", request_id=call.request_id, service=service.name if service else None,
            decision="deny", code=error.code, reason=error.reason, caller=of_principal(service),
        )  # fmt: skip
        if error is e:
            raise
        raise error from None
    try:
        claims = await own_token_claims(broker, question.token, service.audiences)
    except TokenRejected as e:
        broker.metrics.inc("capbroker_introspections_total", result="inactive")
        await broker.audit.record(
            "introspect", request_id=call.request_id, service=service.name, active=False, reason=e.code
        )
        return INACTIVE
    refusal = "revoked" if await is_revoked(broker, claims) else await _proven(broker, question, claims)
    active = refusal is None
    broker.metrics.inc("capbroker_introspections_total", result="active" if active else refusal or "")
    await broker.audit.record(
        "introspect",
        request_id=call.request_id,
        service=service.name,
        agent=claims.agent,
        task=claims.task,
        jti=claims.jti,
        active=active,
        reason=refusal,
    )
    if not active:
        return INACTIVE
    return {"active": True, "token_type": "cap+jwt", **claims.to_json()}
