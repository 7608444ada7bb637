"""Issue 11, reproduction 3: the audit chain rewritten in Redis, caught by its checkpoints.

A real ``broker serve`` (OpenBao Transit, session signing, Redis) writes the chain with
signed checkpoints (every 3 of its events, or 1 s). Then each test does what an attacker
with Redis write access would -- edit and re-seal every later event and set the head key,
delete, reorder, cut the tail, forge a checkpoint -- and runs the real ``broker audit
verify`` on it, which must say BROKEN and name the first bad event or checkpoint.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from broker.audit.chain import seal
from broker.audit.checkpoint import CHECKPOINT_TYP, flattened
from broker.backends.transit import TransitSigningBackend
from broker.token.b64 import b64url_decode, b64url_encode
from broker.token.endorsement import statement_input
from broker.token.keys import KeySet, LocalSigner
from broker.verify.redis_keys import audit_head, audit_stream, default_prefix
from tests.integration.test_service_e2e import broker_cli
from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.processes import BaoServer, RedisServer
from tests.servers.vault_setup import setup_transit

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

KEY = "audit-checkpoints"  # this module's Transit key
STREAM = audit_stream(default_prefix("http://127.0.0.1:8700"))  # BrokerProcess's issuer
HEAD_KEY = audit_head(STREAM)
CHECKPOINTS = {"BROKER_AUDIT_CHECKPOINT_EVENTS": "3", "BROKER_AUDIT_CHECKPOINT_INTERVAL": "1s"}
Entry = tuple[str, dict[str, Any]]  # stream id, event


@dataclass
class Deployment:
    redis: RedisServer
    config: Path
    pristine: list[Entry]  # the chain the broker wrote, checkpoints and all

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url, decode_responses=True, socket_timeout=5)


def entries(client: redis.Redis) -> list[Entry]:
    return [(entry_id, json.loads(fields["e"])) for entry_id, fields in client.xrange(STREAM)]


def store(client: redis.Redis, chain: list[Entry], head: str | None = None) -> None:
    """Replace the stream with ``chain`` (keeping its ids) and set the head key, as an
    attacker with Redis write access can; ``head`` defaults to the last event's hash."""
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(STREAM)
        for entry_id, event in chain:
            pipe.xadd(STREAM, {"e": json.dumps(event, separators=(",", ":"))}, id=entry_id)
        pipe.set(HEAD_KEY, head if head is not None else chain[-1][1]["hash"])
        pipe.execute()


def resealed(chain: list[Entry], start: int) -> list[Entry]:
    """``chain`` with every event from ``start`` on sealed again onto the one before it:
    what the attacker does after editing, deleting or reordering there."""
    out = list(chain[:start])
    for entry_id, event in chain[start:]:
        body = {k: v for k, v in event.items() if k not in ("prev", "hash")}
        out.append((entry_id, seal(body, out[-1][1]["hash"] if out else "0" * 64)))
    return out


def anchored_head(event: dict[str, Any]) -> str:
    head: str = json.loads(b64url_decode(event["checkpoint"]["payload"]))["head"]
    return head


def first_checkpoint_anchoring(chain: list[Entry], index: int) -> int:
    """The position of the first checkpoint that anchors the event at ``index`` or a later one."""
    position = {event["hash"]: i for i, (_, event) in enumerate(chain)}
    return next(
        i for i, (_, e) in enumerate(chain) if e["type"] == "checkpoint" and position[anchored_head(e)] >= index
    )


def verify(deployment: Deployment) -> tuple[int, str]:
    result = broker_cli("audit", "verify", "--config", str(deployment.config))
    return result.returncode, result.stdout + result.stderr


def wait_for(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not within {timeout} s")


def traffic(proc: BrokerProcess, task: str) -> None:
    """A few events of different kinds: mints, an introspection, a refusal."""
    for _ in range(3):
        status, _, body = proc.mint(task, ["widgets-read"])
        assert status == 201, body
    token = body["tokens"][0]["token"]
    assert proc.post("/v1/introspect", {"token": token}, who="git-gateway")[0] == 200
    assert proc.mint(task, ["no-such-scope"])[0] == 400


def all_anchored(client: redis.Redis) -> bool:
    """Whether a checkpoint after the newest other event anchors it."""
    chain = entries(client)
    last = max((i for i, (_, e) in enumerate(chain) if e["type"] != "checkpoint"), default=None)
    if last is None:
        return False
    return any(anchored_head(e) == chain[last][1]["hash"] for _, e in chain[last + 1 :])


@pytest.fixture(scope="module")
def deployment(bao_server: BaoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("audit-checkpoints")
    server = RedisServer(root / "redis").start()
    token = setup_transit(bao_server, key=KEY)
    proc = BrokerProcess(
        root / "broker", PolicyDir.create(root / "policy"), server.url, bao_server.addr, token,
        transit_key=KEY, extra_env=CHECKPOINTS,
    )  # fmt: skip
    client = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=5)
    try:
        proc.start()
        traffic(proc, "audit-a")
        traffic(proc, "audit-b")
        wait_for(lambda: all_anchored(client), "a checkpoint of the broker's last event")
        proc.stop()
        pristine = entries(client)
        assert sum(e["type"] == "checkpoint" for _, e in pristine) >= 3
        yield Deployment(server, proc.workdir / f"broker-{proc.port}.yaml", pristine)
    finally:
        proc.stop()
        client.close()
        server.stop()


@pytest.fixture
def chain(deployment: Deployment) -> Iterator[tuple[Deployment, redis.Redis, list[Entry]]]:
    """The pristine chain back in Redis; the client to tamper with it."""
    client = deployment.client()
    store(client, deployment.pristine)
    try:
        yield deployment, client, copy.deepcopy(deployment.pristine)  # each test edits its own
    finally:
        client.close()


def test_an_untampered_chain_with_checkpoints_verifies(chain: tuple[Deployment, redis.Redis, list[Entry]]) -> None:
    deployment, _, pristine = chain
    checkpoints = sum(e["type"] == "checkpoint" for _, e in pristine)

    code, out = verify(deployment)

    assert code == 0, out
    assert f"audit chain OK: {len(pristine)} event(s), {checkpoints} checkpoint(s)" in out


def test_an_edited_event_resealed_with_the_head_set_is_broken(
    chain: tuple[Deployment, redis.Redis, list[Entry]],
) -> None:
    """The reproduction: edit one event, re-seal every later one, set the head key."""
    deployment, client, pristine = chain
    edited = next(i for i, (_, e) in enumerate(pristine) if e["type"] == "mint")
    pristine[edited][1]["agent"] = "someone-else"
    tampered = resealed(pristine, edited)
    store(client, tampered)
    assert broker_cli("audit", "verify", "--config", str(deployment.config)).returncode == 1
    expected = first_checkpoint_anchoring(pristine, edited)

    code, out = verify(deployment)

    assert code == 1, out
    assert f"BROKEN at event #{expected} (id {tampered[expected][0]})" in out
    assert "anchors an event that is not among" in out


def test_a_deleted_middle_event_resealed_is_broken(chain: tuple[Deployment, redis.Redis, list[Entry]]) -> None:
    deployment, client, pristine = chain
    deleted = 2
    expected = first_checkpoint_anchoring(pristine, deleted) - 1  # one event fewer before it
    tampered = resealed(pristine[:deleted] + pristine[deleted + 1 :], deleted)
    store(client, tampered)

    code, out = verify(deployment)

    assert code == 1, out
    assert f"BROKEN at event #{expected} (id {tampered[expected][0]})" in out


def test_a_cut_tail_with_the_head_left_is_broken(chain: tuple[Deployment, redis.Redis, list[Entry]]) -> None:
    """The reproduction: delete the last event; verify used to pass."""
    deployment, client, pristine = chain
    client.xdel(STREAM, pristine[-1][0])

    code, out = verify(deployment)

    assert code == 1, out
    assert "BROKEN at the stored head: the stored head names no event of the chain" in out
    assert f"{len(pristine) - 1} event(s) before it verify" in out


def test_a_reordered_pair_resealed_is_broken(chain: tuple[Deployment, redis.Redis, list[Entry]]) -> None:
    deployment, client, pristine = chain
    i = 1
    swapped = [*pristine[:i], pristine[i + 1], pristine[i], *pristine[i + 2 :]]
    # stream ids stay in order: the attacker swaps the bodies, not the ids
    swapped = [(pristine[n][0], event) for n, (_, event) in enumerate(swapped)]
    tampered = resealed(swapped, i)
    store(client, tampered)
    expected = first_checkpoint_anchoring(pristine, i)

    code, out = verify(deployment)

    assert code == 1, out
    assert f"BROKEN at event #{expected} (id {tampered[expected][0]})" in out


def forged_statement(head: str, kid: str) -> dict[str, str]:
    """A checkpoint for ``head`` that the attacker signs with a key of their own."""
    attacker = LocalSigner.generate("EdDSA", kid)
    payload = json.dumps({"iss": "http://127.0.0.1:8700", "iat": int(time.time()), "head": head}, separators=(",", ":"))
    message = statement_input("EdDSA", CHECKPOINT_TYP, kid, payload.encode())
    return flattened(f"{message.decode()}.{b64url_encode(attacker.sign(message))}")


def edited_statement(statement: dict[str, str], head: str) -> dict[str, str]:
    """A genuine checkpoint with its payload's head changed, the signature kept."""
    body = json.loads(b64url_decode(statement["payload"]))
    body["head"] = head
    return {**statement, "payload": b64url_encode(json.dumps(body, separators=(",", ":")).encode())}


@pytest.mark.parametrize("forgery", ["signed by another key", "payload edited"])
def test_a_forged_checkpoint_is_broken(chain: tuple[Deployment, redis.Redis, list[Entry]], forgery: str) -> None:
    """Edit and re-seal as above, then re-anchor: every later checkpoint replaced by one
    naming the new hashes (signed by the attacker's key under our kid, or the genuine
    signature over an edited payload)."""
    deployment, client, pristine = chain
    edited = next(i for i, (_, e) in enumerate(pristine) if e["type"] == "mint")
    pristine[edited][1]["agent"] = "someone-else"
    tampered = resealed(pristine, edited)
    old_to_new = {old[1]["hash"]: new[1]["hash"] for old, new in zip(pristine, tampered, strict=True)}
    for n in range(edited, len(tampered)):
        event = tampered[n][1]
        if event["type"] == "checkpoint":
            head = old_to_new[anchored_head(event)]
            event["checkpoint"] = (
                forged_statement(head, f"{KEY}-v1")
                if forgery == "signed by another key"
                else edited_statement(event["checkpoint"], head)
            )
            tampered = resealed(tampered, n)
    store(client, tampered)
    expected = first_checkpoint_anchoring(pristine, edited)

    code, out = verify(deployment)

    assert code == 1, out
    assert f"BROKEN at event #{expected} (id {tampered[expected][0]})" in out
    assert "the checkpoint does not verify (bad_signature" in out


def test_a_cut_tail_with_the_head_rewritten_is_broken_by_the_writers_next_checkpoint(
    bao_server: BaoServer, own_redis: RedisServer, tmp_path: Path
) -> None:
    """The reproduction's tail cut, with the head key set to the new last event too: the
    broker that wrote the cut event remembers it, and its next checkpoint anchors it."""
    token = setup_transit(bao_server, key=KEY)
    proc = BrokerProcess(
        tmp_path / "broker", PolicyDir.create(tmp_path / "policy"), own_redis.url, bao_server.addr, token,
        transit_key=KEY, extra_env={"BROKER_AUDIT_CHECKPOINT_INTERVAL": "2s"},
    )  # fmt: skip
    client = redis.Redis.from_url(own_redis.url, decode_responses=True, socket_timeout=5)
    try:
        proc.start()
        assert proc.mint("cut-a", ["widgets-read"])[0] == 201
        wait_for(lambda: all_anchored(client), "the first checkpoint")
        assert proc.mint("cut-b", ["widgets-read"])[0] == 201
        before = entries(client)
        cut_id, cut = before[-1]
        assert cut["type"] == "mint"  # not anchored yet: its checkpoint is 2 s away
        client.xdel(STREAM, cut_id)
        client.set(HEAD_KEY, before[-2][1]["hash"])
        wait_for(lambda: len(entries(client)) == len(before), "the broker's next checkpoint")
        config = str(tmp_path / "broker" / f"broker-{proc.port}.yaml")
        # the keys from the broker's JWKS (--keys URL) while it runs, then from Vault
        from_jwks = broker_cli("audit", "verify", "--config", config, "--keys", f"{proc.url}/.well-known/jwks.json")
        proc.stop()
        after = entries(client)
        checkpoint_id, checkpoint = after[-1]
        assert checkpoint["type"] == "checkpoint"
        assert anchored_head(checkpoint) == cut["hash"]

        result = broker_cli("audit", "verify", "--config", config)

        for answer in (result, from_jwks):
            assert answer.returncode == 1, answer.stdout + answer.stderr
            assert f"BROKEN at event #{len(after) - 1} (id {checkpoint_id})" in answer.stdout
            assert "anchors an event that is not among" in answer.stdout
    finally:
        proc.stop()
        client.close()


def test_verify_checks_checkpoints_against_a_jwks_file_given_with_keys(
    chain: tuple[Deployment, redis.Redis, list[Entry]], bao_server: BaoServer, tmp_path: Path
) -> None:
    """``--keys FILE``: the published long-term keys from a file (here, what Transit
    publishes, with a session key beside it that must not count); another key set fails."""
    deployment, _, pristine = chain
    transit = TransitSigningBackend(addr=bao_server.addr, token=bao_server.root_token, key=KEY)
    try:
        published = asyncio.run(transit.read_keyset())
    finally:
        asyncio.run(transit.aclose())
    session = LocalSigner.generate("EdDSA", "s-0123456789abcdef").public
    good, other = tmp_path / "jwks.json", tmp_path / "other.json"
    good.write_text(json.dumps(KeySet([*published, session]).to_jwks()))
    other.write_text(json.dumps(KeySet([LocalSigner.generate("EdDSA", f"{KEY}-v1").public]).to_jwks()))
    first = next(i for i, (_, e) in enumerate(pristine) if e["type"] == "checkpoint")

    ok = broker_cli("audit", "verify", "--config", str(deployment.config), "--keys", str(good))
    refused = broker_cli("audit", "verify", "--config", str(deployment.config), "--keys", str(other))

    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"BROKEN at event #{first} (id {pristine[first][0]})" in refused.stdout
    assert "bad_signature" in refused.stdout


def test_two_processes_checkpoint_one_chain_each_on_its_own_timer(
    bao_server: BaoServer, own_redis: RedisServer, tmp_path: Path
) -> None:
    """No election: each replica anchors its own events; their checkpoints interleave in
    the one chain, and it verifies."""
    token = setup_transit(bao_server, key=KEY)
    policy = PolicyDir.create(tmp_path / "policy")
    procs = [
        BrokerProcess(tmp_path / name, policy, own_redis.url, bao_server.addr, token, transit_key=KEY,
                      extra_env=CHECKPOINTS)
        for name in ("a", "b")
    ]  # fmt: skip
    client = redis.Redis.from_url(own_redis.url, decode_responses=True, socket_timeout=5)
    try:
        for proc in procs:
            proc.start()
        for round_ in range(2):
            for proc in procs:
                traffic(proc, f"two-{round_}")
        wait_for(lambda: all_anchored(client), "a checkpoint of the last event")
        for proc in procs:
            proc.stop()
        chain = entries(client)
        writers = {e["request_id"].rsplit("-", 1)[0] for _, e in chain if e["type"] == "checkpoint"}

        result = broker_cli("audit", "verify", "--config", str(procs[0].workdir / f"broker-{procs[0].port}.yaml"))

        assert len(writers) == 2  # both processes wrote checkpoints
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"audit chain OK: {len(chain)} event(s)" in result.stdout
    finally:
        for proc in procs:
            proc.stop()
        client.close()


def test_a_checkpoint_vault_cannot_sign_is_retried_once_vault_is_back(
    own_bao: BaoServer, own_redis: RedisServer, tmp_path: Path
) -> None:
    """Vault sealed when a checkpoint falls due: it is logged and counted, its events wait,
    and the next try after Vault is back anchors them; the chain then verifies."""
    token = setup_transit(own_bao, key=KEY)
    proc = BrokerProcess(
        tmp_path / "broker", PolicyDir.create(tmp_path / "policy"), own_redis.url, own_bao.addr, token,
        transit_key=KEY, extra_env={"BROKER_AUDIT_CHECKPOINT_INTERVAL": "2s"},
    )  # fmt: skip
    client = redis.Redis.from_url(own_redis.url, decode_responses=True, socket_timeout=5)
    try:
        proc.start()
        assert proc.mint("sealed-a", ["widgets-read"])[0] == 201
        own_bao.seal()  # before the mint's checkpoint is due (2 s)
        proc.wait_until(lambda: "audit checkpoint not written" in proc.log_path.read_text(), "a failed checkpoint")
        assert not all_anchored(client)
        failed = proc.get("/metrics", who="admin")[2]
        assert 'capbroker_audit_checkpoints_total{result="failed"}' in failed
        own_bao.unseal()
        wait_for(lambda: all_anchored(client), "the retried checkpoint")
        proc.wait_until(lambda: proc.mint("sealed-b", ["widgets-read"])[0] == 201, "minting again")
        wait_for(lambda: all_anchored(client), "the next checkpoint")
        proc.stop()

        result = broker_cli("audit", "verify", "--config", str(tmp_path / "broker" / f"broker-{proc.port}.yaml"))

        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        proc.stop()
        client.close()


def test_verify_as_json_for_scripts(chain: tuple[Deployment, redis.Redis, list[Entry]]) -> None:
    """Issue 13 item 8: ``-o json``, one object: the status and the figures; exit 0 / 1."""
    deployment, client, pristine = chain
    ok = broker_cli("audit", "verify", "--config", str(deployment.config), "-o", "json")
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert result["status"] == "ok"
    assert result["count"] == len(pristine)
    edited = next(i for i, (_, e) in enumerate(pristine) if e["type"] == "mint")
    pristine[edited][1]["agent"] = "someone-else"
    store(client, resealed(pristine, edited))
    broken = broker_cli("audit", "verify", "--config", str(deployment.config), "-o", "json")
    assert broken.returncode == 1
    assert json.loads(broken.stdout)["status"] == "broken"
