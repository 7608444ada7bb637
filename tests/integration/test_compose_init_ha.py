"""infra/compose-ha.yaml's one-shot init on a real 3-node OpenBao Raft cluster: the nodes
run infra/vault/openbao-ha-N.hcl (addresses moved to loopback ports, data to tmp_path),
and infra/vault/compose-init.sh initialises node 1, unseals the other two (which join by
``retry_join``) and hands the broker a working token."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from tests.servers.processes import bao_binary, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.ha,
    pytest.mark.enable_socket,
    pytest.mark.allow_hosts(["127.0.0.1"]),
]

INFRA = Path(__file__).resolve().parents[2] / "infra"


def health(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/sys/health", timeout=1) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[int]]:
    """The three nodes' API ports, each node running its own openbao-ha-N.hcl."""
    api = {n: free_port() for n in (1, 2, 3)}
    cluster = {n: free_port() for n in (1, 2, 3)}
    procs = []
    try:
        for n in (1, 2, 3):
            hcl = (INFRA / "vault" / f"openbao-ha-{n}.hcl").read_text()
            data = tmp_path / f"node{n}"
            data.mkdir()
            hcl = hcl.replace("/openbao/data", str(data))
            hcl = hcl.replace("0.0.0.0:8200", f"127.0.0.1:{api[n]}").replace("0.0.0.0:8201", f"127.0.0.1:{cluster[n]}")
            for m in (1, 2, 3):
                hcl = hcl.replace(f"openbao-{m}:8200", f"127.0.0.1:{api[m]}")
                hcl = hcl.replace(f"openbao-{m}:8201", f"127.0.0.1:{cluster[m]}")
            config = tmp_path / f"openbao-ha-{n}.hcl"
            config.write_text(hcl)
            with (tmp_path / f"bao{n}.log").open("ab") as log:
                procs.append(
                    subprocess.Popen(
                        [bao_binary(), "server", f"-config={config}"],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env={"HOME": str(tmp_path)},
                    )
                )
        deadline = time.monotonic() + 30
        while any(health(api[n]) is None for n in api):
            assert time.monotonic() < deadline, "the OpenBao nodes did not listen"
            time.sleep(0.1)
        yield [api[n] for n in (1, 2, 3)]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(15)


def test_compose_init_unseals_every_raft_node_and_hands_over_a_token(tmp_path: Path, nodes: list[int]) -> None:
    first, *others = nodes
    (tmp_path / "bao-init").mkdir()
    (tmp_path / "secrets").mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "BAO": bao_binary(),
        "BAO_ADDR": f"http://127.0.0.1:{first}",
        "BAO_UNSEAL_ADDRS": " ".join(f"http://127.0.0.1:{port}" for port in others),
        "STATE_DIR": str(tmp_path / "bao-init"),
        "SECRETS_DIR": str(tmp_path / "secrets"),
        "SETUP_DIR": str(INFRA / "vault"),
    }
    done = subprocess.run(
        ["sh", str(INFRA / "vault" / "compose-init.sh")], env=env, capture_output=True, text=True, timeout=180,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    statuses = {port: health(port) for port in nodes}
    assert sorted(statuses.values()) == [200, 429, 429], statuses  # one active, two standing by, none sealed
    token = (tmp_path / "secrets" / "vault-token").read_text().strip()
    client = hvac.Client(url=f"http://127.0.0.1:{first}", token=token, timeout=10)
    try:
        assert client.auth.token.lookup_self()["data"]["policies"] == ["capbroker"]
    finally:
        client.adapter.close()
    root = (tmp_path / "bao-init" / "init.txt").read_text().split("Initial Root Token: ")[1].split()[0]
    request = urllib.request.Request(
        f"http://127.0.0.1:{first}/v1/sys/storage/raft/configuration", headers={"X-Vault-Token": root}
    )
    with urllib.request.urlopen(request, timeout=5) as r:
        servers = json.loads(r.read())["data"]["config"]["servers"]
    assert len(servers) == 3  # all joined (autopilot makes them voters once stable)
