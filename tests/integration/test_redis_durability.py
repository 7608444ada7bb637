"""``broker serve`` checks, at start, that Redis keeps what it is given (SECURITY.md,
Redis requirements), on real redis-server processes started with the settings under test.

Refusals happen before the broker touches Vault, so those tests give it none; the ones
that start a broker use the session's OpenBao.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.processes import BaoServer, RedisServer, free_port
from tests.servers.vault_setup import setup_transit

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

KEY = "durability"
AOF = ("--appendonly", "yes", "--appendfsync", "everysec")
VOLATILE = ("--save", "", "--appendonly", "no")
RECOVERY = 10.0  # seconds for a running broker to notice its Redis is back
StartRedis = Callable[..., RedisServer]


@pytest.fixture
def redis_with(tmp_path: Path) -> Iterator[StartRedis]:
    started: list[RedisServer] = []

    def start(*args: str, name: str = "redis") -> RedisServer:
        server = RedisServer(tmp_path / name, args=args).start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> PolicyDir:
    return PolicyDir.create(tmp_path_factory.mktemp("durability-policy"))


@pytest.fixture(scope="module")
def vault_token(bao_server: BaoServer) -> str:
    return setup_transit(bao_server, key=KEY)


def broker_on(
    redis: RedisServer,
    policy: PolicyDir,
    workdir: Path,
    durability: str,
    *,
    vault_addr: str = "http://127.0.0.1:9",  # the discard port: refused before Vault is used
    vault_token: str = "unused-past-the-redis-check",  # noqa: S107 -- not a secret: never sent
    extra_env: dict[str, str] | None = None,
) -> BrokerProcess:
    return BrokerProcess(
        workdir,
        policy,
        redis.url,
        vault_addr,
        vault_token,
        transit_key=KEY,
        redis_durability=durability,
        extra_env=extra_env or {},
    )


def refused(broker: BrokerProcess) -> str:
    """Run ``broker serve``: it must exit 2 at once, before serving; its stderr."""
    broker.port = broker.port or free_port()
    broker.workdir.mkdir(parents=True, exist_ok=True)
    config = broker.config_path()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "VAULT_", "BAO_"))}
    broker_bin = shutil.which("broker", path=str(Path(sys.executable).parent)) or "broker"
    done = subprocess.run(
        [broker_bin, "serve", "--config", str(config)], capture_output=True, text=True, timeout=30, env=env, check=False
    )
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "broker serve: not starting: " in done.stderr
    return done.stderr


def warnings_in(broker: BrokerProcess) -> list[str]:
    return [line for line in broker.log_path.read_text().splitlines() if line.startswith("broker serve: WARNING")]


def graceful_restart(redis: RedisServer) -> None:
    """SIGTERM: Redis writes out what its settings tell it to keep, then starts again on
    the same port and directory."""
    assert redis.proc is not None
    redis.proc.terminate()
    redis.proc.wait(20)
    redis.proc = None
    redis.start()


# ---------------------------------------------------------------------- refusals


@pytest.mark.parametrize("durability", ["checked", "accept-volatile", "asserted-aof"])
def test_serve_refuses_a_redis_that_evicts(
    redis_with: StartRedis, policy: PolicyDir, tmp_path: Path, durability: str
) -> None:
    """allkeys-lru under memory pressure drops revocations: refused, whatever is asserted."""
    redis = redis_with(*AOF, "--maxmemory-policy", "allkeys-lru")
    err = refused(broker_on(redis, policy, tmp_path / "broker", durability))
    assert "maxmemory-policy is 'allkeys-lru'" in err
    assert "noeviction" in err


def test_serve_refuses_a_redis_with_config_renamed_unless_asserted(
    redis_with: StartRedis, policy: PolicyDir, tmp_path: Path, bao_server: BaoServer, vault_token: str
) -> None:
    redis = redis_with(*AOF, "--rename-command", "CONFIG", "")
    for durability in ("checked", "accept-volatile"):
        err = refused(broker_on(redis, policy, tmp_path / durability, durability))
        assert "CONFIG is unavailable" in err
        assert "redis_durability: asserted-aof or asserted-rdb" in err
    broker = broker_on(
        redis, policy, tmp_path / "asserted", "asserted-aof", vault_addr=bao_server.addr, vault_token=vault_token
    )
    try:
        broker.start()
        assert broker.mint("durability-asserted", ["widgets-read"])[0] == 201
        assert warnings_in(broker) == []
    finally:
        broker.stop()


def test_serve_refuses_when_redis_does_not_answer(policy: PolicyDir, tmp_path: Path) -> None:
    """No answer, no check: refused after a bounded wait (10 s), never started unchecked."""
    nobody = RedisServer(tmp_path / "nobody", port=free_port())  # never started
    started = time.monotonic()
    err = refused(broker_on(nobody, policy, tmp_path / "broker", "asserted-aof"))
    assert "did not answer" in err
    assert time.monotonic() - started < 40


# ---------------------------------------------------------------------- starts


def test_serve_starts_quietly_on_aof_and_noeviction(
    redis_with: StartRedis, policy: PolicyDir, tmp_path: Path, bao_server: BaoServer, vault_token: str
) -> None:
    redis = redis_with(*AOF)
    broker = broker_on(
        redis, policy, tmp_path / "broker", "checked", vault_addr=bao_server.addr, vault_token=vault_token
    )
    try:
        broker.start()
        assert broker.mint("durability-quiet", ["widgets-read"])[0] == 201
        assert warnings_in(broker) == []
        assert "not starting" not in broker.log_path.read_text()
    finally:
        broker.stop()


def test_serve_warns_once_without_persistence_when_accepted(
    redis_with: StartRedis, policy: PolicyDir, tmp_path: Path, bao_server: BaoServer, vault_token: str
) -> None:
    """Two workers, one check: the parent warns once, loudly, on stderr."""
    redis = redis_with(*VOLATILE)
    broker = broker_on(
        redis,
        policy,
        tmp_path / "broker",
        "accept-volatile",
        vault_addr=bao_server.addr,
        vault_token=vault_token,
        extra_env={"BROKER_WORKERS": "2"},
    )
    try:
        broker.start()
        assert broker.mint("durability-volatile", ["widgets-read"])[0] == 201
        (warning,) = warnings_in(broker)
        assert "keeps nothing on disk (appendonly 'no', save '')" in warning
        assert "accepted" in warning
    finally:
        broker.stop()


# ---------------------------------------------------------------------- reproduction 8


def test_a_redis_that_loses_its_data_brings_revocations_back(
    redis_with: StartRedis, policy: PolicyDir, tmp_path: Path, bao_server: BaoServer, vault_token: str
) -> None:
    """Issue 11, reproduction 8: after a restart of a Redis without persistence, a revoked
    task could be minted again. Now ``broker serve`` refuses such a Redis unless the
    operator accepts exactly that (``accept-volatile``), and this test shows what is then
    accepted; on AOF the revocation survives the restart."""
    volatile = redis_with(*VOLATILE, name="volatile")
    err = refused(broker_on(volatile, policy, tmp_path / "refused", "checked"))
    assert "keeps nothing on disk (appendonly 'no', save '')" in err
    assert "revocations" in err

    def revoke_restart_mint(redis: RedisServer, durability: str, task: str) -> int:
        broker = broker_on(
            redis, policy, tmp_path / durability, durability, vault_addr=bao_server.addr, vault_token=vault_token
        )
        try:
            broker.start()
            assert broker.mint(task, ["widgets-read"])[0] == 201
            assert broker.post(f"/v1/tasks/{task}/revoke", who="reviewer")[0] == 200
            assert broker.mint(task, ["widgets-read"])[0] == 403
            graceful_restart(redis)
            broker.wait_until(lambda: broker.get("/readyz")[0] == 200, "/readyz after the Redis restart", RECOVERY)
            status: int = broker.mint(task, ["widgets-read"])[0]
            return status
        finally:
            broker.stop()

    # the accepted risk, as the issue found it: the revoked task mints again
    assert revoke_restart_mint(volatile, "accept-volatile", "durability-lost") == 201
    # the requirement met: AOF keeps the task revoked across the restart
    durable = redis_with(*AOF, name="durable")
    assert revoke_restart_mint(durable, "checked", "durability-kept") == 403


# ---------------------------------------------------------------------- upgrades (redis_prefix)


def test_serve_refuses_to_leave_a_deployment_from_before_redis_prefix_behind(
    redis_with: StartRedis, policy: PolicyDir, tmp_path: Path, bao_server: BaoServer, vault_token: str
) -> None:
    """A broker upgraded from before ``redis_prefix`` would derive a new prefix and start on
    empty state, forgetting every revocation under ``capbroker:``: it refuses and says how
    to keep them; with ``redis_prefix: "capbroker:"`` it starts and honours them."""
    redis = redis_with(*AOF)
    with redis_client(redis) as client:
        # what a broker from before redis_prefix left: its audit chain and a revoked task
        client.xadd("capbroker:audit", {"e": "{}"})
        client.set("capbroker:rev:task:reviewer/upgraded-task", "1", ex=3600)
    err = refused(broker_on(redis, policy, tmp_path / "derived", "checked"))
    assert "from before redis_prefix" in err
    assert 'redis_prefix: "capbroker:"' in err
    kept = broker_on(redis, policy, tmp_path / "kept", "checked", vault_addr=bao_server.addr, vault_token=vault_token)
    kept.redis_prefix = "capbroker:"
    try:
        kept.start()
        assert "under 'capbroker:' (redis_prefix)" in kept.log_path.read_text()
        status, _, body = kept.mint("upgraded-task", ["widgets-read"])
        assert (status, body["code"]) == (403, "task_revoked"), body  # the old revocation holds
        assert kept.mint("another-task", ["widgets-read"])[0] == 201
    finally:
        kept.stop()


def test_serve_says_which_prefix_it_derived(
    redis_with: StartRedis, policy: PolicyDir, tmp_path: Path, bao_server: BaoServer, vault_token: str
) -> None:
    redis = redis_with(*AOF)
    broker = broker_on(redis, policy, tmp_path / "b", "checked", vault_addr=bao_server.addr, vault_token=vault_token)
    try:
        broker.start()
        assert f"under {broker.key_prefix!r} (derived from the issuer)" in broker.log_path.read_text()
        assert broker.mint("derived-prefix", ["widgets-read"])[0] == 201
        with redis_client(redis) as client:
            assert client.xlen(broker.audit_stream) >= 1
            assert not client.exists("capbroker:audit")
    finally:
        broker.stop()


def redis_client(server: RedisServer) -> Any:
    import redis as redis_py

    return redis_py.Redis.from_url(server.url, decode_responses=True)
