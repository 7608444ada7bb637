"""Containment on real processes: a ``broker serve`` on OpenBao (Transit) and Redis, a
service containing a task with the agent's token as evidence, and a second verifier (what
a gateway replica runs: JWKS + the Redis revocation feed) refusing every token of the task
within a second, while another task of the same agent keeps working."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.verify import Verifier
from tests.helpers import rejection
from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.processes import BaoServer, RedisServer
from tests.servers.vault_setup import setup_transit

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

KEY = "contain-e2e"
REVOCATION_DEADLINE = 1.0  # SPEC 5: a revocation is seen everywhere within one second


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """This module's own Redis: the session's may hold keys a broker refuses to start beside."""
    server = RedisServer(tmp_path_factory.mktemp("contain-redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def broker(
    bao_server: BaoServer, module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    root = tmp_path_factory.mktemp("contain")
    token = setup_transit(bao_server, key=KEY)
    proc = BrokerProcess(root / "broker", PolicyDir.create(root / "policy"), module_redis.url, bao_server.addr, token,
                         transit_key=KEY)  # fmt: skip
    try:
        yield proc.start()
    finally:
        proc.stop()


def within(seconds: float, condition: Callable[[], bool], since: float) -> None:
    while not condition():
        if time.monotonic() - since > seconds:
            pytest.fail(f"not within {seconds}s")
        time.sleep(0.02)


def test_a_contained_task_is_refused_by_a_verifier_with_a_revocation_feed_within_a_second(
    broker: BrokerProcess, module_redis: RedisServer
) -> None:
    status, _, minted = broker.mint("e2e-contain", ["widgets-read", "widgets-pulls-read"])
    assert status == 201, minted
    tokens = {t["audience"]: t["token"] for t in minted["tokens"]}
    status, _, other = broker.mint("e2e-contain-other", ["widgets-read"])
    assert status == 201, other
    bystander = other["tokens"][0]["token"]
    jwks = f"{broker.url}/.well-known/jwks.json"
    verifiers = {
        aud: Verifier(issuer=broker.issuer, audience=aud, jwks_url=jwks, revocation=module_redis.url)
        for aud in ("git-gateway", "github-proxy")
    }
    assert all(rejection(verifiers[aud], token) is None for aud, token in tokens.items())
    assert rejection(verifiers["git-gateway"], bystander) is None

    report = {"token": tokens["git-gateway"], "kind": "git", "resource": "github.com/acme/secrets", "action": "read"}
    status, _, answer = broker.post("/v1/tasks/e2e-contain/contain", report, who="git-gateway")
    contained_at = time.monotonic()

    assert (status, answer) == (200, {"task": "e2e-contain", "revoked": True})
    for aud, token in tokens.items():
        within(REVOCATION_DEADLINE, lambda a=aud, t=token: rejection(verifiers[a], t) == "revoked", contained_at)
    assert rejection(verifiers["git-gateway"], bystander) is None
    status, _, body = broker.mint("e2e-contain", ["widgets-read"])
    assert (status, body["code"]) == (403, "task_revoked")
    status, _, body = broker.post("/v1/introspect", {"token": tokens["git-gateway"]}, who="git-gateway")
    assert body == {"active": False}
    # the audit line on the broker's output names what the service saw, never the token
    lines = [json.loads(line) for line in Path(broker.log_path).read_text().splitlines() if '"contained"' in line]
    (event,) = [e for e in lines if e.get("decision") == "allow"]
    assert (event["service"], event["task"], event["kind"], event["action"]) == (
        "git-gateway", "e2e-contain", "git", "read",
    )  # fmt: skip


def test_a_service_cannot_contain_another_audiences_task_on_the_real_broker(broker: BrokerProcess) -> None:
    status, _, minted = broker.mint("e2e-contain-aud", ["widgets-read"])
    assert status == 201, minted
    token = minted["tokens"][0]["token"]
    report = {"token": token, "kind": "git", "resource": "github.com/acme/widgets", "action": "write"}

    status, _, body = broker.post("/v1/tasks/e2e-contain-aud/contain", report, who="storage-gateway")

    assert (status, body["code"]) == (403, "forbidden")
    status, _, body = broker.post("/v1/introspect", {"token": token}, who="git-gateway")
    assert body["active"] is True


def test_redis_down_is_a_503_and_nothing_is_contained_half_way(
    bao_server: BaoServer, own_redis: RedisServer, tmp_path: Path
) -> None:
    proc = BrokerProcess(tmp_path / "broker", PolicyDir.create(tmp_path / "policy"), own_redis.url, bao_server.addr,
                         setup_transit(bao_server, key=KEY), transit_key=KEY)  # fmt: skip
    try:
        proc.start()
        status, _, minted = proc.mint("e2e-contain-down", ["widgets-read"])
        assert status == 201, minted
        token = minted["tokens"][0]["token"]
        report = {"token": token, "kind": "git", "resource": "github.com/acme/secrets", "action": "read"}
        own_redis.stop()

        status, headers, body = proc.post("/v1/tasks/e2e-contain-down/contain", report, who="git-gateway")

        assert (status, body["code"]) == (503, "backend_unavailable"), body
        assert int(headers["retry-after"]) >= 1
        assert "revoked" not in body
        own_redis.start()  # same port, empty (the test Redis keeps nothing on disk)
        # the revocation feed reconnects (until then introspection is 503, fail closed)
        proc.wait_until(
            lambda: proc.post("/v1/introspect", {"token": token}, who="git-gateway")[0] == 200, "introspection back"
        )
        # nor in the broker's own revocation set: the token is active until a containment succeeds
        status, _, body = proc.post("/v1/introspect", {"token": token}, who="git-gateway")
        assert (status, body.get("active")) == (200, True), body
        status, _, body = proc.post("/v1/tasks/e2e-contain-down/contain", report, who="git-gateway")
        assert (status, body) == (200, {"task": "e2e-contain-down", "revoked": True})
    finally:
        proc.stop()
