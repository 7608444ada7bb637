"""``SecretStore``: the upstream secrets, read from files or Vault KV v2, kept fresh.

A daemon thread reads every route's secret at start and then every ``refresh`` seconds,
with the gateway's own Vault token (re-read from ``vault_token_file`` each round, so a
renewed or rotated token is picked up). Fail closed: a secret that could not be read in
the last round is *unavailable* (``get`` raises ``BackendUnavailable``, the gateway
answers 503 and forwards nothing) until a later round reads it again; a failed round is
retried after one second. Nothing here logs or raises a secret's value: errors name the
secret's location and the exception's type only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from broker.backends.vault_clients import hvac_client
from broker.backends.vault_failover import NodeHint
from broker.errors import BackendUnavailable
from broker.gateway.config import Credential

log = logging.getLogger(__name__)

RETRY: Final = 1.0
VAULT_TIMEOUT: Final = 2.0
MAX_SECRET_BYTES: Final = 16 * 1024

Reader = Callable[[Credential], str]


def read_file_secret(path: str) -> str:
    raw = Path(path).read_bytes()
    if len(raw) > MAX_SECRET_BYTES:
        raise ValueError("secret file too large")
    value = raw.decode("utf-8").strip()
    if not value:
        raise ValueError("secret file empty")
    return value


class VaultKvReader:
    """Reads one field of a KV v2 secret (``MOUNT/data/PATH``) with the token in a file."""

    def __init__(self, addr: str, token_file: str, *, timeout: float = VAULT_TIMEOUT) -> None:
        self._addr, self._token_file, self._timeout = addr, token_file, timeout
        self._hint = NodeHint()  # ``addr`` may list an HA cluster's nodes: the one that answered last

    def __repr__(self) -> str:
        return f"VaultKvReader({self._addr!r})"  # never the token

    def read(self, path: str, field: str) -> str:
        token = read_file_secret(self._token_file)
        # a read: sent to another node if a connection breaks mid-request (vault_failover)
        client = hvac_client(self._addr, token=token, timeout=self._timeout, verify=True, resend=True, hint=self._hint)
        try:
            answer = client.read(path)
        finally:
            client.adapter.close()
        data = answer.get("data", {}).get("data") if isinstance(answer, dict) else None
        value = data.get(field) if isinstance(data, dict) else None
        if not isinstance(value, str) or not value:
            raise LookupError("the KV secret has no such string field")
        return value


class SecretStore:
    def __init__(
        self,
        credentials: Iterable[Credential],
        *,
        vault: VaultKvReader | None,
        refresh: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._credentials = tuple(dict.fromkeys(credentials))
        self._vault = vault
        self._refresh = refresh
        self._values: dict[Credential, str] = {}
        self._stop = threading.Event()
        self._round = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self, credential: Credential) -> str:
        if credential.file is not None:
            return read_file_secret(credential.file)
        if self._vault is None or credential.vault is None or credential.field is None:
            raise LookupError("no Vault configured")
        return self._vault.read(credential.vault, credential.field)

    def refresh_once(self) -> bool:
        """Read every secret now; True if all were read. A secret not read is unavailable."""
        ok = True
        for credential in self._credentials:
            try:
                self._values[credential] = self._read(credential)
            except Exception as e:  # noqa: BLE001 -- any failure makes the secret unavailable
                self._values.pop(credential, None)
                ok = False
                log.warning("gateway: secret %s unavailable (%s)", credential.source, type(e).__name__)
        self._round.set()
        return ok

    def start(self) -> SecretStore:
        self._thread = threading.Thread(target=self._run, name="gateway-secrets", daemon=True)
        self._thread.start()
        return self

    def wait_first_round(self, timeout: float) -> bool:
        return self._round.wait(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            ok = self.refresh_once()
            self._stop.wait(self._refresh if ok else min(RETRY, self._refresh))

    def close(self) -> None:
        self._stop.set()

    @property
    def ready(self) -> bool:
        return all(c in self._values for c in self._credentials)

    def get(self, credential: Credential) -> str:
        value = self._values.get(credential)
        if value is None:
            raise BackendUnavailable(f"upstream secret {credential.source} unavailable")
        return value

    def values(self) -> tuple[str, ...]:
        """Every secret held now (for the redaction of anything that leaves the gateway)."""
        return tuple(self._values.values())
