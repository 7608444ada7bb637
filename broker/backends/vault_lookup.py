"""Look up the Vault token an agent presents (identity method ``vault``, README "Agent identities").

- One call: ``POST auth/token/lookup {"token": <presented>}`` with the broker's own token,
  which needs only ``update`` on that path (``infra/vault/capbroker-policy.hcl``). A lookup
  uses none of a limited-use token's uses and does not renew it. Nothing is cached: a
  token revoked in Vault stops working at the next request.
- Answers (OpenBao 2.7): 200 with the token's data; 403 ``{"errors": ["bad token"]}`` for
  an unknown, expired, revoked or used-up token, which is ``None`` here. 403 "permission
  denied" means the broker's own token is invalid or lacks the policy, so it is a backend
  failure, never "no such agent". Sealed is 503.
- Refused before any call (``None``): anything not of a Vault token's form (an empty token
  would look up the broker's own), a token of a child namespace (looking it up is
  "permission denied", which would let anyone make the broker report Vault down), and the
  broker's own token.
- Failure: as ``broker.backends.transit``: hvac on a small thread pool, bounded by
  ``asyncio.wait_for(timeout + TIMEOUT_MARGIN)``, no retries, no redirects, no proxy or
  netrc from the environment; anything else that goes wrong is
  ``BackendUnavailable("vault: <what>")``, naming an exception class or a fixed sentence,
  never Vault's answer, the presented token or the broker's.
"""

from __future__ import annotations

import hmac
from typing import Final, Protocol, cast

import hvac
import hvac.exceptions

from broker.backends.vault_clients import TokenSource, VaultClients, Verify, token_source
from broker.errors import BackendUnavailable
from broker.identity.vault_identity import (
    VaultTokenInfo,
    has_namespace_suffix,
    looks_like_vault_token,
    token_info_from_lookup,
)
from broker.vault_addrs import parse_vault_addrs

__all__ = ["VaultTokenLookup"]

#: the one 403 answer that is about the presented token, not the broker's
_BAD_TOKEN: Final = ["bad token"]


class _TokenAuth(Protocol):
    """The one token-store call we make, typed (hvac's own is not)."""

    def lookup(self, token: str) -> object: ...


def _refused_as_bad(error: BaseException) -> bool:
    """Vault's answer that the presented token is no token: not a failure of Vault's."""
    return isinstance(error, hvac.exceptions.Forbidden) and error.errors == _BAD_TOKEN


class VaultTokenLookup:
    """``auth/token/lookup`` of presented tokens with the broker's token (module docstring)."""

    def __init__(
        self,
        addr: str,
        token: str | TokenSource,
        *,
        timeout: float = 1.0,
        verify: Verify = True,
        workers: int = 4,
    ) -> None:
        parse_vault_addrs(addr)  # ValueError: not an http(s) URL or a list of them
        token = token_source(token)
        if not token.value:
            raise ValueError("a Vault token is required")
        if not 0 < timeout <= 60 or not 1 <= workers <= 64:
            raise ValueError("timeout in (0, 60], workers in [1, 64]")
        self._addr, self._token = addr, token
        self._vault = VaultClients(
            addr, token, timeout=timeout, verify=verify, workers=workers, name="capbroker-vault-lookup"
        )

    async def lookup(self, presented: str) -> VaultTokenInfo | None:
        """What Vault knows of ``presented``; None if it is no valid token of this namespace.

        Raises ``BackendUnavailable`` if Vault cannot answer (down, slow, sealed, or the
        broker's own token refused).
        """
        if (
            not looks_like_vault_token(presented)
            or has_namespace_suffix(presented)
            or hmac.compare_digest(presented.encode(), self._token.value.encode())
        ):
            return None
        try:
            response = await self._vault.run(
                lambda client: cast("_TokenAuth", client.auth.token).lookup(token=presented),
                closed_reason="vault: the token lookup is closed",
                expected=_refused_as_bad,
                resend=True,  # a lookup changes nothing (it uses none of a token's uses)
            )
        except BackendUnavailable:
            raise
        except hvac.exceptions.Forbidden as e:
            if e.errors == _BAD_TOKEN:
                return None
            raise BackendUnavailable("vault: Forbidden") from None  # the broker's token was refused
        except Exception as e:  # noqa: BLE001 -- the adapter boundary: any client failure is "unavailable"
            # ``from None``: hvac's message holds Vault's response body, which never reaches a log
            raise BackendUnavailable(f"vault: {type(e).__name__}") from None
        try:
            return token_info_from_lookup(response, presented)
        except ValueError:
            raise BackendUnavailable("vault: malformed token lookup") from None

    async def aclose(self) -> None:
        self._vault.close()

    def __repr__(self) -> str:  # never a token
        return f"VaultTokenLookup(addr={self._addr!r})"
