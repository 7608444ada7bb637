"""The key sets of outside OIDC issuers, fetched and cached for ``jwt`` identities
(README, "Agent identities"; failing closed: docs/settings.md, "Time and failure").

* Where: ``jwks_uri`` from the policy, or else the issuer's discovery document
  (``<issuer>/.well-known/openid-configuration``), whose ``issuer`` must equal the
  configured one exactly and whose ``jwks_uri`` must be https (plain http on loopback).
  Both are parsed strictly by ``broker.identity.jwt_keys``.
* Cache: one entry per ``(issuer, jwks_uri)``, at most ``max_issuers`` of them (least
  recently used dropped). A set is refreshed every ``refresh`` seconds on use; a ``kid``
  the set lacks triggers at most one refetch per ``cooldown``. A failed fetch (refused,
  timed out, redirected, too large, malformed, private keys, a mix-up) keeps the last
  good set for at most ``max_stale`` seconds after it was fetched. With no usable set
  the answer is ``BackendUnavailable``: the broker fails closed with 503.
* Concurrency: callers for one entry queue on its ``asyncio.Lock``, so they share one
  fetch; the ones behind it find the fresh set (or the cooldown) and fetch nothing.
* Bounded time: discovery plus JWKS take at most ``timeout`` seconds together. The
  default fetch runs stdlib urllib on a small dedicated thread pool, each socket operation
  bounded by ``timeout``, no redirects, no proxies from the environment, at most
  ``max_bytes``.

Callers pass only issuers and URLs their policy names, never ones a token carries. Token
contents are never logged; a failure is logged with the issuer and an exception class.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from broker.errors import BackendUnavailable
from broker.identity.jwt_keys import (
    IdentityKeys,
    KeySetError,
    discovery_url,
    is_fetchable_url,
    jwks_uri_from_discovery,
)

__all__ = ["DEFAULT_MAX_BYTES", "MAX_ISSUERS", "Fetch", "OidcKeys"]

log = logging.getLogger("broker.oidc")

Fetch = Callable[[str], Awaitable[bytes]]
DEFAULT_MAX_BYTES: Final = 256 * 1024
MAX_ISSUERS: Final = 256
_FETCH_THREADS: Final = 4


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Keys come from exactly the URL asked for: a redirect is a failed fetch."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


#: ``ProxyHandler({})``: no proxy settings from the environment.
_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects)


def _get(url: str, *, timeout: float, cap: int) -> bytes:
    if not is_fetchable_url(url):
        raise OSError("refusing a URL that is not https (or loopback http)")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 -- checked above
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            if response.status != 200:
                raise OSError(f"answered {response.status}")
            body: bytes = response.read(cap + 1)
    except urllib.error.HTTPError as e:  # an error status, or a redirect we refused to follow
        e.close()
        raise OSError(f"answered {e.code}") from None
    if len(body) > cap:
        raise OSError(f"answer over {cap} bytes")
    return body


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    keys: IdentityKeys | None = None
    fetched_at: float = float("-inf")  # start of the last successful fetch
    attempted_at: float = float("-inf")  # start of the last attempt, successful or not
    failure: str = ""  # what went wrong last, for the BackendUnavailable reason


class OidcKeys:
    """Issuer key sets by ``(issuer, jwks_uri)``, cached; see the module docstring."""

    def __init__(
        self,
        *,
        fetch: Fetch | None = None,
        timeout: float = 2.0,
        cooldown: float = 30.0,
        refresh: float = 300.0,
        max_stale: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_issuers: int = MAX_ISSUERS,
    ) -> None:
        if not 0 < cooldown <= refresh <= max_stale:
            raise ValueError("need 0 < cooldown <= refresh <= max_stale")
        if timeout <= 0 or max_bytes <= 0 or max_issuers <= 0:
            raise ValueError("timeout, max_bytes and max_issuers must be positive")
        self._fetch: Fetch = fetch or self._default_fetch
        self._timeout = timeout
        self._cooldown = cooldown
        self._refresh = refresh
        self._max_stale = max_stale
        self._clock = clock
        self._max_bytes = max_bytes
        self._max_issuers = max_issuers
        self._entries: OrderedDict[tuple[str, str | None], _Entry] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None

    async def keys_for(self, issuer: str, jwks_uri: str | None, kid: str | None) -> IdentityKeys:
        """The key set of ``issuer`` (a policy value), fresh enough, or ``BackendUnavailable``.

        ``kid`` is the one the presented token names: when the set lacks it, the set is
        refetched (at most once per ``cooldown``). The returned set may still lack it.
        """
        if not is_fetchable_url(issuer) or (jwks_uri is not None and not is_fetchable_url(jwks_uri)):
            raise ValueError("issuer and jwks_uri must be https URLs (plain http only on loopback)")
        entry = self._entry((issuer, jwks_uri))
        async with entry.lock:
            now = self._clock()
            due = now - entry.fetched_at >= self._refresh
            unknown_kid = kid is not None and entry.keys is not None and kid not in entry.keys
            if (due or unknown_kid) and now - entry.attempted_at >= self._cooldown:
                await self._update(entry, issuer, jwks_uri, now)
            if entry.keys is None or now - entry.fetched_at > self._max_stale:
                wait = max(1.0, self._cooldown - (now - entry.attempted_at))
                raise BackendUnavailable(f"oidc: no usable key set for {issuer} ({entry.failure})", retry_after=wait)
            return entry.keys

    def close(self) -> None:
        """Stop the fetch threads (a fetch still running finishes on its own timeout)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def aclose(self) -> None:
        """``close`` for the broker's shutdown (the ``IssuerKeys`` port)."""
        self.close()

    def _entry(self, key: tuple[str, str | None]) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            while len(self._entries) >= self._max_issuers:
                self._entries.popitem(last=False)
            entry = self._entries[key] = _Entry()
        self._entries.move_to_end(key)
        return entry

    async def _update(self, entry: _Entry, issuer: str, jwks_uri: str | None, now: float) -> None:
        entry.attempted_at = now
        try:
            async with asyncio.timeout(self._timeout):
                uri = jwks_uri
                if uri is None:
                    uri = jwks_uri_from_discovery(await self._fetch(discovery_url(issuer)), issuer=issuer)
                keys = IdentityKeys.from_json(await self._fetch(uri))
        except TimeoutError:
            entry.failure = f"timed out after {self._timeout}s"
        except KeySetError as e:  # our own sentences: a mix-up, private keys, bad JSON
            entry.failure = str(e)[:160]
        except Exception as e:  # noqa: BLE001 -- any failure is a failed fetch; staleness then fails closed
            entry.failure = f"fetch failed: {type(e).__name__}"
        else:
            entry.keys, entry.fetched_at, entry.failure = keys, now, ""
            return
        log.warning("oidc: key set of %s not refreshed: %s", issuer, entry.failure)

    async def _default_fetch(self, url: str) -> bytes:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=_FETCH_THREADS, thread_name_prefix="oidc-keys")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: _get(url, timeout=self._timeout, cap=self._max_bytes))
