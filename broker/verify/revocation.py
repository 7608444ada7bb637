"""The revocation check a ``Verifier`` may be given.

Implementations (Redis, introspection) raise on any backend failure; the verifier turns
that into ``TokenRejected("revocation_unavailable")``: it never skips the check.
"""

from __future__ import annotations

from typing import Protocol

from broker.token.claims import Claims


class RevocationCheck(Protocol):
    def is_revoked(self, claims: Claims) -> bool:
        """True if the token, its task or its agent (issued before a cut-off) is revoked."""
        ...


class StaticRevocationList:
    """An in-memory revocation list: token ids, tasks, and agents with a cut-off time.

    Useful in tests and for services that receive revocations by other means.
    """

    def __init__(self) -> None:
        self.token_ids: set[str] = set()
        self.tasks: set[str] = set()
        self.agents_before: dict[str, int] = {}

    def is_revoked(self, claims: Claims) -> bool:
        """The kill switch reaches delegated tokens: every agent up the ``act`` chain counts."""
        if claims.jti in self.token_ids or claims.task in self.tasks:
            return True
        for agent in (claims.agent, *claims.delegators):
            cutoff = self.agents_before.get(agent)
            if cutoff is not None and claims.iat <= cutoff:
                return True
        return False
