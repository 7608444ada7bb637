"""The broker logs in to Vault by itself: AppRole (``vault_auth: approle``).

``AppRoleLogin`` holds the role id and the file of the secret id (read again at every
login, so an operator or a secrets operator can rotate it) and logs in with a client that
carries no token. ``login_now`` is the blocking first login at start; ``VaultToken`` logs in
again before the token's end (``broker.backends.token_lease``). Failures are
``BackendUnavailable`` naming the address and the cause, never the secret id.

Kubernetes auth: run Vault Agent (auto-auth ``kubernetes``) with a file sink at
``vault_token_file``; the broker follows and renews that token (docs/operations.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.backends.vault_clients import Verify, hvac_client
from broker.backends.vault_failures import describe
from broker.errors import BackendUnavailable


@dataclass(frozen=True)
class AppRoleLogin:
    addr: str
    role_id: str = field(repr=False)
    secret_id_file: Path
    mount: str = "approle"
    timeout: float = 1.0
    verify: Verify = True

    def __call__(self) -> dict[str, Any]:
        """``auth/<mount>/login``: Vault's answer (``auth.client_token``, ``lease_duration``, ...).
        Blocking: run it on a thread."""
        try:
            secret_id = self.secret_id_file.read_text().strip()
        except OSError as e:
            raise BackendUnavailable(f"vault login: cannot read {self.secret_id_file} ({e.strerror})") from None
        # a login creates a token: never sent twice (vault_failover)
        client = hvac_client(self.addr, token=None, timeout=self.timeout, verify=self.verify)
        try:
            answer = client.auth.approle.login(self.role_id, secret_id, use_token=False, mount_point=self.mount)
        except Exception as e:  # noqa: BLE001 -- the adapter boundary; Vault's body never reaches a log
            cause = describe(e, timeout=self.timeout)
            raise BackendUnavailable(f"vault login at {self.addr} (approle, mount {self.mount}): {cause}") from None
        finally:
            client.adapter.close()
        if not isinstance(answer, dict) or not isinstance(answer.get("auth"), dict):
            raise BackendUnavailable("vault login: malformed answer")
        return answer


def token_of(answer: dict[str, Any]) -> str:
    token = answer["auth"].get("client_token")
    if not isinstance(token, str) or not token:
        raise BackendUnavailable("vault login: no token in the answer")
    return token
