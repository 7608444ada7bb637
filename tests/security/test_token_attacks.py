"""Attacks on capability tokens (SPEC 3 and 8), each refused by ``Verifier.verify`` with its own code.

Every attack token is a valid token changed only in the property under attack, built with
``tests.helpers.forge`` and signed with the real key unless the attack is the signature,
so each test fails if the one check it targets is removed. The controls at the top prove
that ``forge`` itself makes tokens the verifier accepts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from broker.capability import Capability
from broker.errors import TokenRejected
from broker.token import MAX_TOKEN_BYTES, TYP, KeyRing, LocalSigner
from broker.token.algorithms import P256_ORDER, PrivateKey, verify_signature
from broker.token.b64 import b64url_decode, b64url_encode
from broker.token.codec import header_for
from broker.verify import Verifier
from tests.helpers import AUDIENCE, CAP, ISSUER, NOW, claims, forge, good_token, payload, verifier

DROP = object()  # a header override that leaves the field out
B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
EXP = claims().exp  # of every valid token here


# ---------------------------------------------------------------- helpers


def private_key(signer: LocalSigner) -> PrivateKey:
    return signer._key  # the fixtures' real private key: forge signs with a raw key


def header(signer: LocalSigner, **overrides: Any) -> dict[str, Any]:
    """The header a real token of ``signer`` carries, with fields replaced (``DROP`` removes one)."""
    out: dict[str, Any] = dict(header_for(signer.alg, signer.kid))
    for name, value in overrides.items():
        if value is DROP:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def signed(
    signer: LocalSigner,
    head: dict[str, Any] | bytes | None = None,
    body: dict[str, Any] | bytes | None = None,
) -> str:
    """A token with ``head`` and ``body`` (the valid ones by default), signed with the real key."""
    return forge(header(signer) if head is None else head, payload() if body is None else body, private_key(signer))


def unsigned(signer: LocalSigner, head: dict[str, Any] | None = None) -> str:
    """A valid token's header and payload with an empty signature, to sign some other way."""
    return forge(header(signer) if head is None else head, payload(), None, signature=b"")


def signing_input(token: str) -> bytes:
    return token.rsplit(".", 1)[0].encode("ascii")


def signature_of(token: str) -> bytes:
    return b64url_decode(token.rsplit(".", 1)[1])


def with_signature(token: str, signature: bytes) -> str:
    return f"{signing_input(token).decode('ascii')}.{b64url_encode(signature)}"


def replace_segment(token: str, index: int, segment: str) -> str:
    parts = token.split(".")
    parts[index] = segment
    return ".".join(parts)


def raw_json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def assert_rejected(v: Verifier, token: object, code: str) -> None:
    with pytest.raises(TokenRejected) as e:
        v.verify(token)
    assert e.value.code == code, e.value.reason


def padded_body(filler: int) -> dict[str, Any]:
    """A valid payload grown by about ``filler`` characters of extra, valid bucket capabilities."""
    caps = [CAP.to_json()]
    while filler > 0:
        n = min(filler, 250)
        segment = f"{len(caps):02d}" + "x" * n
        caps.append(Capability.build("bucket", f"s3://acme-reports/agents/t1/{segment}/", ["read"], "r").to_json())
        filler -= n
    return payload(cap=caps)


def tokens_around_size_cap(signer: LocalSigner) -> tuple[str, str]:
    """The longest signed, valid token of at most MAX_TOKEN_BYTES, and the shortest one over it."""
    lo, hi = 0, MAX_TOKEN_BYTES  # token length grows with the filler
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if len(signed(signer, body=padded_body(mid))) <= MAX_TOKEN_BYTES:
            lo = mid
        else:
            hi = mid
    return signed(signer, body=padded_body(lo)), signed(signer, body=padded_body(hi))


# ---------------------------------------------------------------- controls


@pytest.mark.parametrize("which", ["ed", "es"])
def test_control_untampered_forged_token_is_accepted(
    ring: KeyRing, ed_signer: LocalSigner, es_signer: LocalSigner, which: str
) -> None:
    """A token built by the same forge path as the attacks, untampered, verifies."""
    signer = ed_signer if which == "ed" else es_signer
    token = signed(signer)
    assert verifier(ring).verify(token).claims == claims()
    assert signing_input(token) == signing_input(good_token(signer))  # byte for byte what mint makes
    if which == "ed":  # Ed25519 is deterministic: the whole token is the minted one
        assert token == good_token(signer)


def test_control_one_second_before_expiry_with_zero_leeway_is_accepted(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """At exp - 1 with leeway 0 the token is still valid (boundary of the expiry test)."""
    assert verifier(ring, leeway=0, clock=lambda: float(EXP - 1)).verify(signed(ed_signer)).claims.exp == EXP


def test_control_lifetime_at_cap_is_accepted(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """exp - iat equal to max_ttl verifies (boundary of the lifetime-cap test)."""
    token = signed(ed_signer, body=payload(exp=NOW + 3600))
    assert verifier(ring, max_ttl=3600).verify(token).claims.exp == NOW + 3600


def test_control_token_at_size_cap_is_accepted(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """The longest padded token within 8 KiB verifies (boundary of the size test)."""
    token, _ = tokens_around_size_cap(ed_signer)
    assert MAX_TOKEN_BYTES - 3 <= len(token) <= MAX_TOKEN_BYTES
    assert len(verifier(ring).verify(token).capabilities) > 1


# ---------------------------------------------------------------- algorithm


@pytest.mark.parametrize("alg", ["none", "None", "noNE"])
@pytest.mark.parametrize("signature", ["empty", "real"])
def test_alg_none_is_rejected(ring: KeyRing, ed_signer: LocalSigner, alg: str, signature: str) -> None:
    """alg none (any spelling), unsigned or with a real signature, is refused."""
    head = header(ed_signer, alg=alg)
    token = forge(head, payload(), None, signature=b"") if signature == "empty" else signed(ed_signer, head)
    assert_rejected(verifier(ring), token, "bad_header")


@pytest.mark.parametrize("spelling", ["pem", "der", "jwk", "raw"])
def test_hs256_with_public_key_as_hmac_secret_is_rejected(ring: KeyRing, ed_signer: LocalSigner, spelling: str) -> None:
    """HS256 keyed with the EdDSA public key (key confusion) is refused."""
    public = ed_signer.public.key
    secret = {
        "pem": public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
        "der": public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
        "jwk": raw_json(ed_signer.public.to_jwk()).encode(),
        "raw": public.public_bytes(Encoding.Raw, PublicFormat.Raw),
    }[spelling]
    base = unsigned(ed_signer, header(ed_signer, alg="HS256"))
    token = with_signature(base, hmac.new(secret, signing_input(base), hashlib.sha256).digest())
    assert_rejected(verifier(ring), token, "bad_header")


def test_es256_header_with_ed25519_kid_is_rejected(
    ring: KeyRing, ed_signer: LocalSigner, es_signer: LocalSigner
) -> None:
    """alg ES256 naming the Ed25519 key, signed with the EC key, is refused: alg comes from the key."""
    token = forge(header(es_signer, kid=ed_signer.kid), payload(), private_key(es_signer))
    assert_rejected(verifier(ring), token, "bad_header")


def test_eddsa_header_with_ec_kid_is_rejected(ring: KeyRing, ed_signer: LocalSigner, es_signer: LocalSigner) -> None:
    """alg EdDSA naming the EC key, signed with the Ed25519 key, is refused: alg comes from the key."""
    token = forge(header(ed_signer, kid=es_signer.kid), payload(), private_key(ed_signer))
    assert_rejected(verifier(ring), token, "bad_header")


# ---------------------------------------------------------------- header fields


@pytest.mark.parametrize("field", ["jwk", "jku", "x5u", "x5c"])
def test_embedded_key_header_is_rejected(ring: KeyRing, ed_signer: LocalSigner, field: str) -> None:
    """A key or key location in the header (jwk, jku, x5u, x5c) is refused, never followed."""
    value = {
        "jwk": {k: v for k, v in ed_signer.public.to_jwk().items() if k != "kid"},
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": ["MIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGUgZm9yIGEgdGVzdA=="],
    }[field]
    assert_rejected(verifier(ring), signed(ed_signer, header(ed_signer, **{field: value})), "bad_header")


def test_crit_header_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """A crit header is refused: the profile understands no extension."""
    assert_rejected(verifier(ring), signed(ed_signer, header(ed_signer, crit=["exp"])), "bad_header")


@pytest.mark.parametrize(
    "typ",
    ["JWT", "cap+JWT", "CAP+JWT", "application/cap+jwt", DROP],
    ids=["JWT", "cap+JWT", "CAP+JWT", "mime", "missing"],
)
def test_wrong_typ_is_rejected(ring: KeyRing, ed_signer: LocalSigner, typ: object) -> None:
    """typ other than exactly cap+jwt, or missing, is refused (no cross-JWT confusion)."""
    assert_rejected(verifier(ring), signed(ed_signer, header(ed_signer, typ=typ)), "bad_header")


# ---------------------------------------------------------------- kid


def test_kid_path_traversal_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """kid ../../etc/passwd is refused by the kid grammar."""
    assert_rejected(verifier(ring), signed(ed_signer, header(ed_signer, kid="../../etc/passwd")), "bad_header")


def test_kid_sql_injection_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """kid x' OR '1'='1 is refused by the kid grammar."""
    assert_rejected(verifier(ring), signed(ed_signer, header(ed_signer, kid="x' OR '1'='1")), "bad_header")


@pytest.mark.parametrize("length", [65, 1000])
def test_kid_oversize_is_rejected(ring: KeyRing, ed_signer: LocalSigner, length: int) -> None:
    """kid longer than 64 characters is refused."""
    assert_rejected(verifier(ring), signed(ed_signer, header(ed_signer, kid="k" * length)), "bad_header")


@pytest.mark.parametrize("kid", [1, ["ed-1"], None], ids=["int", "list", "null"])
def test_kid_not_a_string_is_rejected(ring: KeyRing, ed_signer: LocalSigner, kid: object) -> None:
    """kid as int, list or null is refused."""
    assert_rejected(verifier(ring), signed(ed_signer, header(ed_signer, kid=kid)), "bad_header")


def test_kid_missing_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """A header without kid is refused."""
    assert_rejected(verifier(ring), signed(ed_signer, header(ed_signer, kid=DROP)), "bad_header")


def test_kid_unknown_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """A well-formed kid naming no key in the set is refused."""
    assert_rejected(verifier(ring), signed(ed_signer, header(ed_signer, kid="ed-2")), "unknown_key")


# ---------------------------------------------------------------- ECDSA signatures


def test_ecdsa_zero_signature_is_rejected(ring: KeyRing, es_signer: LocalSigner) -> None:
    """ES256 r = s = 0 (psychic signature, CVE-2022-21449) is refused."""
    assert_rejected(verifier(ring), with_signature(unsigned(es_signer), bytes(64)), "bad_signature")


def test_ecdsa_der_encoded_signature_is_rejected(ring: KeyRing, es_signer: LocalSigner) -> None:
    """A valid ES256 signature in DER instead of the JWS r || s form is refused."""
    base = unsigned(es_signer)
    der = private_key(es_signer).sign(signing_input(base), ec.ECDSA(hashes.SHA256()))
    es_signer.public.key.verify(der, signing_input(base), ec.ECDSA(hashes.SHA256()))  # the signature is valid
    assert_rejected(verifier(ring), with_signature(base, der), "bad_signature")


def test_ecdsa_high_s_signature_is_rejected(ring: KeyRing, es_signer: LocalSigner) -> None:
    """A valid ES256 signature with s replaced by n - s (malleated, high-S) is refused."""
    token = signed(es_signer)
    sig = signature_of(token)
    s = int.from_bytes(sig[32:], "big")
    high = sig[:32] + (P256_ORDER - s).to_bytes(32, "big")
    assert verify_signature(es_signer.public.key, signing_input(token), high, allow_high_s=True)
    assert_rejected(verifier(ring), with_signature(token, high), "bad_signature")


# ---------------------------------------------------------------- encoding and shape


@pytest.mark.parametrize("index", [0, 1, 2], ids=["header", "payload", "signature"])
def test_padded_segment_is_rejected(ring: KeyRing, ed_signer: LocalSigner, index: int) -> None:
    """A segment with its base64 = padding is refused."""
    token = signed(ed_signer, body=payload(task="t1x"))  # a valid payload whose encoding needs padding
    segment = token.split(".")[index]
    padded = segment + "=" * (-len(segment) % 4)
    assert padded != segment, "this segment needs no padding"
    assert_rejected(verifier(ring), replace_segment(token, index, padded), "malformed")


@pytest.mark.parametrize(
    "char", ["+", "/", " ", "\n", "é", "\uff21"], ids=["plus", "slash", "space", "newline", "e-acute", "fullwidth-A"]
)
@pytest.mark.parametrize("index", [0, 1, 2], ids=["header", "payload", "signature"])
def test_non_base64url_character_is_rejected(ring: KeyRing, ed_signer: LocalSigner, char: str, index: int) -> None:
    """A character outside [A-Za-z0-9_-] in any segment is refused."""
    token = signed(ed_signer)
    segment = token.split(".")[index]
    assert_rejected(verifier(ring), replace_segment(token, index, segment[:8] + char + segment[9:]), "malformed")


def test_two_segments_are_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """header.payload without a signature segment is refused."""
    assert_rejected(verifier(ring), signing_input(signed(ed_signer)).decode(), "malformed")


def test_four_segments_are_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """A fourth segment after a valid token is refused."""
    token = signed(ed_signer)
    assert_rejected(verifier(ring), f"{token}.{token.split('.')[2]}", "malformed")


def test_empty_token_is_rejected(ring: KeyRing) -> None:
    """The empty string is refused."""
    assert_rejected(verifier(ring), "", "malformed")


@pytest.mark.parametrize("kind", ["bytes", "None", "int"])
def test_non_string_token_is_rejected(ring: KeyRing, ed_signer: LocalSigner, kind: str) -> None:
    """A token that is not a str (bytes, None, int) is refused."""
    token = {"bytes": signed(ed_signer).encode("ascii"), "None": None, "int": 0}[kind]
    assert_rejected(verifier(ring), token, "malformed")


def test_token_over_8_kib_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """A signed, otherwise valid token just over 8 KiB is refused."""
    _, token = tokens_around_size_cap(ed_signer)
    assert MAX_TOKEN_BYTES < len(token) <= MAX_TOKEN_BYTES + 3
    assert_rejected(verifier(ring), token, "too_large")


def test_non_canonical_base64url_signature_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """The signature's last character changed to another spelling of the same bytes is refused."""
    token = signed(ed_signer)
    sig = token.split(".")[2]
    last = B64URL_ALPHABET[B64URL_ALPHABET.index(sig[-1]) ^ 1]  # flips an unused low bit
    spelled = sig[:-1] + last
    assert base64.urlsafe_b64decode(spelled + "==") == signature_of(token)
    assert_rejected(verifier(ring), replace_segment(token, 2, spelled), "malformed")


# ---------------------------------------------------------------- JSON


@pytest.mark.parametrize(
    "raw",
    [
        '{{"alg":"none","alg":"{alg}","typ":"{typ}","kid":"{kid}"}}',
        '{{"alg":"{alg}","typ":"{typ}","kid":"{kid}","\\u0061lg":"{alg}"}}',
    ],
    ids=["plain", "escaped"],
)
def test_duplicate_key_in_header_is_rejected(ring: KeyRing, ed_signer: LocalSigner, raw: str) -> None:
    """A header with alg twice (the last one valid) is refused."""
    head = raw.format(alg=ed_signer.alg, typ=TYP, kid=ed_signer.kid).encode()
    assert_rejected(verifier(ring), signed(ed_signer, head), "malformed")


def test_duplicate_key_in_payload_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """A signed payload with aud twice (the last one the right audience) is refused."""
    good = raw_json(payload())
    body = good.replace(f'"aud":"{AUDIENCE}"', f'"aud":"other-service","aud":"{AUDIENCE}"')
    assert body != good
    assert_rejected(verifier(ring), signed(ed_signer, body=body.encode()), "malformed")


@pytest.mark.parametrize("bom", [b"", b"\xff\xfe"], ids=["no-bom", "bom"])
def test_utf16_payload_is_rejected(ring: KeyRing, ed_signer: LocalSigner, bom: bytes) -> None:
    """A signed payload encoded as UTF-16-LE, with or without BOM, is refused."""
    body = bom + raw_json(payload()).encode("utf-16-le")
    assert_rejected(verifier(ring), signed(ed_signer, body=body), "malformed")


def test_utf8_bom_payload_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """A signed UTF-8 payload with a BOM is refused."""
    body = b"\xef\xbb\xbf" + raw_json(payload()).encode()
    assert_rejected(verifier(ring), signed(ed_signer, body=body), "malformed")


# ---------------------------------------------------------------- claims

TIME_SPELLINGS: dict[str, tuple[Any, str]] = {
    # name: (value, or a function of the claim's real value), expected code
    "string": (str, "bad_claims"),
    "bool": (lambda _: True, "bad_claims"),
    "float": (float, "bad_claims"),
    "beyond-max-time": (lambda _: 1 << 40, "bad_claims"),
    "10**20": (lambda _: 10**20, "malformed"),  # refused by the strict JSON integer bound
    "10**400": (lambda _: 10**400, "malformed"),
}


@pytest.mark.parametrize("spelling", list(TIME_SPELLINGS))
@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_time_claim_of_wrong_type_or_size_is_rejected(
    ring: KeyRing, ed_signer: LocalSigner, claim: str, spelling: str
) -> None:
    """exp, nbf and iat as string, bool, float or huge integer are refused."""
    spell, code = TIME_SPELLINGS[spelling]
    body = payload(**{claim: spell(payload()[claim])})
    assert_rejected(verifier(ring), signed(ed_signer, body=body), code)


def test_wrong_audience_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """A signed token for another audience is refused."""
    assert_rejected(verifier(ring), signed(ed_signer, body=payload(aud="other-service")), "wrong_audience")


def test_missing_audience_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """A signed token without aud is refused."""
    assert_rejected(verifier(ring), signed(ed_signer, body=payload(aud=None)), "bad_claims")


def test_audience_list_containing_ours_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """aud as a list that contains the right audience is refused: exactly one audience string."""
    assert_rejected(verifier(ring), signed(ed_signer, body=payload(aud=[AUDIENCE])), "bad_claims")


@pytest.mark.parametrize("iss", [ISSUER.replace("broker", "Broker"), ISSUER.upper(), ISSUER + "/"])
def test_issuer_not_exactly_equal_is_rejected(ring: KeyRing, ed_signer: LocalSigner, iss: str) -> None:
    """iss differing by case or by a trailing slash is refused: exact string match."""
    assert_rejected(verifier(ring), signed(ed_signer, body=payload(iss=iss)), "wrong_issuer")


@pytest.mark.parametrize("after_exp", [0, 1])
def test_expired_with_zero_leeway_is_rejected(ring: KeyRing, ed_signer: LocalSigner, after_exp: int) -> None:
    """At exp and at exp + 1 s, with leeway 0, the token is expired."""
    v = verifier(ring, leeway=0, clock=lambda: float(EXP + after_exp))
    assert_rejected(v, signed(ed_signer), "expired")


def test_lifetime_over_cap_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """exp - iat of 3601 s with max_ttl 3600 is refused."""
    token = signed(ed_signer, body=payload(exp=NOW + 3601))
    assert_rejected(verifier(ring, max_ttl=3600), token, "ttl_exceeds_max")


def test_unknown_extra_claim_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """A signed token with a claim outside the profile is refused, not ignored."""
    assert_rejected(verifier(ring), signed(ed_signer, body=payload(admin=True)), "bad_claims")


@pytest.mark.parametrize(
    "act",
    [
        {"sub": "agent:a", "act": None},  # a second spelling of "no further actor"
        {"sub": "agent:a", "act": {"sub": "agent:b", "act": None}},
        {"sub": "agent:a", "extra": 1},
        {"sub": "a"},
    ],
)
def test_malformed_delegation_chain_is_rejected(ring: KeyRing, ed_signer: LocalSigner, act: dict[str, Any]) -> None:
    """An act chain has one spelling: a null inner act or a bare subject is refused."""
    assert_rejected(verifier(ring), signed(ed_signer, body=payload(act=act)), "bad_claims")


def test_well_formed_delegation_chain_is_accepted(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """Control for the test above: a proper nested act chain verifies."""
    act = {"sub": "agent:a", "act": {"sub": "agent:b"}}
    grant = verifier(ring).verify(signed(ed_signer, body=payload(act=act)))
    assert grant.claims.act is not None
    assert grant.claims.act.depth == 2


# ---------------------------------------------------------------- signature binding


def test_signature_spliced_from_another_token_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """The signature of another valid token on this header.payload is refused."""
    other = signed(ed_signer, body=payload(jti="test-token-id-00000002"))
    verifier(ring).verify(other)  # a valid signature, of other bytes
    assert_rejected(verifier(ring), with_signature(signed(ed_signer), signature_of(other)), "bad_signature")


def test_capability_widened_without_resigning_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """cap widened to the whole bucket by editing the payload, signature kept, is refused."""
    wide = Capability.build("bucket", "s3://acme-reports/", ["read", "write", "delete"], CAP.scope)
    token = signed(ed_signer)
    tampered = forge(header(ed_signer), payload(cap=[wide.to_json()]), None, signature=signature_of(token))
    assert_rejected(verifier(ring), tampered, "bad_signature")


# ---------------------------------------------------------------- key binding


def test_dpop_bound_token_used_as_plain_bearer_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """A stolen copy of a cnf-bound token cannot be replayed without a checked proof."""
    assert_rejected(verifier(ring), good_token(ed_signer, cnf_jkt="A" * 43), "proof_required")


# ---------------------------------------------------------------- claim shapes and time order


def test_nbf_after_exp_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """A token whose validity window is empty or inverted is malformed, whatever the clock says."""
    assert_rejected(verifier(ring), signed(ed_signer, body=payload(nbf=NOW + 300, exp=NOW + 300)), "bad_claims")


def test_nbf_before_iat_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """nbf earlier than iat would let a token claim validity from before it existed."""
    assert_rejected(verifier(ring), signed(ed_signer, body=payload(nbf=NOW - 100)), "bad_claims")


def test_token_issued_in_the_future_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """iat (and so nbf) beyond now + leeway: not valid yet."""
    body = payload(iat=NOW + 100, nbf=NOW + 100, exp=NOW + 400)
    assert_rejected(verifier(ring, clock=lambda: float(NOW)), signed(ed_signer, body=body), "not_yet_valid")


@pytest.mark.parametrize("claim", ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "task", "cap"])
def test_missing_required_claim_is_rejected(ring: KeyRing, ed_signer: LocalSigner, claim: str) -> None:
    """Every claim of the profile is required; pyjwt would accept most of them missing."""
    body = payload()
    del body[claim]
    assert_rejected(verifier(ring), signed(ed_signer, body=body), "bad_claims")


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("iss", 7),
        ("iss", ""),
        ("sub", "analyst"),  # not agent:<name>
        ("sub", "agent:Analyst"),
        ("jti", "short"),
        ("jti", "x" * 21 + "!"),
        ("task", "-starts-with-dash"),
        ("task", "a" * 129),
        ("cap", []),
        ("cap", "bucket"),
        ("cap", [{"kind": "bucket", "resource": "s3://acme-reports/agents/../x/", "actions": ["read"], "scope": "s"}]),
        ("cap", [{"kind": "bucket", "resource": "s3://acme-reports/", "actions": ["fly"], "scope": "s"}]),
        ("cnf", {"jkt": "short"}),
        ("cnf", {"jkt": "A" * 43, "x5t": "y"}),
        ("cnf", "A" * 43),
    ],
)
def test_malformed_claim_is_rejected(ring: KeyRing, ed_signer: LocalSigner, claim: str, value: object) -> None:
    """Each claim is type- and grammar-checked, even under a valid signature."""
    assert_rejected(verifier(ring), signed(ed_signer, body=payload(**{claim: value})), "bad_claims")


def test_overlong_delegation_chain_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """An act chain deeper than the bound is refused (no unbounded recursion on attacker input)."""
    act: dict[str, Any] = {"sub": "agent:a0"}
    for i in range(1, 9):
        act = {"sub": f"agent:a{i}", "act": act}
    assert_rejected(verifier(ring), signed(ed_signer, body=payload(act=act)), "bad_claims")


def test_a_universal_signature_under_a_small_order_key_is_refused() -> None:
    """Ed25519's identity point as public key, R = identity, S = 0: "valid" for every
    message under a cofactorless check that admits small-order keys (OpenSSL does)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from broker.token.algorithms import verify_signature

    identity = bytes([1]) + bytes(31)
    key = ed25519.Ed25519PublicKey.from_public_bytes(identity)
    for message in (b"", b"any message", b"e" * 420):
        assert verify_signature(key, message, identity + bytes(32)) is False
