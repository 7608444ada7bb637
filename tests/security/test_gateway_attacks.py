"""Attacks on the gateway, one named test each, against the real stack (git http-backend,
the upstream API, OpenBao KV v2, Redis, a real broker): the agent holds only its token
and tries to push where it may not, to smuggle its own credentials upstream, or to read
a secret back out of anything the gateway says or writes.
"""

from __future__ import annotations

import base64
import gzip
import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest

from tests.servers.gateway_stack import GatewayStack, start_stack
from tests.servers.processes import BaoServer, RedisServer
from tests.servers.vault_setup import admin_client

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

OLD = "0" * 40
NEW = "1" * 40
RECEIVE = "/git/github.com/acme/widgets.git/git-receive-pack"
RECEIVE_TYPE = {"Content-Type": "application/x-git-receive-pack-request"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    root = tmp_path_factory.mktemp("gateway-attacks")
    bao = BaoServer(root / "bao").start()
    own_redis = RedisServer(root / "redis").start()
    try:
        built = start_stack(root / "stack", bao, own_redis)
        try:
            yield built
        finally:
            built.stop()
    finally:
        own_redis.stop()
        bao.stop()


def pkt(text: str) -> bytes:
    data = text.encode()
    return b"%04x" % (len(data) + 4) + data


def commands(*refs: str) -> bytes:
    lines = [pkt(f"{OLD} {NEW} {refs[0]}\x00report-status side-band-64k\n")]
    lines += [pkt(f"{OLD} {NEW} {ref}\n") for ref in refs[1:]]
    return b"".join(lines) + b"0000" + b"PACK-not-really"


def posts_upstream(stack: GatewayStack, before: int) -> list[object]:
    return [r for r in stack.git_requests()[before:] if r["method"] == "POST"]


@pytest.mark.parametrize(
    "refs",
    [
        ("refs/heads/main",),
        ("refs/heads/agents/{task}/ok", "refs/heads/main"),  # one bad ref among good ones
        ("refs/heads/agents/{task}/../../main",),
        ("refs/heads/agents/{task}",),  # the prefix itself is not under it
        ("refs/heads/agents/{task}-evil/x",),
        ("refs/tags/v1",),
    ],
)
def test_push_commands_outside_the_task_prefix_are_refused_before_forwarding(
    stack: GatewayStack, refs: tuple[str, ...]
) -> None:
    task = stack.fresh_task("attack-push")  # each refusal contains its task
    token = stack.token(task, ["gw-repo-write"])
    before = len(stack.git_requests())
    named = [ref.format(task=task) for ref in refs]
    status, _, body = stack.request("POST", RECEIVE, token=token, body=commands(*named), headers=RECEIVE_TYPE)
    assert (status, stack.refused(403, body)) == (403, "capability_denied")
    assert posts_upstream(stack, before) == []


def test_gzip_encoded_push_commands_are_read_too(stack: GatewayStack) -> None:
    token = stack.token("attack-gzip", ["gw-repo-write"])
    before = len(stack.git_requests())
    status, _, body = stack.request(
        "POST",
        RECEIVE,
        token=token,
        body=gzip.compress(commands("refs/heads/main")),
        headers={**RECEIVE_TYPE, "Content-Encoding": "gzip"},
    )
    assert (status, stack.refused(403, body)) == (403, "capability_denied")
    token = stack.token(stack.fresh_task("attack-gzip"), ["gw-repo-write"])  # the first one is contained
    status, _, body = stack.request(
        "POST",
        RECEIVE,
        token=token,
        body=commands("refs/heads/main"),
        headers={**RECEIVE_TYPE, "Content-Encoding": "br"},
    )
    assert (status, stack.refused(400, body)) == (400, "invalid_request")
    assert posts_upstream(stack, before) == []


def test_unreadable_or_signed_push_commands_are_refused(stack: GatewayStack) -> None:
    token = stack.token("attack-cert", ["gw-repo-write"])
    before = len(stack.git_requests())
    for body_sent in (
        pkt("push-cert\x00report-status\n") + pkt("certificate version 0.1\n") + b"0000",
        b"zzzz" + b"0000",
        pkt(f"{OLD} {NEW}\n") + b"0000",
        commands("refs/heads/agents/attack-cert/x")[:30],  # cut short: never forwarded half-read
    ):
        status, _, body = stack.request("POST", RECEIVE, token=token, body=body_sent, headers=RECEIVE_TYPE)
        assert (status, stack.refused(403, body)) == (403, "capability_denied")
    assert posts_upstream(stack, before) == []


def test_two_authorization_headers_are_refused(stack: GatewayStack) -> None:
    token = stack.token("attack-two-auth", ["gw-api"])
    before = len(stack.api_requests())
    conn_headers = [("Authorization", f"Bearer {token}"), ("Authorization", "Bearer other")]
    conn = http.client.HTTPConnection("127.0.0.1", stack.gateway_port, timeout=10)
    conn.putrequest("GET", "/http/api.test/v1/items")
    for name, value in conn_headers:
        conn.putheader(name, value)
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 401
    conn.close()
    assert stack.api_requests()[before:] == []


def test_the_agents_own_api_key_never_reaches_the_upstream(stack: GatewayStack) -> None:
    """The allowlisted-API-with-the-attacker's-own-key attack: every spelling is dropped."""
    token = stack.token("attack-own-key", ["gw-api"])
    status, _, _ = stack.request(
        "GET",
        "/http/api.test/v1/items?api_key=attacker&Api_Key=attacker&api%5fkey=attacker",
        token=token,
        headers={"X-API-KEY": "attacker", "x-upstream-token": "attacker"},
    )
    assert status == 200
    arrived = stack.api_requests()[-1]
    assert "attacker" not in str(arrived)
    assert dict(arrived["headers"])["x-api-key"] == stack.api_key


def test_no_upstream_secret_in_any_response_log_line_or_audit_event(stack: GatewayStack, tmp_path: Path) -> None:
    """A full run (clone, push, refused push, API calls, refusals, upstream down), then a
    grep of everything the agent received and everything the gateway wrote."""
    seen: list[str] = []

    def keep(status: int, headers: dict[str, str], body: bytes) -> None:
        seen.append(f"{status} {headers} {body!r}")

    token = stack.token("attack-grep", ["gw-repo-write"])
    api = stack.token("attack-grep-api", ["gw-api"])
    down = stack.token("attack-grep-down", ["gw-down"])
    work = tmp_path / "w"
    for args in (("clone", stack.repo_url(), str(work)),):
        run = stack.git(*args, token=token)
        seen += [run.stdout, run.stderr]
    (work / "f").write_text("f\n")
    stack.git("add", "f", cwd=work, check=True)
    stack.git("commit", "-q", "-m", "f", cwd=work, check=True)
    for refspec in ("HEAD:refs/heads/agents/attack-grep/f", "HEAD:refs/heads/main"):
        run = stack.git("push", "origin", refspec, token=token, cwd=work)
        seen += [run.stdout, run.stderr]
    for method, path, who in (
        ("GET", "/http/api.test/v1/items?api_key=x", api),
        ("GET", "/http/api.test/v1/redirect", api),
        ("GET", "/http/api.test/v1/cookie", api),
        ("DELETE", "/http/api.test/v1/items", api),
        ("GET", "/http/api.test/v1/../x", api),
        ("GET", "/http/down.test/x", down),
        ("GET", "/git/github.com/acme/other.git/info/refs?service=git-upload-pack", token),
        ("GET", "/readyz", None),
        ("GET", "/metrics", None),
    ):
        keep(*stack.request(method, path, token=who))
    written = "\n".join([*seen, stack.audit_path.read_text(), stack.gateway_log.read_text()])
    assert stack.audit_lines()
    basic = base64.b64encode(f"x-access-token:{stack.git_secret}".encode()).decode()
    for secret in (*stack.secrets, basic, stack.vault_token, stack.service_key):
        assert secret not in written


def test_the_gateways_vault_token_only_reads_its_own_secrets(stack: GatewayStack) -> None:
    """Stolen from the gateway's disk, its Vault token reads the gateway's secrets and
    nothing else: no other path, no write, no listing, no token creation."""
    client = hvac.Client(url=stack.bao.addr, token=stack.vault_token, timeout=5)
    try:
        assert client.read("secret/data/gateway/api")["data"]["data"]["api_key"] == stack.api_key
        admin = admin_client(stack.bao)
        admin.secrets.kv.v2.create_or_update_secret("other/thing", {"x": "y"}, mount_point="secret")
        admin.adapter.close()
        for attempt in (
            lambda: client.read("secret/data/other/thing"),
            lambda: client.write_data("secret/data/gateway/api", data={"data": {"api_key": "mine"}}),
            lambda: client.list("secret/metadata/gateway"),
            lambda: client.read("secret/metadata/gateway/api"),
            lambda: client.auth.token.create(policies=["default"]),
            lambda: client.read("transit/keys/gateway-e2e"),
        ):
            with pytest.raises(hvac.exceptions.Forbidden):
                attempt()
    finally:
        client.adapter.close()


def test_a_get_with_a_body_is_refused_so_no_request_is_smuggled_upstream(stack: GatewayStack) -> None:
    """The outside tester's finding 1: a GET's body, forwarded to an upstream that ignores
    it, was read as the next request on a connection carrying the real credential (a
    read-only token pushed to main). A GET or HEAD with a body is now refused, unsent."""
    token = stack.token("attack-smuggle", ["gw-repo-read"])
    smuggled = b"POST /acme/widgets.git/git-receive-pack HTTP/1.1\r\nX-Ignore: "
    before = len(stack.git_requests())
    for method in ("GET", "HEAD"):
        status, _, body = stack.request(
            method,
            "/git/github.com/acme/widgets.git/info/refs?service=git-upload-pack",
            token=token,
            body=smuggled,
        )
        assert status == 400
        if method == "GET":
            assert stack.refused(400, body) == "invalid_request"
    assert stack.git_requests()[before:] == []  # nothing at all reached the upstream


def test_an_upstream_connection_that_carried_a_body_is_never_reused() -> None:
    """An upstream that answers before reading a request's body would take the rest of the
    body as the next request on that connection: after a request with a body, the gateway
    closes the connection instead of pooling it (a real socket, counted)."""
    import asyncio
    import contextlib

    from broker.gateway.upstream import UpstreamPool

    async def run() -> list[list[bytes]]:
        lines_by_connection: list[list[bytes]] = []

        writers: list[asyncio.StreamWriter] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            lines: list[bytes] = []
            lines_by_connection.append(lines)
            writers.append(writer)
            while line := await reader.readline():  # answers every request line at once, reading no body
                if line.startswith((b"GET ", b"POST ")):
                    lines.append(line.strip())
                    while (await reader.readline()).strip():
                        pass
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    await writer.drain()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = UpstreamPool(timeout=5.0, connect_timeout=5.0)

        async def smuggling_body() -> Any:
            yield b"GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n"

        try:
            for method, path, body in (("POST", "/upload", smuggling_body()), ("GET", "/next", None)):
                response = await pool.send(method, f"http://127.0.0.1:{port}{path}", [], body)
                async for _ in response.body():
                    pass
                response.close()
            await asyncio.sleep(0.2)
        finally:
            await pool.close()
            for writer in writers:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            server.close()
            await server.wait_closed()
        return lines_by_connection

    by_connection = asyncio.run(run())
    assert len(by_connection) == 2  # the GET went on a connection of its own
    assert by_connection[1] == [b"GET /next HTTP/1.1"]


def _raw(stack: GatewayStack, chunks: list[bytes], pause: float = 0.0) -> tuple[bytes, float]:
    """Send ``chunks`` on one raw connection (``pause`` seconds apart); what came back
    until the gateway closed it, and how long that took."""
    import socket
    import time

    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=30) as conn:
        try:
            for chunk in chunks:
                conn.sendall(chunk)
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us: what it answered is read below
        answer = b""
        try:
            while data := conn.recv(65536):
                answer += data
        except ConnectionResetError:
            pass
    return answer, time.monotonic() - started


def test_an_oversized_request_head_is_answered_431_and_closed(stack: GatewayStack) -> None:
    """The outside tester's finding 5: one connection sending a 200 MB header grew the
    gateway by 360 MB; the head is now bounded (64 KiB), whatever the token."""
    head = b"GET /http/api.test/v1/items HTTP/1.1\r\nhost: gw\r\nx-filler: "
    answer, _ = _raw(stack, [head, *[b"a" * 65536] * 8])
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b'"code": "invalid_request"' in answer


def test_a_request_head_that_never_ends_is_dropped(stack: GatewayStack) -> None:
    """Slowloris: a head dribbled a byte at a time is closed 10 s after its first byte."""
    head = [b"GET /http/api.test/v1/items HTTP/1.1\r\n", *[b"x-slow: 1\r\n"] * 40]
    answer, took = _raw(stack, head, pause=0.5)
    assert answer == b""
    assert took < 15  # closed at about 10 s, before the 20 s the whole head would take
