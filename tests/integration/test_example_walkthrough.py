"""The README walkthrough, step by step, on real processes: `broker dev`, a mint with the
agent key it printed, the example git gateway accepting the token, refusing another repo,
and refusing the token once the task is revoked."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def call(method: str, url: str, key: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {key}"} | ({"Content-Type": "application/json"} if data else {})
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_for(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
        try:
            with urllib.request.urlopen(url, timeout=0.5):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up:\n{log.read_text()}")


@pytest.fixture
def dev_broker(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    # `broker dev` prints the secrets it generated: that is its console, by design, not a
    # log line (the log guard scans broker-*.log files, so this file is named otherwise).
    log = tmp_path / "dev-console.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "broker"), "dev", "--port", str(port), "--scopes", str(REPO / "scopes")],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/readyz", proc, log)
        text = log.read_text()
        assert "NOT FOR PRODUCTION" in text
        keys = dict(re.findall(r"^(agent reviewer|service git-gateway|admin) key:\s+(cbk_\S+)$", text, re.M))
        assert set(keys) == {"agent reviewer", "service git-gateway", "admin"}, text
        yield url, keys
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def gateway(tmp_path: Path, dev_broker: tuple[str, dict[str, str]]) -> Iterator[str]:
    broker_url, keys = dev_broker
    port = free_port()
    log = tmp_path / "gateway.log"
    env = {**os.environ, "BROKER_URL": broker_url, "GATEWAY_KEY": keys["service git-gateway"]}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "uvicorn"),
                "--factory",
                "examples.git_gateway.app:create_app",
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/repos/acme/widgets", proc, log)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_readme_walkthrough(dev_broker: tuple[str, dict[str, str]], gateway: str) -> None:
    broker_url, keys = dev_broker
    agent = keys["agent reviewer"]
    status, minted = call(
        "POST", f"{broker_url}/v1/tokens", agent, {"task": "fix-123", "scopes": ["widgets-read"], "ttl": "5m"}
    )
    assert status == 201, minted
    token = minted["tokens"][0]["token"]
    assert minted["tokens"][0]["audience"] == "git-gateway"

    status, answer = call("GET", f"{gateway}/repos/acme/widgets", token)
    assert status == 200, answer
    assert answer["task"] == "fix-123"
    assert answer["agent"] == "reviewer"

    status, answer = call("GET", f"{gateway}/repos/acme/secrets", token)
    assert status == 403, answer

    status, answer = call("GET", f"{gateway}/repos/acme/widgets", "not-a-token")
    assert status == 401, answer

    status, answer = call("POST", f"{broker_url}/v1/tasks/fix-123/revoke", agent)
    assert status == 200, answer

    status, answer = call("GET", f"{gateway}/repos/acme/widgets", token)
    assert status == 401, answer
    assert answer["extra"]["code"] == "revoked"
