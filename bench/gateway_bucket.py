"""The bucket rows of bench/gateway.py (``--only bucket``): the bucket route against moto.

- 64 KiB GETs and PUTs, requests/s with ``--threads`` keep-alive connections for
  ``--seconds`` each: moto direct (a SigV4 signature made once per row with the
  gateway's keys; moto does not check the signing time) against the gateway (the token
  as ``X-Amz-Security-Token``, no signature: the gateway signs each request);
- ``--stream-mb`` uploads (PUT) and downloads (GET), MiB/s, direct and through the gateway,
  three alternated rounds (medians: one round moves by 20 points with the machine's load);
- the gateway's RSS before the streams and its peak during them (``VmHWM``, reset through
  ``/proc/PID/clear_refs`` just before).

The client is plain ``http.client`` for both, so its own cost is the same on both sides;
moto (werkzeug's threaded server) is the bottleneck of the direct rows.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from broker.gateway.s3sign import UNSIGNED_PAYLOAD, sign
from broker.gateway.secrets import S3Keys
from tests.servers.gateway_stack import GatewayStack
from tests.servers.s3_stack import BUCKET, REGION, scope

SMALL = 64 * 1024
STREAM_ROUNDS = 3
MIB = 1 << 20


def _signed(stack: GatewayStack, method: str, path: str, length: int | None) -> dict[str, str]:
    keys = S3Keys(stack.s3.keys["access_key_id"], stack.s3.keys["secret_access_key"])
    extra = [(b"content-length", str(length).encode())] if length is not None else []
    headers = sign(method, stack.s3.url + path, extra, keys, region=REGION, payload_hash=UNSIGNED_PAYLOAD)
    return {k.decode(): v.decode() for k, v in headers}


Headers = dict[str, str] | Callable[[str], dict[str, str]]


def _rate(port: int, request: tuple[str, str, Headers, bytes | None], seconds: float, threads: int) -> float:
    """Requests/s of ``request`` (method, path, headers, body) on ``threads`` connections;
    ``{i}`` in the path is the connection's number (moto answers 500 to concurrent PUTs of
    one key); headers may be made for the path (a direct signature covers it)."""
    method, template, made, body = request
    done = [0] * threads
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        path = template.replace("{i}", str(i))
        headers = made(path) if callable(made) else made
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{method} {path} answered {response.status}")
            if response.getheader("connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            done[i] += 1
        conn.close()

    began = time.monotonic()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / (time.monotonic() - began)


def _timed(call: Callable[[], int]) -> float:
    began = time.monotonic()
    size = call()
    return size / MIB / (time.monotonic() - began)


def _upload(port: int, path: str, headers: dict[str, str], size_mb: int) -> int:
    block = b"u" * MIB

    def body() -> Iterator[bytes]:
        for _ in range(size_mb):
            yield block

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("PUT", path, body=body(), headers={**headers, "Content-Length": str(size_mb * MIB)})
    response = conn.getresponse()
    response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"upload answered {response.status}")
    return size_mb * MIB


def _download(port: int, path: str, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    total = 0
    while chunk := response.read(MIB):
        total += len(chunk)
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"download answered {response.status}")
    return total


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bucket_rows(stack: GatewayStack, seconds: int, threads: int, stream_mb: int) -> dict[str, Any]:
    stack.start_gateway(upstream_timeout="60s")  # moto may take seconds to store 200 MiB before it answers
    stack.wait_ready()
    token = stack.token("bench-bucket", [scope(f"s3://{BUCKET}/bench/", ["read", "write"])])
    via = {"X-Amz-Security-Token": token}
    small = b"s" * SMALL
    key, keys = f"/{BUCKET}/bench/small.bin", f"/{BUCKET}/bench/small-{{i}}.bin"
    gw = stack.gateway_port

    def put_direct(path: str) -> dict[str, str]:
        return _signed(stack, "PUT", path, SMALL)

    get_direct = _signed(stack, "GET", key, None)
    _rate(stack.s3.port, ("PUT", key, _signed(stack, "PUT", key, SMALL), small), 1, 1)  # warm; the object to read
    _rate(gw, ("PUT", "/s3" + key, via, small), 1, 1)
    rows = {
        "64 KiB GET direct": _rate(stack.s3.port, ("GET", key, get_direct, None), seconds, threads),
        "64 KiB GET gateway": _rate(gw, ("GET", "/s3" + key, via, None), seconds, threads),
        "64 KiB PUT direct": _rate(stack.s3.port, ("PUT", keys, put_direct, small), seconds, threads),
        "64 KiB PUT gateway": _rate(gw, ("PUT", "/s3" + keys, via, small), seconds, threads),
    }
    pid = stack.processes["gateway"].proc.pid
    before = _status_mb(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak is the streams'
    big = f"/{BUCKET}/bench/big.bin"
    runs: dict[str, list[float]] = {}
    for _ in range(STREAM_ROUNDS):  # alternated: the machine's load moves the direct rows too
        runs.setdefault("upload direct", []).append(
            _timed(lambda: _upload(stack.s3.port, big, _signed(stack, "PUT", big, stream_mb * MIB), stream_mb))
        )
        runs.setdefault("upload gateway", []).append(_timed(lambda: _upload(gw, "/s3" + big, via, stream_mb)))
        runs.setdefault("download direct", []).append(
            _timed(lambda: _download(stack.s3.port, big, _signed(stack, "GET", big, None)))
        )
        runs.setdefault("download gateway", []).append(_timed(lambda: _download(gw, "/s3" + big, via)))
    streams = {name: statistics.median(values) for name, values in runs.items()}
    ratios = {
        op: [g / d for g, d in zip(runs[f"{op} gateway"], runs[f"{op} direct"], strict=True)]
        for op in ("upload", "download")
    }
    peak = _status_mb(pid, "VmHWM")
    return {"rates": rows, "streams": streams, "ratios": ratios, "rss_before": before, "rss_peak": peak}


def print_bucket(result: dict[str, Any], seconds: int, threads: int, stream_mb: int) -> None:
    rates, streams = result["rates"], result["streams"]
    print(f"bucket route vs moto direct: 64 KiB objects, {threads} connections, {seconds} s per row")
    print(f"{'row':24} {'req/s':>9}")
    for name, rate in rates.items():
        print(f"{name:24} {rate:9.0f}")
    for op in ("GET", "PUT"):
        ratio = rates[f"64 KiB {op} gateway"] / rates[f"64 KiB {op} direct"]
        print(f"64 KiB {op}: gateway {100 * ratio:.0f} % of direct (target >= 40 %)")
    print(f"streams of {stream_mb} MiB (MiB/s, median of {STREAM_ROUNDS} alternated rounds):")
    for name, rate in streams.items():
        print(f"  {name:18} {rate:7.0f}")
    for op in ("upload", "download"):
        each = result["ratios"][op]
        ratio = statistics.median(each)
        spread = ", ".join(f"{100 * r:.0f}" for r in each)
        print(f"{stream_mb} MiB {op}: gateway {100 * ratio:.0f} % of direct, median of {spread} (target >= 60 %)")
    growth = result["rss_peak"] - result["rss_before"]
    print(
        f"gateway RSS: {result['rss_before']:.1f} MiB before the streams, peak {result['rss_peak']:.1f} during "
        f"them (+{growth:.1f}; target < 30 MB)"
    )
