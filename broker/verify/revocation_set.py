"""``RevocationSet``: the revocations a ``RevocationFeed`` holds, and the rules that fill
and empty it, from inputs and ``now`` alone: an entry loaded from a durable key, an
announcement applied, entries no acceptable token can need any more purged.

Pure: no I/O, no clock, no thread. One writer (the feed's thread); readers do single dict
look-ups, atomic under the GIL. The Redis loop that feeds it is ``broker.verify.revocation_feed``.
"""

from __future__ import annotations

import json
from typing import Final

from broker.capability.lifetime import MAX_TOKEN_TTL, REVOCATION_GRACE
from broker.token.claims import MAX_TIME, Claims
from broker.token.revoked import revoked_in

__all__ = ["FAMILIES", "FeedProtocolError", "RevocationSet"]

_KINDS: Final = frozenset({"token", "task", "agent", "key"})
#: a durable key's family (``<prefix>rev:<family>:<id>``) -> the kind of revocation it holds
FAMILIES: Final = {"jti": "token", "task": "task", "agent": "agent", "key": "key"}


class FeedProtocolError(Exception):
    """Redis said something the feed does not understand: it drops the connection."""


class RevocationSet:
    """Token ids, task references and withdrawn kids (each -> when the entry expires,
    epoch seconds), and agent cut-offs (agent -> cut-off; the entry expires at cut-off +
    the token lifetime cap + the grace)."""

    def __init__(self) -> None:
        self.tokens: dict[str, float] = {}
        self.tasks: dict[str, float] = {}
        self.cutoffs: dict[str, int] = {}
        self.keys: dict[str, float] = {}

    def revokes(self, claims: Claims) -> bool:
        return revoked_in(claims, self.tokens, self.tasks, self.cutoffs)

    def key_withdrawn(self, kid: str) -> bool:
        return kid in self.keys

    def __len__(self) -> int:
        """Token ids, tasks and agent cut-offs (withdrawn keys are not revocations)."""
        return len(self.tokens) + len(self.tasks) + len(self.cutoffs)

    def load(self, kind: str, ident: str, pttl: object, value: object, now: float) -> None:
        """One durable key as read: its kind, its id, its remaining life in ms (``PTTL``:
        -2 gone, -1 no expiry) and, for an agent, its cut-off."""
        if type(pttl) is not int or pttl == -2:
            return
        # no expiry on the key (-1) never happens with the broker's writes; keep it for
        # the longest any token lives
        expires = now + pttl / 1000 if pttl >= 0 else now + MAX_TOKEN_TTL + REVOCATION_GRACE
        if kind == "token":
            _put(self.tokens, ident, expires)
        elif kind == "task":
            _put(self.tasks, ident, expires)
        elif kind == "key":
            _put(self.keys, ident, expires)
        elif value is not None:  # None: expired since the SCAN
            if not isinstance(value, str) or not value.isdigit() or len(value) > 16:
                raise FeedProtocolError("an agent cut-off that is not an integer")
            self._cut_off(ident, int(value))

    def apply(self, data: object) -> None:
        """One announcement: ``{"kind", "id", "value"}``; anything else is an error."""
        try:
            message = json.loads(data) if isinstance(data, str) else None
        except ValueError:
            message = None
        if not isinstance(message, dict) or message.keys() != {"kind", "id", "value"}:
            raise FeedProtocolError("an announcement the feed cannot read")
        kind, ident, value = message["kind"], message["id"], message["value"]
        if kind not in _KINDS or not isinstance(ident, str) or not ident:
            raise FeedProtocolError("an announcement the feed cannot read")
        if type(value) is not int or not 0 <= value < MAX_TIME:
            raise FeedProtocolError("an announcement the feed cannot read")
        if kind == "token":
            _put(self.tokens, ident, value + REVOCATION_GRACE)
        elif kind == "task":
            _put(self.tasks, ident, value + MAX_TOKEN_TTL + REVOCATION_GRACE)
        elif kind == "key":
            _put(self.keys, ident, value)  # the key's own publish_until: it is gone after
        else:
            self._cut_off(ident, value)

    def purge(self, now: float) -> None:
        """Forget entries no acceptable token can need any more (bounded memory)."""
        for entries in (self.tokens, self.tasks, self.keys):
            for ident, expires in list(entries.items()):
                if expires <= now:
                    entries.pop(ident, None)
        for agent, cutoff in list(self.cutoffs.items()):
            if cutoff + MAX_TOKEN_TTL + REVOCATION_GRACE <= now:
                self.cutoffs.pop(agent, None)

    def _cut_off(self, agent: str, cutoff: int) -> None:
        current = self.cutoffs.get(agent)
        if current is None or cutoff > current:
            self.cutoffs[agent] = cutoff


def _put(entries: dict[str, float], ident: str, expires: float) -> None:
    entries[ident] = max(expires, entries.get(ident, expires))
