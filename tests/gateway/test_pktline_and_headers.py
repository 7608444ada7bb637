"""Receive-pack commands (pure) and the headers that cross the gateway (pure)."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from broker.errors import CapabilityDenied, InvalidRequest
from broker.gateway.config import load_config
from broker.gateway.headers import (
    credential_header,
    dropped_names,
    response_headers,
    upstream_headers,
    with_credential_query,
)
from broker.gateway.pktline import MAX_COMMANDS_BYTES, PktLineError, outside_prefix, push_commands
from broker.gateway.pushcheck import read_push_commands
from broker.gateway.upstream import keeps_alive
from tests.gateway.test_config import SPEC_EXAMPLE

A, B = "a" * 40, "b" * 40


def pkt(text: str) -> bytes:
    return b"%04x" % (len(text) + 4) + text.encode()


def test_commands_are_read_up_to_the_flush() -> None:
    body = pkt(f"{A} {B} refs/heads/x\x00report-status\n") + pkt(f"{B} {A} refs/heads/y\n") + b"0000PACK..."
    found = push_commands(body)
    assert found is not None
    assert found.refs == ("refs/heads/x", "refs/heads/y")
    assert body[found.end :] == b"PACK..."
    assert push_commands(body[:10]) is None  # more bytes needed
    assert push_commands(b"0000") is not None  # git's probe: no commands
    shallow = pkt(f"shallow {A}\n") + pkt(f"{A} {B} refs/heads/x\n") + b"0000"
    assert push_commands(shallow).refs == ("refs/heads/x",)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "body",
    [b"zzzz", pkt("push-cert\x00x\n") + b"0000", pkt(f"{A} {B}\n"), pkt(f"{A} {B} heads/x\n"), b"0001", b"0003"],
)
def test_anything_else_is_refused(body: bytes) -> None:
    with pytest.raises(PktLineError):
        push_commands(body)


def test_endless_commands_are_refused() -> None:
    with pytest.raises(PktLineError):
        push_commands(pkt(f"{A} {B} refs/heads/x\n") * (MAX_COMMANDS_BYTES // 40))


def test_outside_prefix() -> None:
    prefix = "refs/heads/agents/t1/"
    refs = ("refs/heads/agents/t1/a", "refs/heads/main", "refs/heads/agents/t1/../../main", "refs/heads/agents/t1/")
    assert outside_prefix(refs, prefix) == refs[1:]


def _reader(chunks: list[bytes]):  # type: ignore[no-untyped-def]
    async def next_chunk() -> tuple[bytes, bool]:
        chunk = chunks.pop(0)
        return chunk, bool(chunks)

    return next_chunk


def test_gzip_bodies_are_inspected_and_forwarded_unchanged() -> None:
    plain = pkt(f"{A} {B} refs/heads/main\n") + b"0000PACK"
    packed = gzip.compress(plain)
    read = asyncio.run(read_push_commands(_reader([packed[:7], packed[7:]]), "gzip"))
    assert read.refs == ("refs/heads/main",)
    assert b"".join(read.chunks) == packed
    with pytest.raises(InvalidRequest):
        asyncio.run(read_push_commands(_reader([plain]), "br"))
    with pytest.raises(CapabilityDenied):
        asyncio.run(read_push_commands(_reader([plain[:20]]), ""))


CONFIG = load_config(SPEC_EXAMPLE)


def test_agent_credentials_and_hop_by_hop_headers_are_dropped() -> None:
    _git, http = CONFIG.routes
    sent = [
        (b"Authorization", b"Bearer t"),
        (b"proxy-authorization", b"x"),
        (b"Cookie", b"c"),
        (b"DPoP", b"p"),
        (b"X-Api-Key", b"agent"),
        (b"connection", b"close, x-custom-hop"),
        (b"x-custom-hop", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"host", b"gw"),
        (b"accept", b"*/*"),
        (b"content-length", b"3"),
    ]
    assert upstream_headers(sent, dropped_names(http)) == [(b"accept", b"*/*"), (b"content-length", b"3")]


def test_credentials_are_attached_as_configured() -> None:
    git, http = CONFIG.routes
    assert credential_header(git.credential, "s3cret") == (b"authorization", b"Basic eC1hY2Nlc3MtdG9rZW46czNjcmV0")
    assert credential_header(http.credential, "k") == (b"x-api-key", b"k")
    query = load_config(SPEC_EXAMPLE.replace("as: header, header: X-Api-Key", "as: query, param: key")).routes[1]
    assert credential_header(query.credential, "k") is None
    assert with_credential_query("https://a/x?b=1", query.credential, "k&y") == "https://a/x?b=1&key=k%26y"


def test_set_cookie_and_hop_by_hop_never_come_back() -> None:
    got = [(b"Set-Cookie", b"a=b"), (b"connection", b"x-h"), (b"x-h", b"1"), (b"location", b"/y"), (b"te", b"x")]
    assert response_headers(got) == [(b"location", b"/y")]


def test_a_response_header_echoing_the_secret_is_dropped() -> None:
    got = [(b"location", b"/next?key=s%2Fk"), (b"x-echo", b"s/k"), (b"x-ok", b"fine")]
    assert response_headers(got, "s/k") == [(b"x-ok", b"fine")]


def test_keep_alive_is_read_from_the_version_and_connection_header() -> None:
    assert keeps_alive("1.1", [])
    assert not keeps_alive("1.1", [(b"connection", b"Close")])
    assert not keeps_alive("1.0", [])
    assert keeps_alive("1.0", [(b"connection", b"keep-alive")])
