"""``Grant``: what a verified token allows."""

from __future__ import annotations

from dataclasses import dataclass

from broker.capability import Capability, allows
from broker.token.claims import Claims


@dataclass(frozen=True, slots=True)
class Grant:
    claims: Claims

    @property
    def task(self) -> str:
        return self.claims.task

    @property
    def agent(self) -> str:
        return self.claims.agent

    @property
    def token_id(self) -> str:
        return self.claims.jti

    @property
    def expires_at(self) -> int:
        return self.claims.exp

    @property
    def capabilities(self) -> tuple[Capability, ...]:
        return self.claims.cap

    def allows(self, kind: str, resource: str, action: str) -> bool:
        """Does this token allow ``action`` on ``resource``? Resources outside the grammar
        (``..``, ``%2e``, ``//``, ...) are never allowed."""
        return allows(self.claims.cap, kind, resource, action)
