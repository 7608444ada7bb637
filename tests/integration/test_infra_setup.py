"""infra/ scripts run against a real OpenBao (issue 13, item 5).

``infra/vault/setup.sh`` printed all of its commands' output on stdout, and compose wrote
those 23 lines into the broker's token file: the broker never passed its self-test. Now
stdout is the token alone; it holds only the capbroker policy, is periodic, and may look
itself up and renew itself (the broker does both).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import hvac
import pytest

from tests.servers.processes import BaoServer, bao_binary, free_port

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

INFRA = Path(__file__).resolve().parents[2] / "infra"


def test_setup_prints_only_the_brokers_token(own_bao: BaoServer) -> None:
    env = {**own_bao.env(), "VAULT": bao_binary(), "PERIOD": "1h", "PATH": os.environ.get("PATH", "")}
    done = subprocess.run(
        ["sh", str(INFRA / "vault" / "setup.sh")], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    token = lines[0]
    client = hvac.Client(url=own_bao.addr, token=token, timeout=10)
    try:
        me = client.auth.token.lookup_self()["data"]
        assert me["policies"] == ["capbroker"]
        assert me["period"] == 3600
        assert client.auth.token.renew_self()["auth"]["lease_duration"] == 3600
    finally:
        client.adapter.close()


def _raft_server(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    """``bao server`` with infra/vault/openbao.hcl, its paths and addresses moved to tmp_path
    and loopback (the file itself is what compose runs)."""
    data = tmp_path / "raft"
    data.mkdir(exist_ok=True)
    hcl = (INFRA / "vault" / "openbao.hcl").read_text()
    hcl = hcl.replace("/openbao/data", str(data)).replace("0.0.0.0:8200", f"127.0.0.1:{port}")
    hcl = hcl.replace("http://openbao:8200", f"http://127.0.0.1:{port}").replace(
        "http://openbao:8201", f"http://127.0.0.1:{free_port()}"
    )
    config = tmp_path / "openbao.hcl"
    config.write_text(hcl)
    with (tmp_path / "bao.log").open("ab") as log:
        return subprocess.Popen(
            [bao_binary(), "server", f"-config={config}"], stdout=log, stderr=subprocess.STDOUT,
            env={"HOME": str(tmp_path)},
        )  # fmt: skip


def _compose_init(tmp_path: Path, port: int) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "BAO": bao_binary(),
        "BAO_ADDR": f"http://127.0.0.1:{port}",
        "STATE_DIR": str(tmp_path / "bao-init"),
        "SECRETS_DIR": str(tmp_path / "secrets"),
        "SETUP_DIR": str(INFRA / "vault"),
    }
    return subprocess.run(
        ["sh", str(INFRA / "vault" / "compose-init.sh")], env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(15)


def test_compose_init_initialises_unseals_and_hands_over_the_token_across_restarts(tmp_path: Path) -> None:
    """compose's one-shot: a fresh Raft OpenBao is initialised, unsealed and set up, and the
    token file holds one working token; after a restart (sealed again) it is unsealed and
    the still-valid token kept."""
    (tmp_path / "bao-init").mkdir()
    (tmp_path / "secrets").mkdir()
    port = free_port()
    server = _raft_server(tmp_path, port)
    try:
        done = _compose_init(tmp_path, port)
        assert done.returncode == 0, done.stderr + (tmp_path / "bao.log").read_text()[-2000:]
        token_file = tmp_path / "secrets" / "vault-token"
        token = token_file.read_text()
        assert len(token.splitlines()) == 1
        client = hvac.Client(url=f"http://127.0.0.1:{port}", token=token.strip(), timeout=10)
        try:
            assert client.auth.token.lookup_self()["data"]["policies"] == ["capbroker"]
        finally:
            client.adapter.close()
    finally:
        _stop(server)
    server = _raft_server(tmp_path, port)  # restarted: sealed
    try:
        done = _compose_init(tmp_path, port)
        assert done.returncode == 0, done.stderr
        assert "still valid; kept" in done.stderr
        assert token_file.read_text() == token
    finally:
        _stop(server)
