"""Client secrets, bearer parsing, constant-time matching; the metrics text format."""

from __future__ import annotations

import pytest

from broker.service.credentials import (
    bearer_credential,
    is_client_secret,
    matches_any,
    new_client_secret,
    secret_sha256,
)
from broker.service.metrics import Metrics


def test_new_secrets_are_well_formed_and_distinct() -> None:
    a, b = new_client_secret(), new_client_secret()
    assert a != b
    assert is_client_secret(a)
    assert len(a) == 4 + 43


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", None),
        ("Bearer  abc", None),
        ("Basic abc", None),
        ("Bearer abc def", None),
        ("Bearer ", None),
        (None, None),
    ],
)
def test_bearer_credential(header: str | None, expected: str | None) -> None:
    assert bearer_credential(header) == expected


def test_matches_any() -> None:
    secret = new_client_secret()
    assert matches_any(secret, ["0" * 64, secret_sha256(secret)])
    assert not matches_any(secret, ["0" * 64])
    assert not matches_any(secret, [])


@pytest.mark.parametrize("bad", ["cbk_short", "cbk_" + "a" * 44, "xyz_" + "a" * 43, "cbk_" + "a" * 42 + "="])
def test_is_client_secret_refuses_other_shapes(bad: str) -> None:
    assert not is_client_secret(bad)


def test_metrics_render_counters_and_histogram() -> None:
    m = Metrics()
    m.inc("capbroker_tokens_minted_total", 2)
    m.inc("capbroker_decisions_total", decision="deny", code='we"ird')
    m.observe_latency(0.003)
    m.observe_latency(5.0)
    text = m.render()
    assert "capbroker_tokens_minted_total 2.0\n" in text
    assert 'capbroker_decisions_total{code="we\\"ird",decision="deny"} 1.0' in text
    assert 'capbroker_http_request_duration_seconds_bucket{le="0.005"} 1.0' in text
    assert 'capbroker_http_request_duration_seconds_bucket{le="+Inf"} 2.0' in text
    assert m.value("capbroker_tokens_minted_total") == 2
    with pytest.raises(ValueError, match="unknown metric"):
        m.inc("nope")
