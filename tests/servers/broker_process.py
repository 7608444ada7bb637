"""Run real ``broker serve`` processes on Vault/OpenBao + Redis for integration tests.

``PolicyDir`` writes a copy of the example ``scopes/`` with fresh client keys (plus a
``hammer`` agent with a small rate), so the tests hold every secret. ``BrokerProcess``
starts ``broker serve --config`` on a free loopback port, with its stdout/stderr
captured to files the no-secrets-in-logs check reads.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.policy.loader import load_policy
from broker.policy.model import KeyIdentity
from broker.service.credentials import new_client_secret, secret_sha256
from broker.verify import redis_keys
from tests.servers.processes import free_port

REPO = Path(__file__).resolve().parents[2]

HAMMER = """\
agents:
  hammer:
    description: Test agent with a small rate, for the shared rate-limit test
    identity:
      key:
        sha256: {sha}
    scopes: [widgets-read]
    rate: {rate}
"""


@dataclass
class PolicyDir:
    path: Path
    keys: dict[str, str] = field(default_factory=dict)  # principal or "admin" -> secret

    @classmethod
    def create(cls, path: Path, *, hammer_rate: str = "20/h") -> PolicyDir:
        path.mkdir(parents=True, exist_ok=True)
        policy = load_policy(REPO / "scopes")
        old_to_new: dict[str, str] = {}
        keys: dict[str, str] = {}
        for principal in (*policy.agents.values(), *policy.services.values()):
            if isinstance(principal.identity, KeyIdentity):
                keys[principal.name] = new_client_secret()
                old_to_new[principal.identity.sha256] = secret_sha256(keys[principal.name])
        for source in sorted((REPO / "scopes").glob("*.yaml")):
            text = source.read_text()
            for old, new in old_to_new.items():
                text = text.replace(old, new)
            (path / source.name).write_text(text)
        keys["hammer"] = new_client_secret()
        (path / "zz-hammer.yaml").write_text(HAMMER.format(sha=secret_sha256(keys["hammer"]), rate=hammer_rate))
        keys["admin"] = new_client_secret()
        return cls(path, keys)


@dataclass
class BrokerProcess:
    workdir: Path
    policy: PolicyDir
    redis_url: str
    vault_addr: str
    vault_token: str
    transit_key: str = "capbroker"
    signing_alg: str = "EdDSA"
    port: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)
    archive_dir: Path | None = None  # the audit archive (default: workdir/audit-archive); replicas share one
    proc: subprocess.Popen[bytes] | None = None
    # The test Redis servers keep nothing on disk (each test starts from empty), which
    # `broker serve` refuses unless told this is accepted; test_redis_durability checks the rest.
    redis_durability: str = "accept-volatile"
    issuer: str = "http://127.0.0.1:8700"  # every process of one deployment shares the issuer
    redis_prefix: str = ""  # "" = derived from the issuer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def key_prefix(self) -> str:
        """The deployment's Redis prefix, as the broker resolves it."""
        return self.redis_prefix or redis_keys.default_prefix(self.issuer)

    @property
    def audit_stream(self) -> str:
        stream = redis_keys.audit_stream(self.key_prefix)
        return redis_keys.cluster_stream(stream, cluster=redis_keys.on_cluster(self.redis_url))

    @property
    def log_path(self) -> Path:
        return self.workdir / f"broker-{self.port}.log"

    def config_path(self) -> Path:
        token_file = self.workdir / "vault-token"
        token_file.write_text(self.vault_token)
        token_file.chmod(0o600)
        config = self.workdir / f"broker-{self.port}.yaml"
        if self.archive_dir is None:
            self.archive_dir = self.workdir / "audit-archive"
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        config.write_text(
            "\n".join(
                [
                    f"issuer: {self.issuer}",
                    f"scopes: {self.policy.path}",
                    f"admin_key_sha256: [{secret_sha256(self.policy.keys['admin'])}]",
                    "host: 127.0.0.1",
                    f"port: {self.port}",
                    "signer: vault",
                    f"vault_addr: {self.vault_addr}",
                    *([f"vault_token_file: {token_file}"] if self.vault_token else []),  # "": it logs in itself
                    f"transit_key: {self.transit_key}",
                    f"signing_alg: {self.signing_alg}",
                    "state: redis",
                    f"redis_url: {self.redis_url}",
                    f"redis_durability: {self.redis_durability}",
                    f"audit_archive_dir: {self.archive_dir}",
                    "backend_timeout: 800ms",
                    "key_refresh: 500ms",
                    "clock_skew: 1s",
                    *([f'redis_prefix: "{self.redis_prefix}"'] if self.redis_prefix else []),
                    "",
                ]
            )
        )
        return config

    def start(self, *, wait_ready: bool = True) -> BrokerProcess:
        if not self.port:
            self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.config_path()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "VAULT_", "BAO_"))}
        env.update(self.extra_env)
        broker_bin = shutil.which("broker", path=str(Path(sys.executable).parent)) or "broker"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [broker_bin, "serve", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self.wait_until(lambda: self.get("/healthz")[0] == 200, "broker /healthz")
        if wait_ready:
            self.wait_until(lambda: self.get("/readyz")[0] == 200, "broker /readyz")
        return self

    def wait_until(self, predicate: Any, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"broker exited ({self.proc.returncode}):\n{self.log_path.read_text()[-3000:]}")
            try:
                if predicate():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{what} not reached within {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        who: str | None = None,
        form: bool = False,
        timeout: float = 5.0,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        headers = dict(headers or {})
        data = None
        if who is not None:
            headers["Authorization"] = f"Bearer {self.policy.keys[who]}"
        if body is not None:
            if form:
                from urllib.parse import urlencode

                data = urlencode(body).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw, status, hdrs = r.read(), r.status, dict(r.headers)
        except urllib.error.HTTPError as e:
            raw, status, hdrs = e.read(), e.code, dict(e.headers)
        ctype = hdrs.get("content-type", "")
        return status, hdrs, json.loads(raw) if "json" in ctype and raw else raw.decode()

    def get(self, path: str, **kw: Any) -> tuple[int, dict[str, str], Any]:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, dict[str, str], Any]:
        return self.request("POST", path, body, **kw)

    def mint(
        self, task: str, scopes: list[Any], who: str = "reviewer", **extra: Any
    ) -> tuple[int, dict[str, str], Any]:
        return self.post("/v1/tokens", {"task": task, "scopes": scopes, **extra}, who=who)

    def token(self, task: str, scope: str = "widgets-read") -> str:
        """A token minted by the reviewer for ``task`` (asserting the mint succeeds)."""
        status, _, body = self.mint(task, [scope])
        assert status == 201, body
        token: str = body["tokens"][0]["token"]
        return token

    def introspected(self, token: str) -> bool | None:
        """Whether the git gateway's introspection says ``token`` is active; None while
        the broker answers 503 (a backend failing over)."""
        status, _, body = self.post("/v1/introspect", {"token": token}, who="git-gateway")
        if status == 503:
            return None
        assert status == 200, body
        return bool(body["active"])

    def sighup(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            self.proc = None
