"""The audit hash chain, pure: each event holds the SHA-256 of the one before it.

An event is sealed by adding ``prev`` (the previous event's ``hash``, or ``GENESIS`` for
the first) and ``hash`` (SHA-256 over the canonical JSON of everything but ``hash``).
Changing, removing, reordering or inserting one stored event breaks the chain at that
event or the next, and ``verify_chain`` names the first broken link.

The hash chain alone is unkeyed: whoever can write the stream can re-seal it. So the
walk (``ChainWalk``, streaming: one event at a time, bounded memory) also checks the
signed checkpoints on the chain (``broker.audit.checkpoint``): each must verify against
the published long-term keys and find the event it anchors among the ``ANCHOR_WINDOW``
events before it; the stored head must name an event of the chain (a cut tail); and the
events after the last anchored one must be younger than the checkpoint interval plus
``CHECKPOINT_GRACE`` (else no checkpoint vouches for them: ``unanchored``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from broker.audit.checkpoint import ANCHOR_WINDOW, Checkpoint, CheckpointError, verify_checkpoint
from broker.audit.stored import StoredEvent
from broker.token.keys import KeyLookup

GENESIS = "0" * 64
CHECKPOINT: Final = "checkpoint"  # the event type of a signed checkpoint
#: how long past the checkpoint interval an event may wait for a checkpoint before the
#: walk calls it unanchored: a signing timeout, a retry, the replicas' clock skew
CHECKPOINT_GRACE: Final = 30.0


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
    index: int  # 0-based position in the stream (the event count, for the stored head)
    id: str  # the stream id of the first event that does not verify ("head": the head key)
    reason: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    count: int  # events checked
    head: str  # hash of the last good event
    broken: ChainBreak | None
    checkpoints: int = 0  # checkpoints verified
    anchored: int = 0  # how many events, from the start, a verified checkpoint vouches for
    # the first event no checkpoint vouched for within the interval (and grace)
    unanchored: ChainBreak | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None and self.unanchored is None


@dataclass(frozen=True, slots=True)
class CheckpointKeys:
    """What checkpoints are checked against: the published long-term keys, the issuer."""

    keys: KeyLookup
    issuer: str


@dataclass(frozen=True, slots=True)
class _Seen:
    """An event in the walk's window: where it is, when it says it was written."""

    index: int
    id: str
    ts: float
    checkpoint: bool


class ChainWalk:
    """The chain, checked one event at a time, oldest first (``feed``), then ``finish``.

    ``start``: the hash the first event follows (``GENESIS``, or where an archive left
    off). ``checkpoints``: check every checkpoint event against these keys (None: only
    the hash links, as ``verify_chain``). ``head``: the stored head, read *before* the
    walk; it must name an event of the walk (later events were appended since). Memory
    is bounded by ``window`` events, whatever the chain's length.
    """

    def __init__(
        self,
        *,
        start: str = GENESIS,
        checkpoints: CheckpointKeys | None = None,
        head: str | None = None,
        window: int = ANCHOR_WINDOW,
    ) -> None:
        self._start = start
        self._prev = start
        self._count = 0
        self._broken: ChainBreak | None = None
        self._keys = checkpoints
        self._head = head
        self._head_seen = head is None or head == start
        self._window = window
        self._recent: dict[str, _Seen] = {}  # hash -> the event, for the last `window` events
        self._order: deque[str] = deque()
        self._checkpoints = 0
        self._anchored = 0  # events [0, anchored) are vouched for by a checkpoint
        self._anchored_at = -math.inf  # the iat of the checkpoint that vouched the most
        self._dropped: _Seen | None = None  # the oldest unanchored event that left the window

    def feed(self, stored: StoredEvent) -> ChainBreak | None:
        """Check the next event; the first break is returned (and every later call too)."""
        if self._broken is not None:
            return self._broken
        index, event = self._count, stored.event
        claimed = event.get("hash")
        if not isinstance(claimed, str) or not hmac.compare_digest(claimed, event_digest(event)):
            return self._break(index, stored.id, "the event's hash does not match its content")
        if event.get("prev") != self._prev:
            return self._break(index, stored.id, "the event does not follow the one before it")
        is_checkpoint = event.get("type") == CHECKPOINT
        if is_checkpoint and self._keys is not None:
            refused = self._checkpoint(event, self._keys)
            if refused is not None:
                return self._break(index, stored.id, refused)
        self._remember(claimed, _Seen(index, stored.id, _timestamp(event.get("ts")), is_checkpoint))
        if claimed == self._head:
            self._head_seen = True
        self._prev = claimed
        self._count += 1
        return None

    def finish(self, *, now: float | None = None, interval: float | None = None) -> ChainReport:
        """The report. With ``now`` and ``interval`` (the checkpoint interval, seconds),
        events no checkpoint vouches for that are older than the interval plus the grace
        make it ``unanchored``: their tail may have been cut or rewritten (or the broker
        stopped, or could not sign, before anchoring them)."""
        broken = self._broken
        if broken is None and not self._head_seen:
            broken = ChainBreak(
                self._count,
                "head",
                "the stored head names no event of the chain: events were cut from its end",
            )
        unanchored = None
        if broken is None and self._keys is not None and now is not None and interval is not None:
            unanchored = self._unanchored(now, interval)
        return ChainReport(self._count, self._prev, broken, self._checkpoints, self._anchored, unanchored)

    # ------------------------------------------------------------------ internals

    def _break(self, index: int, event_id: str, reason: str) -> ChainBreak:
        self._broken = ChainBreak(index, event_id, reason)
        return self._broken

    def _checkpoint(self, event: Mapping[str, Any], keys: CheckpointKeys) -> str | None:
        """Why the checkpoint ``event`` is refused, or None (and the coverage moves)."""
        try:
            checkpoint: Checkpoint = verify_checkpoint(event.get("checkpoint"), keys.keys, issuer=keys.issuer)
        except CheckpointError as e:
            return f"the checkpoint does not verify ({e.code}: {e.reason})"
        anchored = self._recent.get(checkpoint.head)
        if anchored is None:
            return (
                f"the checkpoint anchors an event that is not among the {self._window} before it: "
                "an event was rewritten, removed or cut"
            )
        self._checkpoints += 1
        if anchored.index + 1 > self._anchored:
            self._anchored, self._anchored_at, self._dropped = anchored.index + 1, checkpoint.iat, None
        return None

    def _remember(self, digest: str, seen: _Seen) -> None:
        self._recent[digest] = seen
        self._order.append(digest)
        if len(self._order) > self._window:
            gone = self._recent.pop(self._order.popleft())
            if self._dropped is None and not gone.checkpoint and gone.index >= self._anchored:
                self._dropped = gone

    def _unanchored(self, now: float, interval: float) -> ChainBreak | None:
        first = self._dropped or next(
            (s for s in self._recent.values() if not s.checkpoint and s.index >= self._anchored), None
        )
        if first is None:
            return None
        # since when a checkpoint should have come: the signed time of the last one that
        # vouched, or the event's own (unsigned) time if later: an idle broker owes none
        since = max(self._anchored_at, first.ts)
        if now - since <= interval + CHECKPOINT_GRACE:
            return None
        return ChainBreak(
            first.index,
            first.id,
            f"no checkpoint vouches for this event or any after it, {now - since:.0f} s on "
            f"(checkpoints come every {interval:g} s): the tail may have been cut or rewritten, "
            "or the broker stopped or could not sign before anchoring it",
        )


def _timestamp(value: object) -> float:
    """An event's ``ts`` (ISO 8601, UTC) as epoch seconds; -inf if it is not one."""
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return -math.inf


def verify_chain(events: Iterable[StoredEvent], *, start: str = GENESIS) -> ChainReport:
    """Walk the stream oldest first; stop at the first event that breaks the hash chain.
    The hash links only: ``verify_audit`` also checks checkpoints and the stored head."""
    walk = ChainWalk(start=start)
    for stored in events:
        if walk.feed(stored) is not None:
            break
    return walk.finish()


def verify_audit(
    events: Iterable[StoredEvent],
    *,
    checkpoints: CheckpointKeys,
    head: str | None,
    now: float,
    interval: float,
    start: str = GENESIS,
) -> ChainReport:
    """``verify_chain``, and every checkpoint, the stored ``head`` (read before
    ``events``) and the unanchored tail: what ``broker audit verify`` reports."""
    walk = ChainWalk(start=start, checkpoints=checkpoints, head=head)
    for stored in events:
        if walk.feed(stored) is not None:
            break
    return walk.finish(now=now, interval=interval)
