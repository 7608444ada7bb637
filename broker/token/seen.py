"""``SeenTokens``: what a verified token's exact string proved, remembered (bounded).

A gateway, or a service introspecting, sees the same token again and again. What cannot
change for one string is what parsing and the signature established: its claims, and the
key they verified under. ``get`` gives those back only while the key set still holds that
same key (a rotated-out or replaced key forgets the token), so a caller skips parsing and
the signature and nothing else: its own checks of times, audience, revocation and proof
run on every call. Only exactly-``str`` tokens are kept (a subclass could redefine
equality), at most ``size`` of them, the oldest forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from broker.token.keys import KeyLookup, VerificationKey

T = TypeVar("T")


class SeenTokens(Generic[T]):
    def __init__(self, size: int) -> None:
        if type(size) is not int or size < 0:
            raise ValueError("the size must be a non-negative integer")
        self._size = size
        self._seen: OrderedDict[str, tuple[T, VerificationKey]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, token: object) -> bool:
        return type(token) is str and token in self._seen

    def get(self, token: object, keys: KeyLookup) -> T | None:
        """What ``token`` proved when it verified, if its key is still ``keys``' key for its kid."""
        if type(token) is not str:
            return None
        entry = self._seen.get(token)
        if entry is None:
            return None
        value, key = entry
        current = keys.key_for(key.kid)  # a remote key set may refetch, or fail closed, here
        if current is key or current == key:
            return value
        self.forget(token)
        return None

    def remember(self, token: object, value: T, key: VerificationKey) -> None:
        if type(token) is not str or not self._size:
            return
        seen = self._seen
        while len(seen) >= self._size:
            try:  # the oldest first; another thread may be evicting too
                seen.popitem(last=False)
            except KeyError:
                break
        seen[token] = (value, key)

    def forget(self, token: str) -> None:
        self._seen.pop(token, None)
