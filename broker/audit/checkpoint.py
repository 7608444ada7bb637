"""Audit checkpoints: the long-term key's signed word that the chain held a given event.

The audit chain alone is unkeyed SHA-256: whoever can write the stream can edit an event
and re-seal every later one. A *checkpoint* anchors it to a key that lives in Vault. It
is a JWS of its own type, never a token and never an endorsement:

    header   {"alg": <the long-term key's alg>, "typ": "capbroker-audit-checkpoint+jwt",
              "kid": <the long-term key version, e.g. "capbroker-v3">}
    payload  {"iss": <the broker's issuer>, "iat": <epoch seconds>,
              "head": <the hash of the event it anchors>}

and it is stored on the chain itself as an event of type ``checkpoint`` (sealed like any
other, so archives carry it unchanged), in the JWS flattened JSON serialization (RFC 7515
7.2.2: ``{"protected", "payload", "signature"}``): the same signed bytes, but not the
compact ``eyJ...`` shape that log scanners and the audit redactor take for a token.

Its meaning: at ``iat`` the event whose hash is ``head`` was on the chain, and so (hash
links) was every event before it. A rewrite of any of those events changes ``head``'s
event, and the checkpoint no longer finds it.

The anchored event is the newest event the *writing process itself* appended, not the
head read back from Redis: the process remembers the hashes it wrote, so a tail cut (or
a rewrite) made in Redis before its next checkpoint leaves that checkpoint pointing at an
event that is gone. Several processes append concurrently, so a checkpoint lands a few
events after the event it anchors; ``ANCHOR_WINDOW`` bounds how far back it may point.

``CheckpointSchedule`` is the writer's decision core (no I/O, time passed in): a
checkpoint is due once ``every_events`` of this process's own events, or ``interval``
seconds since the oldest of them, wait unanchored; after a failed one (Vault down) the
next try waits ``retry`` seconds, so minting never waits for a checkpoint.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

from broker.token.endorsement import EndorsementError, is_session_kid, open_statement
from broker.token.keys import KeyLookup
from broker.token.strictjson import StrictJsonError, dumps_canonical, loads_object

__all__ = [
    "ANCHOR_WINDOW",
    "CHECKPOINT_TYP",
    "DEFAULT_EVERY_EVENTS",
    "DEFAULT_INTERVAL",
    "Checkpoint",
    "CheckpointError",
    "CheckpointSchedule",
    "Taken",
    "checkpoint_payload",
    "flattened",
    "verify_checkpoint",
]

CHECKPOINT_TYP: Final = "capbroker-audit-checkpoint+jwt"
#: the settings' defaults: a checkpoint per 1000 of a process's events, or a minute
DEFAULT_EVERY_EVENTS: Final = 1000
DEFAULT_INTERVAL: Final = 60.0
#: how many events before a checkpoint its anchored event may be (other processes'
#: events land between the anchored one and the checkpoint while it is being signed)
ANCHOR_WINDOW: Final = 100_000
MAX_CHECKPOINT_BYTES: Final = 1024
_FIELDS: Final = ("iss", "iat", "head")
_HASH: Final = re.compile(r"[0-9a-f]{64}")
_MAX_TIME: Final = 2**40


class CheckpointError(ValueError):
    """A checkpoint that is malformed, not ours, or not signed by a published long-term
    key. ``code``: ``malformed``, ``unknown_key``, ``bad_signature`` or ``not_ours``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A verified checkpoint: at ``iat``, the chain held the event whose hash is ``head``."""

    issuer: str
    iat: int
    head: str
    signer: str  # the long-term kid that signed it


def checkpoint_payload(issuer: str, iat: int, head: str) -> bytes:
    """The canonical payload anchoring the event whose hash is ``head``."""
    if not _HASH.fullmatch(head) or not 0 < iat < _MAX_TIME or not issuer:
        raise ValueError("a checkpoint names an issuer, a time and a SHA-256 hex hash")
    return dumps_canonical({"iss": issuer, "iat": iat, "head": head})


def flattened(compact: str) -> dict[str, str]:
    """A compact JWS in the flattened JSON serialization, as a checkpoint event holds it."""
    protected, payload, signature = compact.split(".")
    return {"protected": protected, "payload": payload, "signature": signature}


def verify_checkpoint(stored: object, keys: KeyLookup, *, issuer: str) -> Checkpoint:
    """The checkpoint a checkpoint event holds (``flattened``) if it is well formed, signed
    by one of ``keys`` (the published long-term keys; a session key never signs one) and
    for ``issuer``; otherwise ``CheckpointError``."""
    if not isinstance(stored, dict) or set(stored) != {"protected", "payload", "signature"}:
        raise CheckpointError("malformed", "not a flattened JWS")
    parts = (stored["protected"], stored["payload"], stored["signature"])
    if not all(isinstance(part, str) and "." not in part for part in parts):
        raise CheckpointError("malformed", "not a flattened JWS")
    compact = ".".join(parts)
    try:
        kid, payload_bytes = open_statement(compact, keys, typ=CHECKPOINT_TYP, max_bytes=MAX_CHECKPOINT_BYTES)
    except EndorsementError as e:
        code = "unknown_key" if e.code == "unknown_endorser" else e.code
        raise CheckpointError(code, str(e).split(": ", 1)[-1]) from None
    if is_session_kid(kid):
        raise CheckpointError("unknown_key", f"{kid!r} is a session key, not a long-term key")
    try:
        payload = loads_object(payload_bytes)
    except StrictJsonError:
        raise CheckpointError("malformed", "payload") from None
    if tuple(payload) != _FIELDS:
        raise CheckpointError("malformed", "payload fields")
    iss, iat, head = payload["iss"], payload["iat"], payload["head"]
    if not isinstance(iss, str) or type(iat) is not int or not 0 < iat < _MAX_TIME:
        raise CheckpointError("malformed", "payload values")
    if not isinstance(head, str) or not _HASH.fullmatch(head):
        raise CheckpointError("malformed", "head")
    if iss != issuer:
        raise CheckpointError("not_ours", "another issuer")
    return Checkpoint(iss, iat, head, kid)


@dataclass(frozen=True, slots=True)
class Taken:
    """What ``CheckpointSchedule.take`` handed out: the head to anchor, and the pending
    events (how many, since when) that go back if the checkpoint fails."""

    head: str
    count: int
    since: float


def _position(event_id: str) -> tuple[int, int]:
    """A stream id ``<ms>-<seq>`` as a sortable pair; anything else sorts first."""
    ms, _, seq = event_id.partition("-")
    return (int(ms), int(seq)) if ms.isdigit() and seq.isdigit() else (-1, -1)


class CheckpointSchedule:
    """When this process writes its next checkpoint, and which of its events it anchors.

    ``appended`` is told of every event this process stored (never of its checkpoints:
    they do not call for another). A checkpoint is due when ``every_events`` of them, or
    ``interval`` seconds since the oldest of them, wait unanchored. ``take`` hands out the
    newest (by stream position) as the head to anchor; ``failed`` puts the pending events
    back and holds the next try off for ``retry`` seconds. ``now``: monotonic seconds.
    """

    def __init__(self, *, every_events: int, interval: float, retry: float = 5.0) -> None:
        if every_events < 1 or not interval > 0 or not retry > 0:
            raise ValueError("every_events >= 1, interval and retry > 0")
        self.every_events = every_events
        self.interval = interval
        self.retry = min(retry, interval)
        self._newest: tuple[tuple[int, int], str] | None = None  # (position, hash) of the newest own event
        self._pending = 0  # own events since the last checkpoint was taken
        self._since: float | None = None  # when the oldest of them was appended
        self._retry_at = -math.inf

    def appended(self, event_id: str, digest: str, now: float) -> None:
        position = _position(event_id)
        if self._newest is None or position >= self._newest[0]:
            self._newest = (position, digest)
        self._pending += 1
        if self._since is None:
            self._since = now

    @property
    def pending(self) -> int:
        return self._pending

    def wait(self, now: float) -> float | None:
        """Seconds until a checkpoint is due (0: now); None while no event waits."""
        if self._since is None:
            return None
        due_at = -math.inf if self._pending >= self.every_events else self._since + self.interval
        return max(0.0, max(due_at, self._retry_at) - now)

    def due(self, now: float) -> bool:
        wait = self.wait(now)
        return wait is not None and wait == 0

    def take(self) -> Taken | None:
        """The head to anchor now (the newest own event), with what ``failed`` needs to put
        back; None when no own event waits. Resets the count: events stored meanwhile
        count toward the next checkpoint."""
        if self._newest is None or self._since is None:
            return None
        taken = Taken(self._newest[1], self._pending, self._since)
        self._pending, self._since = 0, None
        return taken

    def failed(self, taken: Taken, now: float) -> None:
        """The checkpoint for ``taken`` was not stored: its events wait again, and the next
        try is not before ``now + retry``."""
        self._pending += taken.count
        self._since = taken.since if self._since is None else min(taken.since, self._since)
        self._retry_at = now + self.retry
