"""The broker's own Vault token over its life (issue 13, item 1), on real OpenBao + Redis.

``infra/vault/setup.sh`` makes a periodic token that lives only as long as it is renewed.
The broker renews it (``auth/token/renew-self``, allowed by the shipped policy) half way
through what is left, re-reads ``vault_token_file`` when an operator or an agent injector
replaces it, and says in its log, with Vault's address and status, when it cannot.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.processes import BaoServer, RedisServer
from tests.servers.vault_setup import admin_client, setup_approle, setup_transit

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

PERIOD = 4  # seconds: the token dies 4 s after its last renewal


@pytest.fixture
def started(tmp_path: Path, bao_server: BaoServer, redis_server: RedisServer) -> Iterator[BrokerProcess]:
    token = setup_transit(bao_server, key="lifecycle", period=f"{PERIOD}s")
    proc = BrokerProcess(
        tmp_path / "broker", PolicyDir.create(tmp_path / "policy"), redis_server.url, bao_server.addr, token,
        transit_key="lifecycle", redis_prefix="day2-lifecycle:",
    )  # fmt: skip
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def mint_ok(proc: BrokerProcess, task: str) -> bool:
    status, _, body = proc.mint(task, ["widgets-read"])
    assert status in (201, 503), body
    return status == 201


def wait_for(predicate: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.2)


def test_a_periodic_token_keeps_minting_for_several_periods(started: BrokerProcess) -> None:
    """Issue 13 reproduction: with ``-period=20s`` the broker answered 503 from 46 s on."""
    deadline = time.monotonic() + 4 * PERIOD
    minted = 0
    while time.monotonic() < deadline:
        assert mint_ok(started, f"period-{minted}"), started.log_path.read_text()[-2000:]
        minted += 1
        time.sleep(0.25)
    assert minted > 10
    assert "renewed" in started.log_path.read_text()


def test_a_replaced_token_file_is_read_again(started: BrokerProcess, bao_server: BaoServer) -> None:
    """An operator (or Vault Agent) writes a new token to the file and revokes the old one:
    the broker picks the new one up and keeps minting."""
    old = (started.workdir / "vault-token").read_text()
    new = setup_transit(bao_server, key="lifecycle", period="1h")
    tmp = started.workdir / "vault-token.new"
    tmp.write_text(new + "\n")
    tmp.replace(started.workdir / "vault-token")  # the atomic rename agent injectors do
    wait_for(lambda: "re-read" in started.log_path.read_text(), "the broker re-reading its token file")
    admin = admin_client(bao_server)
    try:
        admin.auth.token.revoke(old)
    finally:
        admin.adapter.close()
    time.sleep(2.0)  # past the signer's Vault silence allowance: only the new token answers now
    for n in range(8):
        assert mint_ok(started, f"rotated-{n}"), started.log_path.read_text()[-2000:]
        time.sleep(0.25)


def test_a_token_that_cannot_be_renewed_is_named_in_the_log(
    tmp_path: Path, bao_server: BaoServer, redis_server: RedisServer
) -> None:
    """A token that is not renewable: the broker says so at start, with when it expires,
    and once it has expired, the log names Vault's address and the 403."""
    token = setup_transit(bao_server, key="lifecycle", period=None, renewable=False)
    client = hvac.Client(url=bao_server.addr, token=bao_server.root_token, timeout=10)
    try:  # a short-lived one: a child of nothing, 3 s, the same policy
        token = client.auth.token.create(
            policies=["capbroker-lifecycle"], no_default_policy=True, renewable=False, ttl="3s", no_parent=True
        )["auth"]["client_token"]
    finally:
        client.adapter.close()
    proc = BrokerProcess(
        tmp_path / "broker", PolicyDir.create(tmp_path / "policy"), redis_server.url, bao_server.addr, token,
        transit_key="lifecycle", redis_prefix="day2-lifecycle:",
    )  # fmt: skip
    proc.start()
    try:
        wait_for(lambda: "not renewable" in proc.log_path.read_text(), "the warning at start")
        wait_for(lambda: not mint_ok(proc, "expired"), "503 once the token is gone")
        wait_for(lambda: f"{bao_server.addr}" in proc.log_path.read_text(), "the address in the log")
        log = proc.log_path.read_text()
        assert "403" in log, log[-2000:]
    finally:
        proc.stop()


def test_the_broker_logs_in_with_approle_and_again_past_the_tokens_max_ttl(
    tmp_path: Path, bao_server: BaoServer, redis_server: RedisServer
) -> None:
    """``vault_auth: approle``: no token handed over; the broker logs in, renews, and logs
    in again when the token's max TTL (6 s) is near, minting all along."""
    setup_transit(bao_server, key="lifecycle")  # the key and its policy, capbroker-lifecycle
    role_id, secret_id = setup_approle(
        bao_server, role="capbroker-broker", token_policies=["capbroker-lifecycle"], token_ttl="6s"
    )
    secret_file = tmp_path / "secret-id"
    secret_file.write_text(secret_id)
    proc = BrokerProcess(
        tmp_path / "broker", PolicyDir.create(tmp_path / "policy"), redis_server.url, bao_server.addr, "",
        transit_key="lifecycle", redis_prefix="day2-lifecycle:",
        extra_env={
            "BROKER_VAULT_AUTH": "approle", "BROKER_VAULT_ROLE_ID": role_id,
            "BROKER_VAULT_SECRET_ID_FILE": str(secret_file),
        },
    )  # fmt: skip
    proc.start()
    try:
        deadline = time.monotonic() + 15
        minted = 0
        while time.monotonic() < deadline:
            assert mint_ok(proc, f"approle-{minted}"), proc.log_path.read_text()[-2000:]
            minted += 1
            time.sleep(0.25)
        logins = proc.log_path.read_text().count("vault login at")
        assert logins >= 3, proc.log_path.read_text()[-2000:]  # the first, and again past two max TTLs
        assert secret_id not in proc.log_path.read_text()
    finally:
        proc.stop()
