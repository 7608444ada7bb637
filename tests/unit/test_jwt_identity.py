"""The ``jwt`` identity core: key sets, discovery, the verifier and the policy matcher (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from broker.errors import Unauthenticated
from broker.identity.jwt_identity import (
    DEFAULT_MAX_LIFETIME,
    MAX_IDENTITY_TOKEN_BYTES,
    IdentityClaims,
    IdentityKeys,
    IdentityRejected,
    looks_like_jwt,
    match_jwt_identity,
    select_jwt_principal,
    unverified_issuer,
    unverified_route,
    verify_identity_jwt,
)
from broker.identity.jwt_keys import (
    MAX_KEYS,
    KeySetError,
    discovery_url,
    is_fetchable_url,
    is_identity_kid,
    jwks_uri_from_discovery,
)
from broker.policy.model import Agent, JwtIdentity, KeyIdentity, Location
from broker.token.algorithms import P256_ORDER
from broker.token.b64 import b64url_decode, b64url_encode
from tests.helpers import NOW
from tests.servers.oidc_issuer import JwtIssuer, private_jwk, public_jwk

ISS = "https://token.actions.githubusercontent.com"
SUB = "repo:acme/widgets:ref:refs/heads/main"
AUD = "capbroker"


@pytest.fixture(scope="module")
def idp() -> JwtIssuer:
    return JwtIssuer(ISS, now=NOW)


@pytest.fixture(scope="module")
def keys(idp: JwtIssuer) -> IdentityKeys:
    return IdentityKeys.from_jwks(idp.jwks())


def verify(token: str, keys: IdentityKeys, *, now: int = NOW, **kw: Any) -> IdentityClaims:
    return verify_identity_jwt(token, keys, issuer=ISS, now=now, **kw)


def rejected(token: object, keys: IdentityKeys, match: str, **kw: Any) -> None:
    with pytest.raises(IdentityRejected, match=match):
        verify(token, keys, **kw)  # type: ignore[arg-type]


def resign(token: str, idp: JwtIssuer, kid: str, *, header: Any = None, payload: Any = None) -> str:
    """``token`` with its header or payload replaced, signed again by ``kid``."""
    h, p, _ = token.split(".")
    head = header if header is not None else json.loads(b64url_decode(h))
    body = payload if payload is not None else json.loads(b64url_decode(p))
    return idp.forge(head, body, kid=kid)


# ---------------------------------------------------------------- looks_like_jwt, routing


def test_looks_like_jwt(idp: JwtIssuer) -> None:
    token = idp.issue(sub=SUB, aud=AUD)
    assert looks_like_jwt(token)
    assert not looks_like_jwt("cbk_" + "A" * 43)  # a client secret
    assert not looks_like_jwt("hvs.CAESIJ1b2c3d4e5f6g7h8i9j0")  # a Vault token
    assert not looks_like_jwt(token + ".x")
    assert not looks_like_jwt(token.rsplit(".", 1)[0] + ".")  # empty signature (alg none)
    assert not looks_like_jwt(token.replace(".", "..", 1))
    assert not looks_like_jwt(token + "=")
    assert not looks_like_jwt(" " + token)
    assert not looks_like_jwt("a.b." + "c" * MAX_IDENTITY_TOKEN_BYTES)
    assert looks_like_jwt("a.b." + "c" * (MAX_IDENTITY_TOKEN_BYTES - 4))


def test_unverified_route_reads_issuer_and_kid_without_verifying(idp: JwtIssuer) -> None:
    token = idp.issue(sub=SUB, aud=AUD, alg="ES256")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    route = unverified_route(forged)
    assert (route.issuer, route.kid) == (ISS, idp.kid_for("ES256"))
    assert unverified_issuer(token) == ISS


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ({"sub": SUB}, "iss missing"),
        ({"iss": 7}, "iss missing"),
        ({"iss": ""}, "iss missing"),
        (b'{"iss":"a","iss":"b"}', "duplicate key"),
        (b"\xff", "malformed payload"),
        (b"[1]", "malformed payload"),
    ],
)
def test_unverified_route_is_strict(idp: JwtIssuer, payload: Any, why: str) -> None:
    token = idp.forge({"alg": "RS256", "kid": "rsa-1"}, payload, kid="rsa-1")
    with pytest.raises(IdentityRejected, match=why):
        unverified_route(token)


def test_unverified_route_checks_the_header_first(idp: JwtIssuer) -> None:
    """A token that could never verify (alg none) never causes a key fetch."""
    token = idp.forge({"alg": "none", "kid": "rsa-1"}, idp.claims(sub=SUB, aud=AUD), signature=b"x")
    with pytest.raises(IdentityRejected, match="alg 'none'"):
        unverified_route(token)


def test_identity_rejected_is_unauthenticated() -> None:
    error = IdentityRejected("expired")
    assert isinstance(error, Unauthenticated)
    assert (error.code, error.reason) == ("unauthenticated", "expired")


# ---------------------------------------------------------------- key sets


def test_key_set_fixes_each_algorithm_by_key_type(idp: JwtIssuer, keys: IdentityKeys) -> None:
    assert {k.kid: k.alg for k in keys} == {"rsa-1": "RS256", "ec-1": "ES256", "ed-1": "EdDSA"}
    assert keys.kids == frozenset({"rsa-1", "ec-1", "ed-1"})
    assert "rsa-1" in keys
    assert len(keys) == 3
    assert "rsa-1" in repr(keys)


def test_key_set_from_json_is_strict(idp: JwtIssuer) -> None:
    doc = json.dumps(idp.jwks()).encode()
    assert len(IdentityKeys.from_json(doc)) == 3
    with pytest.raises(KeySetError, match="strict JSON"):
        IdentityKeys.from_json(b'{"keys":[],"keys":[]}')
    with pytest.raises(KeySetError, match="strict JSON"):
        IdentityKeys.from_json(b"\xef\xbb\xbf" + doc)  # a BOM


@pytest.mark.parametrize("jwks", [[], {"keys": {}}, {"key": []}, "keys"])
def test_key_set_must_be_a_jwks(jwks: object) -> None:
    with pytest.raises(KeySetError, match="'keys' list"):
        IdentityKeys.from_jwks(jwks)


def test_key_set_size_is_bounded(idp: JwtIssuer) -> None:
    jwk = idp.jwk("ed-1")
    assert len(IdentityKeys.from_jwks({"keys": [jwk] * MAX_KEYS})) == 0  # one kid MAX_KEYS times: ambiguous
    with pytest.raises(KeySetError, match="more than"):
        IdentityKeys.from_jwks({"keys": [jwk] * (MAX_KEYS + 1)})


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_key_set_with_a_private_key_is_refused_whole(idp: JwtIssuer, alg: str) -> None:
    kid = idp.kid_for(alg)
    with pytest.raises(KeySetError, match="private"):
        IdentityKeys.from_jwks({"keys": [idp.jwk("rsa-1"), private_jwk(kid, idp.private_key(kid))]})


def test_key_set_with_a_symmetric_key_is_refused_whole(idp: JwtIssuer) -> None:
    oct_key = {"kty": "oct", "kid": "h", "k": b64url_encode(b"s" * 32), "alg": "HS256"}
    with pytest.raises(KeySetError, match="private"):
        IdentityKeys.from_jwks({"keys": [idp.jwk("rsa-1"), oct_key]})


def _weak_rsa(bits: int, e: int = 65537) -> dict[str, Any]:
    return public_jwk("weak", rsa.generate_private_key(public_exponent=e, key_size=bits).public_key())


@pytest.mark.parametrize(
    ("why", "jwk"),
    [
        ("RSA 1024 bits", lambda i: _weak_rsa(1024)),
        ("RSA e=3", lambda i: _weak_rsa(2048, e=3)),
        ("P-384", lambda i: {**i.jwk("ec-1"), "crv": "P-384"}),
        ("EC without crv", lambda i: {k: v for k, v in i.jwk("ec-1").items() if k != "crv"}),
        ("Ed448", lambda i: {**i.jwk("ed-1"), "crv": "Ed448"}),
        ("X25519", lambda i: {**i.jwk("ed-1"), "crv": "X25519"}),
        ("unknown kty", lambda i: {**i.jwk("ed-1"), "kty": "oct"}),
        ("RSA with alg PS256", lambda i: {**i.jwk("rsa-1"), "alg": "PS256"}),
        ("RSA with alg ES256", lambda i: {**i.jwk("rsa-1"), "alg": "ES256"}),
        ("EC with alg RS256", lambda i: {**i.jwk("ec-1"), "alg": "RS256"}),
        ("OKP with alg Ed25519", lambda i: {**i.jwk("ed-1"), "alg": "Ed25519"}),
        ("use enc", lambda i: {**i.jwk("rsa-1"), "use": "enc"}),
        ("key_ops without verify", lambda i: {**i.jwk("rsa-1"), "key_ops": ["encrypt"]}),
        ("key_ops not a list", lambda i: {**i.jwk("rsa-1"), "key_ops": "verify"}),
        ("no kid", lambda i: {k: v for k, v in i.jwk("rsa-1").items() if k != "kid"}),
        ("kid with a slash", lambda i: {**i.jwk("rsa-1"), "kid": "../keys/1"}),
        ("kid not a string", lambda i: {**i.jwk("rsa-1"), "kid": 1}),
        ("x not base64url", lambda i: {**i.jwk("ed-1"), "x": "!!!"}),
        ("x padded", lambda i: {**i.jwk("ed-1"), "x": i.jwk("ed-1")["x"] + "="}),
        ("x too short", lambda i: {**i.jwk("ed-1"), "x": b64url_encode(b"\x01" * 31)}),
        ("EC point off the curve", lambda i: {**i.jwk("ec-1"), "y": b64url_encode(b"\x01" * 32)}),
        ("RSA without n", lambda i: {k: v for k, v in i.jwk("rsa-1").items() if k != "n"}),
        ("RSA n empty", lambda i: {**i.jwk("rsa-1"), "n": ""}),
        ("not an object", lambda i: ["kty", "RSA"]),
    ],
)
def test_unusable_keys_are_skipped(idp: JwtIssuer, why: str, jwk: Any) -> None:
    keys = IdentityKeys.from_jwks({"keys": [jwk(idp), idp.jwk("ed-1")]})
    assert keys.kids == frozenset({"ed-1"}), why


def test_jwk_without_alg_or_use_is_read(idp: JwtIssuer) -> None:
    bare = {k: v for k, v in idp.jwk("rsa-1").items() if k not in ("alg", "use")}
    key = IdentityKeys.from_jwks({"keys": [bare, {**idp.jwk("ec-1"), "key_ops": ["verify"]}]})
    assert {k.alg for k in key} == {"RS256", "ES256"}


def test_rsa_modulus_with_a_leading_zero_octet_is_read(idp: JwtIssuer) -> None:
    jwk = idp.jwk("rsa-1")
    jwk["n"] = b64url_encode(b"\x00" + b64url_decode(jwk["n"]))
    assert IdentityKeys.from_jwks({"keys": [jwk]}).kids == {"rsa-1"}


def test_a_kid_published_twice_is_dropped(idp: JwtIssuer) -> None:
    twin = {**idp.jwk("ec-1"), "kid": "rsa-1"}
    keys = IdentityKeys.from_jwks({"keys": [idp.jwk("rsa-1"), twin, idp.jwk("ed-1")]})
    assert keys.kids == {"ed-1"}


@pytest.mark.parametrize(
    ("kid", "ok"),
    [
        ("rsa-1", True),
        ("cc413527-173f-5a05-976e-9c52b1d7b431", True),  # GitHub
        ("Xv4E7jcOI_zxPHpHd0BUTgYtNl5IwSbvq1HgNUWcNRM", True),  # Kubernetes (thumbprint)
        ("abc+def=", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("", False),
        ("../../etc/passwd", False),
        ("a/b", False),
        ("a\\b", False),
        (".hidden", False),
        ("a b", False),
        ("k\x00", False),
        ("ключ", False),
    ],
)
def test_kid_grammar(kid: str, ok: bool) -> None:
    assert is_identity_kid(kid) is ok


# ---------------------------------------------------------------- discovery


def test_discovery_url_keeps_the_issuer_path() -> None:
    assert discovery_url("https://a.example") == "https://a.example/.well-known/openid-configuration"
    assert discovery_url("https://a.example/t/1/") == "https://a.example/t/1/.well-known/openid-configuration"


def test_discovery_gives_the_jwks_uri_of_exactly_this_issuer() -> None:
    doc = json.dumps({"issuer": ISS, "jwks_uri": ISS + "/.well-known/jwks"}).encode()
    assert jwks_uri_from_discovery(doc, issuer=ISS) == ISS + "/.well-known/jwks"
    for other in (ISS + "/", ISS.upper(), "https://evil.example"):
        with pytest.raises(KeySetError, match="mix-up"):
            jwks_uri_from_discovery(doc, issuer=other)


@pytest.mark.parametrize(
    "uri",
    [None, 7, "http://keys.example/jwks", "ftp://keys.example/jwks", "file:///etc/passwd", "https://u@keys.example/"],
)
def test_discovery_jwks_uri_must_be_https(uri: object) -> None:
    doc = json.dumps({"issuer": ISS, "jwks_uri": uri}).encode()
    with pytest.raises(KeySetError, match="https"):
        jwks_uri_from_discovery(doc, issuer=ISS)


def test_discovery_document_is_strict_json() -> None:
    with pytest.raises(KeySetError, match="strict JSON"):
        jwks_uri_from_discovery(b'{"issuer":"x","issuer":"' + ISS.encode() + b'"}', issuer=ISS)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://token.actions.githubusercontent.com/.well-known/jwks", True),
        ("https://10.0.0.1:6443/openid/v1/jwks", True),
        ("https://[fd00::1]:6443/openid/v1/jwks", True),
        ("https://oidc.eks.us-east-1.amazonaws.com/id/ABC/keys?x=1", True),
        ("http://127.0.0.1:8080/jwks", True),
        ("http://localhost/jwks", True),
        ("http://[::1]:1/jwks", True),
        ("http://127.0.0.1.evil.example/jwks", False),
        ("http://example.com/jwks", False),
        ("https://example.com/jwks#frag", False),
        ("https://user:pw@example.com/jwks", False),
        ("https://example.com/a b", False),
        ("https://", False),
        ("https://example.com/" + "a" * 2100, False),
    ],
)
def test_fetchable_urls(url: str, ok: bool) -> None:
    assert is_fetchable_url(url) is ok


# ---------------------------------------------------------------- verification: good tokens


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_each_algorithm_verifies(idp: JwtIssuer, keys: IdentityKeys, alg: str) -> None:
    claims = verify(idp.issue(sub=SUB, aud=AUD, alg=alg, jti="id-1"), keys)
    assert (claims.iss, claims.sub, claims.aud, claims.jti) == (ISS, SUB, (AUD,), "id-1")
    assert (claims.iat, claims.nbf, claims.exp) == (NOW, NOW, NOW + 300)


def test_kubernetes_shaped_token_verifies(idp: JwtIssuer, keys: IdentityKeys) -> None:
    """No typ, aud a list, nested kubernetes.io claims, no nbf."""
    nested = {"namespace": "agents", "serviceaccount": {"name": "reviewer", "uid": "u-1"}}
    token = idp.issue(
        sub="system:serviceaccount:agents:reviewer",
        aud=["capbroker", "https://kubernetes.default.svc"],
        typ=None,
        extra_claims={"kubernetes.io": nested, "nbf": None},
    )
    claims = verify(token, keys)
    assert claims.aud == ("capbroker", "https://kubernetes.default.svc")
    assert claims.nbf is None
    k8s: Any = claims.claims["kubernetes.io"]
    assert k8s["serviceaccount"]["name"] == "reviewer"


@pytest.mark.parametrize("typ", ["JWT", "jwt", "JOSE"])
def test_accepted_typ(idp: JwtIssuer, keys: IdentityKeys, typ: str) -> None:
    assert verify(idp.issue(sub=SUB, aud=AUD, typ=typ), keys).sub == SUB


def test_x5t_hint_is_tolerated(idp: JwtIssuer, keys: IdentityKeys) -> None:
    """GitHub sends x5t next to kid; it is a hint and is never used to find a key."""
    token = idp.issue(sub=SUB, aud=AUD, headers={"x5t": "Ab_c", "x5t#S256": "Zz"})
    assert verify(token, keys).sub == SUB


def test_claims_are_read_only(idp: JwtIssuer, keys: IdentityKeys) -> None:
    token = idp.issue(sub=SUB, aud=AUD, extra_claims={"groups": ["a"], "meta": {"k": [1]}})
    claims = verify(token, keys)
    with pytest.raises(TypeError):
        claims.claims["sub"] = "other"  # type: ignore[index]
    groups: Any = claims.claims["groups"]
    assert groups == ("a",)
    meta: Any = claims.claims["meta"]
    with pytest.raises(TypeError):
        meta["k"] = 2
    with pytest.raises(AttributeError):
        claims.sub = "other"  # type: ignore[misc]


def test_es256_high_s_is_accepted(idp: JwtIssuer, keys: IdentityKeys) -> None:
    """Outside issuers do not normalise ECDSA S; both spellings verify."""
    key = idp.private_key("ec-1")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    header = {"alg": "ES256", "kid": "ec-1"}
    body = idp.claims(sub=SUB, aud=AUD)

    def high_s(message: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
        s = s if s > P256_ORDER // 2 else P256_ORDER - s
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    assert verify(idp.forge(header, body, sign=high_s), keys).sub == SUB


def test_es256_der_signature_is_refused(idp: JwtIssuer, keys: IdentityKeys) -> None:
    key = idp.private_key("ec-1")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    token = idp.forge(
        {"alg": "ES256", "kid": "ec-1"},
        idp.claims(sub=SUB, aud=AUD),
        sign=lambda m: key.sign(m, ec.ECDSA(hashes.SHA256())),
    )
    rejected(token, keys, "signature")


def test_es256_zero_signature_is_refused(idp: JwtIssuer, keys: IdentityKeys) -> None:
    token = idp.forge({"alg": "ES256", "kid": "ec-1"}, idp.claims(sub=SUB, aud=AUD), signature=bytes(64))
    rejected(token, keys, "signature")
    r_too_big = P256_ORDER.to_bytes(32, "big") + (1).to_bytes(32, "big")
    token = idp.forge({"alg": "ES256", "kid": "ec-1"}, idp.claims(sub=SUB, aud=AUD), signature=r_too_big)
    rejected(token, keys, "signature")


def test_rsa_signature_of_the_wrong_length_is_refused(idp: JwtIssuer, keys: IdentityKeys) -> None:
    token = idp.issue(sub=SUB, aud=AUD)
    sig = b64url_decode(token.rsplit(".", 1)[1])
    assert len(sig) == 256
    head = token.rsplit(".", 1)[0]
    for wrong in (bytes(1) + sig, sig[1:]):
        rejected(f"{head}.{b64url_encode(wrong)}", keys, "signature")


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_any_flipped_byte_is_refused(idp: JwtIssuer, keys: IdentityKeys, alg: str) -> None:
    token = idp.issue(sub=SUB, aud=AUD, alg=alg)
    head, body, sig = token.split(".")
    raw = bytearray(b64url_decode(sig))
    raw[len(raw) // 2] ^= 1
    rejected(f"{head}.{body}.{b64url_encode(bytes(raw))}", keys, "signature")
    other = idp.claims(sub=SUB + "x", aud=AUD)
    rejected(f"{head}.{b64url_encode(json.dumps(other).encode())}.{sig}", keys, "signature")


def test_a_token_from_another_key_with_the_same_kid_is_refused(keys: IdentityKeys) -> None:
    impostor = JwtIssuer(ISS, now=NOW)  # fresh keys, same kids
    rejected(impostor.issue(sub=SUB, aud=AUD, alg="EdDSA"), keys, "signature")


# ---------------------------------------------------------------- verification: the header


@pytest.mark.parametrize(
    "alg", ["none", "None", "HS256", "HS512", "PS256", "RS384", "RS512", "ES384", "ES512", "Ed25519"]
)
def test_algorithms_outside_the_three_are_refused(idp: JwtIssuer, keys: IdentityKeys, alg: str) -> None:
    token = idp.issue(sub=SUB, aud=AUD, headers={"alg": alg})  # signed RS256 under the lying header
    rejected(token, keys, "is not accepted")


@pytest.mark.parametrize("alg", [None, 1, ["RS256"]])
def test_alg_must_be_a_string(idp: JwtIssuer, keys: IdentityKeys, alg: object) -> None:
    header: dict[str, Any] = {"kid": "rsa-1"} if alg is None else {"alg": alg, "kid": "rsa-1"}
    rejected(idp.forge(header, idp.claims(sub=SUB, aud=AUD), kid="rsa-1"), keys, "is not accepted")


@pytest.mark.parametrize("typ", ["at+jwt", "cap+jwt", "dpop+jwt", "secevent+jwt", "", 1])
def test_other_token_types_are_refused(idp: JwtIssuer, keys: IdentityKeys, typ: object) -> None:
    rejected(idp.issue(sub=SUB, aud=AUD, headers={"typ": typ}), keys, "typ")


@pytest.mark.parametrize("field", ["cty", "b64", "zip", "enc", "nonce", "x5t#S512"])
def test_unknown_header_fields_are_refused(idp: JwtIssuer, keys: IdentityKeys, field: str) -> None:
    rejected(idp.issue(sub=SUB, aud=AUD, headers={field: "x"}), keys, "header fields not accepted")


def test_crit_is_refused(idp: JwtIssuer, keys: IdentityKeys) -> None:
    rejected(idp.issue(sub=SUB, aud=AUD, headers={"crit": ["exp"]}), keys, "crit: no extension")


def test_x5t_must_be_a_string(idp: JwtIssuer, keys: IdentityKeys) -> None:
    rejected(idp.issue(sub=SUB, aud=AUD, headers={"x5t": 1}), keys, "x5t is not a string")


def test_kid_is_required_even_with_one_key(idp: JwtIssuer) -> None:
    one = IdentityKeys.from_jwks({"keys": [idp.jwk("rsa-1")]})
    rejected(idp.issue(sub=SUB, aud=AUD, headers={"kid": None}), one, "kid missing")


@pytest.mark.parametrize("kid", [1, "", "a/b", "x" * 200])
def test_kid_outside_the_grammar_is_refused(idp: JwtIssuer, keys: IdentityKeys, kid: object) -> None:
    rejected(idp.issue(sub=SUB, aud=AUD, headers={"kid": kid}), keys, "grammar")


def test_unknown_kid_is_refused(idp: JwtIssuer, keys: IdentityKeys) -> None:
    rejected(idp.issue(sub=SUB, aud=AUD, headers={"kid": "rsa-9"}), keys, "no key 'rsa-9'")


def test_alg_must_equal_the_keys_algorithm(idp: JwtIssuer, keys: IdentityKeys) -> None:
    token = idp.forge({"alg": "ES256", "kid": "rsa-1"}, idp.claims(sub=SUB, aud=AUD), kid="ec-1")
    rejected(token, keys, "does not fit key 'rsa-1'")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d",
        "e30.e30.",
        "e30=.e30.AA",
        "e30.e30.A+/",
        "W10.e30.AA",  # header is [] not an object
        b"bytes.not.str",
        None,
    ],
)
def test_malformed_tokens_are_refused(keys: IdentityKeys, token: object) -> None:
    with pytest.raises(IdentityRejected):
        verify(token, keys)  # type: ignore[arg-type]


def test_oversize_header_is_refused(idp: JwtIssuer, keys: IdentityKeys) -> None:
    rejected(idp.issue(sub=SUB, aud=AUD, headers={"x5t": "a" * 1600}), keys, "header too large")


def test_duplicate_header_keys_are_refused(idp: JwtIssuer, keys: IdentityKeys) -> None:
    header = b'{"alg":"RS256","kid":"rsa-1","kid":"ec-1"}'
    rejected(idp.forge(header, idp.claims(sub=SUB, aud=AUD), kid="rsa-1"), keys, "duplicate key")


# ---------------------------------------------------------------- verification: the claims


def test_issuer_must_match_exactly(idp: JwtIssuer, keys: IdentityKeys) -> None:
    token = idp.issue(sub=SUB, aud=AUD)
    for other in (ISS + "/", "https://TOKEN.actions.githubusercontent.com", "https://evil.example"):
        with pytest.raises(IdentityRejected, match="iss is not"):
            verify_identity_jwt(token, keys, issuer=other, now=NOW)


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"iss": None}, "iss missing"),
        ({"iss": ["https://token.actions.githubusercontent.com"]}, "iss missing"),
        ({"sub": None}, "sub missing"),
        ({"sub": ""}, "sub missing"),
        ({"sub": 5}, "sub missing"),
        ({"sub": "s" * 1025}, "sub missing"),
        ({"aud": None}, "aud missing"),
        ({"aud": []}, "aud missing"),
        ({"aud": [AUD, 1]}, "aud missing"),
        ({"aud": {"a": 1}}, "aud missing"),
        ({"aud": ""}, "aud missing"),
        ({"aud": ["a"] * 33}, "aud missing"),
        ({"exp": None}, "exp missing"),
        ({"exp": float(NOW + 300)}, "exp is not"),
        ({"exp": str(NOW + 300)}, "exp is not"),
        ({"exp": True}, "exp is not"),
        ({"exp": -1}, "exp is not"),
        ({"iat": float(NOW)}, "iat is not"),
        ({"nbf": "0"}, "nbf is not"),
        ({"jti": 5}, "jti missing"),
        ({"jti": ""}, "jti missing"),
        ({"jti": "j" * 257}, "jti missing"),
    ],
)
def test_claim_types(idp: JwtIssuer, keys: IdentityKeys, extra: dict[str, Any], why: str) -> None:
    body = idp.claims(sub=SUB, aud=AUD)
    body.update(extra)
    body = {k: v for k, v in body.items() if v is not None}
    rejected(idp.forge({"alg": "RS256", "kid": "rsa-1"}, body, kid="rsa-1"), keys, why)


def test_null_time_claims_are_refused(idp: JwtIssuer, keys: IdentityKeys) -> None:
    body = idp.claims(sub=SUB, aud=AUD)
    body["nbf"] = None
    rejected(idp.forge({"alg": "RS256", "kid": "rsa-1"}, body, kid="rsa-1"), keys, "nbf is not")


def test_payload_duplicate_keys_are_refused(idp: JwtIssuer, keys: IdentityKeys) -> None:
    body = json.dumps(idp.claims(sub=SUB, aud=AUD))[:-1] + ',"sub":"repo:acme/other:ref:refs/heads/main"}'
    rejected(idp.forge({"alg": "RS256", "kid": "rsa-1"}, body.encode(), kid="rsa-1"), keys, "duplicate key")


def test_deeply_nested_claims_are_refused(idp: JwtIssuer, keys: IdentityKeys) -> None:
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    rejected(idp.issue(sub=SUB, aud=AUD, extra_claims={"deep": deep}), keys, "nested deeper")


def test_jti_is_optional(idp: JwtIssuer, keys: IdentityKeys) -> None:
    claims = verify(idp.issue(sub=SUB, aud=AUD, jti=False), keys)
    assert claims.jti is None
    assert claims.replay_id is None


# ---------------------------------------------------------------- verification: time


@pytest.mark.parametrize(("leeway", "after_exp", "ok"), [(30, 29, True), (30, 30, False), (0, -1, True), (0, 0, False)])
def test_exp_boundary_with_leeway(idp: JwtIssuer, keys: IdentityKeys, leeway: int, after_exp: int, ok: bool) -> None:
    token = idp.issue(sub=SUB, aud=AUD, lifetime=300)
    now = NOW + 300 + after_exp
    if ok:
        assert verify(token, keys, now=now, leeway=leeway).exp == NOW + 300
    else:
        rejected(token, keys, "expired", now=now, leeway=leeway)


@pytest.mark.parametrize(("ahead", "ok"), [(30, True), (31, False)])
def test_nbf_boundary_with_leeway(idp: JwtIssuer, keys: IdentityKeys, ahead: int, ok: bool) -> None:
    token = idp.issue(sub=SUB, aud=AUD, iat=NOW - 10, nbf=NOW + ahead)
    if ok:
        assert verify(token, keys).nbf == NOW + ahead
    else:
        rejected(token, keys, "not yet valid")


@pytest.mark.parametrize(("ahead", "ok"), [(30, True), (31, False)])
def test_iat_in_the_future(idp: JwtIssuer, keys: IdentityKeys, ahead: int, ok: bool) -> None:
    token = idp.issue(sub=SUB, aud=AUD, iat=NOW + ahead, extra_claims={"nbf": None})
    if ok:
        assert verify(token, keys).iat == NOW + ahead
    else:
        rejected(token, keys, "issued in the future")


@pytest.mark.parametrize(("over", "ok"), [(0, True), (1, False)])
def test_lifetime_cap_from_iat(idp: JwtIssuer, keys: IdentityKeys, over: int, ok: bool) -> None:
    token = idp.issue(sub=SUB, aud=AUD, lifetime=DEFAULT_MAX_LIFETIME + over)
    if ok:
        assert verify(token, keys).exp == NOW + DEFAULT_MAX_LIFETIME
    else:
        rejected(token, keys, "over the cap")
    rejected(idp.issue(sub=SUB, aud=AUD, lifetime=601), keys, "lifetime 601s is over the cap 600s", max_lifetime=600)


def test_lifetime_cap_without_iat_counts_from_now(idp: JwtIssuer, keys: IdentityKeys) -> None:
    body = idp.claims(sub=SUB, aud=AUD, exp=NOW + 1000, extra_claims={"iat": None, "nbf": None})
    token = idp.forge({"alg": "RS256", "kid": "rsa-1"}, body, kid="rsa-1")
    assert verify(token, keys, max_lifetime=1000).iat is None
    rejected(token, keys, "over the cap", max_lifetime=999)


@pytest.mark.parametrize(
    ("times", "why"),
    [({"iat": NOW + 301}, "iat <= exp"), ({"nbf": NOW + 300}, "nbf < exp")],
)
def test_inconsistent_times_are_refused(idp: JwtIssuer, keys: IdentityKeys, times: dict[str, int], why: str) -> None:
    body = idp.claims(sub=SUB, aud=AUD, exp=NOW + 300)
    body.update(times)
    rejected(idp.forge({"alg": "RS256", "kid": "rsa-1"}, body, kid="rsa-1"), keys, why)


@pytest.mark.parametrize("leeway", [-1, 301, 1.5, True])
def test_leeway_is_bounded(idp: JwtIssuer, keys: IdentityKeys, leeway: object) -> None:
    with pytest.raises(ValueError, match="leeway"):
        verify(idp.issue(sub=SUB, aud=AUD), keys, leeway=leeway)


@pytest.mark.parametrize("cap", [0, -5, 1.0])
def test_max_lifetime_is_positive(idp: JwtIssuer, keys: IdentityKeys, cap: object) -> None:
    with pytest.raises(ValueError, match="max_lifetime"):
        verify(idp.issue(sub=SUB, aud=AUD), keys, max_lifetime=cap)


# ---------------------------------------------------------------- replay


def test_replay_id_binds_issuer_and_jti(idp: JwtIssuer, keys: IdentityKeys) -> None:
    claims = verify(idp.issue(sub=SUB, aud=AUD, jti="same"), keys)
    other = IdentityClaims("https://other.example", SUB, (AUD,), claims.exp, None, None, "same", {})
    assert claims.replay_id is not None
    assert len(claims.replay_id) == 64
    assert claims.replay_id != other.replay_id
    assert claims.replay_until(30) == NOW + 330
    assert claims.replay_until() == NOW + 330


# ---------------------------------------------------------------- matching


def _claims(**over: Any) -> IdentityClaims:
    base: dict[str, Any] = {
        "iss": ISS,
        "sub": SUB,
        "aud": (AUD,),
        "exp": NOW + 300,
        "iat": NOW,
        "nbf": NOW,
        "jti": "j",
        "claims": {"repository_owner": "acme", "run_attempt": "1", "attempts": 1, "fork": False, "n": 1},
    }
    base.update(over)
    return IdentityClaims(**base)


def _identity(**over: Any) -> JwtIdentity:
    base: dict[str, Any] = {"issuer": ISS, "audience": AUD, "subject": SUB, "claims": ()}
    base.update(over)
    return JwtIdentity(**base)


def test_matching_identity() -> None:
    assert match_jwt_identity(_claims(), _identity()) is None
    assert match_jwt_identity(_claims(), _identity(claims=(("repository_owner", "acme"), ("fork", False)))) is None
    assert match_jwt_identity(_claims(aud=("other", AUD)), _identity()) is None


@pytest.mark.parametrize(
    ("claims", "identity", "why"),
    [
        ({}, {"issuer": "https://other.example"}, "issuer"),
        ({"aud": ("other",)}, {}, "audience 'capbroker'"),
        ({"aud": ("capbroker2", "Capbroker")}, {}, "audience"),
        ({"sub": SUB + ":x"}, {}, "subject"),
        ({"sub": SUB.upper()}, {}, "subject"),
        ({}, {"claims": (("repository_owner", "acme-evil"),)}, "claim 'repository_owner'"),
        ({}, {"claims": (("missing", "x"),)}, "claim 'missing' is missing"),
        ({}, {"claims": (("n", True),)}, "claim 'n'"),  # 1 != True
        ({}, {"claims": (("fork", 0),)}, "claim 'fork'"),  # False != 0
        ({}, {"claims": (("run_attempt", 1),)}, "claim 'run_attempt'"),  # "1" != 1
        ({}, {"claims": (("attempts", "1"),)}, "claim 'attempts'"),  # 1 != "1"
        ({}, {"claims": (("repository_owner", "acme"), ("fork", True))}, "claim 'fork'"),  # every entry
    ],
)
def test_mismatches(claims: dict[str, Any], identity: dict[str, Any], why: str) -> None:
    reason = match_jwt_identity(_claims(**claims), _identity(**identity))
    assert reason is not None
    assert why in reason


def test_nested_claims_never_match_a_scalar() -> None:
    claims = _claims(claims={"kubernetes.io": {"namespace": "agents"}})
    assert match_jwt_identity(claims, _identity(claims=(("kubernetes.io", "agents"),))) is not None


def _agent(name: str, identity: Any) -> Agent:
    return Agent(name, identity, ("s",), 600, None, "", Location("t.yaml", 1))


def test_select_the_one_matching_principal() -> None:
    agents = [
        _agent("keyed", KeyIdentity("0" * 64)),
        _agent("other-repo", _identity(subject="repo:acme/other:ref:refs/heads/main")),
        _agent("widgets", _identity()),
    ]
    assert select_jwt_principal(_claims(), agents).name == "widgets"


def test_select_refuses_no_match_with_reasons() -> None:
    agents = [_agent("other-repo", _identity(subject="repo:acme/other:ref:refs/heads/main"))]
    with pytest.raises(IdentityRejected, match="no principal matches: other-repo: subject"):
        select_jwt_principal(_claims(), agents)
    with pytest.raises(IdentityRejected, match="no jwt identity names issuer"):
        select_jwt_principal(_claims(), [_agent("keyed", KeyIdentity("0" * 64))])


def test_select_refuses_an_ambiguous_policy() -> None:
    agents = [_agent("a", _identity()), _agent("b", _identity(claims=(("repository_owner", "acme"),)))]
    with pytest.raises(IdentityRejected, match=r"matches 2 principals \(a, b\)"):
        select_jwt_principal(_claims(), agents)


def test_ed25519_and_rsa_keys_from_elsewhere_verify() -> None:
    """Keys made outside the test issuer (raw cryptography objects) work the same way."""
    ed = ed25519.Ed25519PrivateKey.generate()
    idp = JwtIssuer(ISS, now=NOW)
    kid = idp.add_key("EdDSA", kid="outside-ed", key=ed)
    keys = IdentityKeys.from_jwks(idp.jwks())
    assert verify(idp.issue(sub=SUB, aud=AUD, alg="EdDSA", kid=kid), keys).sub == SUB
