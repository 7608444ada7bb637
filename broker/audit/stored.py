"""``StoredEvent``: one audit event as a store holds it (its position in the stream and its
sealed body), the unit the chain walk, the archive segments and the state stores share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One audit event as stored: its position in the stream and its sealed body."""

    id: str
    event: Mapping[str, Any]
