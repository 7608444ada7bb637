"""Fixes from the security review, each pinned by a test that fails without it."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import logging
import time
from typing import Any

import pytest
from litestar.testing import TestClient

from broker.backends.local_signer import LocalSigningBackend
from broker.http.app import create_app
from broker.token.claims import Claims
from broker.token.keys import KeySet
from broker.verify import StaticRevocationList, Verifier
from tests.service.harness import ISSUER, Harness, make_harness
from tests.service.support import introspect, mint, minted, post_json, running, token_for


def stored_events(h: Harness) -> int:
    return len(h.broker.state._events)  # type: ignore[attr-defined]  # MemoryState's stream


def test_unauthenticated_requests_are_echoed_but_never_stored(h: Harness, client: TestClient[Any]) -> None:
    """A stranger cannot grow the audit stream (and so Redis) by sending garbage."""
    before = stored_events(h)
    for path in ("/v1/tokens", "/v1/introspect", "/v1/revoke", "/v1/explain"):
        r = post_json(client, path, {"task": "t"}, {"Authorization": "Bearer cbk_" + "x" * 43})
        assert r.status_code == 401
    assert stored_events(h) == before
    lines = [json.loads(line) for line in h.audit_out.getvalue().splitlines()]
    unstored = [e for e in lines if e.get("stored") is False]
    assert len(unstored) == 4
    assert all(e["code"] == "unauthenticated" for e in unstored)
    # an authenticated denial is stored
    assert mint(client, h, "reviewer", "t-h1", ["nope-scope"]).status_code == 400
    assert stored_events(h) == before + 1


def test_the_kill_switch_reaches_tokens_stamped_by_a_replica_whose_clock_runs_ahead(
    h: Harness, client: TestClient[Any]
) -> None:
    skew = h.broker.clock_skew
    assert skew > 0
    real = h.broker.clock
    h.broker.clock = lambda: real() + skew  # this replica's clock runs ahead by the allowance
    body = minted(client, h, "reviewer", "t-fast-clock", ["widgets-read"])
    h.broker.clock = real
    r = client.post("/v1/agents/reviewer/revoke", headers=h.auth("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["issued_at_or_before"] >= int(time.time()) + skew - 1
    assert introspect(client, h, "git-gateway", token_for(body, "git-gateway")) == {"active": False}


def test_a_token_just_past_exp_can_still_be_revoked(h: Harness, client: TestClient[Any]) -> None:
    """Verifiers accept a token up to their leeway after exp; revocation must reach it."""
    body = minted(client, h, "reviewer", "t-late", ["widgets-read"], ttl=60)
    token = token_for(body, "git-gateway")
    real = h.broker.clock
    h.broker.clock = lambda: real() + 75  # 15 s past exp, inside a 30 s verifier leeway
    r = post_json(client, "/v1/revoke", {"token": token}, h.auth("reviewer"))
    assert r.status_code == 200, r.text
    assert r.json() == {"revoked": True, "jti": body["tokens"][0]["token_id"]}


def test_introspection_tolerates_a_replica_whose_clock_runs_a_little_ahead(h: Harness, client: TestClient[Any]) -> None:
    real = h.broker.clock
    h.broker.clock = lambda: real() + 3
    token = token_for(minted(client, h, "reviewer", "t-ahead", ["widgets-read"]), "git-gateway")
    h.broker.clock = real
    assert introspect(client, h, "git-gateway", token)["active"] is True


class BrokenPipe(io.StringIO):
    def write(self, s: str) -> int:
        raise BrokenPipeError


def test_a_broken_stdout_does_not_turn_a_stored_mint_into_a_500() -> None:
    h = make_harness()
    h.broker.audit._out = BrokenPipe()  # type: ignore[attr-defined]
    with running(h) as client:
        r = mint(client, h, "reviewer", "t-pipe", ["widgets-read"])
    assert r.status_code == 201, r.text
    assert stored_events(h) >= 1


def test_malformed_mints_spend_the_rate_allowance(tmp_path: Any) -> None:
    from tests.service.support import copy_scopes, edit

    scopes = copy_scopes(tmp_path / "scopes")
    edit(scopes / "code-review.yaml", "rate: 120/min", "rate: 3/min")
    h = make_harness(scopes)
    with running(h) as client:
        codes = [post_json(client, "/v1/tokens", {"task": 1}, h.auth("reviewer")).status_code for _ in range(3)]
        assert codes == [400, 400, 400]
        r = mint(client, h, "reviewer", "t-rate", ["widgets-read"])
    assert r.status_code == 429, r.text


def test_secrets_sent_in_the_wrong_field_are_redacted_from_the_audit(h: Harness, client: TestClient[Any]) -> None:
    token = token_for(minted(client, h, "reviewer", "t-red", ["widgets-read"]), "git-gateway")
    admin_key = h.keys["admin"]
    mint(client, h, "reviewer", "t-red2", ["widgets-read"], ttl=token)
    mint(client, h, "reviewer", "t-red3", [{"scope": "widgets-read", "resource": admin_key}])
    audit = h.audit_out.getvalue()
    assert token not in audit
    assert admin_key not in audit
    assert admin_key[:12] not in audit
    assert "[redacted]" in audit


def test_an_oversize_mint_is_audited(h: Harness, client: TestClient[Any]) -> None:
    before = stored_events(h)
    r = client.post(
        "/v1/tokens",
        content=b"{" + b" " * 70_000 + b"}",
        headers={**h.auth("reviewer"), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"
    assert stored_events(h) == before + 1
    assert json.loads(h.audit_out.getvalue().splitlines()[-1])["code"] == "payload_too_large"


def test_the_verifier_library_and_introspection_agree_on_a_fresh_token(h: Harness, client: TestClient[Any]) -> None:
    jwks = client.get("/.well-known/jwks.json").json()
    token = token_for(minted(client, h, "reviewer", "t-agree", ["widgets-read"]), "git-gateway")
    v = Verifier(issuer=ISSUER, audience="git-gateway", jwks=jwks, revocation=StaticRevocationList())
    assert v.verify(token).task == "t-agree"
    assert introspect(client, h, "git-gateway", token)["active"] is True


class MismatchedSigner(LocalSigningBackend):
    """Signs with one key but publishes another: what a misconfigured deployment looks like."""

    def __init__(self) -> None:
        own = LocalSigningBackend.generate()
        super().__init__(own._name, own._signers)  # type: ignore[attr-defined]
        self._published = LocalSigningBackend.generate()

    async def keyset(self) -> KeySet:
        return await self._published.keyset()


class SlowStartSigner(LocalSigningBackend):
    """A signer whose self-test takes a while to pass (Vault answering slowly at start)."""

    def __init__(self) -> None:
        own = LocalSigningBackend.generate()
        super().__init__(own._name, own._signers)  # type: ignore[attr-defined]
        self.first = True

    async def sign(self, claims: Claims) -> str:
        if self.first:  # the start-up self-test's signature
            self.first = False
            await asyncio.sleep(0.3)
        return await super().sign(claims)


@pytest.mark.parametrize("ready_wait", [0.0, 5.0])
def test_with_a_ready_wait_the_first_request_waits_for_the_self_test(ready_wait: float) -> None:
    """Workers sharing a port get connections as soon as they listen: with ``ready_wait``
    (what ``broker serve`` sets) start-up holds requests until signing works."""
    h = make_harness(signer=SlowStartSigner())
    h.app = create_app(h.broker, ready_wait=ready_wait)
    with TestClient(h.app) as client:
        r = mint(client, h, "reviewer", "t-slow", ["widgets-read"])
        assert r.status_code == (201 if ready_wait else 503), r.text


def test_nothing_is_minted_while_the_signing_self_test_fails() -> None:
    h = make_harness(signer=MismatchedSigner())
    with TestClient(h.app) as client:
        time.sleep(0.2)  # the start-up self-test has run (and failed) by now
        assert h.broker.ready_for_signing is False
        r = mint(client, h, "reviewer", "t-selftest", ["widgets-read"])
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "backend_unavailable"
        assert "eyJ" not in r.text
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"state": "ok", "signing": "backend_unavailable", "policy": "ok"}


def test_start_up_freezes_what_it_built_out_of_the_collectors_reach() -> None:
    """Full collections under load rescanned every long-lived object (the p99 tail)."""
    gc.unfreeze()
    h = make_harness()
    with running(h):
        assert gc.get_freeze_count() == 0  # the default: tests start many apps in one process
    h.app = create_app(h.broker, freeze_heap=True)  # what `broker serve` and `broker dev` set
    try:
        with running(h):
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()


def test_shutdown_is_bounded_when_a_background_task_never_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A CI run hung for ten minutes in an app's shutdown, waiting on something that never
    finished. Each shutdown step now has a bound, and the one that did not finish is named."""
    import broker.http.app as app_module

    monkeypatch.setattr(app_module, "SHUTDOWN_STEP_WAIT", 0.2)
    seen: list[str] = []

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Seen(logging.ERROR)
    app_module.log.addHandler(handler)
    monkeypatch.setattr(app_module.log, "disabled", False)

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(30)  # slow to stop: only a second cancellation ends it
            raise

    h = make_harness()
    h.app = create_app(h.broker, background=(stubborn,))
    started = time.monotonic()
    with TestClient(h.app) as client:
        assert client.get("/healthz").status_code == 200
    app_module.log.removeHandler(handler)
    assert time.monotonic() - started < 10  # not the 30 s the task takes to stop
    assert any("shutdown: stopping" in m and "stubborn did not finish" in m for m in seen), seen
