"""Replay caches for DPoP proofs: each proof, named by its key's thumbprint (``jkt``) and
its ``jti``, is accepted once while it could still pass the freshness check.

``claim`` is one atomic test-and-set. A cache that cannot promise to remember a proof
(its key over quota, no room left, or its backend down) answers ``False`` or raises:
it never lets a replay through.

One key cannot fill the cache for the others. Each key may hold at most
``max_per_key`` unexpired proofs: a holder who sends a flood of fresh proofs is refused
once it reaches its quota, until its own proofs expire, and every other key still has
room. Many keys together (each bound to a token of the verifier's audience) can still
fill it; then the proof that expires first is forgotten to make room, and its key gets a
*floor*: from then on, that key's proofs that expire no later than the forgotten one are
refused, since any of them could be it. A proof made after the forgotten one expires
later and passes, so the keys with few proofs in flight lose nothing.
"""

from __future__ import annotations

import heapq
import threading
from typing import Final, Protocol

DEFAULT_MAX_ENTRIES: Final = 100_000
#: one key's share: at most this many of its proofs accepted within one proof lifetime
#: (65 s by default: about 15 requests a second, sustained, per key and verifier)
DEFAULT_MAX_PER_KEY: Final = 1_000


class ProofReplayCache(Protocol):
    def claim(self, jkt: str, jti: str, expires_at: int, now: int) -> bool:
        """True if the proof ``jti`` of the key ``jkt`` was not seen before (it is now
        remembered until ``expires_at``, inclusive); False for a replay, or when the proof
        cannot be remembered. Implementations may raise when their backend fails."""
        ...


class MemoryReplayCache:
    """In-process and thread-safe: at most ``max_entries`` unexpired proofs, of which one
    key holds at most ``max_per_key``, and at most ``max_entries`` floors (one integer per
    key whose proof was forgotten early).

    Expired proofs and floors are dropped first. A key at its quota has its new proofs
    refused until some of its own expire. A full cache forgets the proof that expires
    first and raises its key's floor (module docstring); with the floors full too, every
    new claim is refused until some expire. All of it fails closed. One process only:
    services with several replicas need a shared cache, or each replica accepts a proof
    once.
    """

    __slots__ = ("_expiry", "_floor", "_floor_heap", "_heap", "_lock", "_max_entries", "_max_per_key", "_per_key")

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, max_per_key: int = DEFAULT_MAX_PER_KEY) -> None:
        if type(max_entries) is not int or max_entries <= 0:
            raise ValueError("max_entries must be a positive integer")
        if type(max_per_key) is not int or max_per_key <= 0:
            raise ValueError("max_per_key must be a positive integer")
        self._max_entries = max_entries
        self._max_per_key = max_per_key
        self._expiry: dict[tuple[str, str], int] = {}  # (jkt, jti) -> expires_at
        self._per_key: dict[str, int] = {}  # jkt -> how many of its proofs are remembered
        self._heap: list[tuple[int, str, str]] = []  # (expires_at, jkt, jti), one per proof
        # jkt -> the latest expiry among its proofs forgotten early: its proofs expiring at or
        # before it are refused. One heap item per floor, at most its current value.
        self._floor: dict[str, int] = {}
        self._floor_heap: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def claim(self, jkt: str, jti: str, expires_at: int, now: int) -> bool:
        key = (jkt, jti)
        with self._lock:
            self._drop_expired(now)
            if key in self._expiry:
                return False
            floor = self._floor.get(jkt)
            if floor is not None and expires_at <= floor:
                return False  # it may be a proof this cache forgot early
            held = self._per_key.get(jkt, 0)
            if held >= self._max_per_key:
                return False
            if len(self._expiry) >= self._max_entries and not self._forget_first():
                return False
            self._expiry[key] = expires_at
            self._per_key[jkt] = held + 1
            heapq.heappush(self._heap, (expires_at, jkt, jti))
            return True

    def held_by(self, jkt: str) -> int:
        """How many unexpired proofs of ``jkt`` are remembered (as of the last claim)."""
        with self._lock:
            return self._per_key.get(jkt, 0)

    def _forget_first(self) -> bool:
        """Make room: forget the proof that expires first and raise its key's floor to its
        expiry. False (nothing forgotten) when that would need a floor and none is left."""
        expires_at, jkt, _ = self._heap[0]
        current = self._floor.get(jkt)
        if current is None and len(self._floor) >= self._max_entries:
            return False
        self._forget(heapq.heappop(self._heap))
        if current is None:
            self._floor[jkt] = expires_at
            heapq.heappush(self._floor_heap, (expires_at, jkt))
        else:
            self._floor[jkt] = max(current, expires_at)
        return True

    def _forget(self, entry: tuple[int, str, str]) -> None:
        _, jkt, jti = entry
        del self._expiry[(jkt, jti)]
        left = self._per_key[jkt] - 1
        if left:
            self._per_key[jkt] = left
        else:
            del self._per_key[jkt]

    def _drop_expired(self, now: int) -> None:
        while self._heap and self._heap[0][0] < now:
            self._forget(heapq.heappop(self._heap))
        while self._floor_heap and self._floor_heap[0][0] < now:
            _, jkt = heapq.heappop(self._floor_heap)
            current = self._floor[jkt]
            if current < now:
                del self._floor[jkt]
            else:  # raised since: keep it, under its current value
                heapq.heappush(self._floor_heap, (current, jkt))

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)
