"""How long a token is reused: pure decisions over its times and ``now``.

A cached token is handed out again until a quarter of its lifetime, at most
``MAX_MARGIN`` seconds, remains: a 5-minute token is reused for its first 4 minutes, a
1-minute token for 45 seconds. What is left covers the clock skew between agent and
verifier and a request in flight, so a token handed out is never about to expire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: at most this many seconds before expiry a token stops being reused
MAX_MARGIN: Final = 60


def margin(issued_at: int, expires_at: int) -> int:
    """Seconds before ``expires_at`` that a token stops being handed out."""
    return min(MAX_MARGIN, max(1, (expires_at - issued_at) // 4))


def refresh_at(issued_at: int, expires_at: int) -> int:
    """When a token should be replaced (epoch seconds)."""
    return expires_at - margin(issued_at, expires_at)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """One capability token as the broker handed it out (never printed by ``repr``)."""

    task: str
    audience: str
    token: str
    token_id: str
    issued_at: int  # the client's clock when the broker answered
    expires_at: int  # issued_at + expires_in
    capabilities: tuple[dict[str, object], ...]

    def fresh(self, now: float) -> bool:
        """Still worth handing out at ``now``."""
        return now < refresh_at(self.issued_at, self.expires_at)

    def expires_in(self, now: float) -> int:
        return max(0, int(self.expires_at - now))

    def to_json(self, now: float) -> dict[str, object]:
        return {
            "task": self.task,
            "audience": self.audience,
            "token": self.token,
            "token_id": self.token_id,
            "expires_at": self.expires_at,
            "expires_in": self.expires_in(now),
            "capabilities": [dict(c) for c in self.capabilities],
        }

    def __repr__(self) -> str:
        return f"IssuedToken(task={self.task!r}, audience={self.audience!r}, token_id={self.token_id!r})"
