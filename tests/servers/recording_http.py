"""A tiny HTTP server on loopback that records each request's method, path and headers.

It stands where the gateway would (no gateway needed to prove what an agent-side tool
sends): ``challenge=True`` answers requests without ``Authorization`` with 401 and
``WWW-Authenticate: Basic`` (what makes git ask its credential helper); everything else
gets 404, so git stops after the first authenticated request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    authorizations: list[str] = field(default_factory=list)


@dataclass
class Recorder:
    url: str
    requests: list[Seen] = field(default_factory=list)


@contextmanager
def recording_server(*, challenge: bool = False) -> Iterator[Recorder]:
    recorder = Recorder("")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            authorizations = self.headers.get_all("Authorization") or []
            recorder.requests.append(
                Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, authorizations)
            )
            status = 401 if challenge and not authorizations else 404
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="gateway"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _answer  # noqa: N815 -- the names http.server dispatches to

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- the base class's name
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
