"""The gateway's audit line: one JSON object per request on stdout (docs/gateway.md).

Fields: ``ts``, ``request_id``, ``task``, ``agent``, ``jti``, ``kind``, ``resource``,
``action``, ``decision`` (allow, deny, error), ``code``, ``status``, ``bytes_in``,
``bytes_out``, ``upstream_ms``, ``containment`` when it was tried, and
``credentials_dropped``: the names of credentials of its own the agent sent (headers, and
``?param`` for query parameters), which never reached the upstream. Never a token, a
proof or a secret: only ids and what the request named.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, fields
from typing import TextIO


@dataclass(slots=True)
class AuditLine:
    request_id: str
    task: str | None = None
    agent: str | None = None
    jti: str | None = None
    kind: str | None = None
    resource: str | None = None
    action: str | None = None
    decision: str = "deny"
    code: str | None = None
    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    upstream_ms: float | None = None
    containment: str | None = None
    credentials_dropped: list[str] | None = None

    def to_json(self, now: float) -> str:
        fields = {name: getattr(self, name) for name in FIELDS}  # not asdict: it deep-copies
        return json.dumps({"ts": round(now, 3), "event": "gateway", **fields}, separators=(",", ":"))


FIELDS = tuple(f.name for f in fields(AuditLine))


def write(line: AuditLine, out: TextIO | None = None) -> None:
    stream = out if out is not None else sys.stdout
    stream.write(line.to_json(time.time()) + "\n")
    stream.flush()
