"""What a revocation costs with ``WAIT`` (durable revocation) next to without.

    .venv/bin/python -m bench.revocation [--count 2000] [--concurrency 1,16]

Starts a real redis-server primary and a replica on loopback, and runs task revocations
through ``RedisState`` (the broker's adapter: the revocation script and its announcement)
three ways, in one run: on a Redis with no replica (the baseline, ``auto`` then waits for
nobody), on the primary with ``redis_wait_replicas: 0`` (never wait), and on the primary
with ``auto`` (one replica must confirm each revocation). Prints revocations/s, p50 and
p99 per row and the ratio to the baseline, at each concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/revocation.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from broker.backends.redis_state import RedisState
from tests.servers.processes import RedisServer


async def run_row(url: str, wait_replicas: int | None, count: int, concurrency: int) -> tuple[float, float, float]:
    """(revocations/s, p50 ms, p99 ms) of ``count`` task revocations, ``concurrency`` at a time."""
    state = RedisState.from_url(url, timeout=2.0, prefix="bench:", stream="bench:audit", wait_replicas=wait_replicas)
    latencies: list[float] = []
    now = int(time.time())
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            started = time.perf_counter()
            await state.revoke_task(f"t{i}", "agent", now)
            latencies.append(time.perf_counter() - started)

    try:
        await state.revoke_task("warm-up", "agent", now)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        await state.aclose()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return count / elapsed, statistics.median(latencies) * 1000, p99 * 1000


def wait_for_replica(primary: RedisServer, timeout: float = 30.0) -> None:
    """Until the replica's first sync is done (diskless, after Redis's 5 s delay)."""
    deadline = time.monotonic() + timeout
    with redis.Redis.from_url(primary.url, decode_responses=True) as client:
        while (client.info("replication").get("slave0") or {}).get("state") != "online":
            if time.monotonic() > deadline:
                raise SystemExit("the replica did not sync")
            time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,16")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        alone = RedisServer(Path(tmp) / "alone").start()
        primary = RedisServer(Path(tmp) / "primary").start()
        replica = RedisServer(Path(tmp) / "replica", args=("--replicaof", "127.0.0.1", str(primary.port))).start()
        try:
            wait_for_replica(primary)
            rows = [
                ("single Redis (auto: no replica)", alone.url, None),
                ("primary + replica, wait_replicas 0", primary.url, 0),
                ("primary + replica, auto (WAIT 1)", primary.url, None),
            ]
            print(f"{'row':38} {'conc':>4} {'rev/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'x base':>7}")
            for level in levels:
                base = None
                for name, url, wait in rows:
                    rate, p50, p99 = asyncio.run(run_row(url, wait, args.count, level))
                    base = base or rate
                    print(f"{name:38} {level:>4} {rate:>9,.0f} {p50:>8.2f} {p99:>8.2f} {rate / base:>7.2f}")
        finally:
            for server in (replica, primary, alone):
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
