"""The gateway against its upstream, in one run on one machine (issue 15's table).

    .venv/bin/python -m bench.gateway [--seconds 10] [--connections 64] [--stream-mb 200] [--only http|bucket]

Starts the gateway test stack (tests/servers/gateway_stack.py: real OpenBao, Redis, a
``broker serve``, the upstream API under uvicorn, ``broker gateway`` with its secrets in
Vault KV v2 and the Redis revocation feed), then:

- small GETs with wrk (one thread, ``--connections`` keep-alive connections, ``--latency``),
  a warm-up then the measured run: the upstream direct (with its API key), and the
  gateway with a token it has seen before (``Authorization: Bearer``);
- streams: a ``--stream-mb`` download and upload, direct and through the gateway, MB/s,
  and the gateway's RSS before and after.

With ``--only bucket`` (or by default, after the http rows): the bucket route against
moto's S3 server, 64 KiB GET/PUT requests/s and ``--stream-mb`` up and down, gateway
against direct (bench/gateway_bucket.py).

Not measured: the "nginx + auth_request to /v1/introspect" row (nginx is not installed
here), and the upstream is the Python test API, not nginx: it may be the bottleneck of
both rows (see bench/README.md).
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gateway_bucket import bucket_rows, print_bucket
from tests.servers.gateway_stack import GatewayStack
from tests.servers.processes import BaoServer, RedisServer, free_port
from tests.servers.s3_stack import start_s3_stack


def wrk(url: str, headers: dict[str, str], seconds: int, connections: int) -> dict[str, float]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    warm = [*args[:4], "-d2s", *args[5:], url]
    subprocess.run(warm, capture_output=True, check=True)  # noqa: S603 -- wrk with our own arguments
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout  # noqa: S603
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([0-9.]+)(us|ms|s)", out)
        if m is None:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    return {"rps": rate, "p50": pct("50"), "p99": pct("99"), "errors": float(errors.group(1)) if errors else 0.0}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def download(port: int, path: str, headers: dict[str, str]) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    began = time.monotonic()
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    total = 0
    while chunk := response.read(1 << 20):
        total += len(chunk)
    conn.close()
    return total / (1 << 20) / (time.monotonic() - began)


def upload(port: int, path: str, headers: dict[str, str], size_mb: int) -> float:
    block = b"u" * (1 << 20)

    def body():  # type: ignore[no-untyped-def]
        for _ in range(size_mb):
            yield block

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    began = time.monotonic()
    conn.request("POST", path, body=body(), headers={**headers, "Content-Length": str(size_mb << 20)})
    response = conn.getresponse()
    response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"upload answered {response.status}")
    return size_mb / (time.monotonic() - began)


NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/body; proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fcgi; uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
    upstream api {{ server 127.0.0.1:{api_port}; keepalive 64; }}
    upstream broker {{ server 127.0.0.1:{broker_port}; keepalive 64; }}
    map $http_authorization $cap_token {{ "~^Bearer (?<t>[A-Za-z0-9._-]+)$" $t; default ""; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            auth_request /_introspect;
            proxy_http_version 1.1; proxy_set_header Connection "";
            proxy_set_header Authorization "";
            proxy_set_header X-Api-Key "{api_key}";
            proxy_pass http://api;
        }}
        location = /_introspect {{
            internal;
            proxy_http_version 1.1; proxy_set_header Connection "";
            proxy_method POST;
            proxy_pass_request_body off;
            proxy_set_header Content-Type application/json;
            proxy_set_header Authorization "Bearer {service_key}";
            proxy_set_body '{{"token":"$cap_token"}}';
            proxy_pass http://broker/v1/introspect;
        }}
    }}
}}
"""


def nginx_row(
    stack: GatewayStack, root: Path, bearer: dict[str, str], seconds: int, connections: int
) -> dict[str, float] | None:
    """nginx as a reverse proxy with ``auth_request`` to the broker's ``/v1/introspect``:
    what a team would otherwise assemble. (Plain ``auth_request`` reads only the status,
    and introspection answers 200 for an inactive token too: a real setup needs njs or an
    adapter to read ``active``; this row measures the cost, not the check.)"""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        return None
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            root=root, port=port, api_port=stack.api_port, broker_port=stack.broker.port,
            api_key=stack.api_key, service_key=stack.service_key,
        )
    )  # fmt: skip
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(root)], stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        return wrk(f"http://127.0.0.1:{port}/v1/items", bearer, seconds, connections)
    finally:
        proc.terminate()
        proc.wait(10)


def run(stack: GatewayStack, seconds: int, connections: int, stream_mb: int, workers: int) -> None:
    if workers > 1:
        stack.start_gateway(workers=workers)
        stack.wait_ready()
    token = stack.token("bench-gateway", ["gw-api"])
    key = {"X-Api-Key": stack.api_key}
    bearer = {"Authorization": f"Bearer {token}"}
    direct = f"http://127.0.0.1:{stack.api_port}/v1/items"
    through = f"{stack.gateway_url}/http/api.test/v1/items"
    stack.request("GET", "/http/api.test/v1/items", token=token)  # the token is seen before
    rows = [
        ("upstream direct", wrk(direct, key, seconds, connections)),
        (
            f"gateway ({workers} worker{'s' if workers > 1 else ''}), token seen",
            wrk(through, bearer, seconds, connections),
        ),
    ]
    nginx = nginx_row(stack, stack.root / "nginx", bearer, seconds, connections)
    if nginx is not None:
        rows.insert(1, ("nginx + auth_request (introspect)", nginx))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    print(f"machine: {machine}, python {platform.python_version()}")
    print(f"small GETs, wrk -t1 -c{connections} -d{seconds}s")
    print(f"{'row':32} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, r in rows:
        print(f"{name:32} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['errors']:7.0f}")
    if nginx is None:
        print("nginx + auth_request row: not measured (nginx is not installed: apt-get install nginx)")
    else:
        print(f"gateway / nginx + auth_request: {rows[-1][1]['rps'] / nginx['rps']:.2f}x req/s")
    gw_pid = stack.processes["gateway"].proc.pid
    before = rss_mb(gw_pid)  # with workers, the supervisor's: see the note below
    path = f"/v1/bytes/{stream_mb << 20}"
    d_direct = download(stack.api_port, path, key)
    d_gw = download(stack.gateway_port, "/http/api.test" + path, bearer)
    u_direct = upload(stack.api_port, "/v1/upload", key, stream_mb)
    u_gw = upload(stack.gateway_port, "/http/api.test/v1/upload", bearer, stream_mb)
    after = rss_mb(gw_pid)
    print(
        f"streams of {stream_mb} MiB (MiB/s): download direct {d_direct:.0f}, through the gateway {d_gw:.0f} "
        f"({100 * d_gw / d_direct:.0f} %); upload direct {u_direct:.0f}, through the gateway {u_gw:.0f} "
        f"({100 * u_gw / u_direct:.0f} %)"
    )
    print(f"gateway RSS: {before:.1f} MiB before the streams, {after:.1f} MiB after (+{after - before:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--stream-mb", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--only", choices=("http", "bucket"), default=None, help="one set of rows (default: both)")
    parser.add_argument("--threads", type=int, default=8, help="bucket rows: client connections")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        root = Path(tmp)
        bao = BaoServer(root / "bao").start()
        redis = RedisServer(root / "redis").start()
        try:
            stack = start_s3_stack(root, bao, redis)
            try:
                if args.only != "bucket":
                    run(stack, args.seconds, args.connections, args.stream_mb, args.workers)
                if args.only != "http":
                    result = bucket_rows(stack, args.seconds, args.threads, args.stream_mb)
                    print_bucket(result, args.seconds, args.threads, args.stream_mb)
            finally:
                stack.stop()
        finally:
            redis.stop()
            bao.stop()


if __name__ == "__main__":
    main()
