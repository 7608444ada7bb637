"""A real git smart-HTTP server: ``git http-backend`` behind a small CGI runner.

Run as its own process (``python -m tests.servers.git_upstream --port P --root DIR
--secret-file F --log L``). Every request must carry the upstream credential (HTTP Basic
``x-access-token:<secret>`` or ``Bearer <secret>``), else 401 and git is not run. Every
request is logged, one JSON line: method, path, query, whether it was authorised, and
how many body bytes arrived. Request bodies are streamed to git-http-backend (chunked
bodies are de-chunked here), and its output streamed back.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

BACKEND = "/usr/lib/git-core/git-http-backend"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root: Path
    secret: str
    log_file: Path
    lock = threading.Lock()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- the base class's name
        return  # our own JSON log only

    def _log(self, **fields: object) -> None:
        with self.lock, self.log_file.open("a") as f:
            f.write(json.dumps(fields) + "\n")

    def _authorised(self) -> bool:
        value = self.headers.get("Authorization", "")
        scheme, _, rest = value.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(rest).decode().partition(":")
            except ValueError:
                return False
            return user == "x-access-token" and hmac.compare_digest(password, self.secret)
        if scheme.lower() == "bearer":
            return hmac.compare_digest(rest, self.secret)
        return False

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _copy_body(self, sink: IO[bytes]) -> int:
        total = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                sink.write(self.rfile.read(size))
                total += size
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", "0") or 0)
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                sink.write(chunk)
                total += len(chunk)
                left -= len(chunk)
        return total

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        if not self._authorised():
            self._log(method=self.command, path=path, query=query, authorised=False, body_bytes=0)
            body = b"credential required\n"
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        parts = path.split("/")
        if len(parts) > 3 and not parts[2].endswith(".git") and (self.root / parts[1] / f"{parts[2]}.git").is_dir():
            parts[2] += ".git"  # like GitHub: /acme/widgets/... is /acme/widgets.git/...
            path = "/".join(parts)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REMOTE_USER": "agent",
            "REMOTE_ADDR": "127.0.0.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        proc = subprocess.Popen([BACKEND], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert proc.stdin is not None
        assert proc.stdout is not None
        received = 0
        if self.command == "POST":
            received = self._copy_body(proc.stdin)
        proc.stdin.close()
        self._log(method=self.command, path=path, query=query, authorised=True, body_bytes=received)
        status = 200
        headers: list[tuple[str, str]] = []
        while True:
            raw = proc.stdout.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").rstrip("\r\n").partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            else:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while True:
            chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else proc.stdout.read(65536)
            if not chunk:
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")
        proc.wait()


def make_repo(root: Path, owner: str, name: str, work: Path) -> Path:
    """A bare repository ``root/owner/name.git`` with one commit on ``main``."""
    bare = root / owner / f"{name}.git"
    bare.parent.mkdir(parents=True, exist_ok=True)
    git = shutil.which("git") or "git"
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(work)}
    subprocess.run([git, "init", "-q", "--bare", "-b", "main", str(bare)], check=True, env=env)
    src = work / f"src-{owner}-{name}"
    subprocess.run([git, "init", "-q", "-b", "main", str(src)], check=True, env=env)
    (src / "README.md").write_text(f"{owner}/{name}\n")
    for args in (
        ["add", "README.md"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first"],
        ["push", "-q", str(bare), "main"],
    ):
        subprocess.run([git, "-C", str(src), *args], check=True, env=env)
    return bare


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    Handler.root = Path(args.root)
    Handler.secret = Path(args.secret_file).read_text().strip()
    Handler.log_file = Path(args.log)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
