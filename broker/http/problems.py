"""One place maps error codes to HTTP status and RFC 9457 problem+json bodies.

The caller sees the stable ``code`` and a generic sentence; the precise reason goes to
the audit log. A 500 (``internal_error``) is always a bug.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Final

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from broker.audit.redaction import redact_text
from broker.errors import BackendUnavailable, BrokerError, PolicyInvalid, RateLimited
from broker.http.request_id import request_id_of
from broker.service.metrics import Metrics

log = logging.getLogger("broker.http")

PROBLEM_JSON: Final = "application/problem+json"

STATUS: Final[dict[str, int]] = {
    "invalid_request": 400,
    "unknown_scope": 400,
    "ttl_exceeds_max": 400,
    "invalid_dpop_proof": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "task_revoked": 403,
    "scope_not_granted": 403,
    "agent_revoked": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "payload_too_large": 413,
    "policy_invalid": 422,
    "rate_limited": 429,
    "internal_error": 500,
    "backend_unavailable": 503,
}

TITLE: Final[dict[str, str]] = {
    "invalid_request": "The request is malformed or does not follow the API.",
    "unknown_scope": "A requested scope does not exist.",
    "ttl_exceeds_max": "The requested lifetime is above the allowed maximum.",
    "invalid_dpop_proof": "A DPoP proof is required, or the one given is not valid.",
    "unauthenticated": "The credential is missing or not valid.",
    "forbidden": "The caller may not do this.",
    "task_revoked": "The task is revoked; it gets no new token.",
    "scope_not_granted": "The request asks for more than the caller is granted.",
    "agent_revoked": "The agent is suspended; an admin must reinstate it.",
    "not_found": "No such resource.",
    "method_not_allowed": "The method is not allowed on this resource.",
    "payload_too_large": "The request body is too large.",
    "policy_invalid": "The policy is invalid; the policy in force was kept.",
    "rate_limited": "Too many requests; retry later.",
    "internal_error": "Internal error.",
    "backend_unavailable": "A backend is unavailable; nothing was issued. Retry later.",
}


def problem_body(code: str, request_id: str, *, detail: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": "about:blank",
        "title": TITLE[code],
        "status": STATUS[code],
        "code": code,
        "detail": detail or TITLE[code],
        "request_id": request_id,
        **extra,
    }


def problem(code: str, request_id: str, *, headers: dict[str, str] | None = None, **extra: Any) -> Response[Any]:
    body = problem_body(code, request_id, **extra)
    return Response(content=body, status_code=STATUS[code], media_type=PROBLEM_JSON, headers=headers)


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def problem_of_error(exc: BrokerError, rid: str, metrics: Metrics) -> tuple[str, dict[str, Any], dict[str, str] | None]:
    """The code, problem body and extra headers for a domain error (logged and counted here)."""
    if isinstance(exc, BackendUnavailable):
        log.warning("backend unavailable: %s (request %s)", exc.reason, rid)
        metrics.inc("capbroker_backend_errors_total")
        return "backend_unavailable", problem_body("backend_unavailable", rid), _retry_after(exc.retry_after)
    if isinstance(exc, RateLimited):
        return "rate_limited", problem_body("rate_limited", rid), _retry_after(exc.retry_after)
    if isinstance(exc, PolicyInvalid):
        # Admins asked for the reload: they get every issue, with file and line.
        return "policy_invalid", problem_body("policy_invalid", rid, errors=[str(i) for i in exc.issues]), None
    code = exc.code if exc.code in STATUS else "invalid_request"
    # what is wrong, for a caller the error is about (``BrokerError.told``); else generic
    # (redacted as audit text is: a secret the caller pasted into a field is not echoed)
    return code, problem_body(code, rid, detail=redact_text(exc.reason) if exc.for_caller else None), None


def broker_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if not isinstance(exc, BrokerError):
        return http_exception_handler(request, exc)
    code, body, headers = problem_of_error(exc, request_id_of(request.scope), request.app.state.broker.metrics)
    return Response(content=body, status_code=STATUS[code], media_type=PROBLEM_JSON, headers=headers)


def unhandled(exc: BaseException, rid: str) -> str:
    """A bug: logged with its traceback; the caller sees only ``internal_error``."""
    log.error("unhandled error on request %s", rid, exc_info=exc)
    return "internal_error"


def http_exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    rid = request_id_of(request.scope)
    if isinstance(exc, RequestEntityTooLarge):
        return problem("payload_too_large", rid)
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(status)
    if code is None and 400 <= status < 500:
        code = "invalid_request"
    if code is None:
        code = unhandled(exc, rid)
    return problem(code, rid)
