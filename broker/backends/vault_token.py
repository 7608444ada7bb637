"""``VaultToken``: the broker's own Vault token, kept alive for the life of the process.

- Where it comes from: ``BROKER_VAULT_TOKEN``, or ``vault_token_file``, which is watched:
  when its content changes (an operator, Vault Agent or an injector writes a new token,
  usually by rename), the new token is used from the next call on.
- Renewal: ``keep()`` (a background task of the app) asks ``auth/token/lookup-self`` what
  the token has left and renews it (``auth/token/renew-self``) half way through
  (``broker.backends.token_lease``). Both paths are in ``infra/vault/capbroker-policy.hcl``.
- Or it logs in by itself (``vault_auth: approle``, ``broker.backends.vault_login``): at
  start, and again when renewal fails or the token nears a max TTL it cannot pass.
- When it cannot: the log says so with Vault's address and the cause (403, unreachable,
  TLS ...), repeated failures with backoff (``broker.repeat_log``); Vault calls then fail
  and the broker answers 503, never anything signed otherwise.

Every ``VaultClients`` built with this object reads ``value`` before each call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from broker.backends.token_lease import TokenLease, lease_from_lookup, lease_from_renewal
from broker.backends.vault_clients import VaultClients, Verify
from broker.backends.vault_failures import describe
from broker.backends.vault_login import token_of
from broker.repeat_log import RepeatLog

log = logging.getLogger("broker.vault")

#: how often the token file is looked at, and the renewal checked (seconds)
POLL: Final = 0.5
_POLICY_HINT: Final = " (infra/vault/capbroker-policy.hcl allows auth/token/lookup-self and renew-self)"


class VaultToken:
    def __init__(
        self,
        value: str,
        *,
        addr: str,
        file: Path | None = None,
        timeout: float = 1.0,
        verify: Verify = True,
        clock: Callable[[], float] = time.monotonic,
        login: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        if not value:
            raise ValueError("a Vault token is required")
        self._value, self._addr, self._file, self._clock = value, addr, file, clock
        self._login = login
        self._file_text = value
        self._lease: TokenLease | None = None
        self._failures = RepeatLog()
        self._vault = VaultClients(
            addr, self, timeout=timeout, verify=verify, workers=1, name="capbroker-vault-token", log_failures=False
        )
        self._timeout = timeout

    @property
    def value(self) -> str:
        return self._value

    @classmethod
    def logged_in(
        cls,
        login: Callable[[], dict[str, Any]],
        *,
        addr: str,
        timeout: float = 1.0,
        verify: Verify = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> VaultToken:
        """Log in now (blocking, at start: ``BackendUnavailable`` naming the cause if Vault
        refuses) and keep the token, logging in again when needed."""
        answer = login()
        token = cls(token_of(answer), addr=addr, timeout=timeout, verify=verify, clock=clock, login=login)
        token._lease = lease_from_renewal(answer, clock())
        log.info("vault login at %s: token valid %ds", addr, token._lease.ttl)
        return token

    @property
    def lease(self) -> TokenLease | None:
        return self._lease

    async def keep(self) -> None:
        """Forever: follow the token file, look the token up, renew it when due."""
        try:
            while True:
                await self.step()
                await asyncio.sleep(POLL)
        finally:
            self._vault.close()

    async def step(self) -> None:
        """One round of ``keep``: exposed for tests."""
        self._follow_file()
        lease, now = self._lease, self._clock()
        action = "lookup-self" if lease is None else "renew-self" if lease.renew_due(now) else None
        if action is None and self._login is not None and lease is not None and lease.login_due(now):
            action = "login"  # a token that cannot be renewed: a new one before it ends
        if action is None:
            return
        try:
            if action == "lookup-self":
                answer = await self._vault.run(lambda client: client.auth.token.lookup_self(), resend=True)
                self._lease = lease_from_lookup(answer, self._clock())
                self._announce(self._lease)
            elif action == "renew-self":
                answer = await self._vault.run(lambda client: client.auth.token.renew_self())
                renewed = lease_from_renewal(answer, self._clock())
                self._lease = renewed
                log.info("vault token renewed at %s: valid %ds more", self._addr, renewed.ttl)
                if self._login is not None and lease is not None and renewed.ttl <= lease.ttl / 2:
                    action = "login"  # its max TTL is near: renewal cannot keep it
                    await self._log_in()
            else:
                await self._log_in()
        except Exception as e:  # noqa: BLE001 -- the adapter boundary: every failure is logged, none raised
            if action == "renew-self" and self._login is not None:
                action = "renew-self, then login,"
                with contextlib.suppress(Exception):  # the login's own failure is the one logged below
                    await self._log_in()
                    return
            cause = describe(e, timeout=self._timeout)
            hint = _POLICY_HINT if "403" in cause else ""
            line = self._failures.failure(f"vault token at {self._addr}: {action} failed: {cause}{hint}", now)
            if line is not None:
                log.error(line)  # noqa: TRY400 -- the cause in one line, not a traceback
        else:
            if self._failures.success():
                log.info("vault token at %s: %s works again", self._addr, action)

    async def _log_in(self) -> None:
        login = self._login
        assert login is not None  # noqa: S101 -- only called with a login
        loop = asyncio.get_running_loop()
        answer = await asyncio.wait_for(loop.run_in_executor(None, login), self._timeout + 1.0)
        self._value = token_of(answer)
        self._lease = lease_from_renewal(answer, self._clock())
        log.info("vault login at %s: a new token, valid %ds", self._addr, self._lease.ttl)

    def _announce(self, lease: TokenLease) -> None:
        if lease.expires_at is None:
            log.info("vault token at %s: does not expire (no renewal needed)", self._addr)
        elif lease.renewable:
            log.info("vault token at %s: %ds left, renewed every %ds", self._addr, lease.ttl, max(1, lease.ttl // 2))
        else:
            log.warning(
                "vault token at %s: not renewable and expires in %ds; write a new token to %s before then",
                self._addr,
                lease.ttl,
                self._file or "BROKER_VAULT_TOKEN (restart)",
            )

    def _follow_file(self) -> None:
        if self._file is None:
            return
        try:
            text = self._file.read_text().strip()
        except OSError as e:
            line = self._failures.failure(
                f"vault token file {self._file}: cannot read it ({e.strerror})", self._clock()
            )
            if line is not None:
                log.error(line)  # noqa: TRY400 -- the cause in one line, not a traceback
            return
        if text and text != self._file_text:
            self._file_text = self._value = text
            self._lease = None  # look the new one up
            log.info("vault token: re-read %s (a new token); using it from now on", self._file)

    def __repr__(self) -> str:  # never the token
        return f"VaultToken(addr={self._addr!r}, file={str(self._file) if self._file else None!r})"
