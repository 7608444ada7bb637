"""Replay caches for DPoP proofs: each ``(jkt, jti)`` is accepted once while it could
still pass the freshness check.

``claim`` is one atomic test-and-set. A cache that cannot promise to remember a key
(full, or its backend down) answers ``False`` or raises: it never lets a replay through.
"""

from __future__ import annotations

import heapq
import threading
from typing import Final, Protocol

DEFAULT_MAX_ENTRIES: Final = 100_000


class ProofReplayCache(Protocol):
    def claim(self, key: str, expires_at: int, now: int) -> bool:
        """True if ``key`` was not seen before (it is now remembered until
        ``expires_at``, inclusive); False for a replay, or when the key cannot be
        remembered. Implementations may raise when their backend fails."""
        ...


class MemoryReplayCache:
    """In-process and thread-safe, bounded to ``max_entries`` unexpired keys.

    Expired keys are dropped first; when the cache is full of unexpired keys every new
    claim is refused until some expire (fail closed). One process only: services with
    several replicas need a shared cache, or each replica accepts a proof once.
    """

    __slots__ = ("_expiry", "_heap", "_lock", "_max_entries")

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if type(max_entries) is not int or max_entries <= 0:
            raise ValueError("max_entries must be a positive integer")
        self._max_entries = max_entries
        self._expiry: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []  # (expires_at, key), one per remembered key
        self._lock = threading.Lock()

    def claim(self, key: str, expires_at: int, now: int) -> bool:
        with self._lock:
            self._drop_expired(now)
            if key in self._expiry:
                return False
            if len(self._expiry) >= self._max_entries:
                return False
            self._expiry[key] = expires_at
            heapq.heappush(self._heap, (expires_at, key))
            return True

    def _drop_expired(self, now: int) -> None:
        while self._heap and self._heap[0][0] < now:
            _, key = heapq.heappop(self._heap)
            del self._expiry[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)
