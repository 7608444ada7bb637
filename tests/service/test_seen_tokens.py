"""Introspection remembers the tokens it verified (``broker.seen_tokens``) and skips only
their parse and signature: the caller's audience, the times, revocation and the key set
still decide every answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from broker.backends.local_signer import LocalSigningBackend
from broker.service import own_tokens
from tests.service.harness import Harness, make_harness
from tests.service.support import introspect, minted, running, token_for

REPORTS = [{"scope": "reports-write", "resource": "s3://acme-reports/agents/t1/"}]


@pytest.fixture
def h() -> Harness:
    return make_harness(signer=LocalSigningBackend.generate(name="seen"))


@pytest.fixture
def client(h: Harness) -> Iterator[TestClient[Any]]:
    with running(h) as c:
        yield c


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every full parse-and-signature check own_token_claims makes."""
    seen: list[str] = []
    original = own_tokens.signed_claims_and_key

    def counted(token: object, keys: Any) -> Any:
        seen.append(str(token))
        return original(token, keys)

    monkeypatch.setattr(own_tokens, "signed_claims_and_key", counted)
    return seen


def _token(client: TestClient[Any], h: Harness, task: str = "t1") -> str:
    return token_for(minted(client, h, "analyst", task, REPORTS), "storage-gateway")


def test_a_token_introspected_again_is_not_verified_again(
    client: TestClient[Any], h: Harness, verifications: list[str]
) -> None:
    token = _token(client, h)
    for _ in range(3):
        assert introspect(client, h, "storage-gateway", token)["active"] is True
    assert verifications == [token]
    assert token in h.broker.seen_tokens


def test_a_remembered_token_is_still_checked_for_revocation(
    client: TestClient[Any], h: Harness, verifications: list[str]
) -> None:
    token = _token(client, h)
    assert introspect(client, h, "storage-gateway", token)["active"] is True
    assert client.post("/v1/tasks/t1/revoke", headers=h.auth("admin")).status_code == 200
    assert introspect(client, h, "storage-gateway", token) == {"active": False}
    assert verifications == [token]  # it was remembered, and still refused


def test_a_remembered_token_is_still_checked_for_expiry(client: TestClient[Any], h: Harness) -> None:
    token = _token(client, h)
    body = introspect(client, h, "storage-gateway", token)
    assert body["active"] is True
    h.broker.clock = lambda: body["exp"] + h.broker.clock_skew + 1
    assert introspect(client, h, "storage-gateway", token) == {"active": False}


def test_a_remembered_token_is_still_checked_for_the_callers_audience(client: TestClient[Any], h: Harness) -> None:
    token = _token(client, h)
    assert introspect(client, h, "storage-gateway", token)["active"] is True
    assert introspect(client, h, "git-gateway", token) == {"active": False}


def test_a_remembered_token_whose_key_was_replaced_is_verified_afresh_and_refused(
    client: TestClient[Any], h: Harness, verifications: list[str]
) -> None:
    token = _token(client, h)
    assert introspect(client, h, "storage-gateway", token)["active"] is True
    old_kid = h.broker.signer.kid
    h.broker.signer = LocalSigningBackend.generate(name="seen")  # same kid, another key
    assert h.broker.signer.kid == old_kid
    assert introspect(client, h, "storage-gateway", token) == {"active": False}
    assert verifications == [token, token]
    assert token not in h.broker.seen_tokens


def test_a_remembered_token_whose_key_left_the_key_set_is_inactive(client: TestClient[Any], h: Harness) -> None:
    token = _token(client, h)
    assert introspect(client, h, "storage-gateway", token)["active"] is True
    h.broker.signer = LocalSigningBackend.generate(name="other")
    assert introspect(client, h, "storage-gateway", token) == {"active": False}
