"""The broker on OpenBao and Redis over TLS with a private CA (issue 13, item 2).

Both servers present a certificate from a CA made in the test. With ``vault_ca_file`` and
``redis_ca_file`` naming it, ``broker serve`` (over ``https://`` and ``rediss://``) starts,
passes its self-test and mints; without the Vault CA it never signs, and its log says it
is a TLS failure (the certificate not verified) at that address.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.processes import BaoServer, RedisServer, free_port
from tests.servers.tls import TlsFiles, bao_tls_listener, make_tls, redis_tls_args
from tests.servers.vault_setup import setup_transit

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]


@dataclass
class TlsRig:
    files: TlsFiles
    bao: BaoServer
    vault_tls_addr: str
    redis: RedisServer
    redis_tls_url: str
    token: str


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[TlsRig]:
    files = make_tls(tmp_path / "tls")
    vault_port, redis_port = free_port(), free_port()
    config = tmp_path / "bao-tls.hcl"
    config.write_text(bao_tls_listener(files, vault_port, free_port()))
    bao = BaoServer(tmp_path / "bao", config=config).start()
    redis = RedisServer(tmp_path / "redis", args=redis_tls_args(files, redis_port)).start()
    try:
        token = setup_transit(bao, key="tls")  # set up over the plain dev listener, as root
        yield TlsRig(files, bao, f"https://127.0.0.1:{vault_port}", redis, f"rediss://127.0.0.1:{redis_port}/0", token)
    finally:
        redis.stop()
        bao.stop()


def broker(rig: TlsRig, tmp_path: Path, env: dict[str, str]) -> BrokerProcess:
    return BrokerProcess(
        tmp_path / "broker", PolicyDir.create(tmp_path / "policy"), rig.redis_tls_url, rig.vault_tls_addr, rig.token,
        transit_key="tls", redis_prefix="day2-tls:", extra_env=env,
    )  # fmt: skip


def test_mints_over_tls_to_vault_and_redis_trusting_a_private_ca(rig: TlsRig, tmp_path: Path) -> None:
    proc = broker(rig, tmp_path, {"BROKER_VAULT_CA_FILE": str(rig.files.ca), "BROKER_REDIS_CA_FILE": str(rig.files.ca)})
    proc.start()
    try:
        status, _, body = proc.mint("over-tls", ["widgets-read"])
        assert status == 201, body
        status, _, body = proc.post("/v1/tasks/over-tls/revoke", who="reviewer")
        assert status == 200, body
    finally:
        proc.stop()


def test_without_the_vault_ca_the_log_says_tls_and_where(rig: TlsRig, tmp_path: Path) -> None:
    proc = broker(rig, tmp_path, {"BROKER_REDIS_CA_FILE": str(rig.files.ca)})
    proc.start(wait_ready=False)
    try:
        proc.wait_until(lambda: "TLS failure" in proc.log_path.read_text(), "the TLS failure in the log")
        log = proc.log_path.read_text()
        assert "certificate verify failed" in log
        assert rig.vault_tls_addr in log
        status, _, body = proc.mint("no-ca", ["widgets-read"])
        assert status == 503, body
    finally:
        proc.stop()


def test_a_vault_listener_that_requires_a_client_certificate(tmp_path: Path, redis_server: RedisServer) -> None:
    """``vault_client_cert`` / ``vault_client_key``: mints against a listener that refuses
    clients without a certificate from its CA; without them, nothing is signed."""
    files = make_tls(tmp_path / "tls")
    port = free_port()
    config = tmp_path / "bao-mtls.hcl"
    config.write_text(bao_tls_listener(files, port, free_port(), client_certs=True))
    bao = BaoServer(tmp_path / "bao", config=config).start()
    try:
        token = setup_transit(bao, key="mtls")
        env = {"BROKER_VAULT_CA_FILE": str(files.ca)}
        with_cert = env | {
            "BROKER_VAULT_CLIENT_CERT": str(files.client_cert),
            "BROKER_VAULT_CLIENT_KEY": str(files.client_key),
        }
        proc = BrokerProcess(
            tmp_path / "broker", PolicyDir.create(tmp_path / "policy"), redis_server.url, f"https://127.0.0.1:{port}",
            token, transit_key="mtls", redis_prefix="day2-tls:", extra_env=with_cert,
        )  # fmt: skip
        proc.start()
        try:
            status, _, body = proc.mint("mtls", ["widgets-read"])
            assert status == 201, body
        finally:
            proc.stop()
        bare = BrokerProcess(
            tmp_path / "bare", PolicyDir.create(tmp_path / "policy2"), redis_server.url, f"https://127.0.0.1:{port}",
            token, transit_key="mtls", redis_prefix="day2-tls:", extra_env=env,
        )  # fmt: skip
        bare.start(wait_ready=False)
        try:
            bare.wait_until(lambda: "vault at https://" in bare.log_path.read_text(), "the Vault failure in the log")
            status, _, body = bare.mint("no-cert", ["widgets-read"])
            assert status == 503, body
        finally:
            bare.stop()
    finally:
        bao.stop()
