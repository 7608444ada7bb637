"""The gateway with the real git client and a real git server (git http-backend) that
requires the upstream credential: clone, fetch and push go through; the agent only ever
holds its capability token; every refusal is decided before a byte reaches the upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.gateway_stack import GatewayStack, start_stack
from tests.servers.processes import BaoServer, RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]


@pytest.fixture(scope="module")
def stack(bao_server: BaoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    root = tmp_path_factory.mktemp("gateway-git")
    redis = RedisServer(root / "redis").start()
    try:
        built = start_stack(root / "stack", bao_server, redis)
        try:
            yield built
        finally:
            built.stop()
    finally:
        redis.stop()


def receive_packs(stack: GatewayStack) -> list[dict[str, object]]:
    return [r for r in stack.git_requests() if "receive-pack" in str(r["path"]) + str(r["query"])]


def test_clone_fetch_and_push_to_the_task_branch_through_the_gateway(stack: GatewayStack, tmp_path: Path) -> None:
    token = stack.token("git-ok", ["gw-repo-write"])
    work = tmp_path / "widgets"
    clone = stack.git("clone", stack.repo_url(), str(work), token=token)
    assert clone.returncode == 0, clone.stderr
    assert (work / "README.md").read_text() == "acme/widgets\n"
    fetch = stack.git("fetch", "origin", token=token, cwd=work)
    assert fetch.returncode == 0, fetch.stderr
    (work / "change.txt").write_text("from the agent\n")
    stack.git("add", "change.txt", cwd=work, check=True)
    stack.git("commit", "-q", "-m", "agent change", cwd=work, check=True)
    push = stack.git("push", "origin", "HEAD:refs/heads/agents/git-ok/change", token=token, cwd=work)
    assert push.returncode == 0, push.stderr
    upstream = [r for r in stack.git_requests() if r["path"] != "/x"]  # not the start-up probe
    assert any(r["path"].endswith("/git-receive-pack") and r["authorised"] for r in upstream)
    assert all(r["authorised"] for r in upstream)  # every request that reached it carried the credential


def test_a_direct_clone_with_the_capability_token_fails_at_the_upstream(stack: GatewayStack, tmp_path: Path) -> None:
    token = stack.token("git-direct", ["gw-repo-read"])
    direct = f"http://127.0.0.1:{stack.git_port}/acme/widgets.git"
    clone = stack.git("clone", direct, str(tmp_path / "w"), token=token)
    assert clone.returncode != 0
    assert stack.git_requests()[-1]["authorised"] is False
