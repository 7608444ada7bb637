"""The closed, strict resource grammar of the policy files (README, "Writing a policy file").

Nothing is normalised and then matched: a resource that is not already in its one
canonical spelling is refused. Checks, in order:

* length 1..1024, ASCII printable only (no whitespace, no control characters);
* none of ``% \\ * ? [ ] # " < > ^ ` { | }`` anywhere, and no ``..`` anywhere;
* segments separated by single ``/``: no empty, ``.`` or ``..`` segment; segment
  characters limited to ``A-Z a-z 0-9 . _ ~ @ : + = , -``;
* the kind's own form (host lower case, ``s3://`` bucket names, ``data``/``creds``
  markers, no default ``:443`` port).

A resource ending in ``/`` is a subtree: it covers exactly its descendants by whole
segments.
"""

from __future__ import annotations

import re
from typing import Final

from broker.errors import InvalidRequest, excerpt

MAX_RESOURCE_LENGTH: Final = 1024

_SEGMENT = re.compile(r"[A-Za-z0-9._~@:+=,-]{1,255}")
_HOST_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_FORBIDDEN_CHARS: Final = frozenset('%\\*?[]#"<>^`{|}')
#: every allowed character: printable ASCII without space and without the forbidden ones
_ALLOWED_RUN = re.compile(
    "[" + "".join(re.escape(chr(c)) for c in range(0x21, 0x7F) if chr(c) not in _FORBIDDEN_CHARS) + "]*"
)


def _fail(kind: str, resource: str, why: str) -> InvalidRequest:
    shown = resource if len(resource) <= 80 else resource[:77] + "..."
    return InvalidRequest(f"{kind} resource {shown!r}: {why}")


def _check_characters(kind: str, resource: str) -> None:
    if 0 < len(resource) <= MAX_RESOURCE_LENGTH and _ALLOWED_RUN.fullmatch(resource) and ".." not in resource:
        return  # the common case in one pass; a refusal is explained below, check by check
    if not resource:
        raise _fail(kind, resource, "empty")
    if len(resource) > MAX_RESOURCE_LENGTH:
        raise _fail(kind, resource, f"longer than {MAX_RESOURCE_LENGTH} characters")
    for ch in resource:
        if not ("\x21" <= ch <= "\x7e"):
            raise _fail(kind, resource, "only printable ASCII without spaces is allowed")
        if ch in _FORBIDDEN_CHARS:
            raise _fail(kind, resource, f"character {excerpt(ch)} is not allowed")
    if ".." in resource:  # stricter than "no '..' segment": no gateway can ever read it as a parent
        raise _fail(kind, resource, "'..' is not allowed anywhere")


def _check_segments(kind: str, resource: str, segments: list[str], *, subtree_ok: bool) -> None:
    """``segments`` is a path split on ``/``; a final empty one means a trailing slash."""
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if seg == "" and i == last and i > 0 and subtree_ok:
            continue
        if seg == "":
            raise _fail(kind, resource, "empty path segment")
        if seg == ".":  # ".." anywhere was refused before splitting
            raise _fail(kind, resource, "'.' segment")
        if not _SEGMENT.fullmatch(seg):
            raise _fail(kind, resource, f"segment {excerpt(seg)} has characters outside the grammar")


def _check_host(kind: str, resource: str, host: str) -> None:
    if len(host) > 253 or not _HOST.fullmatch(host):
        raise _fail(kind, resource, f"host {excerpt(host)} is not a lower-case DNS name")


def _git(resource: str) -> None:
    parts = resource.split("/")
    if len(parts) != 3:
        raise _fail("git", resource, "must be exactly HOST/OWNER/REPO")
    _check_host("git", resource, parts[0])
    _check_segments("git", resource, parts[1:], subtree_ok=False)


def _bucket(resource: str) -> None:
    if not resource.startswith("s3://"):
        raise _fail("bucket", resource, "must start with s3://")
    parts = resource[len("s3://") :].split("/")
    if len(parts) < 2:
        raise _fail("bucket", resource, "must be s3://BUCKET/ or deeper")
    bucket = parts[0]
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise _fail("bucket", resource, f"bucket name {excerpt(bucket)} is not valid")
    if parts[1:] == [""]:
        return  # s3://BUCKET/ : the whole bucket
    _check_segments("bucket", resource, parts[1:], subtree_ok=True)


def _http(resource: str) -> None:
    if not resource.startswith("https://"):
        raise _fail("http", resource, "must start with https://")
    rest = resource[len("https://") :]
    authority, slash, path = rest.partition("/")
    if not slash:
        raise _fail("http", resource, "must have a path, at least '/'")
    host, colon, port = authority.partition(":")
    _check_host("http", resource, host)
    if colon:
        if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
            raise _fail("http", resource, f"port {excerpt(port)} is not valid")
        if port == "443":
            raise _fail("http", resource, "the default port 443 must be left out")
    if path == "":
        return  # https://HOST/ : the whole origin
    _check_segments("http", resource, path.split("/"), subtree_ok=True)


def _vault_kv(resource: str) -> None:
    parts = resource.split("/")
    if len(parts) < 3 or parts[1] != "data":
        raise _fail("vault-kv", resource, "must be MOUNT/data/PATH")
    if parts[2:] == [""]:
        _check_segments("vault-kv", resource, parts[:1], subtree_ok=False)
        return  # MOUNT/data/ : the whole mount
    _check_segments("vault-kv", resource, parts, subtree_ok=True)


def _database(resource: str) -> None:
    parts = resource.split("/")
    if len(parts) != 3 or parts[1] != "creds":
        raise _fail("database", resource, "must be exactly MOUNT/creds/ROLE")
    _check_segments("database", resource, parts, subtree_ok=False)


_FORMS: Final = {
    "git": _git,
    "bucket": _bucket,
    "http": _http,
    "vault-kv": _vault_kv,
    "database": _database,
}


def validate_resource(kind: str, resource: object) -> str:
    """Return ``resource`` unchanged if it is canonical for ``kind``; raise ``InvalidRequest``."""
    if not isinstance(resource, str):
        raise InvalidRequest(f"{kind} resource must be a string")
    form = _FORMS.get(kind)
    if form is None:
        raise InvalidRequest(f"unknown kind {kind!r}")
    _check_characters(kind, resource)
    form(resource)
    return resource


def is_root_resource(kind: str, resource: str) -> bool:
    """A whole bucket, a whole HTTP origin or a whole KV mount: almost always too wide."""
    if kind == "bucket":
        return resource.count("/") == 3 and resource.endswith("/")
    if kind == "http":
        return resource.count("/") == 3 and resource.endswith("/")
    if kind == "vault-kv":
        return resource.count("/") == 2 and resource.endswith("/data/")
    return False
