"""Attacks on the bucket route's classifier, one named test each, and its properties.

The agent holds a token for ``s3://acme/tasks/t1/`` (every action) and tries to act
outside it: other prefixes by traversal or encoding, another bucket, a copy out of
another bucket, smuggled presigned authentication, policy headers, a DeleteObjects batch
with one foreign key, a list of the whole bucket, an XXE body. Each attack must end in
``S3Refused`` or in an access the grant does not cover: never in a forwarded request.
The route itself (and what reaches the upstream) is tested in tests/integration.
"""

from __future__ import annotations

import string
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.capability.covers import allows
from broker.capability.model import Capability
from broker.gateway.s3keys import KeyRefused, decode_key, object_resource
from broker.gateway.s3ops import Access, S3Refused, classify, delete_accesses

B = "acme"
GRANT = (Capability.build("bucket", "s3://acme/tasks/t1/", ["list", "read", "write", "delete"], "data"),)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def allowed(accesses: tuple[Access, ...]) -> bool:
    return bool(accesses) and all(allows(GRANT, "bucket", a.resource, a.action) for a in accesses)


def passes(method: str, path: str, query: str = "", headers: dict[str, str] | None = None) -> bool:
    """Would the route forward this request for the agent's token?"""
    try:
        op = classify(method, path, query, headers or {}, B)
    except S3Refused:
        return False
    return allowed(op.accesses)


def test_the_grant_itself_works() -> None:
    """The baseline each attack departs from: in-scope requests pass."""
    assert passes("GET", "/acme/tasks/t1/a.txt")
    assert passes("PUT", "/acme/tasks/t1/b.txt", "", {"x-amz-copy-source": "acme/tasks/t1/a.txt"})
    assert passes("GET", "/acme", "list-type=2&prefix=tasks%2Ft1%2F")
    assert allowed(delete_accesses(B, b"<Delete><Object><Key>tasks/t1/a</Key></Object></Delete>"))


def test_key_traversal_with_dotdot_is_refused() -> None:
    assert not passes("GET", "/acme/tasks/t1/../t2/secret")


def test_key_traversal_with_an_encoded_dotdot_is_refused() -> None:
    assert not passes("GET", "/acme/tasks/t1/%2e%2e/t2/secret")


def test_an_encoded_slash_is_refused() -> None:
    assert not passes("GET", "/acme/tasks/t1%2F..%2Ft2/secret")
    assert not passes("GET", "/acme/tasks%2ft1/a")


def test_an_encoded_backslash_is_refused() -> None:
    assert not passes("GET", "/acme/tasks/t1/..%5Ct2%5Csecret")


def test_a_double_encoded_traversal_is_refused() -> None:
    assert not passes("GET", "/acme/tasks/t1/%252e%252e/t2/secret")


def test_a_double_slash_or_leading_slash_is_refused() -> None:
    assert not passes("GET", "/acme/tasks/t1//a")
    assert not passes("GET", "/acme//tasks/t1/a")


def test_a_sibling_prefix_by_string_is_not_covered() -> None:
    assert not passes("GET", "/acme/tasks/t10/a")


def test_bucket_confusion_is_refused() -> None:
    for path in ("/acme-other/tasks/t1/a", "/ACME/tasks/t1/a", "/%61cme/tasks/t1/a", "/acme.evil/tasks/t1/a"):
        assert not passes("GET", path), path


def test_a_copy_from_another_bucket_is_refused() -> None:
    assert not passes("PUT", "/acme/tasks/t1/stolen", "", {"x-amz-copy-source": "payroll/tasks/t1/x"})


def test_a_copy_from_another_prefix_is_refused() -> None:
    assert not passes("PUT", "/acme/tasks/t1/stolen", "", {"x-amz-copy-source": "acme/tasks/t2/secret"})


def test_a_copy_out_of_scope_is_refused() -> None:
    assert not passes("PUT", "/acme/public/leak", "", {"x-amz-copy-source": "acme/tasks/t1/a"})


def test_a_copy_source_in_cgi_spelling_is_refused() -> None:
    """A server that reads ``x_amz_copy_source`` as ``x-amz-copy-source`` would copy a
    source the gateway never checked."""
    assert not passes("PUT", "/acme/tasks/t1/stolen", "", {"x_amz_copy_source": "acme/tasks/t2/secret"})


def test_a_copy_of_an_old_version_is_refused() -> None:
    assert not passes("PUT", "/acme/tasks/t1/b", "", {"x-amz-copy-source": "acme/tasks/t1/a?versionId=1"})


def test_presigned_url_smuggling_is_refused() -> None:
    query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2Fx&X-Amz-Signature=00&X-Amz-Expires=60"
    assert not passes("GET", "/acme/tasks/t1/a", query)
    assert not passes("GET", "/acme/tasks/t1/a", "AWSAccessKeyId=AKIA&Signature=x&Expires=9")


def test_a_policy_header_is_refused() -> None:
    assert not passes("PUT", "/acme/tasks/t1/a", "", {"x-amz-acl": "public-read"})
    assert not passes(
        "PUT", "/acme/tasks/t1/a", "", {"x-amz-grant-read": 'uri="http://acs.amazonaws.com/groups/global/AllUsers"'}
    )


def test_a_policy_header_in_cgi_spelling_is_refused() -> None:
    assert not passes("PUT", "/acme/tasks/t1/a", "", {"x_amz_acl": "public-read"})


def test_encryption_under_the_agents_key_is_refused() -> None:
    """A ransom path: objects encrypted under a key the agent holds or names."""
    assert not passes("PUT", "/acme/tasks/t1/a", "", {"x-amz-server-side-encryption-customer-key": "k"})
    assert not passes("PUT", "/acme/tasks/t1/a", "", {"x-amz-server-side-encryption-aws-kms-key-id": "arn:x"})


def test_bucket_policy_change_is_refused() -> None:
    assert not passes("PUT", "/acme", "policy")
    assert not passes("PUT", "/acme/", "policy")


def test_a_sub_resource_on_an_object_in_scope_is_refused() -> None:
    for sub in ("acl", "tagging", "retention", "legal-hold", "restore", "torrent"):
        assert not passes("PUT", "/acme/tasks/t1/a", sub), sub


def test_delete_objects_with_one_out_of_scope_key_is_refused_whole() -> None:
    body = b"<Delete><Object><Key>tasks/t1/a</Key></Object><Object><Key>tasks/t2/b</Key></Object></Delete>"
    assert not allowed(delete_accesses(B, body))


def test_delete_objects_with_a_traversal_key_is_refused_whole() -> None:
    body = b"<Delete><Object><Key>tasks/t1/a</Key></Object><Object><Key>tasks/t1/../t2/b</Key></Object></Delete>"
    with pytest.raises(S3Refused):
        delete_accesses(B, body)


def test_delete_objects_xxe_is_refused() -> None:
    body = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY k SYSTEM "file:///etc/hostname">]>'
        b"<Delete><Object><Key>tasks/t1/&k;</Key></Object></Delete>"
    )
    with pytest.raises(S3Refused):
        delete_accesses(B, body)


def test_delete_objects_entity_to_a_foreign_key_is_refused() -> None:
    """An internal entity would make the gateway and S3 read different keys."""
    body = b'<!DOCTYPE d [<!ENTITY k "tasks/t2/b">]><Delete><Object><Key>&k;</Key></Object></Delete>'
    with pytest.raises(S3Refused):
        delete_accesses(B, body)


def test_a_list_without_prefix_is_refused() -> None:
    assert not passes("GET", "/acme", "list-type=2")
    assert not passes("GET", "/acme", "")
    assert not passes("GET", "/acme", "list-type=2&prefix=")


def test_a_list_of_a_string_prefix_reaching_siblings_is_refused() -> None:
    """``tasks/t1`` would list ``tasks/t10/...`` too: the folder asked is ``tasks/``."""
    assert not passes("GET", "/acme", "list-type=2&prefix=tasks%2Ft1")


def test_a_list_with_a_traversal_prefix_is_refused() -> None:
    assert not passes("GET", "/acme", "list-type=2&prefix=tasks%2Ft1%2F..%2F")


def test_object_versions_are_refused() -> None:
    assert not passes("GET", "/acme/tasks/t1/a", "versionId=1")
    assert not passes("GET", "/acme", "versions&prefix=tasks%2Ft1%2F")


def test_an_empty_upload_id_is_refused() -> None:
    assert not passes("DELETE", "/acme/tasks/t1/a", "uploadId=")


def test_a_method_override_or_unknown_parameter_is_refused() -> None:
    assert not passes("GET", "/acme/tasks/t1/a", "_method=DELETE")
    assert not passes("GET", "/acme/tasks/t1/a", "x-id=DeleteObject")


# ------------------------------------------------------------------ properties

KEY_CHARS = string.ascii_letters + string.digits + "._~@:+=,-/%\\ \x00\n" + "é"
SEGMENT = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "._~@:+=,-", min_size=1, max_size=8),
    st.sampled_from([".", "..", "", "%2F", "%2e%2e", "a%5Cb", "%00", "a b"]),
)
keys = st.one_of(
    st.lists(SEGMENT, min_size=1, max_size=5).map("/".join),  # mostly well-formed, some traps
    st.text(alphabet=KEY_CHARS, min_size=0, max_size=40),  # anything
)
raw_paths = st.one_of(
    keys.map(lambda k: "/acme/" + k),
    keys.map(lambda k: "/acme/" + quote(k, safe="/~")),
    keys.map(lambda k: "/acme/" + quote(k, safe="")),
    st.text(alphabet=KEY_CHARS + "A?&#", max_size=40),
)
queries = st.one_of(
    st.just(""),
    st.sampled_from(["uploads", "uploadId=u", "partNumber=1&uploadId=u", "acl", "versionId=1", "delete"]),
    keys.map(lambda k: "list-type=2&prefix=" + quote(k, safe="")),
    keys.map(lambda k: "prefix=" + k),
)
#: (method, query, copy?) of every mapped object operation, and a few that are not
SHAPES = st.sampled_from([
    ("GET", "", False), ("HEAD", "", False), ("PUT", "", False), ("DELETE", "", False),
    ("POST", "uploads", False), ("PUT", "partNumber=1&uploadId=u", False), ("POST", "uploadId=u", False),
    ("DELETE", "uploadId=u", False), ("GET", "uploadId=u", False), ("PUT", "", True),
    ("PUT", "partNumber=2&uploadId=u", True), ("PUT", "acl", False), ("GET", "versionId=1", False),
])  # fmt: skip
methods = st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH"])
copy_headers = st.one_of(st.just({}), keys.map(lambda k: {"x-amz-copy-source": "acme/" + quote(k, safe="/")}))


def _clean(resource: str) -> bool:
    rest = resource.removeprefix("s3://acme/")
    return (
        resource.startswith("s3://acme/")
        and ".." not in resource
        and "//" not in rest
        and not rest.startswith("/")
        and "\\" not in resource
        and "%" not in resource
        and all(0x21 <= ord(c) < 0x7F for c in resource)
    )


@FAST
@given(methods, raw_paths, queries, copy_headers)
def test_an_accepted_request_only_asks_for_clean_resources_in_the_bucket(
    method: str, path: str, query: str, headers: dict[str, str]
) -> None:
    try:
        op = classify(method, path, query, headers, B)
    except S3Refused:
        return
    assert op.bucket == B
    for access in op.accesses:
        assert access.action in ("read", "write", "delete", "list")
        assert _clean(access.resource), access
    if op.key is not None:
        assert op.accesses[-1].resource == f"s3://acme/{op.key}"


@FAST
@given(SHAPES, keys, keys)
def test_an_object_operation_asks_exactly_for_its_key_and_source(
    shape: tuple[str, str, bool], key: str, source: str
) -> None:
    method, query, copy = shape
    headers = {"x-amz-copy-source": "acme/" + quote(source, safe="/~")} if copy else {}
    try:
        op = classify(method, "/acme/" + quote(key, safe="/~"), query, headers, B)
    except S3Refused:
        return
    assert op.key == key
    assert op.accesses[-1].resource == f"s3://acme/{key}"
    assert all(_clean(a.resource) for a in op.accesses)
    if copy:
        assert op.accesses[0] == Access("read", f"s3://acme/{source}")


@FAST
@given(keys)
def test_an_accepted_key_round_trips_exactly(key: str) -> None:
    """A key the rules accept is the same key whether sent encoded or, when it can be,
    as it is: the gateway and S3 read the same name."""
    try:
        resource = object_resource(B, key)
    except KeyRefused:
        return
    assert resource == f"s3://acme/{key}"
    assert decode_key(quote(key, safe="/~")) == key
    assert decode_key(quote(key, safe="/")) == key
    assert classify("GET", "/acme/" + quote(key, safe="/~"), "", {}, B).key == key


@FAST
@given(keys)
def test_a_key_with_an_encoded_separator_is_never_accepted(key: str) -> None:
    raw = "/acme/tasks/t1/" + quote(key, safe="") + "%2F" + "x"
    with pytest.raises(S3Refused):
        classify("GET", raw, "", {}, B)


@FAST
@given(st.lists(keys, min_size=1, max_size=5))
def test_delete_objects_is_all_or_nothing(batch: list[str]) -> None:
    """Either every key becomes one delete access, in order, or the whole body is refused."""
    from xml.sax.saxutils import escape

    body = "<Delete>" + "".join(f"<Object><Key>{escape(k)}</Key></Object>" for k in batch) + "</Delete>"
    try:
        accesses = delete_accesses(B, body.encode())
    except S3Refused:
        assert any(_refused_key(k) for k in batch)
        return
    assert accesses == tuple(Access("delete", f"s3://acme/{k}") for k in batch)


def _refused_key(key: str) -> bool:
    try:
        object_resource(B, key)
    except KeyRefused:
        return True
    return False


@FAST
@given(keys)
def test_a_list_covers_every_key_its_prefix_can_match(prefix: str) -> None:
    """The folder checked is a prefix of every key the list can return: a grant on the
    folder covers whatever the upstream answers."""
    try:
        op = classify("GET", "/acme", "list-type=2&prefix=" + quote(prefix, safe=""), {}, B)
    except S3Refused:
        return
    (access,) = op.accesses
    folder = access.resource.removeprefix("s3://acme/")
    assert prefix.startswith(folder)
    assert folder == "" or folder.endswith("/")
    assert "/" not in prefix[len(folder) :]
