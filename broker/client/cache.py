"""Where a client keeps the tokens it minted, per (task, scope, resource, action).

``MemoryTokenCache`` holds them for one process; ``broker.client.disk_cache`` for the
``broker token get`` command across calls. Either hands a token out only while it is
``fresh`` (``broker.client.freshness``).
"""

from __future__ import annotations

import threading
from typing import Protocol

from broker.client.freshness import IssuedToken

#: (task, scope, resource or None, action or None)
CacheKey = tuple[str, str, str | None, str | None]


class TokenCache(Protocol):
    def get(self, key: CacheKey, now: float) -> IssuedToken | None:
        """The token for ``key`` if it is still fresh at ``now``."""
        ...

    def put(self, key: CacheKey, token: IssuedToken) -> None: ...

    def forget_task(self, task: str) -> None:
        """Drop every token of ``task`` (after revoking it)."""
        ...


class MemoryTokenCache:
    """In one process; thread-safe. Stale entries are dropped when looked up."""

    def __init__(self) -> None:
        self._tokens: dict[CacheKey, IssuedToken] = {}
        self._lock = threading.Lock()

    def get(self, key: CacheKey, now: float) -> IssuedToken | None:
        with self._lock:
            token = self._tokens.get(key)
            if token is not None and not token.fresh(now):
                del self._tokens[key]
                return None
            return token

    def put(self, key: CacheKey, token: IssuedToken) -> None:
        with self._lock:
            self._tokens[key] = token

    def forget_task(self, task: str) -> None:
        with self._lock:
            for key in [k for k in self._tokens if k[0] == task]:
                del self._tokens[key]
