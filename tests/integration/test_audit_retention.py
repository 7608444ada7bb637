"""Audit retention on real Redis (SPEC 5, issue 11): a bounded tail in Redis, older events
in archive segments written by the one archiver holding the lease, one chain across both
for ``broker audit verify`` and ``broker audit export``, and a Redis at ``maxmemory``
that still revokes because the archiver keeps the stream trimmed."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from litestar.testing import AsyncTestClient

from broker.audit.segments import segment_name
from broker.backends.audit_archive import ArchiveDir
from broker.backends.audit_archiver import AuditArchiver
from broker.backends.audit_history import RedisTail, audit_history
from broker.backends.local_signer import LocalSigningBackend
from broker.backends.redis_state import RedisState
from broker.cli import main
from broker.http.app import create_app
from broker.policy.loader import load_policy
from broker.service.audit_recorder import AuditRecorder
from broker.service.broker import Broker
from broker.service.credentials import secret_sha256
from broker.verify.redis_keys import audit_archiver_lease
from tests.servers.broker_process import PolicyDir
from tests.servers.processes import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

ISSUER = "http://127.0.0.1:8700"


def stream_name() -> str:
    return f"test-retention-{secrets.token_hex(4)}:audit"


def _now() -> str:
    """As the recorder stamps events: a fresh event awaits its checkpoint, it is not UNANCHORED."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def append(url: str, stream: str, n: int) -> None:
    state = RedisState.from_url(url, stream=stream, timeout=5.0)
    try:
        for start in range(0, n, 500):
            await asyncio.gather(
                *(
                    state.append_audit({"ts": _now(), "type": "admin", "n": i})
                    for i in range(start, min(n, start + 500))
                )
            )
    finally:
        await state.aclose()


def archiver(url: str, archive: Path, stream: str, **options: Any) -> AuditArchiver:
    settings = {"tail_events": 20, "segment_events": 50, "interval": 0.05, "timeout": 5.0} | options
    return AuditArchiver.connect(url, ArchiveDir(archive), stream=stream, **settings)


def whole_chain(url: str, archive: Path, stream: str) -> list[Any]:
    tail = RedisTail.connect(url, stream)
    try:
        return list(audit_history(ArchiveDir(archive), tail))
    finally:
        tail.close()


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=5)
    try:
        yield c
    finally:
        c.close()


def test_two_archivers_only_the_lease_holder_writes_and_the_other_takes_over_where_it_stopped(
    redis_server: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    stream = stream_name()

    async def scenario() -> None:
        await append(redis_server.url, stream, 300)
        a = archiver(redis_server.url, tmp_path, stream)
        b = archiver(redis_server.url, tmp_path, stream)
        try:
            assert await a.step() is False  # a holds the lease and archived all it may (nothing left to do)
            written = sorted(p.name for p in tmp_path.iterdir())
            assert len(written) == 5  # 300 events, tail 20: five segments of 50, 50 left in Redis
            assert client.xlen(stream) == 50
            await append(redis_server.url, stream, 100)
            assert await b.step() is False  # b does not hold the lease: no write, no trim
            assert sorted(p.name for p in tmp_path.iterdir()) == written
            assert client.xlen(stream) == 150
            await a.aclose()  # releases the lease: b takes over after a's last segment
            assert await b.step() is False
            assert sorted(p.name for p in tmp_path.iterdir()) == [segment_name(i) for i in range(7)]
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(scenario())

    events = whole_chain(redis_server.url, tmp_path, stream)
    assert [e.event["n"] for e in events] == [*range(300), *range(100)]
    assert client.xlen(stream) == 50  # 400 - 7 * 50


def test_an_archiver_that_lost_its_lease_writes_and_trims_nothing(
    redis_server: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    stream = stream_name()

    async def scenario() -> None:
        await append(redis_server.url, stream, 200)
        a = archiver(redis_server.url, tmp_path, stream, segment_events=50, tail_events=100)
        try:
            assert await a.step() is False  # 200 = tail 100 + two segments of 50: both written
            assert len(list(tmp_path.iterdir())) == 2
            await append(redis_server.url, stream, 100)
            client.set(audit_archiver_lease(stream), "someone-else", px=10_000)  # a's lease expired, taken

            assert await a.step() is False

            assert len(list(tmp_path.iterdir())) == 2
            assert client.xlen(stream) == 200
        finally:
            await a.aclose()
        assert client.get(audit_archiver_lease(stream)) == "someone-else"  # not released by a

    asyncio.run(scenario())


def test_an_archiver_whose_lease_lapsed_resumes_from_the_archive_as_the_next_holder_left_it(
    redis_server: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    stream = stream_name()

    async def scenario() -> None:
        a = archiver(redis_server.url, tmp_path, stream, segment_events=50, tail_events=0)
        b = archiver(redis_server.url, tmp_path, stream, segment_events=50, tail_events=0)
        try:
            await append(redis_server.url, stream, 100)
            assert await a.step() is False  # segments 0 and 1
            client.delete(audit_archiver_lease(stream))  # a stalled past its lease
            await append(redis_server.url, stream, 50)
            assert await b.step() is False  # b took over: segment 2
            await b.aclose()
            await append(redis_server.url, stream, 50)

            assert await a.step() is False  # a holds the lease anew: it must not carry on from segment 1
            assert await a.step() is False

            assert sorted(p.name for p in tmp_path.iterdir()) == [segment_name(i) for i in range(4)]
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(scenario())
    assert [e.event["n"] for e in whole_chain(redis_server.url, tmp_path, stream)] == [
        *range(100),
        *range(50),
        *range(50),
    ]


def settings_file(tmp_path: Path, url: str, stream: str, archive: Path) -> Path:
    path = tmp_path / "broker.yaml"
    path.write_text(
        f"issuer: {ISSUER}\nscopes: scopes\nadmin_key_sha256: [{'a' * 64}]\nsigner: local\n"
        f"state: redis\nredis_url: {url}\naudit_stream: {stream}\naudit_archive_dir: {archive}\n"
    )
    return path


def test_verify_and_export_walk_the_archive_then_the_tail_as_one_chain(
    redis_server: RedisServer, client: redis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stream, archive = stream_name(), tmp_path / "archive"
    archive.mkdir()

    async def fill() -> None:
        a = archiver(redis_server.url, archive, stream, tail_events=100, segment_events=200)
        try:
            for _ in range(3):
                await append(redis_server.url, stream, 1000)
                while await a.step():
                    pass
        finally:
            await a.aclose()

    asyncio.run(fill())
    assert len(list(archive.iterdir())) == 14  # 3,000 events: 14 segments of 200, 200 in Redis
    assert client.xlen(stream) == 200
    config = str(settings_file(tmp_path, redis_server.url, stream, archive))

    assert main(["audit", "verify", "--config", config]) == 0
    assert "audit chain OK: 3000 event(s)" in capsys.readouterr().out

    ids = [e.id for e in whole_chain(redis_server.url, archive, stream)]
    pivot = next(i for i in ids if int(i.split("-")[0]) > int(ids[1500].split("-")[0]))  # a later millisecond
    since = datetime.fromtimestamp(int(pivot.split("-")[0]) / 1000, UTC).isoformat().replace("+00:00", "Z")
    assert main(["audit", "export", "--config", config, "--since", since]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["audit_id"] for line in lines] == ids[ids.index(pivot) :]
    assert all({"hash", "prev", "type", "audit_id"} <= set(line) for line in lines)

    # an event edited inside an archived segment: verify names it
    segment = archive / segment_name(3)
    data = segment.read_bytes().splitlines(keepends=True)
    data[7] = data[7].replace(b'"n":', b'"n":9', 1)
    segment.write_bytes(b"".join(data))
    edited = json.loads(data[7])["id"]

    assert main(["audit", "verify", "--config", config]) == 1
    assert f"BROKEN at event #{3 * 200 + 6} (id {edited})" in capsys.readouterr().out


# ------------------------------------------------------------ Redis at maxmemory (issue 11, 2.)

MAXMEMORY = 8 * 1024 * 1024
FLOOD = 20_000  # mints; their audit events alone take about twice MAXMEMORY


def broker_on(url: str, stream: str, policy: PolicyDir) -> Broker:
    state = RedisState.from_url(url, stream=stream, timeout=2.0)
    return Broker(
        issuer=ISSUER,
        policy_dir=policy.path,
        policy=load_policy(policy.path),
        signer=LocalSigningBackend.generate(),
        state=state,
        audit=AuditRecorder(state, out=io.StringIO()),  # about 15 MB of echoed lines: fine
        admin_key_hashes=(secret_sha256(policy.keys["admin"]),),
    )


def test_a_mint_flood_does_not_fill_redis_and_revocation_keeps_working_at_maxmemory(tmp_path: Path) -> None:
    """Issue 11, 2: with ``noeviction`` the stream filled Redis to ``maxmemory`` in seconds
    and every revocation answered 503. With the archiver trimming to a bounded tail, a flood
    of mints (their audit events alone are several times ``maxmemory``) all succeed, and a
    task and a token revocation afterwards succeed and are honoured."""
    server = RedisServer(tmp_path / "redis").start()
    c = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=5)
    try:
        c.config_set("maxmemory", MAXMEMORY)
        c.config_set("maxmemory-policy", "noeviction")
        stream = "capbroker:audit"
        policy = PolicyDir.create(tmp_path / "policy", hammer_rate="9999999/s")
        archive = tmp_path / "archive"
        archive.mkdir()
        statuses = asyncio.run(flood_then_revoke(server.url, stream, policy, archive))
        used = int(c.info("memory")["used_memory"])
        length = c.xlen(stream)
    finally:
        c.close()
        server.stop()

    mints, revoke_task, minted_after, revoke_token, introspected = statuses
    assert mints == {201: FLOOD}
    assert revoke_task == 200
    assert minted_after == 403  # the revoked task takes no new token
    assert revoke_token == 200
    assert introspected is False
    assert used < MAXMEMORY
    assert length <= 1000 + 1000 + 2 * 256  # tail + one segment + what arrives during a pass
    assert len(list(archive.iterdir())) >= (FLOOD - 2000) // 1000


async def flood_then_revoke(url: str, stream: str, policy: PolicyDir, archive: Path) -> tuple[Any, ...]:
    broker = broker_on(url, stream, policy)
    archiver_ = AuditArchiver.connect(
        url, ArchiveDir(archive), stream=stream, tail_events=1000, segment_events=1000, interval=0.05, timeout=2.0
    )
    app = create_app(broker, background=(archiver_.run,))
    hammer = {"Authorization": f"Bearer {policy.keys['hammer']}"}
    admin = {"Authorization": f"Bearer {policy.keys['admin']}"}
    async with AsyncTestClient(app) as http:
        service = {"Authorization": f"Bearer {policy.keys['git-gateway']}"}
        before = await http.post("/v1/tokens", json={"task": "kept", "scopes": ["widgets-read"]}, headers=hammer)
        token = before.json()["tokens"][0]["token"]
        assert (await http.post("/v1/introspect", json={"token": token}, headers=service)).json()["active"] is True
        counts: dict[int, int] = {}
        deadline = time.monotonic() + 240
        for start in range(0, FLOOD, 200):
            assert time.monotonic() < deadline, "the flood took too long"
            replies = await asyncio.gather(
                *(
                    http.post("/v1/tokens", json={"task": "flood", "scopes": ["widgets-read"]}, headers=hammer)
                    for _ in range(start, min(FLOOD, start + 200))
                )
            )
            for reply in replies:
                counts[reply.status_code] = counts.get(reply.status_code, 0) + 1
        task = await http.post("/v1/tasks/flood/revoke", headers=admin)
        after = await http.post("/v1/tokens", json={"task": "flood", "scopes": ["widgets-read"]}, headers=hammer)
        one = await http.post("/v1/revoke", json={"token": token}, headers=admin)
        seen = await http.post("/v1/introspect", json={"token": token}, headers=service)
        return counts, task.status_code, after.status_code, one.status_code, seen.json().get("active")
