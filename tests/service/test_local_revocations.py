"""Introspection and exchange with a local revocation set (the broker's revocation feed):
no state-store round trip, a process's own revocations at once, and a feed that cannot
vouch for itself is a 503, never "active"."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from broker.token.claims import Claims
from broker.verify import StaticRevocationList
from tests.service.harness import Harness, make_harness
from tests.service.support import assert_problem, introspect, minted, post_json, running, token_for

REPORTS = [{"scope": "reports-write", "resource": "s3://acme-reports/agents/t1/"}]


class CountingState:
    """Counts revocation reads that reach the state store."""

    def __init__(self, h: Harness) -> None:
        self.reads = 0
        original = h.broker.state.revocation_state

        async def counted(*args: Any, **kw: Any) -> Any:
            self.reads += 1
            return await original(*args, **kw)

        h.broker.state.revocation_state = counted  # type: ignore[method-assign]


class Down:
    ready = False

    def is_revoked(self, claims: Claims) -> bool:
        raise ConnectionError("feed behind")


@pytest.fixture
def h() -> Harness:
    harness = make_harness()
    harness.broker.revocations = StaticRevocationList()
    return harness


@pytest.fixture
def client(h: Harness) -> Iterator[TestClient[Any]]:
    with running(h) as c:
        yield c


def test_introspection_reads_the_local_set_not_the_store(client: TestClient[Any], h: Harness) -> None:
    counting = CountingState(h)
    token = token_for(minted(client, h, "analyst", "t1", REPORTS), "storage-gateway")
    assert introspect(client, h, "storage-gateway", token)["active"] is True
    feed = h.broker.revocations
    assert isinstance(feed, StaticRevocationList)
    feed.revoke_task("t1", "analyst")  # as if another replica revoked the task and the feed heard of it
    assert introspect(client, h, "storage-gateway", token) == {"active": False}
    assert counting.reads == 0


def test_this_processs_own_revocations_apply_at_once(client: TestClient[Any], h: Harness) -> None:
    token = token_for(minted(client, h, "analyst", "t1", REPORTS), "storage-gateway")
    other = token_for(minted(client, h, "analyst", "t2", REPORTS), "storage-gateway")
    assert post_json(client, "/v1/revoke", {"token": token}, h.auth("analyst")).status_code == 200
    assert introspect(client, h, "storage-gateway", token) == {"active": False}  # before any feed hears of it
    assert introspect(client, h, "storage-gateway", other)["active"] is True
    assert client.post("/v1/agents/analyst/revoke", headers=h.auth("admin")).status_code == 200
    assert introspect(client, h, "storage-gateway", other) == {"active": False}


def test_a_feed_that_cannot_vouch_for_itself_is_503_and_not_ready(client: TestClient[Any], h: Harness) -> None:
    token = token_for(minted(client, h, "analyst", "t1", REPORTS), "storage-gateway")
    h.broker.revocations = Down()
    r = post_json(client, "/v1/introspect", {"token": token}, h.auth("storage-gateway"))
    assert_problem(r, 503, "backend_unavailable")
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["revocations"] == "backend_unavailable"
