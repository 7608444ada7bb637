"""Strict base64url (RFC 7515 section 2): no padding, one canonical spelling per value."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_TO_STANDARD: Final = bytes.maketrans(b"-_", b"+/")
_PADDING: Final = ("", "", "==", "=")  # by length % 4; 1 is never valid
#: the characters whose unused low bits are zero, for the last character of a string of
#: length 2 (mod 4: 4 unused bits) and 3 (mod 4: 2 unused bits). Any other last character
#: is a second spelling of the same bytes.
_CANONICAL_LAST: Final = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}


class Base64Error(ValueError):
    pass


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url; refuse padding, stray characters and non-canonical
    spellings (unused low bits set), so no two strings decode to the same bytes."""
    rest = len(text) % 4
    if (
        rest != 1
        and (not rest or text[-1] in _CANONICAL_LAST[rest])
        and "+" not in text
        and "/" not in text
        and "=" not in text
    ):
        # one pass: with no '+', '/' or '=' in it, strict decoding after the mapping
        # accepts exactly the base64url alphabet
        try:
            return binascii.a2b_base64(
                (text + _PADDING[rest]).encode("ascii").translate(_TO_STANDARD), strict_mode=True
            )
        except (binascii.Error, UnicodeEncodeError):
            pass  # the checks below say why
    if not _B64URL.fullmatch(text) or rest == 1:
        raise Base64Error("not unpadded base64url")
    raise Base64Error("non-canonical base64url")
