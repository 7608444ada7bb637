"""The "agent": what runs inside the sandbox. Standard library, the real `git`, and for its
data task `broker run` and the real AWS CLI (agent_data.py).

It holds one secret, its broker client key (CAPBROKER_CLIENT_KEY), and never an upstream
secret. It asks the broker for capability tokens for its task, then does its work through
the gateway (CAPBROKER_GATEWAY) and, as a prompt-injected agent would, a few missteps.
DEMO_ATTACKER_KEY stands for an attacker's API key planted in its prompt. Each step is one
JSON line on stdout: demo.py reads them and prints the report.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BROKER = os.environ["CAPBROKER_URL"]
GATEWAY = os.environ["CAPBROKER_GATEWAY"]
CLIENT_KEY = os.environ["CAPBROKER_CLIENT_KEY"]
TASK = os.environ["DEMO_TASK"]
WORK = Path(os.environ["DEMO_WORKDIR"])
ATTACKER_KEY = os.environ["DEMO_ATTACKER_KEY"]  # the attacker's own API key, planted in the agent's prompt
DATA_SCOPE = "task-data"  # the bucket scope: s3://agent-data/tasks/, narrowed to the task's own folder
INVOICES = f"{GATEWAY}/http/billing.internal/v1/invoices/2026-11"
TURN = 0.2  # seconds between missteps (the gateway that contained a task refuses its next request at once)


def step(name: str, ok: bool, started: float, status: int | None = None, detail: str = "") -> None:
    line = {"step": name, "ok": ok, "status": status, "detail": detail, "t0": started, "t1": time.time()}
    print(json.dumps(line), flush=True)
    time.sleep(0.25)  # a beat between steps, so that each gateway audit line falls in its step's time


def http(method: str, url: str, headers: dict[str, str], body: bytes | None = None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310 -- http(s) only
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 -- the broker's, the gateway's
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def mint(name: str, task: str) -> dict[str, str]:
    """One token per audience: git-gateway and billing-api."""
    started = time.time()
    body = json.dumps({"task": task, "scopes": ["widgets-work", "invoices-read"], "ttl": "5m"}).encode()
    headers = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}
    status, answer = http("POST", f"{BROKER}/v1/tokens", headers, body)
    tokens = {t["audience"]: t["token"] for t in answer.get("tokens", [])}  # type: ignore[attr-defined]
    step(name, status == 201, started, status, ", ".join(sorted(tokens)))
    return tokens


def local_git(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "GIT_CONFIG_NOSYSTEM": "1"}
    who = ["-c", "user.name=agent", "-c", "user.email=agent@sandbox.invalid"]
    return subprocess.run(  # noqa: S603
        ["git", *who, *args],  # noqa: S607 -- the git on PATH, as an agent would
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def git(name: str, token: str, *args: str, cwd: Path = WORK) -> bool:
    """The real git client: https://github.com/... rewritten to the gateway, the token in
    one extra header (what `broker run` sets up through GIT_CONFIG_*)."""
    started = time.time()
    through = ["-c", f"url.{GATEWAY}/git/github.com/.insteadOf=https://github.com/"]
    through += ["-c", f"http.extraHeader=Authorization: Bearer {token}"]
    done = local_git(*through, *args, cwd=cwd)
    seen = re.search(r"returned error: (\d{3})", done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith(("error:", "fatal:", " ! "))]
    step(name, done.returncode == 0, started, int(seen.group(1)) if seen else None, " | ".join(errors[-2:]))
    return done.returncode == 0


def api(name: str, token: str, url: str = INVOICES, extra: dict[str, str] | None = None) -> None:
    started = time.time()
    status, answer = http("GET", url, {"Authorization": f"Bearer {token}", **(extra or {})})
    step(name, 200 <= status < 300, started, status, str(answer.get("code", "")))


def main() -> int:
    tokens = mint("mint", TASK)
    git_token, api_token = tokens["git-gateway"], tokens["billing-api"]

    # The work: clone, commit on the task branch, push it, read an invoice.
    git("clone", git_token, "clone", "https://github.com/acme/widgets.git", "widgets")
    repo = WORK / "widgets"
    (repo / "FIX.md").write_text(f"fixed by task {TASK}\n")
    local_git("add", "FIX.md", cwd=repo)
    local_git("commit", "-qm", "the fix", cwd=repo)
    git("push-task-branch", git_token, "push", "origin", f"HEAD:refs/heads/agents/{TASK}/fix", cwd=repo)
    api("call-api", api_token)

    # The missteps: the first one with a valid token contains the task.
    git("push-main", git_token, "push", "origin", "HEAD:main", cwd=repo)
    time.sleep(TURN)
    git("read-other-repo", git_token, "clone", "https://github.com/acme/other.git", "other")
    time.sleep(TURN)
    api(
        "api-attacker-key",
        api_token,
        f"{INVOICES}?api_key={ATTACKER_KEY}",
        {"X-Api-Key": ATTACKER_KEY},
    )

    # Aside: the same call from a task that has not misstepped. Not refused: the gateway
    # drops the attacker's key (header and parameter) and attaches the real one.
    api(
        "api-attacker-key-clean-task",
        mint("mint-clean-task", f"{TASK}-clean")["billing-api"],
        f"{INVOICES}?api_key={ATTACKER_KEY}",
        {"X-Api-Key": ATTACKER_KEY},
    )
    return data_task(f"{TASK}-data")


def data_task(task: str) -> int:
    """agent_data.py under `broker run`, its bucket token narrowed to ``tasks/<task>/``.
    `broker run` reads the agent's key from CAPBROKER_KEY and does not pass it on."""
    env = {k: v for k, v in os.environ.items() if k != "CAPBROKER_CLIENT_KEY"}
    env |= {"CAPBROKER_KEY": CLIENT_KEY, "DEMO_DATA_TASK": task}
    run = ["broker", "run", "--broker", BROKER, "--gateway", GATEWAY, "--task", task, "--scope", DATA_SCOPE]
    run += ["--resource", f"s3://agent-data/tasks/{task}/", "--"]
    done = subprocess.run(  # noqa: S603 -- its lines go to this agent's stdout
        [*run, sys.executable, str(Path(__file__).with_name("agent_data.py"))],
        cwd=WORK,
        env=env,
        timeout=120,
        check=False,
    )
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
