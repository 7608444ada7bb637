"""Signing with short-lived in-process keys that the Vault Transit key endorses.

Every worker signs tokens in process with a *session key* of its own (Ed25519, or P-256
when the deployment's alg is ES256), so minting makes no Vault call. The long-term key
never leaves Vault and never signs a token: it signs an *endorsement* of each session
key's public half and time windows (``broker.token.endorsement``), once per ``window``.

- Publication: endorsements live in one Redis hash, ``<prefix>endorsed-keys`` (session
  kid -> endorsement), shared by every worker and replica. ``keyset()`` (the JWKS, and the
  keys introspection and exchange verify with) is the Transit key's published versions
  plus the session key of every stored endorsement that verifies against them, is for
  this issuer and this alg, and whose ``publish_until`` is still ahead. An entry that does
  not verify -- written by someone with Redis write access -- is never published: it is
  logged once (its hash field, never its value) and counted in ``rejected_entries``.
- Signing: only with a key whose endorsement this worker verified, stored (``HSETNX``)
  and read back in the published set, while ``not_before <= now < sign_until`` and for
  tokens with ``exp <= publish_until - MAX_LEEWAY``. So no token is signed by a key the
  JWKS does not publish. A key whose entry disappears from Redis (removed by an operator,
  refused, or Redis lost its data) is withdrawn: the first worker to read the view
  without it (each re-reads every ``refresh`` seconds, with or without traffic) marks it
  withdrawn in Redis (``<prefix>rev:key:<kid>``) and announces that on the revocation
  channel, so no worker publishes or signs with it again even if the entry is written
  back, and every verifier with a revocation feed refuses its tokens within a second
  (``withdraw_keys``; ``broker keys withdraw`` does the same for an operator).
- Rotation ahead of time: a key signs for at most ``window + lead`` seconds. ``window``
  seconds after it was endorsed (``lead`` before it stops signing) the worker endorses a
  successor in the background, single-flight, and starts using it when the current key
  stops; so the successor is published ``lead`` seconds before its first token (remote
  verifiers refresh their JWKS every 300 s: the default lead).
- Fail closed, fast: with no usable key (Vault down or sealed when a renewal was due,
  Redis down when storing or re-reading) ``sign`` raises ``BackendUnavailable`` within
  about ``timeout``, and after a failed endorsement or read the next attempt waits
  ``RETRY`` seconds (sign fails at once meanwhile). A Vault outage does not stop signing
  while the current key's window lasts; a Redis outage stops it after ``MAX_STALE``
  seconds (whether the key is still published is then unknown).
- The published view is re-read from Redis at most every ``refresh`` seconds, in the
  background (callers use the last view while it is younger than ``MAX_STALE``), or at
  once for ``keyset(kid=...)`` with a kid it does not hold. An entry's signature is
  verified once (again when the Transit key set changes). The Transit versions come from
  the Transit backend's cache (re-read at once when an entry names a version it does not
  hold); while Vault is unreachable the last good read is used for at most
  ``window + lead`` seconds. At most ``MAX_JWKS_KEYS`` keys are published: the Transit
  versions, then the newest session keys (about ``(window + lead + ttl cap + 120) /
  window`` per worker: 6 with the defaults).
- The private session keys live only in this process's memory: never logged, stored or
  shown by ``repr``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

from broker.backends.endorsement_store import (
    EndorsementStore,
    RedisEndorsementStore,
    endorsed_keys_key,
    withdraw_keys,
)
from broker.backends.transit import TransitSigningBackend
from broker.backends.vault_clients import TokenSource, Verify
from broker.capability.lifetime import MAX_TOKEN_TTL
from broker.errors import BackendUnavailable, InvalidRequest
from broker.service.metrics import session_key_signs_until
from broker.token.algorithms import Algorithm
from broker.token.claims import Claims
from broker.token.endorsement import (
    ENDORSEMENT_TYP,
    Endorsement,
    EndorsementError,
    endorsement_payload,
    new_session_kid,
    verify_endorsement,
    windows,
)
from broker.token.keys import MAX_JWKS_KEYS, KeySet, LocalSigner
from broker.token.mint import mint
from broker.token.published import GC_GRACE, Entries, SessionKey, View, build_view, choose, expired, vanished
from broker.verify.redis_options import async_redis

__all__ = ["GC_GRACE", "EndorsedSigningBackend", "SignerSettings", "endorsed_keys_key", "withdraw_keys"]

log = logging.getLogger("broker.signing")

DEFAULT_PREFIX: Final = "capbroker:"
DEFAULT_WINDOW: Final = 900
DEFAULT_LEAD: Final = 300
#: beyond this age (seconds) the published view is not trusted: nothing is signed or
#: published until Redis is read again
MAX_STALE: Final = 5.0
#: after a failed endorsement, how long (seconds) before the next attempt
RETRY: Final = 0.5
#: a keyset(kid=...) miss re-reads Redis at most this often (seconds)
MISS_COOLDOWN: Final = 0.1
#: more entries than this in the hash and nothing is published (someone is filling it)
MAX_ENTRIES: Final = 1024
_MARGIN: Final = 0.25  # past the Redis socket timeout, as RedisState


@dataclass(frozen=True, slots=True)
class SignerSettings:
    """The session-key signer's settings, checked once.

    ``issuer``: the broker's issuer (endorsements are bound to it); ``window``: seconds
    between endorsements (each key signs for ``window + lead``); ``lead``: seconds a
    successor is published before its first token; ``max_token_ttl``: the global token
    lifetime cap; ``timeout``: the Redis socket timeout, and how long ``sign`` waits for a
    key; ``refresh``: how old the published view may get before it is re-read;
    ``vault_silence``: how long Vault may go unheard before ``sign`` refuses (Vault sealed
    or down means no token within about a second, though the session key would still sign).
    """

    issuer: str
    window: int = DEFAULT_WINDOW
    lead: int = DEFAULT_LEAD
    max_token_ttl: int = MAX_TOKEN_TTL
    timeout: float = 1.0
    refresh: float = 1.0
    vault_silence: float = 1.0

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ValueError("an issuer is required")
        if not 60 <= self.window <= 86400 or not 0 <= self.lead <= self.window:
            raise ValueError("window in [60, 86400] seconds, lead in [0, window]")
        if not 0 < self.max_token_ttl <= MAX_TOKEN_TTL:
            raise ValueError(f"max_token_ttl in [1, {MAX_TOKEN_TTL}]")
        if not 0 < self.timeout <= 60 or not 0 < self.refresh < MAX_STALE:
            raise ValueError(f"timeout in (0, 60], refresh in (0, {MAX_STALE})")
        if not 0 < self.vault_silence <= 60:
            raise ValueError("vault_silence in (0, 60]")


class _VaultLiveness:
    """Whether Vault answered lately, and the long-term key's versions it last gave.

    A heartbeat reads the Transit key in the background about twice per ``silence``; a
    request waits for it only when the last answer is too old. While Vault is unreachable
    the last good key set serves for at most ``keep`` seconds (a key's whole signing span).
    """

    def __init__(self, transit: TransitSigningBackend, settings: SignerSettings) -> None:
        self._transit, self._silence = transit, settings.vault_silence
        self._keep, self._wait = settings.window + settings.lead, settings.timeout + _MARGIN
        self._heard = -math.inf  # the last successful read of the Transit key (monotonic)
        self._error = ""  # why the last read failed
        self._heartbeat: asyncio.Task[None] | None = None
        self._keys: KeySet | None = None
        self._keys_at = -math.inf
        self.forced_at = -math.inf  # the last read that bypassed the Transit backend's cache

    async def require(self, closed: bool) -> None:
        """Vault heard from within ``silence``, or ``BackendUnavailable``."""
        tick = time.monotonic()
        if tick - self._heard >= self._silence / 2:
            self._start(closed)
        if tick - self._heard < self._silence:
            return
        if self._heartbeat is not None and not self._heartbeat.done():
            await asyncio.wait([self._heartbeat], timeout=self._wait)
        if time.monotonic() - self._heard >= self._silence:
            raise BackendUnavailable(self._error or "vault: not answering, so nothing is signed")

    async def keyset(self, *, force: bool = False) -> KeySet:
        """The long-term key's published versions (``force``: not from the cache); while
        Vault is unreachable, the last good read for at most ``keep`` seconds."""
        tick = time.monotonic()
        try:
            if force:
                self.forced_at = tick
                keys = await self._transit.read_keyset()
            else:
                keys = await self._transit.keyset()
        except BackendUnavailable:
            if self._keys is not None and tick - self._keys_at <= self._keep:
                return self._keys
            raise
        self._keys, self._keys_at = keys, tick
        return keys

    def task(self) -> asyncio.Task[None] | None:
        return self._heartbeat

    def _start(self, closed: bool) -> None:
        if closed or (self._heartbeat is not None and not self._heartbeat.done()):
            return
        self._heartbeat = _spawn(self._hear(), "vault-heartbeat")

    async def _hear(self) -> None:
        try:
            keys = await self._transit.read_keyset()
        except BackendUnavailable as e:
            self._error = e.reason
            raise
        self._keys, self._keys_at = keys, time.monotonic()
        self._heard, self._error = self._keys_at, ""


class _Published:
    """What the store publishes, as this worker last read it (``View``), and the reads:
    in the background at most every ``refresh`` seconds (and every ``refresh`` seconds
    without traffic, so a withdrawal is seen), at once for a kid it does not hold (at most
    every ``MISS_COOLDOWN``), and after a failure not before ``RETRY`` seconds."""

    def __init__(  # noqa: PLR0917 -- the signer's parts, passed once, by its constructor
        self,
        store: EndorsementStore,
        vault: _VaultLiveness,
        entries: Entries,
        settings: SignerSettings,
        clock: Callable[[], float],
        closed: Callable[[], bool],
    ) -> None:
        self._store, self._vault, self._entries = store, vault, entries
        self._settings, self._clock, self._closed = settings, clock, closed
        self.view: View | None = None
        self.task: asyncio.Task[None] | None = None  # the read in flight
        self.error = ""  # why the last read failed
        self._seq = 0
        self._watch: asyncio.Task[None] | None = None  # re-reads every refresh, traffic or not
        self._retry_at = -math.inf  # no (unforced) read before (monotonic)
        self._miss_at = -math.inf
        self._too_many = False

    async def keyset(self, *, kid: str | None, fresh: bool) -> KeySet:
        """The published keys; re-read first for a kid not among them or ``fresh``."""
        view = self.view
        tick = time.monotonic()
        miss = kid is not None and view is not None and view.keyset.key_for(kid) is None
        if (miss or (fresh and view is not None)) and tick - self._miss_at >= MISS_COOLDOWN:
            self._miss_at = tick
            await _bounded(self.start_refresh(force=True), self._settings)
        elif view is None or tick - view.read_at >= MAX_STALE:
            await _bounded(self.start_refresh(), self._settings)
        elif tick - view.read_at >= self._settings.refresh:
            self.start_refresh()
        view = self.fresh()
        if view is None:
            raise BackendUnavailable(self.error or "signer: the published keys could not be read")
        return view.keyset

    def usable(self) -> View | None:
        """The view to sign by, starting the read that is due; None while the last read
        failed (Redis may have lost its data, and with it a key's entry) or is too old."""
        view = self.view
        tick = time.monotonic()
        if view is None or self.error or tick - view.read_at >= MAX_STALE:
            self.start_refresh()
            return None
        if tick - view.read_at >= self._settings.refresh:
            self.start_refresh()
        return view

    def kids(self) -> frozenset[str]:
        view = self.fresh()
        return view.session_kids if view is not None else frozenset()

    def fresh(self) -> View | None:
        """The view if younger than ``MAX_STALE``, with keys past publish_until dropped."""
        view = self.view
        if view is None or time.monotonic() - view.read_at >= MAX_STALE:
            return None
        if self._clock() >= view.valid_until:
            view = self._build(view.entries, view.transit, view.read_at, view.seq)
            if self.view is not None and view.seq >= self.view.seq:
                self.view = view
        return view

    def start_refresh(self, *, force: bool = False) -> asyncio.Task[None] | None:
        """The read in flight, started now if none is (and the last failure is ``RETRY``
        seconds old) or if ``force``."""
        task = self.task
        if _running_here(task) and not force:
            return task
        if self._closed() or (not force and time.monotonic() < self._retry_at):
            return None
        self._start_watch()  # from the first read on: no per-call check on the signing path
        self.task = _spawn(self._refresh_in_background(force), "view")
        return self.task

    def background(self) -> tuple[asyncio.Task[None] | None, ...]:
        return self._watch, self.task

    def _start_watch(self) -> None:
        if self._closed() or _running_here(self._watch):
            return
        self._watch = _spawn(self._watch_view(), "watch")

    async def _watch_view(self) -> None:
        while not self._closed():
            await asyncio.sleep(self._settings.refresh)
            self.start_refresh()

    async def _refresh_in_background(self, force: bool) -> None:
        try:
            await self.refresh(force_transit=force)
        except BackendUnavailable as e:
            self._retry_at = time.monotonic() + RETRY
            if e.reason != self.error:
                log.warning("signing keys: the published view was not read: %s", e.reason)
            self.error = e.reason
            raise
        self.error = ""

    async def refresh(self, *, force_transit: bool = False) -> None:
        """Read the store, check its entries, collect the long-past ones, withdraw the ones
        that vanished, and keep the view unless a read that started later already won."""
        self._seq += 1
        seq, read_at = self._seq, time.monotonic()
        stored = await self._store.entries()
        if len(stored) > MAX_ENTRIES:
            raise BackendUnavailable("redis: the endorsed-keys hash is malformed or too large")
        withdrawn = await self._store.withdrawn(stored)
        stored = {kid: value for kid, value in stored.items() if kid not in withdrawn}
        transit = await self._vault.keyset(force=force_transit)
        entries, unknown_endorser = self._entries.verify_all(stored, transit)
        recheck = time.monotonic() - self._vault.forced_at >= self._settings.refresh
        if unknown_endorser and not force_transit and recheck:
            transit = await self._vault.keyset(force=True)  # a rotation we have not read yet?
            entries, _ = self._entries.verify_all(stored, transit)
        old = expired(self._entries.ends(stored, entries), self._clock())
        if old:
            with contextlib.suppress(BackendUnavailable):  # best effort: removed on a later read
                await self._store.remove(old)
        gone = vanished(self.view, seq, entries, self._clock())
        if gone:  # deleted, refused or marked withdrawn before their publish_until: final
            log.warning("session keys %s left the published set: withdrawn for good", sorted(gone))
            await self._store.withdraw(gone)
        view = self._build(entries, transit, read_at, seq)
        if self.view is None or seq > self.view.seq:  # a read that started later wins
            self.view = view

    def _build(self, entries: Iterable[Endorsement], transit: KeySet, read_at: float, seq: int) -> View:
        view = build_view(entries, transit, self._clock(), read_at, seq)
        if view.left_out and not self._too_many:
            log.warning("more than %d keys to publish: the oldest session keys are left out", MAX_JWKS_KEYS)
            self._too_many = True
        return view


class EndorsedSigningBackend:
    """``SigningBackend`` with per-process session keys endorsed by a Transit key (see the
    module docstring).

    Takes ownership of ``transit`` and ``store`` (closed by ``aclose``); build it with
    ``connect`` to get both with the broker's timeouts. ``settings``: ``SignerSettings``;
    ``clock``: wall clock, epoch seconds. The decisions (what is published, which key
    signs) are ``broker.token.published``'s; this class reads, stores and schedules.
    """

    def __init__(
        self,
        *,
        transit: TransitSigningBackend,
        store: EndorsementStore,
        settings: SignerSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._transit, self._store, self._settings, self._clock = transit, store, settings, clock
        self._vault = _VaultLiveness(transit, settings)
        self._entries = Entries(settings.issuer, transit.alg)
        self._published = _Published(store, self._vault, self._entries, settings, clock, lambda: self._closed)
        self._current: SessionKey | None = None
        self._next: SessionKey | None = None
        self._key_task: asyncio.Task[None] | None = None
        self._retry_at = -math.inf  # no endorsement attempt before (monotonic)
        self._key_error = ""  # why the last endorsement failed
        self._reported: SessionKey | None = None  # the key the signing-end gauge shows
        self._closed = False

    @classmethod
    def connect(
        cls,
        settings: SignerSettings,
        *,
        vault_addr: str,
        vault_token: str | TokenSource,
        redis_url: str,
        mount: str = "transit",
        key: str = "capbroker",
        alg: Algorithm = "EdDSA",
        prefix: str = DEFAULT_PREFIX,
        key_refresh: float = 10.0,
        verify: Verify = True,
        clock: Callable[[], float] = time.time,
    ) -> EndorsedSigningBackend:
        """The backend over a Transit key (``TransitSigningBackend`` with the settings'
        ``timeout`` and ``key_refresh``) and a Redis store with the fail-fast options."""
        transit = TransitSigningBackend(
            addr=vault_addr, token=vault_token, mount=mount, key=key, alg=alg, timeout=settings.timeout,
            refresh=key_refresh, verify=verify,
        )  # fmt: skip
        store = RedisEndorsementStore(async_redis(redis_url, settings.timeout), prefix, settings.timeout)
        return cls(transit=transit, store=store, settings=settings, clock=clock)

    @property
    def alg(self) -> Algorithm:
        return self._transit.alg

    @property
    def kid(self) -> str | None:
        """The session key that signs now, if any."""
        return self._current.kid if self._current is not None else None

    @property
    def rejected_entries(self) -> int:
        """Distinct stored values refused (the metric)."""
        return self._entries.refused

    # ------------------------------------------------------------------ the port

    async def sign(self, claims: Claims) -> str:
        """Sign in process with an endorsed, stored, published session key; never without."""
        if self._closed:
            raise BackendUnavailable("signer: the backend is closed")
        if claims.iss != self._settings.issuer:
            raise InvalidRequest("the token's issuer is not the one this signer's keys are endorsed for")
        if claims.exp - claims.iat > self._settings.max_token_ttl:
            raise InvalidRequest("the token outlives the lifetime cap its key is published for")
        await self._vault.require(self._closed)
        key = self._ready_key(claims.exp)
        if key is None:
            key = await self._wait_for_key(claims.exp)
        key.used = True
        if key is not self._reported:  # the gauge moves once per key, not once per token
            self._reported = key
            session_key_signs_until(key.endorsement.sign_until)
        return mint(claims, key.signer)

    async def keyset(self, *, kid: str | None = None, fresh: bool = False) -> KeySet:
        """The Transit versions and every published session key. With ``kid`` not among
        them, or ``fresh`` (the JWKS endpoint), the store is read again first (at most every
        ``MISS_COOLDOWN`` seconds). ``fresh``: another replica signs with its new session
        key as soon as it stored it; a verifier that fetched this JWKS a moment later
        without the key would keep that set for its refetch cooldown."""
        if self._closed:
            raise BackendUnavailable("signer: the backend is closed")
        await self._vault.require(self._closed)  # introspection and exchange answer 503 too
        return await self._published.keyset(kid=kid, fresh=fresh)

    async def rotate(self) -> str:
        """Rotate the long-term Transit key (``broker keys rotate``; needs the rotate
        policy) and return its new kid. Session keys are not replaced: every worker's next
        endorsement uses the new version, and endorsements by older versions stay valid
        while Transit publishes those versions. ``renew`` replaces this worker's key."""
        return await self._transit.rotate()

    async def sign_statement(self, typ: str, payload: bytes) -> str:
        """A statement (an audit checkpoint) signed by the long-term Transit key, never by
        a session key: ``TransitSigningBackend.sign_statement``."""
        if self._closed:
            raise BackendUnavailable("signer: the backend is closed")
        return await self._transit.sign_statement(typ, payload)

    async def renew(self) -> str:
        """Endorse, store and use a new session key now; return its kid."""
        if self._closed:
            raise BackendUnavailable("signer: the backend is closed")
        key = await self._endorse_new()
        self._current, self._next = key, None
        return key.kid

    async def check(self) -> None:
        """Vault signs (a probe through Transit) and this worker holds a usable key."""
        await self._transit.check()
        if self._closed:
            raise BackendUnavailable("signer: the backend is closed")
        exp = int(self._clock()) + 1
        if self._ready_key(exp) is None:
            await self._wait_for_key(exp)

    async def aclose(self) -> None:
        """Stop background work, withdraw the keys this worker never signed with, close."""
        if self._closed:
            return
        self._closed = True
        for task in (*self._published.background(), self._key_task, self._vault.task()):
            if _running_here(task):
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        unused = [k.kid for k in (self._current, self._next) if k is not None and not k.used]
        self._current = self._next = None  # the private keys go with them
        if unused:
            try:
                await self._store.remove(unused)
            except BackendUnavailable:
                log.warning("could not withdraw unused session keys %s", unused)
        await self._store.aclose()
        await self._transit.aclose()

    async def wait_idle(self) -> None:
        """Wait (at most about ``timeout``) for the background work in flight: a re-read
        of the published keys, a successor's endorsement. For tests and shutdown."""
        for task in (self._published.task, self._key_task, self._vault.task()):
            if task is not None and task.get_loop() is asyncio.get_running_loop():
                await _bounded(task, self._settings)

    def __repr__(self) -> str:  # never a private key
        return f"EndorsedSigningBackend(transit={self._transit!r}, store={self._store!r}, kid={self.kid!r})"

    # ------------------------------------------------------------------ choosing a key

    def _ready_key(self, exp: int) -> SessionKey | None:
        """The key to sign a token expiring at ``exp`` with, now, if there is one; starts
        the background work that is due (a re-read, a successor)."""
        view = self._published.usable()
        if view is None:
            return None
        choice = choose(
            self._current, self._next, view.session_kids, now=self._clock(), exp=exp, lead=self._settings.lead
        )
        for key in choice.dropped:
            log.warning("session key %s withdrawn: %s", key.kid, "its endorsement is no longer published")
        self._current, self._next = choice.current, choice.next
        if choice.renew:
            self._start_renewal()
        return choice.key

    async def _wait_for_key(self, exp: int) -> SessionKey:
        deadline = time.monotonic() + self._settings.timeout + _MARGIN
        while True:
            key = self._ready_key(exp)
            if key is not None:
                return key
            pending = [t for t in (self._published.task, self._key_task) if t is not None and not t.done()]
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                raise BackendUnavailable(self._why_no_key())
            await asyncio.wait(pending, timeout=left)

    def _why_no_key(self) -> str:
        if self._published.error:
            return self._published.error
        if self._published.fresh() is None:
            return "signer: the published keys could not be read in time"
        return self._key_error or "signer: no endorsed key can sign this token yet"

    # ------------------------------------------------------------------ background work

    def _start_renewal(self) -> None:
        if _running_here(self._key_task):
            return
        if time.monotonic() < self._retry_at or self._closed:
            return
        self._key_task = _spawn(self._renew(), "renewal")

    async def _renew(self) -> None:
        try:
            key = await self._endorse_new()
        except BackendUnavailable as e:
            self._retry_at = time.monotonic() + RETRY
            if e.reason != self._key_error:
                log.warning("signing keys: no new session key: %s", e.reason)
            self._key_error = e.reason
            raise
        now = self._clock()
        current = self._current
        if current is not None and current.endorsement.signs_at(now) and current.kid in self._published.kids():
            self._next = key
        else:
            self._current, self._next = key, None
        self._key_error = ""

    async def _endorse_new(self) -> SessionKey:
        """A new session key, endorsed by Transit, verified, stored and read back."""
        s = self._settings
        signer = LocalSigner.generate(self.alg, new_session_kid())
        w = windows(int(self._clock()), s.window + s.lead, s.max_token_ttl)
        compact = await self._transit.sign_statement(ENDORSEMENT_TYP, endorsement_payload(signer.public, s.issuer, w))
        transit = await self._vault.keyset()  # the read sign_statement just made
        try:
            endorsement = verify_endorsement(compact, transit, issuer=s.issuer, alg=self.alg)
        except EndorsementError as e:
            raise BackendUnavailable(f"vault: the endorsement does not verify ({e.code})") from None
        if endorsement.key != signer.public:  # cannot happen: the payload came from signer.public
            raise BackendUnavailable("signer: the endorsement names another key")
        if not await self._store.add(signer.kid, compact):
            raise BackendUnavailable("redis: a session key of that kid is already stored")
        await self._published.refresh()
        if signer.kid not in self._published.kids():
            raise BackendUnavailable("signer: the stored endorsement is not published (over the JWKS cap?)")
        log.info(
            "session key %s endorsed by %s: signs until %d, published until %d",
            signer.kid, endorsement.endorser, endorsement.sign_until, endorsement.publish_until,
        )  # fmt: skip
        return SessionKey(signer, endorsement)


def _running_here(task: asyncio.Task[None] | None) -> TypeGuard[asyncio.Task[None]]:
    """A task not done yet, on this event loop (one left by another loop is ignored)."""
    return task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop()


def _spawn(work: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(work, name=f"capbroker-signing-{what}")
    task.add_done_callback(_settled)
    return task


async def _bounded(task: asyncio.Task[None] | None, settings: SignerSettings) -> None:
    """Wait for background work, at most about ``timeout``; its failure is recorded."""
    if task is not None and not task.done():
        await asyncio.wait([task], timeout=settings.timeout + _MARGIN)


def _settled(task: asyncio.Task[None]) -> None:
    """Retrieve a background task's outcome; ``BackendUnavailable`` was recorded and
    logged by the task itself, anything else is a bug to show (the caller fails closed)."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None and not isinstance(error, BackendUnavailable):
        log.error("signing keys: unexpected %s", type(error).__name__, exc_info=error)
