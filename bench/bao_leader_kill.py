"""What killing the OpenBao leader costs the broker: the 503 window, the election, the slowest answer.

    .venv/bin/python -m bench.bao_leader_kill [--rounds 3] [--pause 0.05]

Starts a real 3-node OpenBao Raft cluster on loopback (``tests/servers/bao_cluster.py``),
a redis-server and two ``broker serve`` processes whose ``vault_addr`` lists the three
nodes (``tests/servers/bao_ha_stack.py``): one signs with session keys endorsed by
Transit, one signs every token in Transit. Three closed-loop clients mint (a signature
with a session key, a signature by Transit, a vault-kv credential: Vault writes) while the
leader is SIGKILLed; the killed node is started again between rounds. Prints, per round
and kind: mints, tokens, 503s, the 503 window (start of the first to end of the last),
the slowest answer; and the time until another node was active (the election).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/bao_leader_kill.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.servers.bao_cluster import BaoCluster
from tests.servers.bao_ha_stack import HaStack
from tests.servers.leader_kill import kill_leader_under_load

KINDS = ("session", "transit", "vault-kv")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between one client's mints")
    args = parser.parse_args()
    print(f"{platform.node()}: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-bao-ha-") as tmp:
        cluster = BaoCluster(Path(tmp) / "bao")
        stack: HaStack | None = None
        try:
            cluster.start()
            stack = HaStack.start(Path(tmp) / "stack", cluster)
            rows = []
            for number in range(1, args.rounds + 1):
                run = kill_leader_under_load(
                    cluster, stack.mints(timeout=10.0), before=2.0, after=5.0, pause=args.pause
                )
                cluster.heal()
                print(f"\nround {number}: {run.summary()}")
                rows.append(run)
            print("\n| kind | 503 window (s) | slowest answer (s) | 503s / mints |")
            print("|---|---|---|---|")
            for kind in KINDS:
                windows = [f"{r.window(kind):.2f}" for r in rows]
                slowest = [f"{r.slowest(kind):.2f}" for r in rows]
                counts = [f"{sum(a.status == 503 for a in r.of(kind))}/{len(r.of(kind))}" for r in rows]
                print(f"| {kind} | {', '.join(windows)} | {', '.join(slowest)} | {', '.join(counts)} |")
            print(f"| election (kill to active) | {', '.join(f'{r.elected_after:.2f}' for r in rows)} | | |")
            other = sorted({a.status for r in rows for a in r.answers} - {201, 503})
            if other:
                print(f"answers other than 201 and 503: {other}")
                return 1
        finally:
            if stack is not None:
                stack.stop()
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
