"""Issue 12, 3: two deployments on one Redis server never cross.

Pub/sub ignores the database number and channel names used to be fixed: a task revoke in
deployment X (DB 0) made deployment Y's running verifier (DB 1) reject Y's token of the
same task id, and Y followed X's policy reloads. Each pair below is two real `broker serve`
processes on one real redis-server and OpenBao:

- the same issuer (so the same derived ``redis_prefix``) on DB 0 and DB 1: the channels
  carry the DB number;
- one DB, two ``redis_prefix`` settings: every key and channel carries the prefix.

X revokes a task, pulls the kill switch on the agent and reloads its policy; X's own
verifier sees the revocation (the test can see one), while Y's running verifier, a fresh
one, and Y's introspection still accept Y's token of the same task and agent, and Y's
audit stream gains no event (no revocation, reload or audit event crossed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis

from broker.verify import Verifier
from tests.helpers import rejection
from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.processes import BaoServer, RedisServer
from tests.servers.vault_setup import setup_transit

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

KEY = "isolation"  # this module's Transit key
TASK = "shared-task-id"  # both deployments' agents use it
REVOCATION_DEADLINE = 1.0  # SPEC 5: seen within a second where it belongs
QUIET = {"BROKER_AUDIT_CHECKPOINT_INTERVAL": "1h", "BROKER_AUDIT_CHECKPOINT_EVENTS": "1000000"}


@dataclass
class Pair:
    x: BrokerProcess  # the one that revokes and reloads
    y: BrokerProcess  # the bystander


@pytest.fixture(scope="module")
def redis_server_for_pairs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("isolation-redis")).start()
    yield server
    server.stop()


PAIRS = {
    # same issuer, so the same derived prefix; only the DB differs
    "different-dbs": (("/0", ""), ("/1", "")),
    # one DB, two explicit prefixes
    "same-db-different-prefixes": (("/2", "capbroker:x:"), ("/2", "capbroker:y:")),
}


@pytest.fixture(scope="module", params=sorted(PAIRS))
def pair(
    request: pytest.FixtureRequest,
    bao_server: BaoServer,
    redis_server_for_pairs: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp(f"isolation-{request.param}")
    token = setup_transit(bao_server, key=KEY)
    base = redis_server_for_pairs.url.rsplit("/", 1)[0]  # the URL without its DB
    procs = []
    for name, (db, prefix) in zip(("x", "y"), PAIRS[request.param], strict=True):
        policy = PolicyDir.create(root / f"policy-{name}")
        procs.append(
            BrokerProcess(
                root / name,
                policy,
                base + db,
                bao_server.addr,
                token,
                transit_key=KEY,
                extra_env=QUIET,
                redis_prefix=prefix,
            )
        )
    try:
        for proc in procs:
            proc.start()
        yield Pair(procs[0], procs[1])
    finally:
        for proc in procs:
            proc.stop()


def token_of(proc: BrokerProcess, scope: str = "widgets-read", who: str = "reviewer") -> str:
    status, _, body = proc.mint(TASK, [scope], who=who)
    assert status == 201, body
    token: str = body["tokens"][0]["token"]
    return token


def verifier_of(proc: BrokerProcess) -> Verifier:
    return Verifier(
        issuer=proc.issuer,
        audience="git-gateway",
        jwks_url=f"{proc.url}/.well-known/jwks.json",
        revocation=proc.redis_url,
        redis_prefix=proc.redis_prefix or None,
    )


def active(proc: BrokerProcess, token: str) -> bool:
    status, _, body = proc.post("/v1/introspect", {"token": token}, who="git-gateway")
    assert status == 200, body
    return bool(body["active"])


def stream_length(proc: BrokerProcess) -> int:
    with redis.Redis.from_url(proc.redis_url, decode_responses=True) as client:
        return int(client.xlen(proc.audit_stream))


def event_types_after(proc: BrokerProcess, count: int) -> list[str]:
    """The types of the audit events stored after the first ``count``."""
    with redis.Redis.from_url(proc.redis_url, decode_responses=True) as client:
        entries = client.xrange(proc.audit_stream)[count:]
    return [json.loads(fields["e"])["type"] for _, fields in entries]


def within(seconds: float, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds}s"
        time.sleep(0.02)


def test_a_revocation_reload_or_audit_event_of_one_deployment_never_reaches_the_other(pair: Pair) -> None:
    x, y = pair.x, pair.y
    x_token, y_token = token_of(x), token_of(y)
    x_deployer, y_deployer = token_of(x, "widgets-push", "deployer"), token_of(y, "widgets-push", "deployer")
    with verifier_of(x) as x_verifier, verifier_of(y) as y_verifier:
        assert rejection(x_verifier, x_token) is None
        assert rejection(y_verifier, y_token) is None
        assert rejection(y_verifier, y_deployer) is None
        y_events = stream_length(y)
        x_events = stream_length(x)

        status, _, body = x.post(f"/v1/tasks/{TASK}/revoke", who="reviewer")
        assert status == 200, body
        status, _, body = x.post("/v1/agents/deployer/revoke", who="admin")
        assert status == 200, body
        status, _, body = x.post("/v1/admin/reload", who="admin")
        assert status == 200, body

        # where they belong, they are seen within the second (so the test can see one)
        within(REVOCATION_DEADLINE, lambda: rejection(x_verifier, x_token) == "revoked")
        within(REVOCATION_DEADLINE, lambda: rejection(x_verifier, x_deployer) == "revoked")
        assert stream_length(x) > x_events
        time.sleep(2 * REVOCATION_DEADLINE)  # anything that would cross has had its chance

        assert rejection(y_verifier, y_token) is None
        assert rejection(y_verifier, y_deployer) is None
        with verifier_of(y) as fresh:
            assert rejection(fresh, y_token) is None
            assert rejection(fresh, y_deployer) is None
        assert active(y, y_token)
        assert active(y, y_deployer)
        status, _, body = y.mint(TASK, ["widgets-push"], who="deployer")  # not suspended here
        assert status == 201, body
        # Y's own introspections and mint only: no revocation, no reload (a peer reload is
        # audited) and no event of X crossed
        assert event_types_after(y, y_events) == ["introspect", "introspect", "mint"]
