"""The ``aws-chunked`` body of a signed streaming upload, de-chunked as it passes. Pure.

A client that signs each chunk (``x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD``,
with or without ``-TRAILER``) sends::

    SIZE-IN-HEX;chunk-signature=SIG\\r\\n DATA \\r\\n ... 0;chunk-signature=SIG\\r\\n [TRAILERS] \\r\\n

The chunk signatures are the client's, made with keys the gateway ignores, so they are
dropped with the framing: the gateway forwards the plain bytes with the decoded length
(``x-amz-decoded-content-length``) and signs them ``UNSIGNED-PAYLOAD``. A chunk head
longer than ``MAX_LINE``, a size that is not hex, data past the final chunk or a total
other than the announced length is ``InvalidRequest``: the upstream never gets a body
shorter or longer than the length it was told.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from broker.errors import InvalidRequest

#: the ``x-amz-content-sha256`` values whose bodies are de-chunked here
SIGNED_STREAMING: Final = frozenset(
    {"STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"}
)
#: forwarded as they are (the framing is the upstream's to read; nothing in it is signed)
UNSIGNED_STREAMING: Final = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
MAX_LINE: Final = 4096
MAX_TRAILERS: Final = 16 * 1024
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")

_HEAD, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkDecoder:
    """Feed it the body as it arrives; it returns the data bytes each piece held."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.total = 0
        self._state = _HEAD
        self._buffer = b""
        self._left = 0
        self._trailer_bytes = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self._state == _DATA:
                take = min(self._left, len(view) - pos)
                out.append(bytes(view[pos : pos + take]))
                pos += take
                self._left -= take
                self.total += take
                if self.total > self.expected:
                    raise InvalidRequest("aws-chunked body longer than x-amz-decoded-content-length")
                if self._left == 0:
                    self._state = _DATA_END
                continue
            if self._state == _DONE:
                raise InvalidRequest("data after the final aws-chunked chunk")
            line, pos = self._line(view, pos)
            if line is None:
                continue
            self._on_line(line)
        return out

    def _line(self, view: memoryview, pos: int) -> tuple[bytes | None, int]:
        """One CRLF-ended line, or None with everything buffered when it is not whole yet."""
        end = bytes(view[pos : pos + MAX_LINE + 2]).find(b"\n")
        if end < 0:
            self._buffer += bytes(view[pos:])
            if len(self._buffer) > MAX_LINE + 1:
                raise InvalidRequest("aws-chunked line too long")
            return None, len(view)
        line = self._buffer + bytes(view[pos : pos + end + 1])
        self._buffer = b""
        if len(line) > MAX_LINE + 2 or not line.endswith(b"\r\n"):
            raise InvalidRequest("aws-chunked line not ended by CRLF")
        return line[:-2], pos + end + 1

    def _on_line(self, line: bytes) -> None:
        if self._state == _DATA_END:
            if line:
                raise InvalidRequest("aws-chunked data longer than its chunk size")
            self._state = _HEAD
        elif self._state == _HEAD:
            size = line.partition(b";")[0]
            if not size or len(size) > 16 or not set(size) <= _HEX:
                raise InvalidRequest("aws-chunked chunk size is not hex")
            self._left = int(size, 16)
            self._state = _DATA if self._left else _TRAILER
        else:  # trailers (a checksum, the trailer signature) end with an empty line
            self._trailer_bytes += len(line) + 2
            if self._trailer_bytes > MAX_TRAILERS:
                raise InvalidRequest("aws-chunked trailers too long")
            if not line:
                if self.total != self.expected:
                    raise InvalidRequest("aws-chunked body shorter than x-amz-decoded-content-length")
                self._state = _DONE


async def dechunked(body: AsyncIterator[bytes], expected: int) -> AsyncIterator[bytes]:
    """The data of an ``aws-chunked`` body; ``InvalidRequest`` if the framing is broken or
    the body ends before its final chunk."""
    decoder = ChunkDecoder(expected)
    async for piece in body:
        for data in decoder.feed(piece):
            if data:
                yield data
    if not decoder.done:
        raise InvalidRequest("aws-chunked body ended before its final chunk")


def decoded_length(value: str | None) -> int:
    """``x-amz-decoded-content-length``: required with a signed streaming body."""
    if value is None or not value.isdigit() or len(value) > 15:
        raise InvalidRequest("a signed aws-chunked body needs x-amz-decoded-content-length")
    return int(value)
