"""A single-node OpenBao on Raft storage (how Vault runs in production), for the baseline.

``bao server -dev`` keeps everything in memory; production writes every token to Raft. The
bench measures OpenBao's token create and lookup-self on both, in the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.servers.processes import bao_binary, free_port


@dataclass
class RaftBao:
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    root_token: str = ""

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RaftBao:
        self.port = self.port or free_port()
        cluster = free_port()
        data = self.workdir / "raft"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "bao.hcl"
        config.write_text(
            f'storage "raft" {{\n  path = "{data}"\n  node_id = "bench"\n}}\n'
            f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n  tls_disable = true\n}}\n'
            f'api_addr = "{self.addr}"\ncluster_addr = "http://127.0.0.1:{cluster}"\n'
            "disable_mlock = true\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env["HOME"] = str(self.workdir)
        with (self.workdir / "bao.log").open("wb") as out:
            self.proc = subprocess.Popen(  # noqa: S603 -- the pinned bao binary
                [bao_binary(), "server", f"-config={config}"], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        self._wait(lambda: self._status() is not None, "raft bao listening")
        init = self._request("PUT", "/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1})
        self.root_token = init["root_token"]
        self._request("PUT", "/v1/sys/unseal", {"key": init["keys"][0]})
        self._wait(lambda: self._status() == 200, "raft bao active")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def _status(self) -> int | None:
        try:
            with urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=0.5) as r:  # noqa: S310 -- loopback
                return int(r.status)
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    def _request(self, method: str, path: str, body: object) -> dict[str, object]:
        headers = {"Content-Type": "application/json"}
        if self.root_token:
            headers["X-Vault-Token"] = self.root_token
        req = urllib.request.Request(  # noqa: S310 -- loopback
            self.addr + path, data=json.dumps(body).encode(), method=method, headers=headers
        )
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 -- loopback
            answer: dict[str, object] = json.loads(r.read() or b"{}")
            return answer

    def request(self, method: str, path: str, body: object) -> dict[str, object]:
        return self._request(method, path, body)

    @staticmethod
    def _wait(predicate: object, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not reached within {timeout}s")
            time.sleep(0.1)
