"""Mint and introspection throughput and latency of the broker in its production
configuration, next to OpenBao's own token create and lookup-self measured in the same run
on the same machine (OpenBao both in memory, ``-dev``, and on single-node Raft storage).

    .venv/bin/python -m bench.mint [--seconds 10] [--warmup 2] [--connections 64] [--soak 0]

Starts a real OpenBao dev server (Transit, the broker's least-privilege token), a real
OpenBao on Raft (baseline only), a real redis-server and one ``broker serve`` unit
(``workers: 2``, session keys endorsed by the Transit key, Redis state) on free loopback
ports, drives each path with the same load generator (``bench/loadgen.py``, in a separate
process), prints one table and the broker workers' memory, and stops everything. With
``--soak N`` it then mints for N more seconds and prints the workers' RSS every 10 s. See
``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from redis import Redis

if __package__ in (None, ""):  # run as `python bench/mint.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import profile
from bench.loadgen import LoadResult, LoadSpec, load_process, pick_client
from bench.raft import RaftBao
from broker.service.credentials import new_client_secret, secret_sha256
from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.downstream_setup import CREATION, DB_MOUNT, DB_ROLE, setup_database, write_db_role
from tests.servers.postgres import PostgresServer
from tests.servers.processes import BaoServer, RedisServer, bao_binary, free_port, redis_binary
from tests.servers.vault_setup import admin_client, setup_transit

AGENT = "hammer"  # PolicyDir's extra agent: scopes [widgets-read], rate set below
AGENT_RATE = "9999999/s"  # the largest the rate grammar takes: the limiter never binds
SCOPE = "widgets-read"
TRANSIT_KEY = "capbroker"
BASELINE = "OpenBao token/create (dev)"
RAFT_BASELINE = "OpenBao token/create (Raft)"
LOOKUP = "OpenBao token/lookup-self (dev)"
RAFT_LOOKUP = "OpenBao token/lookup-self (Raft)"
MINT = "broker POST /v1/tokens (1 scope)"
DB_BASELINE = "OpenBao database/creds read (dev)"
DB_MINT = "broker POST /v1/tokens (1 database credential)"
DB_AGENT = "db-hammer"  # an extra agent with the example database scope, rate never binding
DB_SCOPE = "warehouse-readonly"
DB_TTL = 60  # seconds: each credential is a PostgreSQL role until then
INTROSPECT = "broker POST /v1/introspect"
WORKERS = 2
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
    """User + system CPU time of a running child and its own children (the broker's
    workers), from /proc (0 when unknown)."""
    if proc is None:
        return 0.0
    return sum(_cpu_of(pid) for pid in (proc.pid, *children_of(proc.pid)))


def _cpu_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


DB_HAMMER = """\
agents:
  db-hammer:
    description: Bench agent minting one database credential per request
    identity:
      key:
        sha256: {sha}
    scopes: [warehouse-readonly]
    rate: {rate}
"""


def vault_sync(broker: BrokerProcess, bao: BaoServer) -> None:
    """``broker vault sync`` as the admin (root): the scope policies, the role, the seal key."""
    cli = Path(sys.executable).parent / "broker"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "VAULT_", "BAO_"))}
    subprocess.run(  # noqa: S603 -- our own console script
        [str(cli), "vault", "sync", "--config", str(broker.config_path())],
        env=env | {"VAULT_TOKEN": bao.root_token}, check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def service_token(addr: str, root: str) -> str:
    """A service token with the default policy (which allows lookup-self), ttl 1h."""
    body = json.dumps({"policies": ["default"], "ttl": "1h"}).encode()
    req = urllib.request.Request(  # noqa: S310 -- loopback
        f"{addr}/v1/auth/token/create", data=body, method="POST", headers={"X-Vault-Token": root}
    )
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 -- loopback
        return str(json.loads(r.read())["auth"]["client_token"])


def specs(
    bao: BaoServer,
    raft: RaftBao,
    broker: BrokerProcess,
    introspected: str,
    base: LoadSpec,
    *,
    tasks: int = 0,
    database: bool = False,
) -> list[tuple[str, LoadSpec]]:
    """The paths measured; ``tasks`` > 0: the mint cycles through the same task ids as the
    soak, so the soak starts from the state its own pattern makes."""
    run = uuid.uuid4().hex[:8]
    json_headers = {"Content-Type": "application/json"}
    create = json.dumps({"policies": ["bench-tiny"], "no_default_policy": True, "ttl": "5m"})
    mint = replace(
        base,
        url=f"{broker.url}/v1/tokens",
        headers={**json_headers, "Authorization": f"Bearer {broker.policy.keys[AGENT]}"},
        expect=201,
        body=json.dumps({"task": "task-{c}" if tasks else f"bench-{run}-{{n}}", "scopes": [SCOPE]}),
        cycle=tasks,
    )
    introspect = replace(
        base,
        url=f"{broker.url}/v1/introspect",
        headers={**json_headers, "Authorization": f"Bearer {broker.policy.keys['git-gateway']}"},
        expect=200,
        body=json.dumps({"token": introspected}),
    )

    def on(addr: str, token: str, path: str, body: str, method: str = "POST") -> LoadSpec:
        return replace(base, url=f"{addr}{path}", headers={**json_headers, "X-Vault-Token": token}, expect=200,
                       body=body, method=method)  # fmt: skip

    db_mint = replace(
        mint,
        headers={**json_headers, "Authorization": f"Bearer {broker.policy.keys.get(DB_AGENT, '')}"},
        body=json.dumps({"task": f"bench-db-{run}-{{n}}", "scopes": [DB_SCOPE], "ttl": DB_TTL}),
        cycle=0,
    )
    creds = f"/v1/{DB_MOUNT}/creds/{DB_ROLE}"
    db_rows = [(DB_BASELINE, on(bao.addr, bao.root_token, creds, "", "GET")), (DB_MINT, db_mint)] if database else []
    return [
        (BASELINE, on(bao.addr, bao.root_token, "/v1/auth/token/create", create)),
        (RAFT_BASELINE, on(raft.addr, raft.root_token, "/v1/auth/token/create", create)),
        (LOOKUP, on(bao.addr, service_token(bao.addr, bao.root_token), "/v1/auth/token/lookup-self", "", "GET")),
        (
            RAFT_LOOKUP,
            on(raft.addr, service_token(raft.addr, raft.root_token), "/v1/auth/token/lookup-self", "", "GET"),
        ),
        (MINT, mint),
        (INTROSPECT, introspect),
        *db_rows,
    ]


def table(rows: list[tuple[str, LoadResult]]) -> list[str]:
    rps = {name: r.rps for name, r in rows}

    def ratio(name: str) -> str:
        against = {MINT: (BASELINE, RAFT_BASELINE), INTROSPECT: (LOOKUP, RAFT_LOOKUP), DB_MINT: (DB_BASELINE,)}.get(
            name
        )
        if against is None:
            return ""
        return " / ".join(f"{rps[name] / rps[b]:.2f}x" if rps.get(b) else "n/a" for b in against)

    header = ("path", "requests/s", "p50 ms", "p99 ms", "errors", "vs OpenBao dev / Raft")
    cells = [
        (name, f"{r.rps:,.0f}", f"{r.percentile(50):.1f}", f"{r.percentile(99):.1f}", str(r.errors), ratio(name))
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
    parser.add_argument("--client", choices=["auto", "wrk", "aiohttp", "httpx"], default="auto")
    parser.add_argument("--soak", type=float, default=0.0, help="then mint this many more seconds, sampling RSS")
    parser.add_argument("--soak-ttl", help="the soak's token ttl (default 5m); task records live ttl + 120 s")
    parser.add_argument(
        "--soak-tasks",
        type=int,
        default=0,
        help="the soak's agents work on this many tasks, minting for each again and again"
        " (default 0: a new task per mint, so Redis holds one task record per token alive)",
    )
    parser.add_argument("--profile", type=Path, help="py-spy the workers on the broker paths; folded stacks here")
    parser.add_argument("--only", choices=["all", "broker"], default="all", help="broker: skip the OpenBao rows")
    parser.add_argument("--no-database", action="store_true", help="skip the database credential rows (and PostgreSQL)")
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
        raft = RaftBao(work / "raft").start()
        stack.callback(raft.stop)
        broker_token = setup_transit(bao, key=TRANSIT_KEY, alg="EdDSA")
        client = admin_client(bao)
        try:
            client.sys.create_or_update_policy("bench-tiny", TINY_POLICY)
        finally:
            client.adapter.close()
        raft.request("PUT", "/v1/sys/policies/acl/bench-tiny", {"policy": TINY_POLICY})
        policy = PolicyDir.create(work / "scopes", hammer_rate=AGENT_RATE)
        database = not args.no_database
        if database:
            pg = PostgresServer().start()
            stack.callback(pg.stop)
            setup_database(bao, pg)
            write_db_role(bao, CREATION, max_ttl=f"{DB_TTL}s", default_ttl=f"{DB_TTL}s")
            policy.keys[DB_AGENT] = new_client_secret()
            (policy.path / "zz-db-hammer.yaml").write_text(
                DB_HAMMER.format(sha=secret_sha256(policy.keys[DB_AGENT]), rate=AGENT_RATE)
            )
        broker = BrokerProcess(
            work / "broker",
            policy,
            redis_url=redis.url,
            vault_addr=bao.addr,
            vault_token=broker_token,
            transit_key=TRANSIT_KEY,
            signing_alg="EdDSA",
            extra_env={"BROKER_WORKERS": str(WORKERS)},
        )
        stack.callback(broker.stop)
        if database:
            broker.port = broker.port or free_port()
            broker.workdir.mkdir(parents=True, exist_ok=True)
            vault_sync(broker, bao)
        broker.start()
        status, _, minted = broker.mint(f"bench-introspected-{uuid.uuid4().hex[:8]}", [SCOPE], who=AGENT)
        if status != 201:
            raise RuntimeError(f"the token to introspect was not minted: {minted}")
        introspected = minted["tokens"][0]["token"]

        print(*machine(load_at_start), sep="\n")
        print(
            f"config:  broker serve, workers={WORKERS}, signing=session (in-process Ed25519 session keys endorsed"
            " by the Transit key, least-privilege Vault token), state=redis; OpenBao dev server (in-memory)"
            " for Transit, a second OpenBao on single-node Raft for the baseline; all on 127.0.0.1"
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
        servers = {"openbao": bao.proc, "openbao-raft": raft.proc, "redis": redis.proc, "broker": broker.proc}
        profiles: dict[str, list[Path]] = {}
        for name, spec in specs(bao, raft, broker, introspected, base, tasks=args.soak_tasks, database=database):
            if args.only == "broker" and name not in (MINT, INTROSPECT, DB_MINT):
                continue
            print(f"  measuring {name} ...", file=sys.stderr, flush=True)
            spies = []
            if args.profile is not None and name in (MINT, INTROSPECT) and broker.proc is not None:
                pids = children_of(broker.proc.pid)
                tag = "mint" if name == MINT else "introspect"
                spies = profile.start(pids, spec.warmup + spec.seconds, args.profile, tag)
                profiles[name] = [args.profile / f"{tag}-{pid}.txt" for pid in pids]
            result, used = measure(spec, servers)
            profile.stop(spies)
            results.append((name, result))
            server_cpu.append(f"  {name}: {used}")

        print(*table(results), sep="\n")
        for name, r in results:
            if r.first_error:
                print(f"first error on {name}: {r.first_error}")
        workers = children_of(broker.proc.pid) if broker.proc is not None else []
        print("broker workers RSS after the run: " + ", ".join(f"{rss_mb(p):.0f} MB" for p in workers))
        if args.soak > 0:
            soak(broker, workers, base, args.soak, redis=redis, ttl=args.soak_ttl, tasks=args.soak_tasks)
            print(audit_verify(broker))
        if any(r.errors for name, r in results if name in (MINT, INTROSPECT)):
            errors = [line for line in broker.log_path.read_text(errors="replace").splitlines() if "rror" in line]
            print("broker log, last error lines:", *errors[-5:], sep="\n  ")
        loads = ", ".join(f"{r.cpu_seconds / r.window:.0%}" for _, r in results if r.window)
        print(f"\nload generator CPU (of one core) per path, in order: {loads}")
        print("server CPU (of one core, in the measured window):", *server_cpu, sep="\n")
        for name, files in profiles.items():
            print(f"\nprofile of the broker workers, {name}:", *profile.summary(files), sep="\n")
        print(f"total run time: {time.monotonic() - started:.0f} s")
    return 0


def soak(
    broker: BrokerProcess,
    workers: list[int],
    base: LoadSpec,
    seconds: float,
    *,
    redis: RedisServer,
    ttl: str | None,
    tasks: int = 0,
) -> None:
    """Mint for ``seconds`` more, in 10 s windows, printing after each: the mint rate, each
    worker's RSS, Redis ``used_memory`` (and the audit stream's length), and the archive's
    size, the CPU the broker and Redis used and the load average (other work on the machine);
    then whether memory stayed flat and the slowest window against the median."""
    run = uuid.uuid4().hex[:8]
    spec = replace(
        base,
        url=f"{broker.url}/v1/tokens",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {broker.policy.keys[AGENT]}"},
        expect=201,
        body=json.dumps(
            {"task": "task-{c}" if tasks else f"soak-{run}-{{w}}-{{n}}", "scopes": [SCOPE]}
            | ({"ttl": ttl} if ttl else {})
        ),
        seconds=10.0,
        warmup=0.0,
        cycle=tasks,
    )
    client = Redis.from_url(redis.url, socket_timeout=10)
    print(f"\nsoak: minting for {seconds:.0f} s (token ttl {ttl or 'default, 5m'};"
          f" {f'{tasks} tasks, each minted for again and again' if tasks else 'a new task per mint'});"
          " after each 10 s window: RSS"
          " of each worker, Redis used_memory (the audit stream: events, its memory; keys), the archive")  # fmt: skip
    started = time.monotonic()
    window = 0
    rates: list[float] = []
    memory: list[tuple[float, int, int]] = []
    try:
        while time.monotonic() - started < seconds:
            window += 1
            servers = {"broker": broker.proc, "redis": redis.proc}
            result, cpu = measure(replace(spec, body=spec.body.replace("{w}", str(window))), servers)
            at = time.monotonic() - started
            used = int(client.info("memory")["used_memory"])
            length, keys = client.xlen(broker.audit_stream), client.dbsize()
            stream = int(client.memory_usage(broker.audit_stream) or 0)
            rates.append(result.rps)
            memory.append((at, used, stream))
            rss = ", ".join(f"{rss_mb(p):.0f} MB" for p in workers)
            print(f"  {at:5.0f} s  {result.rps:7,.0f} mints/s  errors {result.errors}  RSS {rss}"
                  f"  redis {used / 2**20:6.1f} MB (stream {length:,} events {stream / 2**20:.1f} MB, keys {keys:,})"
                  f"  archive {archive_size(broker)}  CPU {cpu}  load {os.getloadavg()[0]:.1f}",
                  flush=True)  # fmt: skip
    finally:
        client.close()
    for what, column in (("redis used_memory", 1), ("the audit stream's memory", 2)):
        settled = [sample[column] for sample in memory if sample[0] > 60]
        if settled:
            low, high = min(settled), max(settled)
            print(f"{what} after the first minute: {low / 2**20:.1f} to {high / 2**20:.1f} MB"
                  f" (max {high / low - 1:.0%} above min)")  # fmt: skip
    # per minute: the 10 s samples ride the stream's sawtooth (a tail, plus a segment and a
    # second of arrivals between archiver passes); growth shows in the minutes' means
    minutes: dict[int, list[int]] = {}
    for at, used, _ in memory:
        minutes.setdefault(int((at - 1) // 60), []).append(used)
    means = [statistics.mean(v) for k, v in sorted(minutes.items()) if k >= 1 and len(v) >= 3]
    if means:
        print("redis used_memory per minute after the first (mean of its samples, MB): "
              + ", ".join(f"{m / 2**20:.1f}" for m in means)
              + f"; highest {max(means) / min(means) - 1:.0%} above the lowest")  # fmt: skip
    if rates:
        median = statistics.median(rates)
        slowest = min(rates)
        print(f"mints/s per window: median {median:,.0f}, slowest {slowest:,.0f}"
              f" ({slowest / median:.0%} of the median)")  # fmt: skip


def audit_verify(broker: BrokerProcess) -> str:
    """``broker audit verify`` over the archive and the Redis tail, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "VAULT_", "BAO_"))}
    argv = [sys.executable, "-m", "broker", "audit", "verify", "--config", str(broker.config_path())]
    started = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False, env=env)  # noqa: S603
    took = time.monotonic() - started
    return f"broker audit verify (archive + tail, {took:.0f} s): {(out.stdout + out.stderr).strip()}"


def archive_size(broker: BrokerProcess) -> str:
    if broker.archive_dir is None:
        return "none"
    files = [p for p in broker.archive_dir.iterdir() if p.name.startswith("segment-")]
    return f"{len(files)} segments, {sum(p.stat().st_size for p in files) / 2**20:,.0f} MB"


if __name__ == "__main__":
    sys.exit(main())
