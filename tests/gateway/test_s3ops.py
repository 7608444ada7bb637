"""The bucket route's classifier: what each S3 request asks for, and what is never forwarded."""

from __future__ import annotations

import pytest

from broker.capability.resources import MAX_RESOURCE_LENGTH
from broker.gateway.s3keys import MAX_KEY_BYTES, KeyRefused, decode_key, object_resource
from broker.gateway.s3ops import (
    MAX_DELETE_KEYS,
    Access,
    S3Operation,
    S3Refused,
    classify,
    delete_accesses,
    header_map,
)

B = "acme"
NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def op(method: str, path: str, query: str = "", headers: dict[str, str] | None = None) -> S3Operation:
    return classify(method, path, query, headers or {}, B)


def delete_body(*keys: str, quiet: bool = False) -> bytes:
    objects = "".join(f"<Object><Key>{k}</Key></Object>" for k in keys)
    q = "<Quiet>true</Quiet>" if quiet else ""
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<Delete {NS}>{objects}{q}</Delete>'.encode()


# ------------------------------------------------------------------ mapped operations


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "name", "accesses"),
    [
        ("GET", "/acme/t1/a.txt", "", {}, "GetObject", [("read", "s3://acme/t1/a.txt")]),
        ("GET", "/acme/t1/a.txt", "x-id=GetObject", {}, "GetObject", [("read", "s3://acme/t1/a.txt")]),
        ("GET", "/acme/t1/a.txt", "partNumber=2", {}, "GetObject", [("read", "s3://acme/t1/a.txt")]),
        (
            "GET",
            "/acme/t1/a.txt",
            "response-content-type=text%2Fplain",
            {},
            "GetObject",
            [("read", "s3://acme/t1/a.txt")],
        ),
        ("HEAD", "/acme/t1/a.txt", "", {}, "HeadObject", [("read", "s3://acme/t1/a.txt")]),
        ("PUT", "/acme/t1/a.txt", "", {"content-length": "3"}, "PutObject", [("write", "s3://acme/t1/a.txt")]),
        ("PUT", "/acme/t1/a.txt", "x-id=PutObject", {}, "PutObject", [("write", "s3://acme/t1/a.txt")]),
        ("POST", "/acme/t1/big", "uploads", {}, "CreateMultipartUpload", [("write", "s3://acme/t1/big")]),
        ("POST", "/acme/t1/big", "uploads=", {}, "CreateMultipartUpload", [("write", "s3://acme/t1/big")]),
        (
            "PUT",
            "/acme/t1/big",
            "partNumber=1&uploadId=abc",
            {},
            "UploadPart",
            [("write", "s3://acme/t1/big")],
        ),
        (
            "PUT",
            "/acme/t1/big",
            "x-id=UploadPart&partNumber=10000&uploadId=abc",
            {},
            "UploadPart",
            [("write", "s3://acme/t1/big")],
        ),
        ("POST", "/acme/t1/big", "uploadId=abc", {}, "CompleteMultipartUpload", [("write", "s3://acme/t1/big")]),
        ("DELETE", "/acme/t1/big", "uploadId=abc", {}, "AbortMultipartUpload", [("write", "s3://acme/t1/big")]),
        ("GET", "/acme/t1/big", "uploadId=abc&max-parts=5", {}, "ListParts", [("write", "s3://acme/t1/big")]),
        ("DELETE", "/acme/t1/a.txt", "", {}, "DeleteObject", [("delete", "s3://acme/t1/a.txt")]),
        ("DELETE", "/acme/t1/a.txt", "x-id=DeleteObject", {}, "DeleteObject", [("delete", "s3://acme/t1/a.txt")]),
        ("POST", "/acme", "delete", {}, "DeleteObjects", []),
        ("POST", "/acme/", "delete=", {}, "DeleteObjects", []),
        ("GET", "/acme", "prefix=t1%2F", {}, "ListObjects", [("list", "s3://acme/t1/")]),
        (
            "GET",
            "/acme/",
            "prefix=t1%2F&delimiter=%2F&max-keys=10&marker=t1%2Fb&encoding-type=url",
            {},
            "ListObjects",
            [("list", "s3://acme/t1/")],
        ),
        ("GET", "/acme", "list-type=2&prefix=t1/", {}, "ListObjectsV2", [("list", "s3://acme/t1/")]),
        (
            "GET",
            "/acme",
            "list-type=2&prefix=t1%2Frep&continuation-token=abc%2B%2F%3D&start-after=t1%2Fa&fetch-owner=true",
            {},
            "ListObjectsV2",
            [("list", "s3://acme/t1/")],
        ),
        ("GET", "/acme", "list-type=2&prefix=rep", {}, "ListObjectsV2", [("list", "s3://acme/")]),
        (
            "PUT",
            "/acme/t1/copy",
            "",
            {"x-amz-copy-source": "acme/t0/src%3D1"},
            "CopyObject",
            [("read", "s3://acme/t0/src=1"), ("write", "s3://acme/t1/copy")],
        ),
        (
            "PUT",
            "/acme/t1/copy",
            "x-id=CopyObject",
            {"x-amz-copy-source": "/acme/t0/src", "x-amz-metadata-directive": "COPY"},
            "CopyObject",
            [("read", "s3://acme/t0/src"), ("write", "s3://acme/t1/copy")],
        ),
        (
            "PUT",
            "/acme/t1/big",
            "partNumber=2&uploadId=abc",
            {"x-amz-copy-source": "acme/t0/src", "x-amz-copy-source-range": "bytes=0-99"},
            "UploadPartCopy",
            [("read", "s3://acme/t0/src"), ("write", "s3://acme/t1/big")],
        ),
    ],
)
def test_a_mapped_operation_asks_for_exactly_its_accesses(  # noqa: PLR0917 - one parametrised row
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    name: str,
    accesses: list[tuple[str, str]],
) -> None:
    result = op(method, path, query, headers)
    assert result.name == name
    assert result.bucket == B
    assert result.accesses == tuple(Access(a, r) for a, r in accesses)


def test_the_key_is_decoded_once_and_the_list_has_none() -> None:
    assert op("GET", "/acme/t1/a%3Db%2Bc").key == "t1/a=b+c"
    assert op("GET", "/acme", "prefix=t1%2F").key is None
    assert op("POST", "/acme", "delete").key is None


def test_a_key_decoded_once_keeps_a_literal_percent_and_is_refused() -> None:
    with pytest.raises(S3Refused) as e:
        op("GET", "/acme/t1/a%253D")
    assert e.value.code == "capability_denied"


# ------------------------------------------------------------------ refused shapes

REFUSED = {
    # the bucket: only the route's, compared as sent
    "another-bucket": ("GET", "/other/t1/a", "", {}),
    "bucket-case": ("GET", "/ACME/t1/a", "", {}),
    "bucket-encoded": ("GET", "/%61cme/t1/a", "", {}),
    "bucket-prefix": ("GET", "/acme-reports/t1/a", "", {}),
    "no-bucket": ("GET", "/", "", {}),
    "not-path-style": ("GET", "acme/t1/a", "", {}),
    # bucket-level operations
    "create-bucket": ("PUT", "/acme", "", {}),
    "create-bucket-slash": ("PUT", "/acme/", "", {}),
    "delete-bucket": ("DELETE", "/acme", "", {}),
    "head-bucket": ("HEAD", "/acme", "", {}),
    "post-bucket-form-upload": ("POST", "/acme", "", {}),
    "list-multipart-uploads": ("GET", "/acme", "uploads", {}),
    "list-object-versions": ("GET", "/acme", "versions&prefix=t1%2F", {}),
    "get-bucket-location": ("GET", "/acme", "location", {}),
    "get-bucket-policy": ("GET", "/acme", "policy", {}),
    "put-bucket-policy": ("PUT", "/acme", "policy", {}),
    "delete-bucket-policy": ("DELETE", "/acme", "policy", {}),
    "put-bucket-acl": ("PUT", "/acme", "acl", {}),
    "put-bucket-versioning": ("PUT", "/acme", "versioning", {}),
    "put-bucket-lifecycle": ("PUT", "/acme", "lifecycle", {}),
    "put-bucket-cors": ("PUT", "/acme", "cors", {}),
    "put-bucket-website": ("PUT", "/acme", "website", {}),
    "put-bucket-notification": ("PUT", "/acme", "notification", {}),
    "put-bucket-replication": ("PUT", "/acme", "replication", {}),
    "put-bucket-encryption": ("PUT", "/acme", "encryption", {}),
    "put-bucket-object-lock": ("PUT", "/acme", "object-lock", {}),
    "put-public-access-block": ("DELETE", "/acme", "publicAccessBlock", {}),
    "list-v3": ("GET", "/acme", "list-type=3&prefix=t1%2F", {}),
    "list-with-acl": ("GET", "/acme", "prefix=t1%2F&acl", {}),
    # object sub-resources and versions
    "object-acl-get": ("GET", "/acme/t1/a", "acl", {}),
    "object-acl-put": ("PUT", "/acme/t1/a", "acl", {}),
    "object-tagging-put": ("PUT", "/acme/t1/a", "tagging", {}),
    "object-tagging-get": ("GET", "/acme/t1/a", "tagging", {}),
    "object-tagging-delete": ("DELETE", "/acme/t1/a", "tagging", {}),
    "object-legal-hold": ("PUT", "/acme/t1/a", "legal-hold", {}),
    "object-retention": ("PUT", "/acme/t1/a", "retention", {}),
    "object-restore": ("POST", "/acme/t1/a", "restore", {}),
    "object-select": ("POST", "/acme/t1/a", "select&select-type=2", {}),
    "object-torrent": ("GET", "/acme/t1/a", "torrent", {}),
    "object-attributes": ("GET", "/acme/t1/a", "attributes", {}),
    "object-policy-on-key": ("PUT", "/acme/t1/a", "policy", {}),
    "version-id-get": ("GET", "/acme/t1/a", "versionId=3", {}),
    "version-id-delete": ("DELETE", "/acme/t1/a", "versionId=3", {}),
    "version-id-head": ("HEAD", "/acme/t1/a", "versionId=", {}),
    "unknown-param": ("GET", "/acme/t1/a", "foo=bar", {}),
    "param-twice": ("GET", "/acme/t1/a", "partNumber=1&partNumber=2", {}),
    "param-case": ("GET", "/acme/t1/a", "VersionId=3", {}),
    "param-encoded-name": ("GET", "/acme/t1/a", "version%49d=3", {}),
    "param-semicolon": ("GET", "/acme/t1/a", "x=1;acl", {}),
    "empty-param": ("GET", "/acme/t1/a", "&", {}),
    "x-id-mismatch": ("GET", "/acme/t1/a", "x-id=DeleteObject", {}),
    "x-id-bucket": ("GET", "/acme", "x-id=GetBucketPolicy", {}),
    "post-object-plain": ("POST", "/acme/t1/a", "", {}),
    "post-uploads-and-upload-id": ("POST", "/acme/t1/a", "uploads&uploadId=x", {}),
    "uploads-with-value": ("POST", "/acme/t1/a", "uploads=1", {}),
    "delete-with-value": ("POST", "/acme", "delete=1", {}),
    "delete-on-key": ("POST", "/acme/t1/a", "delete", {}),
    "empty-upload-id-abort": ("DELETE", "/acme/t1/a", "uploadId=", {}),
    "empty-upload-id-part": ("PUT", "/acme/t1/a", "partNumber=1&uploadId=", {}),
    "part-number-zero": ("PUT", "/acme/t1/a", "partNumber=0&uploadId=x", {}),
    "part-number-big": ("PUT", "/acme/t1/a", "partNumber=10001&uploadId=x", {}),
    "part-number-text": ("PUT", "/acme/t1/a", "partNumber=1e3&uploadId=x", {}),
    "options-method": ("OPTIONS", "/acme/t1/a", "", {}),
    "patch-method": ("PATCH", "/acme/t1/a", "", {}),
    "plus-in-query": ("GET", "/acme", "prefix=t1/a+b", {}),
    # presigned (query) authentication
    "presigned-v4": ("GET", "/acme/t1/a", "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab", {}),
    "presigned-credential": ("GET", "/acme/t1/a", "X-Amz-Credential=AKIA%2F20250101", {}),
    "presigned-token": ("GET", "/acme/t1/a", "X-Amz-Security-Token=tok", {}),
    "presigned-lower": ("GET", "/acme/t1/a", "x-amz-signature=ab", {}),
    "presigned-v2": ("GET", "/acme/t1/a", "AWSAccessKeyId=AKIA&Signature=x&Expires=1", {}),
    # lists
    "list-no-prefix": ("GET", "/acme", "", {}),
    "list-v2-no-prefix": ("GET", "/acme", "list-type=2", {}),
    "list-empty-prefix": ("GET", "/acme", "list-type=2&prefix=", {}),
    "list-prefix-dotdot": ("GET", "/acme", "list-type=2&prefix=t1%2F..%2F", {}),
    "list-prefix-partial-dotdot": ("GET", "/acme", "list-type=2&prefix=t1%2F..", {}),
    "list-prefix-leading-slash": ("GET", "/acme", "list-type=2&prefix=%2Ft1%2F", {}),
    "list-prefix-double-slash": ("GET", "/acme", "list-type=2&prefix=t1%2F%2Fx", {}),
    "list-prefix-backslash": ("GET", "/acme", "list-type=2&prefix=t1%5Cx", {}),
    "list-prefix-control": ("GET", "/acme", "list-type=2&prefix=t1%2F%0Ax", {}),
    "list-encoding-other": ("GET", "/acme", "list-type=2&prefix=t1%2F&encoding-type=xml", {}),
    "list-v1-with-v2-param": ("GET", "/acme", "prefix=t1%2F&start-after=x", {}),
    # policy, ACL, tagging, lock and customer-key headers
    "header-acl": ("PUT", "/acme/t1/a", "", {"x-amz-acl": "public-read"}),
    "header-acl-cgi": ("PUT", "/acme/t1/a", "", {"x_amz_acl": "public-read"}),
    "header-grant-read": ("PUT", "/acme/t1/a", "", {"x-amz-grant-read": "uri=AllUsers"}),
    "header-grant-full": ("POST", "/acme/t1/a", "uploads", {"x-amz-grant-full-control": "id=x"}),
    "header-tagging": ("PUT", "/acme/t1/a", "", {"x-amz-tagging": "a=b"}),
    "header-tagging-directive": (
        "PUT",
        "/acme/t1/b",
        "",
        {"x-amz-copy-source": "acme/t1/a", "x-amz-tagging-directive": "REPLACE"},
    ),
    "header-object-lock-mode": ("PUT", "/acme/t1/a", "", {"x-amz-object-lock-mode": "COMPLIANCE"}),
    "header-legal-hold": ("PUT", "/acme/t1/a", "", {"x-amz-object-lock-legal-hold": "ON"}),
    "header-website-redirect": ("PUT", "/acme/t1/a", "", {"x-amz-website-redirect-location": "https://evil"}),
    "header-kms-key": ("PUT", "/acme/t1/a", "", {"x-amz-server-side-encryption-aws-kms-key-id": "arn:x"}),
    "header-kms-context": ("PUT", "/acme/t1/a", "", {"x-amz-server-side-encryption-context": "e30="}),
    "header-sse-c": ("PUT", "/acme/t1/a", "", {"x-amz-server-side-encryption-customer-algorithm": "AES256"}),
    "header-sse-c-key": ("GET", "/acme/t1/a", "", {"x-amz-server-side-encryption-customer-key": "k"}),
    "header-copy-sse-c": (
        "PUT",
        "/acme/t1/b",
        "",
        {"x-amz-copy-source": "acme/t1/a", "x-amz-copy-source-server-side-encryption-customer-key": "k"},
    ),
    "header-rename-source": ("PUT", "/acme/t1/a", "", {"x-amz-rename-source": "acme/t1/b"}),
    "header-bucket-object-lock": ("PUT", "/acme", "", {"x-amz-bucket-object-lock-enabled": "true"}),
    "header-mfa": ("DELETE", "/acme/t1/a", "", {"x-amz-mfa": "123 456"}),
    "header-bypass-governance": ("DELETE", "/acme/t1/a", "", {"x-amz-bypass-governance-retention": "true"}),
    "header-copy-source-cgi": ("PUT", "/acme/t1/b", "", {"x_amz_copy_source": "acme/t2/secret"}),
    "header-amz-cgi-other": ("PUT", "/acme/t1/b", "", {"x_amz_meta_x": "1"}),
    "part-without-upload-id": ("PUT", "/acme/t1/a", "partNumber=1", {}),
    "upload-id-without-part": ("PUT", "/acme/t1/a", "uploadId=x", {}),
    "header-acl-upper": ("PUT", "/acme/t1/a", "", {"X-Amz-Acl": "public-read"}),
    # copies
    "copy-other-bucket": ("PUT", "/acme/t1/b", "", {"x-amz-copy-source": "other/t1/a"}),
    "copy-bucket-prefix": ("PUT", "/acme/t1/b", "", {"x-amz-copy-source": "acme-x/t1/a"}),
    "copy-version": ("PUT", "/acme/t1/b", "", {"x-amz-copy-source": "acme/t1/a?versionId=3"}),
    "copy-no-key": ("PUT", "/acme/t1/b", "", {"x-amz-copy-source": "acme"}),
    "copy-empty-key": ("PUT", "/acme/t1/b", "", {"x-amz-copy-source": "acme/"}),
    "copy-dotdot": ("PUT", "/acme/t1/b", "", {"x-amz-copy-source": "acme/t1/../t2/a"}),
    "copy-encoded-slash": ("PUT", "/acme/t1/b", "", {"x-amz-copy-source": "acme/t1%2F..%2Ft2/a"}),
    "copy-arn": ("PUT", "/acme/t1/b", "", {"x-amz-copy-source": "arn:aws:s3:::other/a"}),
    "copy-joined-duplicates": ("PUT", "/acme/t1/b", "", {"x-amz-copy-source": "acme/t1/a, other/x"}),
    "copy-on-post": ("POST", "/acme/t1/b", "uploads", {"x-amz-copy-source": "acme/t1/a"}),
    "copy-range-without-source": (
        "PUT",
        "/acme/t1/b",
        "partNumber=1&uploadId=x",
        {"x-amz-copy-source-range": "bytes=0-1"},
    ),
    # keys
    "key-dotdot": ("GET", "/acme/t1/../t2/a", "", {}),
    "key-dot": ("GET", "/acme/t1/./a", "", {}),
    "key-trailing-dotdot": ("GET", "/acme/t1/..", "", {}),
    "key-encoded-dotdot": ("GET", "/acme/t1/%2E%2E/t2/a", "", {}),
    "key-encoded-slash": ("GET", "/acme/t1%2F..%2Ft2/a", "", {}),
    "key-encoded-slash-lower": ("GET", "/acme/t1%2fa", "", {}),
    "key-encoded-backslash": ("GET", "/acme/t1%5C..%5Ct2", "", {}),
    "key-backslash": ("GET", "/acme/t1\\a", "", {}),
    "key-double-slash": ("GET", "/acme/t1//a", "", {}),
    "key-leading-slash": ("GET", "/acme//t1/a", "", {}),
    "key-control": ("GET", "/acme/t1/a%0Ab", "", {}),
    "key-nul": ("GET", "/acme/t1/a%00", "", {}),
    "key-del": ("GET", "/acme/t1/a%7F", "", {}),
    "key-bad-escape": ("GET", "/acme/t1/a%G1", "", {}),
    "key-truncated-escape": ("GET", "/acme/t1/a%4", "", {}),
    "key-not-utf8": ("GET", "/acme/t1/a%FF", "", {}),
    "key-double-encoded": ("GET", "/acme/t1/%252E%252E/a", "", {}),
    "key-space": ("GET", "/acme/t1/a%20b", "", {}),
    "key-non-ascii": ("GET", "/acme/t1/%C3%A9", "", {}),
    "key-too-long": ("PUT", "/acme/" + "a" * (MAX_KEY_BYTES + 1), "", {}),
}


@pytest.mark.parametrize(("method", "path", "query", "headers"), list(REFUSED.values()), ids=list(REFUSED))
def test_refused_s3_operation(method: str, path: str, query: str, headers: dict[str, str]) -> None:
    with pytest.raises(S3Refused) as e:
        classify(method, path, query, headers, B)
    assert e.value.code in ("capability_denied", "invalid_request")
    assert e.value.s3_code in ("AccessDenied", "InvalidRequest")


def test_there_are_many_refused_shapes() -> None:
    assert len(REFUSED) >= 60


@pytest.mark.parametrize(
    ("method", "path", "query", "headers"),
    [
        ("GET", "/acme/t1/a", "versionId=3", {}),
        ("PUT", "/acme", "policy", {}),
        ("GET", "/acme", "list-type=2", {}),
        ("PUT", "/acme/t1/a", "", {"x-amz-acl": "public-read"}),
        ("GET", "/acme/t1%2Fa", "", {}),
        ("PUT", "/acme/t1/b", "", {"x-amz-copy-source": "other/a"}),
    ],
)
def test_an_attack_shape_is_capability_denied_so_the_task_is_contained(
    method: str, path: str, query: str, headers: dict[str, str]
) -> None:
    with pytest.raises(S3Refused) as e:
        classify(method, path, query, headers, B)
    assert (e.value.code, e.value.s3_code) == ("capability_denied", "AccessDenied")


@pytest.mark.parametrize("query", ["partNumber=0&uploadId=x", "uploadId=", "prefix=t1/a+b"])
def test_a_malformed_parameter_is_an_invalid_request(query: str) -> None:
    method, path = ("PUT", "/acme/t1/a") if "part" in query else ("DELETE", "/acme/t1/a")
    if "prefix" in query:
        method, path = "GET", "/acme"
    with pytest.raises(S3Refused) as e:
        classify(method, path, query, {}, B)
    assert (e.value.code, e.value.s3_code) == ("invalid_request", "InvalidRequest")


# ------------------------------------------------------------------ the list prefix rule


@pytest.mark.parametrize(
    ("prefix", "folder"),
    [
        ("t1/", "s3://acme/t1/"),
        ("t1/rep", "s3://acme/t1/"),
        ("t1/reports/2025-", "s3://acme/t1/reports/"),
        ("t", "s3://acme/"),
        ("t1", "s3://acme/"),
    ],
)
def test_a_list_is_checked_on_the_folder_holding_every_key_its_prefix_can_match(prefix: str, folder: str) -> None:
    (access,) = op("GET", "/acme", "list-type=2&prefix=" + prefix.replace("/", "%2F")).accesses
    assert access == Access("list", folder)


def test_a_prefix_sent_unencoded_reads_the_same() -> None:
    assert (
        op("GET", "/acme", "list-type=2&prefix=t1/rep").accesses
        == op("GET", "/acme", "list-type=2&prefix=t1%2Frep").accesses
    )


# ------------------------------------------------------------------ key rules


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("a", "a"),
        ("t1/a.txt", "t1/a.txt"),
        ("t1/a%3Db", "t1/a=b"),
        ("t1/%7Euser/x", "t1/~user/x"),
        ("t1/a...b", "t1/a...b"),
        ("t1/.hidden", "t1/.hidden"),
        ("t1/dir/", "t1/dir/"),
    ],
)
def test_a_key_is_decoded_once_exactly(raw: str, key: str) -> None:
    assert decode_key(raw) == key


def test_the_longest_key_is_the_resource_grammars_and_s3s_limit_holds_too() -> None:
    room = MAX_RESOURCE_LENGTH - len("s3://acme/")  # the capability resource holds the key
    longest = "/".join(["a" * 200] * 6)[:room]
    assert object_resource(B, longest) == f"s3://acme/{longest}"
    with pytest.raises(KeyRefused, match="grammar"):
        object_resource(B, longest + "b")
    with pytest.raises(KeyRefused, match=f"longer than {MAX_KEY_BYTES} bytes"):
        object_resource(B, "a/" * 512 + "b")


# ------------------------------------------------------------------ DeleteObjects


def test_delete_objects_asks_delete_on_every_key_in_order() -> None:
    accesses = delete_accesses(B, delete_body("t1/a", "t1/b", "t1/a", quiet=True))
    assert accesses == (
        Access("delete", "s3://acme/t1/a"),
        Access("delete", "s3://acme/t1/b"),
        Access("delete", "s3://acme/t1/a"),
    )


def test_delete_objects_without_namespace_or_declaration_reads_the_same() -> None:
    assert delete_accesses(B, b"<Delete><Object><Key>t1/a</Key></Object></Delete>") == (
        Access("delete", "s3://acme/t1/a"),
    )


def test_delete_objects_of_the_most_keys_passes_and_one_more_does_not() -> None:
    keys = [f"t1/k{i}" for i in range(MAX_DELETE_KEYS)]
    assert len(delete_accesses(B, delete_body(*keys))) == MAX_DELETE_KEYS
    with pytest.raises(S3Refused) as e:
        delete_accesses(B, delete_body(*keys, "t1/one-more"))
    assert e.value.s3_code == "MalformedXML"


BAD_DELETE_BODIES = {
    "one-bad-key": delete_body("t1/a", "t1/../t2/b"),
    "leading-slash-key": delete_body("/t1/a"),
    "empty-key": delete_body(""),
    "percent-key": delete_body("t1/a%2Fb"),
    "version-id": f"<Delete {NS}><Object><Key>t1/a</Key><VersionId>3</VersionId></Object></Delete>".encode(),
    "two-keys-in-object": f"<Delete {NS}><Object><Key>t1/a</Key><Key>t2/b</Key></Object></Delete>".encode(),
    "no-objects": f"<Delete {NS}></Delete>".encode(),
    "other-root": f"<Remove {NS}><Object><Key>t1/a</Key></Object></Remove>".encode(),
    "other-element": f"<Delete {NS}><Object><Key>t1/a</Key></Object><Bucket>x</Bucket></Delete>".encode(),
    "other-namespace": b'<Delete xmlns="urn:x"><Object><Key>t1/a</Key></Object></Delete>',
    "two-quiet": f"<Delete {NS}><Object><Key>t1/a</Key></Object>{'<Quiet>true</Quiet>' * 2}</Delete>".encode(),
    "text-in-root": f"<Delete {NS}>x<Object><Key>t1/a</Key></Object></Delete>".encode(),
    "attribute": f'<Delete {NS}><Object a="1"><Key>t1/a</Key></Object></Delete>'.encode(),
    "not-xml": b"t1/a",
    "unclosed": f"<Delete {NS}><Object><Key>t1/a</Key></Object>".encode(),
    "xxe-external": (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<Delete><Object><Key>&x;</Key></Object></Delete>"
    ),
    "entity-internal": (b'<!DOCTYPE d [<!ENTITY k "t2/secret">]><Delete><Object><Key>&k;</Key></Object></Delete>'),
    "billion-laughs": b'<!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><Delete>&b;</Delete>',
    "undeclared-entity": b"<Delete><Object><Key>&k;</Key></Object></Delete>",
    "comment": b"<Delete><!-- x --><Object><Key>t1/a</Key></Object></Delete>",
    "cdata": b"<Delete><Object><Key><![CDATA[t1/a]]></Key></Object></Delete>",
    "processing-instruction": b"<Delete><?evil x?><Object><Key>t1/a</Key></Object></Delete>",
    "too-large": b"<Delete>" + b" " * (3 * 1024 * 1024) + b"</Delete>",
}


@pytest.mark.parametrize("body", list(BAD_DELETE_BODIES.values()), ids=list(BAD_DELETE_BODIES))
def test_a_bad_delete_objects_body_is_refused_whole(body: bytes) -> None:
    with pytest.raises(S3Refused):
        delete_accesses(B, body)


def test_an_entity_declaration_is_refused_as_an_attack() -> None:
    with pytest.raises(S3Refused) as e:
        delete_accesses(B, BAD_DELETE_BODIES["xxe-external"])
    assert e.value.code == "capability_denied"


# ------------------------------------------------------------------ headers as the route reads them


def test_header_map_lowers_names_and_joins_ordinary_repeats() -> None:
    raw = [(b"Content-Type", b"text/plain"), (b"x-amz-meta-a", b"1"), (b"accept", b"a"), (b"Accept", b"b")]
    assert header_map(raw) == {"content-type": "text/plain", "x-amz-meta-a": "1", "accept": "a, b"}


@pytest.mark.parametrize(
    "raw",
    [
        [(b"x-amz-copy-source", b"acme/t1/a"), (b"x-amz-copy-source", b"other/x")],
        [(b"x-amz-copy-source", b"acme/t1/a"), (b"X-Amz-Copy-Source", b"acme/t2/b")],
        [(b"x-amz-acl", b"private"), (b"x-amz-acl", b"public-read")],
        [(b"x_amz_copy_source", b"a"), (b"x_amz_copy_source", b"b")],
    ],
)
def test_a_repeated_amz_header_is_refused_as_an_attack(raw: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(S3Refused) as e:
        header_map(raw)
    assert e.value.code == "capability_denied"
