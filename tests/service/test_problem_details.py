"""Problem details that say what is wrong (issue 13, item 6).

An authenticated agent whose mint is refused learns from ``detail`` which field, scope or
cap is at fault, or that its task is revoked, and can correct itself; the stable codes stay
(a revoked task gets its own, ``task_revoked``). A caller who is not authenticated keeps
the generic sentence; a detail never holds a secret, nor more of the caller's text than a
bounded excerpt.
"""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient

from broker.errors import MAX_REASON
from tests.service.harness import Harness
from tests.service.support import assert_problem, mint, minted, post_json

AnyClient = TestClient[Any]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"scopes": ["widgets-read"]}, "'task' is required"),
        ({"task": "t 1", "scopes": ["widgets-read"]}, "'task' must match"),
        ({"task": "t1", "scopes": []}, "'scopes' must be a non-empty list"),
        ({"task": "t1", "scopes": ["widgets-read"], "ttl": "5 m"}, "'5 m' is not a duration like '90s', '5m' or '1h'"),
        ({"task": "t1", "scopes": ["widgets-read"], "colour": "red"}, "unknown field(s) in the request: ['colour']"),
    ],
)
def test_a_malformed_mint_names_the_field(client: AnyClient, h: Harness, body: dict[str, Any], says: str) -> None:
    r = post_json(client, "/v1/tokens", body, h.auth("reviewer"))
    detail = assert_problem(r, 400, "invalid_request")["detail"]
    assert says in detail


def test_a_body_that_is_not_json_says_so(client: AnyClient, h: Harness) -> None:
    r = client.post(
        "/v1/tokens", content=b"task=t1", headers={**h.auth("reviewer"), "Content-Type": "application/json"}
    )
    assert "JSON" in assert_problem(r, 400, "invalid_request")["detail"]


def test_an_unknown_scope_is_named(client: AnyClient, h: Harness) -> None:
    detail = assert_problem(mint(client, h, "reviewer", "t1", ["no-such-scope"]), 400, "unknown_scope")["detail"]
    assert "'no-such-scope'" in detail


def test_a_ttl_above_the_cap_gives_the_cap(client: AnyClient, h: Harness) -> None:
    detail = assert_problem(mint(client, h, "reviewer", "t1", ["widgets-read"], ttl="1h"), 400, "ttl_exceeds_max")[
        "detail"
    ]
    assert "3600s" in detail
    assert "600s" in detail  # reviewer's max_ttl: 10m


def test_a_scope_not_granted_is_named(client: AnyClient, h: Harness) -> None:
    detail = assert_problem(mint(client, h, "reviewer", "t1", ["reports-write"]), 403, "scope_not_granted")["detail"]
    assert "'reports-write'" in detail


def test_a_mint_for_a_revoked_task_is_task_revoked(client: AnyClient, h: Harness) -> None:
    minted(client, h, "reviewer", "t-gone", ["widgets-read"])
    assert client.post("/v1/tasks/t-gone/revoke", headers=h.auth("reviewer")).status_code == 200
    detail = assert_problem(mint(client, h, "reviewer", "t-gone", ["widgets-read"]), 403, "task_revoked")["detail"]
    assert "'t-gone'" in detail
    assert "revoked" in detail


def test_a_stranger_keeps_the_generic_text(client: AnyClient, h: Harness) -> None:
    r = post_json(client, "/v1/tokens", {"scopes": ["widgets-read"]}, {"Authorization": "Bearer cbk_nobody"})
    body = assert_problem(r, 401, "unauthenticated")
    assert body["detail"] == body["title"]


def test_a_detail_quotes_the_callers_text_only_bounded(client: AnyClient, h: Harness) -> None:
    r = mint(client, h, "reviewer", "t1", ["a" * 5000])
    detail = assert_problem(r, 400, "invalid_request")["detail"]
    assert len(detail) <= MAX_REASON + 16
    assert "a" * 100 not in detail
