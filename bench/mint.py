"""Mint throughput and latency of the broker on OpenBao Transit + Redis, next to OpenBao's own
``auth/token/create`` measured in the same run on the same machine.

    .venv/bin/python -m bench.mint [--seconds 10] [--warmup 2] [--connections 64]

Starts a real OpenBao dev server, a real redis-server and one ``broker serve`` process
(workers=1, Ed25519 Transit key, least-privilege Vault token, Redis state) on free loopback
ports, drives each path with the same load generator (``bench/loadgen.py``, in a separate
process), prints one table, and stops everything. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/mint.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import LoadResult, LoadSpec, load_process, pick_client
from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.processes import BaoServer, RedisServer, bao_binary, redis_binary
from tests.servers.vault_setup import admin_client, setup_transit

AGENT = "hammer"  # PolicyDir's extra agent: scopes [widgets-read], rate set below
AGENT_RATE = "9999999/s"  # the largest the rate grammar takes: the limiter never binds
SCOPE = "widgets-read"
TRANSIT_KEY = "capbroker"
BASELINE = "OpenBao auth/token/create"
TINY_POLICY = 'path "sys/nothing" {\n  capabilities = ["deny"]\n}\n'
# A signing input the size of a one-capability token's header.payload (Transit sign row).
SIGNING_INPUT = b"e" * 420


def machine(load_at_start: float) -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"machine: nproc={affinity}, cpu={cpu}, {platform.system()} {platform.release()}",
        f"         1-min load average {load_at_start:.2f} before the servers started (other work skews results)",
        f"python:  {platform.python_implementation()} {platform.python_version()}",
        f"servers: {_version([bao_binary(), 'version'], 2)}, {_version([redis_binary(), '--version'], 3)}",
    ]


def _version(argv: list[str], words: int) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    except OSError:
        return f"{Path(argv[0]).name}: unknown"
    return " ".join(out.stdout.split()[:words])


def measure(spec: LoadSpec, servers: dict[str, subprocess.Popen[bytes] | None]) -> tuple[LoadResult, str]:
    """One measurement in a fresh load process, which is ended whatever happens here, and the
    CPU each server used during the measured window."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=load_process, args=(spec, sender), name="bench-load", daemon=True)
    proc.start()
    sender.close()
    deadline = time.monotonic() + spec.warmup + spec.seconds + 60
    cpu: dict[str, dict[str, float]] = {}
    try:
        while time.monotonic() < deadline:
            if not receiver.poll(max(0.0, deadline - time.monotonic())):
                break
            try:
                what, payload = receiver.recv()
            except EOFError:
                raise RuntimeError(f"the load process died (exit code {proc.exitcode})") from None
            if what == "result":
                wall = cpu["end"]["wall"] - cpu["start"]["wall"]
                used = ", ".join(f"{k} {(cpu['end'][k] - cpu['start'][k]) / wall:.0%}" for k in servers)
                return LoadResult(**payload), used
            cpu[what] = {"wall": time.monotonic(), **{k: cpu_seconds(v) for k, v in servers.items()}}
        raise RuntimeError("the load process did not finish in time")
    finally:
        receiver.close()
        if proc.is_alive():
            proc.terminate()
        proc.join(10)


def cpu_seconds(proc: subprocess.Popen[bytes] | None) -> float:
    """User + system CPU time of a running child, from /proc (0 when unknown)."""
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split() if proc else []
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


def specs(bao: BaoServer, broker: BrokerProcess, broker_vault_token: str, base: LoadSpec) -> list[tuple[str, LoadSpec]]:
    run = uuid.uuid4().hex[:8]
    json_headers = {"Content-Type": "application/json"}
    mint = replace(
        base,
        url=f"{broker.url}/v1/tokens",
        headers={**json_headers, "Authorization": f"Bearer {broker.policy.keys[AGENT]}"},
        expect=201,
        body=json.dumps({"task": f"bench-{run}-{{n}}", "scopes": [SCOPE]}),
    )
    token_create = replace(
        base,
        url=f"{bao.addr}/v1/auth/token/create",
        headers={**json_headers, "X-Vault-Token": bao.root_token},
        expect=200,
        body=json.dumps({"policies": ["bench-tiny"], "no_default_policy": True, "ttl": "5m"}),
    )
    transit_sign = replace(
        base,
        url=f"{bao.addr}/v1/transit/sign/{TRANSIT_KEY}",
        headers={**json_headers, "X-Vault-Token": broker_vault_token},
        expect=200,
        body=json.dumps(
            {
                "input": base64.b64encode(SIGNING_INPUT).decode(),
                "key_version": 1,
                "marshaling_algorithm": "jws",
            }
        ),
    )
    return [
        (BASELINE, token_create),
        ("OpenBao transit/sign (Ed25519)", transit_sign),
        ("broker POST /v1/tokens (1 scope)", mint),
    ]


def table(rows: list[tuple[str, LoadResult]]) -> list[str]:
    base = next(r.rps for name, r in rows if name == BASELINE)
    header = ("path", "requests/s", "p50 ms", "p99 ms", "errors", "vs token create")
    cells = [
        (
            name,
            f"{r.rps:,.0f}",
            f"{r.percentile(50):.1f}",
            f"{r.percentile(99):.1f}",
            str(r.errors),
            f"{r.rps / base:.2f}x" if base else "n/a",
        )
        for name, r in rows
    ]
    widths = [max(len(row[i]) for row in (header, *cells)) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        padded = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return [line(header), sep, *(line(c) for c in cells)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mint", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per path (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up before each window (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections (default 64)")
    parser.add_argument("--client", choices=["auto", "aiohttp", "httpx"], default="auto")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on `kill` too
    base = LoadSpec(
        url="",
        headers={},
        expect=0,
        body="",
        connections=args.connections,
        seconds=args.seconds,
        warmup=args.warmup,
        client=pick_client(args.client),
    )

    started, load_at_start = time.monotonic(), os.getloadavg()[0]
    # the directory goes after every process in it has stopped
    with tempfile.TemporaryDirectory(prefix="capbroker-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        redis = RedisServer(work / "redis").start()
        stack.callback(redis.stop)
        bao = BaoServer(work / "bao").start()
        stack.callback(bao.stop)
        broker_token = setup_transit(bao, key=TRANSIT_KEY, alg="EdDSA")
        client = admin_client(bao)
        try:
            client.sys.create_or_update_policy("bench-tiny", TINY_POLICY)
        finally:
            client.adapter.close()
        policy = PolicyDir.create(work / "scopes", hammer_rate=AGENT_RATE)
        broker = BrokerProcess(
            work / "broker",
            policy,
            redis_url=redis.url,
            vault_addr=bao.addr,
            vault_token=broker_token,
            transit_key=TRANSIT_KEY,
            signing_alg="EdDSA",
        )
        stack.callback(broker.stop)
        broker.start()

        print(*machine(load_at_start), sep="\n")
        print(
            "config:  broker serve, workers=1, signer=vault (Transit key Ed25519, least-privilege token),"
            " state=redis; OpenBao dev server (in-memory storage); all on 127.0.0.1"
        )
        print(
            f"load:    {base.client}, {base.connections} keep-alive connections, {base.warmup:g} s warm-up"
            f" + {base.seconds:g} s measured per path, one load process; mint = agent {AGENT!r},"
            f" scope {SCOPE!r}, a new task id per request"
        )
        if base.client == "httpx":
            print(
                "note:    httpx's connection pool, not the servers, limits this run (about 100 requests/s at 64"
                " connections here): install bench/requirements.txt for aiohttp"
            )
        print(flush=True)

        results: list[tuple[str, LoadResult]] = []
        server_cpu: list[str] = []
        servers = {"openbao": bao.proc, "redis": redis.proc, "broker": broker.proc}
        for name, spec in specs(bao, broker, broker_token, base):
            print(f"  measuring {name} ...", file=sys.stderr, flush=True)
            result, used = measure(spec, servers)
            results.append((name, result))
            server_cpu.append(f"  {name}: {used}")

        print(*table(results), sep="\n")
        for name, r in results:
            if r.first_error:
                print(f"first error on {name}: {r.first_error}")
        if results[-1][1].errors:
            errors = [line for line in broker.log_path.read_text(errors="replace").splitlines() if "rror" in line]
            print("broker log, last error lines:", *errors[-5:], sep="\n  ")
        loads = ", ".join(f"{r.cpu_seconds / r.window:.0%}" for _, r in results if r.window)
        print(f"\nload generator CPU (of one core) per path, in order: {loads}")
        print("server CPU (of one core, in the measured window):", *server_cpu, sep="\n")
        print(f"total run time: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
