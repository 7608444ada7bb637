"""The agent's side against a real ``broker dev`` process: ``BrokerClient`` (sync and
async, with DPoP), ``broker token get`` with its on-disk cache, ``broker run`` (git
through ``GIT_CONFIG_*``, the http variables, refresh, revoke on exit, the exit status)
and ``broker git-credential`` driven by a real ``git`` against a local server that
records the headers it got (no gateway needed to prove the wiring)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from broker.client import AsyncBrokerClient, BrokerCallFailed, BrokerClient
from broker.verify import Verifier
from tests.integration.test_example_walkthrough import call, dev_broker, wait_for  # noqa: F401 -- a fixture
from tests.servers.oidc_issuer import OidcIssuer
from tests.servers.processes import free_port
from tests.servers.recording_http import recording_server

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

BIN = Path(sys.executable).parent
Dev = tuple[str, dict[str, str]]


@pytest.fixture
def dev(dev_broker: Dev) -> Dev:  # noqa: F811 -- the imported fixture
    return dev_broker


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def verifier(url: str, audience: str = "git-gateway") -> Verifier:
    return Verifier(issuer=url, audience=audience, jwks_url=f"{url}/.well-known/jwks.json")


def active(url: str, keys: dict[str, str], token: str) -> bool:
    status, answer = call("POST", f"{url}/v1/introspect", keys["service git-gateway"], {"token": token})
    assert status == 200, answer
    return bool(answer["active"])


def cli(*args: str, key: str | None, cache: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CAPBROKER_", "GIT_", "BROKER_"))}
    clean |= {"CAPBROKER_CACHE_DIR": str(cache), **env}
    if key is not None:
        clean["CAPBROKER_KEY"] = key
    return subprocess.run(
        [str(BIN / "broker"), *args], env=clean, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def isolated_git(tmp_path: Path) -> dict[str, str]:
    """git with no user or system configuration and no prompt."""
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_TERMINAL_PROMPT": "0"}


# ---------------------------------------------------------------- BrokerClient


def test_the_client_caches_per_task_scope_resource_and_action(dev: Dev) -> None:
    url, keys = dev
    with BrokerClient(url, keys["agent reviewer"]) as client:
        first = client.token("c-cache", "widgets-read")
        again = client.token("c-cache", "widgets-read")
        narrowed = client.token(
            "c-cache", "widgets-pulls-read", resource="https://api.github.com/repos/acme/widgets/pulls/1", action="GET"
        )

    assert again is first
    grant = verifier(url).verify(first.token)
    assert (grant.task, grant.agent, first.audience) == ("c-cache", "reviewer", "git-gateway")
    assert narrowed.capabilities[0]["actions"] == ["GET"]
    assert narrowed.capabilities[0]["resource"].endswith("/pulls/1")
    assert first.expires_at - first.issued_at == 300


def test_the_client_mints_again_shortly_before_expiry(dev: Dev) -> None:
    url, keys = dev
    now = [1_000_000_000.0]
    real_start = None
    with BrokerClient(url, keys["agent reviewer"], clock=lambda: now[0]) as client:
        first = client.token("c-fresh", "widgets-read")
        real_start = first.issued_at
        now[0] = real_start + 239  # a 5-minute token: reused until 60 s remain
        assert client.token("c-fresh", "widgets-read") is first
        now[0] = real_start + 240
        second = client.token("c-fresh", "widgets-read")
    assert second.token_id != first.token_id


def test_the_client_raises_the_brokers_code_and_revokes_tasks(dev: Dev) -> None:
    url, keys = dev
    with BrokerClient(url, keys["agent reviewer"]) as client:
        with pytest.raises(BrokerCallFailed) as unknown:
            client.token("c-err", "no-such-scope")
        token = client.token("c-revoke", "widgets-read")
        assert active(url, keys, token.token)
        assert client.revoke_task("c-revoke")["revoked"] is True
        with pytest.raises(BrokerCallFailed) as refused:
            client.token("c-revoke", "widgets-read")  # forgotten by the cache, and refused
    assert (unknown.value.code, unknown.value.status) == ("unknown_scope", 400)
    assert unknown.value.request_id
    assert (refused.value.code, refused.value.status) == ("task_revoked", 403)  # its own code (issue 13 item 6)
    assert not active(url, keys, token.token)
    with BrokerClient(url, "cbk_" + "A" * 43) as stranger, pytest.raises(BrokerCallFailed) as e:
        stranger.token("c-err", "widgets-read")
    assert e.value.code == "unauthenticated"


def test_the_async_client_binds_tokens_to_its_dpop_key(dev: Dev) -> None:
    url, keys = dev

    async def main() -> tuple[str, str, str]:
        async with AsyncBrokerClient(url, keys["agent reviewer"], dpop=True) as client:
            token = await client.token("c-dpop", "widgets-read")
            assert await client.token("c-dpop", "widgets-read") is token
            assert client.dpop_key is not None
            target = "https://git.internal/git/github.com/acme/widgets"
            return token.token, client.dpop_key.jkt, client.proof("GET", target, token.token)

    token, jkt, proof = asyncio.run(main())

    assert claims_of(token)["cnf"] == {"jkt": jkt}
    body = {"token": token, "dpop": proof, "htm": "GET", "htu": "https://git.internal/git/github.com/acme/widgets"}
    status, answer = call("POST", f"{url}/v1/introspect", keys["service git-gateway"], body)
    assert (status, answer["active"]) == (200, True)
    status, answer = call("POST", f"{url}/v1/introspect", keys["service git-gateway"], {"token": token})
    assert answer == {"active": False}, "a bound token without its proof"


# ---------------------------------------------------------------- broker token get


def test_token_get_prints_a_token_and_reuses_it_from_a_private_cache(dev: Dev, tmp_path: Path) -> None:
    url, keys = dev
    cache = tmp_path / "cache"
    args = ("token", "get", "--broker", url, "--task", "g-1", "--scope", "widgets-read")

    first = cli(*args, key=keys["agent reviewer"], cache=cache)
    again = cli(*args, "-o", "json", key=keys["agent reviewer"], cache=cache)
    fresh = cli(*args, "--no-cache", key=keys["agent reviewer"], cache=cache)

    assert first.returncode == 0, first.stderr
    token = first.stdout.strip()
    assert verifier(url).verify(token).task == "g-1"
    answer = json.loads(again.stdout)
    assert answer["token"] == token
    assert (answer["audience"], answer["task"]) == ("git-gateway", "g-1")
    assert 0 < answer["expires_in"] <= 300
    assert fresh.stdout.strip() != token
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    (entry,) = cache.iterdir()
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    # another agent on the same cache never gets this agent's token
    other = cli("token", "get", "--broker", url, "--task", "g-1", "--scope", "widgets-read",
                key=keys["agent reviewer"] + "x", cache=cache)  # fmt: skip
    assert other.returncode == 1
    assert "unauthenticated" in other.stderr
    assert token not in other.stdout


def test_token_get_reads_the_credential_from_a_file_and_never_from_an_argument(dev: Dev, tmp_path: Path) -> None:
    url, keys = dev
    key_file = tmp_path / "key"
    key_file.write_text(keys["agent reviewer"] + "\n")
    args = ("token", "get", "--broker", url, "--task", "g-2", "--scope", "widgets-read")

    from_file = cli(*args, "--key-file", str(key_file), key=None, cache=tmp_path / "c")
    missing = cli(*args, key=None, cache=tmp_path / "c")
    narrowed = cli(*args[:-1], "widgets-pulls-read", "--action", "GET", "-o", "json",
                   key=keys["agent reviewer"], cache=tmp_path / "c")  # fmt: skip

    assert from_file.returncode == 0, from_file.stderr
    assert (missing.returncode, missing.stdout) == (2, "")
    assert "CAPBROKER_KEY" in missing.stderr
    assert json.loads(narrowed.stdout)["capabilities"][0]["actions"] == ["GET"]


# ---------------------------------------------------------------- broker run


def test_run_sends_git_through_the_gateway_with_the_bearer_token(
    dev: Dev, tmp_path: Path, isolated_git: dict[str, str]
) -> None:
    url, keys = dev
    with recording_server() as gateway:
        result = cli("run", "--broker", url, "--task", "r-git", "--scope", "widgets-read", "--gateway", gateway.url,
                     "--", "git", "ls-remote", "https://github.com/acme/widgets",
                     key=keys["agent reviewer"], cache=tmp_path / "c", **isolated_git)  # fmt: skip

    assert result.returncode == 128, result.stderr  # git's own status for a failed fetch
    first = gateway.requests[0]
    assert first.path == "/git/github.com/acme/widgets/info/refs?service=git-upload-pack"
    (authorization,) = first.authorizations
    scheme, token = authorization.split(" ", 1)
    assert scheme == "Bearer"
    assert verifier(url).verify(token).allows("git", "github.com/acme/widgets", "read")


def test_run_gives_http_commands_their_token_and_gateway_but_not_the_agents_key(dev: Dev, tmp_path: Path) -> None:
    url, keys = dev
    script = (
        "import json, os; e = os.environ; print(json.dumps({k: e.get(k) for k in "
        "('CAPBROKER_TOKEN', 'CAPBROKER_GATEWAY', 'CAPBROKER_KEY', 'CAPBROKER_TOKENS_DIR')} | "
        "{'file': open(e['CAPBROKER_TOKEN_FILE']).read().strip()}))"
    )
    result = cli("run", "--broker", url, "--task", "r-http", "--scope", "widgets-pulls-read",
                 "--gateway", "http://127.0.0.1:9/", "--", sys.executable, "-c", script,
                 key=keys["agent reviewer"], cache=tmp_path / "c")  # fmt: skip

    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["CAPBROKER_KEY"] is None
    assert seen["CAPBROKER_GATEWAY"] == "http://127.0.0.1:9"
    assert seen["file"] == seen["CAPBROKER_TOKEN"]
    assert not Path(seen["CAPBROKER_TOKENS_DIR"]).exists(), "the token files are gone with the command"
    assert verifier(url, "github-proxy").verify(seen["CAPBROKER_TOKEN"]).task == "r-http"


def test_run_exits_with_the_commands_status_and_revokes_the_task_on_exit(dev: Dev, tmp_path: Path) -> None:
    url, keys = dev
    script = "import os, sys; print(os.environ['CAPBROKER_TOKEN']); sys.exit(7)"
    result = cli("run", "--broker", url, "--task", "r-exit", "--scope", "widgets-read", "--scope",
                 "widgets-pulls-read", "--gateway", "http://127.0.0.1:9", "--revoke-on-exit", "--",
                 sys.executable, "-c", script, key=keys["agent reviewer"], cache=tmp_path / "c")  # fmt: skip

    assert result.returncode == 7, result.stderr
    status, answer = call(
        "POST", f"{url}/v1/tokens", keys["agent reviewer"], {"task": "r-exit", "scopes": ["widgets-read"]}
    )
    assert (status, answer["code"]) == (403, "task_revoked"), "the task is revoked"
    kept = cli("run", "--broker", url, "--task", "r-kept", "--scope", "widgets-pulls-read", "--",
               sys.executable, "-c", "import os; print(os.environ['CAPBROKER_TOKEN'])",
               key=keys["agent reviewer"], cache=tmp_path / "c")  # fmt: skip
    assert kept.returncode == 0, kept.stderr
    status, _ = call("POST", f"{url}/v1/tokens", keys["agent reviewer"], {"task": "r-kept", "scopes": ["widgets-read"]})
    assert status == 201, "without --revoke-on-exit the task lives on"


def test_run_replaces_the_git_token_before_it_expires(dev: Dev, tmp_path: Path, isolated_git: dict[str, str]) -> None:
    url, keys = dev
    # a 4 s token is replaced 1 s before it expires; the command asks git for the header
    # until it changes (bounded: 30 s), as a later git command of a long run would see it
    script = (
        "import subprocess, time\n"
        "key = 'http.http://127.0.0.1:9/git/github.com/.extraheader'\n"
        "get = lambda: subprocess.run(['git', 'config', '--get', key], capture_output=True, text=True).stdout.strip()\n"
        "first = get(); deadline = time.monotonic() + 30\n"
        "while get() == first and time.monotonic() < deadline: time.sleep(0.1)\n"
        "print(first); print(get())\n"
    )
    result = cli("run", "--broker", url, "--task", "r-refresh", "--scope", "widgets-read", "--ttl", "4s",
                 "--gateway", "http://127.0.0.1:9", "--", sys.executable, "-c", script,
                 key=keys["agent reviewer"], cache=tmp_path / "c", **isolated_git)  # fmt: skip

    assert result.returncode == 0, result.stderr
    first, second = (line.removeprefix("Authorization: Bearer ") for line in result.stdout.splitlines())
    assert first != second
    assert claims_of(second)["task"] == "r-refresh"
    assert claims_of(second)["iat"] >= claims_of(first)["iat"]


# ---------------------------------------------------------------- broker git-credential


def test_git_uses_the_credential_helper_and_sends_the_token_as_basic(
    dev: Dev, tmp_path: Path, isolated_git: dict[str, str]
) -> None:
    url, keys = dev
    with recording_server(challenge=True) as gateway:
        helper = (f"!{BIN / 'broker'} git-credential --broker {url} --task h-1 --scope widgets-read "
                  f"--gateway {gateway.url}")  # fmt: skip
        result = cli("token", "get", "--help", key=None, cache=tmp_path / "c")  # the binary works
        assert result.returncode == 0
        git = subprocess.run(
            ["git", "-c", f"credential.{gateway.url}.helper={helper}", "ls-remote",
             f"{gateway.url}/git/github.com/acme/widgets"],
            env={**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, **isolated_git,
                 "CAPBROKER_KEY": keys["agent reviewer"], "CAPBROKER_CACHE_DIR": str(tmp_path / "c")},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    assert git.returncode != 0  # the recording server has no repository
    authorizations = [a for r in gateway.requests for a in r.authorizations]
    assert authorizations, git.stderr
    scheme, encoded = authorizations[0].split(" ", 1)
    username, _, token = base64.b64decode(encoded).decode().partition(":")
    assert (scheme, username) == ("Basic", "x-capbroker")
    assert verifier(url).verify(token).task == "h-1"


def test_the_credential_helper_answers_only_for_its_gateway_and_ignores_store(dev: Dev, tmp_path: Path) -> None:
    url, keys = dev
    args = (
        "git-credential",
        "--broker",
        url,
        "--task",
        "h-2",
        "--scope",
        "widgets-read",
        "--gateway",
        "https://gw.internal",
    )

    def helper(operation: str, asked: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CAPBROKER_")}
        return subprocess.run(
            [str(BIN / "broker"), *args, operation], input=asked, capture_output=True, text=True, timeout=30,
            env=clean | {"CAPBROKER_KEY": keys["agent reviewer"], "CAPBROKER_CACHE_DIR": str(tmp_path / "c")},
            check=False,
        )  # fmt: skip

    ours = helper("get", "protocol=https\nhost=gw.internal\n\n")
    elsewhere = helper("get", "protocol=https\nhost=evil.example\n\n")
    store = helper("store", "protocol=https\nhost=gw.internal\nusername=x\npassword=y\n\n")

    assert ours.returncode == 0, ours.stderr
    fields = dict(line.split("=", 1) for line in ours.stdout.splitlines())
    assert fields["username"] == "x-capbroker"
    assert verifier(url).verify(fields["password"]).task == "h-2"
    assert (elsewhere.returncode, elsewhere.stdout) == (0, "")
    assert (store.returncode, store.stdout) == (0, "")


# ---------------------------------------------------------------- an identity JWT as the credential

JWT_POLICY = """
scopes:
  widgets-read:
    kind: git
    resource: github.com/acme/widgets
    actions: [read]
    audience: git-gateway
    max_ttl: 15m
  widgets-push:
    kind: git
    resource: github.com/acme/widgets
    actions: [read, write]
    audience: git-gateway
    max_ttl: 10m
agents:
  reviewer:
    identity: {{key: {{sha256: {sha}}}}}
    scopes: [widgets-read]
  ci-agent:
    identity:
      jwt:
        issuer: {issuer}
        audience: capbroker
        subject: repo:acme/widgets:ref:refs/heads/main
    scopes: [widgets-read, widgets-push]
"""


def test_the_client_takes_a_fresh_identity_jwt_for_each_call(tmp_path: Path) -> None:
    with OidcIssuer() as idp:
        scopes = tmp_path / "scopes"
        scopes.mkdir()
        (scopes / "p.yaml").write_text(JWT_POLICY.format(sha="ab" * 32, issuer=idp.issuer))
        port = free_port()
        log = tmp_path / "dev-console.out"  # prints the keys it made: not a broker-*.log
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(BIN / "broker"), "dev", "--port", str(port), "--scopes", str(scopes), "--agent", "reviewer"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(f"{url}/readyz", proc, log)

            def identity() -> str:
                return idp.issue(sub="repo:acme/widgets:ref:refs/heads/main", aud="capbroker")

            with BrokerClient(url, identity) as client:
                read = client.token("j-1", "widgets-read")
                push = client.token("j-1", "widgets-push")
                assert client.token("j-1", "widgets-read") is read  # cached: no JWT spent
            once = identity()
            with BrokerClient(url, once) as client:
                client.token("j-2", "widgets-read")
                with pytest.raises(BrokerCallFailed) as replayed:
                    client.token("j-2", "widgets-push")  # the same JWT again: its jti is spent
        finally:
            proc.terminate()
            proc.wait(10)

    assert claims_of(read.token)["sub"] == claims_of(push.token)["sub"] == "agent:ci-agent"
    assert replayed.value.code == "unauthenticated"
