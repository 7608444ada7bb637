"""The audit hash chain, pure: each event holds the SHA-256 of the one before it.

An event is sealed by adding ``prev`` (the previous event's ``hash``, or ``GENESIS`` for
the first) and ``hash`` (SHA-256 over the canonical JSON of everything but ``hash``).
Changing, removing, reordering or inserting one stored event breaks the chain at that
event or the next, and ``verify_chain`` names the first broken link.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.service.ports import StoredEvent

GENESIS = "0" * 64


def event_digest(body: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of an event's canonical JSON, ``hash`` excluded."""
    return hashlib.sha256(canonical({k: v for k, v in body.items() if k != "hash"})).hexdigest()


def canonical(event: Mapping[str, Any]) -> bytes:
    """Sorted keys, no spaces, ASCII: the same bytes however the event was stored."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def seal(event: Mapping[str, Any], prev: str) -> dict[str, Any]:
    """``event`` linked after the event whose hash is ``prev``."""
    return sealed_with_canonical(event, prev)[0]


def sealed_with_canonical(event: Mapping[str, Any], prev: str) -> tuple[dict[str, Any], bytes]:
    """``seal(event, prev)`` and its ``canonical`` bytes, encoding the event once.

    Canonical JSON lists the keys sorted, so the sealed event's bytes are the body's with
    ``"hash"`` spliced in where it sorts: the body is encoded as the part whose keys sort
    before ``hash`` and the part after, hashed joined, and stored joined around the hash.
    """
    if "prev" in event or "hash" in event:
        raise ValueError("an event is sealed once")
    body = {**event, "prev": prev}
    before = canonical({k: v for k, v in body.items() if k < "hash"})
    after = canonical({k: v for k, v in body.items() if k > "hash"})
    digest = hashlib.sha256(_joined(before, after)).hexdigest()
    return {**body, "hash": digest}, _joined(before, b'{"hash":"' + digest.encode() + b'"}', after)


def _joined(*objects: bytes) -> bytes:
    """Canonical objects with disjoint, ordered keys, as one canonical object."""
    return b"{" + b",".join(o[1:-1] for o in objects if o != b"{}") + b"}"


@dataclass(frozen=True, slots=True)
class ChainBreak:
    index: int  # 0-based position in the stream
    id: str  # the stream id of the first event that does not verify
    reason: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    count: int  # events checked
    head: str  # hash of the last good event
    broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def verify_chain(events: Iterable[StoredEvent], *, start: str = GENESIS) -> ChainReport:
    """Walk the stream oldest first; stop at the first event that breaks the chain."""
    prev = start
    count = 0
    for index, stored in enumerate(events):
        event = stored.event
        claimed = event.get("hash")
        if not isinstance(claimed, str) or not hmac.compare_digest(claimed, event_digest(event)):
            return ChainReport(count, prev, ChainBreak(index, stored.id, "the event's hash does not match its content"))
        if event.get("prev") != prev:
            return ChainReport(count, prev, ChainBreak(index, stored.id, "the event does not follow the one before it"))
        prev = claimed
        count += 1
    return ChainReport(count, prev, None)
