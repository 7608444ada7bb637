"""``AuditRecorder``: one event per decision, sealed into the chain, echoed to stdout.

The event is first stored (the state store seals it onto the hash chain), then written
as one JSON line to the output. If storing fails the caller gets ``BackendUnavailable``
and must not hand out what the event describes: no token is ever unaudited.

Events carry ids, names and reasons, never a token, a client secret or a Vault token.
Ids are stored exactly; free text (reasons may quote what a caller sent) is cut and
redacted, and the whole event has a hard size cap (``broker.audit.shape``).

Requests with no valid credential at all (``unauthenticated``) are written to the output
only, marked ``"stored": false``: a stranger must not be able to grow the Redis stream
(and so evict revocations or fill memory) by sending garbage. A known caller's refusals
(``decision: deny``) are stored up to its allowance per window and then only counted,
one summary event per window (``broker.audit.refusals``); the ones not stored are echoed
with ``"stored": false``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec

from broker.audit.redaction import redact_text
from broker.audit.refusals import DEFAULT_ALLOWANCE, UNIDENTIFIED, Allowance, RefusalLedger, Summary
from broker.audit.shape import bounded, shaped
from broker.audit.stored import StoredEvent
from broker.service.ports import StateStore

_encode = msgspec.json.Encoder().encode  # the echo only; the chain's bytes are broker.audit.chain's

EVENT_TYPES = frozenset({"mint", "exchange", "deny", "revoke", "introspect", "admin", "contained"})

#: The allowance of refusals whose caller the broker could not name (all of them together).
UNIDENTIFIED_ALLOWANCE = Allowance(UNIDENTIFIED, *DEFAULT_ALLOWANCE)


def redact(value: Any) -> Any:
    """``value`` with every string's token-, secret- or Vault-token-shaped part replaced."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    return value


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditRecorder:
    def __init__(self, state: StateStore, *, out: TextIO | None = None, clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._out = out if out is not None else sys.stdout
        self._clock = clock
        self._flush_pending = False
        self._refusals = RefusalLedger()
        # told of every event stored by ``record`` (``broker.service.audit_checkpointer``)
        self.on_stored: Callable[[StoredEvent], None] | None = None

    async def record(
        self,
        event_type: str,
        *,
        request_id: str,
        store: bool = True,
        caller: Allowance | None = None,
        **fields: Any,
    ) -> StoredEvent | None:
        """Store the event on the chain and echo it; ``None`` when it is only echoed: an
        unauthenticated request, one whose caller is not known yet (``store=False``), or a
        refusal beyond ``caller``'s allowance (``UNIDENTIFIED_ALLOWANCE`` when not given)."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown audit event type {event_type!r}")
        now = self._clock()
        event = bounded({"ts": _iso(now), "type": event_type, "request_id": request_id, **shaped(fields)})
        if not store or event.get("code") == "unauthenticated":
            self._write({**event, "stored": False})
            return None
        if event.get("decision") == "deny" and not event.get("summary"):
            keep, due = self._refusals.admit(caller or UNIDENTIFIED_ALLOWANCE, str(event.get("code")), now)
        else:
            keep, due = True, self._refusals.due(now)
        if due:
            await self._store_summaries(due)
        if not keep:
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
        event = {
            "ts": _iso(self._clock()),
            "type": "checkpoint",
            "request_id": request_id,
            "checkpoint": dict(statement),
        }
        stored = await self._state.append_audit(event)
        self._write({"audit_id": stored.id, **stored.event})
        return stored

    async def flush(self, *, everything: bool = False) -> None:
        """Store the summaries of windows that have closed (``everything``: of every window
        so far, as at shutdown)."""
        due = self._refusals.due(float("inf") if everything else self._clock())
        if due:
            await self._store_summaries(due)

    async def _store_summaries(self, summaries: list[Summary]) -> None:
        """One ``deny`` event per summary; those not stored are counted again, not lost."""
        for i, s in enumerate(summaries):
            kind, _, name = s.caller.partition(":")
            event = {
                "ts": _iso(self._clock()),
                "type": "deny",
                "request_id": "-",
                **shaped({kind: name or None, "caller": s.caller}),
                "decision": "deny",
                "summary": True,
                "count": s.count,
                "codes": s.codes,
                "window_start": _iso(s.start),
                "window_end": _iso(s.end),
            }
            try:
                stored = await self._state.append_audit(event)
            except BaseException:
                self._refusals.restore(summaries[i:])
                raise
            self._write({"audit_id": stored.id, **stored.event})
            if self.on_stored is not None:
                self.on_stored(stored)

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
