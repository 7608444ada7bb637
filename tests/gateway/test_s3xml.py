"""The bucket route's own refusals as S3 XML errors, and the capbroker code -> S3 code map."""

from __future__ import annotations

from xml.etree.ElementTree import fromstring

import pytest

from broker.gateway.s3xml import denied, error_response, invalid, refusal_response, status_of


@pytest.mark.parametrize(
    ("code", "status", "s3_code"),
    [
        ("capability_denied", 403, "AccessDenied"),
        ("expired", 401, "InvalidToken"),
        ("revoked", 401, "InvalidToken"),
        ("wrong_audience", 401, "InvalidToken"),
        ("unauthenticated", 401, "InvalidToken"),
        ("budget_exhausted", 429, "BudgetExhausted"),
        ("backend_unavailable", 503, "ServiceUnavailable"),
        ("revocation_unavailable", 503, "ServiceUnavailable"),
        ("keys_unavailable", 503, "ServiceUnavailable"),
        ("invalid_request", 400, "InvalidRequest"),
        ("payload_too_large", 400, "EntityTooLarge"),
        ("upstream_unavailable", 502, "BadGateway"),
        ("upstream_timeout", 504, "GatewayTimeout"),
        ("something_new", 400, "InvalidRequest"),
    ],
)
def test_each_capbroker_code_has_one_status_and_s3_code(code: str, status: int, s3_code: str) -> None:
    assert status_of(code)[:2] == (status, s3_code)


def test_a_refusal_is_an_s3_error_document_naming_the_capbroker_code() -> None:
    status, headers, body = error_response("capability_denied", "req-1")
    assert status == 403
    assert dict(headers)[b"content-type"] == b"application/xml"
    assert dict(headers)[b"content-length"] == str(len(body)).encode()
    root = fromstring(body)  # noqa: S314 - the gateway's own output
    assert root.tag == "Error"
    assert root.findtext("Code") == "AccessDenied"
    assert (root.findtext("Message") or "").startswith("capbroker capability_denied: ")
    assert root.findtext("RequestId") == "req-1"


def test_the_message_is_generic_and_the_reason_stays_out() -> None:
    refused = denied("copy source outside the route's bucket")
    status, _, body = refusal_response(refused, "r")
    assert status == 403
    assert b"copy source" not in body


def test_a_malformed_body_keeps_its_s3_code_and_a_request_id_is_escaped() -> None:
    status, _, body = refusal_response(invalid("x", "MalformedXML"), "<&>")
    root = fromstring(body)  # noqa: S314 - the gateway's own output
    assert (status, root.findtext("Code"), root.findtext("RequestId")) == (400, "MalformedXML", "<&>")


def test_only_a_503_asks_to_retry_after_and_a_spent_budget_does_not() -> None:
    assert (b"retry-after", b"1") in error_response("backend_unavailable", "r")[1]
    assert not any(name == b"retry-after" for name, _ in error_response("budget_exhausted", "r")[1])
