"""A small HTTP/1.1 client for the upstreams: keep-alive pools per origin, streaming both
ways, no redirects, nothing added but ``Host`` and the body framing.

Why not httpx: its connection pool costs O(connections) of socket polling per request
(``httpcore``'s ``_assign_requests_to_connections``), which made it the gateway's whole
cost at 64 connections (bench/gateway.py). Responses are parsed by ``httptools`` (the C
parser uvicorn uses); request heads are written from headers the ASGI server already
parsed (no CR or LF can be in them), with ``Content-Length`` when the agent sent one and
chunked framing otherwise.

Failures: a connection refused or reset, or a malformed answer, is ``UpstreamUnavailable``;
no connection or no bytes within the timeout, ``UpstreamTimeout``. A request without a
body that finds its pooled connection closed by the upstream is retried once on a new one.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import httptools

from broker.errors import UpstreamTimeout, UpstreamUnavailable

READ_SIZE: Final = 256 * 1024
MAX_IDLE_PER_ORIGIN: Final = 128
_NO_BODY_STATUS: Final = frozenset({204, 304})


@dataclass(eq=False)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    origin: tuple[str, str, int]

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class _Parser:
    """httptools callbacks into plain fields."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.chunks: deque[bytes] = deque()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(bytes(body))

    def on_message_complete(self) -> None:
        self.complete = True


@dataclass(eq=False)
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    _pool: UpstreamPool
    _conn: _Connection
    _parser: _Parser
    _http: httptools.HttpResponseParser
    _no_body: bool
    _keep_alive: bool
    _sent_body: bool
    _done: bool = field(default=False)

    async def body(self) -> AsyncIterator[bytes]:
        """The body, de-chunked, as it arrives."""
        state = self._parser
        while state.chunks:
            yield state.chunks.popleft()
        if self._no_body:
            return
        while not state.complete:
            data = await self._pool.read(self._conn)
            if not data:
                try:
                    self._http.feed_data(b"")  # an answer delimited by the close
                except httptools.HttpParserError:
                    raise UpstreamUnavailable("upstream closed mid-body") from None
                if not state.complete:
                    state.complete = not any(k in (b"content-length", b"transfer-encoding") for k, _ in self.headers)
                    if not state.complete:
                        raise UpstreamUnavailable("upstream closed mid-body")
                    self._conn.close()
            else:
                try:
                    self._http.feed_data(data)
                except httptools.HttpParserError:
                    raise UpstreamUnavailable("malformed upstream body") from None
            while state.chunks:
                yield state.chunks.popleft()
        self._done = True

    def close(self) -> None:
        """Back to the pool when the answer was read whole and may be kept alive, and the
        request carried no body: an upstream that answered without reading the whole body
        (an early 401, a GET handler that ignores it) would read the rest as the start of
        the next request on this connection, which carries the real credential."""
        complete = self._done or (self._no_body and self._parser.headers_done)
        reusable = complete and self._keep_alive and not self._no_body and not self._sent_body
        self._pool.release(self._conn, reusable=reusable)


class UpstreamPool:
    def __init__(self, *, timeout: float, connect_timeout: float) -> None:
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._tls = ssl.create_default_context()

    async def read(self, conn: _Connection) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):  # no task per read, as wait_for makes
                return await conn.reader.read(READ_SIZE)
        except TimeoutError:
            conn.close()
            raise UpstreamTimeout("upstream read timed out") from None
        except OSError as e:
            conn.close()
            raise UpstreamUnavailable(f"upstream read: {type(e).__name__}") from None

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=self._tls if scheme == "https" else None, limit=READ_SIZE * 4),
                self._connect_timeout,
            )
        except TimeoutError:
            raise UpstreamTimeout("upstream connect timed out") from None
        except OSError as e:
            raise UpstreamUnavailable(f"upstream connect: {type(e).__name__}") from None
        return _Connection(reader, writer, origin)

    def _pooled(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    def release(self, conn: _Connection, *, reusable: bool) -> None:
        if not reusable or not conn.usable():
            conn.close()
            return
        idle = self._idle.setdefault(conn.origin, deque())
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            conn.close()
            return
        idle.append(conn)

    async def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()

    async def send(
        self,
        method: str,
        url: str,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None,
    ) -> UpstreamResponse:
        parts = urlsplit(url)
        scheme = parts.scheme
        port = parts.port or (443 if scheme == "https" else 80)
        origin = (scheme, parts.hostname or "", port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]
        length = next((v for k, v in headers if k.lower() == b"content-length"), None)
        framing: list[tuple[bytes, bytes]] = []
        if body is not None and length is None:
            framing = [(b"transfer-encoding", b"chunked")]
        head = b"".join(
            [
                f"{method} {target} HTTP/1.1\r\nhost: {host}\r\n".encode("latin-1"),
                *(k + b": " + v + b"\r\n" for k, v in headers),
                *(k + b": " + v + b"\r\n" for k, v in framing),
                b"\r\n",
            ]
        )
        retry = body is None
        while True:
            conn = self._pooled(origin)
            fresh = conn is None
            if conn is None:
                conn = await self._connect(origin)
            try:
                return await self._exchange(conn, method, head, body, chunked=bool(framing))
            except _StaleConnection:
                conn.close()
                if fresh or not retry:
                    raise UpstreamUnavailable("upstream closed the connection") from None
                retry = False

    async def _exchange(
        self, conn: _Connection, method: str, head: bytes, body: AsyncIterator[bytes] | None, *, chunked: bool
    ) -> UpstreamResponse:
        try:
            conn.writer.write(head)
            if body is not None:
                async for chunk in body:
                    if not chunk:
                        continue
                    conn.writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                    await asyncio.wait_for(conn.writer.drain(), self._timeout)
                if chunked:
                    conn.writer.write(b"0\r\n\r\n")
            await asyncio.wait_for(conn.writer.drain(), self._timeout)
        except TimeoutError:
            conn.close()
            raise UpstreamTimeout("upstream write timed out") from None
        except OSError as e:
            conn.close()
            raise UpstreamUnavailable(f"upstream write: {type(e).__name__}") from None
        except BaseException:
            conn.close()  # the agent's side failed mid-body: this connection is spoilt
            raise
        state = _Parser()
        parser = httptools.HttpResponseParser(state)
        first = True
        while not state.headers_done:
            data = await self.read(conn)
            if not data:
                if first:
                    raise _StaleConnection
                conn.close()
                raise UpstreamUnavailable("upstream closed before its answer's head")
            first = False
            try:
                parser.feed_data(data)
            except httptools.HttpParserError:
                conn.close()
                raise UpstreamUnavailable("malformed upstream answer") from None
        status = parser.get_status_code()
        if 100 <= status < 200:  # interim answers (we never send Expect), upgrades: not served
            conn.close()
            raise UpstreamUnavailable("interim upstream answer")
        no_body = method == "HEAD" or status in _NO_BODY_STATUS
        keep_alive = keeps_alive(parser.get_http_version(), state.headers)
        return UpstreamResponse(status, state.headers, self, conn, state, parser, no_body, keep_alive, body is not None)


def keeps_alive(version: str, headers: list[tuple[bytes, bytes]]) -> bool:
    """May the connection carry another request? (llhttp's own answer is lost once a
    message is complete, which a small answer is as soon as its head is read.)"""
    tokens = {t.strip().lower() for k, v in headers if k == b"connection" for t in v.split(b",")}
    if b"close" in tokens:
        return False
    return version == "1.1" or b"keep-alive" in tokens


class _StaleConnection(Exception):
    pass
