"""Failover under load: mint at a steady rate through haproxy to 3 broker replicas while
the Redis primary and then the OpenBao leader are killed.

    .venv/bin/python -m bench.failover               # about 60 s
    .venv/bin/python -m bench.failover --rate 40

Starts, on loopback: a Redis primary, its replica and 3 Sentinels; a 3-node OpenBao
Raft cluster; 3 ``broker serve`` replicas (``redis+sentinel://`` over the 3 Sentinels,
``vault_addr`` listing the 3 nodes, one shared audit archive); haproxy round-robin over
them. An open-loop client mints ``--rate`` tokens a second (each on its own task), and
revokes one minted task every 2 s. Phases: steady, SIGKILL of the Redis primary (Sentinel
promotes the replica), steady, SIGKILL of the OpenBao leader (Raft elects another).

Prints, per phase (an answer counts in the phase it ended in): mints, tokens, failures
by status and code, the 503 window (start of the first failed mint to the end of the
last) and the slowest answer. Then the
invariants: no revoked token active on any replica (each one's own introspection), the
audit chain verifies (``broker audit verify``), and the mint events are exactly the 201
answers (none missing, none twice, none for a failed mint). Exit 1 if an invariant fails.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from broker.service.credentials import new_client_secret, secret_sha256
from tests.servers.bao_cluster import BaoCluster
from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.haproxy import HaproxyServer
from tests.servers.processes import RedisServer, SentinelServer
from tests.servers.vault_setup import setup_transit

AGENT = """\
agents:
  failover-agent:
    description: Mints at a steady rate through failovers (bench/failover.py)
    identity:
      key:
        sha256: {sha}
    scopes: [widgets-read]
    rate: 100000/h
"""
ANSWER_TIMEOUT = 10.0


@dataclass(frozen=True)
class Answer:
    phase: str
    started: float  # seconds since the run began
    ended: float
    status: int  # 0: no HTTP answer within ANSWER_TIMEOUT
    code: str | None
    task: str
    tokens: tuple[str, ...]


@dataclass
class Stack:
    primary: RedisServer
    replica: RedisServer
    sentinels: list[SentinelServer]
    bao: BaoCluster
    brokers: list[BrokerProcess]
    lb: HaproxyServer

    @property
    def front(self) -> BrokerProcess:
        return replace(self.brokers[0], port=self.lb.port, proc=None)


def start(root: Path, started: list[Any]) -> Stack:
    """Start everything; each server is added to ``started`` as soon as it runs, so a
    failure half-way still stops what was started."""
    primary = RedisServer(root / "primary").start()
    started.append(primary)
    replica = RedisServer(root / "replica", args=("--replicaof", "127.0.0.1", str(primary.port))).start()
    started.append(replica)
    sentinels = []
    for i in range(3):
        sentinels.append(SentinelServer(root / f"sentinel{i}", primary).start())
        started.append(sentinels[-1])
    bao = BaoCluster(root / "bao")
    started.append(bao)  # its stop() stops the nodes started so far
    bao.start()
    token = setup_transit(bao, key="failover")
    policy = PolicyDir.create(root / "policy")
    policy.keys["failover-agent"] = new_client_secret()
    (policy.path / "zz-failover.yaml").write_text(AGENT.format(sha=secret_sha256(policy.keys["failover-agent"])))
    ports = ",".join(f"127.0.0.1:{s.port}" for s in sentinels)
    brokers = []
    for i in range(3):
        broker = BrokerProcess(
            root / f"broker{i}",
            policy,
            f"redis+sentinel://{ports}/{sentinels[0].name}/0",
            bao.addrs,
            token,
            transit_key="failover",
            archive_dir=root / "audit-archive",
        )
        started.append(broker)
        brokers.append(broker.start())
    lb = HaproxyServer(root / "haproxy", [f"127.0.0.1:{b.port}" for b in brokers])
    started.append(lb)
    lb.start()
    return Stack(primary, replica, sentinels, bao, brokers, lb)


class Load:
    """An open loop: one mint every 1/rate s, each on a pool thread, whatever the
    answers' times; one revocation of a minted task every ``revoke_every`` s."""

    def __init__(self, front: BrokerProcess, rate: float, revoke_every: float = 2.0) -> None:
        self.front, self.rate, self.revoke_every = front, rate, revoke_every
        self.marks: list[tuple[float, str]] = [(0.0, "steady")]  # (when, phase): each kill starts one
        self.answers: list[Answer] = []
        self.revoked: dict[str, tuple[str, ...]] = {}  # task -> its tokens, acknowledged revoked
        self.revoke_failures = Counter[int]()
        self._stop = threading.Event()
        self._zero = time.monotonic()
        self._tasks = itertools.count()
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.monotonic() - self._zero

    def mark(self, phase: str) -> None:
        """A phase starts now: an answer that ends from now on counts in it."""
        self.marks.append((self.now(), phase))

    def phase_at(self, when: float) -> str:
        return [phase for at, phase in self.marks if at <= when][-1]

    def _mint(self) -> None:
        task = f"fo-{next(self._tasks)}"
        started = self.now()
        try:
            status, _, body = self.front.post(
                "/v1/tokens", {"task": task, "scopes": ["widgets-read"]}, who="failover-agent", timeout=ANSWER_TIMEOUT
            )
        except OSError:
            status, body = 0, None
        code = body.get("code") if isinstance(body, dict) else None
        tokens = tuple(e["token"] for e in body["tokens"]) if status == 201 and isinstance(body, dict) else ()
        with self._lock:
            ended = self.now()
            self.answers.append(Answer(self.phase_at(ended), started, ended, status, code, task, tokens))

    def _revoke_one(self) -> None:
        with self._lock:
            done = [a for a in self.answers if a.status == 201 and a.task not in self.revoked]
        if not done:
            return
        target = done[-1]
        try:
            status, _, _ = self.front.post(f"/v1/tasks/{target.task}/revoke", who="failover-agent", timeout=5)
        except OSError:
            status = 0
        if status == 200:
            self.revoked[target.task] = target.tokens
        else:
            self.revoke_failures[status] += 1

    def run(self) -> None:
        with ThreadPoolExecutor(64) as pool:
            next_revoke = self.revoke_every
            for n in itertools.count():
                due = n / self.rate
                wait = due - self.now()
                if self._stop.wait(max(wait, 0.0)):
                    break
                pool.submit(self._mint)
                if self.now() >= next_revoke:
                    next_revoke += self.revoke_every
                    pool.submit(self._revoke_one)

    def stop(self) -> None:
        self._stop.set()


def wait_for(condition: Any, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if condition():
                return time.monotonic() - started
        except Exception:  # noqa: BLE001, S110 -- a server mid-failover: ask again
            pass
        time.sleep(0.05)
    raise RuntimeError(f"not within {timeout}s")


def phase_lines(answers: list[Answer], phase: str) -> list[str]:
    mine = [a for a in answers if a.phase == phase]
    failed = [a for a in mine if a.status != 201]
    window = max(a.ended for a in failed) - min(a.started for a in failed) if failed else 0.0
    by = Counter(f"{a.status} {a.code}" for a in failed)
    tokens = sum(len(a.tokens) for a in mine)
    slowest = max((a.ended - a.started for a in mine), default=0.0)
    return [
        f"  {phase:<22} mints {len(mine):>4}  tokens {tokens:>4}  failed {len(failed):>3} {dict(by) if by else ''}",
        f"  {'':<22} 503 window {window:.2f} s  slowest answer {slowest:.2f} s",
    ]


def jti_of(token: str) -> str:
    payload = token.split(".")[1]
    jti: str = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]
    return jti


def broker_cli(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("broker", path=str(Path(sys.executable).parent)) or "broker"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "VAULT_", "BAO_"))}
    return subprocess.run(  # noqa: S603 -- our own CLI, from this venv
        [binary, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def invariants(stack: Stack, load: Load) -> list[tuple[str, bool, str]]:
    checks: list[tuple[str, bool, str]] = []
    active = []
    for task, tokens in load.revoked.items():
        for token in tokens:
            for broker in stack.brokers:
                status, _, body = broker.post("/v1/introspect", {"token": token}, who="git-gateway")
                if status != 200 or body.get("active"):
                    active.append(f"{task} on {broker.url}: {status} {body}")
    checks.append(
        (f"no revoked token active on any replica ({len(load.revoked)} tasks revoked)", not active, "; ".join(active))
    )
    config = str(stack.brokers[0].config_path())
    verified = broker_cli("audit", "verify", "--config", config)
    checks.append(("the audit chain verifies", verified.returncode == 0, (verified.stdout + verified.stderr)[-500:]))
    exported = broker_cli("audit", "export", "--config", config)
    events = [json.loads(line) for line in exported.stdout.splitlines() if line.strip()]
    minted = Counter(jti for e in events if e.get("type") == "mint" for jti in e.get("jti", ()))
    answered = Counter(jti_of(t) for a in load.answers for t in a.tokens)
    missing, twice = answered - minted, +Counter({j: n - 1 for j, n in minted.items() if n > 1})
    extra = minted - answered
    checks.append(
        (
            f"mint events == 201 answers ({sum(minted.values())} events, {sum(answered.values())} tokens)",
            not missing and not twice and not extra,
            f"missing {len(missing)}, twice {len(twice)}, without a 201 {len(extra)}",
        )
    )
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="mints per second (default 20)")
    parser.add_argument("--settle", type=float, default=6.0, help="seconds of steady load between phases")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="capbroker-failover-"))
    started: list[Any] = []
    try:
        print(f"{platform.node()}: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; starting the stack ...")
        stack = start(root, started)
        load = Load(stack.front, args.rate)
        runner = threading.Thread(target=load.run, daemon=True)
        runner.start()
        time.sleep(args.settle)

        if stack.primary.proc is None:
            raise RuntimeError("the Redis primary is not running")
        load.mark("redis primary killed")
        killed_at = load.now()
        stack.primary.proc.kill()
        promoted = wait_for(lambda: stack.sentinels[0].master_port() == stack.replica.port, 60)
        print(f"redis primary SIGKILLed at {killed_at:.1f} s; Sentinel promoted the replica {promoted:.2f} s later")
        time.sleep(args.settle)

        leader = stack.bao.leader()
        load.mark("openbao leader killed")
        killed_at = load.now()
        stack.bao.kill(leader)
        new = stack.bao.leader(timeout=60)
        print(
            f"openbao {leader.node_id} SIGKILLed at {killed_at:.1f} s; {new.node_id} active "
            f"{load.now() - killed_at:.2f} s later"
        )
        time.sleep(args.settle)
        load.stop()
        runner.join(60)
        time.sleep(ANSWER_TIMEOUT)  # the last mints' answers

        print(f"\nminting at {args.rate:g}/s through haproxy to 3 replicas:")
        for phase in ("steady", "redis primary killed", "openbao leader killed"):
            print("\n".join(phase_lines(load.answers, phase)))
        if load.revoke_failures:
            print(f"  revocations answered other than 200: {dict(load.revoke_failures)} (not retried, not counted)")
        print("\ninvariants:")
        ok = True
        for what, passed, detail in invariants(stack, load):
            ok = ok and passed
            print(f"  {'ok  ' if passed else 'FAIL'} {what}" + ("" if passed else f": {detail}"))
        return 0 if ok else 1
    finally:
        for server in reversed(started):
            try:
                server.stop()
            except Exception as e:  # noqa: BLE001 -- stop the rest whatever this one did
                print(f"stopping {type(server).__name__}: {e}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
