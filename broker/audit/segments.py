"""Archive segments of the audit chain, pure: their names, header and lines, and the checks
that a segment is whole and continues the one before it.

A segment is one file, ``segment-<seq>.jsonl`` (``seq`` from 0, twelve digits), written
once and never changed. Its first line is the header::

    {"capbroker_audit_segment":1,"seq":7,"prev":"<hash it continues>","first_id":"<stream id>",
     "last_id":"<stream id>","count":10000,"last_hash":"<hash of its last event>"}

and each further line is one event exactly as the Redis stream stored it (its canonical
JSON, so its hash still verifies) with its stream id: ``{"id":"<stream id>","event":{...}}``.
A torn or cut file (fewer lines than ``count``, a partial line, a last event that is not
``last_id``/``last_hash``) and a segment that does not continue the one before it
(``seq`` gap, ``prev`` not the previous ``last_hash``, ids going back) are
``ArchiveDamaged``; whether each event's hash and ``prev`` hold is ``verify_chain``'s part.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from broker.audit.stored import StoredEvent

MAGIC = "capbroker_audit_segment"
VERSION = 1
_NAME = re.compile(r"segment-(\d{12})\.jsonl")
_STREAM_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
_HASH = re.compile(r"[0-9a-f]{64}")


class ArchiveDamaged(Exception):
    """The archive is not whole: ``where`` names the segment (and line), ``reason`` what is wrong."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    seq: int
    prev: str  # the hash of the event before this segment's first (GENESIS for the first)
    first_id: str
    last_id: str
    count: int
    last_hash: str

    @property
    def name(self) -> str:
        return segment_name(self.seq)


def segment_name(seq: int) -> str:
    return f"segment-{seq:012d}.jsonl"


def segment_seq(name: str) -> int | None:
    """The ``seq`` of a segment's file name; None for any other name (temporary files)."""
    match = _NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def stream_id(text: str) -> tuple[int, int]:
    """A Redis stream id ``<ms>-<seq>`` as a pair that orders like the stream."""
    match = _STREAM_ID.fullmatch(text)
    if match is None:
        raise ValueError(f"not a stream id: {text[:40]!r}")
    return int(match.group(1)), int(match.group(2))


def id_after(text: str) -> str:
    """The smallest stream id after ``text`` (for ``XTRIM MINID`` and exclusive ranges)."""
    ms, seq = stream_id(text)
    return f"{ms}-{seq + 1}"


def encode_header(header: SegmentHeader) -> bytes:
    return json.dumps({MAGIC: VERSION, **asdict(header)}, separators=(",", ":")).encode() + b"\n"


def encode_line(entry_id: bytes, stored: bytes) -> bytes:
    """One event line: ``stored`` (the stream's bytes for the event) spliced in unchanged.
    ``entry_id`` is a stream id as Redis gave it (digits, ``-``, digits)."""
    return b'{"id":"' + entry_id + b'","event":' + stored + b"}\n"


def parse_header(line: bytes, where: str) -> SegmentHeader:
    try:
        raw = json.loads(line)
    except ValueError:
        raise ArchiveDamaged(where, "the header is not JSON (a torn segment?)") from None
    if not isinstance(raw, dict) or raw.get(MAGIC) != VERSION:
        raise ArchiveDamaged(where, "no segment header")
    try:
        header = SegmentHeader(**{k: v for k, v in raw.items() if k != MAGIC})
    except TypeError:
        raise ArchiveDamaged(where, "the header's fields are wrong") from None
    ok = (
        isinstance(header.seq, int)
        and isinstance(header.count, int)
        and header.count > 0
        and all(isinstance(h, str) and _HASH.fullmatch(h) for h in (header.prev, header.last_hash))
        and all(isinstance(i, str) and _STREAM_ID.fullmatch(i) for i in (header.first_id, header.last_id))
    )
    if not ok or stream_id(header.first_id) > stream_id(header.last_id):
        raise ArchiveDamaged(where, "the header's fields are wrong")
    return header


def check_continues(before: SegmentHeader | None, header: SegmentHeader, *, genesis: str) -> None:
    """``header`` must be the segment right after ``before`` (the first one: seq 0 on GENESIS)."""
    where = header.name
    expected_seq = 0 if before is None else before.seq + 1
    if header.seq != expected_seq:
        raise ArchiveDamaged(where, f"segment {expected_seq} is missing (found segment {header.seq} next)")
    expected_prev = genesis if before is None else before.last_hash
    if header.prev != expected_prev:
        raise ArchiveDamaged(where, f"does not continue the previous segment (prev {header.prev}, not {expected_prev})")
    if before is not None and stream_id(header.first_id) <= stream_id(before.last_id):
        raise ArchiveDamaged(where, "its stream ids do not follow the previous segment's")


def segment_events(header: SegmentHeader, lines: Iterable[bytes]) -> Iterator[StoredEvent]:
    """The events of the segment whose header is ``header``, checked to be whole as they
    are read: every line an event, ids increasing from ``first_id`` to ``last_id``, exactly
    ``count`` of them, the first continuing ``prev`` and the last ending on ``last_hash``."""
    count = 0
    last: StoredEvent | None = None
    for number, line in enumerate(lines, start=2):
        where = f"{header.name} line {number}"
        stored = _parse_line(line, where)
        count += 1
        if count > header.count:
            raise ArchiveDamaged(where, f"more events than the header's {header.count}")
        if last is None:
            if stored.id != header.first_id:
                raise ArchiveDamaged(where, "the first event is not the header's first_id")
            if stored.event.get("prev") != header.prev:
                raise ArchiveDamaged(where, "the first event does not continue the header's prev")
        elif stream_id(stored.id) <= stream_id(last.id):
            raise ArchiveDamaged(where, "stream ids go back")
        last = stored
        yield stored
    if last is None or count != header.count:
        raise ArchiveDamaged(header.name, f"holds {count} of its {header.count} events (a cut or torn segment)")
    if last.id != header.last_id or last.event.get("hash") != header.last_hash:
        raise ArchiveDamaged(header.name, "the last event is not the header's last_id/last_hash")


def _parse_line(line: bytes, where: str) -> StoredEvent:
    if not line.endswith(b"\n"):
        raise ArchiveDamaged(where, "a partial line (a torn segment)")
    try:
        raw: Any = json.loads(line)
    except ValueError:
        raise ArchiveDamaged(where, "not a JSON line (a torn segment?)") from None
    if not isinstance(raw, dict) or set(raw) != {"id", "event"} or not isinstance(raw["event"], dict):
        raise ArchiveDamaged(where, "not an event line")
    entry_id = raw["id"]
    if not isinstance(entry_id, str) or not _STREAM_ID.fullmatch(entry_id):
        raise ArchiveDamaged(where, "not an event line")
    return StoredEvent(entry_id, raw["event"])
