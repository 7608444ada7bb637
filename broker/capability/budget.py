"""``Budget``: how much one token may use through a gateway (docs/gateway.md), from its scope.

``requests`` counts requests, ``bytes`` counts body bytes in both directions; either may
be absent (no limit on it), not both. Serialised as ``{"requests": N, "bytes": B}`` with
only the members set, parsed strictly: whole numbers 1..2^53, no other member.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from broker.errors import InvalidRequest

MAX_BUDGET: Final = 1 << 53
_MEMBERS: Final = frozenset({"requests", "bytes"})


def _count(value: object, what: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 < value <= MAX_BUDGET:
        raise InvalidRequest(f"budget {what} must be a whole number 1..2^53")
    return value


@dataclass(frozen=True, slots=True)
class Budget:
    requests: int | None = None
    bytes: int | None = None

    def __post_init__(self) -> None:
        _count(self.requests, "requests")
        _count(self.bytes, "bytes")
        if self.requests is None and self.bytes is None:
            raise InvalidRequest("a budget sets requests, bytes or both")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.requests is not None:
            out["requests"] = self.requests
        if self.bytes is not None:
            out["bytes"] = self.bytes
        return out

    @classmethod
    def from_json(cls, value: object) -> Budget:
        if not isinstance(value, dict) or not value or not _MEMBERS.issuperset(value):
            raise InvalidRequest("a budget is {requests?, bytes?}")
        return cls(_count(value.get("requests"), "requests"), _count(value.get("bytes"), "bytes"))

    def within(self, other: Budget | None) -> bool:
        """Is this budget no wider than ``other`` (``None``: no limit)?"""
        if other is None:
            return True
        return all(
            mine is not None and mine <= theirs
            for mine, theirs in ((self.requests, other.requests), (self.bytes, other.bytes))
            if theirs is not None
        )


def tightest(budgets: list[Budget | None]) -> Budget | None:
    """The per-member minimum of the budgets set (``None`` if none is)."""
    given = [b for b in budgets if b is not None]
    if not given:
        return None
    requests = [b.requests for b in given if b.requests is not None]
    sizes = [b.bytes for b in given if b.bytes is not None]
    return Budget(min(requests) if requests else None, min(sizes) if sizes else None)
