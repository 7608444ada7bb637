"""Issue 12, 8: rotating and retiring a Transit version within one second, under load.

A real `broker serve` in transit mode (every token signed by OpenBao Transit), minting and
introspecting from several threads while an operator rotates the key and, within a second,
retires the old version (`min_decryption_version`). Before: seconds of 503s (the worker
kept signing with the version it had cached) and an introspection calling a retired
version's token active while the JWKS already listed only the new one. Now: every mint
succeeds, every token minted after the retirement is signed by the new version, and an
introspection that follows a JWKS without the old version never calls its token active.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.processes import BaoServer, RedisServer
from tests.servers.vault_setup import admin_client, setup_transit

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

KEY = "rotation-load"
MINTERS = 3
SETTLE = 1.0  # transit.KEYSET_MAX_AGE: how old the versions introspection trusts may be


@pytest.fixture
def broker(bao_server: BaoServer, own_redis: RedisServer, tmp_path: Path) -> Iterator[BrokerProcess]:
    token = setup_transit(bao_server, key=KEY)
    proc = BrokerProcess(
        tmp_path / "broker",
        PolicyDir.create(tmp_path / "policy", hammer_rate="1000000/s"),
        own_redis.url,
        bao_server.addr,
        token,
        transit_key=KEY,
        extra_env={"BROKER_SIGNING": "transit", "BROKER_KEY_REFRESH": "1h"},  # only a refusal re-reads
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def kid_of(token: str) -> str:
    header = token.split(".", maxsplit=1)[0]
    kid: str = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    return kid


def test_rotate_and_retire_within_a_second_under_load(broker: BrokerProcess, bao_server: BaoServer) -> None:
    status, _, body = broker.mint("rotation-old", ["widgets-read"], who="hammer")
    assert status == 201, body
    old_token = body["tokens"][0]["token"]
    assert kid_of(old_token) == f"{KEY}-v1"
    stop = threading.Event()
    mints: list[tuple[float, int, str]] = []  # (monotonic time the answer came, status, kid or code)
    checks: list[tuple[bool, bool]] = []  # (JWKS listed v1, introspection said active), in that order
    errors: list[BaseException] = []

    def mint_loop(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            status, _, body = broker.mint(f"rotation-{n}-{i}", ["widgets-read"], who="hammer")
            what = kid_of(body["tokens"][0]["token"]) if status == 201 else str(body.get("code"))
            mints.append((time.monotonic(), status, what))

    def introspect_loop() -> None:
        while not stop.is_set():
            status, _, jwks = broker.get("/.well-known/jwks.json")
            assert status == 200, jwks
            listed = f"{KEY}-v1" in {k["kid"] for k in jwks["keys"]}
            status, _, body = broker.post("/v1/introspect", {"token": old_token}, who="git-gateway")
            assert status == 200, body
            checks.append((listed, bool(body["active"])))

    def guarded(target: Any, *args: Any) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            except BaseException as e:  # noqa: BLE001 -- reported by the test below
                errors.append(e)

        return threading.Thread(target=run, daemon=True)

    threads = [guarded(mint_loop, n) for n in range(MINTERS)] + [guarded(introspect_loop)]
    for t in threads:
        t.start()
    admin = admin_client(bao_server)
    try:
        time.sleep(1.0)  # load before
        admin.secrets.transit.rotate_key(name=KEY)
        time.sleep(0.5)  # retired within a second of the rotation
        admin.secrets.transit.update_key_configuration(name=KEY, min_decryption_version=2)
        retired_at = time.monotonic()
        time.sleep(2.0)  # load after
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []
    assert len(mints) > 20  # there was load
    assert [m for m in mints if m[1] != 201] == []  # not one 503, before, during or after
    after = [kid for at, _, kid in mints if at > retired_at + 0.2]  # answered well after the retirement
    assert after
    assert set(after) == {f"{KEY}-v2"}
    assert any(listed for listed, _ in checks)  # v1 was listed, and its token active, before
    assert not [active for listed, active in checks if not listed and active]  # never after the JWKS dropped it
    status, _, body = broker.post("/v1/introspect", {"token": old_token}, who="git-gateway")
    assert (status, body) == (200, {"active": False})
