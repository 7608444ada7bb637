"""The session-key signer's decisions, from inputs and ``now`` alone: which stored
endorsements are published (``Entries``, ``build_view``), which entries are long past and
may be removed (``Entries.ends``), which keys left the published set (``vanished``), and
which held key signs a token now (``choose``).

Pure: no I/O, no clock. The shell that reads Redis and Vault and runs the background work
is ``broker.backends.endorsed_signer``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from broker.token.algorithms import Algorithm
from broker.token.endorsement import Endorsement, EndorsementError, claimed_publish_until, verify_endorsement
from broker.token.keys import MAX_JWKS_KEYS, KeySet, LocalSigner, VerificationKey

__all__ = ["GC_GRACE", "Choice", "Entries", "SessionKey", "View", "build_view", "choose", "expired", "vanished"]

log = logging.getLogger("broker.signing")

#: entries are removed from the store this long (seconds) after the publish_until they state
GC_GRACE: Final = 300


@dataclass(slots=True, eq=False)
class SessionKey:
    """A session key this worker holds: its private half (never shown), its endorsement,
    and whether it signed anything (an unused key is withdrawn at shutdown)."""

    signer: LocalSigner = field(repr=False)
    endorsement: Endorsement
    used: bool = False

    @property
    def kid(self) -> str:
        return self.signer.kid


@dataclass(frozen=True, slots=True)
class View:
    """One read of the store: what is published, as of ``read_at`` (monotonic)."""

    keyset: KeySet
    session_kids: frozenset[str]
    entries: tuple[Endorsement, ...]  # every verified entry still published at build time
    transit: KeySet
    read_at: float
    seq: int
    valid_until: float  # wall clock: the first publish_until among entries
    left_out: int = 0  # live session keys not published: over the JWKS cap


def build_view(entries: Iterable[Endorsement], transit: KeySet, now: float, read_at: float, seq: int) -> View:
    """The Transit versions, then the newest session keys published at ``now``, at most
    ``MAX_JWKS_KEYS`` in all (``View.keyset`` has fewer entries than ``entries`` then)."""
    live = sorted((e for e in entries if e.published_at(now)), key=lambda e: (e.not_before, e.kid), reverse=True)
    keys: list[VerificationKey] = list(transit)
    seen = {k.kid for k in keys}
    published: list[Endorsement] = []
    left_out = 0
    for e in live:
        if e.kid in seen:
            continue
        if len(keys) >= MAX_JWKS_KEYS:
            left_out += 1
            continue
        if e.kid not in seen:
            seen.add(e.kid)
            keys.append(e.published_key)
            published.append(e)
    return View(
        keyset=KeySet(keys),
        session_kids=frozenset(e.kid for e in published),
        entries=tuple(live),
        transit=transit,
        read_at=read_at,
        seq=seq,
        valid_until=min((e.publish_until for e in live), default=math.inf),
        left_out=left_out,
    )


def vanished(previous: View | None, seq: int, live: Iterable[Endorsement], now: float) -> dict[str, int]:
    """Keys ``previous`` published that a later read (``seq``) no longer finds, before
    their publish_until: kid -> publish_until. Only against an older view: a read that
    started earlier knows nothing newer."""
    if previous is None or previous.seq >= seq:
        return {}
    kids = {e.kid for e in live}
    return {e.kid: e.publish_until for e in previous.entries if e.kid not in kids and e.published_at(now)}


class Entries:
    """Stored entries checked against the long-term key, each checked once: a verified
    entry again only when the key that verified it changes, a refused one again only
    against another key set. ``refused`` counts the distinct stored values refused."""

    def __init__(self, issuer: str, alg: Algorithm) -> None:
        self._issuer, self._alg = issuer, alg
        self._verified: dict[tuple[str, str], tuple[Endorsement, dict[str, str]]] = {}
        self._refused: dict[tuple[str, str], tuple[KeySet, int | None]] = {}
        self.refused = 0

    def verify_all(self, stored: Mapping[str, str], transit: KeySet) -> tuple[list[Endorsement], bool]:
        """The entries that verify; whether one was refused for an unknown long-term kid."""
        transit_jwks = {k.kid: k.to_jwk() for k in transit}
        entries: list[Endorsement] = []
        unknown_endorser = False
        for entry in stored.items():
            known, refused = self._verified.get(entry), self._refused.get(entry)
            if known is not None and transit_jwks.get(known[0].endorser) == known[1]:
                endorsement: Endorsement | None = known[0]
            elif refused is not None and refused[0] is transit:
                endorsement = None
            else:
                endorsement, code = self._verify_one(entry, transit)
                unknown_endorser |= code == "unknown_endorser"
            if endorsement is not None:
                entries.append(endorsement)
        self._verified = {k: v for k, v in self._verified.items() if stored.get(k[0]) == k[1]}
        self._refused = {k: v for k, v in self._refused.items() if stored.get(k[0]) == k[1]}
        return entries, unknown_endorser

    def ends(self, stored: Mapping[str, str], entries: Iterable[Endorsement]) -> dict[str, int]:
        """When each stored entry stops mattering: a verified one at its publish_until, a
        refused one at the end it claims (one of a retired Transit version, say); refused
        entries that do not even parse have none and stay, as evidence."""
        ends = {e.kid: e.publish_until for e in entries}
        for entry in stored.items():
            claimed = self._refused.get(entry, (None, None))[1]
            if entry[0] not in ends and claimed is not None:
                ends[entry[0]] = claimed
        return ends

    def _verify_one(self, entry: tuple[str, str], transit: KeySet) -> tuple[Endorsement | None, str]:
        name, value = entry
        endorser = None
        try:
            endorsement = verify_endorsement(value, transit, issuer=self._issuer, alg=self._alg)
            endorser = transit.key_for(endorsement.endorser)
            code = "" if endorsement.kid == name else "stored_under_another_kid"
        except EndorsementError as e:
            code = e.code
        if code or endorser is None:
            if entry not in self._refused:
                self.refused += 1
                log.warning("endorsed-keys entry %r is not published: %s", name[:80], code)
            self._refused[entry] = (transit, claimed_publish_until(value))
            return None, code
        self._verified[entry] = (endorsement, endorser.to_jwk())
        return endorsement, ""


def expired(ends: Mapping[str, int], now: float) -> list[str]:
    """The entries long past their end (``GC_GRACE``): removed from the store."""
    return [name for name, end in ends.items() if end + GC_GRACE < now]


@dataclass(frozen=True, slots=True)
class Choice:
    """Which held key signs a token now, and what that means for the held keys.

    ``key``: the signer (None: none can); ``current``/``next``: the keys held afterwards
    (the successor becomes current once it signs; a key no longer published is dropped);
    ``dropped``: the keys let go because their endorsement left the published set;
    ``renew``: a successor is due (none can sign, or the current one is ``lead`` seconds
    from its end with no successor yet)."""

    key: SessionKey | None
    current: SessionKey | None
    next: SessionKey | None
    dropped: tuple[SessionKey, ...]
    renew: bool


def choose(
    current: SessionKey | None,
    next_key: SessionKey | None,
    published: frozenset[str],
    *,
    now: float,
    exp: int,
    lead: int,
) -> Choice:
    """The key that signs a token expiring at ``exp`` at ``now``: the current key, else the
    successor, each only while its endorsement is published, signs at ``now`` and covers
    ``exp``."""
    dropped: list[SessionKey] = []
    chosen: SessionKey | None = None
    for key in (current, next_key):
        if key is None:
            continue
        if key.kid not in published:
            dropped.append(key)
            current = None if key is current else current
            next_key = None if key is next_key else next_key
            continue
        e = key.endorsement
        if e.signs_at(now) and e.covers_exp(exp):
            if key is next_key:
                current, next_key = key, None
            chosen = key
            break
    renew = chosen is None or (
        current is not None and next_key is None and now >= current.endorsement.sign_until - lead
    )
    return Choice(chosen, current, next_key, tuple(dropped), renew)
