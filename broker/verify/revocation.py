"""The revocation check a ``Verifier`` may be given.

Implementations (Redis, introspection) raise on any backend failure; the verifier turns
that into ``TokenRejected("revocation_unavailable")``: it never skips the check.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Protocol

from broker.capability.names import ANY_AGENT, task_ref
from broker.token.claims import Claims
from broker.token.revoked import revoked_in


class RevocationCheck(Protocol):
    def is_revoked(self, claims: Claims) -> bool:
        """True if the token, its task or its agent (issued before a cut-off) is revoked."""
        ...


class StaticRevocationList:
    """An in-memory revocation list: token ids, tasks, and agents with a cut-off time.

    Useful in tests and for services that receive revocations by other means. A task is
    its agent's (``revoke_task``): ``tasks`` holds task references ``owner/task``
    (``broker.capability.names.task_ref``), the owner ``*`` for every agent's task of that id.
    """

    def __init__(self) -> None:
        self.token_ids: set[str] = set()
        self.tasks: set[str] = set()
        self.agents_before: dict[str, int] = {}
        self.withdrawn_kids: set[str] = set()

    def key_withdrawn(self, kid: str) -> bool:
        """Whether the signing key ``kid`` was withdrawn (``broker.verify.withdrawn``)."""
        return kid in self.withdrawn_kids

    def revoke_task(self, task: str, agent: str | None = None) -> None:
        """Revoke ``agent``'s task ``task`` (the root agent of its tokens' chain), or that
        task id for every agent when ``agent`` is None."""
        self.tasks.add(task_ref(ANY_AGENT if agent is None else agent, task))

    def is_revoked(self, claims: Claims) -> bool:
        """The kill switch reaches delegated tokens: every agent up the ``act`` chain counts."""
        return revoked_in(claims, self.token_ids, self.tasks, self.agents_before)


def import_with_redis(module: str) -> ModuleType:
    """Import a module of the Redis revocation sources; without redis-py installed, an
    error that says what to install (the verifier library's base install has no Redis)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "redis":
            raise
        raise ModuleNotFoundError(
            "reading the broker's Redis needs redis-py: pip install 'capbroker[redis]'", name=e.name
        ) from e
