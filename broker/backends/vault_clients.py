"""``VaultClients``: blocking hvac clients on a small thread pool, for the async broker.

One hvac client per worker thread (requests sessions are not shared between threads),
each on a fail-fast session: no retries, no redirects, no proxies or credentials from the
environment. ``run`` bounds a call by the HTTP timeout plus a small margin; translating a
failure into ``BackendUnavailable`` is the caller's, which knows what each failure means.
Shared by the Transit signer and the Vault token lookup.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import hvac
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from broker.errors import BackendUnavailable

T = TypeVar("T")

TIMEOUT_MARGIN: Final = 0.5  # wide enough that a loaded machine still hits the HTTP timeout first


def fail_fast_session(verify: bool | str) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxies, CA bundles or netrc credentials from the environment
    session.verify = verify
    # no retry of any kind: a failed call fails now, and the caller answers 503
    adapter = HTTPAdapter(max_retries=Retry(total=0, read=False, redirect=False), pool_connections=1, pool_maxsize=1)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class VaultClients:
    def __init__(self, addr: str, token: str, *, timeout: float, verify: bool | str, workers: int, name: str) -> None:
        self._addr, self._token, self._timeout, self._verify = addr, token, timeout, verify
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self.closed = False

    async def run(self, operation: Callable[[Any], T], *, closed_reason: str = "vault: closed") -> T:
        """``operation(client)`` on a pool thread, bounded by the timeout plus the margin.
        Its exceptions (and ``TimeoutError``) reach the caller untranslated."""
        if self.closed:
            raise BackendUnavailable(closed_reason)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, lambda: operation(self._client()))
        return await asyncio.wait_for(future, self._timeout + TIMEOUT_MARGIN)

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
                token=self._token,
                timeout=self._timeout,  # type: ignore[arg-type]  # requests takes float seconds; the stub says int
                verify=self._verify,
                session=session,
                allow_redirects=False,
            )
            self._local.client = client
        return client
