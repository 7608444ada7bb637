"""``OwnRevocations``: what this process revoked itself, applied at once, before the
announcement of it comes back through Redis to the process's revocation feed."""

from __future__ import annotations

import threading
from typing import Final

from broker.service import retention
from broker.token.claims import Claims
from broker.token.revoked import revoked_in

MAX_OWN: Final = 100_000  # entries; past that the oldest expire first


class OwnRevocations:
    """What this process revoked itself, kept as long as the durable records are."""

    def __init__(self) -> None:
        self._tokens: dict[str, int] = {}  # jti -> forget after
        self._tasks: dict[str, int] = {}
        self._cutoffs: dict[str, int] = {}  # agent -> cut-off
        self._lock = threading.Lock()

    def note_token(self, jti: str, exp: int) -> None:
        with self._lock:
            self._tokens[jti] = retention.token_revocation_expiry(exp)
            self._trim(self._tokens)

    def note_task(self, ref: str, now: int) -> None:
        """``ref``: the task reference (``owner/task``, the owner ``*`` for every agent's)."""
        with self._lock:
            self._tasks[ref] = retention.task_revocation_expiry(now)
            self._trim(self._tasks)

    def note_agent(self, agent: str, cutoff: int) -> None:
        with self._lock:
            self._cutoffs[agent] = max(cutoff, self._cutoffs.get(agent, cutoff))
            self._trim(self._cutoffs)

    def revokes(self, claims: Claims) -> bool:
        return revoked_in(claims, self._tokens, self._tasks, self._cutoffs)

    @staticmethod
    def _trim(entries: dict[str, int]) -> None:
        if len(entries) > MAX_OWN:
            for key in list(entries)[: len(entries) - MAX_OWN]:
                del entries[key]  # insertion order: the oldest first
