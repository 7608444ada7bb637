"""Downstream credentials rooted in the task (SPEC 6), end to end on real servers.

A real ``broker serve`` on its own OpenBao (KV v2, the database engine, Transit), its own
Redis and a real PostgreSQL cluster; the example policy (``scopes/``): the ``analyst``
gets ``weather-api-key`` (vault-kv, one secret) and ``warehouse-readonly`` (database).
``broker vault sync`` runs as the admin (root) before the broker starts; the broker runs
with the shipped least-privilege policy (``infra/vault/capbroker-policy.hcl``).

Tests run in file order and each uses its own task ids; the fault tests come last.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import psycopg
import pytest
import redis

from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.downstream_setup import (
    CREATION,
    DB_ROLE,
    client,
    leases,
    setup_database,
    setup_kv,
    write_db_role,
)
from tests.servers.postgres import PostgresServer
from tests.servers.processes import BaoServer, RedisServer, free_port
from tests.servers.vault_setup import setup_transit

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

KV = "weather-api-key"
DB = "warehouse-readonly"
SECRET_PATH = "data-agent/weather-api"


@dataclass
class Stack:
    broker: BrokerProcess
    bao: BaoServer
    pg: PostgresServer
    runtime_token: str
    sync_output: str
    redis: RedisServer


def broker_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("broker", path=str(Path(sys.executable).parent)) or "broker"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "VAULT_", "BAO_"))}
    return subprocess.run(
        [binary, *args], env=clean | (env or {}), capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("downstream")
    bao = BaoServer(root / "bao").start()
    redis = RedisServer(root / "redis").start()
    pg = PostgresServer().start()
    proc: BrokerProcess | None = None
    try:
        token = setup_transit(bao)  # the broker's token: the shipped policy only
        setup_kv(bao)
        setup_database(bao, pg)
        policy = PolicyDir.create(root / "policy")
        proc = BrokerProcess(root / "broker", policy, redis.url, bao.addr, token)
        proc.port = free_port()
        proc.workdir.mkdir(parents=True, exist_ok=True)
        # a stale policy of a scope that no longer exists: sync removes it
        client(bao).sys.create_or_update_acl_policy(
            "capbroker-scope-gone", 'path "secret/data/x" {capabilities=["read"]}'
        )
        synced = broker_cli(
            "vault", "sync", "--config", str(proc.config_path()), env=bao.env() | {"VAULT_TOKEN": bao.root_token}
        )
        assert synced.returncode == 0, synced.stderr
        proc.start()
        yield Stack(proc, bao, pg, token, synced.stdout + synced.stderr, redis)
    finally:
        if proc is not None:
            proc.stop()
        pg.stop()
        redis.stop()
        bao.stop()


# ---------------------------------------------------------------------- helpers


def mint(stack: Stack, task: str, scopes: list[Any], **extra: Any) -> dict[str, Any]:
    status, _, body = stack.broker.mint(task, scopes, who="analyst", **extra)
    assert status == 201, body
    result: dict[str, Any] = body
    return result


def credential(body: dict[str, Any], kind: str) -> dict[str, Any]:
    (entry,) = [c for c in body["credentials"] if c["kind"] == kind]
    return dict(entry)


def read_secret(stack: Stack, token: str, path: str = SECRET_PATH) -> int:
    """The HTTP status of reading ``secret/data/<path>`` with ``token``."""
    vault = hvac.Client(url=stack.bao.addr, token=token, timeout=10)
    try:
        vault.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)
    except hvac.exceptions.Forbidden:
        return 403
    except hvac.exceptions.InvalidPath:
        return 404
    return 200


def can_login(stack: Stack, cred: dict[str, Any]) -> bool:
    try:
        with psycopg.connect(stack.pg.dsn(cred["username"], cred["password"])) as conn:
            return conn.execute("SELECT amount FROM sales").fetchone() == (42,)
    except psycopg.Error:  # no such user, or (mid-revocation) its grants already taken back
        return False


def role_exists(stack: Stack, username: str) -> bool:
    with psycopg.connect(stack.pg.admin_dsn) as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (username,)).fetchone() is not None


def accessor_alive(stack: Stack, accessor: str) -> bool:
    try:
        client(stack.bao).auth.token.lookup_accessor(accessor)
    except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden):
        return False
    return True


def eventually(seconds: float, condition: Callable[[], bool]) -> float:
    """Poll until ``condition``; the seconds it took (a generous bound, not an assertion of speed)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > seconds:
            pytest.fail(f"not within {seconds}s")
        time.sleep(0.05)
    return time.monotonic() - start


def task_token_of(stack: Stack, task: str) -> dict[str, Any]:
    """What Vault says of the task's token (found by its metadata, as root)."""
    admin = client(stack.bao)
    for accessor in admin.list("auth/token/accessors")["data"]["keys"]:
        try:
            data = admin.auth.token.lookup_accessor(accessor)["data"]
        except hvac.exceptions.VaultError:
            continue
        meta = data.get("meta") or {}
        if meta.get("task") == task and "scope" not in meta:
            return dict(data)
    pytest.fail(f"no task token for {task}")


# ---------------------------------------------------------------------- vault sync and the runtime token


def test_vault_sync_writes_scope_policies_the_role_and_removes_stale_ones(stack: Stack) -> None:
    admin = client(stack.bao)
    names = admin.sys.list_acl_policies()["data"]["keys"]
    assert {
        "capbroker-task",
        f"capbroker-scope-{KV}",
        f"capbroker-scope-{DB}",
        "capbroker-scope-deploy-config-read",
    } <= set(names)
    assert "capbroker-scope-gone" not in names
    kv_policy = admin.sys.read_acl_policy(f"capbroker-scope-{KV}")["data"]["policy"]
    assert 'path "secret/data/data-agent/weather-api"' in kv_policy
    assert '"read"' in kv_policy
    assert "list" not in kv_policy
    assert "*" not in kv_policy
    role = admin.read("auth/token/roles/capbroker-task")["data"]
    assert role["orphan"] is True
    assert role["allowed_policies_glob"] == ["capbroker-scope-*"]
    assert role["token_explicit_max_ttl"] > 0
    # the role exceeds no database role's TTL silently: the example role's 24h max_ttl is above the scope's 15m
    assert f"scope '{DB}'" in stack.sync_output
    assert "max_ttl" in stack.sync_output


def test_vault_sync_dry_run_prints_the_hcl_and_changes_nothing(stack: Stack) -> None:
    admin = client(stack.bao)
    admin.sys.delete_acl_policy(f"capbroker-scope-{KV}")
    try:
        out = broker_cli("vault", "sync", "--config", str(stack.broker.config_path()), "--dry-run")
        assert out.returncode == 0, out.stderr
        assert f"# --- policy capbroker-scope-{KV}" in out.stdout
        assert 'path "secret/metadata/deploy/staging/*"' in out.stdout  # the subtree scope lists
        assert f"capbroker-scope-{KV}" not in admin.sys.list_acl_policies()["data"]["keys"]
    finally:
        synced = broker_cli(
            "vault", "sync", "--config", str(stack.broker.config_path()), env={"VAULT_TOKEN": stack.bao.root_token}
        )
        assert synced.returncode == 0, synced.stderr


def test_vault_sync_refuses_without_an_admin_token(stack: Stack) -> None:
    out = broker_cli("vault", "sync", "--config", str(stack.broker.config_path()))
    assert out.returncode == 2
    assert "VAULT_TOKEN" in out.stderr


def test_the_runtime_token_cannot_write_a_policy_or_create_a_token_with_another_policy(stack: Stack) -> None:
    runtime = client(stack.bao, stack.runtime_token)
    with pytest.raises(hvac.exceptions.Forbidden):
        runtime.sys.create_or_update_acl_policy("capbroker-scope-evil", 'path "secret/*" {capabilities=["read"]}')
    with pytest.raises(hvac.exceptions.Forbidden):
        runtime.auth.token.create(policies=["capbroker-scope-weather-api-key"], ttl="1m")
    for other in (["default"], ["root"], ["capbroker"], ["capbroker-scope-weather-api-key", "default"]):
        with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)):
            runtime.auth.token.create(policies=other, role_name="capbroker-task", ttl="1m", no_default_policy=True)
    # what it may do: a scope policy through the role (and nothing more)
    made = runtime.auth.token.create(
        policies=["capbroker-scope-weather-api-key"], role_name="capbroker-task", ttl="1m", no_default_policy=True
    )
    assert made["auth"]["policies"] == ["capbroker-scope-weather-api-key"]
    assert made["auth"]["orphan"] is True


# ---------------------------------------------------------------------- vault-kv


def test_a_vault_kv_credential_reads_exactly_its_secret_for_its_uses(stack: Stack) -> None:
    body = mint(stack, "kv-1", [KV], ttl="2m")
    cred = credential(body, "vault-kv")
    assert set(cred) == {"kind", "resource", "scope", "expires_in", "token", "accessor"}
    assert (cred["resource"], cred["scope"], cred["expires_in"]) == ("secret/data/data-agent/weather-api", KV, 120)
    looked = client(stack.bao).auth.token.lookup_accessor(cred["accessor"])["data"]
    assert looked["policies"] == [f"capbroker-scope-{KV}"]  # exactly the scope's; no default policy
    assert looked["num_uses"] == 10  # the default uses
    assert 100 < looked["ttl"] <= 120
    assert read_secret(stack, cred["token"]) == 200
    assert read_secret(stack, cred["token"], "data-agent/other-api") == 403  # a sibling
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=stack.bao.addr, token=cred["token"]).secrets.kv.v2.list_secrets(
            path="data-agent", mount_point="secret"
        )
    # 3 uses spent (two reads and the list); the rest run out
    statuses = [read_secret(stack, cred["token"]) for _ in range(8)]
    assert statuses == [200] * 7 + [403]
    # the task token: orphan, named for task and agent, TTL = the capability's
    task_token = task_token_of(stack, "kv-1")
    assert task_token["orphan"] is True
    assert task_token["meta"] == {"task": "kv-1", "agent": "analyst"}
    assert "capbroker-task" in task_token["policies"]
    assert "default" not in task_token["policies"]
    assert 100 < task_token["ttl"] <= 120


def test_a_narrowed_downstream_scope_is_refused(stack: Stack) -> None:
    status, _, body = stack.broker.mint(
        "narrow-1", [{"scope": "deploy-config-read", "resource": "secret/data/deploy/staging/app"}], who="deployer"
    )
    assert (status, body["code"]) == (400, "invalid_request")
    status, _, body = stack.broker.mint(
        "narrow-2", [{"scope": "deploy-config-read", "actions": ["read"]}], who="deployer"
    )
    assert (status, body["code"]) == (400, "invalid_request")
    body = mint_as(stack, "deployer", "narrow-3", ["deploy-config-read"])
    cred = credential(body, "vault-kv")
    assert read_secret(stack, cred["token"], "deploy/staging/app") == 200


def mint_as(stack: Stack, who: str, task: str, scopes: list[Any]) -> dict[str, Any]:
    status, _, body = stack.broker.mint(task, scopes, who=who)
    assert status == 201, body
    result: dict[str, Any] = body
    return result


# ---------------------------------------------------------------------- database


def test_database_credentials_die_with_the_task(stack: Stack) -> None:
    body = mint(stack, "db-1", [KV, DB], ttl="5m")
    db, kv = credential(body, "database"), credential(body, "vault-kv")
    assert set(db) == {"kind", "resource", "scope", "expires_in", "username", "password", "lease_id"}
    assert db["lease_id"].startswith(f"database/creds/{DB_ROLE}/")
    assert db["expires_in"] == 300
    assert can_login(stack, db)
    assert role_exists(stack, db["username"])
    status, _, answer = stack.broker.post("/v1/tasks/db-1/revoke", {}, who="analyst")
    assert status == 200, answer
    assert answer["revoked"] is True
    took = eventually(10, lambda: not can_login(stack, db))
    print(f"database login refused {took:.3f}s after the task revocation answered")
    took = eventually(10, lambda: not role_exists(stack, db["username"]))
    print(f"database user gone {took:.3f}s after the task revocation answered")
    assert read_secret(stack, kv["token"]) == 403
    assert db["lease_id"].rsplit("/", 1)[1] not in leases(stack.bao)


def test_revoking_the_token_revokes_the_credentials_it_carried(stack: Stack) -> None:
    body = mint(stack, "db-2", [DB], ttl="5m")
    db = credential(body, "database")
    (entry,) = body["tokens"]
    assert can_login(stack, db)
    status, _, answer = stack.broker.post("/v1/revoke", {"token": entry["token"]}, who="analyst")
    assert status == 200, answer
    assert answer["revoked"] is True
    eventually(10, lambda: not can_login(stack, db))
    eventually(10, lambda: not role_exists(stack, db["username"]))


def test_database_credentials_die_at_the_capability_expiry(stack: Stack) -> None:
    """The role's leases last an hour; the capability 3 s: its child token's expiry revokes
    the lease (Vault's own expiration, no broker call)."""
    body = mint(stack, "db-3", [DB], ttl=3)
    db = credential(body, "database")
    assert db["expires_in"] == 3
    assert can_login(stack, db)
    took = eventually(30, lambda: not role_exists(stack, db["username"]))
    print(f"database user gone {took:.3f}s after the mint (capability ttl 3 s)")
    assert not can_login(stack, db)


def test_a_later_mint_of_the_task_reuses_and_extends_its_task_token(stack: Stack) -> None:
    first = mint(stack, "db-4", [DB], ttl="1m")
    task_token = task_token_of(stack, "db-4")
    second = mint(stack, "db-4", [DB], ttl="10m")
    again = task_token_of(stack, "db-4")
    assert again["accessor"] == task_token["accessor"]  # one task token per task
    assert again["ttl"] > 500  # renewed to the longer capability
    status, _, _ = stack.broker.post("/v1/tasks/db-4/revoke", {}, who="analyst")
    assert status == 200
    eventually(10, lambda: not can_login(stack, credential(first, "database")))
    eventually(10, lambda: not can_login(stack, credential(second, "database")))
    assert not accessor_alive(stack, task_token["accessor"])


def test_an_admin_revoking_the_task_id_for_every_agent_revokes_its_task_token(stack: Stack) -> None:
    body = mint(stack, "admin-1", [KV, DB])
    status, _, answer = stack.broker.post("/v1/tasks/admin-1/revoke", {}, who="admin")
    assert status == 200, answer
    assert answer["agent"] == "*"
    eventually(10, lambda: not can_login(stack, credential(body, "database")))
    assert read_secret(stack, credential(body, "vault-kv")["token"]) == 403


def test_the_kill_switch_revokes_every_task_token_of_the_agent(stack: Stack) -> None:
    one, two = mint(stack, "ks-1", [DB]), mint(stack, "ks-2", [KV])
    status, _, _ = stack.broker.post("/v1/agents/analyst/revoke", who="admin")
    assert status == 200
    try:
        eventually(10, lambda: not can_login(stack, credential(one, "database")))
        assert read_secret(stack, credential(two, "vault-kv")["token"]) == 403
    finally:
        status, _, _ = stack.broker.post("/v1/agents/analyst/reinstate", who="admin")
        assert status == 200
        time.sleep(2.1)  # the kill switch's cut-off reaches clock_skew (1 s) ahead


def test_no_secret_in_the_log_or_the_audit_event(stack: Stack) -> None:
    body = mint(stack, "audit-1", [KV, DB])
    db, kv = credential(body, "database"), credential(body, "vault-kv")
    # the broker flushes its audit echo on the next turn of its event loop, after the answer
    # went out: the mint's line may reach the log file a moment after the answer
    eventually(
        10,
        lambda: any(
            '"audit-1"' in line and '"type":"mint"' in line for line in stack.broker.log_path.read_text().splitlines()
        ),
    )
    log = stack.broker.log_path.read_text()
    assert db["password"] not in log
    assert kv["token"] not in log
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{") and '"audit-1"' in line]
    (minted,) = [e for e in events if e.get("type") == "mint"]
    carried = json.dumps(minted["downstream"])
    assert kv["accessor"] in carried
    assert db["lease_id"] in carried


def test_every_downstream_record_expires_and_holds_no_token(stack: Stack) -> None:
    body = mint(stack, "records-1", [KV, DB])
    client_redis = redis.Redis.from_url(stack.redis.url)
    try:
        names = [k.decode() for k in client_redis.scan_iter(match="*vault-*")]
        assert {n.split("vault-")[1].split(":")[0] for n in names} == {"task", "agent", "carried"}
        for name in names:
            assert client_redis.ttl(name) > 0, name  # nothing grows unread
            value = str(client_redis.dump(name))  # any type, serialised
            assert credential(body, "vault-kv")["token"] not in value
        (task,) = [n for n in names if n.endswith("vault-task:analyst/records-1")]
        record = json.loads(client_redis.get(task))
        assert record["sealed"].startswith("vault:v1:")  # Transit ciphertext, not a token
        assert task_token_of(stack, "records-1")["accessor"] == record["accessor"]
    finally:
        client_redis.close()


# ---------------------------------------------------------------------- failure: 503 and nothing half-issued


def test_vault_refusing_mid_mint_is_503_with_no_token_and_no_lease_left(stack: Stack) -> None:
    """The task token and the child are made, then Vault refuses the credentials (the
    role's SQL fails): 503, no token, the child revoked, no lease of the role left."""
    before = set(leases(stack.bao))
    write_db_role(stack.bao, ["CREATE ROLE this is not sql;"])
    try:
        status, _, body = stack.broker.mint("fail-1", [KV, DB], who="analyst")
        assert (status, body["code"]) == (503, "backend_unavailable"), body
        assert "tokens" not in body
        assert "credentials" not in body
    finally:
        write_db_role(stack.bao, CREATION)
    assert set(leases(stack.bao)) <= before
    admin = client(stack.bao)
    children = []
    for accessor in admin.list("auth/token/accessors")["data"]["keys"]:
        try:
            meta = admin.auth.token.lookup_accessor(accessor)["data"].get("meta") or {}
        except hvac.exceptions.VaultError:
            continue
        if meta.get("task") == "fail-1" and "scope" in meta:
            children.append(accessor)
    assert children == []  # the vault-kv child made before the failure was revoked


def test_vault_paused_mid_mint_is_a_fast_503_and_no_token(stack: Stack) -> None:
    before = set(leases(stack.bao))
    mint(stack, "pause-1", [KV])  # the task token exists; the next mint needs Vault for the child
    stack.bao.pause()
    try:
        start = time.monotonic()
        status, _, body = stack.broker.post(
            "/v1/tokens", {"task": "pause-1", "scopes": [DB]}, who="analyst", timeout=30
        )
        took = time.monotonic() - start
        print(f"mint with Vault paused answered {status} in {took:.3f}s")
        assert (status, body["code"]) == (503, "backend_unavailable"), body
    finally:
        stack.bao.resume()
    time.sleep(1)
    assert set(leases(stack.bao)) <= before


def test_a_containment_by_a_gateway_revokes_the_task_token(stack: Stack) -> None:
    """A gateway containing the task (``POST /v1/tasks/{task}/contain`` with one of the
    task's tokens of its audience) kills the task's Vault credentials too."""
    body = mint(stack, "contain-1", ["exports-read", DB])
    (evidence,) = [t["token"] for t in body["tokens"] if t["audience"] == "storage-gateway"]
    db = credential(body, "database")
    assert can_login(stack, db)
    report = {"token": evidence, "kind": "bucket", "resource": "s3://acme-exports/other/x", "action": "read"}
    status, _, answer = stack.broker.post("/v1/tasks/contain-1/contain", report, who="storage-gateway")
    assert (status, answer) == (200, {"task": "contain-1", "revoked": True})
    eventually(10, lambda: not can_login(stack, db))
    eventually(10, lambda: not role_exists(stack, db["username"]))
