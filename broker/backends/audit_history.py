"""The whole audit chain, oldest first: the archive's segments, then the Redis tail.

``audit_history`` is a generator (``broker audit verify`` and ``broker audit export``
stream it; nothing holds more than one page of events). Segments must follow each other
(``check_continues``); the tail starts after the last archived event. The archiver may
write a segment and trim the stream while this reads: after each page of the tail, if the
next segment has appeared, the page is dropped and that segment is read instead (its
events after the ones already given), since trimming only follows a durable segment.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from broker.audit.chain import GENESIS
from broker.audit.segments import SegmentHeader, check_continues, stream_id
from broker.audit.stored import StoredEvent
from broker.backends.audit_archive import ArchiveDir
from broker.errors import BackendUnavailable
from broker.verify.redis_options import sync_redis

_PAGE = 1000

#: a page of the tail: at most ``count`` events with ids after ``after`` (None: from the start)
TailPage = Callable[[str | None, int], list[StoredEvent]]


@dataclass
class RedisTail:
    """Pages of the Redis stream, with a synchronous client (the operator commands)."""

    client: Redis
    stream: str

    @classmethod
    def connect(cls, url: str, stream: str, *, timeout: float = 5.0) -> RedisTail:
        return cls(sync_redis(url, timeout), stream)

    def __call__(self, after: str | None, count: int) -> list[StoredEvent]:
        try:
            page = self.client.xrange(self.stream, min="-" if after is None else f"({after}", max="+", count=count)
        except (RedisError, OSError) as e:
            raise BackendUnavailable(f"redis: {type(e).__name__}") from None
        return [StoredEvent(str(i), _decode_event((fields or {}).get("e"))) for i, fields in page or []]

    def close(self) -> None:
        self.client.close()


def audit_history(
    archive: ArchiveDir | None, tail: TailPage | None, *, since: str | None = None
) -> Iterator[StoredEvent]:
    """Every event, archive then tail. ``since`` (a stream id): segments that end before it
    are checked by their headers only, and events before it are not given."""
    last: SegmentHeader | None = None
    position: str | None = None  # the id of the last event given (or skipped as before ``since``)
    floor = stream_id(since) if since is not None else None

    def read(archive: ArchiveDir, seq: int) -> Iterator[StoredEvent]:
        nonlocal last, position
        header = archive.header(seq)
        check_continues(last, header, genesis=GENESIS)
        if floor is None or stream_id(header.last_id) >= floor:
            _, events = archive.read(seq)
            for stored in events:
                if (position is None or stream_id(stored.id) > stream_id(position)) and (
                    floor is None or stream_id(stored.id) >= floor
                ):
                    yield stored
        last = header
        if position is None or stream_id(header.last_id) > stream_id(position):
            position = header.last_id

    if archive is not None:
        archive.check()
        for seq in archive.seqs():
            yield from read(archive, seq)
    if tail is None:
        return
    while True:
        page = tail(position, _PAGE)
        if archive is not None and archive.exists(0 if last is None else last.seq + 1):
            yield from read(archive, 0 if last is None else last.seq + 1)  # archived (and trimmed) meanwhile
            continue
        for stored in page:
            if floor is None or stream_id(stored.id) >= floor:
                yield stored
        if len(page) < _PAGE:
            return
        position = page[-1].id


def _decode_event(raw: object) -> Mapping[str, Any]:
    """As ``RedisState.audit_events``: an entry that is not a JSON object is an empty event,
    which ``verify_chain`` reports."""
    try:
        event = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}
