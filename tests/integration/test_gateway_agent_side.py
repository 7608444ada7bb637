"""The agent's side with the gateway: ``broker run`` mints, wires git to the gateway
(``url.<gw>/git/<host>/.insteadOf``, the token in an included header file), and an
unchanged ``git clone https://github.com/acme/widgets`` and a push to the task's branch go
through the gateway to the real git server; a push to ``main`` is refused and contains the
task. The agent holds only its broker key; the upstream secret stays in Vault.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.gateway_stack import AGENT, GatewayStack, own_stack
from tests.servers.processes import BaoServer

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]


@pytest.fixture(scope="module")
def stack(bao_server: BaoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    with own_stack(tmp_path_factory.mktemp("gateway-agent"), bao_server) as built:
        yield built


def broker_run(
    stack: GatewayStack, task: str, scope: str, *command: str, cwd: Path
) -> subprocess.CompletedProcess[str]:
    broker_bin = shutil.which("broker", path=str(Path(sys.executable).parent)) or "broker"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(stack.root / "home"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "CAPBROKER_KEY": stack.broker.policy.keys[AGENT],
    }
    (stack.root / "home").mkdir(exist_ok=True)
    return subprocess.run(
        [broker_bin, "run", "--broker", stack.broker.url, "--task", task, "--scope", scope,
         "--gateway", stack.gateway_url, "--", *command],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_broker_run_clones_and_pushes_through_the_gateway_unchanged(stack: GatewayStack, tmp_path: Path) -> None:
    task = "agent-run"
    clone = broker_run(
        stack, task, "gw-repo-write", "git", "clone", "https://github.com/acme/widgets", "w", cwd=tmp_path
    )
    assert clone.returncode == 0, clone.stderr
    work = tmp_path / "w"
    assert (work / "README.md").read_text() == "acme/widgets\n"
    (work / "agent.txt").write_text("done\n")
    commit = ["git", "-c", "user.name=a", "-c", "user.email=a@a", "commit", "-qam", "x"]
    subprocess.run(["git", "add", "agent.txt"], cwd=work, check=True)
    subprocess.run(commit, cwd=work, check=True, env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1"})
    push = broker_run(
        stack, task, "gw-repo-write", "git", "push", "origin", f"HEAD:refs/heads/agents/{task}/x", cwd=work
    )
    assert push.returncode == 0, push.stderr
    before = len(stack.git_requests())
    main = broker_run(stack, task, "gw-repo-write", "git", "push", "origin", "HEAD:refs/heads/main", cwd=work)
    assert main.returncode != 0
    assert not [r for r in stack.git_requests()[before:] if r["method"] == "POST"]
    for output in (clone, push, main):
        for secret in stack.secrets:
            assert secret not in output.stdout + output.stderr
    again = broker_run(stack, task, "gw-repo-read", "git", "ls-remote", "origin", cwd=work)
    assert again.returncode != 0  # the task is contained: no new token for it
