"""``VaultClients``: blocking hvac clients on a small thread pool, for the async broker.

One hvac client per worker thread (requests sessions are not shared between threads),
each on a fail-fast session: no retries, no redirects, no proxies or credentials from the
environment. ``run`` bounds a call by the HTTP timeout plus a small margin; translating a
failure into ``BackendUnavailable`` is the caller's, which knows what each failure means.
Shared by the Transit signer and the Vault token lookup.

``addr`` may list the nodes of an HA cluster (``broker.vault_addrs``): every session's
transport is a ``broker.backends.vault_failover.FailoverAdapter`` over them, which sends a
request to the node that answered last and moves on only when it was not performed; a
caller declares a request safe to send twice (``resend``) when it is a read or a sign.

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

from broker.backends.vault_failover import FailoverAdapter, NodeHint
from broker.backends.vault_failures import describe
from broker.errors import BackendUnavailable
from broker.repeat_log import RepeatLog
from broker.service.metrics import observe_vault
from broker.vault_addrs import parse_vault_addrs

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


def fail_fast_session(
    verify: Verify, *, addr: str | None = None, hint: NodeHint | None = None, resend: bool = False
) -> requests.Session:
    """A session with no retry of any kind (a failed call fails now, and the caller answers
    503), no redirects followed and nothing from the environment; with ``addr``, its
    transport sends each request to the node of ``addr`` that performs it."""
    tls = tls_of(verify)
    session = requests.Session()
    session.trust_env = False  # no proxies, CA bundles or netrc credentials from the environment
    session.verify = tls.ca
    session.cert = tls.client_cert
    adapter = (
        HTTPAdapter(max_retries=Retry(total=0, read=False, redirect=False), pool_connections=1, pool_maxsize=1)
        if addr is None
        else FailoverAdapter(parse_vault_addrs(addr), hint, resend=resend)
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def failover_of(session: requests.Session) -> FailoverAdapter:
    adapter = session.get_adapter("https://")
    if not isinstance(adapter, FailoverAdapter):
        raise TypeError("a session built without addr")
    return adapter


def hvac_client(
    addr: str, *, token: str | None, timeout: float, verify: Verify, resend: bool = False, hint: NodeHint | None = None
) -> Any:
    """An hvac client over the nodes of ``addr`` (built with the first one's address; its
    session's transport picks the node). Close it with ``client.adapter.close()``."""
    session = fail_fast_session(verify, addr=addr, hint=hint, resend=resend)
    return hvac.Client(
        url=parse_vault_addrs(addr)[0],
        token=token,
        timeout=timeout,  # type: ignore[arg-type]  # requests takes float seconds; the stub says int
        verify=tls_of(verify).ca,  # hvac passes it with each request: the CA only
        session=session,
        allow_redirects=False,
    )


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
        parse_vault_addrs(addr)  # a bad list is refused here, not at the first call
        self._hint = NodeHint()  # shared by the threads' sessions: the node that answered last
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
        resend: bool = False,
    ) -> T:
        """``operation(client)`` on a pool thread, bounded by the timeout plus the margin.
        Its exceptions (and ``TimeoutError``) reach the caller untranslated, logged first
        unless ``expected(error)`` (an answer about what was asked, not a Vault failure).
        ``resend``: its requests may be sent to another node after a connection broke
        mid-request (reads and signs; never a token create)."""
        if self.closed:
            raise BackendUnavailable(closed_reason)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, lambda: self._call(operation, resend))
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

    def _call(self, operation: Callable[[Any], T], resend: bool) -> T:
        client = self._client()
        failover_of(client.session).resend = resend
        return operation(client)

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = hvac_client(
                self._addr, token=self._token.value, timeout=self._timeout, verify=self._verify, hint=self._hint
            )
            with self._sessions_lock:
                self._sessions.append(client.session)
            self._local.client = client
        token = self._token.value
        if client.token != token:  # renewed tokens keep their value; a re-read file brings a new one
            client.token = token
        return client
