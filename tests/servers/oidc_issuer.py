"""A real OIDC issuer for the ``jwt`` identity tests: signing keys, tokens, and an HTTP server.

``JwtIssuer`` holds RSA-2048 (``rsa-1``, RS256), EC P-256 (``ec-1``, ES256) and Ed25519
(``ed-1``, EdDSA) signing keys, publishes them as a JWKS and signs tokens with them. It
needs no socket: the pure unit tests use it directly. Signatures are made by pyjwt's
algorithm objects, an implementation independent of the broker's verifier.

``OidcIssuer`` is the same plus a ``ThreadingHTTPServer`` on 127.0.0.1 (a free port, a
daemon thread) serving ``<path>/.well-known/openid-configuration`` and ``<path>/jwks.json``.
It counts fetches per path, and fails (any status), hangs, redirects or serves a doctored
document on demand::

    with OidcIssuer(path="/tenant-1") as idp:      # or idp = OidcIssuer().start(); idp.stop()
        token = idp.issue(sub="repo:acme/widgets:ref:refs/heads/main", aud="capbroker")
        idp.fail(503); idp.hang(); idp.recover()
        new_kid = idp.rotate("RS256")               # rsa-1 unpublished, rsa-2 signs
        idp.fetches[idp.jwks_path]                  # how often the JWKS was read

Tests that use the server need ``@pytest.mark.enable_socket`` and
``@pytest.mark.allow_hosts(["127.0.0.1"])``; the server is the only thing they talk to.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from broker.token.b64 import b64url_encode

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

ALG_PREFIX = {"RS256": "rsa", "ES256": "ec", "EdDSA": "ed"}
_SIGNERS: dict[str, Any] = {
    "RS256": RSAAlgorithm(RSAAlgorithm.SHA256),
    "ES256": ECAlgorithm(ECAlgorithm.SHA256),
    "EdDSA": OKPAlgorithm(),
}


def generate_key(alg: str) -> PrivateKey:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"no key type for {alg}")


def alg_of(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "RS256"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return "ES256"
    return "EdDSA"


def _int_b64(value: int, size: int | None = None) -> str:
    return b64url_encode(value.to_bytes(size or (value.bit_length() + 7) // 8, "big"))


def public_jwk(kid: str, key: PublicKey) -> dict[str, Any]:
    """The JWK an issuer publishes (with ``alg`` and ``use``, as GitHub and Kubernetes do)."""
    if isinstance(key, rsa.RSAPublicKey):
        n = key.public_numbers()
        return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": _int_b64(n.n), "e": _int_b64(n.e)}
    if isinstance(key, ec.EllipticCurvePublicKey):
        p = key.public_numbers()
        return {
            "kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
            "x": _int_b64(p.x, 32), "y": _int_b64(p.y, 32),
        }  # fmt: skip
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "kid": kid, "use": "sig", "alg": "EdDSA", "crv": "Ed25519", "x": b64url_encode(raw)}


def private_jwk(kid: str, key: PrivateKey) -> dict[str, Any]:
    """A JWK with its private members: what an issuer must never publish."""
    jwk = public_jwk(kid, key.public_key())
    if isinstance(key, rsa.RSAPrivateKey):
        n = key.private_numbers()
        jwk.update(d=_int_b64(n.d), p=_int_b64(n.p), q=_int_b64(n.q))
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        jwk["d"] = _int_b64(key.private_numbers().private_value, 32)
    else:
        jwk["d"] = b64url_encode(key.private_bytes_raw())
    return jwk


def _segment(part: dict[str, Any] | bytes) -> str:
    return b64url_encode(part if isinstance(part, bytes) else json.dumps(part, separators=(",", ":")).encode())


class JwtIssuer:
    """Signing keys and tokens of one issuer; no network. ``now`` fixes the issuing clock."""

    def __init__(self, issuer: str = "https://issuer.test", *, now: int | None = None) -> None:
        self.issuer = issuer
        self.now = now
        self._lock = threading.Lock()
        self._keys: dict[str, PrivateKey] = {}  # published, in order
        self._current: dict[str, str] = {}  # alg -> the kid that signs by default
        self._serial: Counter[str] = Counter()
        self.extra_jwks: list[dict[str, Any]] = []  # published as well, after the real keys
        for alg in ("RS256", "ES256", "EdDSA"):
            self.add_key(alg)

    # ------------------------------------------------------------ keys
    def add_key(self, alg: str, *, kid: str | None = None, key: PrivateKey | None = None) -> str:
        """Generate (or take) a key, publish it, and make it the one ``alg`` signs with."""
        with self._lock:
            self._serial[alg] += 1
            kid = kid or f"{ALG_PREFIX[alg]}-{self._serial[alg]}"
            self._keys[kid] = key or generate_key(alg)
            self._current[alg] = kid
        return kid

    def rotate(self, alg: str = "RS256", *, keep_old: bool = False) -> str:
        """A new key for ``alg`` under a new kid; the old one is unpublished unless ``keep_old``."""
        old = self.kid_for(alg)
        kid = self.add_key(alg)
        if not keep_old:
            with self._lock:
                del self._keys[old]
        return kid

    def publish(self, jwk: dict[str, Any]) -> None:
        with self._lock:
            self.extra_jwks.append(jwk)

    def kid_for(self, alg: str) -> str:
        return self._current[alg]

    def private_key(self, kid: str) -> PrivateKey:
        return self._keys[kid]

    def public_key(self, kid: str) -> PublicKey:
        return self._keys[kid].public_key()

    def public_pem(self, kid: str) -> bytes:
        return self.public_key(kid).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwk(self, kid: str) -> dict[str, Any]:
        return public_jwk(kid, self.public_key(kid))

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            keys = [public_jwk(kid, key.public_key()) for kid, key in self._keys.items()]
            return {"keys": keys + list(self.extra_jwks)}

    # ------------------------------------------------------------ tokens
    def claims(
        self,
        *,
        sub: str,
        aud: str | list[str],
        lifetime: int = 300,
        jti: bool | str = True,
        now: int | None = None,
        iat: int | None = None,
        nbf: int | None = None,
        exp: int | None = None,
        extra_claims: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A payload like GitHub's: iss, sub, aud, jti, nbf, iat, exp (plus ``extra_claims``;
        a ``None`` value there deletes a claim)."""
        t = now if now is not None else (self.now if self.now is not None else int(time.time()))
        body: dict[str, Any] = {"iss": self.issuer, "sub": sub, "aud": aud}
        if jti:
            body["jti"] = jti if isinstance(jti, str) else secrets.token_hex(16)
        issued = iat if iat is not None else t
        body.update(
            nbf=nbf if nbf is not None else issued, iat=issued, exp=exp if exp is not None else issued + lifetime
        )
        for name, value in (extra_claims or {}).items():
            if value is None:
                body.pop(name, None)
            else:
                body[name] = value
        return body

    def issue(
        self,
        *,
        sub: str,
        aud: str | list[str],
        alg: str = "RS256",
        kid: str | None = None,
        typ: str | None = "JWT",
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A real token signed by the key ``kid`` (default: the current key for ``alg``).

        ``headers`` merges into ``{"alg", "kid", "typ"}``; a ``None`` value deletes a field.
        Other keywords go to ``claims()`` (lifetime, jti, now, iat, nbf, exp, extra_claims).
        """
        kid = kid or self.kid_for(alg)
        header: dict[str, Any] = {"typ": typ, "alg": alg, "kid": kid, **(headers or {})}
        header = {k: v for k, v in header.items() if v is not None}
        return self.forge(header, self.claims(sub=sub, aud=aud, **claims), kid=kid)

    def forge(
        self,
        header: dict[str, Any] | bytes,
        payload: dict[str, Any] | bytes,
        *,
        kid: str | None = None,
        signature: bytes | None = None,
        sign: Callable[[bytes], bytes] | None = None,
    ) -> str:
        """Any header and payload (dicts, or raw bytes for malformed JSON), signed with the
        private key ``kid`` (with that key's own algorithm), by ``sign``, or with
        ``signature`` as given (``b""`` for ``alg: none``)."""
        signing_input = f"{_segment(header)}.{_segment(payload)}".encode("ascii")
        if signature is None:
            if sign is not None:
                signature = sign(signing_input)
            else:
                key = self._keys[kid or self.kid_for("RS256")]
                signature = _SIGNERS[alg_of(key)].sign(signing_input, key)
        return f"{signing_input.decode('ascii')}.{b64url_encode(signature)}"


def hs256(secret: bytes) -> Callable[[bytes], bytes]:
    """An HMAC-SHA256 signer: for the key-confusion attack (the public key as a secret)."""
    return lambda message: hmac.new(secret, message, hashlib.sha256).digest()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up on a hanging answer is not an error here


class OidcIssuer(JwtIssuer):
    """``JwtIssuer`` served over HTTP on loopback. ``issuer`` is known once started."""

    def __init__(self, *, path: str = "", now: int | None = None) -> None:
        if path and (not path.startswith("/") or path.endswith("/")):
            raise ValueError("path is empty or like '/tenant-1'")
        super().__init__("http://127.0.0.1:0" + path, now=now)
        self.path = path
        self.fetches: Counter[str] = Counter()
        self.status: int | None = None  # answer every request with this status
        self.discovery_overrides: dict[str, Any] = {}  # merged into the discovery document
        self.jwks_body: bytes | None = None  # served instead of the real JWKS
        self.redirects: dict[str, str] = {}  # path -> Location of a 302
        self._hang = threading.Event()
        self._release = threading.Event()
        self._server: _Server | None = None

    # ------------------------------------------------------------ where
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the issuer is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def discovery_path(self) -> str:
        return f"{self.path}/.well-known/openid-configuration"

    @property
    def jwks_path(self) -> str:
        return f"{self.path}/jwks.json"

    @property
    def jwks_uri(self) -> str:
        return self.base_url + self.jwks_path

    def discovery(self) -> dict[str, Any]:
        doc = {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        }
        doc.update(self.discovery_overrides)
        return doc

    # ------------------------------------------------------------ faults
    def fail(self, status: int = 503) -> None:
        self.status = status

    def hang(self) -> None:
        """Accept requests and never answer (until ``recover`` or ``stop``)."""
        self._release.clear()
        self._hang.set()

    def recover(self) -> None:
        self.status = None
        self._hang.clear()
        self._release.set()

    # ------------------------------------------------------------ life
    def start(self) -> OidcIssuer:
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self.issuer = self.base_url + self.path
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="oidc-issuer", daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OidcIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _answer(self, request_path: str) -> tuple[int, dict[str, str], bytes]:
        if self.status is not None:
            return self.status, {}, b'{"error":"unavailable"}'
        if request_path in self.redirects:
            return 302, {"Location": self.redirects[request_path]}, b""
        if request_path == self.discovery_path:
            return 200, {}, json.dumps(self.discovery()).encode()
        if request_path == self.jwks_path:
            return 200, {}, self.jwks_body if self.jwks_body is not None else json.dumps(self.jwks()).encode()
        return 404, {}, b""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with issuer._lock:
                    issuer.fetches[self.path] += 1
                if issuer._hang.is_set():
                    issuer._release.wait(timeout=30)
                    return
                status, headers, body = issuer._answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass  # nothing about requests (or tokens) in any log

        return Handler


@contextmanager
def running_issuer(*, path: str = "", now: int | None = None) -> Iterator[OidcIssuer]:
    """An ``OidcIssuer`` for the length of a ``with`` block (turn it into a fixture at will)."""
    issuer = OidcIssuer(path=path, now=now).start()
    try:
        yield issuer
    finally:
        issuer.stop()
