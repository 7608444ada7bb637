"""A 1 GB multipart upload through the bucket route, in 64 MB parts generated on the fly,
completes, and the object comes back whole, while the gateway's memory stays flat: its
peak RSS during the upload, and again during the download (Linux's ``VmHWM``, reset just
before through ``/proc/PID/clear_refs``), grows by less than ``RSS_BOUND`` over its RSS
before. A gateway that held a part whole would grow by at least the part's 64 MB.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.gateway_stack import GatewayStack, own_stack
from tests.servers.processes import BaoServer
from tests.servers.s3_stack import BUCKET, gateway_client, scope, start_s3_stack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.ha,
    pytest.mark.enable_socket,
    pytest.mark.allow_hosts(["127.0.0.1"]),
]

MIB = 1024 * 1024
PART = 64 * MIB
TOTAL = 1024 * MIB
RSS_BOUND = 64 * MIB


@pytest.fixture(scope="module")
def stack(bao_server: BaoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    with own_stack(tmp_path_factory.mktemp("gateway-s3-memory"), bao_server, start_s3_stack) as built:
        yield built


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _part(number: int) -> bytes:
    """Part ``number``'s bytes: a SHA-256 stream, different in every part."""
    seed = hashlib.sha256(b"part-%d" % number).digest()
    block = hashlib.sha256(seed).digest() * (MIB // 32)
    return block * (PART // MIB)


def test_a_1_gb_upload_and_download_stream_through_without_growing_the_gateway(stack: GatewayStack) -> None:
    stack.start_gateway(upstream_timeout="120s")  # moto takes seconds to assemble 1 GB on complete
    stack.wait_ready()
    task = stack.fresh_task("s3-gigabyte")
    token = stack.token(task, [scope(f"s3://{BUCKET}/tasks/{task}/", ["read", "write"])])
    s3 = gateway_client(stack, token)
    key = f"tasks/{task}/big.bin"
    s3.put_object(Bucket=BUCKET, Key=f"tasks/{task}/warm.bin", Body=b"w" * MIB)  # warm: pools, buffers
    pid = stack.processes["gateway"].proc.pid
    before = _status_kib(pid, "VmRSS") * 1024
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS, so the peak is this upload's
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    digest = hashlib.sha256()
    parts = []
    for number in range(1, TOTAL // PART + 1):
        body = _part(number)
        digest.update(body)
        etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=number, Body=body)["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
        del body
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    peak = _status_kib(pid, "VmHWM") * 1024
    assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == TOTAL
    growth = peak - before
    assert growth < RSS_BOUND, f"gateway RSS grew by {growth / MIB:.1f} MiB during a 1 GB upload"
    lines = [a for a in stack.audit_lines() if a.get("task") == task and a.get("action") == "write"]
    assert sum(a["bytes_in"] for a in lines) >= TOTAL

    before = _status_kib(pid, "VmRSS") * 1024  # and back down, read as it arrives
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    back = hashlib.sha256()
    stream = s3.get_object(Bucket=BUCKET, Key=key)["Body"]
    for chunk in stream.iter_chunks(MIB):
        back.update(chunk)
    peak = _status_kib(pid, "VmHWM") * 1024
    assert back.digest() == digest.digest()
    growth = peak - before
    assert growth < RSS_BOUND, f"gateway RSS grew by {growth / MIB:.1f} MiB during a 1 GB download"
