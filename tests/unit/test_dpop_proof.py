"""The pure DPoP proof checker (RFC 9449 section 4.3), the proof jwk and RFC 7638 thumbprints.

Every check has a breaking case below; a case passes only if that check (and no earlier
one) refuses it, so each row names the reason it expects.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from broker.dpop import (
    CheckedProof,
    DpopKey,
    JwkError,
    ProofError,
    ath_of,
    check_proof,
    htu_of,
    proof_key,
    public_jwk,
    sign_proof,
    thumbprint,
)
from broker.token.algorithms import P256_ORDER, sign
from broker.token.b64 import b64url_decode, b64url_encode

NOW = 1_790_000_000
METHOD = "POST"
URL = "https://git.internal/repos/acme/widgets"
TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhZ2VudDphIn0.c2lnbmF0dXJl"
JTI = "proof-id-0000000000001"

ED = DpopKey.generate("EdDSA")
ES = DpopKey.generate("ES256")
OTHER = DpopKey.generate("EdDSA")


def header(key: DpopKey = ED, **changes: Any) -> dict[str, Any]:
    """The header of a valid proof; a ``None`` value deletes a field."""
    out: dict[str, Any] = {"typ": "dpop+jwt", "alg": key.alg, "jwk": key.public_jwk}
    for name, value in changes.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def claims(**changes: Any) -> dict[str, Any]:
    """The claims of a valid proof for (METHOD, URL, TOKEN) at NOW; ``None`` deletes a claim."""
    out: dict[str, Any] = {"jti": JTI, "htm": METHOD, "htu": URL, "iat": NOW, "ath": ath_of(TOKEN)}
    for name, value in changes.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def check(proof: object, *, access_token: str | None = TOKEN, **kw: Any) -> CheckedProof:
    kw.setdefault("method", METHOD)
    kw.setdefault("url", URL)
    kw.setdefault("now", NOW)
    return check_proof(proof, access_token=access_token, **kw)


def refused(proof: object, match: str, **kw: Any) -> None:
    with pytest.raises(ProofError, match=match) as e:
        check(proof, **kw)
    assert e.value.reason == str(e.value)


def raw(header_json: bytes, claims_json: bytes, key: DpopKey = ED) -> str:
    """A proof with exactly these header and payload bytes, validly signed."""
    signing_input = f"{b64url_encode(header_json)}.{b64url_encode(claims_json)}".encode()
    return f"{signing_input.decode()}.{b64url_encode(sign(key.private_key, signing_input))}"


# ---------------------------------------------------------------- RFC vectors


RFC7638_RSA = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3o"
    "knjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHz"
    "u6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8a"
    "wapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC8037_ED25519 = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
RFC9449_EC = {
    "kty": "EC",
    "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
    "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
    "crv": "P-256",
}


@pytest.mark.parametrize(
    ("jwk", "expected"),
    [
        (RFC7638_RSA, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"),  # RFC 7638 section 3.1
        (RFC8037_ED25519, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"),  # RFC 8037 appendix A.3
        (RFC9449_EC, "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"),  # RFC 9449 sections 4.2 and 6.1
    ],
    ids=["rfc7638-rsa", "rfc8037-ed25519", "rfc9449-p256"],
)
def test_thumbprint_vectors(jwk: dict[str, str], expected: str) -> None:
    assert thumbprint(jwk) == expected


def test_thumbprint_ignores_optional_members_and_member_order() -> None:
    decorated = {"use": "sig", "alg": "ES256", "kid": "k1", **dict(reversed(list(RFC9449_EC.items())))}
    assert thumbprint(decorated) == thumbprint(RFC9449_EC)


@pytest.mark.parametrize(
    "jwk",
    [{"kty": "oct", "k": "c2VjcmV0"}, {"crv": "P-256", "x": "a", "y": "b"}, {"kty": "EC", "crv": "P-256", "x": "a"}],
    ids=["symmetric", "no-kty", "missing-y"],
)
def test_thumbprint_refuses_unknown_types_and_missing_members(jwk: dict[str, str]) -> None:
    with pytest.raises(JwkError):
        thumbprint(jwk)


def test_ath_vector_from_rfc9449() -> None:
    """RFC 9449 section 7.1: the access token of the example and its ath."""
    assert ath_of("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU") == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


def test_rfc9449_example_key_is_accepted_as_a_proof_key() -> None:
    key = proof_key(RFC9449_EC)
    assert (key.alg, key.jkt) == ("ES256", "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I")


# ---------------------------------------------------------------- the happy path


@pytest.mark.parametrize("key", [ED, ES], ids=["EdDSA", "ES256"])
def test_a_valid_proof_is_accepted(key: DpopKey) -> None:
    checked = check(key.proof(METHOD, URL, now=NOW, access_token=TOKEN, jti=JTI))
    assert checked == CheckedProof(jkt=key.jkt, jti=JTI, iat=NOW, expires_at=NOW + 60 + 5)
    assert checked.replay_key == f"{key.jkt}:{JTI}"
    assert key.jkt == thumbprint(key.public_jwk)


def test_a_proof_without_access_token_has_no_ath() -> None:
    proof = ED.proof("GET", URL, now=NOW)
    assert "ath" not in json.loads(b64url_decode(proof.split(".")[1]))
    assert check(proof, method="GET", access_token=None).jkt == ED.jkt


def test_query_and_fragment_are_ignored_on_both_sides() -> None:
    proof = sign_proof(header(), claims(htu=URL + "?page=2#top"), ED.private_key)
    assert check(proof, url=URL + "?page=3").jti == JTI
    assert htu_of("https://a/b?c#d?e") == "https://a/b"
    assert htu_of("https://a/b#d?e") == "https://a/b"


def test_the_client_strips_query_and_fragment_from_htu() -> None:
    proof = ED.proof("GET", URL + "?q=1#f", now=NOW)
    assert json.loads(b64url_decode(proof.split(".")[1]))["htu"] == URL


@pytest.mark.parametrize("iat", [NOW - 60, NOW + 5], ids=["oldest", "newest"])
def test_iat_window_edges_are_accepted(iat: int) -> None:
    assert check(sign_proof(header(), claims(iat=iat), ED.private_key)).iat == iat


def test_max_age_and_leeway_are_the_callers() -> None:
    proof = sign_proof(header(), claims(iat=NOW - 200), ED.private_key)
    refused(proof, "older")
    assert check(proof, max_age=200, leeway=0).expires_at == NOW - 200 + 200


def test_optional_public_jwk_members_are_allowed() -> None:
    jwk = {**ES.public_jwk, "alg": "ES256", "use": "sig", "kid": "agent-key-1"}
    assert check(sign_proof(header(ES, jwk=jwk), claims(), ES.private_key)).jkt == ES.jkt


def test_a_high_s_es256_signature_is_accepted() -> None:
    """Other client libraries make high-S ES256 signatures half of the time; replay is
    keyed on (jkt, jti), so the second spelling of a signature gains an attacker nothing."""
    proof = ES.proof(METHOD, URL, now=NOW, access_token=TOKEN, jti=JTI)
    signing_input, _, signature = proof.rpartition(".")
    sig = b64url_decode(signature)
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    high = r.to_bytes(32, "big") + (P256_ORDER - s).to_bytes(32, "big")
    assert check(f"{signing_input}.{b64url_encode(high)}").jti == JTI


# ---------------------------------------------------------------- breaking cases, one per check


def _hs256(header_: dict[str, Any], claims_: dict[str, Any], secret: bytes) -> str:
    h = b64url_encode(json.dumps(header_).encode())
    p = b64url_encode(json.dumps(claims_).encode())
    mac = hmac.new(secret, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64url_encode(mac)}"


def _unsigned(header_: dict[str, Any], claims_: dict[str, Any]) -> str:
    return f"{b64url_encode(json.dumps(header_).encode())}.{b64url_encode(json.dumps(claims_).encode())}."


GOOD = ED.proof(METHOD, URL, now=NOW, access_token=TOKEN, jti=JTI)
ED_X = ED.public_jwk["x"]
EC_JWK = ES.public_jwk


@pytest.mark.parametrize(
    ("proof", "reason"),
    [
        (None, "not a string"),
        (b"a.b.c", "not a string"),
        ("A" * 4097, "over 4096"),
        (GOOD + " ", "characters outside"),
        (GOOD + "=", "characters outside"),
        ("", "characters outside"),
        (GOOD.rpartition(".")[0], "2 segments"),
        (GOOD + ".AAAA", "4 segments"),
        ("A" * 1025 + ".e30.AAAA", "header too large"),
        ("bm90IGpzb24.e30.AAAA", "header: not JSON"),
        (f"{b64url_encode(b'[1]')}.e30.AAAA", "header: not a JSON object"),
        (GOOD.rpartition(".")[0] + ".A", "signature: not unpadded"),
    ],
    ids=[
        "none",
        "bytes",
        "too-large",
        "space",
        "padding",
        "empty",
        "two-segments",
        "four-segments",
        "huge-header",
        "header-not-json",
        "header-not-object",
        "bad-signature-b64",
    ],
)
def test_malformed_proofs_are_refused(proof: object, reason: str) -> None:
    refused(proof, reason)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({"typ": None}, "typ None is not dpop", id="no-typ"),
        pytest.param({"typ": "JWT"}, "typ 'JWT' is not dpop", id="typ-JWT"),
        pytest.param({"typ": "DPOP+JWT"}, "typ 'DPOP\\+JWT' is not dpop", id="typ-uppercase"),
        pytest.param({"typ": "application/dpop+jwt"}, "is not dpop", id="typ-media-type"),
        pytest.param({"alg": None}, "alg None is not accepted", id="no-alg"),
        pytest.param({"alg": "none"}, "alg 'none' is not accepted", id="alg-none"),
        pytest.param({"alg": "HS256"}, "alg 'HS256' is not accepted", id="alg-HS256"),
        pytest.param({"alg": "RS256"}, "alg 'RS256' is not accepted", id="alg-RS256"),
        pytest.param({"alg": "ES256"}, "alg ES256 does not fit the jwk", id="alg-not-the-keys"),
        pytest.param({"kid": "k1"}, "header fields outside the profile: \\['kid'\\]", id="kid"),
        pytest.param({"jku": "https://evil/jwks"}, "outside the profile: \\['jku'\\]", id="jku"),
        pytest.param({"x5u": "https://evil/cert"}, "outside the profile: \\['x5u'\\]", id="x5u"),
        pytest.param({"x5c": ["MIIB"]}, "outside the profile: \\['x5c'\\]", id="x5c"),
        pytest.param({"crit": ["exp"]}, "outside the profile: \\['crit'\\]", id="crit"),
        pytest.param({"jwk": None}, "jwk missing", id="no-jwk"),
        pytest.param({"jwk": "key"}, "jwk: jwk must be an object", id="jwk-not-object"),
        pytest.param({"jwk": {**ED.public_jwk, "d": ED_X}}, "private key members \\['d'\\]", id="jwk-private-d"),
        pytest.param({"jwk": {"kty": "oct", "k": ED_X}}, "private key members \\['k'\\]", id="jwk-symmetric"),
        pytest.param({"jwk": {"kty": "RSA", "n": ED_X, "e": "AQAB"}}, "key type 'RSA'", id="jwk-RSA"),
        pytest.param(
            {"jwk": {"kty": "EC", "crv": "P-384", "x": ED_X, "y": ED_X}}, "key type 'EC'/'P-384'", id="jwk-P-384"
        ),
        pytest.param({"jwk": {"kty": "OKP", "crv": "X25519", "x": ED_X}}, "key type 'OKP'/'X25519'", id="jwk-X25519"),
        pytest.param({"jwk": {"kty": "OKP", "crv": "Ed25519"}}, "member 'x' missing", id="jwk-no-x"),
        pytest.param(
            {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(bytes(31))}},
            "wrong length",
            id="jwk-x-short",
        ),
        pytest.param(
            {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(bytes(33))}}, "wrong length", id="jwk-x-long"
        ),
        pytest.param({"jwk": {"kty": "OKP", "crv": "Ed25519", "x": ED_X + "="}}, "not base64url", id="jwk-x-padded"),
        pytest.param(
            {"jwk": {**ED.public_jwk, "ext": True}}, "outside the profile: \\['ext'\\]", id="jwk-unknown-member"
        ),
        pytest.param({"jwk": {**ED.public_jwk, "alg": "ES256"}}, "jwk alg does not fit", id="jwk-alg-mismatch"),
        pytest.param({"jwk": {**ED.public_jwk, "use": "enc"}}, "jwk use must be sig", id="jwk-use-enc"),
        pytest.param({"jwk": {**ED.public_jwk, "kid": 7}}, "kid must be a short string", id="jwk-kid-not-string"),
    ],
)
def test_bad_headers_are_refused(changes: dict[str, Any], reason: str) -> None:
    refused(sign_proof(header(**changes), claims(), ED.private_key), reason)


@pytest.mark.parametrize(
    ("jwk", "reason"),
    [
        ({**EC_JWK, "y": EC_JWK["x"]}, "not on P-256"),
        ({**EC_JWK, "y": None}, "member 'y' missing"),
        ({**EC_JWK, "x": EC_JWK["x"][:-1] + ("B" if EC_JWK["x"][-1] == "A" else "A")}, "not|wrong|P-256"),
    ],
    ids=["off-curve", "no-y", "x-changed"],
)
def test_bad_ec_keys_are_refused(jwk: dict[str, Any], reason: str) -> None:
    refused(sign_proof(header(ES, jwk=jwk), claims(), ES.private_key), reason)


def test_alg_none_with_an_empty_signature_is_refused() -> None:
    refused(_unsigned(header(alg="none"), claims()), "alg 'none'")


def test_hs256_keyed_with_the_public_key_is_refused() -> None:
    """The classic confusion: HMAC with the public key bytes as the secret."""
    refused(_hs256(header(alg="HS256"), claims(), b64url_decode(ED_X)), "alg 'HS256'")


def test_a_proof_signed_by_another_key_than_its_jwk_is_refused() -> None:
    refused(sign_proof(header(ED), claims(), OTHER.private_key), "signature does not verify")


def test_an_es256_proof_with_an_ed25519_signature_is_refused() -> None:
    refused(sign_proof(header(ES), claims(), ED.private_key), "signature does not verify")


def test_a_payload_swapped_under_a_signature_is_refused() -> None:
    h, _, s = GOOD.split(".")
    other_payload = b64url_encode(json.dumps(claims(htm="GET")).encode())
    refused(f"{h}.{other_payload}.{s}", "signature does not verify")


@pytest.mark.parametrize("where", ["header", "payload"])
def test_duplicate_json_keys_are_refused(where: str) -> None:
    h = json.dumps(header()).encode()
    c = json.dumps(claims()).encode()
    if where == "header":
        h = h[:-1] + b',"typ":"dpop+jwt"}'
    else:
        c = c[:-1] + b',"htm":"GET"}'
    refused(raw(h, c), f"{where}: duplicate key")


def test_a_payload_that_is_not_json_is_refused() -> None:
    refused(raw(json.dumps(header()).encode(), b"not json"), "payload: not JSON")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({"jti": None}, "missing claim\\(s\\) \\['jti'\\]", id="no-jti"),
        pytest.param({"htm": None}, "missing claim\\(s\\) \\['htm'\\]", id="no-htm"),
        pytest.param({"htu": None}, "missing claim\\(s\\) \\['htu'\\]", id="no-htu"),
        pytest.param({"iat": None}, "missing claim\\(s\\) \\['iat'\\]", id="no-iat"),
        pytest.param({"nonce": "n-1"}, "nonce present", id="nonce"),
        pytest.param({"exp": NOW + 60}, "unknown claim\\(s\\) \\['exp'\\]", id="unknown-claim"),
        pytest.param({"jti": "a" * 15}, "jti must be", id="jti-short"),
        pytest.param({"jti": "a" * 129}, "jti must be", id="jti-long"),
        pytest.param({"jti": "a" * 15 + "/"}, "jti must be", id="jti-slash"),
        pytest.param({"jti": "a" * 15 + ":"}, "jti must be", id="jti-colon"),
        pytest.param({"jti": 1234567890123456}, "jti must be", id="jti-int"),
        pytest.param({"iat": str(NOW)}, "iat must be an integer", id="iat-string"),
        pytest.param({"iat": True}, "iat must be an integer", id="iat-bool"),
        pytest.param({"iat": float(NOW)}, "iat must be an integer", id="iat-float"),
        pytest.param({"htm": "post"}, "htm is not", id="htm-lowercase"),
        pytest.param({"htm": "GET"}, "htm is not", id="htm-other"),
        pytest.param({"htm": ["POST"]}, "htm is not", id="htm-list"),
        pytest.param({"htu": "https://git.internal/repos/acme/other"}, "htu is not", id="htu-other-path"),
        pytest.param({"htu": "https://evil.internal/repos/acme/widgets"}, "htu is not", id="htu-other-host"),
        pytest.param({"htu": "http://git.internal/repos/acme/widgets"}, "htu is not", id="htu-http"),
        pytest.param({"htu": "https://git.internal:443/repos/acme/widgets"}, "htu is not", id="htu-default-port"),
        pytest.param({"htu": "https://GIT.internal/repos/acme/widgets"}, "htu is not", id="htu-uppercase-host"),
        pytest.param({"htu": URL + "/"}, "htu is not", id="htu-trailing-slash"),
        pytest.param({"htu": "/repos/acme/widgets"}, "htu is not", id="htu-relative"),
        pytest.param({"iat": NOW - 61}, "older than 60s", id="iat-stale"),
        pytest.param({"iat": NOW + 6}, "in the future", id="iat-future"),
        pytest.param({"iat": 0}, "older", id="iat-zero"),
        pytest.param({"ath": None}, "ath missing", id="no-ath"),
        pytest.param({"ath": ath_of(TOKEN + "x")}, "ath is not the hash", id="ath-other-token"),
        pytest.param({"ath": ath_of(TOKEN)[:-1]}, "ath is not the hash", id="ath-truncated"),
        pytest.param({"ath": 7}, "ath missing", id="ath-int"),
    ],
)
def test_bad_claims_are_refused(changes: dict[str, Any], reason: str) -> None:
    refused(sign_proof(header(), claims(**changes), ED.private_key), reason)


def test_ath_without_an_access_token_is_refused() -> None:
    refused(GOOD, "ath present", access_token=None)


def test_a_proof_for_another_token_is_refused() -> None:
    refused(GOOD, "ath is not the hash", access_token=TOKEN + "x")


def test_a_non_ascii_access_token_is_refused() -> None:
    refused(GOOD, "not ASCII", access_token="tök")


@pytest.mark.parametrize(
    "kw",
    [
        {"max_age": 0},
        {"max_age": 301},
        {"max_age": True},
        {"leeway": -1},
        {"leeway": 61},
        {"leeway": 5.0},
        {"method": ""},
        {"url": ""},
        {"url": "?q=1"},
    ],
    ids=str,
)
def test_bad_parameters_are_a_programming_error(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must be|required") as e:
        check(GOOD, **kw)
    assert not isinstance(e.value, ProofError)


# ---------------------------------------------------------------- the client


def test_the_client_key_never_shows_in_its_repr() -> None:
    assert repr(ED) == f"DpopKey(alg='EdDSA', jkt={ED.jkt!r})"


def test_the_client_refuses_other_algorithms_and_curves() -> None:
    with pytest.raises(ValueError, match="EdDSA or ES256"):
        DpopKey.generate("RS256")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="P-256"):
        DpopKey(ec.generate_private_key(ec.SECP384R1()))


def test_public_jwk_is_the_thumbprinted_form() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    jwk = public_jwk(key.public_key())
    assert set(jwk) == {"kty", "crv", "x"}
    assert DpopKey(key).jkt == thumbprint(jwk)
    assert set(ES.public_jwk) == {"kty", "crv", "x", "y"}


def test_fresh_proofs_carry_fresh_ids() -> None:
    ids = {json.loads(b64url_decode(ED.proof("GET", URL, now=NOW).split(".")[1]))["jti"] for _ in range(50)}
    assert len(ids) == 50
