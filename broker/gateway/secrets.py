"""``SecretStore``: the upstream secrets, read from files or Vault KV v2, kept fresh.

A daemon thread reads every route's secret at start and then every ``refresh`` seconds,
with the gateway's own Vault token (re-read from ``vault_token_file`` each round, so a
renewed or rotated token is picked up). Fail closed: a secret that could not be read in
the last round is *unavailable* (``get`` raises ``BackendUnavailable``, the gateway
answers 503 and forwards nothing) until a later round reads it again; a failed round is
retried after one second. Nothing here logs or raises a secret's value: errors name the
secret's location and the exception's type only.

A bucket route's credential (``present: sigv4``) is three fields of one secret, read
together: the access key id, the secret access key and an optional session token
(``S3Keys``, from ``s3_keys``); in a file, a JSON object with those fields.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
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
SIGV4: Final = "sigv4"


@dataclass(frozen=True, slots=True)
class S3Keys:
    """The keys a bucket route signs with (never in a repr or a log)."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        return f"S3Keys({self.access_key_id[:4]}...)"

    def secrets(self) -> tuple[str, ...]:
        """The parts an upstream must never echo to the agent."""
        return (self.secret_access_key, *((self.session_token,) if self.session_token else ()))


def s3_keys_from(data: Mapping[str, object], credential: Credential) -> S3Keys:
    """The keys in a KV secret's data or a JSON file, under the credential's field names."""

    def field(name: str | None, *, required: bool) -> str | None:
        value = data.get(name) if name is not None else None
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise LookupError("the S3 credential lacks a string field")
        return value

    key_id = field(credential.access_key_id, required=True)
    secret = field(credential.secret_access_key, required=True)
    if key_id is None or secret is None:  # required: field raised already
        raise LookupError("the S3 credential lacks a string field")
    return S3Keys(key_id, secret, field(credential.session_token, required=False))


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
        value = self.read_all(path).get(field)
        if not isinstance(value, str) or not value:
            raise LookupError("the KV secret has no such string field")
        return value

    def read_all(self, path: str) -> dict[str, object]:
        """The data of a KV v2 secret."""
        token = read_file_secret(self._token_file)
        # a read: sent to another node if a connection breaks mid-request (vault_failover)
        client = hvac_client(self._addr, token=token, timeout=self._timeout, verify=True, resend=True, hint=self._hint)
        try:
            answer = client.read(path)
        finally:
            client.adapter.close()
        data = answer.get("data", {}).get("data") if isinstance(answer, dict) else None
        if not isinstance(data, dict):
            raise LookupError("no KV secret there")
        return data


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
        self._keys: dict[Credential, S3Keys] = {}
        self._stop = threading.Event()
        self._round = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self, credential: Credential) -> str:
        if credential.file is not None:
            return read_file_secret(credential.file)
        if self._vault is None or credential.vault is None or credential.field is None:
            raise LookupError("no Vault configured")
        return self._vault.read(credential.vault, credential.field)

    def _read_keys(self, credential: Credential) -> S3Keys:
        if credential.file is not None:
            data = json.loads(read_file_secret(credential.file))
            if not isinstance(data, dict):
                raise LookupError("the S3 credential file is not a JSON object")
            return s3_keys_from(data, credential)
        if self._vault is None or credential.vault is None:
            raise LookupError("no Vault configured")
        return s3_keys_from(self._vault.read_all(credential.vault), credential)

    def refresh_once(self) -> bool:
        """Read every secret now; True if all were read. A secret not read is unavailable."""
        ok = True
        for credential in self._credentials:
            try:
                if credential.present == SIGV4:
                    self._keys[credential] = self._read_keys(credential)
                else:
                    self._values[credential] = self._read(credential)
            except Exception as e:  # noqa: BLE001 -- any failure makes the secret unavailable
                self._values.pop(credential, None)
                self._keys.pop(credential, None)
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
        return all(c in self._values or c in self._keys for c in self._credentials)

    def get(self, credential: Credential) -> str:
        value = self._values.get(credential)
        if value is None:
            raise BackendUnavailable(f"upstream secret {credential.source} unavailable")
        return value

    def s3_keys(self, credential: Credential) -> S3Keys:
        """A bucket route's keys; ``BackendUnavailable`` when the last round did not read them."""
        keys = self._keys.get(credential)
        if keys is None:
            raise BackendUnavailable(f"upstream keys {credential.source} unavailable")
        return keys

    def values(self) -> tuple[str, ...]:
        """Every secret held now (for the redaction of anything that leaves the gateway)."""
        return (*self._values.values(), *(s for k in self._keys.values() for s in k.secrets()))
