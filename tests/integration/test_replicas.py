"""Three ``broker serve`` replicas behind a real haproxy (round-robin), on Sentinel Redis
(a primary, its replica, a Sentinel) and a 3-node OpenBao Raft cluster: one deployment.

Shown, through the load balancer unless said otherwise:

- the rate limit is the deployment's, not each replica's: an agent at ``100/h`` gets
  exactly 100 tokens across the three, and every replica minted some;
- a revocation through one replica is seen by each replica's own introspection and by a
  running verifier within a second (docs/operations.md: "Running highly available");
- the audit trail stays one chain (``broker audit verify``), with exactly one mint event
  per token handed out;
- a policy reload through one replica reaches the others, which report the same digest
  on ``/readyz``; a replica whose files give another digest keeps its policy and reports
  ``policy_mismatch`` (not ready) until its files match;
- a restarted replica's new session key is in every other replica's JWKS at once.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from broker.verify import Verifier
from tests.helpers import rejection
from tests.servers.bao_cluster import BaoCluster
from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.haproxy import HaproxyServer
from tests.servers.processes import RedisServer, SentinelServer
from tests.servers.vault_setup import setup_transit

pytestmark = [
    pytest.mark.integration,
    pytest.mark.ha,
    pytest.mark.enable_socket,
    pytest.mark.allow_hosts(["127.0.0.1"]),
]

KEY = "replicas"
#: docs/operations.md: a revocation reaches every replica within a second
REVOCATION_BOUND = 1.0
#: a reload announcement crosses Redis pub/sub at once; the mismatched replica rechecks
#: its files every second (``policy_follower.RECHECK_SECONDS``): room for a loaded CI
RELOAD_BOUND = 10.0
# `100/h`, not `100/min`: the limit is a GCRA, which at 100/min lets one more request
# through every 0.6 s; 120 mints on a slow machine would then get more than 100, a count
# that depends on the machine's speed. At 100/h the refill is one per 36 s.
RATE = "100/h"


@dataclass
class Deployment:
    replicas: list[BrokerProcess]
    front: BrokerProcess  # the load balancer's address, with the replicas' secrets (never started)
    sentinel: SentinelServer
    handed_out: list[str] = field(default_factory=list)  # every token a mint answered 201 with

    def mint(self, via: BrokerProcess, task: str, who: str = "reviewer") -> tuple[int, Any]:
        status, _, body = via.mint(task, ["widgets-read"], who=who)
        if status == 201:
            self.handed_out.extend(entry["token"] for entry in body["tokens"])
        return status, body


def replica_in_sync(primary: RedisServer) -> bool:
    import redis

    with redis.Redis.from_url(primary.url, decode_responses=True) as client:
        info = client.info("replication")
    return int(info.get("connected_slaves", 0)) == 1 and info.get("slave0", {}).get("state") == "online"


def within(seconds: float, condition: Callable[[], bool], what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"{what}: not within {seconds}s"
        time.sleep(0.02)
    return time.monotonic() - started


def own_copy(policy: PolicyDir, path: Path) -> PolicyDir:
    """The same policy files and secrets, in this replica's own directory (a deploy
    updates each replica's files on its own)."""
    shutil.copytree(policy.path, path)
    return PolicyDir(path, policy.keys)


@pytest.fixture(scope="module")
def d(bao_raft: BaoCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("replicas")
    primary = RedisServer(root / "primary").start()
    replica = RedisServer(root / "replica", args=("--replicaof", "127.0.0.1", str(primary.port))).start()
    sentinel = SentinelServer(root / "sentinel", primary).start()
    started: list[Any] = [sentinel, replica, primary]
    try:
        within(20.0, lambda: replica_in_sync(primary), "the Redis replica in sync")
        token = setup_transit(bao_raft, key=KEY)
        policy = PolicyDir.create(root / "policy", hammer_rate=RATE)
        brokers = [
            BrokerProcess(
                root / f"broker{i}",
                own_copy(policy, root / f"policy{i}"),
                sentinel.url,
                bao_raft.addrs,
                token,
                transit_key=KEY,
                archive_dir=root / "audit-archive",
            )
            for i in range(3)
        ]
        for broker in brokers:
            started.insert(0, broker.start())
        lb = HaproxyServer(root / "haproxy", [f"127.0.0.1:{b.port}" for b in brokers]).start()
        started.insert(0, lb)
        yield Deployment(brokers, dataclasses.replace(brokers[0], port=lb.port, proc=None), sentinel)
    finally:
        for server in started:
            server.stop()


def minted_here(broker: BrokerProcess) -> float:
    status, _, text = broker.get("/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith("capbroker_tokens_minted_total "):
            return float(line.split()[1])
    return 0.0


def test_an_agent_gets_its_rate_across_the_three_replicas_not_per_replica(d: Deployment) -> None:
    before = [minted_here(b) for b in d.replicas]
    tasks = itertools.count()
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: d.mint(d.front, f"rate-{next(tasks)}", who="hammer"), range(120)))
    statuses = Counter(status for status, _ in answers)
    assert statuses == {201: 100, 429: 20}, statuses
    assert {body["code"] for status, body in answers if status == 429} == {"rate_limited"}
    gained = [minted_here(b) - was for b, was in zip(d.replicas, before, strict=True)]
    assert sum(gained) == 100
    assert all(n > 0 for n in gained), gained  # each replica minted some


def active(broker: BrokerProcess, token: str) -> bool:
    status, _, body = broker.post("/v1/introspect", {"token": token}, who="git-gateway")
    assert status == 200, body
    return bool(body["active"])


def test_a_revocation_through_one_replica_reaches_every_replica_and_a_running_verifier(d: Deployment) -> None:
    status, body = d.mint(d.front, "replicas-revoked")
    assert status == 201, body
    token = body["tokens"][0]["token"]
    with Verifier(
        issuer=d.front.issuer,
        audience="git-gateway",
        jwks_url=f"{d.front.url}/.well-known/jwks.json",
        revocation=d.sentinel.url,
    ) as running:
        assert rejection(running, token) is None
        assert all(active(b, token) for b in d.replicas)
        status, _, body = d.replicas[1].post("/v1/tasks/replicas-revoked/revoke", who="reviewer")
        assert status == 200, body
        acknowledged = time.monotonic()
        seen = []
        for broker in d.replicas:
            left = REVOCATION_BOUND - (time.monotonic() - acknowledged)
            within(max(left, 0.0), lambda b=broker: not active(b, token), f"introspection on {broker.url}")
            seen.append(time.monotonic() - acknowledged)
        left = REVOCATION_BOUND - (time.monotonic() - acknowledged)
        within(max(left, 0.0), lambda: rejection(running, token) == "revoked", "the running verifier")
        seen.append(time.monotonic() - acknowledged)
    print(f"\nrevocation seen by the 3 replicas and the verifier after {', '.join(f'{s * 1000:.0f}' for s in seen)} ms")


def broker_cli(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("broker", path=str(Path(sys.executable).parent)) or "broker"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "VAULT_", "BAO_"))}
    return subprocess.run([binary, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def jti_of(token: str) -> str:
    payload = token.split(".")[1]
    jti: str = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]
    return jti


def test_the_audit_trail_stays_one_chain_with_one_mint_event_per_token(d: Deployment) -> None:
    for i in range(9):  # interleaved: round-robin over the three
        status, body = d.mint(d.front, f"chain-{i}")
        assert status == 201, body
    config = str(d.replicas[2].config_path())

    verified = broker_cli("audit", "verify", "--config", config)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    exported = broker_cli("audit", "export", "--config", config)
    assert exported.returncode == 0, exported.stderr
    events = [json.loads(line) for line in exported.stdout.splitlines() if line.strip()]
    minted = Counter(jti for e in events if e.get("type") == "mint" for jti in e["jti"])
    handed_out = Counter(jti_of(token) for token in d.handed_out)
    assert len(handed_out) >= 9
    assert minted == handed_out  # none missing, none twice, none for a refused mint


def readyz(broker: BrokerProcess) -> tuple[int, dict[str, Any]]:
    status, _, body = broker.get("/readyz")
    return status, body


def reports(broker: BrokerProcess, digest: str) -> bool:
    """Ready, with ``digest`` in force."""
    status, body = readyz(broker)
    return status == 200 and body["policy"] == digest


def touch_policy(broker: BrokerProcess, line: str) -> None:
    with (broker.policy.path / "zz-hammer.yaml").open("a") as f:
        f.write(f"# {line}\n")


def test_a_policy_reload_through_one_replica_reaches_the_others(d: Deployment) -> None:
    old = {readyz(b)[1]["policy"] for b in d.replicas}
    assert len(old) == 1
    for broker in d.replicas:
        touch_policy(broker, "reloaded everywhere")
    status, _, body = d.front.post("/v1/admin/reload", who="admin")
    assert status == 200, body
    new = body["digest"]
    assert {new} != old
    reloaded = time.monotonic()
    for broker in d.replicas:
        within(RELOAD_BOUND, lambda b=broker: reports(b, new), f"the new digest on {broker.url}")
    print(f"\nevery replica reported the new digest {(time.monotonic() - reloaded) * 1000:.0f} ms after the answer")


def test_a_replica_whose_files_differ_keeps_its_policy_and_is_not_ready_until_they_match(d: Deployment) -> None:
    first, second, behind = d.replicas
    kept = readyz(behind)[1]["policy"]
    for broker in (first, second):
        touch_policy(broker, "a deploy that has not reached the third replica")
    status, _, body = first.post("/v1/admin/reload", who="admin")
    assert status == 200, body
    new = body["digest"]

    def mismatched() -> bool:
        status, answer = readyz(behind)
        return status == 503 and answer["checks"]["policy"] == "policy_mismatch"

    within(RELOAD_BOUND, mismatched, "policy_mismatch on the replica left behind")
    assert readyz(behind)[1]["policy"] == kept  # its own policy still in force
    within(RELOAD_BOUND, lambda: reports(second, new), "the new digest on the follower")

    touch_policy(behind, "a deploy that has not reached the third replica")  # the deploy arrives
    within(RELOAD_BOUND, lambda: reports(behind, new), "the new digest once the files match")


def test_a_restarted_replicas_new_session_key_is_in_every_other_replicas_jwks_at_once(d: Deployment) -> None:
    """A replica signs with its new session key as soon as it is ready; a verifier that
    fetches another replica's JWKS right after must find the key there, or it would keep
    a set without it for its refetch cooldown (the JWKS endpoint re-reads the published
    keys: ``keyset(fresh=True)``)."""
    restarted, *others = d.replicas
    restarted.stop()
    restarted.start()
    status, body = d.mint(restarted, "replicas-new-key")
    assert status == 201, body
    token = body["tokens"][0]["token"]
    for other in others:
        status, _, jwks = other.get("/.well-known/jwks.json")
        assert status == 200
        verifier = Verifier(issuer=other.issuer, audience="git-gateway", jwks=jwks)
        assert verifier.verify(token).claims.task == "replicas-new-key"
