"""``AuditArchiver``: moves the oldest audit events from the Redis stream to archive
segments, so Redis keeps a bounded tail of the chain (docs/settings.md, "Audit").

Every broker process runs one; exactly one of them archives at a time, the holder of a
lease in Redis (a random token under ``<stream>:archiver``, set only when absent, with a
``lease`` expiry, renewed before every segment and released on shutdown). Each pass:

1. hold the lease (acquire or renew); a process that does not hold it does nothing;
2. while the stream holds at least ``tail_events + segment_events`` events, read the
   ``segment_events`` oldest not yet archived, check that the first continues the last
   archived event (the archive must be the one every replica shares), and write them as
   the next segment (``ArchiveDir.write``: fsynced, linked under a name no one else can
   take). The data becomes visible only if the lease was renewed less than half its
   life ago once the data is on disk: a holder that lost it stops before the write;
3. trim the stream below the first event not archived (``XTRIM MINID``), in a script that
   trims only while the caller holds the lease. Nothing is trimmed that is not durably
   archived; a crash between write and trim is finished by the next holder.

So Redis holds at most about ``tail_events + segment_events`` events plus what arrives
during one pass. The lease and trim scripts are allowed to run when Redis is at
``maxmemory`` (``allow-oom``: they shrink memory, or set one small key), so a full Redis
can always be drained. If the archive cannot be written (full disk, a directory that is
not the shared one) nothing is trimmed and the error is logged on every pass: the tail
grows until Redis refuses writes and mints fail closed, never an event lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from broker.audit.chain import GENESIS
from broker.audit.segments import ArchiveDamaged, SegmentHeader, encode_line, id_after
from broker.backends.audit_archive import ArchiveDir, SegmentExists
from broker.errors import BackendUnavailable
from broker.verify import redis_keys as keys
from broker.verify.redis_options import async_redis

log = logging.getLogger("broker.audit")

T = TypeVar("T")

_PAGE = 1000  # events per XRANGE
_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_MAX_SEGMENTS_PER_PASS = 8  # then yield to the event loop (and renew) before more

# KEYS: lease. ARGV: token, lease (ms). 1: renewed; 2: acquired (someone else may have
# archived since this caller last held it); 0: another process holds it.
_HOLD = """#!lua flags=allow-oom
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 2
"""

# KEYS: lease, stream. ARGV: token, the first id to keep. Entries trimmed, or -1 (not held).
_TRIM = """#!lua flags=allow-oom
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
return redis.call('XTRIM', KEYS[2], 'MINID', ARGV[2])
"""

# KEYS: stream. ARGV: exclusive start ("(<id>" or "-"), count. The entries as Redis keeps them
# ({id, {field, value}}): read through a script so the client does not rebuild each as a dict.
_RANGE = """#!lua flags=no-writes,allow-oom
return redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
"""

# KEYS: lease. ARGV: token.
_RELEASE = """#!lua flags=allow-oom
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class AuditArchiver:
    def __init__(
        self,
        redis: Redis,
        archive: ArchiveDir,
        *,
        stream: str,
        tail_events: int,
        segment_events: int,
        interval: float = 1.0,
        lease: float = 10.0,
        timeout: float = 1.0,
    ) -> None:
        if tail_events < 0 or segment_events < 1 or not 0 < interval < lease:
            raise ValueError("tail_events >= 0, segment_events >= 1, 0 < interval < lease")
        self._redis = redis
        self._archive = archive
        self._stream = stream
        self._lease_key = keys.audit_archiver_lease(stream)
        self._tail = tail_events
        self._segment = segment_events
        self._interval = interval
        self._lease = lease
        self._timeout = timeout
        self._token = secrets.token_hex(16)
        self._held_at: float | None = None  # monotonic time the lease was last renewed (before the call)
        self._last: SegmentHeader | None = None  # the last archived segment, while holding the lease
        self._resumed = False
        self._hold = redis.register_script(_HOLD)
        self._trim = redis.register_script(_TRIM)
        self._release = redis.register_script(_RELEASE)
        self._range = redis.register_script(_RANGE)

    @classmethod
    def connect(cls, url: str, archive: ArchiveDir, *, timeout: float = 1.0, **options: Any) -> AuditArchiver:
        # bytes, not text: the events go to the file exactly as Redis holds them
        client = async_redis(url, timeout, decode_responses=False)
        return cls(client, archive, timeout=timeout, **options)

    @property
    def holds_lease(self) -> bool:
        return self._held_at is not None and time.monotonic() < self._held_at + self._lease / 2

    async def run(self) -> None:
        """Archive until cancelled, one pass every ``interval`` (at once again while
        behind); then release the lease and close."""
        try:
            await self._run()
        finally:
            await self.aclose()

    async def _run(self) -> None:
        failing: str | None = None
        while True:
            try:
                behind = await self.step()
            except (BackendUnavailable, ArchiveDamaged, OSError) as e:
                self._forget()
                why = e.reason if isinstance(e, BackendUnavailable | ArchiveDamaged) else type(e).__name__
                if why != failing:
                    log.error("audit archiver: not archiving: %s", why)  # noqa: TRY400 -- the reason, no traceback
                failing, behind = why, False
            except Exception:  # a bug must not end archiving for the life of the process
                self._forget()
                log.exception("audit archiver: unexpected error")
                failing, behind = "unexpected error", False
            else:
                if failing is not None:
                    log.info("audit archiver: archiving again")
                failing = None
            await asyncio.sleep(0 if behind else self._interval)

    async def step(self) -> bool:
        """One pass; True when there is more to archive at once."""
        if not await self._renew():
            self._forget()
            return False
        if not self._resumed:
            await asyncio.to_thread(self._archive.check)
            self._last = await asyncio.to_thread(self._archive.last_header)
            await asyncio.to_thread(self._archive.remove_temporary)
            if self._last is not None:
                await self._trim_archived()
            self._resumed = True
        for _ in range(_MAX_SEGMENTS_PER_PASS):
            length = await self._call(self._redis.xlen(self._stream))
            if length < self._tail + self._segment:
                return False
            if not await self._renew():
                self._forget()
                return False
            await self._archive_one()
        return True

    async def _archive_one(self) -> None:
        last = self._last
        after = "-" if last is None else f"({last.last_id}"
        entries: list[tuple[bytes, bytes]] = []
        while len(entries) < self._segment:
            count = min(_PAGE, self._segment - len(entries))
            page = await self._call(self._range(keys=[self._stream], args=[after, count]))
            entries.extend(_entry(item) for item in page or [])
            if len(page or []) < count:
                break
            after = f"({entries[-1][0].decode()}"
        if len(entries) < self._segment:
            self._forget()  # trimmed meanwhile by another holder: the next pass re-reads the archive
            return
        header = self._header(entries)
        lines = (encode_line(entry_id, raw) for entry_id, raw in entries)  # encoded in the writer's thread
        try:
            await asyncio.to_thread(self._archive.write, header, lines, still_mine=lambda: self.holds_lease)
        except SegmentExists:
            self._forget()
            raise BackendUnavailable(f"segment {header.seq} was written by another archiver") from None
        if not self.holds_lease:
            self._forget()
            return
        self._last = header
        await self._trim_archived()

    def _header(self, entries: list[tuple[bytes, bytes]]) -> SegmentHeader:
        """The next segment's header; ``ArchiveDamaged`` if the stream does not continue the
        archive (the archive is not the one the chain was archived to, or Redis lost events)."""
        last = self._last
        first, final = _event(entries[0]), _event(entries[-1])
        expected = GENESIS if last is None else last.last_hash
        if first.get("prev") != expected:
            where = "the archive is empty" if last is None else f"it ends at {last.name}, event {last.last_id}"
            raise ArchiveDamaged(
                str(self._archive.path),
                f"the Redis stream does not continue the archive ({where}); is this the directory all replicas share?",
            )
        last_hash = final.get("hash")
        if not isinstance(last_hash, str):
            raise ArchiveDamaged(entries[-1][0].decode(), "the stream's event has no hash")
        seq = 0 if last is None else last.seq + 1
        first_id, last_id = entries[0][0].decode(), entries[-1][0].decode()
        if not (_STREAM_ID.fullmatch(first_id) and _STREAM_ID.fullmatch(last_id)):
            raise BackendUnavailable("redis: unexpected reply")
        return SegmentHeader(seq, expected, first_id, last_id, len(entries), last_hash)

    async def _trim_archived(self) -> None:
        if self._last is None:
            return
        trimmed = await self._call(
            self._trim(keys=[self._lease_key, self._stream], args=[self._token, id_after(self._last.last_id)])
        )
        if trimmed == -1:
            self._forget()

    async def _renew(self) -> bool:
        """Hold the lease. Newly acquired, the archive is read afresh before anything else
        (another holder may have written segments meanwhile)."""
        started = time.monotonic()
        held = await self._call(self._hold(keys=[self._lease_key], args=[self._token, int(self._lease * 1000)]))
        if held == 2 and self._resumed:
            self._forget()
            return False  # the next pass resumes from the archive as it is now
        mine: bool = held in (1, 2)
        self._held_at = started if mine else None
        return mine

    def _forget(self) -> None:
        """Lost (or unsure of) the lease: read the archive afresh when next holding it."""
        self._held_at = None
        self._last = None
        self._resumed = False

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(awaitable, self._timeout + 0.25)
        except (RedisError, OSError) as e:
            raise BackendUnavailable(f"redis: {type(e).__name__}") from None

    async def aclose(self) -> None:
        """Release the lease (if held) so another process takes over at once; close."""
        with contextlib.suppress(BackendUnavailable):
            if self._held_at is not None:
                await self._call(self._release(keys=[self._lease_key], args=[self._token]))
        self._held_at = None
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()


def _entry(item: Any) -> tuple[bytes, bytes]:
    """``(id, the "e" field)`` of one raw stream entry; an entry that is not one field ``e``
    holding one line of JSON (not written by the broker) is archived as an empty object,
    which ``verify_chain`` then reports."""
    entry_id, fields = item
    if len(fields) == 2 and fields[0] == b"e" and fields[1][:1] == b"{" and b"\n" not in fields[1]:
        return entry_id, fields[1]
    return entry_id, b"{}"


def _event(entry: tuple[bytes, bytes]) -> dict[str, Any]:
    try:
        event = json.loads(entry[1])
    except ValueError:
        raise ArchiveDamaged(entry[0].decode(), "the stream's event is not JSON") from None
    if not isinstance(event, dict):
        raise ArchiveDamaged(entry[0].decode(), "the stream's event is not JSON")
    return event
