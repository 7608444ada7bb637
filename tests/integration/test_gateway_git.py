"""The gateway with the real git client and a real git server (git http-backend) that
requires the upstream credential: clone, fetch and push go through; the agent only ever
holds its capability token; every refusal is decided before a byte reaches the upstream.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def receive_packs(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in requests if "receive-pack" in str(r["path"]) + str(r["query"])]


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


def test_wrong_repository_is_refused_and_nothing_reaches_the_upstream(stack: GatewayStack, tmp_path: Path) -> None:
    token = stack.token("git-wrong-repo", ["gw-repo-read"])
    before = len(stack.git_requests())
    clone = stack.git("clone", stack.repo_url("acme", "other"), str(tmp_path / "o"), token=token)
    assert clone.returncode != 0
    token = stack.token(stack.fresh_task("git-wrong-repo"), ["gw-repo-read"])  # the first one is contained
    status, _, body = stack.request(
        "GET", "/git/github.com/acme/other.git/info/refs?service=git-upload-pack", token=token
    )
    assert (status, stack.refused(403, body)) == (403, "capability_denied")
    assert stack.git_requests()[before:] == []


def test_push_with_a_read_token_is_refused_before_any_pack_byte(stack: GatewayStack, tmp_path: Path) -> None:
    token = stack.token("git-read-push", ["gw-repo-read"])
    work = tmp_path / "w"
    assert stack.git("clone", stack.repo_url(), str(work), token=token).returncode == 0
    (work / "x.txt").write_text("x\n")
    stack.git("add", "x.txt", cwd=work, check=True)
    stack.git("commit", "-q", "-m", "x", cwd=work, check=True)
    before = len(stack.git_requests())
    push = stack.git("push", "origin", "HEAD:refs/heads/agents/git-read-push/x", token=token, cwd=work)
    assert push.returncode != 0
    assert "403" in push.stderr
    token = stack.token(stack.fresh_task("git-read-push"), ["gw-repo-read"])  # the first one is contained
    status, _, body = stack.request(
        "POST",
        "/git/github.com/acme/widgets.git/git-receive-pack",
        token=token,
        body=b"0000",
        headers={"Content-Type": "application/x-git-receive-pack-request"},
    )
    assert (status, stack.refused(403, body)) == (403, "capability_denied")
    assert receive_packs(stack.git_requests()[before:]) == []  # not even the ref advertisement


def _commit_and_push(stack: GatewayStack, work: Path, token: str, refspec: str) -> tuple[int, str]:
    (work / "y.txt").write_text(refspec + "\n")
    stack.git("add", "y.txt", cwd=work, check=True)
    stack.git("commit", "-q", "-m", "y", cwd=work, check=True)
    before = len(stack.git_requests())
    push = stack.git("push", "origin", refspec, token=token, cwd=work)
    posts = [
        r for r in stack.git_requests()[before:] if r["method"] == "POST" and r["path"].endswith("git-receive-pack")
    ]
    return push.returncode, json.dumps(posts) if posts else ""


def test_push_outside_the_task_prefix_is_refused_before_forwarding(stack: GatewayStack, tmp_path: Path) -> None:
    token = stack.token("git-prefix", ["gw-repo-write"])
    work = tmp_path / "w"
    assert stack.git("clone", stack.repo_url(), str(work), token=token).returncode == 0
    for refspec in ("HEAD:refs/heads/main", "HEAD:refs/heads/agents/another-task/x", ":refs/heads/main"):
        code, forwarded = _commit_and_push(stack, work, token, refspec)
        assert code != 0, refspec
        assert forwarded == "", f"{refspec}: a receive-pack body reached the upstream: {forwarded}"
    refused = [a for a in stack.audit_lines() if a["task"] == "git-prefix" and a["status"] == 403]
    assert refused
    assert all(a["code"] == "capability_denied" for a in refused)


def test_dumb_http_other_services_and_methods_are_refused(stack: GatewayStack) -> None:
    before = len(stack.git_requests())
    for method, path in (
        ("GET", "/git/github.com/acme/widgets.git/HEAD"),
        ("GET", "/git/github.com/acme/widgets.git/objects/info/packs"),
        ("GET", "/git/github.com/acme/widgets.git/info/refs"),
        ("GET", "/git/github.com/acme/widgets.git/info/refs?service=git-upload-archive"),
        ("PUT", "/git/github.com/acme/widgets.git/git-upload-pack"),
        ("GET", "/git/github.com/acme/widgets.git/git-upload-pack"),
        ("DELETE", "/git/github.com/acme/widgets.git/git-receive-pack"),
    ):
        token = stack.token(stack.fresh_task("git-dumb"), ["gw-repo-write"])  # each refusal contains its task
        status, _, body = stack.request(method, path, token=token)
        assert (status, stack.refused(403, body)) == (403, "capability_denied"), (method, path)
    assert stack.git_requests()[before:] == []
