"""The verifier fetches a real JWKS over HTTP from a server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from broker.token import KeyRing, LocalSigner
from broker.verify import TokenRejected, Verifier
from tests.helpers import AUDIENCE, ISSUER, NOW, good_token


@pytest.fixture
def jwks_server(ring: KeyRing) -> Iterator[tuple[str, list[int]]]:
    body = json.dumps(ring.keyset.to_jwks()).encode()
    hits: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(1)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json", hits
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
@pytest.mark.enable_socket
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_verifier_fetches_jwks_over_http(jwks_server: tuple[str, list[int]], ed_signer: LocalSigner) -> None:
    url, hits = jwks_server
    v = Verifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=url, clock=lambda: NOW + 1.0)
    assert v.verify(good_token(ed_signer)).task == "t1"
    assert v.verify(good_token(ed_signer)).task == "t1"
    assert len(hits) == 1  # cached


@pytest.mark.integration
@pytest.mark.enable_socket
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_verifier_with_unreachable_jwks_fails_closed(ed_signer: LocalSigner) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
    v = Verifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=f"http://127.0.0.1:{port}/jwks", clock=lambda: NOW + 1.0)
    with pytest.raises(TokenRejected) as e:
        v.verify(good_token(ed_signer))
    assert e.value.code == "keys_unavailable"


@pytest.mark.integration
@pytest.mark.enable_socket
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_jwks_redirect_is_a_failed_fetch(jwks_server: tuple[str, list[int]], ed_signer: LocalSigner) -> None:
    """A redirect, even to a server holding the right keys, is refused: it could downgrade or point anywhere."""
    target, hits = jwks_server

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/jwks"
        v = Verifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=url, clock=lambda: NOW + 1.0)
        with pytest.raises(TokenRejected) as e:
            v.verify(good_token(ed_signer))
        assert e.value.code == "keys_unavailable"
        assert hits == []  # the redirect target was never asked
    finally:
        server.shutdown()
        server.server_close()
