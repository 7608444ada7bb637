"""``workers: 2``: one ``broker serve`` parent, two worker processes on one port.

A reload through the API lands in one worker and reaches the other through Redis; SIGHUP
to the parent reaches both; an invalid policy is refused in both with the old one kept; a
worker that dies takes the unit down (non-zero exit) rather than leaving it short-handed.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.processes import BaoServer, RedisServer
from tests.servers.vault_setup import setup_transit

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

EXTRA = """\
scopes:
  workers-extra:
    kind: git
    resource: github.com/acme/workers-extra
    actions: [read]
    audience: git-gateway
    max_ttl: 5m
"""


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


@pytest.fixture
def unit(tmp_path: Path, bao_server: BaoServer, own_redis: RedisServer) -> Iterator[BrokerProcess]:
    token = setup_transit(bao_server, key="workers")
    policy = PolicyDir.create(tmp_path / "policy")
    proc = BrokerProcess(
        tmp_path / "broker", policy, own_redis.url, bao_server.addr, token, transit_key="workers",
        extra_env={"BROKER_WORKERS": "2"},
    )  # fmt: skip
    proc.start()
    assert proc.proc is not None
    parent = proc.proc.pid
    wait_for(lambda: len(children(parent)) == 2, "two worker processes")
    # both workers started (each logs its self-test), so both have their SIGHUP handler
    wait_for(lambda: proc.log_path.read_text().count("signing self-test passed") >= 2, "every worker ready")
    try:
        yield proc
    finally:
        proc.stop()


def digests(proc: BrokerProcess, n: int = 24) -> set[str]:
    """The policy digest as seen by ``n`` fresh connections (spread over the workers)."""
    seen = set()
    for _ in range(n):
        status, _, body = proc.get("/v1/scopes", who="admin")
        assert status == 200, body
        seen.add(body["digest"])
    return seen


def wait_for(predicate: object, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.1)


def test_two_workers_serve_and_an_api_reload_reaches_both(unit: BrokerProcess) -> None:
    assert unit.proc is not None
    wait_for(lambda: len(children(unit.proc.pid)) == 2, "two worker processes")  # type: ignore[union-attr]
    (before,) = digests(unit)
    (unit.policy.path / "zz-extra.yaml").write_text(EXTRA)
    status, _, body = unit.post("/v1/admin/reload", who="admin")
    assert status == 200, body
    after = body["digest"]
    assert after != before
    wait_for(lambda: digests(unit) == {after}, "the new policy in every worker")


def test_sighup_to_the_parent_reloads_every_worker_and_a_bad_file_is_refused_in_each(unit: BrokerProcess) -> None:
    assert unit.proc is not None
    (before,) = digests(unit)
    (unit.policy.path / "zz-broken.yaml").write_text("scopes:\n  x:\n    kind: nope\n")
    unit.proc.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert digests(unit) == {before}  # refused everywhere, the policy in force kept
    (unit.policy.path / "zz-broken.yaml").unlink()
    (unit.policy.path / "zz-extra.yaml").write_text(EXTRA)
    unit.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(digests(unit)) == 1 and digests(unit) != {before}, "the new policy in every worker")


def test_a_dead_worker_takes_the_unit_down(unit: BrokerProcess) -> None:
    assert unit.proc is not None
    wait_for(lambda: len(children(unit.proc.pid)) == 2, "two worker processes")  # type: ignore[union-attr]
    os.kill(children(unit.proc.pid)[0], signal.SIGKILL)
    assert unit.proc.wait(timeout=15) != 0
    assert children(unit.proc.pid) == []
