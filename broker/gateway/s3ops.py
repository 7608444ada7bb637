"""What an S3 request asks for: an allow-list of object operations and their accesses. Pure.

``classify`` reads a path-style request (``/BUCKET[/KEY]``, still percent-encoded), its
query and headers, and returns the ``S3Operation`` with every ``Access`` the token must
cover; anything it does not recognise is an ``S3Refused`` and is never forwarded.

    GetObject, HeadObject                          read on s3://B/KEY
    PutObject, CreateMultipartUpload (POST ?uploads), UploadPart (PUT ?partNumber&uploadId),
    CompleteMultipartUpload (POST ?uploadId), AbortMultipartUpload (DELETE ?uploadId),
    ListParts (GET ?uploadId)                      write on s3://B/KEY
    DeleteObject                                   delete on s3://B/KEY
    DeleteObjects (POST /B?delete)                 delete on every key of the body
                                                   (``delete_accesses``, all or nothing)
    ListObjects, ListObjectsV2 (GET /B?prefix=P)   list on s3://B/FOLDER/, the folder that
                                                   holds every key P can match; P required
    CopyObject, UploadPartCopy (x-amz-copy-source) read on the source, write on the target;
                                                   the source in the route's bucket only

Refused: another bucket, bucket-level operations, every sub-resource (``?acl``,
``?tagging``, ...), ``versionId``, unknown or repeated query parameters, presigned query
authentication, headers that set policy, ACLs, tags, object lock or customer-held
encryption keys, and keys outside ``broker.gateway.s3keys``'s rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from broker.gateway.s3delete import MAX_DELETE_BODY, MAX_DELETE_KEYS, delete_keys
from broker.gateway.s3keys import KeyRefused, decode_key, folder_resource, object_resource, percent_decode
from broker.gateway.s3xml import S3Refused, denied, invalid

__all__ = [
    "MAX_DELETE_BODY",
    "MAX_DELETE_KEYS",
    "Access",
    "S3Operation",
    "S3Refused",
    "classify",
    "delete_accesses",
    "header_map",
    "refused_header",
]


@dataclass(frozen=True, slots=True)
class Access:
    action: str  # read | write | delete | list
    resource: str  # s3://BUCKET/KEY, or for a list the folder s3://BUCKET/PFX/


@dataclass(frozen=True, slots=True)
class S3Operation:
    name: str
    bucket: str
    key: str | None  # decoded; None for a list or DeleteObjects
    accesses: tuple[Access, ...]  # empty for DeleteObjects until its body is read


#: header names (lower case, ``_`` read as ``-``) never forwarded: they set who may read
#: the object, its tags or lock, or encrypt it under a key the agent holds or names
_REFUSED_HEADERS: Final = frozenset(
    {
        "x-amz-acl",
        "x-amz-tagging",
        "x-amz-tagging-directive",
        "x-amz-website-redirect-location",
        "x-amz-server-side-encryption-aws-kms-key-id",
        "x-amz-server-side-encryption-context",
        "x-amz-rename-source",
        "x-amz-mfa",
        "x-amz-bypass-governance-retention",
    }
)
_REFUSED_HEADER_PREFIXES: Final = (
    "x-amz-grant-",
    "x-amz-object-lock-",
    "x-amz-server-side-encryption-customer-",
    "x-amz-copy-source-server-side-encryption-customer-",
    "x-amz-bucket-",
    "x-amz-rename-source-",
)
#: query parameters of presigned (query) authentication, refused by name whatever the case
_PRESIGNED: Final = frozenset(
    {"x-amz-signature", "x-amz-credential", "x-amz-algorithm", "x-amz-date", "x-amz-expires", "x-amz-security-token"}
    | {"x-amz-signedheaders", "signature", "awsaccesskeyid", "expires"}
)
_RESPONSE_OVERRIDES: Final = frozenset(
    {
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
    }
)
_LIST_V1: Final = frozenset({"prefix", "delimiter", "max-keys", "marker", "encoding-type"})
_LIST_V2: Final = frozenset(
    {"list-type", "prefix", "delimiter", "max-keys", "continuation-token", "start-after", "encoding-type"}
    | {"fetch-owner"}
)
#: the query parameters each operation may carry besides ``x-id`` (which names the operation)
_PARAMS: Final = {
    "GetObject": frozenset({"partNumber"}) | _RESPONSE_OVERRIDES,
    "HeadObject": frozenset({"partNumber"}),
    "PutObject": frozenset(),
    "CopyObject": frozenset(),
    "CreateMultipartUpload": frozenset({"uploads"}),
    "UploadPart": frozenset({"partNumber", "uploadId"}),
    "UploadPartCopy": frozenset({"partNumber", "uploadId"}),
    "CompleteMultipartUpload": frozenset({"uploadId"}),
    "AbortMultipartUpload": frozenset({"uploadId"}),
    "ListParts": frozenset({"uploadId", "max-parts", "part-number-marker"}),
    "DeleteObject": frozenset(),
    "DeleteObjects": frozenset({"delete"}),
    "ListObjects": _LIST_V1,
    "ListObjectsV2": _LIST_V2,
}
_NUMBER = re.compile(r"[1-9][0-9]{0,4}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def classify(method: str, raw_path: str, raw_query: str, headers: Mapping[str, str], bucket: str) -> S3Operation:
    """The operation a path-style request (``raw_path`` after ``/s3``, as sent) asks for."""
    if not raw_path.startswith("/"):
        raise denied("not a path-style S3 request")
    named, slash, raw_key = raw_path[1:].partition("/")
    if named != bucket:  # compared as sent: "%61cme" or "ACME" is another bucket
        raise denied("another bucket than the route's")
    _check_headers(headers)
    query = _query(raw_query)
    if raw_key == "" and slash in ("", "/"):
        name = _bucket_operation(method, query)
        return _finish(
            S3Operation(name, bucket, None, _list_accesses(bucket, query) if name != "DeleteObjects" else ()), query
        )
    try:
        key = decode_key(raw_key)
        target = object_resource(bucket, key)
    except KeyRefused as e:
        raise denied(f"object key refused: {e.reason}") from None
    name = _object_operation(method, query, headers)
    if name in ("GetObject", "HeadObject"):
        accesses: tuple[Access, ...] = (Access("read", target),)
    elif name == "DeleteObject":
        accesses = (Access("delete", target),)
    elif name in ("CopyObject", "UploadPartCopy"):
        accesses = (Access("read", _copy_source(headers, bucket)), Access("write", target))
    else:
        accesses = (Access("write", target),)
    return _finish(S3Operation(name, bucket, key, accesses), query)


# ------------------------------------------------------------------ query


def _query(raw_query: str) -> dict[str, str]:
    """Parameter names as sent (S3's are case-sensitive), values decoded; a name twice,
    an unknown name or a presigned-URL parameter is refused by ``_finish`` or here."""
    params: dict[str, str] = {}
    if not raw_query:
        return params
    for part in raw_query.split("&"):
        raw_name, _, raw_value = part.partition("=")
        if raw_name.lower() in _PRESIGNED or _decoded_name(raw_name).lower() in _PRESIGNED:
            raise denied("presigned (query) authentication is not accepted")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,40}", raw_name):
            raise denied("query parameter outside the allowed set")
        if raw_name in params:
            raise denied("query parameter given twice")
        if "+" in raw_value:  # read as a space by some servers and as '+' by others
            raise invalid("'+' in a query value: encode it as %2B, a space as %20")
        try:
            value = percent_decode(raw_value, separators=True)
        except KeyRefused as e:
            raise denied(f"query value refused: {e.reason}") from None
        if _CONTROL.search(value):
            raise denied("control character in a query value")
        params[raw_name] = value
    return params


def _decoded_name(text: str) -> str:
    try:
        return percent_decode(text)
    except KeyRefused:
        return text


def _finish(op: S3Operation, query: Mapping[str, str]) -> S3Operation:
    """Every query parameter is one this operation takes; ``x-id`` names the operation."""
    allowed = _PARAMS[op.name]
    for name, value in query.items():
        if name == "x-id":
            if value != op.name:
                raise denied("x-id names another operation")
            continue
        if name == "versionId":
            raise denied("object versions (versionId) are not served")
        if name not in allowed:
            raise denied(f"sub-resource or parameter not allowed for {op.name}")
    part = query.get("partNumber")
    if part is not None and not (_NUMBER.fullmatch(part) and int(part) <= 10000):
        raise invalid("partNumber must be 1..10000")
    if "uploadId" in query and not query["uploadId"]:
        raise invalid("empty uploadId")
    for flag in ("uploads", "delete"):
        if query.get(flag):
            raise denied(f"?{flag} takes no value")
    return op


# ------------------------------------------------------------------ operations


def _bucket_operation(method: str, query: Mapping[str, str]) -> str:
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if method == "GET" and ("prefix" in query or "list-type" in query or set(query) <= _LIST_V2 | {"x-id"}):
        if "list-type" not in query:
            return "ListObjects"
        if query["list-type"] == "2":
            return "ListObjectsV2"
    raise denied("bucket-level operation")


def _list_accesses(bucket: str, query: Mapping[str, str]) -> tuple[Access, ...]:
    prefix = query.get("prefix", "")
    if not prefix:
        raise denied("a list names its prefix (prefix=FOLDER/...)")
    if query.get("encoding-type", "url") != "url":
        raise invalid("encoding-type must be url")
    if query.get("fetch-owner", "false") not in ("true", "false"):
        raise invalid("fetch-owner must be true or false")
    if "max-keys" in query and not re.fullmatch(r"[0-9]{1,7}", query["max-keys"]):
        raise invalid("max-keys must be a whole number")
    folder = prefix[: prefix.rfind("/") + 1]
    try:
        resource = folder_resource(bucket, folder)
        if folder != prefix:  # the partial last segment obeys the key rules too
            object_resource(bucket, prefix)
    except KeyRefused as e:
        raise denied(f"list prefix refused: {e.reason}") from None
    return (Access("list", resource),)


def _object_operation(method: str, query: Mapping[str, str], headers: Mapping[str, str]) -> str:
    upload = "uploadId" in query
    copy = "x-amz-copy-source" in headers
    if copy and method != "PUT":
        raise denied("x-amz-copy-source on another method than PUT")
    if method == "GET":
        return "ListParts" if upload else "GetObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "PUT":
        if upload != ("partNumber" in query):
            raise invalid("an upload part names both partNumber and uploadId")
        if upload:
            return "UploadPartCopy" if copy else "UploadPart"
        return "CopyObject" if copy else "PutObject"
    if method == "POST":
        if "uploads" in query and not upload:
            return "CreateMultipartUpload"
        if upload and "uploads" not in query:
            return "CompleteMultipartUpload"
        raise denied("POST on an object is only a multipart create or complete")
    if method == "DELETE":
        return "AbortMultipartUpload" if upload else "DeleteObject"
    raise denied("method not allowed")


def _copy_source(headers: Mapping[str, str], bucket: str) -> str:
    """``x-amz-copy-source``: ``BUCKET/KEY`` or ``/BUCKET/KEY``, percent-encoded, in the
    route's bucket, with no ``?versionId`` or other query."""
    raw = headers["x-amz-copy-source"]
    if "?" in raw:
        raise denied("copy source with a query (versionId) is not served")
    named, slash, raw_key = raw.removeprefix("/").partition("/")
    if not slash or named != bucket:
        raise denied("copy source outside the route's bucket")
    try:
        return object_resource(bucket, decode_key(raw_key))
    except KeyRefused as e:
        raise denied(f"copy source key refused: {e.reason}") from None


def delete_accesses(bucket: str, body: bytes) -> tuple[Access, ...]:
    """DeleteObjects: one ``delete`` access per key of the XML body, all or nothing (a body
    that is not a plain ``<Delete>`` of at most ``MAX_DELETE_KEYS`` keys is refused)."""
    accesses = []
    for key in delete_keys(body):
        try:
            accesses.append(Access("delete", object_resource(bucket, key)))
        except KeyRefused as e:
            raise denied(f"DeleteObjects key refused: {e.reason}") from None
    return tuple(accesses)


# ------------------------------------------------------------------ headers


def refused_header(name: str) -> bool:
    """True for a header that sets policy, ACL, tags, object lock or a customer key."""
    plain = name.lower().replace("_", "-")
    return plain in _REFUSED_HEADERS or plain.startswith(_REFUSED_HEADER_PREFIXES)


def header_map(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI headers as ``classify`` reads them: lower-case names, one value each. A
    repeated ``x-amz-*`` header is refused (two copy sources: which one would S3 read?);
    other repeats are joined with ``, `` as HTTP joins them."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name in headers:
            if name.replace("_", "-").startswith("x-amz-"):
                raise denied("an x-amz- header given twice")
            value = f"{headers[name]}, {value}"
        headers[name] = value
    return headers


def _check_headers(headers: Mapping[str, str]) -> None:
    for name in headers:
        if refused_header(name):
            raise denied("a header that sets ACLs, tags, object lock or encryption keys")
        if "_" in name and name.lower().replace("_", "-").startswith("x-amz-"):
            # a server behind a CGI-style gateway reads it as the dashed header this
            # classifier never saw (a copy source, say): refused, not guessed at
            raise denied("an x-amz- header spelled with '_'")
    if "x-amz-copy-source-range" in headers and "x-amz-copy-source" not in headers:
        raise denied("x-amz-copy-source-range without a copy source")
