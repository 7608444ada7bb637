"""Identity method ``vault`` against a real OpenBao: agents log in with AppRole, the broker
looks their tokens up with its own least-privilege token (``setup_transit``, never root)
and matches them against a policy identity. Vault sealed, down, paused, or refusing the
broker's token fails closed and fast; it is never "no such agent"."""

from __future__ import annotations

import asyncio
import itertools
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac
import pytest

from broker.backends.vault_clients import TIMEOUT_MARGIN
from broker.backends.vault_lookup import VaultTokenLookup
from broker.errors import BackendUnavailable
from broker.identity.vault_identity import (
    VaultTokenInfo,
    has_namespace_suffix,
    looks_like_vault_token,
    match_vault_identity,
    token_info_from_lookup,
)
from broker.policy.model import VaultIdentity
from tests.servers.processes import BaoServer
from tests.servers.vault_setup import admin_client, approle_login, setup_approle, setup_transit

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

TIMEOUT = 1.0
FAST = 1.5  # seconds: a sealed or stopped Vault answers (or refuses) at once
BOUND = TIMEOUT + TIMEOUT_MARGIN + 0.5  # a Vault that never answers: the deadline, with room for a slow CI

_names = itertools.count()


def name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


@pytest.fixture(scope="module")
def broker_token(bao_server: BaoServer) -> str:
    """The broker's own token: only the shipped capbroker policy."""
    return setup_transit(bao_server, key="vault-identity")


def lookup(bao: BaoServer, token: str, presented: str) -> VaultTokenInfo | None:
    async def run() -> VaultTokenInfo | None:
        looker = VaultTokenLookup(bao.addr, token, timeout=TIMEOUT)
        try:
            return await looker.lookup(presented)
        finally:
            await looker.aclose()

    return asyncio.run(run())


def found(bao: BaoServer, token: str, presented: str) -> VaultTokenInfo:
    info = lookup(bao, token, presented)
    assert info is not None
    return info


def agent(bao: BaoServer, role: str, **kw: Any) -> str:
    """A Vault token of a fresh login on AppRole role ``role``."""
    return approle_login(bao, *setup_approle(bao, role=role, **kw))


def uses_left(bao: BaoServer, token: str) -> int:
    return int(admin_client(bao).auth.token.lookup(token)["data"]["num_uses"])


# ---------------------------------------------------------------------- what a lookup says


def test_an_approle_login_token_looks_up_and_matches_its_role(bao_server: BaoServer, broker_token: str) -> None:
    role = name("reports")
    token = agent(bao_server, role, metadata={"team": "blue"})
    assert token.startswith("s.")
    assert looks_like_vault_token(token)
    assert not has_namespace_suffix(token)

    info = found(bao_server, broker_token, token)
    assert info.path == "auth/approle/login"
    assert info.meta == (("role_name", role), ("team", "blue"))
    assert len(info.entity_id) == 36  # a UUID from the identity store
    assert info.accessor
    assert info.policies == ("default",)
    assert info.namespace_path == ""
    assert info.token_type == "service"
    assert 3500 < info.ttl <= 3600
    assert info.num_uses == 0
    assert token not in repr(info)
    assert broker_token not in repr(info)

    assert match_vault_identity(info, VaultIdentity(role=role)) is None
    assert match_vault_identity(info, VaultIdentity(role=role, metadata=(("team", "blue"),))) is None
    assert match_vault_identity(info, VaultIdentity(role=name("reports"))) is not None


def test_a_token_of_another_role_does_not_match(bao_server: BaoServer, broker_token: str) -> None:
    mine, theirs = name("mine"), name("theirs")
    agent(bao_server, mine)
    info = found(bao_server, broker_token, agent(bao_server, theirs))
    assert match_vault_identity(info, VaultIdentity(role=theirs)) is None
    assert match_vault_identity(info, VaultIdentity(role=mine)) == (
        f"role: the token's AppRole role is {theirs!r}, not {mine!r}"
    )


def test_a_batch_token_is_refused_since_vault_cannot_revoke_it(bao_server: BaoServer, broker_token: str) -> None:
    """Issue 12 reproduction 5: a batch token from an AppRole login minted, could not be
    revoked in Vault, and kept minting. Shown here: Vault really refuses to revoke it."""
    role = name("batch")
    token = agent(bao_server, role, token_type="batch")
    assert token.startswith("b.")
    assert looks_like_vault_token(token)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        admin_client(bao_server).auth.token.revoke(token)  # "batch tokens cannot be revoked"
    info = found(bao_server, broker_token, token)  # still valid after the revocation attempt
    assert (info.token_type, info.accessor, info.path) == ("batch", "", "auth/approle/login")
    assert match_vault_identity(info, VaultIdentity(role=role)) == (
        "the token is a batch token: Vault cannot revoke it; log in for a service token"
    )


def test_a_token_with_a_use_limit_is_refused_since_minting_spends_none(
    bao_server: BaoServer, broker_token: str
) -> None:
    """Issue 12 reproduction 5: a token with num_uses=1 minted three times."""
    role = name("once")
    token = agent(bao_server, role, token_num_uses=1)
    for _ in range(3):
        info = found(bao_server, broker_token, token)
        assert info.num_uses == 1  # a lookup spends none
        assert match_vault_identity(info, VaultIdentity(role=role)) == (
            "the token has a use limit, which a lookup does not spend: log in without token_num_uses"
        )


def test_the_same_role_logs_in_as_the_same_entity(bao_server: BaoServer, broker_token: str) -> None:
    role, other = name("entity"), name("entity-other")
    role_id, secret_id = setup_approle(bao_server, role=role)
    first = found(bao_server, broker_token, approle_login(bao_server, role_id, secret_id))
    second = found(bao_server, broker_token, agent(bao_server, role))  # a new secret-id, same role_id
    stranger = found(bao_server, broker_token, agent(bao_server, other))
    assert first.entity_id == second.entity_id != stranger.entity_id
    assert match_vault_identity(second, VaultIdentity(entity=first.entity_id)) is None
    assert match_vault_identity(stranger, VaultIdentity(entity=first.entity_id)) == (
        "entity: the token belongs to another entity"
    )


def test_metadata_from_the_secret_id_matches(bao_server: BaoServer, broker_token: str) -> None:
    role = name("meta")
    info = found(bao_server, broker_token, agent(bao_server, role, metadata={"team": "blue", "env": "prod"}))
    assert match_vault_identity(info, VaultIdentity(metadata=(("team", "blue"), ("env", "prod")))) is None
    assert match_vault_identity(info, VaultIdentity(metadata=(("role_name", role),))) is None
    assert match_vault_identity(info, VaultIdentity(metadata=(("team", "red"),))) is not None
    assert match_vault_identity(info, VaultIdentity(metadata=(("owner", "me"),))) is not None


def test_secret_id_metadata_cannot_rename_the_role(bao_server: BaoServer, broker_token: str) -> None:
    """Whoever may generate secret-ids sets metadata, but AppRole writes role_name last."""
    role = name("honest")
    info = found(bao_server, broker_token, agent(bao_server, role, metadata={"role_name": "admin-agent"}))
    assert info.meta_value("role_name") == role
    assert match_vault_identity(info, VaultIdentity(role="admin-agent")) is not None
    assert match_vault_identity(info, VaultIdentity(role=role)) is None


# ---------------------------------------------------------------------- forgery


def test_a_token_store_token_with_a_hand_made_role_name_is_no_role(bao_server: BaoServer, broker_token: str) -> None:
    """``auth/token/create`` accepts any ``meta``: it proves neither a role nor metadata."""
    role = name("victim")
    agent(bao_server, role, metadata={"team": "blue"})
    created = admin_client(bao_server).auth.token.create(
        policies=["default"], meta={"role_name": role, "team": "blue"}, ttl="10m"
    )
    info = found(bao_server, broker_token, created["auth"]["client_token"])
    assert info.meta_value("role_name") == role  # the forgery is really there
    assert info.path == "auth/token/create"
    assert match_vault_identity(info, VaultIdentity(role=role)) == (
        "role: the token is not from an AppRole login on auth/approle"
    )
    assert match_vault_identity(info, VaultIdentity(metadata=(("role_name", role),))) is not None
    assert match_vault_identity(info, VaultIdentity(metadata=(("team", "blue"),))) is not None


def test_a_child_token_of_an_agent_keeps_its_entity_but_not_its_role(bao_server: BaoServer, broker_token: str) -> None:
    role, victim = name("parent"), name("victim")
    admin = admin_client(bao_server)
    admin.sys.create_or_update_policy("create-children", 'path "auth/token/create" { capabilities = ["update"] }')
    parent = agent(bao_server, role, token_policies=["default", "create-children"])
    child = hvac.Client(url=bao_server.addr, token=parent, timeout=10).auth.token.create(
        policies=["default"], meta={"role_name": victim, "team": "blue"}, ttl="10m"
    )["auth"]["client_token"]
    parent_info = found(bao_server, broker_token, parent)
    info = found(bao_server, broker_token, child)
    assert info.entity_id == parent_info.entity_id
    assert match_vault_identity(info, VaultIdentity(entity=parent_info.entity_id)) is None
    assert match_vault_identity(info, VaultIdentity(role=victim)) is not None
    assert match_vault_identity(info, VaultIdentity(role=role)) is not None
    assert match_vault_identity(info, VaultIdentity(metadata=(("team", "blue"),))) is not None


def test_a_token_of_a_child_namespace_is_refused(bao_server: BaoServer, broker_token: str) -> None:
    """With the broker's token it is refused before any call (asking would be "permission
    denied", a 503 anyone could cause); what a wider (root) token reads of it matches nothing."""
    namespace, role = name("tenant"), name("tenant-role")
    admin_client(bao_server).sys.create_namespace(namespace)
    tenant = hvac.Client(url=bao_server.addr, token=bao_server.root_token, namespace=namespace, timeout=10)
    tenant.sys.enable_auth_method("approle")
    tenant.auth.approle.create_or_update_approle(role, token_policies=["default"])
    role_id = tenant.auth.approle.read_role_id(role)["data"]["role_id"]
    secret_id = tenant.auth.approle.generate_secret_id(role)["data"]["secret_id"]
    token = tenant.auth.approle.login(role_id, secret_id, use_token=False)["auth"]["client_token"]
    assert looks_like_vault_token(token)
    assert has_namespace_suffix(token)

    assert lookup(bao_server, broker_token, token) is None
    info = token_info_from_lookup(admin_client(bao_server).auth.token.lookup(token), token)  # as root
    assert info.namespace_path == f"{namespace}/"
    assert info.path == "auth/approle/login"
    assert info.meta_value("role_name") == role
    assert match_vault_identity(info, VaultIdentity(role=role)) == "the token belongs to another namespace"


# ---------------------------------------------------------------------- tokens that are no more


def test_a_revoked_token_is_unknown(bao_server: BaoServer, broker_token: str) -> None:
    token = agent(bao_server, name("revoked"))
    assert lookup(bao_server, broker_token, token) is not None
    admin_client(bao_server).auth.token.revoke(token)
    assert lookup(bao_server, broker_token, token) is None


def test_an_expired_token_is_unknown(bao_server: BaoServer, broker_token: str) -> None:
    token = agent(bao_server, name("brief"), token_ttl="2s")
    assert found(bao_server, broker_token, token).ttl <= 2
    deadline = time.monotonic() + 6
    while lookup(bao_server, broker_token, token) is not None:
        assert time.monotonic() < deadline, "the token never expired"
        time.sleep(0.25)


def test_a_used_up_token_is_unknown(bao_server: BaoServer, broker_token: str) -> None:
    token = agent(bao_server, name("once"), token_num_uses=1)
    assert found(bao_server, broker_token, token).num_uses == 1
    hvac.Client(url=bao_server.addr, token=token, timeout=10).auth.token.lookup_self()
    assert lookup(bao_server, broker_token, token) is None


def test_a_lookup_uses_none_of_a_limited_use_token(bao_server: BaoServer, broker_token: str) -> None:
    token = agent(bao_server, name("limited"), token_num_uses=3)
    for _ in range(3):
        assert found(bao_server, broker_token, token).num_uses == 3
    assert uses_left(bao_server, token) == 3
    hvac.Client(url=bao_server.addr, token=token, timeout=10).auth.token.lookup_self()  # one real use
    assert found(bao_server, broker_token, token).num_uses == 2


@pytest.mark.parametrize(
    "presented",
    [
        "s.AAAAAAAAAAAAAAAAAAAAAAAA",  # well formed, never issued: Vault says "bad token"
        "b.AAAAAQK-mKRYFWNW_cqurLAPGRn8hIeoYKPoCkj6VH6p16rnJUo63cPE6Ab26BVpLba93h2z2eIN",
        "hvs.CAESIJ5kZ2xqVnJ3d2hqN2JmM2tweXZ2a3FzMzBhdXQ2eGdsaTYaHgocaHZzLk9hVGJvRk1zQk9Cc0Z1cjhvVlJXM0xBUw",
        pytest.param("s." + "A" * 8000, id="s.AAAA...(8002 characters)"),
        "s.AAAAAAAAAAAAAAAAAAAAAAAA.ZZZZZ",  # a namespace suffix: refused before any call
        "garbage",
        "",
        " ",
        "cbk_" + "A" * 43,
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJl",
    ],
)
def test_an_unknown_or_malformed_token_is_unknown(bao_server: BaoServer, broker_token: str, presented: str) -> None:
    assert lookup(bao_server, broker_token, presented) is None


def test_the_root_token_and_the_brokers_own_token_are_no_agents(bao_server: BaoServer, broker_token: str) -> None:
    """An empty lookup would answer for the broker's own token; neither ever reaches Vault."""
    assert lookup(bao_server, broker_token, broker_token) is None
    assert lookup(bao_server, broker_token, bao_server.root_token) is None


def test_the_brokers_token_may_look_up_tokens_and_nothing_more(bao_server: BaoServer, broker_token: str) -> None:
    paths = [
        "auth/token/lookup",
        "auth/token/lookup-self",
        "auth/token/lookup-accessor",
        "auth/token/create",
        "auth/token/revoke",
        "auth/approle/role/x",
        "auth/approle/role/x/secret-id",
        "auth/approle/login",
        "sys/auth",
    ]
    capabilities = admin_client(bao_server).sys.get_capabilities(paths, token=broker_token)
    # lookup-self: its own token's TTL, for renewal (issue 13); renew-self is checked there
    allowed = {"auth/token/lookup": ["update"], "auth/token/lookup-self": ["read"]}
    assert {p: capabilities[p] for p in paths} == {p: allowed.get(p, ["deny"]) for p in paths}


# ---------------------------------------------------------------------- Vault failing


async def fails_fast(looker: VaultTokenLookup, presented: str, bound: float, reason: str) -> None:
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as e:
        await looker.lookup(presented)
    elapsed = time.monotonic() - started
    assert elapsed < bound, f"took {elapsed:.2f}s"
    assert str(e.value) == f"vault: {reason}"
    assert presented not in repr(e.value)
    # ``from None``: hvac's exception, which holds Vault's answer, is never chained into a log
    assert e.value.__cause__ is None
    assert e.value.__context__ is None or e.value.__suppress_context__


def test_a_sealed_vault_fails_fast_and_the_same_lookup_recovers(own_bao: BaoServer) -> None:
    broker, token = setup_transit(own_bao), agent(own_bao, "sealed")
    looker = VaultTokenLookup(own_bao.addr, broker, timeout=TIMEOUT)
    assert asyncio.run(looker.lookup(token)) is not None
    own_bao.seal()
    asyncio.run(fails_fast(looker, token, FAST, "VaultDown"))
    own_bao.unseal()
    assert asyncio.run(looker.lookup(token)) is not None
    asyncio.run(looker.aclose())


def test_a_stopped_vault_fails_fast(own_bao: BaoServer) -> None:
    broker, token = setup_transit(own_bao), agent(own_bao, "stopped")

    async def run() -> None:
        looker = VaultTokenLookup(own_bao.addr, broker, timeout=TIMEOUT)
        try:
            assert await looker.lookup(token) is not None
            own_bao.stop()
            await fails_fast(looker, token, FAST, "ConnectionError")
        finally:
            await looker.aclose()

    asyncio.run(run())


def stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped: SIGSTOP lands asynchronously, and a busy
    machine lets a thread answer one more request first."""
    tasks = list(Path(f"/proc/{pid}/task").glob("*/stat"))
    return bool(tasks) and all(t.read_text().rsplit(")", 1)[1].split()[0] in "Tt" for t in tasks)


def test_a_paused_vault_fails_within_the_deadline(own_bao: BaoServer) -> None:
    broker, token = setup_transit(own_bao), agent(own_bao, "paused")
    process = own_bao.proc  # BaoServer has no pause(): stop the process itself
    assert process is not None

    async def run() -> None:
        looker = VaultTokenLookup(own_bao.addr, broker, timeout=TIMEOUT)
        try:
            assert await looker.lookup(token) is not None
            process.send_signal(signal.SIGSTOP)
            deadline = time.monotonic() + 5
            while not stopped(process.pid):
                assert time.monotonic() < deadline, "the OpenBao process did not stop"
                await asyncio.sleep(0.01)
            try:  # at once: each lookup is bounded on its own, none waits behind another
                await asyncio.gather(*(fails_fast(looker, token, BOUND, "ReadTimeout") for _ in range(3)))
            finally:
                process.send_signal(signal.SIGCONT)
            assert await looker.lookup(token) is not None
        finally:
            await looker.aclose()

    asyncio.run(run())


def test_a_revoked_broker_token_is_a_backend_failure_not_an_unknown_agent(
    bao_server: BaoServer, broker_token: str
) -> None:
    """Vault answers 403 both for a bad presented token and for a bad broker token; only
    the first is "no such agent". A broker that cannot look up answers 503."""
    broker = setup_transit(bao_server, key="vault-identity")
    token = agent(bao_server, name("orphaned"))
    looker = VaultTokenLookup(bao_server.addr, broker, timeout=TIMEOUT)
    assert asyncio.run(looker.lookup(token)) is not None
    admin_client(bao_server).auth.token.revoke(broker)
    asyncio.run(fails_fast(looker, token, FAST, "Forbidden"))
    asyncio.run(fails_fast(looker, "s.AAAAAAAAAAAAAAAAAAAAAAAA", FAST, "Forbidden"))
    asyncio.run(looker.aclose())
    assert lookup(bao_server, broker_token, token) is not None  # Vault itself is fine


def test_a_broker_token_without_the_lookup_policy_is_a_backend_failure(bao_server: BaoServer) -> None:
    broker = admin_client(bao_server).auth.token.create(policies=["default"], ttl="10m")["auth"]["client_token"]
    token = agent(bao_server, name("unlooked"))
    looker = VaultTokenLookup(bao_server.addr, broker, timeout=TIMEOUT)
    asyncio.run(fails_fast(looker, token, FAST, "Forbidden"))
    asyncio.run(looker.aclose())


def test_a_closed_lookup_fails_closed(bao_server: BaoServer, broker_token: str) -> None:
    looker = VaultTokenLookup(bao_server.addr, broker_token, timeout=TIMEOUT)
    asyncio.run(looker.aclose())
    asyncio.run(fails_fast(looker, agent(bao_server, name("closed")), FAST, "the token lookup is closed"))


# ---------------------------------------------------------------------- what reaches the wire


class Recorder:
    """A loopback HTTP server that records each request's path and body, answering
    ``status`` (with ``Location: redirect_to`` if set) and ``body``."""

    def __init__(self, status: int, body: bytes = b"{}", redirect_to: str = "") -> None:
        self.seen: list[tuple[str, bytes]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                recorder.seen.append((self.path, self.rfile.read(length)))
                self.send_response(status)
                if redirect_to:
                    self.send_header("Location", redirect_to + self.path)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = answer  # noqa: N815 -- the names http.server calls

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def recorders() -> Iterator[list[Recorder]]:
    made: list[Recorder] = []
    try:
        yield made
    finally:
        for r in made:
            r.close()


PRESENTED = "s.Zign8vb0Q9Cylb56BXakJDxR"


def test_a_redirect_is_not_followed_so_the_presented_token_stays_home(recorders: list[Recorder]) -> None:
    recorders.append(Recorder(200))
    elsewhere = recorders[-1]
    recorders.append(Recorder(307, redirect_to=elsewhere.url))
    vault = recorders[-1]
    looker = VaultTokenLookup(vault.url, "the-broker-token", timeout=TIMEOUT)
    asyncio.run(fails_fast(looker, PRESENTED, FAST, "malformed token lookup"))
    asyncio.run(looker.aclose())
    assert vault.seen == [("/v1/auth/token/lookup", f'{{"token": "{PRESENTED}"}}'.encode())]
    assert elsewhere.seen == []


def test_an_answer_about_another_token_is_a_backend_failure(recorders: list[Recorder]) -> None:
    """What Vault answers for a lookup without a token: the caller's own token."""
    body = b'{"data": {"id": "s.0Qc2PPVJTR9FXSDFqERjXEje", "accessor": "a", "entity_id": "", "meta": null,'
    body += b' "path": "auth/token/create", "policies": ["capbroker"], "type": "service", "ttl": 1, "num_uses": 0}}'
    recorders.append(Recorder(200, body))
    looker = VaultTokenLookup(recorders[-1].url, "the-broker-token", timeout=TIMEOUT)
    asyncio.run(fails_fast(looker, PRESENTED, FAST, "malformed token lookup"))
    asyncio.run(looker.aclose())


@pytest.mark.parametrize(
    "presented", ["", " ", "garbage", "s.AAAAAAAAAAAAAAAAAAAAAAAA.ZZZZZ", "the-broker-token", "eyJh.eyJz.c2ln"]
)
def test_what_is_not_a_vault_token_of_this_namespace_never_reaches_vault(
    recorders: list[Recorder], presented: str
) -> None:
    recorders.append(Recorder(500))
    looker = VaultTokenLookup(recorders[-1].url, "the-broker-token", timeout=TIMEOUT)
    assert asyncio.run(looker.lookup(presented)) is None
    asyncio.run(looker.aclose())
    assert recorders[-1].seen == []


def test_a_bad_token_answer_is_unknown_and_any_other_refusal_is_a_failure(recorders: list[Recorder]) -> None:
    recorders.append(Recorder(403, b'{"errors": ["bad token"]}'))
    recorders.append(Recorder(403, b'{"errors": ["permission denied"]}'))
    recorders.append(Recorder(403, b'{"errors": ["bad token", "permission denied"]}'))
    recorders.append(Recorder(400, b'{"errors": ["bad token"]}'))
    bad, denied, both, invalid = (VaultTokenLookup(r.url, "the-broker-token", timeout=TIMEOUT) for r in recorders)
    assert asyncio.run(bad.lookup(PRESENTED)) is None
    asyncio.run(fails_fast(denied, PRESENTED, FAST, "Forbidden"))
    asyncio.run(fails_fast(both, PRESENTED, FAST, "Forbidden"))
    asyncio.run(fails_fast(invalid, PRESENTED, FAST, "InvalidRequest"))
    for looker in (bad, denied, both, invalid):
        asyncio.run(looker.aclose())


def test_the_lookup_never_shows_a_token() -> None:
    looker = VaultTokenLookup("http://127.0.0.1:1", "s.TheBrokersOwnTokenXXXXX", timeout=TIMEOUT)
    assert "TheBrokersOwnToken" not in repr(looker)
    assert "TheBrokersOwnToken" not in str(looker)
    asyncio.run(looker.aclose())


@pytest.mark.parametrize(
    "kw",
    [
        {"addr": "127.0.0.1:8200"},
        {"addr": "ftp://vault"},
        {"token": ""},
        {"timeout": 0},
        {"timeout": 61},
        {"workers": 0},
    ],
)
def test_bad_settings_are_refused(kw: dict[str, Any]) -> None:
    settings: dict[str, Any] = {"addr": "http://127.0.0.1:8200", "token": "t", **kw}
    with pytest.raises(ValueError):  # noqa: PT011 -- each setting has its own message
        VaultTokenLookup(settings.pop("addr"), settings.pop("token"), **settings)
