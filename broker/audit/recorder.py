"""``AuditRecorder``: one event per decision, sealed into the chain, echoed to stdout.

The event is first stored (the state store seals it onto the hash chain), then written
as one JSON line to the output. If storing fails the caller gets ``BackendUnavailable``
and must not hand out what the event describes: no token is ever unaudited.

Events carry ids, names and reasons, never a token, a client secret or a Vault token:
reasons may quote what a caller sent, so anything shaped like one is redacted first.

Requests with no valid credential at all (``unauthenticated``) are written to the output
only, marked ``"stored": false``: a stranger must not be able to grow the Redis stream
(and so evict revocations or fill memory) by sending garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec

from broker.service.ports import StateStore, StoredEvent

_encode = msgspec.json.Encoder().encode  # the echo only; the chain's bytes are broker.audit.chain's

EVENT_TYPES = frozenset({"mint", "exchange", "deny", "revoke", "introspect", "admin"})

_SECRET_SHAPES = re.compile(
    r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"  # a compact JWS (any token)
    r"|cbk_[A-Za-z0-9_-]{8,}"  # a client secret, whole or in part
    r"|\b(?:hvs|hvb|s|b)\.[A-Za-z0-9]{20,}"  # a Vault/OpenBao token
)


def redact(value: Any) -> Any:
    """``value`` with every string's token-, secret- or Vault-token-shaped part replaced."""
    if isinstance(value, str):
        # every shape above holds a "." or "cbk_": a string with neither is left as it is
        if "." not in value and "cbk_" not in value:
            return value
        return _SECRET_SHAPES.sub("[redacted]", value)
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    return value


class AuditRecorder:
    def __init__(self, state: StateStore, *, out: TextIO | None = None, clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._out = out if out is not None else sys.stdout
        self._clock = clock
        self._flush_pending = False
        # told of every event stored by ``record`` (``broker.audit.checkpointer``)
        self.on_stored: Callable[[StoredEvent], None] | None = None

    async def record(
        self, event_type: str, *, request_id: str, store: bool = True, **fields: Any
    ) -> StoredEvent | None:
        """Store the event on the chain and echo it; ``None`` when it is only echoed: an
        unauthenticated request, or one whose caller is not known yet (``store=False``)."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown audit event type {event_type!r}")
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(self._clock(), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "type": event_type,
            "request_id": request_id,
        }
        event.update({k: redact(v) for k, v in fields.items() if v is not None})
        if not store or event.get("code") == "unauthenticated":
            self._write({**event, "stored": False})
            return None
        stored = await self._state.append_audit(event)
        self._write({"audit_id": stored.id, **stored.event})
        if self.on_stored is not None:
            self.on_stored(stored)
        return stored

    async def record_checkpoint(self, statement: Mapping[str, str], *, request_id: str) -> StoredEvent:
        """Store a signed checkpoint (``broker.audit.checkpoint``, a flattened JWS) on the
        chain and echo it. Not redacted (it is no secret, and one changed character breaks
        its signature) and not told to ``on_stored``: a checkpoint does not call for another."""
        event = {"ts": self._ts(), "type": "checkpoint", "request_id": request_id, "checkpoint": dict(statement)}
        stored = await self._state.append_audit(event)
        self._write({"audit_id": stored.id, **stored.event})
        return stored

    def _ts(self) -> str:  # as in record()
        return datetime.fromtimestamp(self._clock(), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _write(self, line: dict[str, Any]) -> None:
        # The stored copy is authoritative: a broken stdout must not turn into a 500
        # after the event is already on the chain.
        encoded = _encode(line)
        # as before: ASCII, with anything else escaped, whatever the output's encoding
        text = encoded.decode() if encoded.isascii() else json.dumps(line, separators=(",", ":"))
        try:
            self._out.write(text + "\n")
        except (OSError, ValueError):
            return
        self._flush_soon()

    def _flush_soon(self) -> None:
        """One flush for every line written in this turn of the event loop (at once
        without a running loop): a write system call per batch, not per event."""
        if self._flush_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush()
            return
        self._flush_pending = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        with contextlib.suppress(OSError, ValueError):
            self._out.flush()
