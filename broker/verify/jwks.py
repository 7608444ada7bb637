"""A JWKS fetched over HTTP(S), cached with bounded refresh, failing closed when stale.

* An unknown ``kid`` triggers at most one refetch per ``cooldown``.
* The set is refreshed every ``refresh`` seconds on use.
* When fetching fails, the last good set is kept for at most ``max_stale`` seconds after
  it was fetched; after that every verification fails with ``keys_unavailable``.
* A malformed JWKS counts as a failed fetch: the last good set stays.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Final

from broker.errors import TokenRejected
from broker.token.keys import KeySet, VerificationKey

MAX_JWKS_BYTES: Final = 256 * 1024
_LOOPBACK_HTTP = re.compile(r"http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]{1,5})?/\S*")
_HTTPS = re.compile(r"https://\S+")
#: plain http to a named host (a sibling container, a cluster-internal service name): only
#: when the caller said so (``allow_insecure``)
_ANY_HTTP = re.compile(r"http://[A-Za-z0-9.-]+(:[0-9]{1,5})?/\S*")

log = logging.getLogger("broker.verify")

Fetch = Callable[[str], bytes]


def check_jwks_url(url: str, *, allow_insecure: bool = False) -> str:
    """``url`` if keys may be fetched from it: https, or http on loopback; with
    ``allow_insecure``, also http to a named host (never by default: anyone on the path
    between could serve their own keys)."""
    if _HTTPS.fullmatch(url) or _LOOPBACK_HTTP.fullmatch(url):
        return url
    if allow_insecure and _ANY_HTTP.fullmatch(url):
        return url
    raise ValueError(
        "jwks_url must be https (plain http only on loopback, or to a named host with allow_insecure_jwks=True)"
    )


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A key set is fetched from exactly the configured URL: a redirect is a failed fetch
    (it could downgrade https to http, or point anywhere)."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def read_capped(request: urllib.request.Request, *, timeout: float, cap: int, what: str) -> bytes:
    """The body of a 200 answer to ``request``, at most ``cap`` bytes; redirects refused."""
    with _OPENER.open(request, timeout=timeout) as response:
        if response.status != 200:
            raise OSError(f"{what} answered {response.status}")
        body: bytes = response.read(cap + 1)
    if len(body) > cap:
        raise OSError(f"{what} too large")
    return body


def fetch_url(url: str, *, timeout: float = 2.0, allow_insecure: bool = False) -> bytes:
    """GET ``url`` (already checked) with a timeout and a size cap; redirects are refused."""
    checked = check_jwks_url(url, allow_insecure=allow_insecure)
    request = urllib.request.Request(checked, headers={"Accept": "application/json"})  # noqa: S310
    return read_capped(request, timeout=timeout, cap=MAX_JWKS_BYTES, what="JWKS fetch")


class RemoteJwks:
    def __init__(
        self,
        url: str,
        *,
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.monotonic,
        cooldown: float = 30.0,
        refresh: float = 300.0,
        max_stale: float = 3600.0,
        allow_insecure: bool = False,
    ) -> None:
        if not 0 < cooldown <= refresh <= max_stale:
            raise ValueError("need 0 < cooldown <= refresh <= max_stale")
        self._url = check_jwks_url(url, allow_insecure=allow_insecure)
        if not (_HTTPS.fullmatch(url) or _LOOPBACK_HTTP.fullmatch(url)):
            log.warning("UNSAFE: the JWKS at %s is fetched over plain http (allow_insecure_jwks)", url)
        self._fetch = fetch or functools.partial(fetch_url, allow_insecure=allow_insecure)
        self._clock = clock
        self._cooldown = cooldown
        self._refresh = refresh
        self._max_stale = max_stale
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")  # last successful fetch
        self._attempted_at = float("-inf")  # last attempt, successful or not

    def _try_fetch(self, now: float) -> None:
        self._attempted_at = now
        try:
            keys = KeySet.from_jwks(json.loads(self._fetch(self._url)))
        except Exception:  # noqa: BLE001 -- any failure is a failed fetch; staleness then fails closed
            return  # keep the last good set; staleness decides when that stops being enough
        self._keys = keys
        self._fetched_at = now

    def key_for(self, kid: str) -> VerificationKey | None:
        with self._lock:
            now = self._clock()
            if now - self._fetched_at >= self._refresh and now - self._attempted_at >= self._cooldown:
                self._try_fetch(now)
            if self._keys is None or now - self._fetched_at > self._max_stale:
                raise TokenRejected("keys_unavailable", "no fresh JWKS")
            key = self._keys.key_for(kid)
            if key is None and now - self._attempted_at >= self._cooldown:
                self._try_fetch(now)
                key = self._keys.key_for(kid)
            return key
