"""The bucket route against moto's S3 server with SigV4 checks on (tests/servers/s3_stack.py).

Stock boto3 and the AWS CLI hold placeholder keys and the capability token as their
session token. Every mapped operation works within the capability; outside it, and for
every operation not mapped, the gateway answers an S3 XML error and moto's request log
shows that nothing arrived. The placeholder keys themselves get nowhere at moto.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.servers.gateway_stack import GatewayStack, own_stack
from tests.servers.processes import BaoServer
from tests.servers.s3_stack import (
    BUCKET,
    FAKE_KEY_ID,
    FAKE_SECRET,
    REGION,
    client,
    gateway_client,
    put_s3_keys,
    scope,
    start_s3_stack,
)

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

ALL = ["list", "read", "write", "delete"]
#: the stack's secret_refresh is 1 s; a round that fails is retried after 1 s
REFRESH_BOUND = 5.0


@pytest.fixture(scope="module")
def stack(bao_server: BaoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    with own_stack(tmp_path_factory.mktemp("gateway-s3"), bao_server, start_s3_stack) as built:
        yield built


def task_client(stack: GatewayStack, name: str, actions: list[str] = ALL, folder: str | None = None) -> tuple[Any, str]:
    """A fresh task, a token narrowed to ``tasks/<task>/`` (or ``folder``), its client."""
    task = stack.fresh_task(name)
    prefix = folder if folder is not None else f"tasks/{task}/"
    token = stack.token(task, [scope(f"s3://{BUCKET}/{prefix}", actions)])
    return gateway_client(stack, token), prefix


def direct(stack: GatewayStack) -> Any:
    """boto3 with the gateway's real keys, straight to moto (to seed and to look)."""
    keys = stack.s3.keys
    return client(stack.s3.url, token=None, key_id=keys["access_key_id"], secret=keys["secret_access_key"])


def seed(stack: GatewayStack, key: str, body: bytes = b"seeded") -> None:
    direct(stack).put_object(Bucket=BUCKET, Key=key, Body=body)


def moto_count(stack: GatewayStack) -> int:
    return len(stack.s3.requests())


def error_of(call: Callable[[], Any]) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return (
        int(response["ResponseMetadata"]["HTTPStatusCode"]),
        str(response["Error"].get("Code")),
        str(response["Error"].get("Message", "")),
    )


# ------------------------------------------------------------------ moto itself


def test_moto_checks_signatures_so_the_agents_placeholder_keys_get_nowhere(stack: GatewayStack) -> None:
    seed(stack, "direct/object.txt")
    fake = client(stack.s3.url, token="anything", key_id=FAKE_KEY_ID, secret=FAKE_SECRET)
    assert error_of(lambda: fake.get_object(Bucket=BUCKET, Key="direct/object.txt"))[1] == "InvalidAccessKeyId"
    wrong = client(stack.s3.url, token=None, key_id=stack.s3.keys["access_key_id"], secret="not-the-secret")
    assert error_of(lambda: wrong.get_object(Bucket=BUCKET, Key="direct/object.txt"))[1] == "SignatureDoesNotMatch"
    assert direct(stack).get_object(Bucket=BUCKET, Key="direct/object.txt")["Body"].read() == b"seeded"


# ------------------------------------------------------------------ every mapped operation, in scope


def test_put_get_head_and_delete_an_object(stack: GatewayStack) -> None:
    s3, prefix = task_client(stack, "s3-object")
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}report.txt", Body=b"the report", ContentType="text/plain")
    got = s3.get_object(Bucket=BUCKET, Key=f"{prefix}report.txt")
    assert got["Body"].read() == b"the report"
    assert got["ContentType"] == "text/plain"
    assert s3.head_object(Bucket=BUCKET, Key=f"{prefix}report.txt")["ContentLength"] == 10
    s3.delete_object(Bucket=BUCKET, Key=f"{prefix}report.txt")
    assert error_of(lambda: direct(stack).head_object(Bucket=BUCKET, Key=f"{prefix}report.txt"))[0] == 404
    arrived = stack.s3.requests()[-5:]
    assert {r["access_key_id"] for r in arrived} == {stack.s3.keys["access_key_id"]}  # the gateway's signature


def test_upstream_errors_pass_back_as_s3_errors(stack: GatewayStack) -> None:
    s3, prefix = task_client(stack, "s3-missing")
    status, code, _ = error_of(lambda: s3.get_object(Bucket=BUCKET, Key=f"{prefix}missing"))
    assert (status, code) == (404, "NoSuchKey")


def test_list_objects_v1_and_v2_under_the_prefix(stack: GatewayStack) -> None:
    s3, prefix = task_client(stack, "s3-list")
    for name in ("a.txt", "b.txt", "sub/c.txt"):
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}{name}", Body=b"x")
    v2 = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    assert sorted(o["Key"] for o in v2["Contents"]) == [f"{prefix}a.txt", f"{prefix}b.txt", f"{prefix}sub/c.txt"]
    v1 = s3.list_objects(Bucket=BUCKET, Prefix=prefix, Delimiter="/")
    assert sorted(o["Key"] for o in v1["Contents"]) == [f"{prefix}a.txt", f"{prefix}b.txt"]
    assert [p["Prefix"] for p in v1["CommonPrefixes"]] == [f"{prefix}sub/"]


def test_multipart_upload_create_parts_list_complete_and_abort(stack: GatewayStack) -> None:
    s3, prefix = task_client(stack, "s3-multipart")
    key = f"{prefix}big.bin"
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    first, second = b"a" * (5 * 1024 * 1024), b"b" * 1024
    etags = [
        s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=n, Body=body)["ETag"]
        for n, body in ((1, first), (2, second))
    ]
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload)["Parts"]] == [1, 2]
    parts = [{"ETag": etag, "PartNumber": n} for n, etag in enumerate(etags, start=1)]
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    assert hashlib.sha256(direct(stack).get_object(Bucket=BUCKET, Key=key)["Body"].read()).digest() == (
        hashlib.sha256(first + second).digest()
    )
    aborted = s3.create_multipart_upload(Bucket=BUCKET, Key=f"{prefix}aborted.bin")["UploadId"]
    s3.abort_multipart_upload(Bucket=BUCKET, Key=f"{prefix}aborted.bin", UploadId=aborted)
    assert error_of(lambda: direct(stack).head_object(Bucket=BUCKET, Key=f"{prefix}aborted.bin"))[0] == 404


def test_delete_objects_deletes_every_key_when_all_are_covered(stack: GatewayStack) -> None:
    s3, prefix = task_client(stack, "s3-batch")
    keys = [f"{prefix}{n}.txt" for n in range(3)]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    answer = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys]})
    assert sorted(d["Key"] for d in answer["Deleted"]) == keys
    assert "Contents" not in direct(stack).list_objects_v2(Bucket=BUCKET, Prefix=prefix)


def test_copy_object_and_upload_part_copy_within_the_capability(stack: GatewayStack) -> None:
    s3, prefix = task_client(stack, "s3-copy")
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}source.txt", Body=b"s" * (5 * 1024 * 1024))
    s3.copy_object(Bucket=BUCKET, Key=f"{prefix}copy.txt", CopySource={"Bucket": BUCKET, "Key": f"{prefix}source.txt"})
    assert direct(stack).head_object(Bucket=BUCKET, Key=f"{prefix}copy.txt")["ContentLength"] == 5 * 1024 * 1024
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=f"{prefix}assembled.bin")["UploadId"]
    part = s3.upload_part_copy(
        Bucket=BUCKET,
        Key=f"{prefix}assembled.bin",
        UploadId=upload,
        PartNumber=1,
        CopySource={"Bucket": BUCKET, "Key": f"{prefix}source.txt"},
    )
    s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key=f"{prefix}assembled.bin",
        UploadId=upload,
        MultipartUpload={"Parts": [{"ETag": part["CopyPartResult"]["ETag"], "PartNumber": 1}]},
    )
    assert direct(stack).head_object(Bucket=BUCKET, Key=f"{prefix}assembled.bin")["ContentLength"] == 5 * 1024 * 1024


# ------------------------------------------------------------------ refused: nothing reaches moto

Case = Callable[[Any, str], Any]

REFUSED: dict[str, tuple[list[str], Case]] = {
    # (the token's actions on tasks/<task>/, the call); each is refused with 403 AccessDenied
    "get-outside-prefix": (ALL, lambda s3, p: s3.get_object(Bucket=BUCKET, Key="tasks/other/secret.txt")),
    "head-outside-prefix": (ALL, lambda s3, p: s3.head_object(Bucket=BUCKET, Key="tasks/other/secret.txt")),
    "get-without-read": (["write"], lambda s3, p: s3.get_object(Bucket=BUCKET, Key=f"{p}a.txt")),
    "put-outside-prefix": (ALL, lambda s3, p: s3.put_object(Bucket=BUCKET, Key="public/x.txt", Body=b"x")),
    "put-without-write": (["read"], lambda s3, p: s3.put_object(Bucket=BUCKET, Key=f"{p}x.txt", Body=b"x")),
    "put-dot-dot-key": (ALL, lambda s3, p: s3.put_object(Bucket=BUCKET, Key=f"{p}../escape.txt", Body=b"x")),
    "create-multipart-outside": (ALL, lambda s3, p: s3.create_multipart_upload(Bucket=BUCKET, Key="public/m.bin")),
    "upload-part-outside": (
        ALL,
        lambda s3, p: s3.upload_part(Bucket=BUCKET, Key="public/m.bin", UploadId="u1", PartNumber=1, Body=b"x"),
    ),
    "complete-multipart-outside": (
        ALL,
        lambda s3, p: s3.complete_multipart_upload(
            Bucket=BUCKET,
            Key="public/m.bin",
            UploadId="u1",
            MultipartUpload={"Parts": [{"ETag": "e", "PartNumber": 1}]},
        ),
    ),
    "abort-multipart-outside": (
        ALL,
        lambda s3, p: s3.abort_multipart_upload(Bucket=BUCKET, Key="public/m.bin", UploadId="u1"),
    ),
    "list-parts-without-write": (["read"], lambda s3, p: s3.list_parts(Bucket=BUCKET, Key=f"{p}m.bin", UploadId="u1")),
    "delete-without-delete": (["read", "write"], lambda s3, p: s3.delete_object(Bucket=BUCKET, Key=f"{p}a.txt")),
    "delete-outside-prefix": (ALL, lambda s3, p: s3.delete_object(Bucket=BUCKET, Key="tasks/other/a.txt")),
    "delete-objects-one-key-outside": (
        ALL,
        lambda s3, p: s3.delete_objects(
            Bucket=BUCKET, Delete={"Objects": [{"Key": f"{p}a.txt"}, {"Key": "tasks/other/a.txt"}]}
        ),
    ),
    "list-bucket-root": (ALL, lambda s3, p: s3.list_objects_v2(Bucket=BUCKET)),
    "list-v1-without-prefix": (ALL, lambda s3, p: s3.list_objects(Bucket=BUCKET)),
    "list-outside-prefix": (ALL, lambda s3, p: s3.list_objects_v2(Bucket=BUCKET, Prefix="tasks/other/")),
    "list-string-prefix-sibling": (ALL, lambda s3, p: s3.list_objects_v2(Bucket=BUCKET, Prefix=p.rstrip("/"))),
    "list-without-list": (["read"], lambda s3, p: s3.list_objects_v2(Bucket=BUCKET, Prefix=p)),
    "copy-from-outside": (
        ALL,
        lambda s3, p: s3.copy_object(
            Bucket=BUCKET, Key=f"{p}stolen.txt", CopySource={"Bucket": BUCKET, "Key": "tasks/other/secret.txt"}
        ),
    ),
    "copy-to-outside": (
        ALL,
        lambda s3, p: s3.copy_object(
            Bucket=BUCKET, Key="public/leak.txt", CopySource={"Bucket": BUCKET, "Key": f"{p}a.txt"}
        ),
    ),
    "copy-from-another-bucket": (
        ALL,
        lambda s3, p: s3.copy_object(Bucket=BUCKET, Key=f"{p}x.txt", CopySource={"Bucket": "other-bucket", "Key": "x"}),
    ),
    "upload-part-copy-from-outside": (
        ALL,
        lambda s3, p: s3.upload_part_copy(
            Bucket=BUCKET,
            Key=f"{p}m.bin",
            UploadId="u1",
            PartNumber=1,
            CopySource={"Bucket": BUCKET, "Key": "tasks/other/secret.txt"},
        ),
    ),
    "put-with-acl": (
        ALL,
        lambda s3, p: s3.put_object(Bucket=BUCKET, Key=f"{p}x.txt", Body=b"x", ACL="public-read"),
    ),
    "put-with-tagging": (ALL, lambda s3, p: s3.put_object(Bucket=BUCKET, Key=f"{p}x.txt", Body=b"x", Tagging="a=b")),
    "put-object-acl": (ALL, lambda s3, p: s3.put_object_acl(Bucket=BUCKET, Key=f"{p}x.txt", ACL="public-read")),
    "get-object-acl": (ALL, lambda s3, p: s3.get_object_acl(Bucket=BUCKET, Key=f"{p}x.txt")),
    "put-object-tagging": (
        ALL,
        lambda s3, p: s3.put_object_tagging(Bucket=BUCKET, Key=f"{p}x.txt", Tagging={"TagSet": []}),
    ),
    "get-object-version": (ALL, lambda s3, p: s3.get_object(Bucket=BUCKET, Key=f"{p}x.txt", VersionId="v1")),
    "create-bucket": (ALL, lambda s3, p: s3.create_bucket(Bucket=BUCKET)),
    "delete-bucket": (ALL, lambda s3, p: s3.delete_bucket(Bucket=BUCKET)),
    "put-bucket-policy": (ALL, lambda s3, p: s3.put_bucket_policy(Bucket=BUCKET, Policy='{"Statement": []}')),
    "get-bucket-policy": (ALL, lambda s3, p: s3.get_bucket_policy(Bucket=BUCKET)),
    "get-bucket-acl": (ALL, lambda s3, p: s3.get_bucket_acl(Bucket=BUCKET)),
    "put-bucket-versioning": (
        ALL,
        lambda s3, p: s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"}),
    ),
    "put-bucket-lifecycle": (
        ALL,
        lambda s3, p: s3.put_bucket_lifecycle_configuration(
            Bucket=BUCKET,
            LifecycleConfiguration={
                "Rules": [{"ID": "x", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}}]
            },
        ),
    ),
    "list-multipart-uploads": (ALL, lambda s3, p: s3.list_multipart_uploads(Bucket=BUCKET)),
    "list-object-versions": (ALL, lambda s3, p: s3.list_object_versions(Bucket=BUCKET, Prefix=p)),
    "head-bucket": (ALL, lambda s3, p: s3.head_bucket(Bucket=BUCKET)),
    "list-buckets": (ALL, lambda s3, p: s3.list_buckets()),
    "another-bucket": (ALL, lambda s3, p: s3.get_object(Bucket="other-bucket", Key=f"{p}a.txt")),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_operations_reach_nothing(stack: GatewayStack, case: str) -> None:
    actions, call = REFUSED[case]
    s3, prefix = task_client(stack, f"s3-refused-{case}", actions)
    before = moto_count(stack)
    status, code, message = error_of(lambda: call(s3, prefix))
    assert (status, code) == (403, "AccessDenied") or (status == 403 and code == "403"), (status, code, message)
    if code == "AccessDenied":
        assert "capbroker capability_denied" in message
    assert moto_count(stack) == before, stack.s3.requests()[before:]


def test_a_refusal_contains_the_task_and_an_s3_xml_body_says_why(stack: GatewayStack) -> None:
    task = stack.fresh_task("s3-contain")
    token = stack.token(task, [scope(f"s3://{BUCKET}/tasks/{task}/", ALL)])
    status, headers, body = stack.request(
        "GET", f"/s3/{BUCKET}?list-type=2&prefix=tasks%2F", headers={"X-Amz-Security-Token": token}
    )
    assert status == 403
    assert headers["content-type"] == "application/xml"
    assert b"<Code>AccessDenied</Code>" in body
    assert b"capbroker capability_denied" in body
    line = stack.audit_for(headers["x-request-id"])
    assert (line["decision"], line["containment"], line["task"]) == ("deny", "contained", task)
    s3 = gateway_client(stack, token)
    status, code, _ = error_of(lambda: s3.put_object(Bucket=BUCKET, Key=f"tasks/{task}/a", Body=b"x"))
    assert (status, code) == (401, "InvalidToken")


def _raw(stack: GatewayStack, method: str, path: str, headers: list[tuple[str, str]]) -> tuple[int, bytes, str]:
    """One request with headers exactly as given (repeats and spellings kept)."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.gateway_port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("x-request-id", "")
    finally:
        conn.close()


@pytest.mark.parametrize(
    "extra",
    [
        [("x-amz-copy-source", "agent-data/tasks/{task}/a.txt"), ("x-amz-copy-source", "agent-data/tasks/other/b")],
        [("x_amz_acl", "public-read")],
        [("x_amz_copy_source", "agent-data/tasks/other/b")],
    ],
    ids=["two-copy-sources", "acl-spelled-with-underscores", "copy-source-spelled-with-underscores"],
)
def test_header_tricks_are_refused_and_contain_the_task(stack: GatewayStack, extra: list[tuple[str, str]]) -> None:
    task = stack.fresh_task("s3-headers")
    token = stack.token(task, [scope(f"s3://{BUCKET}/tasks/{task}/", ALL)])
    before = moto_count(stack)
    headers = [("X-Amz-Security-Token", token), ("Content-Length", "0")]
    headers += [(k, v.format(task=task)) for k, v in extra]
    status, body, request_id = _raw(stack, "PUT", f"/s3/{BUCKET}/tasks/{task}/copy.txt", headers)
    assert status == 403, body
    assert b"<Code>AccessDenied</Code>" in body
    assert stack.audit_for(request_id)["containment"] == "contained"
    assert moto_count(stack) == before


def test_a_header_sent_as_a_chunked_trailer_is_never_signed_and_forwarded(stack: GatewayStack) -> None:
    """The outside tester's race: a PUT's ``x-amz-copy-source`` sent as a trailer, a moment
    after the body, arrived while the route waited on the budget store, and was signed
    and forwarded: a write-only token copied an object from outside its prefix. Tried
    at several delays; the object written is always the body sent, never the copy."""
    seed(stack, "other/secret.txt", b"SECRET")
    for attempt, delay in enumerate((0.0002, 0.0005, 0.001, 0.002, 0.005)):
        task = stack.fresh_task("s3-trailer")
        token = stack.token(task, [scope(f"s3://{BUCKET}/tasks/{task}/", ["write"], name="gw-bucket-budget")])
        key = f"tasks/{task}/copy-{attempt}.txt"
        head = (
            f"PUT /s3/{BUCKET}/{key} HTTP/1.1\r\nHost: gw\r\nX-Amz-Security-Token: {token}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n"
        )
        with socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=30) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.sendall(head.encode())
            time.sleep(delay)
            conn.sendall(f"x-amz-copy-source: {BUCKET}/other/secret.txt\r\n\r\n".encode())
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        assert b"CopyObjectResult" not in answer, (delay, answer[:300])
        if answer.startswith(b"HTTP/1.1 200"):
            assert direct(stack).get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"hello"


@pytest.mark.parametrize("other", ["other-bucket", "Agent-data", "%61gent-data"])
def test_another_bucket_is_refused_to_the_task_and_contains_it(stack: GatewayStack, other: str) -> None:
    """The outside tester's second finding: another bucket was refused before the token
    was read, so the refusal named no task and contained nothing."""
    task = stack.fresh_task("s3-other-bucket")
    token = stack.token(task, [scope(f"s3://{BUCKET}/tasks/{task}/", ALL)])
    before = moto_count(stack)
    status, headers, body = stack.request("GET", f"/s3/{other}/secret", headers={"X-Amz-Security-Token": token})
    assert status == 403, body
    assert b"<Code>AccessDenied</Code>" in body
    line = stack.audit_for(headers["x-request-id"])
    assert (line["decision"], line["task"], line["containment"]) == ("deny", task, "contained")
    s3 = gateway_client(stack, token)
    status, code, _ = error_of(lambda: s3.put_object(Bucket=BUCKET, Key=f"tasks/{task}/a", Body=b"x"))
    assert (status, code) == (401, "InvalidToken")
    assert moto_count(stack) == before


# ------------------------------------------------------------------ tokens


def test_no_token_or_a_bad_one_is_401_invalid_token_and_nothing_arrives(stack: GatewayStack) -> None:
    before = moto_count(stack)
    anonymous = client(f"{stack.gateway_url}/s3", token=None)
    assert error_of(lambda: anonymous.get_object(Bucket=BUCKET, Key="tasks/a"))[:2] == (401, "InvalidToken")
    forged = client(f"{stack.gateway_url}/s3", token="eyJhbGciOiJFZERTQSJ9.e30.c2ln")
    assert error_of(lambda: forged.get_object(Bucket=BUCKET, Key="tasks/a"))[:2] == (401, "InvalidToken")
    assert moto_count(stack) == before


def test_a_token_for_another_audience_is_refused(stack: GatewayStack) -> None:
    token = stack.token(stack.fresh_task("s3-aud"), ["gw-api"])
    s3 = client(f"{stack.gateway_url}/s3", token=token)
    assert error_of(lambda: s3.get_object(Bucket=BUCKET, Key="tasks/a"))[:2] == (401, "InvalidToken")


def test_authorization_bearer_is_accepted_without_a_session_token(stack: GatewayStack) -> None:
    task = stack.fresh_task("s3-bearer")
    seed(stack, f"tasks/{task}/seeded.txt")
    token = stack.token(task, [scope(f"s3://{BUCKET}/tasks/{task}/", ["read"])])
    status, _, body = stack.request("GET", f"/s3/{BUCKET}/tasks/{task}/seeded.txt", token=token)
    assert (status, body) == (200, b"seeded")


def test_the_agents_signature_date_and_token_never_arrive(stack: GatewayStack) -> None:
    task = stack.fresh_task("s3-strip")
    token = stack.token(task, [scope(f"s3://{BUCKET}/tasks/{task}/", ALL)])
    s3 = gateway_client(stack, token)
    s3.put_object(Bucket=BUCKET, Key=f"tasks/{task}/a.txt", Body=b"x")
    arrived = stack.s3.requests()[-1]
    assert arrived["access_key_id"] == stack.s3.keys["access_key_id"]
    assert arrived["security_token"] is False  # the capability token stays at the gateway


# ------------------------------------------------------------------ streaming bodies


def _aws_chunked(data: bytes, size: int) -> bytes:
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD body with placeholder chunk signatures."""
    out = b""
    for start in range(0, len(data), size):
        piece = data[start : start + size]
        out += b"%x;chunk-signature=%s\r\n%s\r\n" % (len(piece), b"0" * 64, piece)
    return out + b"0;chunk-signature=" + b"0" * 64 + b"\r\n\r\n"


def _put_raw(stack: GatewayStack, path: str, token: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.gateway_port, timeout=30)
    try:
        conn.request("PUT", path, body=body, headers={"X-Amz-Security-Token": token, **headers})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_a_signed_aws_chunked_upload_is_dechunked_and_stored_whole(stack: GatewayStack) -> None:
    task = stack.fresh_task("s3-chunked")
    token = stack.token(task, [scope(f"s3://{BUCKET}/tasks/{task}/", ALL)])
    data = os.urandom(200_000)
    status, body = _put_raw(
        stack,
        f"/s3/{BUCKET}/tasks/{task}/chunked.bin",
        token,
        {
            "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(len(data)),
            "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAFAKE/20250101/us-east-1/s3/aws4_request, x",
        },
        _aws_chunked(data, 65536),
    )
    assert status == 200, body
    assert stack.s3.requests()[-1]["content_sha256"] == "UNSIGNED-PAYLOAD"
    assert direct(stack).get_object(Bucket=BUCKET, Key=f"tasks/{task}/chunked.bin")["Body"].read() == data


def test_a_broken_aws_chunked_body_is_not_stored(stack: GatewayStack) -> None:
    task = stack.fresh_task("s3-chunked-bad")
    token = stack.token(task, [scope(f"s3://{BUCKET}/tasks/{task}/", ALL)])
    data = b"z" * 1000
    broken = _aws_chunked(data, 400).replace(b"190;", b"1zz;", 1)  # the second chunk's size is not hex
    status, body = _put_raw(
        stack,
        f"/s3/{BUCKET}/tasks/{task}/bad.bin",
        token,
        {
            "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(len(data)),
        },
        broken,
    )
    assert status in (400, 502), body
    assert error_of(lambda: direct(stack).head_object(Bucket=BUCKET, Key=f"tasks/{task}/bad.bin"))[0] == 404


# ------------------------------------------------------------------ budgets


def test_a_request_budget_is_spent_and_then_429_budget_exhausted(stack: GatewayStack) -> None:
    task = stack.fresh_task("s3-budget")
    token = stack.token(task, [scope(f"s3://{BUCKET}/tasks/{task}/", ALL, name="gw-bucket-budget")])
    s3 = gateway_client(stack, token)
    for n in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"tasks/{task}/{n}", Body=b"x")
    before = moto_count(stack)
    assert error_of(lambda: s3.put_object(Bucket=BUCKET, Key=f"tasks/{task}/3", Body=b"x"))[:2] == (
        429,
        "BudgetExhausted",
    )
    assert moto_count(stack) == before


# ------------------------------------------------------------------ the AWS CLI


def test_aws_cli_cp_up_and_down_through_the_gateway(stack: GatewayStack, tmp_path: Path) -> None:
    task = stack.fresh_task("s3-cli")
    token = stack.token(task, [scope(f"s3://{BUCKET}/tasks/{task}/", ALL)])
    (tmp_path / "config").write_text("[default]\ns3 =\n    addressing_style = path\n")
    source = tmp_path / "report.txt"
    source.write_bytes(b"written by the aws cli\n" * 1000)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
        "AWS_SESSION_TOKEN": token,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL_S3": f"{stack.gateway_url}/s3",
    }

    def aws(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "awscli", "s3", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    up = aws("cp", str(source), f"s3://{BUCKET}/tasks/{task}/report.txt")
    assert up.returncode == 0, up.stderr
    down = aws("cp", f"s3://{BUCKET}/tasks/{task}/report.txt", str(tmp_path / "back.txt"))
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "back.txt").read_bytes() == source.read_bytes()
    before = moto_count(stack)
    outside = aws("cp", str(source), f"s3://{BUCKET}/public/report.txt")
    assert outside.returncode != 0
    assert "AccessDenied" in outside.stderr
    assert moto_count(stack) == before


def test_the_audit_line_names_the_task_and_the_access(stack: GatewayStack) -> None:
    task = stack.fresh_task("s3-audit")
    token = stack.token(task, [scope(f"s3://{BUCKET}/tasks/{task}/", ALL)])
    status, headers, _ = stack.request(
        "PUT", f"/s3/{BUCKET}/tasks/{task}/a.txt", headers={"X-Amz-Security-Token": token}, body=b"12345"
    )
    assert status == 200
    line = stack.audit_for(headers["x-request-id"])
    assert (line["kind"], line["resource"], line["action"], line["decision"]) == (
        "bucket",
        f"s3://{BUCKET}/tasks/{task}/a.txt",
        "write",
        "allow",
    )
    assert line["bytes_in"] == 5
    assert token not in json.dumps(line)


def test_the_keys_are_read_again_from_vault_so_a_rotation_is_picked_up(stack: GatewayStack) -> None:
    """A wrong secret in KV is used within a refresh (moto then answers SignatureDoesNotMatch:
    the gateway signs with what Vault holds), and the right one again after."""
    task = stack.fresh_task("s3-rotate")
    s3 = gateway_client(stack, stack.token(task, [scope(f"s3://{BUCKET}/tasks/{task}/", ALL)]))
    s3.put_object(Bucket=BUCKET, Key=f"tasks/{task}/a", Body=b"x")
    right = stack.s3.keys

    def changes_from(previous: str) -> str:
        """The first answer other than ``previous`` within the refresh bound (or the last one)."""
        end = time.monotonic() + REFRESH_BOUND
        while True:
            try:
                s3.head_object(Bucket=BUCKET, Key=f"tasks/{task}/a")
                code = "ok"
            except ClientError as e:
                code = str(e.response["Error"]["Code"])
            if code != previous or time.monotonic() > end:
                return code
            time.sleep(0.1)

    try:
        put_s3_keys(stack.bao, {**right, "secret_access_key": "rotated-but-wrong"})
        assert changes_from("ok") == "403"  # HEAD: moto's SignatureDoesNotMatch, without a body
        assert stack.s3.requests()[-1]["status"] == 403
    finally:
        put_s3_keys(stack.bao, right)
    assert changes_from("403") == "ok"


# ------------------------------------------------------------------ failures (these restart the gateway)


@pytest.fixture
def restored(stack: GatewayStack) -> Iterator[GatewayStack]:
    try:
        yield stack
    finally:
        stack.start_gateway()
        stack.wait_ready()


def test_keys_that_cannot_be_read_are_503_service_unavailable_and_nothing_is_forwarded(
    restored: GatewayStack,
) -> None:
    missing = {"vault": "secret/data/gateway/missing", "access_key_id": "a", "secret_access_key": "b"}
    restored.start_gateway(routes=[restored.s3.route(credential=missing)])
    task = restored.fresh_task("s3-nokeys")
    s3 = gateway_client(restored, restored.token(task, [scope(f"s3://{BUCKET}/tasks/{task}/", ALL)]))
    before = moto_count(restored)
    assert error_of(lambda: s3.get_object(Bucket=BUCKET, Key=f"tasks/{task}/a"))[:2] == (503, "ServiceUnavailable")
    assert moto_count(restored) == before


def test_an_upstream_that_is_down_is_502_bad_gateway(restored: GatewayStack) -> None:
    restored.start_gateway(routes=[restored.s3.route(upstream=f"http://127.0.0.1:{restored.down_port}")])
    restored.wait_ready()
    task = restored.fresh_task("s3-down")
    s3 = gateway_client(restored, restored.token(task, [scope(f"s3://{BUCKET}/tasks/{task}/", ALL)]))
    assert error_of(lambda: s3.get_object(Bucket=BUCKET, Key=f"tasks/{task}/a"))[:2] == (502, "BadGateway")


def test_a_delete_objects_body_over_the_bound_is_400_entity_too_large(stack: GatewayStack) -> None:
    task = stack.fresh_task("s3-bigdelete")
    token = stack.token(task, [scope(f"s3://{BUCKET}/tasks/{task}/", ALL)])
    before = moto_count(stack)
    body = b"<Delete>" + b" " * (3 * 1024 * 1024) + b"</Delete>"
    status, _, answer = stack.request(
        "POST", f"/s3/{BUCKET}?delete", headers={"X-Amz-Security-Token": token}, body=body
    )
    assert status == 400
    assert b"<Code>EntityTooLarge</Code>" in answer
    assert moto_count(stack) == before
