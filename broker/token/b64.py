"""Strict base64url (RFC 7515 section 2): no padding, one canonical spelling per value."""

from __future__ import annotations

import base64
import binascii
import re

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class Base64Error(ValueError):
    pass


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url; refuse padding, stray characters and non-canonical
    spellings (unused low bits set), so no two strings decode to the same bytes."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise Base64Error("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise Base64Error("not base64url") from e
    if b64url_encode(data) != text:
        raise Base64Error("non-canonical base64url")
    return data
