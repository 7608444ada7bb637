"""``VaultClients``: blocking hvac clients on a small thread pool, for the async broker.

One hvac client per worker thread (requests sessions are not shared between threads),
each on a fail-fast session: no retries, no redirects, no proxies or credentials from the
environment. ``run`` bounds a call by the HTTP timeout plus a small margin; translating a
failure into ``BackendUnavailable`` is the caller's, which knows what each failure means.
Shared by the Transit signer and the Vault token lookup.

The token is read before each call from a ``TokenSource`` (a fixed string, or the
renewed and followed ``broker.backends.vault_token.VaultToken``). A failed call is logged
here, once for all callers: Vault's address and the cause (``vault_failures.describe``),
repeated failures with backoff (``broker.repeat_log``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

import hvac
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from broker.backends.vault_failures import describe
from broker.errors import BackendUnavailable
from broker.repeat_log import RepeatLog
from broker.service.metrics import observe_vault

T = TypeVar("T")

TIMEOUT_MARGIN: Final = 0.5  # wide enough that a loaded machine still hits the HTTP timeout first

log = logging.getLogger("broker.vault")


class TokenSource(Protocol):
    """Where the broker's Vault token is read before each call."""

    @property
    def value(self) -> str: ...


class FixedToken:
    def __init__(self, value: str) -> None:
        self._value = value

    @property
    def value(self) -> str:
        return self._value

    def __repr__(self) -> str:  # never the token
        return "FixedToken(...)"


def token_source(token: str | TokenSource) -> TokenSource:
    return FixedToken(token) if isinstance(token, str) else token


def _never(_: BaseException) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class VaultTls:
    """How the broker's TLS connection to Vault is made: the CAs that sign Vault's
    certificate (``True``: the system's; a path: ``vault_ca_file``) and, for a listener
    that requires one, the broker's client certificate and key (``vault_client_cert``/``_key``)."""

    ca: bool | str = True
    client_cert: tuple[str, str] | None = field(default=None, repr=False)


Verify = bool | str | VaultTls


def tls_of(verify: Verify) -> VaultTls:
    return verify if isinstance(verify, VaultTls) else VaultTls(ca=verify)


def fail_fast_session(verify: Verify) -> requests.Session:
    tls = tls_of(verify)
    session = requests.Session()
    session.trust_env = False  # no proxies, CA bundles or netrc credentials from the environment
    session.verify = tls.ca
    session.cert = tls.client_cert
    # no retry of any kind: a failed call fails now, and the caller answers 503
    adapter = HTTPAdapter(max_retries=Retry(total=0, read=False, redirect=False), pool_connections=1, pool_maxsize=1)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class VaultClients:
    def __init__(
        self,
        addr: str,
        token: str | TokenSource,
        *,
        timeout: float,
        verify: Verify,
        workers: int,
        name: str,
        log_failures: bool = True,
    ) -> None:
        self._addr, self._token, self._timeout, self._verify = addr, token_source(token), timeout, verify
        self._log_failures = log_failures
        self._failures = RepeatLog()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self.closed = False

    async def run(
        self,
        operation: Callable[[Any], T],
        *,
        closed_reason: str = "vault: closed",
        expected: Callable[[BaseException], bool] = _never,
    ) -> T:
        """``operation(client)`` on a pool thread, bounded by the timeout plus the margin.
        Its exceptions (and ``TimeoutError``) reach the caller untranslated, logged first
        unless ``expected(error)`` (an answer about what was asked, not a Vault failure)."""
        if self.closed:
            raise BackendUnavailable(closed_reason)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, lambda: operation(self._client()))
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(future, self._timeout + TIMEOUT_MARGIN)
        except Exception as e:
            observe_vault(time.perf_counter() - started)
            if self._log_failures and not expected(e):
                self._log_failure(e)
            raise
        observe_vault(time.perf_counter() - started)
        if self._log_failures and self._failures.success():
            log.info("vault at %s answers again", self._addr)
        return result

    def _log_failure(self, error: Exception) -> None:
        line = self._failures.failure(
            f"vault at {self._addr}: {describe(error, timeout=self._timeout)}", time.monotonic()
        )
        if line is not None:
            log.error(line)

    def close(self) -> None:
        self.closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            session = fail_fast_session(self._verify)
            with self._sessions_lock:
                self._sessions.append(session)
            client = hvac.Client(
                url=self._addr,
                token=self._token.value,
                timeout=self._timeout,  # type: ignore[arg-type]  # requests takes float seconds; the stub says int
                verify=tls_of(self._verify).ca,  # hvac passes it with each request: the CA only
                session=session,
                allow_redirects=False,
            )
            self._local.client = client
        token = self._token.value
        if client.token != token:  # renewed tokens keep their value; a re-read file brings a new one
            client.token = token
        return client
