"""Bearer credentials: client secrets (``cbk_`` + 32 bytes) and their hashes. Pure."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote_plus

from broker.token.b64 import b64url_encode

CLIENT_SECRET_PREFIX: Final = "cbk_"  # noqa: S105 (a prefix, not a secret)
_CLIENT_SECRET: Final = re.compile(r"cbk_[A-Za-z0-9_-]{43}")
_BEARER: Final = re.compile(r"Bearer ([\x21-\x7e]{1,8192})")
_BASIC: Final = re.compile(r"Basic ([A-Za-z0-9+/]{4,1024}={0,2})")
#: the client id an admin gives with client_secret_basic
ADMIN_CLIENT_ID: Final = "admin"


def new_client_secret() -> str:
    """``cbk_`` + 32 bytes from the OS CSPRNG, base64url (README, "Agent identities")."""
    return CLIENT_SECRET_PREFIX + b64url_encode(secrets.token_bytes(32))


def secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def bearer_credential(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <credential>`` header, else None."""
    if authorization is None:
        return None
    match = _BEARER.fullmatch(authorization)
    return match.group(1) if match else None


def basic_credential(authorization: str | None) -> tuple[str, str] | None:
    """RFC 6749 2.3.1 ``client_secret_basic``: ``(client_id, client_secret)`` from
    ``Authorization: Basic base64(urlencode(id):urlencode(secret))``, for a ``cbk_`` client
    secret only (a JWT or Vault token is never taken from Basic); else None."""
    match = _BASIC.fullmatch(authorization or "")
    if match is None:
        return None
    try:
        decoded = base64.b64decode(match.group(1), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, colon, secret = decoded.partition(":")
    client_id, secret = unquote_plus(client_id), unquote_plus(secret)
    if not colon or not client_id or len(client_id) > 128 or not is_client_secret(secret):
        return None
    return client_id, secret


def is_client_secret(credential: str) -> bool:
    return _CLIENT_SECRET.fullmatch(credential) is not None


def matches_any(credential: str, hashes: Iterable[str]) -> bool:
    """Constant time over each hash: whether ``credential`` hashes to one of ``hashes``."""
    digest = secret_sha256(credential)
    found = False
    for expected in hashes:
        found |= hmac.compare_digest(digest, expected)
    return found
