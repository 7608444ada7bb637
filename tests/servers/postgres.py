"""A real PostgreSQL cluster of its own (``initdb`` + ``pg_ctl``) on a free loopback port.

Debian's ``postgresql`` package (``tools/ensure-servers.sh`` installs it) puts the binaries
in ``/usr/lib/postgresql/<version>/bin``. PostgreSQL refuses to run as root: as root, the
cluster is made and run as the package's ``postgres`` user, in a directory it owns.
Password logins over TCP (scram-sha-256) for everyone; the superuser is ``ADMIN_USER``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.servers.processes import _port_open, _wait, free_port

ADMIN_USER = "capbroker_admin"
ADMIN_PASSWORD = "admin-password-for-tests"


def pg_binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is missing: `make servers` installs it (apt-get install postgresql)")
    return found


@dataclass
class PostgresServer:
    port: int = 0
    workdir: Path | None = None

    @property
    def admin_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={ADMIN_USER} password={ADMIN_PASSWORD} dbname=postgres"

    def dsn(self, user: str, password: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={user} password={password} dbname=postgres connect_timeout=5"

    def _as_owner(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)

    def start(self) -> PostgresServer:
        self.port = self.port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="capbroker-pg-"))
        data, pwfile = self.workdir / "data", self.workdir / "pw"
        pwfile.write_text(ADMIN_PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        subprocess.run(
            self._as_owner(
                pg_binary("initdb"), "-D", str(data), "-U", ADMIN_USER, f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "--no-sync", "-E", "UTF8",
            ),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.workdir} -c fsync=off"
        )
        log = str(self.workdir / "log")
        subprocess.run(
            self._as_owner(pg_binary("pg_ctl"), "-D", str(data), "-l", log, "-o", options, "start"),
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        _wait(lambda: _port_open(self.port), f"postgres on {self.port}", timeout=30)
        return self

    def stop(self) -> None:
        if self.workdir is None:
            return
        subprocess.run(
            self._as_owner(pg_binary("pg_ctl"), "-D", str(self.workdir / "data"), "-m", "immediate", "stop"),
            check=False, capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None
