"""uvicorn's httptools protocol with a bounded request head, for the gateway.

httptools keeps a header it has not finished reading in memory, and uvicorn sets no limit
on a head's size or on how long it may take to arrive: one connection sending a 200 MB
header grew the gateway by 360 MB, and 2,000 connections dribbling headers were all held.
Here a request head (request line and headers) larger than ``MAX_HEAD_BYTES`` is answered
431 and the connection closed, and a head not complete ``HEAD_TIMEOUT`` seconds after its
first byte gets the connection closed. Bodies are not affected (they stream).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES: Final = 64 << 10
HEAD_TIMEOUT: Final = 10.0

_PROBLEM: Final = json.dumps(
    {
        "type": "about:blank",
        "title": "Request Header Fields Too Large",
        "status": 431,
        "code": "invalid_request",
        "detail": f"the request line and headers are over {MAX_HEAD_BYTES} bytes",
    }
).encode()
_TOO_LARGE: Final = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/problem+json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (len(_PROBLEM), _PROBLEM)
)


class BoundedHeadProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with ``MAX_HEAD_BYTES`` and ``HEAD_TIMEOUT`` on each request head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # of the head being read; 0 between requests
        self._in_body = False
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        reading_head = not self._in_body
        if reading_head and self._head_bytes == 0 and self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_too_slow)
        if reading_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if not self._in_body and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._cancel_head_timer()
            self.transport.write(_TOO_LARGE)
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._head_bytes = 0
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self._in_body and not self.transport.is_closing():
            self.transport.close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
