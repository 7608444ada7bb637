"""Read the ref updates of a receive-pack body before any byte of it is forwarded.

``read_push_commands`` takes body chunks from the agent until the commands (``pktline``)
are complete, decompressing for inspection only when the body is gzip-encoded (what is
forwarded is exactly what the agent sent). It returns the chunks read (forwarded first,
unchanged), the refs named, and whether the body ended.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from broker.errors import CapabilityDenied, InvalidRequest
from broker.gateway.pktline import MAX_COMMANDS_BYTES, PktLineError, push_commands

NextChunk = Callable[[], Awaitable[tuple[bytes, bool]]]  # (chunk, more to come)


@dataclass(frozen=True, slots=True)
class ReadCommands:
    chunks: tuple[bytes, ...]
    refs: tuple[str, ...]
    more: bool


async def read_push_commands(next_chunk: NextChunk, encoding: str) -> ReadCommands:
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise InvalidRequest("receive-pack body in an unsupported Content-Encoding")
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding in ("gzip", "x-gzip") else None
    chunks: list[bytes] = []
    plain = b""
    more = True
    while True:
        try:
            found = push_commands(plain)
        except PktLineError as e:
            raise CapabilityDenied(f"receive-pack commands unreadable: {e}") from None
        if found is not None:
            return ReadCommands(tuple(chunks), found.refs, more)
        if not more:
            raise CapabilityDenied("receive-pack body ended before its commands did")
        chunk, more = await next_chunk()
        chunks.append(chunk)
        if inflate is None:
            plain += chunk
        else:
            try:
                plain += inflate.decompress(chunk, MAX_COMMANDS_BYTES + 1 - len(plain))
            except zlib.error:
                raise InvalidRequest("receive-pack body is not valid gzip") from None
