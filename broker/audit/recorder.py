"""``AuditRecorder``: one event per decision, sealed into the chain, echoed to stdout.

The event is first stored (the state store seals it onto the hash chain), then written
as one JSON line to the output. If storing fails the caller gets ``BackendUnavailable``
and must not hand out what the event describes: no token is ever unaudited.

Events carry ids, names and reasons, never a token, a client secret or a Vault token.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from broker.service.ports import StateStore, StoredEvent

EVENT_TYPES = frozenset({"mint", "deny", "revoke", "introspect", "admin"})


class AuditRecorder:
    def __init__(self, state: StateStore, *, out: TextIO | None = None, clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._out = out if out is not None else sys.stdout
        self._clock = clock

    async def record(self, event_type: str, *, request_id: str, **fields: Any) -> StoredEvent:
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown audit event type {event_type!r}")
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(self._clock(), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "type": event_type,
            "request_id": request_id,
        }
        event.update({k: v for k, v in fields.items() if v is not None})
        stored = await self._state.append_audit(event)
        self._out.write(json.dumps({"audit_id": stored.id, **stored.event}, separators=(",", ":")) + "\n")
        self._out.flush()
        return stored
