"""What an audit event may hold: ids exactly, free text redacted and cut, a hard size cap.

Structured fields (``IDS``: request id, agent, task, jti, scopes, audiences, codes, ...)
are the broker's own values or values checked against a grammar before they got here:
they are stored exactly as they are, so an audit search for a task id finds it even when
the id happens to look like a secret. Every other field is free text (``reason``,
``reasons``, ``detail`` and anything a future event adds): it may quote what a caller
sent, so it is cut (``redaction.cut``) and redacted (``redaction.redact_text``). Secrets
only ever reach an event inside free text.

An event's canonical JSON, once sealed onto the chain (``prev`` and ``hash`` added), is at
most ``MAX_EVENT_BYTES``. Beyond what cutting each text does, ``bounded`` cuts lists, then
drops free text, and records under ``"truncated"`` how many items each list lost (or
``"dropped"`` for a whole field); the core ids (``CORE``) are never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from broker.audit.chain import canonical
from broker.audit.redaction import cut, redact_text

#: The sealed event's canonical JSON is at most this many bytes.
MAX_EVENT_BYTES: Final = 4096
#: What sealing adds: ``,"hash":"<64 hex>","prev":"<64 hex>"``.
_SEAL_BYTES: Final = 2 * (len(',"hash":""') + 64)
_BODY_BYTES: Final = MAX_EVENT_BYTES - _SEAL_BYTES
#: A list in an event keeps at most this many items (the rest are counted).
MAX_ITEMS: Final = 32
_LAST_RESORT_ITEMS: Final = 4

#: Stored exactly, never redacted.
IDS: Final = frozenset(
    {
        "ts", "type", "request_id", "agent", "service", "task", "jti", "parent_jti", "delegate",
        "scopes", "audiences", "code", "codes", "decision", "action", "target", "by", "ttl",
        "bound", "depth", "active", "descendants", "issued_at_or_before", "policy", "previous",
        "kept", "trigger", "outcome", "stored", "summary", "count", "window_start", "window_end",
        "caller", "kind", "owner", "service_request_id",
    }
)  # fmt: skip
#: Never dropped to fit the cap (each is bounded by its own grammar).
CORE: Final = ("ts", "type", "request_id", "agent", "service", "task", "jti", "code", "decision", "summary", "count")


def _free_text(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(cut(value))
    if isinstance(value, list | tuple):
        items = [_free_text(v) for v in value[:MAX_ITEMS]]
        return [*items, f"…and {len(value) - MAX_ITEMS} more"] if len(value) > MAX_ITEMS else items
    if isinstance(value, dict):
        return {redact_text(cut(str(k), 64)): _free_text(v) for k, v in list(value.items())[:MAX_ITEMS]}
    return value


def _exact(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def shaped(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` (``None`` values left out) with ids kept and free text made safe."""
    return {k: _exact(v) if k in IDS else _free_text(v) for k, v in fields.items() if v is not None}


_encode = msgspec.json.Encoder().encode


def size(event: Mapping[str, Any]) -> int:
    return len(canonical(event))


def _surely_fits(event: Mapping[str, Any]) -> bool:
    """A cheap upper bound first (every event pays it): canonical JSON escapes a character
    to at most three times its UTF-8 bytes, and orders keys without changing the length."""
    return 3 * len(_encode(event)) <= _BODY_BYTES


def bounded(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` (already ``shaped``), made to fit ``MAX_EVENT_BYTES`` once sealed."""
    if _surely_fits(event) or size(event) <= _BODY_BYTES:
        return event
    truncated: dict[str, int | str] = {}
    out = dict(event)
    for limit in (MAX_ITEMS, _LAST_RESORT_ITEMS):
        for key, value in list(out.items()):
            if isinstance(value, list) and len(value) > limit:
                out[key] = value[:limit]
                cut_before = truncated.get(key, 0)
                truncated[key] = (cut_before if isinstance(cut_before, int) else 0) + len(value) - limit
        if size({**out, "truncated": truncated}) <= _BODY_BYTES:
            return {**out, "truncated": truncated}
    # free text, largest first, then any other field, until it fits; never the core ids
    droppable = sorted((k for k in out if k not in CORE), key=lambda k: (k in IDS, -size({k: out[k]})))
    for key in droppable:
        out.pop(key)
        truncated[key] = "dropped"
        if size({**out, "truncated": truncated}) <= _BODY_BYTES:
            break
    return {**out, "truncated": truncated}
