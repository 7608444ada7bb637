"""What a mint costs Redis, on a single Redis, on Sentinel and on a Redis Cluster.

    .venv/bin/python -m bench.redis_cost [--count 3000] [--concurrency 64]

Starts, on loopback, a single redis-server; a primary, its replica and a Sentinel; and a
3-primary Redis Cluster (``tests/servers``). On each it runs the Redis work of a mint
through ``RedisState`` (the broker's adapter), as ``Broker.mint`` does it: the mint claim
(rate, then task: one script) and the audit append (compare-and-append), a new task per
mint. Concurrent mints share round trips (group commit, ``broker.backends.redis_rounds``).

Per layout it prints, for a lone mint (concurrency 1) and under load (``--concurrency``):
mints/s, the round trips per mint (packets the client sent: a pipeline is one) and the
commands per mint (the servers' ``INFO commandstats`` deltas summed over every node,
script-internal calls included). A revocation's cost with and without ``WAIT`` is in
``bench/revocation.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/redis_cost.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
from redis.asyncio.connection import Connection

from broker.backends.redis_state import RedisState
from tests.servers.processes import RedisServer, SentinelServer
from tests.servers.redis_cluster import RedisCluster

RATE = (9_999_999, 1)  # a rate limit that never binds: the script still runs it


@contextmanager
def counted_sends() -> Iterator[list[int]]:
    """Count the packets every asyncio Redis connection sends (one per round trip)."""
    sent = [0]
    original = Connection.send_packed_command

    async def counting(self: Connection, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        await original(self, command, check_health)

    Connection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        Connection.send_packed_command = original  # type: ignore[method-assign]


def commands(ports: list[int]) -> int:
    """Commands the servers ran so far (``INFO commandstats``, every node summed)."""
    total = 0
    for port in ports:
        with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as client:
            stats = client.info("commandstats")
        total += sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info",))
    return total


async def mints(url: str, count: int, concurrency: int, run: str) -> float:
    """``count`` mints' Redis work, ``concurrency`` at a time; mints/s."""
    state = RedisState.from_url(url, timeout=2.0, prefix=f"bench:{run}:", stream=f"bench:{run}:audit")
    queue = iter(range(count))
    now = int(time.time())

    async def worker() -> None:
        for i in queue:
            claim = await state.claim_mint("hammer", RATE, f"{run}-{i}", now, now + 300)
            if claim.task is None or claim.task.value != "owned":
                raise SystemExit(f"a mint claim was refused: {claim}")
            await state.append_audit({"type": "mint", "task": f"{run}-{i}", "agent": "hammer"})

    try:
        await state.claim_mint("hammer", RATE, f"{run}-warm", now, now + 300)  # connect, load scripts
        await state.append_audit({"type": "warm-up"})
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)
    finally:
        await state.aclose()


def row(name: str, url: str, ports: list[int], count: int, concurrency: int) -> str:
    run = f"{name.split(maxsplit=1)[0].lower()}-{concurrency}-{time.monotonic_ns()}"
    before = commands(ports)
    with counted_sends() as sent:
        rate = asyncio.run(mints(url, count, concurrency, run))
    ran = commands(ports) - before - 2 * len(ports)  # less the INFO of this row's reading
    # the warm-up mint and connection set-up are in both counts: spread over `count`
    return f"{name:30} {concurrency:>5} {rate:>10,.0f} {sent[0] / count:>13.2f} {ran / count:>13.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        single = RedisServer(root / "single").start()
        primary = RedisServer(root / "primary").start()
        replica = RedisServer(root / "replica", args=("--replicaof", "127.0.0.1", str(primary.port))).start()
        sentinel = SentinelServer(root / "sentinel", primary).start()
        cluster = RedisCluster(root / "cluster").start()
        try:
            layouts = [
                ("single Redis", single.url, [single.port]),
                ("Sentinel (primary + replica)", sentinel.url, [primary.port]),
                ("Cluster (3 primaries)", cluster.url, [n.port for n in cluster.nodes]),
            ]
            print(f"{'layout':30} {'conc':>5} {'mints/s':>10} {'trips/mint':>13} {'cmds/mint':>13}")
            for level in (1, args.concurrency):
                count = min(args.count, 500) if level == 1 else args.count
                for name, url, ports in layouts:
                    print(row(name, url, ports, count, level), flush=True)
        finally:
            cluster.stop()
            for server in (sentinel, replica, primary, single):
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
