"""A downstream credential needs Vault: without it (the embedded default, memory state and
an in-process key) a mint that carries one fails closed, 503 and no token (SPEC 6, 7)."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient

from tests.service.harness import Harness
from tests.service.support import assert_problem, mint, minted


def test_a_downstream_scope_without_vault_is_503_and_no_token(client: TestClient[Any], h: Harness) -> None:
    for scopes in (["weather-api-key"], ["exports-read", "warehouse-readonly"]):
        body = assert_problem(mint(client, h, "analyst", "t-no-vault", scopes), 503, "backend_unavailable")
        assert "tokens" not in body
    assert '"type":"mint"' not in h.audit_out.getvalue().replace(" ", "")
    # a mint of other kinds is untouched
    assert minted(client, h, "analyst", "t-no-vault", ["exports-read"])["credentials"] == []
    assert '"type":"mint"' in h.audit_out.getvalue().replace(" ", "")
