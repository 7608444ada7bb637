"""The verifier's memory of tokens it accepted never accepts what a fresh verification
would reject; and the first-sight fast paths (header, base64url, capabilities) are as
strict as the step-by-step checks they shortcut.

Each cache test first shows the token IS remembered (the same ``Grant`` object comes
back), so its rejection is a rejection of a remembered token, not of a fresh one.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.capability import Capability
from broker.dpop import DpopKey
from broker.errors import InvalidRequest, TokenRejected
from broker.token import KeyRing, LocalSigner
from broker.token.b64 import Base64Error, b64url_decode, b64url_encode
from broker.token.keys import KeySet
from broker.verify import StaticRevocationList, Verifier
from tests.helpers import AUDIENCE, ISSUER, JTI, NOW, forge, good_token, payload, verifier

AT = NOW + 10  # tests.helpers.verifier's clock
LEEWAY = 30  # the default
KEY = DpopKey.generate("EdDSA")
URL = "https://storage.internal/reports/a.csv"


def jti(n: int) -> str:
    return f"cache-test-token-{n:05d}"


def code_of(v: Verifier, token: str, **kw: Any) -> str:
    with pytest.raises(TokenRejected) as e:
        v.verify(token, **kw)
    return e.value.code


def remembered(v: Verifier, token: str, **kw: Any) -> None:
    """Verify twice; the second answer is the remembered grant itself."""
    first = v.verify(token, **kw)
    assert v.verify(token, **kw) is first


class SwappableKeys:
    """A key lookup whose key set the test replaces (as a JWKS refresh would)."""

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys

    def key_for(self, kid: str) -> Any:
        return self.keys.key_for(kid)


def swappable_verifier(keys: SwappableKeys, **kw: Any) -> Verifier:
    v = verifier(KeyRing([LocalSigner.generate()]), **kw)
    v._keys = keys
    return v


# ------------------------------------------------------------------ times


def test_a_remembered_token_is_rejected_once_expired(ring: KeyRing, ed_signer: LocalSigner) -> None:
    token = good_token(ed_signer)  # exp = NOW + 300
    v = verifier(ring)
    remembered(v, token)
    exp = NOW + 300
    assert v.verify(token, now=exp + LEEWAY - 1).token_id == JTI
    assert code_of(v, token, now=exp + LEEWAY) == "expired"
    assert code_of(v, token, now=exp + LEEWAY + 3600) == "expired"


def test_a_remembered_token_is_not_valid_before_its_nbf(ring: KeyRing, ed_signer: LocalSigner) -> None:
    token = good_token(ed_signer)  # nbf = NOW
    v = verifier(ring)
    remembered(v, token)
    assert v.verify(token, now=NOW - LEEWAY).token_id == JTI
    assert code_of(v, token, now=NOW - LEEWAY - 1) == "not_yet_valid"


def test_an_expired_token_is_forgotten_and_stays_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    token = good_token(ed_signer)
    v = verifier(ring)
    grant = v.verify(token)
    assert code_of(v, token, now=NOW + 300 + LEEWAY) == "expired"
    assert v.verify(token) is not grant  # verified afresh: the entry was dropped


# ------------------------------------------------------------------ keys


def test_a_key_removed_from_the_key_set_stops_a_remembered_token(ring: KeyRing, ed_signer: LocalSigner) -> None:
    keys = SwappableKeys(ring.keyset)
    v = swappable_verifier(keys)
    token = good_token(ed_signer)
    remembered(v, token)
    keys.keys = KeySet(k for k in ring.keyset if k.kid != ed_signer.kid)
    assert code_of(v, token) == "unknown_key"
    keys.keys = ring.keyset  # back: verified afresh, accepted
    assert v.verify(token).token_id == JTI


def test_another_key_under_the_same_kid_reverifies_the_signature(ring: KeyRing, ed_signer: LocalSigner) -> None:
    keys = SwappableKeys(ring.keyset)
    v = swappable_verifier(keys)
    token = good_token(ed_signer)
    remembered(v, token)
    impostor = LocalSigner.generate("EdDSA", kid=ed_signer.kid)
    keys.keys = KeySet([impostor.public])
    assert code_of(v, token) == "bad_signature"


def test_an_equal_key_from_a_refreshed_key_set_still_serves_the_remembered_token(
    ring: KeyRing, ed_signer: LocalSigner
) -> None:
    keys = SwappableKeys(ring.keyset)
    v = swappable_verifier(keys)
    token = good_token(ed_signer)
    grant = v.verify(token)
    keys.keys = KeySet.from_jwks(ring.keyset.to_jwks())  # new objects, same keys
    assert v.verify(token) is grant


def test_a_remote_key_set_that_drops_the_key_stops_a_remembered_token(ring: KeyRing, ed_signer: LocalSigner) -> None:
    documents = [json.dumps(ring.keyset.to_jwks()).encode()]
    v = Verifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_url="https://broker.test/.well-known/jwks.json",
        fetch=lambda _url: documents[-1],
        jwks_cooldown=0.001,
        jwks_max_stale=0.001,  # refresh on every use
        clock=lambda: float(AT),
    )
    token = good_token(ed_signer)
    v.verify(token)
    documents.append(json.dumps(KeySet(k for k in ring.keyset if k.kid != ed_signer.kid).to_jwks()).encode())
    time.sleep(0.01)  # past the refresh interval: the next use refetches
    assert code_of(v, token) == "unknown_key"


# ------------------------------------------------------------------ revocation and introspection


def test_revocation_after_the_token_was_remembered_rejects_it(ring: KeyRing, ed_signer: LocalSigner) -> None:
    revoked = StaticRevocationList()
    v = verifier(ring, revocation=revoked)
    token = good_token(ed_signer)
    remembered(v, token)
    revoked.token_ids.add(JTI)
    assert code_of(v, token) == "revoked"
    revoked.token_ids.clear()
    revoked.revoke_task("t1", "analyst")
    assert code_of(v, token) == "revoked"
    revoked.tasks.clear()
    revoked.agents_before["analyst"] = NOW
    assert code_of(v, token) == "revoked"


def test_a_revocation_source_that_cannot_answer_fails_a_remembered_token_closed(
    ring: KeyRing, ed_signer: LocalSigner
) -> None:
    class Flaky:
        down = False

        def is_revoked(self, claims: object) -> bool:
            if self.down:
                raise ConnectionError("down")
            return False

    flaky = Flaky()
    v = verifier(ring, revocation=flaky)
    token = good_token(ed_signer)
    remembered(v, token)
    flaky.down = True
    assert code_of(v, token) == "revocation_unavailable"


def test_introspection_is_asked_for_a_remembered_token(ring: KeyRing, ed_signer: LocalSigner) -> None:
    class Broker:
        active = True

        def is_active(self, token: str, **proof: str) -> bool:
            return self.active

    broker = Broker()
    v = verifier(ring, introspection=broker)
    token = good_token(ed_signer)
    remembered(v, token)
    broker.active = False
    assert code_of(v, token) == "revoked"


# ------------------------------------------------------------------ DPoP


def test_a_bound_token_remembered_with_a_proof_still_needs_a_fresh_proof(ring: KeyRing, ed_signer: LocalSigner) -> None:
    token = good_token(ed_signer, cnf_jkt=KEY.jkt)
    v = verifier(ring)
    proof = KEY.proof("GET", URL, now=AT, access_token=token)
    first = v.verify(token, dpop=proof, method="GET", url=URL)
    again = v.verify(token, dpop=KEY.proof("GET", URL, now=AT, access_token=token), method="GET", url=URL)
    assert again is first  # remembered
    assert code_of(v, token) == "proof_required"
    assert code_of(v, token, dpop=proof, method="GET", url=URL) == "bad_proof"  # replayed
    other_url = KEY.proof("GET", URL + "x", now=AT, access_token=token)
    assert code_of(v, token, dpop=other_url, method="GET", url=URL) == "bad_proof"
    thief = DpopKey.generate("EdDSA").proof("GET", URL, now=AT, access_token=token)
    assert code_of(v, token, dpop=thief, method="GET", url=URL) == "bad_proof"


# ------------------------------------------------------------------ scope of the memory


def test_another_verifier_does_not_share_the_memory(ring: KeyRing, ed_signer: LocalSigner) -> None:
    token = good_token(ed_signer)
    remembered(verifier(ring), token)
    other = Verifier(issuer=ISSUER, audience="other-service", jwks=ring.keyset, clock=lambda: float(AT))
    assert code_of(other, token) == "wrong_audience"
    strict = Verifier(issuer=ISSUER, audience=AUDIENCE, jwks=ring.keyset, clock=lambda: float(AT), max_ttl=60)
    assert code_of(strict, token) == "ttl_exceeds_max"


def test_the_settings_a_remembered_token_was_checked_under_cannot_be_changed(ring: KeyRing) -> None:
    v = verifier(ring)
    for name in ("issuer", "audience", "leeway", "max_ttl"):
        with pytest.raises(AttributeError):
            setattr(v, name, "x")


def test_the_memory_is_bounded_and_forgets_the_oldest_first(ring: KeyRing, ed_signer: LocalSigner) -> None:
    v = verifier(ring, cache_size=3)
    tokens = [good_token(ed_signer, jti=jti(n)) for n in range(5)]
    grants = [v.verify(t) for t in tokens]
    assert len(v._seen) == 3
    assert v.verify(tokens[4]) is grants[4]
    assert v.verify(tokens[0]) is not grants[0]  # forgotten, verified afresh


def test_cache_size_zero_remembers_nothing(ring: KeyRing, ed_signer: LocalSigner) -> None:
    v = verifier(ring, cache_size=0)
    token = good_token(ed_signer)
    assert v.verify(token) is not v.verify(token)


@pytest.mark.parametrize("size", [-1, 1.5, "10"])
def test_cache_size_must_be_a_non_negative_integer(ring: KeyRing, size: object) -> None:
    with pytest.raises(ValueError, match="cache_size"):
        verifier(ring, cache_size=size)


def test_a_rejected_token_is_not_remembered(ring: KeyRing, ed_signer: LocalSigner) -> None:
    revoked = StaticRevocationList()
    revoked.token_ids.add(JTI)
    v = verifier(ring, revocation=revoked)
    token = good_token(ed_signer)
    assert code_of(v, token) == "revoked"
    assert token not in v._seen


def test_a_str_subclass_is_verified_afresh(ring: KeyRing, ed_signer: LocalSigner) -> None:
    class Token(str):
        __slots__ = ()

    token = good_token(ed_signer)
    v = verifier(ring)
    grant = v.verify(token)
    assert v.verify(Token(token)) is not grant


# ------------------------------------------------------------------ the cache never changes an answer

TOKENS = 4


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("verify"), st.integers(0, TOKENS - 1), st.integers(-100, 700)),
            st.tuples(st.just("revoke"), st.integers(0, TOKENS - 1), st.just(0)),
            st.tuples(st.just("unrevoke"), st.integers(0, TOKENS - 1), st.just(0)),
            st.tuples(st.just("cut_off"), st.just(0), st.integers(-10, 10)),
            st.tuples(st.just("drop_key"), st.just(0), st.just(0)),
            st.tuples(st.just("restore_key"), st.just(0), st.just(0)),
        ),
        max_size=40,
    )
)
def test_a_caching_verifier_answers_exactly_as_a_fresh_one(
    ring: KeyRing, ed_signer: LocalSigner, steps: list[tuple[str, int, int]]
) -> None:
    revoked = StaticRevocationList()
    keys = SwappableKeys(ring.keyset)
    cached = swappable_verifier(keys, revocation=revoked, cache_size=2)
    fresh = swappable_verifier(keys, revocation=revoked, cache_size=0)
    tokens = [good_token(ed_signer, jti=jti(n), ttl=60 * (n + 1), now=NOW + 50 * n) for n in range(TOKENS)]

    def answer(v: Verifier, token: str, at: int) -> str:
        try:
            return v.verify(token, now=at).token_id
        except TokenRejected as e:
            return e.code

    for action, n, value in steps:
        if action == "verify":
            assert answer(cached, tokens[n], NOW + value) == answer(fresh, tokens[n], NOW + value)
        elif action == "revoke":
            revoked.token_ids.add(jti(n))
        elif action == "unrevoke":
            revoked.token_ids.discard(jti(n))
        elif action == "cut_off":
            revoked.agents_before["analyst"] = NOW + value
        elif action == "drop_key":
            keys.keys = KeySet(k for k in ring.keyset if k.kid != ed_signer.kid)
        else:
            keys.keys = ring.keyset


# ------------------------------------------------------------------ first-sight fast paths


def reference_b64url_decode(text: str) -> bytes:
    """The decoder as first written: regex, pad, decode, re-encode and compare."""
    if not all(c.isascii() and (c.isalnum() or c in "-_") for c in text) or len(text) % 4 == 1:
        raise Base64Error("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise Base64Error("not base64url") from e
    if b64url_encode(data) != text:
        raise Base64Error("non-canonical base64url")
    return data


def outcome(decode: Any, text: str) -> object:
    try:
        return decode(text)
    except Base64Error as e:
        return str(e)


@settings(max_examples=500)
@given(st.text(alphabet="AQgwBCxyz09-_=+/. é\n", max_size=12))
def test_the_base64url_decoder_answers_as_the_reference_does(text: str) -> None:
    assert outcome(b64url_decode, text) == outcome(reference_b64url_decode, text)


@given(st.binary(max_size=40))
def test_every_encoding_decodes_back_and_no_other_spelling_does(data: bytes) -> None:
    text = b64url_encode(data)
    assert b64url_decode(text) == data
    if text and len(text) % 4:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        for other in alphabet:
            spelled = text[:-1] + other
            if spelled != text and outcome(b64url_decode, spelled) == data:
                pytest.fail(f"{spelled!r} also decodes to the same bytes")


def test_a_remembered_header_does_not_excuse_a_bad_signature_or_payload(ed_signer: LocalSigner) -> None:
    v = verifier(KeyRing([ed_signer]))
    token = good_token(ed_signer)
    v.verify(token)  # the header is now known
    head, body, sig = token.split(".")
    forged_sig = sig[:10] + ("B" if sig[10] == "A" else "A") + sig[11:]
    assert code_of(v, f"{head}.{body}.{forged_sig}") == "bad_signature"
    assert code_of(v, f"{head}.{body}.{sig}=") == "malformed"
    changed = body[:10] + ("B" if body[10] == "A" else "A") + body[11:]
    assert code_of(v, f"{head}.{changed}.{sig}") == "bad_signature"
    other = forge({"alg": "EdDSA", "typ": "cap+jwt", "kid": ed_signer.kid, "jku": "x"}, payload(), None, signature=b"")
    assert code_of(v, other) == "bad_header"


def test_a_header_sharing_the_encoded_ending_of_a_remembered_one_is_checked_afresh(ed_signer: LocalSigner) -> None:
    v = verifier(KeyRing([ed_signer]))
    token = good_token(ed_signer)
    v.verify(token)  # the canonical header is now known
    good = json.dumps({"alg": "EdDSA", "typ": "cap+jwt", "kid": ed_signer.kid}, separators=(",", ":"))
    for n in range(3):  # a "jku" in front, padded so the rest encodes to the same characters
        bad = '{"jku":"https://evil.example/' + "x" * n + '",' + good[1:]
        if (len(bad) - len(good)) % 3 == 0:
            break
    head, bad_head = token.split(".")[0], b64url_encode(bad.encode())
    assert bad_head.endswith(head[-40:])  # the same ending, a different header
    forged = forge(bad.encode(), payload(), ed_signer._key)  # signed with the real key
    assert code_of(v, forged) == "bad_header"


def test_a_remembered_capability_does_not_excuse_a_variant_of_it() -> None:
    good = {"kind": "bucket", "resource": "s3://acme-reports/agents/t1/", "actions": ["read"], "scope": "reports"}
    assert Capability.from_json(good) is Capability.from_json(dict(good))
    variants: list[Any] = [
        {**good, "actions": ["read", "read"]},
        {**good, "actions": ["write", "read"]},
        {**good, "actions": [["read"]]},
        {**good, "actions": [{"read": 1}]},
        {**good, "actions": ("read",)},
        {**good, "resource": "s3://acme-reports/agents/t1/../"},
        {**good, "scope": "Reports"},
        {**good, "kind": "git"},
        {**good, "extra": 1},
    ]
    for variant in variants:
        with pytest.raises(InvalidRequest):
            Capability.from_json(variant)
    assert Capability.from_json(good) == Capability.build("bucket", good["resource"], ["read"], "reports")
