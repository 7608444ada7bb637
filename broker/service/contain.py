"""Containment: a service that saw a token used out of its scope revokes the token's task.

``POST /v1/tasks/{task}/contain`` (docs/api.md, docs/gateway.md). The caller is a service (its own
credential); the evidence is the agent's token itself. The broker accepts it only when
the token is one of ours and valid (signature, issuer, times), its audience is one of
the calling service's, and the task in the path is the token's. Then the task is revoked
as its owner's task (the root agent of the token's chain, exactly as that agent's own
task revoke) and announced like every revocation, so every verifier with a revocation
feed refuses the task's tokens within a second; a ``contained`` event records what the
service saw (kind, resource, action, its request id).

Containment is idempotent: a token or task already revoked is still 200 ``revoked: true``
(the task *is* contained; the event says ``already``), so two gateway replicas racing on
one misuse both succeed. A token that does not verify is 400 ``invalid_request`` (the
rejection code goes to the audit event only, as for ``POST /v1/revoke``). Refusals spend
the service's ``rate:``. The revocation is written before the event: if the event cannot
be stored the answer is 503 and the task stays revoked (fail closed; a retry is a 200).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from broker.capability.kinds import KINDS
from broker.capability.names import is_task
from broker.errors import BrokerError, Forbidden, InvalidRequest, TokenRejected, excerpt, quoted
from broker.policy.model import Service
from broker.service import downstream
from broker.service.auth import service_of
from broker.service.broker import Broker, Call
from broker.service.own_tokens import own_token_claims
from broker.service.refusals import of_principal, refused_by_service
from broker.service.revocations import is_revoked
from broker.token.claims import Claims

_FIELDS: Final = frozenset({"token", "kind", "resource", "action", "request_id"})
#: what a service may say it saw: an action word (an HTTP method, ``read``, ...), a request id
_ACTION: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # as ``X-Request-Id`` (broker.http.request_id)
#: the most characters of the resource a service reports (stored as free text, cut further)
MAX_RESOURCE: Final = 2048


@dataclass(frozen=True, slots=True)
class Report:
    """What the service saw: the token, and the request it refused."""

    token: str
    kind: str
    resource: str
    action: str
    request_id: str | None


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{name!r} must be a non-empty string")
    return value


def parse_report(body: object) -> Report:
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be an object")
    unknown = [k for k in body if k not in _FIELDS]
    if unknown:
        raise InvalidRequest(f"unknown field(s): {quoted(unknown)}")
    token, resource, action = (_text(body, name) for name in ("token", "resource", "action"))
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise InvalidRequest(f"'kind' must be one of {', '.join(KINDS)}, not {excerpt(kind)}")
    if len(resource) > MAX_RESOURCE or not resource.isprintable():
        raise InvalidRequest(f"'resource' must be printable, at most {MAX_RESOURCE} characters")
    if _ACTION.fullmatch(action) is None:
        raise InvalidRequest("'action' is not an action word")
    request_id = body.get("request_id")
    if request_id is not None and (not isinstance(request_id, str) or _REQUEST_ID.fullmatch(request_id) is None):
        raise InvalidRequest("'request_id' must match [A-Za-z0-9._:-]{1,64}")
    return Report(token, kind, resource, action, request_id)


async def _evidence(broker: Broker, service: Service, task: str, report: Report) -> Claims:
    """The token's claims, when it is valid evidence for this service and this task."""
    if not is_task(task):
        raise InvalidRequest("task id outside the grammar")
    try:
        claims = await own_token_claims(broker, report.token, None)
    except TokenRejected as e:
        raise InvalidRequest(f"not a valid token of this broker ({e.code})") from None
    if claims.aud not in service.audiences:
        raise Forbidden(f"the token's audience {claims.aud!r} is not one of service {service.name!r}")
    if claims.task != task:
        raise Forbidden("the task in the path is not the token's")
    return claims


async def contain(broker: Broker, call: Call, task: str, read_body: Callable[[], Awaitable[object]]) -> dict[str, Any]:
    service: Service | None = None
    report: Report | None = None
    try:
        service = await service_of(broker, broker.policy, call)
        report = parse_report(await read_body())
        claims = await _evidence(broker, service, task, report)
        already = await is_revoked(broker, claims)
        await broker.state.revoke_task(claims.task, claims.root_agent, broker.now())
    except BrokerError as e:
        error = await refused_by_service(broker, service, e)
        await _refused(broker, call, error, service=service, task=task, report=report)
        if error is e:
            raise
        raise error from None
    broker.own_revocations.note_task(claims.task_ref, broker.now())
    vault = await downstream.revoke_task(broker, claims.root_agent, claims.task)  # its Vault credentials die too
    broker.metrics.inc("capbroker_revocations_total", kind="contained")
    await broker.audit.record(
        "contained",
        request_id=call.request_id,
        decision="allow",
        service=service.name,
        task=claims.task,
        agent=claims.agent,
        owner=claims.root_agent if claims.root_agent != claims.agent else None,
        jti=claims.jti,
        **_seen(report),
        already=already,
        vault=vault or None,
    )
    return {"task": claims.task, "revoked": True}


def _seen(report: Report | None) -> dict[str, Any]:
    """The refused request as the service reported it (the token itself never)."""
    if report is None:
        return {}
    return {
        "kind": report.kind,
        "resource": report.resource,
        "action": report.action,
        "service_request_id": report.request_id,
    }


async def _refused(
    broker: Broker, call: Call, error: BrokerError, *, service: Service | None, task: str, report: Report | None
) -> None:
    await broker.audit.record(
        "contained",
        request_id=call.request_id,
        decision="deny",
        code=error.code,
        reason=error.reason,
        service=None if service is None else service.name,
        task=task if is_task(task) else None,
        **_seen(report),
        caller=of_principal(service),
    )
