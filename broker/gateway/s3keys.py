"""S3 object keys as the bucket route reads them: checked exactly as sent. Pure.

A key arrives percent-encoded in the path (``/BUCKET/KEY``), in ``x-amz-copy-source``
(``BUCKET/KEY``), in a list's ``prefix`` parameter, or as XML text in a DeleteObjects body.
Percent-escapes are decoded once (what S3 itself does) and nothing is normalised: a key
is refused, never repaired, when

* the encoding is invalid (``%`` without two hex digits, bytes that are not UTF-8);
* it holds an encoded slash or backslash (``%2F``, ``%5C``, in any case) or a backslash;
* it is empty, longer than ``MAX_KEY_BYTES`` in UTF-8, or holds a control character;
* it starts with ``/``, holds ``//``, or has a ``.`` or ``..`` segment;
* the capability resource ``s3://BUCKET/KEY`` is outside the resource grammar of
  ``broker.capability.resources`` (so no grant could ever cover it).

Every refusal is a ``KeyRefused`` with a short reason (safe to log: it quotes nothing).
"""

from __future__ import annotations

import re
from typing import Final

from broker.capability.resources import validate_resource
from broker.errors import InvalidRequest

#: S3's own limit on a key, in UTF-8 bytes
MAX_KEY_BYTES: Final = 1024

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ENCODED_SEPARATOR = re.compile(r"%(2[Ff]|5[Cc])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class KeyRefused(ValueError):
    """The key is not one the route forwards; ``reason`` says which rule (no key quoted)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def percent_decode(raw: str, *, separators: bool = False) -> str:
    """``raw`` with its percent-escapes decoded once, strictly: an invalid escape or bytes
    that are not UTF-8 are refused, and so is an escaped slash or backslash unless
    ``separators`` (a query value, where ``%2F`` is how a client sends ``/``)."""
    if "%" not in raw:
        return raw
    if _BAD_ESCAPE.search(raw):
        raise KeyRefused("invalid percent-encoding")
    if not separators and _ENCODED_SEPARATOR.search(raw):
        raise KeyRefused("percent-encoded slash or backslash")
    try:
        data = raw.encode("ascii")
    except UnicodeEncodeError:
        raise KeyRefused("non-ASCII characters beside percent-escapes") from None
    try:
        return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), data.decode("latin-1")).encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        raise KeyRefused("percent-escapes that are not UTF-8") from None


def check_text(text: str, what: str) -> None:
    """The rules every key-like string (key, prefix, folder) obeys, on the decoded text."""
    if _CONTROL.search(text):
        raise KeyRefused(f"control character in the {what}")
    if "\\" in text:
        raise KeyRefused(f"backslash in the {what}")
    if len(text.encode("utf-8")) > MAX_KEY_BYTES:
        raise KeyRefused(f"{what} longer than {MAX_KEY_BYTES} bytes")
    if text.startswith("/"):
        raise KeyRefused(f"{what} starts with '/'")
    if "//" in text:
        raise KeyRefused(f"empty segment ('//') in the {what}")
    if any(seg in (".", "..") for seg in text.split("/")):
        raise KeyRefused(f"'.' or '..' segment in the {what}")


def object_resource(bucket: str, key: str) -> str:
    """``s3://BUCKET/KEY`` for a decoded key, after every rule; refused outside the grammar."""
    if not key:
        raise KeyRefused("empty key")
    check_text(key, "key")
    return _in_grammar(f"s3://{bucket}/{key}")


def folder_resource(bucket: str, folder: str) -> str:
    """``s3://BUCKET/FOLDER`` for ``folder`` empty (the whole bucket) or ending in ``/``."""
    if folder and not folder.endswith("/"):
        raise KeyRefused("a folder ends with '/'")
    check_text(folder, "prefix")
    return _in_grammar(f"s3://{bucket}/{folder}")


def decode_key(raw: str) -> str:
    """The key a percent-encoded path part names, decoded once and checked."""
    if "\\" in raw:
        raise KeyRefused("backslash in the key")
    return percent_decode(raw)


def _in_grammar(resource: str) -> str:
    try:
        return validate_resource("bucket", resource)
    except InvalidRequest:
        raise KeyRefused("characters or segments outside the capability resource grammar") from None
