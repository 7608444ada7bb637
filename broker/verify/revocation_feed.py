"""``RevocationFeed``: a local revocation set, kept current from the broker's Redis.

A verifier that asks Redis on every verification pays a round trip per request. The feed
asks once, then listens: the broker writes every revocation durably and THEN announces
it on the pub/sub channel ``<prefix>revocations`` (``redis_keys.revocation_message``).
A daemon thread keeps one subscribed connection:

1. SUBSCRIBE, and wait for Redis to confirm it;
2. load the durable state: ``SCAN <prefix>rev:*`` in bounded pages, each page's TTLs
   (and the agents' cut-offs) in one pipelined round trip. A revocation written before
   the subscription is in the durable state; one written after it is also announced on
   the connection, queued behind the load;
3. apply the queued and the new announcements, and PING on the same connection every
   ``ping_interval`` seconds. Redis answers in order, so the answer to a PING sent at
   time ``t`` proves every revocation announced before ``t`` has been applied: ``t``
   becomes the feed's *confirmed* time.

Fail closed: ``is_revoked`` raises ``RevocationUnavailable`` (the ``Verifier`` then
rejects with ``revocation_unavailable``) before the first load and its first PING
answer, as soon as the connection is known broken, and whenever the confirmed time is
more than ``max_staleness`` seconds old (a paused Redis, a stuck network, a starved
thread). So a revocation announced at ``T`` is applied, or every check fails, by
``T + max_staleness``. On any error the thread drops the connection and starts again at
step 1 (after a short, capped back-off): what was revoked while it was away is in the
durable state it reloads. An announcement it cannot read (malformed, an unknown kind),
or a key under ``<prefix>rev:`` of a family it does not know, counts as an error, not as
nothing: it reconnects and reloads, failing closed meanwhile. A forked child (a worker
server that loads the app, then forks) starts the feed afresh: it never serves a set it
inherited.

Entries expire when no token they could apply to is still acceptable, as the broker's
keys do (``broker.service.retention``, mirrored here: the verifier library does not
import the broker's policy): a token id at its ``exp`` + 120 s, a task at its revocation
time + 3600 + 120 s, an agent cut-off at the cut-off + 3600 + 120 s (an entry loaded from
Redis when its key expires, by the key's TTL). The verifier's ``max_ttl`` is at most
3600 s, so no acceptable token outlives its entry.

Redis is reached with explicit socket timeouts and no retries (``fail_fast``); the feed's
own loop is the only retry, and it is visible: ``ready`` is false and every check fails
until it succeeds.

On a Redis Cluster (``redis+cluster://``) the announcements are sharded: the feed asks the
cluster's slot map which primary serves the channel (every revocation key shares its slot,
``redis_keys``), and on a plain connection to it sends ``SSUBSCRIBE`` and ``SCAN``s that
node alone. When the slot moves (a reshard, a failover) the node says ``sunsubscribe``
or the connection breaks: the feed starts again on the new owner, as after any error. A
plain URL that reaches a cluster node is refused (the feed stays down, failing closed): it
would listen where the broker never announces and read untagged keys nobody writes.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from redis import Redis
from redis.exceptions import ResponseError

from broker.token.claims import Claims
from broker.verify import redis_keys as keys
from broker.verify.redis_keys import URL_SCHEMES, on_cluster
from broker.verify.redis_options import database, is_cluster, parse_cluster_url, sync_redis
from broker.verify.revocation_set import FAMILIES, FeedProtocolError, RevocationSet

log = logging.getLogger(__name__)

SCAN_PAGE: Final = 1000
_BACKOFF_FIRST: Final = 0.05
_BACKOFF_MAX: Final = 0.5
_PURGE_EVERY: Final = 5.0


class RevocationUnavailable(Exception):
    """The feed cannot vouch that its set is current: not loaded, disconnected, or stale."""


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class _FeedState:
    """Everything the thread touches. The thread holds this, never the ``RevocationFeed``,
    so a feed nobody references any more is collected, and its finaliser stops the thread.

    One writer (the thread); readers only do single dict look-ups, atomic under the GIL.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        db: int,
        timeout: float,
        max_staleness: float,
        ping_interval: float,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        purge_every: float,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.channel = keys.revocation_channel(prefix, db)
        self.timeout = timeout
        self.max_staleness = max_staleness
        self.ping_interval = ping_interval
        self.clock = clock
        self.monotonic = monotonic
        self.purge_every = purge_every
        self.revocations = RevocationSet()  # its one writer is this thread
        #: monotonic send time of the last PING answered after a full load; -inf when down
        self.confirmed_at = -math.inf
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.last_error: str | None = None
        self.purges = 0  # purges done: tests wait on it

    # ------------------------------------------------------------------ the thread

    def run(self) -> None:
        failures = 0  # in a row, without the feed coming up in between
        while not self.stop.is_set():
            try:
                self._session()
            except Exception as e:  # noqa: BLE001 -- any failure: drop the connection, fail closed, start again
                failures = 1 if self.ready.is_set() else failures + 1
                self._down(type(e).__name__)
            else:
                self._down(None)
            self.stop.wait(min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** min(failures - 1, 8)))

    def _down(self, error: str | None) -> None:
        was_up = self.ready.is_set()
        self.confirmed_at = -math.inf
        self.ready.clear()
        if error is not None:
            if was_up or self.last_error != error:
                log.warning("revocation feed down (%s): verifications fail closed until it is back", error)
            self.last_error = error

    def _session(self) -> None:
        client: Redis = sync_redis(self.url, self.timeout)
        conn: Any = None
        try:
            node, subscribe = self._node(client)
            conn = node.connection_pool.get_connection()
            conn.send_command(subscribe, self.channel)
            reply = conn.read_response()
            if not (isinstance(reply, list) and reply[:2] == [subscribe.lower(), self.channel]):
                raise FeedProtocolError("no subscription")
            self._load(node)
            self._listen(conn)
        finally:
            if conn is not None:
                conn.disconnect()
            client.close()

    def _node(self, client: Redis) -> tuple[Redis, str]:
        """The client of the node to listen on and load from, and how to subscribe there:
        on a cluster, the primary serving the channel's slot, sharded; else ``client``
        itself, which must not be a cluster node (module docstring)."""
        if is_cluster(client):
            node: Any = client.get_node_from_key(self.channel)  # type: ignore[attr-defined]
            return node.redis_connection, "SSUBSCRIBE"
        try:
            enabled = str(client.info("cluster").get("cluster_enabled", "0"))
        except ResponseError:  # INFO denied (an ACL): not a node that serves a cluster's keys
            enabled = "0"
        if enabled != "0":
            raise FeedProtocolError("a cluster node on a plain redis:// URL: use redis+cluster://")
        return client, "SUBSCRIBE"

    def _load(self, client: Redis) -> None:
        """The durable state, page by page: one SCAN and one pipelined read per page."""
        now = self.clock()
        cursor = 0
        pattern = _glob_escape(self.prefix) + "rev:*"
        while True:
            cursor, page = client.scan(cursor, match=pattern, count=SCAN_PAGE)
            names = [name if isinstance(name, str) else name.decode() for name in page]
            if names:
                pipe = client.pipeline(transaction=False)
                for name in names:
                    pipe.pttl(name)
                    if self._family(name)[0] == "agent":
                        pipe.get(name)
                replies = iter(pipe.execute())
                for name in names:
                    kind, ident = self._family(name)
                    pttl = next(replies)
                    value = next(replies) if kind == "agent" else None
                    self.revocations.load(kind, ident, pttl, value, now)
            if cursor == 0:
                return

    def _family(self, name: str) -> tuple[str, str]:
        family, sep, ident = name[len(self.prefix) + len("rev:") :].partition(":")
        kind = FAMILIES.get(family)
        if not name.startswith(self.prefix + "rev:") or not sep or kind is None or not ident:
            raise FeedProtocolError("a revocation key of an unknown family")
        return kind, ident

    def _listen(self, conn: Any) -> None:
        """Apply announcements and keep the confirmed time moving, until stopped or broken."""
        pending: deque[tuple[int, float]] = deque()  # PINGs sent and not yet answered
        seq = 0
        next_ping = self.monotonic()
        next_purge = self.monotonic() + self.purge_every
        while not self.stop.is_set():
            now = self.monotonic()
            if now >= next_ping:
                seq += 1
                conn.send_command("PING", str(seq))
                pending.append((seq, now))
                next_ping = now + self.ping_interval
            if pending and now - pending[0][1] > self.timeout:
                raise TimeoutError("no answer to PING")
            if now >= next_purge:
                self.purge()
                next_purge = now + self.purge_every
            if conn.can_read(timeout=max(0.0, min(next_ping, next_purge) - now)):
                self._handle(conn.read_response(), pending)

    def _handle(self, reply: object, pending: deque[tuple[int, float]]) -> None:
        if not isinstance(reply, list) or len(reply) < 2:
            raise FeedProtocolError("unexpected reply")
        if reply[0] in ("message", "smessage") and len(reply) == 3 and reply[1] == self.channel:
            self.revocations.apply(reply[2])
        elif reply[0] == "pong":
            while pending and str(pending[0][0]) != reply[1]:
                pending.popleft()  # answered before: Redis answers in order
            if not pending:
                raise FeedProtocolError("an answer to no PING")
            _, sent = pending.popleft()
            self.confirmed_at = sent
            if not self.ready.is_set():
                self.ready.set()
                if self.last_error is not None:
                    log.warning("revocation feed back (after %s)", self.last_error)
                self.last_error = None
        else:
            raise FeedProtocolError("unexpected reply")

    def purge(self) -> None:
        """Forget entries no acceptable token can need any more (bounded memory). Only
        the feed's thread calls it: it is the set's one writer."""
        self.revocations.purge(self.clock())
        self.purges += 1


class RevocationFeed:
    """A local revocation set fed by the broker's Redis (see the module docstring).

    ``timeout`` bounds every Redis call and the wait for a PING's answer; ``max_staleness``
    is how old the last confirmation may be before every check fails (the bound on how
    late a revocation can be seen); ``ping_interval`` must be well under it. The thread
    starts at once; ``wait_ready`` waits for the first full load.
    """

    def __init__(
        self,
        url: str,
        *,
        issuer: str | None = None,
        prefix: str | None = None,
        timeout: float = 1.0,
        max_staleness: float = 1.0,
        ping_interval: float = 0.25,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        purge_every: float = _PURGE_EVERY,
    ) -> None:
        if not url.startswith(URL_SCHEMES):
            raise ValueError(f"a Redis URL starts with one of {', '.join(URL_SCHEMES)}")
        if not timeout > 0 or not purge_every > 0:
            raise ValueError("timeout and purge_every must be positive")
        if not 0 < ping_interval <= max_staleness / 2:
            raise ValueError("ping_interval must be positive and at most half of max_staleness")
        if on_cluster(url):  # a malformed URL fails here, not in the thread
            parse_cluster_url(url)
            db = 0  # a cluster has no other (and its client would connect at once)
        else:
            probe = sync_redis(url, timeout)
            db = database(probe)
            probe.close()
        self._settings: dict[str, Any] = {
            "url": url,
            "prefix": keys.state_prefix(keys.deployment_prefix(issuer, prefix), cluster=on_cluster(url)),
            "db": db,
            "timeout": timeout,
            "max_staleness": max_staleness,
            "ping_interval": ping_interval,
            "clock": clock,
            "monotonic": monotonic,
            "purge_every": purge_every,
        }
        self._monotonic = monotonic
        self._max_staleness = max_staleness
        self._start()
        _LIVE.add(self)
        _hook_fork_once()

    def _start(self) -> None:
        """A fresh state (down until loaded) and its thread."""
        state = _FeedState(**self._settings)
        self._state = state
        self._revocations = state.revocations
        self._thread = threading.Thread(target=state.run, name="capbroker-revocation-feed", daemon=True)
        self._finalizer = weakref.finalize(self, state.stop.set)
        self._thread.start()

    def _restart_in_child(self) -> None:
        """After ``fork`` the child has the parent's set but not its thread: without this it
        would serve a set nobody updates until the staleness bound, then fail forever."""
        if not self._state.stop.is_set():
            self._finalizer.detach()
            self._start()

    def is_revoked(self, claims: Claims) -> bool:
        """True if the token, its task, or its agent or any delegator up to a cut-off is
        revoked; ``RevocationUnavailable`` if the set may be missing a revocation."""
        if self._monotonic() - self._state.confirmed_at > self._max_staleness:
            raise RevocationUnavailable(self._state.last_error or "revocation feed not confirmed")
        return self._revocations.revokes(claims)

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until ``ready``; True if it is."""
        deadline = self._monotonic() + timeout
        while not self.ready:
            left = deadline - self._monotonic()
            if left <= 0:
                return False
            if not self._state.ready.wait(left):  # not loaded yet: sleep until it is
                return False
            if not self.ready:  # loaded, not confirmed lately: a moment for the next answer
                self._state.stop.wait(min(left, 0.01))
        return True

    @property
    def ready(self) -> bool:
        """Loaded and confirmed recently enough that ``is_revoked`` answers."""
        return self._monotonic() - self._state.confirmed_at <= self._max_staleness

    @property
    def last_error(self) -> str | None:
        """The class name of the error that took the feed down, while it is down."""
        return self._state.last_error

    def key_withdrawn(self, kid: str) -> bool:
        """Whether the signing key ``kid`` was withdrawn: every token it signed is refused
        (``broker.verify.withdrawn``). No staleness check here: ``is_revoked``, which every
        verification calls, fails closed while the feed is behind."""
        return self._revocations.key_withdrawn(kid)

    def __len__(self) -> int:
        """How many revocations the set holds (token ids, tasks and agent cut-offs)."""
        return len(self._revocations)

    def close(self) -> None:
        """Stop the thread and drop the connection (within about ``ping_interval``)."""
        self._finalizer()
        _LIVE.discard(self)
        self._thread.join(self._state.timeout + self._state.ping_interval + 1.0)


#: the feeds of this process, for a forked child to restart (a worker server that loads
#: the app, then forks its workers)
_LIVE: weakref.WeakSet[RevocationFeed] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for feed in list(_LIVE):
        feed._restart_in_child()


_HOOKED: list[bool] = []  # the at-fork hook, registered by the first feed (never at import)


def _hook_fork_once() -> None:
    if not _HOOKED:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _HOOKED.append(True)
