"""A whole gateway deployment of real processes, for the gateway's integration and
security tests.

* OpenBao: Transit for the broker; KV v2 ``secret/data/gateway/{git,api}`` holding the
  upstream secrets, read by the gateway with a token holding only
  ``infra/vault/gateway-policy.hcl``;
* Redis (its own server): the broker's state, the revocation feed and the budgets;
* a real ``broker serve`` (issuer = its own URL, so the gateway can report containment);
* a real git server (``git http-backend`` behind ``tests.servers.git_upstream``) that
  requires the upstream credential, with ``acme/widgets`` and ``acme/other``;
* a real upstream API (``tests.servers.upstream_api`` under uvicorn) that requires the
  API key and records every request;
* ``broker gateway --config gateway.yaml``: audit lines to a file (its stdout), logs to
  another.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.service.credentials import new_client_secret, secret_sha256
from broker.verify.redis_keys import default_prefix
from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.git_upstream import make_repo
from tests.servers.processes import BaoServer, RedisServer, free_port
from tests.servers.vault_setup import admin_client, setup_transit

REPO = Path(__file__).resolve().parents[2]
GATEWAY_POLICY = REPO / "infra" / "vault" / "gateway-policy.hcl"
AGENT = "gw-agent"
SERVICE = "gw-gateway"

POLICY = """\
scopes:
  gw-repo-read:
    kind: git
    resource: github.com/acme/widgets
    actions: [read]
    audience: git-gateway
    max_ttl: 10m
  gw-repo-write:
    kind: git
    resource: github.com/acme/widgets
    actions: [read, write]
    audience: git-gateway
    max_ttl: 10m
  gw-api:
    kind: http
    resource: https://api.test/v1/
    actions: [GET, POST]
    audience: billing-api
    max_ttl: 10m
  gw-api-budget:
    kind: http
    resource: https://api.test/v1/
    actions: [GET, POST]
    audience: billing-api
    max_ttl: 10m
    budget: {{requests: 3, bytes: 1MiB}}
  gw-down:
    kind: http
    resource: https://down.test/
    actions: [GET]
    audience: billing-api
    max_ttl: 10m
  gw-query:
    kind: http
    resource: https://query.test/
    actions: [GET]
    audience: billing-api
    max_ttl: 10m
  gw-bucket:
    kind: bucket
    resource: s3://agent-data/
    actions: [list, read, write, delete]
    audience: s3-gateway
    max_ttl: 10m
  gw-bucket-budget:
    kind: bucket
    resource: s3://agent-data/
    actions: [list, read, write, delete]
    audience: s3-gateway
    max_ttl: 10m
    budget: {{requests: 3, bytes: 1MiB}}
agents:
  {agent}:
    description: The gateway tests' agent
    identity:
      key:
        sha256: {agent_sha}
    scopes: [gw-repo-read, gw-repo-write, gw-api, gw-api-budget, gw-down, gw-query, gw-bucket, gw-bucket-budget]
    max_ttl: 10m
    rate: 6000/min
services:
  {service}:
    identity:
      key:
        sha256: {service_sha}
    audiences: [git-gateway, billing-api, s3-gateway]
"""


def _wait(predicate: Any, what: str, proc: subprocess.Popen[bytes] | None, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} not up within {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")


def http_get(
    url: str, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class GatewayStack:
    root: Path
    bao: BaoServer
    redis: RedisServer
    broker: BrokerProcess
    git_secret: str
    api_key: str
    service_key: str
    vault_token: str
    git_port: int
    api_port: int
    repos: Path
    down_port: int = field(default_factory=free_port)
    processes: dict[str, Process] = field(default_factory=dict)
    gateway_port: int = 0
    s3: Any = None  # tests.servers.s3_stack.S3Upstream: adds the bucket route

    # ------------------------------------------------------------ locations
    @property
    def redis_prefix(self) -> str:
        """The deployment's Redis prefix (the broker's and the gateway's default)."""
        return default_prefix(self.broker.issuer)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def git_log(self) -> Path:
        return self.root / "git-upstream.jsonl"

    @property
    def api_log(self) -> Path:
        return self.root / "api-upstream.jsonl"

    @property
    def audit_path(self) -> Path:
        return self.root / f"gateway-{self.gateway_port}.audit.jsonl"

    @property
    def gateway_log(self) -> Path:
        return self.root / f"gateway-{self.gateway_port}.log"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every upstream secret the agent must never see."""
        s3 = (self.s3.keys["secret_access_key"],) if self.s3 is not None else ()
        return (self.git_secret, self.api_key, *s3)

    # ------------------------------------------------------------ the agent's side
    def fresh_task(self, prefix: str) -> str:
        """A task id not used before: a refused request contains (revokes) its task, so a
        test that is refused several times takes a new task for each refusal."""
        self._tasks = getattr(self, "_tasks", 0) + 1
        return f"{prefix}-{self._tasks}"

    def token(self, task: str, scopes: list[Any]) -> str:
        status, _, body = self.broker.mint(task, scopes, who=AGENT)
        assert status == 201, body
        (entry,) = body["tokens"]
        token: str = entry["token"]
        return token

    def revoke_task(self, task: str) -> None:
        status, _, body = self.broker.post(f"/v1/tasks/{task}/revoke", {}, who=AGENT)
        assert status in (200, 204), body

    def git(
        self, *args: str, token: str | None = None, cwd: Path | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """The real git client; the token only in ``http.extraHeader``."""
        extra = ["-c", f"http.extraHeader=Authorization: Bearer {token}"] if token else []
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root / "home"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false",
        }
        (self.root / "home").mkdir(exist_ok=True)
        return subprocess.run(
            ["git", *extra, "-c", "user.name=agent", "-c", "user.email=agent@test", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        port: int | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request to the gateway (or the replica on ``port``), the path sent exactly
        as given (http.client does not normalise it)."""
        conn = http.client.HTTPConnection("127.0.0.1", port or self.gateway_port, timeout=10)
        try:
            sent = dict(headers or {})
            if token is not None:
                sent["Authorization"] = f"Bearer {token}"
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def refused(self, status: int, body: bytes) -> str:
        """The problem+json code of a refusal."""
        problem = json.loads(body)
        assert problem["status"] == status
        code: str = problem["code"]
        return code

    def repo_url(self, owner: str = "acme", name: str = "widgets") -> str:
        return f"{self.gateway_url}/git/github.com/{owner}/{name}.git"

    def api_url(self, path: str) -> str:
        return f"{self.gateway_url}/http/api.test{path}"

    def git_requests(self) -> list[dict[str, Any]]:
        return _jsonl(self.git_log)

    def api_requests(self) -> list[dict[str, Any]]:
        return _jsonl(self.api_log)

    def audit_lines(self) -> list[dict[str, Any]]:
        return _jsonl(self.audit_path)

    def audit_for(self, request_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            found = [a for a in self.audit_lines() if a.get("request_id") == request_id]
            if found:
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"no audit line for {request_id}")

    # ------------------------------------------------------------ the gateway
    def gateway_config(self, *, file_credentials: bool = False, **overrides: Any) -> Path:
        """The settings; ``file_credentials`` reads the secrets from files instead of Vault;
        an override of ``None`` leaves the setting out."""
        settings: dict[str, Any] = {
            "issuer": self.broker.issuer,
            "jwks_url": f"{self.broker.url}/.well-known/jwks.json",
            "service_key_file": str(self._secret_file("service-key", self.service_key)),
            "revocation": self.redis.url,
            "redis_url": self.redis.url,
            # no redis_prefix: the gateway derives the broker's own from the issuer
            "vault_addr": self.bao.addr,
            "vault_token_file": str(self._secret_file("gateway-vault-token", self.vault_token)),
            "host": "127.0.0.1",
            "port": self.gateway_port,
            "containment": "revoke-task",
            "secret_refresh": "1s",
            "upstream_timeout": "2s",
            "routes": [
                {
                    "kind": "git",
                    "audience": "git-gateway",
                    "host": "github.com",
                    "upstream": f"http://127.0.0.1:{self.git_port}",
                    "credential": {
                        "vault": "secret/data/gateway/git",
                        "field": "token",
                        "as": "basic",
                        "username": "x-access-token",
                    },
                    "push_refs": "refs/heads/agents/{task}/",
                },
                {
                    "kind": "http",
                    "audience": "billing-api",
                    "origin": "https://api.test",
                    "upstream": f"http://127.0.0.1:{self.api_port}",
                    "credential": {
                        "vault": "secret/data/gateway/api",
                        "field": "api_key",
                        "as": "header",
                        "header": "X-Api-Key",
                    },
                    "strip_headers": ["X-Upstream-Token"],
                    "strip_query": ["api_key"],
                },
                {
                    "kind": "http",
                    "audience": "billing-api",
                    "origin": "https://query.test",
                    "upstream": f"http://127.0.0.1:{self.api_port}",
                    "credential": {
                        "vault": "secret/data/gateway/api",
                        "field": "api_key",
                        "as": "query",
                        "param": "key",
                    },
                },
                {
                    "kind": "http",
                    "audience": "billing-api",
                    "origin": "https://down.test",
                    "upstream": f"http://127.0.0.1:{self.down_port}",  # nothing listens there
                    "credential": {
                        "vault": "secret/data/gateway/api",
                        "field": "api_key",
                        "as": "query",
                        "param": "key",
                    },
                },
            ],
        }
        if self.s3 is not None:
            settings["routes"].append(self.s3.route())
        settings.update(overrides)
        if file_credentials:
            files = {
                "git": self._secret_file("git-secret-file", self.git_secret),
                "api": self._secret_file("api-secret-file", self.api_key),
            }
            for route in settings["routes"]:
                if route["kind"] == "bucket":
                    route["credential"] = {"file": str(self._secret_file("s3-keys-file", json.dumps(self.s3.keys)))}
                    continue
                which = "git" if route["kind"] == "git" else "api"
                route["credential"] = {k: v for k, v in route["credential"].items() if k not in ("vault", "field")}
                route["credential"]["file"] = str(files[which])
            for name in ("vault_addr", "vault_token_file"):
                settings.pop(name)
        settings = {k: v for k, v in settings.items() if v is not None}
        path = self.root / f"gateway-{self.gateway_port}.yaml"
        path.write_text(json.dumps(settings, indent=2))  # JSON is YAML: the same strict reader
        return path

    def _secret_file(self, name: str, value: str) -> Path:
        path = self.root / name
        path.write_text(value)
        path.chmod(0o600)
        return path

    def start_gateway(self, *, file_credentials: bool = False, **overrides: Any) -> Process:
        self.stop_gateway()
        self.gateway_port = free_port()
        config = self.gateway_config(file_credentials=file_credentials, **overrides)
        broker_bin = shutil.which("broker", path=str(Path(sys.executable).parent)) or "broker"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "BROKER_", "VAULT_", "BAO_"))}
        with self.audit_path.open("ab") as out, self.gateway_log.open("ab") as err:
            proc = subprocess.Popen([broker_bin, "gateway", "--config", str(config)], stdout=out, stderr=err, env=env)
        gateway = Process(proc, self.gateway_log)
        self.processes["gateway"] = gateway
        _wait(lambda: http_get(self.gateway_url + "/healthz", timeout=1)[0] == 200, "gateway", proc, self.gateway_log)
        return gateway

    def start_replica(self) -> int:
        """Another ``broker gateway`` process on the same settings file (its port from
        ``GATEWAY_PORT``, the environment twin); its port."""
        port = free_port()
        config = self.root / f"gateway-{self.gateway_port}.yaml"
        broker_bin = shutil.which("broker", path=str(Path(sys.executable).parent)) or "broker"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "BROKER_", "VAULT_", "BAO_"))}
        env["GATEWAY_PORT"] = str(port)
        log = self.root / f"gateway-{port}.log"
        with (self.root / f"gateway-{port}.audit.jsonl").open("ab") as out, log.open("ab") as err:
            proc = subprocess.Popen([broker_bin, "gateway", "--config", str(config)], stdout=out, stderr=err, env=env)
        self.processes[f"replica-{port}"] = Process(proc, log)
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: http_get(url + "/readyz", timeout=2)[0] == 200, "gateway replica", proc, log)
        return port

    def wait_ready(self, ready: bool = True, timeout: float = 20.0) -> None:
        want = 200 if ready else 503
        _wait(
            lambda: http_get(self.gateway_url + "/readyz", timeout=2)[0] == want,
            f"gateway /readyz {want}",
            self.processes["gateway"].proc,
            self.gateway_log,
            timeout,
        )

    def stop_gateway(self) -> None:
        gateway = self.processes.pop("gateway", None)
        if gateway is not None:
            gateway.stop()

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()
        self.processes.clear()
        self.broker.stop()


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def put_upstream_secrets(bao: BaoServer, git_secret: str, api_key: str) -> str:
    """Write the upstream secrets to KV v2 and return a token holding only the gateway policy."""
    client = admin_client(bao)
    try:
        mounts = client.sys.list_mounted_secrets_engines()["data"]
        if "secret/" not in mounts:
            client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
        client.secrets.kv.v2.create_or_update_secret("gateway/git", {"token": git_secret}, mount_point="secret")
        client.secrets.kv.v2.create_or_update_secret("gateway/api", {"api_key": api_key}, mount_point="secret")
        client.sys.create_or_update_policy("capbroker-gateway", GATEWAY_POLICY.read_text())
        created = client.auth.token.create(policies=["capbroker-gateway"], ttl="2h", no_default_policy=True)
        return str(created["auth"]["client_token"])
    finally:
        client.adapter.close()


def start_stack(root: Path, bao: BaoServer, redis: RedisServer, *, s3: Any = None) -> GatewayStack:
    root.mkdir(parents=True, exist_ok=True)
    transit_token = setup_transit(bao, key="gateway-e2e")
    git_secret, api_key = "ghs_" + secrets.token_urlsafe(24), "apikey_" + secrets.token_urlsafe(24)
    vault_token = put_upstream_secrets(bao, git_secret, api_key)
    policy = PolicyDir.create(root / "policy")
    policy.keys[AGENT] = new_client_secret()
    service_key = new_client_secret()
    (policy.path / "zz-gateway.yaml").write_text(
        POLICY.format(
            agent=AGENT,
            agent_sha=secret_sha256(policy.keys[AGENT]),
            service=SERVICE,
            service_sha=secret_sha256(service_key),
        )
    )
    port = free_port()  # the broker's issuer is its own URL, so the gateway reaches it at ``issuer``
    broker = BrokerProcess(
        root / "broker",
        policy,
        redis.url,
        bao.addr,
        transit_token,
        transit_key="gateway-e2e",
        port=port,
        issuer=f"http://127.0.0.1:{port}",
    )
    repos = root / "repos"
    for name in ("widgets", "other"):
        make_repo(repos, "acme", name, root)
    stack = GatewayStack(
        root, bao, redis, broker, git_secret, api_key, service_key, vault_token, free_port(), free_port(), repos
    )
    stack.s3 = s3
    if s3 is not None:
        stack.processes["s3"] = s3.process
    try:
        broker.start()
        secret_file = stack._secret_file("git-upstream-secret", git_secret)
        git_log = root / "git-upstream.log"
        with git_log.open("ab") as out:
            git_proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.servers.git_upstream",
                    "--port",
                    str(stack.git_port),
                    "--root",
                    str(repos),
                    "--secret-file",
                    str(secret_file),
                    "--log",
                    str(stack.git_log),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        stack.processes["git"] = Process(git_proc, git_log)
        key_file = stack._secret_file("api-upstream-key", api_key)
        api_out = root / "api-upstream.log"
        with api_out.open("ab") as out:
            api_proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "tests.servers.upstream_api:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(stack.api_port),
                    "--log-level",
                    "warning",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "UPSTREAM_KEY_FILE": str(key_file), "UPSTREAM_LOG": str(stack.api_log)},
            )
        stack.processes["api"] = Process(api_proc, api_out)
        _wait(lambda: http_get(f"http://127.0.0.1:{stack.git_port}/x")[0] == 401, "git upstream", git_proc, git_log)
        _wait(lambda: http_get(f"http://127.0.0.1:{stack.api_port}/x")[0] == 401, "api upstream", api_proc, api_out)
        stack.start_gateway()
        stack.wait_ready()
    except BaseException:
        stack.stop()
        raise
    return stack


@contextmanager
def own_stack(
    root: Path, bao: BaoServer, start: Callable[[Path, BaoServer, RedisServer], GatewayStack] | None = None
) -> Iterator[GatewayStack]:
    """A stack (``start_stack``, or ``start``) on a redis-server of its own, both stopped
    at the end: what each gateway test module runs on."""
    redis = RedisServer(root / "redis").start()
    try:
        stack = start(root, bao, redis) if start is not None else start_stack(root / "stack", bao, redis)
        try:
            yield stack
        finally:
            stack.stop()
    finally:
        redis.stop()
