"""A real ``haproxy`` on a free loopback port, round-robin over N HTTP backends.

Its config is written to its own temporary directory; the process runs in the
foreground (``-db``) and is killed when its fixture ends. Every request goes to the next
backend in turn (``balance roundrobin``, one request per connection: ``http-server-close``),
and a backend whose ``/healthz`` fails is taken out until it answers again.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers.processes import _port_open, _wait, free_port


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if not found:
        raise RuntimeError("haproxy is missing: `make servers` installs it (apt-get install haproxy)")
    return found


def config_text(port: int, backends: list[str], check_path: str = "/healthz") -> str:
    """The haproxy config: ``backends`` are ``host:port`` pairs."""
    servers = [f"    server b{i} {addr} check inter 500ms fall 2 rise 1" for i, addr in enumerate(backends)]
    return "\n".join(
        [
            "global",
            "    maxconn 512",
            "defaults",
            "    mode http",
            "    option http-server-close",
            "    timeout connect 2s",
            "    timeout client 30s",
            "    timeout server 30s",
            "    retries 0",
            "frontend brokers",
            f"    bind 127.0.0.1:{port}",
            "    default_backend replicas",
            "backend replicas",
            "    balance roundrobin",
            f"    option httpchk GET {check_path}",
            *servers,
            "",
        ]
    )


@dataclass
class HaproxyServer:
    workdir: Path
    backends: list[str]  # "127.0.0.1:PORT", one per replica
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HaproxyServer:
        if not self.port:
            self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "haproxy.cfg"
        config.write_text(config_text(self.port, self.backends))
        subprocess.run([haproxy_binary(), "-c", "-q", "-f", str(config)], check=True, timeout=30)
        self.log = self.workdir / "haproxy.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [haproxy_binary(), "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        _wait(lambda: _port_open(self.port), f"haproxy on {self.port}")
        _wait(self._serving, "haproxy passing requests to a backend")
        return self

    def _serving(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1.0) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)
            self.proc = None
