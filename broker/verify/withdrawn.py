"""A key lookup that stops finding signing keys the broker withdrew.

A session key withdrawn from the published set (an operator's ``broker keys withdraw``, a
deleted or refused entry) is announced on the revocation channel; a ``RevocationFeed``
hears it within a second. A verifier's key set (a JWKS fetched every few minutes) does
not: wrapped in ``WithoutWithdrawn``, it answers "no such key" for a withdrawn kid at
once, for fresh tokens and for tokens it remembered (``SeenTokens`` asks the same lookup).
"""

from __future__ import annotations

from collections.abc import Callable

from broker.token.keys import KeyLookup, VerificationKey


class WithoutWithdrawn:
    """``keys``, minus every kid for which ``withdrawn(kid)`` is true."""

    __slots__ = ("_keys", "_withdrawn")

    def __init__(self, keys: KeyLookup, withdrawn: Callable[[str], bool]) -> None:
        self._keys = keys
        self._withdrawn = withdrawn

    def key_for(self, kid: str) -> VerificationKey | None:
        if self._withdrawn(kid):
            return None
        return self._keys.key_for(kid)


def withdrawn_check(revocation: object) -> Callable[[str], bool] | None:
    """The revocation source's ``key_withdrawn``, if it has one (a ``RevocationFeed``)."""
    check = getattr(revocation, "key_withdrawn", None)
    return check if callable(check) else None
