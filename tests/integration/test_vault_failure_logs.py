"""Every Vault failure said as what it is (issue 13, item 3), on real OpenBao.

Before: every failure was the same ``signing self-test failed (backend_unavailable)``, once a
second. Now each failed call logs Vault's address and the cause: unreachable, the broker's
token refused (403), sealed (503); TLS is in test_tls_backends. Twenty identical failures
in a row are a few lines, not twenty.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import pytest

from broker.backends.transit import TransitSigningBackend
from broker.errors import BackendUnavailable
from tests.servers.processes import BaoServer, free_port
from tests.servers.vault_setup import setup_transit

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]


def vault_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "broker.vault" and r.levelno >= logging.ERROR]


async def fail_n(backend: TransitSigningBackend, n: int) -> None:
    try:
        for _ in range(n):
            with pytest.raises(BackendUnavailable):
                await backend.keyset()
    finally:
        await backend.aclose()


def test_unreachable_bad_token_and_sealed_are_told_apart(own_bao: BaoServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="broker.vault")
    token = setup_transit(own_bao, key="logs")
    nowhere = f"http://127.0.0.1:{free_port()}"
    asyncio.run(fail_n(TransitSigningBackend(addr=nowhere, token=token, key="logs", refresh=0), 20))
    unreachable = vault_lines(caplog)
    caplog.clear()
    bad = "s." + secrets.token_urlsafe(18)
    asyncio.run(fail_n(TransitSigningBackend(addr=own_bao.addr, token=bad, key="logs", refresh=0), 20))
    refused = vault_lines(caplog)
    caplog.clear()
    own_bao.seal()
    asyncio.run(fail_n(TransitSigningBackend(addr=own_bao.addr, token=token, key="logs", refresh=0), 20))
    sealed = vault_lines(caplog)

    assert unreachable[0] == f"vault at {nowhere}: unreachable (connection refused, reset or name not resolved)"
    assert refused[0].startswith(f"vault at {own_bao.addr}: 403 permission denied")
    assert sealed[0] == f"vault at {own_bao.addr}: 503: Vault is sealed or has no active node"
    for lines in (unreachable, refused, sealed):
        assert 1 <= len(lines) <= 3, lines  # twenty failures in well under a second: one line, maybe a repeat
    assert bad not in "".join(caplog.text)
