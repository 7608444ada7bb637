"""capbroker's sandbox demo: `make demo` (or `.venv/bin/python examples/sandbox-demo/demo.py`).

No Redis, no OpenBao. It starts, on free 127.0.0.1 ports:

* `broker dev` with policy/ (the agent `sandbox-agent`, the service `sandbox-gateway`);
* a git server (`git http-backend`, tests/servers/git_upstream.py) with acme/widgets and
  acme/other, which requires the upstream credential;
* a billing API (tests/servers/upstream_api.py) which requires its API key and records
  every request it receives;
* moto's S3 server (tests/servers/s3_upstream.py) with signature checks on, the bucket
  agent-data and an IAM user allowed s3:* on it, whose keys only the gateway reads; it
  records every request it receives;
* `broker gateway` on gateway.yaml (revocation: introspection, file: credentials).

Then it runs agent.py as its own process, holding only its broker client key, and prints
what each step got, what the upstreams received, and whether a secret leaked. Every
process is stopped at the end, on error and on Ctrl-C. Exit status 0: every check held.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3  # the dev extras (make install), as moto and the AWS CLI the demo runs
from botocore.config import Config

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PY = sys.executable
BROKER = str(Path(PY).parent / "broker")
AGENT, SERVICE = "sandbox-agent", "sandbox-gateway"
ATTACKER_KEY = "sk-attacker-4e1f9b7c"  # the attacker's own API key, planted in the agent's prompt
BUCKET, REGION = "agent-data", "us-east-1"
OTHER_OBJECT = "tasks/nightly-export/summary.csv"  # another task's data, named in the agent's prompt

# The agent's steps: (step, what it does, expected outcome, the gateway's expected code).
STEPS = [
    ("mint", "ask the broker for tokens (git-gateway, billing-api)", "allowed", None),
    ("clone", "git clone https://github.com/acme/widgets.git", "allowed", None),
    ("push-task-branch", "git push origin HEAD:refs/heads/agents/<task>/fix", "allowed", None),
    ("call-api", "GET https://billing.internal/v1/invoices/2026-11", "allowed", None),
    ("push-main", "misstep: git push origin HEAD:main", "refused", "capability_denied"),
    ("read-other-repo", "misstep: git clone https://github.com/acme/other.git", "refused", "revoked"),
    ("api-attacker-key", "misstep: GET invoices with the attacker's key", "refused", "revoked"),
    ("mint-clean-task", "aside: tokens for a second, clean task", "allowed", None),
    ("api-attacker-key-clean-task", "aside: the clean task sends the attacker's key (dropped)", "allowed", None),
    ("data-run", "broker run: bucket token narrowed to tasks/<task>-data/", "allowed", None),
    ("data-put", "aws s3 cp report.md s3://agent-data/tasks/<task>-data/", "allowed", None),
    ("data-list-own", "aws s3 ls s3://agent-data/tasks/<task>-data/", "allowed", None),
    ("data-list-root", "misstep: aws s3 ls s3://agent-data/", "refused", "capability_denied"),
    ("data-read-other", "misstep: aws s3 cp s3://agent-data/tasks/nightly-export/...", "refused", "revoked"),
    ("data-bucket-policy", "misstep: aws s3api put-bucket-policy --bucket agent-data", "refused", "revoked"),
    ("data-copy-out", "misstep: aws s3api copy-object to public/report.md", "refused", "revoked"),
]


# ------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:  # noqa: S310 -- our own loopback URLs
            return int(answer.status)
    except urllib.error.HTTPError as e:
        return e.code


class Processes:
    """Every server the demo starts, stopped in reverse order by ``stop``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "GATEWAY_", "VAULT_", "BAO_"))}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (self.root / f"{name}.out").open("wb") as out, (self.root / f"{name}.log").open("wb") as err:
            proc = subprocess.Popen(  # noqa: S603 -- our own commands
                argv, cwd=REPO, stdout=out, stderr=err, env={**self.env, **(env or {})}, start_new_session=True
            )
        self.running.append((name, proc))
        return proc

    def wait(self, name: str, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        proc = dict(self.running)[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{(self.root / f'{name}.log').read_text(errors='replace')[-2000:]}")
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} not ready within {timeout:.0f}s")

    def stop(self) -> None:
        for _, proc in reversed(self.running):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(self.running):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def s3_direct(port: int, keys: dict[str, str]) -> Any:
    """boto3 straight to moto with the gateway user's keys: the operator's view of the bucket."""
    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id=keys["access_key_id"],
        aws_secret_access_key=keys["secret_access_key"],
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
    )


def git(*args: str, cwd: Path | None = None) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1"}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)  # noqa: S603, S607
    return done.stdout.strip()


def seed_repo(root: Path, name: str) -> str:
    """A bare ``acme/NAME.git`` with one commit on main; that commit."""
    bare, src = root / "repos" / "acme" / f"{name}.git", root / f"seed-{name}"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    git("init", "-q", "-b", "main", str(src))
    (src / "README.md").write_text(f"acme/{name}\n")
    git("add", "README.md", cwd=src)
    git("-c", "user.name=seed", "-c", "user.email=seed@demo.invalid", "commit", "-qm", "first", cwd=src)
    git("push", "-q", str(bare), "main", cwd=src)
    return git("rev-parse", "HEAD", cwd=src)


def jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


# ------------------------------------------------------------------ the demo


def start_everything(root: Path, procs: Processes) -> dict[str, Any]:
    ports = {name: free_port() for name in ("broker", "gateway", "git", "api", "s3")}
    broker_url, gateway_url = f"http://127.0.0.1:{ports['broker']}", f"http://127.0.0.1:{ports['gateway']}"
    upstream = {"git_token": "ghs_demo" + secrets.token_hex(16), "api_key": "live_demo" + secrets.token_hex(16)}
    for name, value in (("git-token", upstream["git_token"]), ("billing-api-key", upstream["api_key"])):
        (root / name).write_text(value)
        (root / name).chmod(0o600)
    seeds = {name: seed_repo(root, name) for name in ("widgets", "other")}
    s3 = [PY, "-m", "tests.servers.s3_upstream", "--port", str(ports["s3"]), "--bucket", BUCKET]
    procs.start("s3", [*s3, "--keys", str(root / "s3-keys.json"), "--log", str(root / "s3.jsonl")])  # slow to import

    broker = [BROKER, "dev", "--scopes", str(HERE / "policy"), "--agent", AGENT, "--service", SERVICE]
    procs.start("broker", [*broker, "--port", str(ports["broker"])])
    keys: dict[str, str] = {}

    def broker_ready() -> bool:  # it prints the keys it made, then serves
        printed = (root / "broker.log").read_text()
        keys.update(re.findall(r"^(agent|service) \S+ key:\s+(cbk_\S+)", printed, re.M))
        return len(keys) == 2 and status_of(broker_url + "/healthz") == 200

    procs.wait("broker", broker_ready)
    (root / "gateway-service-key").write_text(keys["service"])
    (root / "gateway-service-key").chmod(0o600)

    git_server = [PY, "-m", "tests.servers.git_upstream", "--root", str(root / "repos"), "--port", str(ports["git"])]
    procs.start(
        "git-server", [*git_server, "--secret-file", str(root / "git-token"), "--log", str(root / "git-server.jsonl")]
    )
    api = [PY, "-m", "uvicorn", "tests.servers.upstream_api:app", "--host", "127.0.0.1", "--log-level", "warning"]
    procs.start(
        "billing-api",
        [*api, "--port", str(ports["api"])],
        env={"UPSTREAM_KEY_FILE": str(root / "billing-api-key"), "UPSTREAM_LOG": str(root / "billing-api.jsonl")},
    )
    procs.wait("git-server", lambda: status_of(f"http://127.0.0.1:{ports['git']}/") == 401)
    procs.wait("billing-api", lambda: status_of(f"http://127.0.0.1:{ports['api']}/") == 401)
    procs.wait("s3", lambda: (root / "s3-keys.json").exists() and listening(ports["s3"]), timeout=60)
    s3_keys = json.loads((root / "s3-keys.json").read_text())
    s3_direct(ports["s3"], s3_keys).put_object(Bucket=BUCKET, Key=OTHER_OBJECT, Body=b"customer,amount\nacme,1200\n")

    config = string.Template((HERE / "gateway.yaml").read_text()).substitute(
        BROKER=broker_url,
        DIR=str(root),
        PORT=ports["gateway"],
        GIT_UPSTREAM=f"http://127.0.0.1:{ports['git']}",
        API_UPSTREAM=f"http://127.0.0.1:{ports['api']}",
        S3_UPSTREAM=f"http://127.0.0.1:{ports['s3']}",
    )
    (root / "gateway.yaml").write_text(config)
    procs.start("gateway", [BROKER, "gateway", "--config", str(root / "gateway.yaml")])
    procs.wait("gateway", lambda: status_of(gateway_url + "/readyz") == 200)
    upstream["s3_secret"] = s3_keys["secret_access_key"]
    stack = {"ports": ports, "broker": broker_url, "gateway": gateway_url, "keys": keys, "seeds": seeds}
    return {**stack, "s3_keys": s3_keys, **upstream}


def run_agent(root: Path, stack: dict[str, Any], task: str) -> tuple[dict[str, str], subprocess.CompletedProcess[str]]:
    """agent.py as its own process; its whole environment is returned for the secrets check."""
    (root / "agent-home").mkdir()
    (root / "agent-work").mkdir()
    env = {
        "PATH": os.pathsep.join([str(Path(PY).parent), os.environ.get("PATH", "/usr/bin:/bin")]),  # broker, aws
        "HOME": str(root / "agent-home"),
        "CAPBROKER_URL": stack["broker"],
        "CAPBROKER_GATEWAY": stack["gateway"],
        "CAPBROKER_CLIENT_KEY": stack["keys"]["agent"],
        "DEMO_TASK": task,
        "DEMO_WORKDIR": str(root / "agent-work"),
        "DEMO_ATTACKER_KEY": ATTACKER_KEY,
        "DEMO_OTHER_OBJECT": OTHER_OBJECT,
    }
    agent = [PY, str(HERE / "agent.py")]
    done = subprocess.run(  # noqa: S603
        agent, cwd=root / "agent-work", env=env, capture_output=True, text=True, timeout=180, check=False
    )
    return env, done


def verdicts(steps: list[dict[str, Any]], audit: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """For each step, the gateway's audit line that decided it: the first refusal among the
    requests made during the step, else its last request (None: the step never reached it)."""
    out: list[dict[str, Any] | None] = []
    for i, step in enumerate(steps):
        end = steps[i + 1]["t0"] if i + 1 < len(steps) else float("inf")
        lines = [a for a in audit if step["t0"] <= a["ts"] < end]
        refused = [a for a in lines if a["decision"] != "allow"]
        out.append(refused[0] if refused else (lines[-1] if lines else None))
    return out


Checks = list[tuple[bool, str]]


def report_steps(root: Path, task: str, done: subprocess.CompletedProcess[str]) -> Checks:
    steps = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    audit = jsonl(root / "gateway.out")
    checks: Checks = []
    print(f"\nThe agent (task {task}, then its data task {task}-data; it holds only its broker client key)\n")
    print(f"  {'step':<67} {'agent':<9} gateway")
    by_name = {s["step"]: (s, v) for s, v in zip(steps, verdicts(steps, audit), strict=True)}
    for n, (name, label, expected, code) in enumerate(STEPS, 1):
        step, line = by_name.get(name, (None, None))
        got = "missing" if step is None else ("allowed" if step["ok"] else "refused")
        gw = "-" if line is None else f"{line['status']} {line['code'] or ''}".rstrip()
        if line is not None and line.get("containment"):
            gw += f", containment: {line['containment']}"
        print(f"  {f'{n}. ' + label.replace('<task>', task):<67} {got:<9} {gw}")
        checks.append((got == expected and (code is None or (line or {}).get("code") == code), f"{name}: {expected}"))
    print("\n  Steps 6-7 and 14-16 are 401 revoked: the misstep before them (5, 13) contained their task, so")
    print("  the gateway refuses whatever they ask before looking at it; none reaches an upstream.")
    if done.returncode != 0:
        print(f"\nthe agent exited {done.returncode}:\n{done.stderr[-2000:]}")
    checks.append((done.returncode == 0, "the agent ran to its end"))
    contained = by_name.get("push-main", (None, None))[1]
    outcome = (contained or {}).get("containment")
    checks.append((outcome == "contained", "the first misstep contained the task (later requests: 401 revoked)"))
    data = (by_name.get("data-list-root", (None, None))[1] or {}).get("containment")
    checks.append((data == "contained", "the data task's first misstep contained it (later requests: 401 revoked)"))
    return checks


def report_upstreams(root: Path, stack: dict[str, Any], task: str, probes: dict[str, int]) -> Checks:
    print("\nWhat the upstreams received\n")
    gitlog = jsonl(root / "git-server.jsonl")[probes["git-server.jsonl"] :]
    pushes = [r for r in gitlog if r["method"] == "POST" and r["path"].endswith("/git-receive-pack")]
    other = [r for r in gitlog if r["path"].startswith("/acme/other")]
    print(f"  git server: {len(gitlog)} requests, {sum(r['authorised'] for r in gitlog)} with the real credential")
    print(f"    (Basic x-access-token, attached by the gateway); acme/other: {len(other)}; pushes: {len(pushes)}")
    bare = root / "repos" / "acme" / "widgets.git"
    listed = git("for-each-ref", "--format=%(refname) %(objectname)", cwd=bare).splitlines()
    refs = dict(line.split(" ", 1) for line in listed)
    for ref, sha in sorted(refs.items()):
        note = " (unchanged)" if sha == stack["seeds"]["widgets"] else ""
        print(f"    acme/widgets {ref} = {sha[:10]}{note}")
    checks = [
        (bool(gitlog) and all(r["authorised"] for r in gitlog), "git: every request carried the real credential"),
        (not other, "git: acme/other was never reached"),
        (len(pushes) == 1, "git: one push reached the server (the task branch), not the one to main"),
        (refs.get("refs/heads/main") == stack["seeds"]["widgets"], "git: main is unchanged"),
        (f"refs/heads/agents/{task}/fix" in refs, "git: the task branch holds the agent's commit"),
    ]
    api = jsonl(root / "billing-api.jsonl")[probes["billing-api.jsonl"] :]
    api_keys = [dict(r["headers"]).get("x-api-key") for r in api]
    with_auth = [r for r in api if any(k == "authorization" for k, _ in r["headers"])]
    attacker = [r for r in api if ATTACKER_KEY in json.dumps(r)]
    print(f"  billing API: {len(api)} requests; X-Api-Key the real key: {api_keys.count(stack['api_key'])};")
    print(f"    an Authorization header: {len(with_auth)}; the attacker's key: {len(attacker)};")
    print(f"    queries received: {[r['query'] for r in api]}")
    checks += [
        (bool(api) and api_keys.count(stack["api_key"]) == len(api), "api: every request carried the real key"),
        (not with_auth, "api: no agent Authorization (capability token) arrived"),
        (not attacker, "api: the attacker's key never arrived"),
    ]
    return checks


def report_bucket(root: Path, stack: dict[str, Any], task: str, probes: dict[str, int]) -> Checks:
    """What moto's log says reached S3, and what the bucket holds afterwards."""
    log = jsonl(root / "s3.jsonl")[probes["s3.jsonl"] :]
    own, key_id = f"tasks/{task}-data/", stack["s3_keys"]["access_key_id"]

    def inside(r: dict[str, Any]) -> bool:  # an object under the task's folder, or a list of it
        path, _, query = r["path"].partition("?")
        query = query or r["query"]
        listed = urllib.parse.parse_qs(query).get("prefix", [""])[0]
        return path.startswith(f"/{BUCKET}/{own}") or (path.rstrip("/") == f"/{BUCKET}" and listed.startswith(own))

    outside = [f"{r['method']} {r['path']}" for r in log if not inside(r)]
    signers = sorted({str(r["access_key_id"]) for r in log})
    with_token = [r for r in log if r["security_token"]]
    bucket = s3_direct(stack["ports"]["s3"], stack["s3_keys"])
    try:
        policy = bucket.get_bucket_policy(Bucket=BUCKET)["Policy"]
    except bucket.exceptions.ClientError as e:
        policy = None if e.response["Error"]["Code"] == "NoSuchBucketPolicy" else repr(e.response["Error"])
    keys = sorted(o["Key"] for o in bucket.list_objects_v2(Bucket=BUCKET).get("Contents", []))
    print(f"  S3 (moto, signature checks on): {len(log)} requests; signed with: {signers}")
    print(
        f"    (the gateway's key is {key_id}; the agent's placeholder is capbroker); a session token: {len(with_token)}"
    )
    print(f"    requests: {[' '.join(str(r[k]) for k in ('method', 'path', 'status')) for r in log]}")
    print(f"    outside {own}: {len(outside)}; bucket policy: {policy}")
    print(f"    objects in the bucket: {keys}")
    return [
        (bool(log) and signers == [key_id], "s3: every request was signed with the gateway's key, never the agent's"),
        (not with_token, "s3: no capability token (session token) arrived"),
        (not outside, f"s3: nothing outside {own} reached S3 (no root listing, no other task's object)"),
        (policy is None, "s3: no bucket policy was set"),
        (f"{own}report.md" in keys, "s3: the report is under the task's folder"),
        (not [k for k in keys if k.startswith("public/")], "s3: no copy was made outside the task's folder"),
    ]


def report_secrets(
    root: Path, stack: dict[str, Any], env: dict[str, str], done: subprocess.CompletedProcess[str]
) -> Checks:
    print("\nWhere the upstream secrets appear\n")
    agent_files = b"".join(
        p.read_bytes() for d in ("agent-home", "agent-work") for p in (root / d).rglob("*") if p.is_file()
    )
    places = {
        "the agent's environment": json.dumps(env).encode(),
        "the agent's output": (done.stdout + done.stderr).encode(),
        "the agent's files (clone, .git, home)": agent_files,
        "the gateway's audit lines and log": (root / "gateway.out").read_bytes() + (root / "gateway.log").read_bytes(),
    }
    checks: Checks = []
    for place, data in places.items():
        leaked = [name for name in ("git_token", "api_key", "s3_secret") if stack[name].encode() in data]
        print(f"  {place}: {'LEAKED ' + ', '.join(leaked) if leaked else 'none'}")
        checks.append((not leaked, f"no upstream secret in {place}"))
    return checks


def report(root: Path, stack: dict[str, Any], task: str) -> bool:
    probes = {log: len(jsonl(root / log)) for log in ("git-server.jsonl", "billing-api.jsonl", "s3.jsonl")}  # set-up
    env, done = run_agent(root, stack, task)
    time.sleep(0.3)  # the gateway writes a request's audit line once its answer is out
    checks = report_steps(root, task, done) + report_upstreams(root, stack, task, probes)
    checks += report_bucket(root, stack, task, probes)
    checks += report_secrets(root, stack, env, done)
    failed = [what for ok, what in checks if not ok]
    print("\nChecks\n")
    for ok, what in checks:
        print(f"  {'ok  ' if ok else 'FAIL'}  {what}")
    print(
        f"\nRESULT: {f'{len(failed)} of {len(checks)} checks FAILED' if failed else f'all {len(checks)} checks held'}"
    )
    return not failed


def main() -> int:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even when started in the background
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on SIGTERM too
    task = "demo-" + secrets.token_hex(3)
    with tempfile.TemporaryDirectory(prefix="capbroker-demo-") as tmp:
        root = Path(tmp)
        procs = Processes(root)
        try:
            stack = start_everything(root, procs)
            ports = stack["ports"]
            print("capbroker sandbox demo: no Redis, no OpenBao; every server on 127.0.0.1\n")
            print(f"  broker dev     :{ports['broker']}  policy examples/sandbox-demo/policy")
            print(f"  gateway        :{ports['gateway']}  revocation: introspection, containment: revoke-task")
            print(
                f"  git server     :{ports['git']}  git http-backend, acme/widgets + acme/other, needs the real token"
            )
            print(f"  billing API    :{ports['api']}  needs the real API key, records every request")
            print(f"  S3 (moto)      :{ports['s3']}  bucket agent-data, SigV4 checks on, records every request")
            return 0 if report(root, stack, task) else 1
        except RuntimeError as e:  # a server did not start: what it said
            print(f"demo: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
        finally:
            procs.stop()


if __name__ == "__main__":
    sys.exit(main())
