"""``workers: 2`` (the shipped setting): one set of metrics, and one instance per port
(issue 13, item 4).

Before: each scrape reached one worker and showed its own counters (2, 4, 2, 4 ...); and a
second ``broker serve`` on the same port joined the first's ``SO_REUSEPORT`` group and
silently took half the connections. Now the workers' metrics are one set
(``prometheus_client`` multiprocess files in a directory the supervisor owns) and a second
instance refuses to start, naming the port.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.processes import BaoServer, RedisServer
from tests.servers.vault_setup import setup_transit

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

MINTS = 12


@pytest.fixture
def unit(tmp_path: Path, bao_server: BaoServer, redis_server: RedisServer) -> Iterator[BrokerProcess]:
    token = setup_transit(bao_server, key="metrics")
    proc = BrokerProcess(
        tmp_path / "broker", PolicyDir.create(tmp_path / "policy"), redis_server.url, bao_server.addr, token,
        transit_key="metrics", redis_prefix="day2-metrics:", extra_env={"BROKER_WORKERS": "2"},
    )  # fmt: skip
    proc.start()
    proc.wait_until(lambda: proc.log_path.read_text().count("signing self-test passed") >= 2, "both workers ready")
    try:
        yield proc
    finally:
        proc.stop()


def minted_total(text: str) -> int:
    match = re.search(r"^capbroker_tokens_minted_total(?:\{\})? ([0-9.e+]+)$", text, re.MULTILINE)
    assert match is not None, text[:2000]
    return int(float(match.group(1)))


def test_every_scrape_counts_every_worker(unit: BrokerProcess) -> None:
    for n in range(MINTS):  # fresh connections: the kernel spreads them over both workers
        status, _, body = unit.mint(f"metrics-{n}", ["widgets-read"])
        assert status == 201, body
    seen = set()
    for _ in range(12):
        status, _, text = unit.get("/metrics")
        assert status == 200
        seen.add(minted_total(text))
    assert seen == {MINTS}
    # backend latency and the signing key's end, from the workers that did the work
    assert sample(text, "capbroker_vault_request_duration_seconds_count") > 0
    assert sample(text, "capbroker_redis_round_duration_seconds_count") >= MINTS
    assert sample(text, "capbroker_session_key_signing_ends_timestamp_seconds") > time.time()


def sample(text: str, name: str) -> float:
    match = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not in:\n{text[:3000]}"
    return float(match.group(1))


def test_a_second_instance_on_the_same_port_refuses_to_start(
    unit: BrokerProcess, tmp_path: Path, bao_server: BaoServer, redis_server: RedisServer
) -> None:
    second = BrokerProcess(
        tmp_path / "second", unit.policy, redis_server.url, bao_server.addr, unit.vault_token,
        transit_key="metrics", redis_prefix="day2-metrics:", port=unit.port, extra_env={"BROKER_WORKERS": "2"},
    )  # fmt: skip
    # (its /healthz, on that port, is the first instance's: wait for its exit instead;
    # RuntimeError: it exited before its /healthz was reached)
    with contextlib.suppress(RuntimeError):
        second.start(wait_ready=False)
    try:
        assert second.proc is not None
        assert second.proc.wait(timeout=30) == 2
    finally:
        second.stop()
    log = second.log_path.read_text()
    assert f"127.0.0.1:{unit.port} is already in use" in log, log[-2000:]
    time.sleep(0.5)
    for n in range(6):  # and the first instance serves every request still
        status, _, body = unit.mint(f"still-{n}", ["widgets-read"])
        assert status == 201, body
