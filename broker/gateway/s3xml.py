"""The bucket route's own refusals, as S3 clients expect them: XML errors. Pure.

Each capbroker code maps to one HTTP status and one S3 error code, so boto3, the AWS CLI
and rclone show the refusal as an S3 error; the message names the capbroker code and one
generic sentence (the precise reason goes to the audit event, as on the other routes):

    capability_denied        403 AccessDenied
    (a token rejection)      401 InvalidToken
    budget_exhausted         429 BudgetExhausted   (not SlowDown: SDKs would retry it)
    backend_unavailable,
    revocation_unavailable,
    keys_unavailable         503 ServiceUnavailable
    invalid_request          400 InvalidRequest     (MalformedXML for a DeleteObjects body)
    payload_too_large        400 EntityTooLarge
    upstream_unavailable     502 BadGateway
    upstream_timeout         504 GatewayTimeout
"""

from __future__ import annotations

from typing import Final
from xml.sax.saxutils import escape

from broker.errors import TOKEN_REJECTION_CODES

_UNAVAILABLE: Final = (503, "ServiceUnavailable", "a backend the gateway needs is unavailable")
_BY_CODE: Final = {
    "capability_denied": (403, "AccessDenied", "this capability token does not allow the request"),
    "budget_exhausted": (429, "BudgetExhausted", "this token's budget is spent"),
    "backend_unavailable": _UNAVAILABLE,
    "revocation_unavailable": _UNAVAILABLE,
    "keys_unavailable": _UNAVAILABLE,
    "invalid_request": (400, "InvalidRequest", "the request is malformed"),
    "payload_too_large": (400, "EntityTooLarge", "the request body is too large"),
    "upstream_unavailable": (502, "BadGateway", "the upstream could not be reached"),
    "upstream_timeout": (504, "GatewayTimeout", "the upstream did not answer in time"),
}
_TOKEN: Final = (401, "InvalidToken", "the capability token was not accepted")


class S3Refused(Exception):
    """A request the bucket route never forwards. ``code`` is the capbroker code (what
    containment and the audit read), ``s3_code`` the S3 error code the client gets, and
    ``message`` the precise reason (for the audit event; it quotes nothing the agent sent)."""

    def __init__(self, code: str, s3_code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.s3_code = s3_code
        self.message = message


def denied(message: str) -> S3Refused:
    """A request outside the allow-list or the key rules: 403 ``capability_denied``."""
    return S3Refused("capability_denied", "AccessDenied", message)


def invalid(message: str, s3_code: str = "InvalidRequest") -> S3Refused:
    """A malformed request: 400 ``invalid_request``."""
    return S3Refused("invalid_request", s3_code, message)


def status_of(code: str) -> tuple[int, str, str]:
    """(HTTP status, S3 error code, generic sentence) for a capbroker code."""
    if code in _BY_CODE:
        return _BY_CODE[code]
    if code in TOKEN_REJECTION_CODES or code == "unauthenticated":
        return _TOKEN
    return _BY_CODE["invalid_request"]


def error_response(
    code: str, request_id: str, s3_code: str | None = None
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The status, headers and S3 XML body of a refusal with capbroker ``code``.

    ``s3_code`` overrides the S3 code (``MalformedXML`` for a body that does not parse)."""
    status, mapped, sentence = status_of(code)
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(s3_code or mapped)}</Code>"
        f"<Message>capbroker {escape(code)}: {escape(sentence)}</Message>"
        f"<RequestId>{escape(request_id)}</RequestId></Error>"
    ).encode()
    headers = [
        (b"content-type", b"application/xml"),
        (b"content-length", str(len(body)).encode()),
        (b"x-amz-request-id", request_id.encode("ascii", "replace")),
    ]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    return status, headers, body


def refusal_response(refused: S3Refused, request_id: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return error_response(refused.code, request_id, refused.s3_code)
