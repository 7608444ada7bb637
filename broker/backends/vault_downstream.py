"""Downstream credentials from Vault (docs/downstream.md): task tokens, their children, database leases.

Every call is one Vault HTTP request on ``VaultClients``' fail-fast sessions (no retries,
bounded by the timeout plus a margin). Calls made *as* a task token send that token in
``X-Vault-Token`` themselves (hvac would send the broker's). The broker's own token does
only what ``infra/vault/capbroker-policy.hcl`` allows:

- ``auth/token/create/capbroker-task``: a task token (orphan, through the role);
- ``transit/encrypt|decrypt/capbroker-task-tokens``: seal a task token for the state store;
- ``auth/token/revoke-accessor``: revoke a task token (and so its tree and leases) or one
  child by accessor, with no secret in hand.

As a task token: ``auth/token/create`` (a child with a subset of its policies),
``auth/token/renew-self``; as a child: ``MOUNT/creds/ROLE``.

Failure: anything that goes wrong is ``BackendUnavailable("vault: <what>")`` naming an
exception class or a status, never Vault's body or a token.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Final

from broker.backends.vault_clients import TokenSource, VaultClients, Verify, token_source
from broker.errors import BackendUnavailable
from broker.policy.vault import TASK_ROLE, TASK_SEAL_KEY
from broker.service.ports import DatabaseLease, IssuedToken
from broker.vault_addrs import first_addr

__all__ = ["VaultDownstream"]

_OK: Final = (200, 204)


class VaultDownstream:
    def __init__(
        self,
        addr: str,
        token: str | TokenSource,
        *,
        timeout: float = 1.0,
        verify: Verify = True,
        workers: int = 4,
        transit_mount: str = "transit",
    ) -> None:
        token = token_source(token)  # the broker's own token as the process keeps it (renewed, followed)
        if not token.value:
            raise ValueError("an http(s) Vault address and a token are required")
        # the first node's address: the session's transport sends to the node that performs it
        self._addr, self._base = addr, first_addr(addr)
        self._token, self._timeout = token, timeout
        self._transit = transit_mount
        self._vault = VaultClients(
            addr, token, timeout=timeout, verify=verify, workers=workers, name="capbroker-vault-downstream"
        )

    async def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None, token: str | None, *, resend: bool = False
    ) -> Any:
        """One request as ``token`` (the broker's own when None); the JSON answer, if any.
        ``resend``: safe to send to another node after a broken connection (never a create)."""
        as_token = self._token.value if token is None else token

        def call(client: Any) -> Any:
            response = client.session.request(
                method,
                f"{self._base}/v1/{path}",
                headers={"X-Vault-Token": as_token},
                json=body,
                timeout=self._timeout,
                allow_redirects=False,
            )
            if response.status_code not in _OK:
                raise BackendUnavailable(
                    f"vault: {method} {path.split('/', maxsplit=1)[0]}/... answered {response.status_code}"
                )
            return response.json() if response.status_code == 200 else None

        try:
            return await self._vault.run(call, closed_reason="vault: downstream credentials are closed", resend=resend)
        except BackendUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 -- the adapter boundary: any client failure is "unavailable"
            raise BackendUnavailable(f"vault: {type(e).__name__}") from None

    @staticmethod
    def _issued(answer: Any) -> IssuedToken:
        try:
            auth = answer["auth"]
            return IssuedToken(str(auth["client_token"]), str(auth["accessor"]), int(auth["lease_duration"]))
        except (TypeError, KeyError, ValueError):
            raise BackendUnavailable("vault: malformed token answer") from None

    async def create_task_token(self, policies: tuple[str, ...], ttl: int, meta: Mapping[str, str]) -> IssuedToken:
        """A task token, through the role (orphan, no default policy)."""
        body = {"policies": list(policies), "ttl": f"{ttl}s", "meta": dict(meta), "no_default_policy": True}
        return self._issued(await self._request("POST", f"auth/token/create/{TASK_ROLE}", body, None))

    async def renew_task_token(self, task_token: str, ttl: int) -> int:
        """Ask for ``ttl`` more seconds of the task token's life; the TTL Vault granted."""
        answer = await self._request("POST", "auth/token/renew-self", {"increment": f"{ttl}s"}, task_token)
        return self._issued(answer).ttl

    async def create_child(
        self, task_token: str, policies: tuple[str, ...], ttl: int, num_uses: int, meta: Mapping[str, str]
    ) -> IssuedToken:
        """A child of the task token with exactly ``policies`` (0 uses: unlimited)."""
        body = {
            "policies": list(policies),
            "ttl": f"{ttl}s",
            "explicit_max_ttl": f"{ttl}s",
            "num_uses": num_uses,
            "no_default_policy": True,
            "renewable": False,
            "meta": dict(meta),
        }
        return self._issued(await self._request("POST", "auth/token/create", body, task_token))

    async def read_database_creds(self, token: str, path: str) -> DatabaseLease:
        answer = await self._request("GET", path, None, token)
        try:
            data = answer["data"]
            return DatabaseLease(
                str(data["username"]), str(data["password"]), str(answer["lease_id"]), int(answer["lease_duration"])
            )
        except (TypeError, KeyError, ValueError):
            raise BackendUnavailable("vault: malformed database credentials") from None

    async def revoke_accessor(self, accessor: str) -> None:
        """Revoke a token and its whole tree (children, leases) by accessor. A token that
        is already gone (expired, revoked) answers 400 in Vault: done, all the same."""
        try:
            # sent twice, the second finds the token gone (400): done all the same
            await self._request("POST", "auth/token/revoke-accessor", {"accessor": accessor}, None, resend=True)
        except BackendUnavailable as e:
            if not str(e).endswith("answered 400"):
                raise

    async def seal(self, secret: str) -> str:
        """Encrypt ``secret`` with the Transit key for task tokens (for the state store)."""
        plain = base64.b64encode(secret.encode()).decode()
        answer = await self._request(
            "POST", f"{self._transit}/encrypt/{TASK_SEAL_KEY}", {"plaintext": plain}, None, resend=True
        )
        try:
            return str(answer["data"]["ciphertext"])
        except (TypeError, KeyError):
            raise BackendUnavailable("vault: malformed encrypt answer") from None

    async def unseal(self, sealed: str) -> str:
        answer = await self._request(
            "POST", f"{self._transit}/decrypt/{TASK_SEAL_KEY}", {"ciphertext": sealed}, None, resend=True
        )
        try:
            return base64.b64decode(answer["data"]["plaintext"]).decode()
        except (TypeError, KeyError, ValueError):
            raise BackendUnavailable("vault: malformed decrypt answer") from None

    async def aclose(self) -> None:
        self._vault.close()

    def __repr__(self) -> str:  # never a token
        return f"VaultDownstream(addr={self._addr!r})"
