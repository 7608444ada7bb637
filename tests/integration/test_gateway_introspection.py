"""``revocation: introspection`` and ``file:`` credentials: the gateway beside a broker
with no Redis or Vault of its own (what the demo uses). Revocation reaches it through the
broker's /v1/introspect (answers kept at most one second); budgets count in memory.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.gateway_stack import GatewayStack, start_stack
from tests.servers.processes import BaoServer, RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]


@pytest.fixture(scope="module")
def stack(bao_server: BaoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    root = tmp_path_factory.mktemp("gateway-introspect")
    own_redis = RedisServer(root / "redis").start()
    try:
        built = start_stack(root / "stack", bao_server, own_redis)
        try:
            built.start_gateway(file_credentials=True, revocation="introspection", redis_url=None)
            built.wait_ready()
            yield built
        finally:
            built.stop()
    finally:
        own_redis.stop()


def test_file_credentials_and_introspection_serve_and_revoke(stack: GatewayStack) -> None:
    token = stack.token("intro-1", ["gw-api"])
    status, _, body = stack.request("GET", "/http/api.test/v1/items", token=token)
    assert status == 200, body
    assert dict(stack.api_requests()[-1]["headers"])["x-api-key"] == stack.api_key
    stack.revoke_task("intro-1")
    deadline = time.monotonic() + 10
    while True:
        status, _, body = stack.request("GET", "/http/api.test/v1/items", token=token)
        if status == 401:
            break
        assert time.monotonic() < deadline
    assert stack.refused(401, body) == "revoked"


def test_budgets_count_in_memory_without_redis(stack: GatewayStack) -> None:
    token = stack.token("intro-budget", ["gw-api-budget"])
    for _ in range(3):
        assert stack.request("GET", "/http/api.test/v1/items", token=token)[0] == 200
    status, _, body = stack.request("GET", "/http/api.test/v1/items", token=token)
    assert (status, stack.refused(429, body)) == (429, "budget_exhausted")


def test_git_through_file_credentials(stack: GatewayStack, tmp_path: Path) -> None:
    token = stack.token("intro-git", ["gw-repo-read"])
    clone = stack.git("clone", stack.repo_url(), str(tmp_path / "w"), token=token)
    assert clone.returncode == 0, clone.stderr
