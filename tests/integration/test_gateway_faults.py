"""The gateway fails closed: Vault sealed or the revocation feed's Redis paused means a
fast 503 ``backend_unavailable`` and nothing forwarded; both recover on their own.

Its own OpenBao and Redis: this module seals and pauses them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.servers.gateway_stack import GatewayStack, start_stack
from tests.servers.processes import BaoServer, RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    root = tmp_path_factory.mktemp("gateway-faults")
    bao = BaoServer(root / "bao").start()
    own_redis = RedisServer(root / "redis").start()
    try:
        built = start_stack(root / "stack", bao, own_redis)
        try:
            yield built
        finally:
            built.stop()
    finally:
        own_redis.stop()
        bao.stop()


def _until(stack: GatewayStack, token: str, status: int, path: str = "/http/api.test/v1/items") -> bytes:
    deadline = time.monotonic() + 15
    while True:
        got, _, body = stack.request("GET", path, token=token)
        if got == status:
            return body
        assert time.monotonic() < deadline, f"never {status}, still {got}"
        time.sleep(0.1)


def test_vault_down_is_503_and_nothing_is_forwarded(stack: GatewayStack) -> None:
    token = stack.token("faults-vault", ["gw-api"])  # minted while Transit is up
    budgeted = stack.token("faults-vault-budget", ["gw-api-budget"])  # 3 requests
    git_token = stack.token("faults-vault-git", ["gw-repo-read"])
    assert stack.request("GET", "/http/api.test/v1/items", token=token)[0] == 200
    stack.bao.seal()
    try:
        body = _until(stack, token, 503)
        assert stack.refused(503, body) == "backend_unavailable"
        stack.wait_ready(ready=False)
        before_api, before_git = len(stack.api_requests()), len(stack.git_requests())
        status, headers, body = stack.request("GET", "/http/api.test/v1/items", token=token)
        assert (status, stack.refused(503, body)) == (503, "backend_unavailable")
        assert headers["retry-after"] == "1"
        status, _, body = stack.request(
            "GET", "/git/github.com/acme/widgets.git/info/refs?service=git-upload-pack", token=git_token
        )
        assert (status, stack.refused(503, body)) == (503, "backend_unavailable")
        for _ in range(5):
            status, _, body = stack.request("GET", "/http/api.test/v1/items", token=budgeted)
            assert (status, stack.refused(503, body)) == (503, "backend_unavailable")
        assert stack.api_requests()[before_api:] == []
        assert stack.git_requests()[before_git:] == []
    finally:
        stack.bao.unseal()
    _until(stack, token, 200)
    stack.wait_ready()
    for _ in range(3):  # the whole budget: no 503 spent any of it
        assert stack.request("GET", "/http/api.test/v1/items", token=budgeted)[0] == 200
    status, _, body = stack.request("GET", "/http/api.test/v1/items", token=budgeted)
    assert (status, stack.refused(429, body)) == (429, "budget_exhausted")


def test_revocation_feed_down_is_503_and_nothing_is_forwarded(stack: GatewayStack) -> None:
    token = stack.token("faults-redis", ["gw-api"])
    assert stack.request("GET", "/http/api.test/v1/items", token=token)[0] == 200
    stack.redis.pause()
    try:
        body = _until(stack, token, 503)
        assert stack.refused(503, body) == "backend_unavailable"
        before = len(stack.api_requests())
        status, _, body = stack.request("GET", "/http/api.test/v1/items", token=token)
        assert (status, stack.refused(503, body)) == (503, "backend_unavailable")
        assert stack.api_requests()[before:] == []
        status, _, _ = stack.request("GET", "/readyz")
        assert status == 503
    finally:
        stack.redis.resume()
    _until(stack, token, 200)
