"""Signing with a Vault/OpenBao Transit key: the private key never leaves Vault (docs/downstream.md).

- Keys: a Transit key of type ``ed25519`` (EdDSA) or ``ecdsa-p256`` (ES256). Version ``N``
  of key ``K`` has kid ``K-vN``. The published key set holds every version Vault still
  verifies with (``min_decryption_version`` up to ``latest_version``, the newest
  ``MAX_JWKS_KEYS`` of them); the signing version is the ``latest_version`` of that same
  read. So this process never signs with a version it does not publish, and a rotation
  made elsewhere (``broker keys rotate``) is picked up within ``refresh`` seconds.
- Signing: the kid is fixed before signing (the header is part of the signed input), so
  Vault is told the version explicitly. ``marshaling_algorithm=jws`` gives Ed25519's 64
  bytes or ECDSA's ``r || s``; Vault does not normalise ECDSA to low-S, we do. Every
  signature is checked against the published key before a token leaves this module.
- Failure: hvac blocks, so each call runs on a small dedicated thread pool and is bounded
  by ``asyncio.wait_for(timeout + margin)``; requests never retries, never follows a
  redirect (it would carry the ``X-Vault-Token`` header to the new host) and ignores proxy
  and netrc settings from the environment. Anything that goes wrong -- refused, timed out,
  sealed, forbidden, a malformed answer -- is ``BackendUnavailable("vault: <what>")``,
  naming only an exception class or a fixed sentence: never Vault's response body or the
  token.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from broker.backends.vault_clients import TokenSource, VaultClients, Verify, hvac_client, token_source
from broker.errors import BackendUnavailable
from broker.token.algorithms import P256_ORDER, Algorithm, PublicKey, verify_signature
from broker.token.b64 import Base64Error, b64url_decode
from broker.token.claims import Claims
from broker.token.codec import TYP, assemble, signing_input
from broker.token.endorsement import statement_input
from broker.token.keys import MAX_JWKS_KEYS, KeySet, VerificationKey
from broker.vault_addrs import VaultAddrError, parse_vault_addrs

__all__ = ["KEY_TYPES", "TransitSigningBackend", "ensure_key"]

#: the Transit key type for each algorithm we accept
KEY_TYPES: Final[Mapping[Algorithm, str]] = {"EdDSA": "ed25519", "ES256": "ecdsa-p256"}
#: how long past the HTTP timeout a call may take before it is abandoned (thread hand-off,
#: a connect and a read each bounded by ``timeout``)
#: a Transit key name: a URL path segment, and with ``-v<N>`` still inside the kid grammar
_KEY_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,47}")
_MOUNT: Final = re.compile(r"[A-Za-z0-9_-]{1,64}(?:/[A-Za-z0-9_-]{1,64}){0,7}")
_HALF_ORDER: Final = P256_ORDER // 2
_PROBE: Final = b"capbroker transit self-test"

_T = TypeVar("_T")


class _Transit(Protocol):
    """The four Transit calls we make, typed (hvac's own are not)."""

    def create_key(self, *, name: str, key_type: str, exportable: bool, mount_point: str) -> object: ...

    def read_key(self, *, name: str, mount_point: str) -> object: ...

    def rotate_key(self, *, name: str, mount_point: str) -> object: ...

    def sign_data(
        self,
        *,
        name: str,
        hash_input: str,
        key_version: int,
        hash_algorithm: str | None,
        marshaling_algorithm: str,
        mount_point: str,
    ) -> object: ...


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """One read of the Transit key: what we publish and which version signs."""

    keyset: KeySet
    version: int
    read_at: float


#: the oldest read of the key's versions that verification trusts (seconds)
KEYSET_MAX_AGE: Final = 1.0
#: how Transit answers a sign with a version below the key's minimum (OpenBao 2.7 says
#: InternalServerError; Vault, InvalidRequest): the key is read again before giving up
_VERSION_REFUSALS: Final = frozenset({"vault: InternalServerError", "vault: InvalidRequest"})


class TransitSigningBackend:
    """``SigningBackend`` over a Vault/OpenBao Transit key (see the module docstring).

    ``token`` needs only the capbroker policy (``infra/vault/capbroker-policy.hcl``: sign
    and read the key); ``rotate`` also needs ``capbroker-rotate-policy.hcl``.
    ``refresh`` is how long a read of the key is trusted (0: read before every use).
    """

    def __init__(
        self,
        *,
        addr: str,
        token: str | TokenSource,
        mount: str = "transit",
        key: str = "capbroker",
        alg: Algorithm = "EdDSA",
        timeout: float = 1.0,
        refresh: float = 10.0,
        verify: Verify = True,
        workers: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_target(addr, mount, key, alg)
        token = token_source(token)
        if not token.value:
            raise ValueError("a Vault token is required")
        if not 0 < timeout <= 60 or not 0 <= refresh <= 3600 or not 1 <= workers <= 64:
            raise ValueError("timeout in (0, 60], refresh in [0, 3600], workers in [1, 64]")
        self._addr, self._token, self._mount, self._key, self._alg = addr, token, mount, key, alg
        self._timeout, self._refresh, self._verify, self._clock = timeout, refresh, verify, clock
        self._vault = VaultClients(addr, token, timeout=timeout, verify=verify, workers=workers, name="capbroker-vault")
        self._snapshot: _Snapshot | None = None

    @property
    def alg(self) -> Algorithm:
        return self._alg

    def kid_for(self, version: int) -> str:
        return f"{self._key}-v{version}"

    async def sign(self, claims: Claims) -> str:
        snapshot = await self._current()
        try:
            return await self._sign_claims(claims, snapshot)
        except BackendUnavailable as e:
            # Transit refuses a version an operator retired (or rotated past) since the
            # last read: read the key again, and sign once more if its latest changed.
            # Only on an answer: a Vault that did not answer is not asked twice (docs/settings.md, "Time and failure").
            if e.reason not in _VERSION_REFUSALS:
                raise
            fresh = await self._read()
            if fresh.version == snapshot.version:
                raise
            return await self._sign_claims(claims, fresh)

    async def _sign_claims(self, claims: Claims, snapshot: _Snapshot) -> str:
        message = signing_input(self._alg, self.kid_for(snapshot.version), claims)
        return assemble(message, await self._sign(message, snapshot))

    async def keyset(self, *, kid: str | None = None, fresh: bool = False) -> KeySet:
        """The published versions, read at most ``KEYSET_MAX_AGE`` seconds ago (or
        ``refresh``, if shorter): a version an operator retires stops verifying here, in
        introspection and the JWKS, within about a second, even with a long ``refresh``."""
        snapshot = self._snapshot
        if snapshot is None or self._clock() - snapshot.read_at >= min(self._refresh, KEYSET_MAX_AGE):
            snapshot = await self._read()
        return snapshot.keyset

    async def read_keyset(self) -> KeySet:
        """``keyset()`` read from Vault now, whatever the cache holds."""
        return (await self._read()).keyset

    async def sign_statement(self, typ: str, payload: bytes) -> str:
        """A compact JWS of ``payload``, header ``{"alg", "typ", "kid"}``, signed by the
        latest version (the key is read now, so an operator's rotation is used at once)
        and checked against that version's published key, as every token signature is.

        For statements about keys (``broker.token.endorsement``), never for tokens: a
        ``typ`` of ``cap+jwt`` is refused, so this never signs claims ``sign`` did not.
        """
        if typ == TYP:
            raise ValueError("tokens are signed by sign(), from claims")
        snapshot = await self._read()
        message = statement_input(self._alg, typ, self.kid_for(snapshot.version), payload)
        return assemble(message, await self._sign(message, snapshot))

    async def rotate(self) -> str:
        await self._call(lambda t: t.rotate_key(name=self._key, mount_point=self._mount))
        return self.kid_for((await self._read()).version)

    async def check(self) -> None:
        """Read the key now and sign a probe with it, verified against the published key."""
        await self._sign(_PROBE, await self._read())

    async def aclose(self) -> None:
        self._vault.close()

    def __repr__(self) -> str:  # never the token
        return f"TransitSigningBackend(addr={self._addr!r}, key={self._mount}/{self._key}, alg={self._alg!r})"

    # ------------------------------------------------------------------ key versions

    async def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is None or self._clock() - snapshot.read_at >= self._refresh:
            snapshot = await self._read()
        return snapshot

    async def _read(self) -> _Snapshot:
        response = await self._call(lambda t: t.read_key(name=self._key, mount_point=self._mount), resend=True)
        keyset, version = _key_versions(response, self._key, self._alg)
        self._snapshot = _Snapshot(keyset, version, self._clock())
        return self._snapshot

    async def _sign(self, message: bytes, snapshot: _Snapshot) -> bytes:
        kid = self.kid_for(snapshot.version)
        key = snapshot.keyset.key_for(kid)
        if key is None:  # cannot happen: _key_versions always publishes the latest version
            raise BackendUnavailable("vault: the signing version is not published")
        response = await self._call(
            lambda t: t.sign_data(
                name=self._key,
                hash_input=base64.b64encode(message).decode("ascii"),
                key_version=snapshot.version,
                hash_algorithm="sha2-256" if self._alg == "ES256" else None,
                marshaling_algorithm="jws",
                mount_point=self._mount,
            ),
            resend=True,  # a signature asked twice is two signatures, both ours: no harm
        )
        signature = _signature(response, snapshot.version, self._alg)
        if not verify_signature(key.key, message, signature):
            raise BackendUnavailable("vault: the signature does not verify with the published key")
        return signature

    # ------------------------------------------------------------------ the I/O boundary

    async def _call(self, operation: Callable[[_Transit], _T], *, resend: bool = False) -> _T:
        """Run one blocking hvac call on the pool, bounded; every failure is translated.
        ``resend``: it may go to another node after a broken connection (a read, a sign)."""
        try:
            return await self._vault.run(
                lambda client: operation(cast("_Transit", client.secrets.transit)),
                closed_reason="vault: the backend is closed",
                resend=resend,
            )
        except BackendUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 -- the adapter boundary: any client failure is "unavailable"
            # ``from None``: hvac's message holds Vault's response body, which never reaches a log
            raise BackendUnavailable(f"vault: {type(e).__name__}") from None


def ensure_key(
    *,
    addr: str,
    token: str,
    mount: str = "transit",
    key: str = "capbroker",
    alg: Algorithm = "EdDSA",
    timeout: float = 5.0,
    verify: Verify = True,
) -> None:
    """Create the Transit key if it is missing (blocking; for setup scripts and tests).

    Needs an admin token (``transit/keys/<key>``: create, read); the broker's own token
    cannot. Raises ``BackendUnavailable`` if Vault fails, ``ValueError`` if a key of that
    name exists with another type.
    """
    _check_target(addr, mount, key, alg)
    client = hvac_client(addr, token=token, timeout=timeout, verify=verify)
    transit = cast("_Transit", client.secrets.transit)
    try:
        # creating an existing key changes nothing, whatever its type: so create, then check
        transit.create_key(name=key, key_type=KEY_TYPES[alg], exportable=False, mount_point=mount)
        response = transit.read_key(name=key, mount_point=mount)
    except Exception as e:  # noqa: BLE001 -- the adapter boundary, as in TransitSigningBackend._call
        raise BackendUnavailable(f"vault: {type(e).__name__}") from None
    finally:
        client.adapter.close()
    data = _data(response)
    if data.get("type") != KEY_TYPES[alg]:
        raise ValueError(f"transit key {key!r} exists and is not {KEY_TYPES[alg]}")


# ---------------------------------------------------------------------- helpers


def _check_target(addr: str, mount: str, key: str, alg: Algorithm) -> None:
    try:
        parse_vault_addrs(addr)
    except VaultAddrError:
        raise ValueError("the Vault address is an http(s) URL, or a comma-separated list of them") from None
    if not _MOUNT.fullmatch(mount):
        raise ValueError("transit mount outside [A-Za-z0-9_-] path segments")
    if not _KEY_NAME.fullmatch(key):
        raise ValueError("transit key name outside [A-Za-z0-9][A-Za-z0-9_-]{0,47}")
    if alg not in KEY_TYPES:
        raise ValueError("alg must be EdDSA or ES256")


def _data(response: object) -> dict[str, Any]:
    data = response.get("data") if isinstance(response, dict) else None
    if not isinstance(data, dict):
        raise BackendUnavailable("vault: malformed response")
    return data


def _version(value: object) -> int:
    if type(value) is not int or value < 0:
        raise BackendUnavailable("vault: malformed key versions")
    return value


def _key_versions(response: object, key: str, alg: Algorithm) -> tuple[KeySet, int]:
    """The published key set and the signing version, from one ``read_key`` answer."""
    data = _data(response)
    if data.get("type") != KEY_TYPES[alg]:
        raise BackendUnavailable(f"vault: transit key {key!r} is not {KEY_TYPES[alg]}")
    latest = _version(data.get("latest_version"))
    oldest = max(_version(data.get("min_decryption_version")), 1, latest - MAX_JWKS_KEYS + 1)
    versions = data.get("keys")
    if latest < 1 or oldest > latest or not isinstance(versions, dict):
        raise BackendUnavailable("vault: malformed key versions")
    keys = [VerificationKey(f"{key}-v{v}", _public_key(versions.get(str(v)), alg)) for v in range(oldest, latest + 1)]
    return KeySet(keys), latest


def _public_key(entry: object, alg: Algorithm) -> PublicKey:
    encoded = entry.get("public_key") if isinstance(entry, dict) else None
    if not isinstance(encoded, str):
        raise BackendUnavailable("vault: malformed public key")
    key: object
    try:
        if alg == "EdDSA":  # standard base64 of the raw 32 bytes
            raw = base64.b64decode(encoded, validate=True)
            canonical = base64.b64encode(raw).decode("ascii") == encoded
            key = ed25519.Ed25519PublicKey.from_public_bytes(raw) if canonical else None
        else:  # PEM (SubjectPublicKeyInfo)
            key = load_pem_public_key(encoded.encode("ascii"))
    except (ValueError, binascii.Error, UnicodeEncodeError):  # wrong length, bad encoding, bad point
        key = None
    if isinstance(key, ed25519.Ed25519PublicKey) or (
        isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    ):
        return key
    raise BackendUnavailable("vault: malformed public key")


def _signature(response: object, version: int, alg: Algorithm) -> bytes:
    """The 64 signature bytes from ``vault:v<version>:<base64url>``; ES256 made low-S."""
    data = _data(response)
    value, prefix = data.get("signature"), f"vault:v{version}:"
    if not isinstance(value, str) or not value.startswith(prefix):
        raise BackendUnavailable("vault: malformed signature")
    try:
        signature = b64url_decode(value[len(prefix) :])
    except Base64Error:
        raise BackendUnavailable("vault: malformed signature") from None
    if len(signature) != 64:
        raise BackendUnavailable("vault: malformed signature")
    return _low_s(signature) if alg == "ES256" else signature


def _low_s(signature: bytes) -> bytes:
    """``r || s`` with ``s`` replaced by ``n - s`` when above ``n/2``: the same signature,
    in the one spelling our verifier accepts (Vault does not normalise)."""
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    if not (0 < r < P256_ORDER and 0 < s < P256_ORDER):
        raise BackendUnavailable("vault: malformed signature")
    if s > _HALF_ORDER:
        s = P256_ORDER - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")
