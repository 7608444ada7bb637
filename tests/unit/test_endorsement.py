"""Endorsements (broker/token/endorsement.py): the format, its strict verification, and
the time windows. Pure: a local key stands in for the Transit key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from broker.errors import TokenRejected
from broker.token.algorithms import P256_ORDER, Algorithm
from broker.token.b64 import b64url_decode, b64url_encode
from broker.token.codec import TYP
from broker.token.endorsement import (
    ENDORSEMENT_TYP,
    MAX_PUBLISH_TAIL,
    MAX_SIGN_SPAN,
    PUBLISH_MARGIN,
    Endorsement,
    EndorsementError,
    Windows,
    claimed_publish_until,
    endorse_locally,
    endorsement_payload,
    new_session_kid,
    statement_input,
    verify_endorsement,
    windows,
)
from broker.token.keys import KeySet, LocalSigner
from broker.token.mint import mint
from broker.token.verify import MAX_LEEWAY, verify_token
from tests.helpers import AUDIENCE, ISSUER, NOW, claims, forge

ALGS: list[Algorithm] = ["EdDSA", "ES256"]
W = windows(NOW, 1200, 3600)


def long_term(alg: Algorithm = "EdDSA") -> LocalSigner:
    return LocalSigner.generate(alg, "capbroker-v1")


def session(alg: Algorithm = "EdDSA") -> LocalSigner:
    return LocalSigner.generate(alg, new_session_kid())


def endorsed(endorser: LocalSigner, key: LocalSigner, *, issuer: str = ISSUER, w: Windows = W) -> tuple[str, KeySet]:
    return endorse_locally(endorsement_payload(key.public, issuer, w), endorser), KeySet([endorser.public])


def raw(endorser: LocalSigner, header: dict[str, Any], payload: dict[str, Any] | bytes) -> str:
    """A statement with any header and payload, really signed by ``endorser``."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
    return forge(header, body, endorser._key)


def good_payload(key: LocalSigner, **overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(endorsement_payload(key.public, ISSUER, W))
    for name, value in overrides.items():
        if value is None:
            out.pop(name)
        else:
            out[name] = value
    return out


def header(endorser: LocalSigner, **overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"alg": endorser.alg, "typ": ENDORSEMENT_TYP, "kid": endorser.kid}
    for name, value in overrides.items():
        if value is None:
            out.pop(name)
        else:
            out[name] = value
    return out


def refused(compact: object, keys: KeySet, code: str, *, alg: Algorithm = "EdDSA", issuer: str = ISSUER) -> None:
    with pytest.raises(EndorsementError) as e:
        verify_endorsement(compact, keys, issuer=issuer, alg=alg)
    assert e.value.code == code


# ---------------------------------------------------------------- the format


@pytest.mark.parametrize("long_alg", ALGS)
@pytest.mark.parametrize("alg", ALGS)
def test_an_endorsement_verifies_and_says_what_was_endorsed(long_alg: Algorithm, alg: Algorithm) -> None:
    endorser, key = long_term(long_alg), session(alg)
    compact, keys = endorsed(endorser, key)
    e = verify_endorsement(compact, keys, issuer=ISSUER, alg=alg)
    assert e == Endorsement(key.public, ISSUER, W, "capbroker-v1", compact)
    assert (e.kid, e.not_before, e.sign_until, e.publish_until) == (key.kid, NOW, NOW + 1200, NOW + 1200 + 3720)


def test_the_format_is_canonical_and_fixed() -> None:
    """Field order, compact JSON, the header as the spec block in the module says."""
    endorser, key = long_term(), session()
    compact, _ = endorsed(endorser, key)
    h, p, _ = compact.split(".")
    assert b64url_decode(h) == (b'{"alg":"EdDSA","typ":"capbroker-endorsement+jwt","kid":"capbroker-v1"}')
    x = key.public.to_jwk()["x"]
    assert b64url_decode(p).decode() == (
        '{"iss":"https://broker.test","jwk":{"kty":"OKP","crv":"Ed25519","x":"' + x + '","kid":"' + key.kid + '",'
        '"alg":"EdDSA","use":"sig"},"not_before":1790000000,"sign_until":1790001200,"publish_until":1790004920}'
    )
    assert statement_input("EdDSA", ENDORSEMENT_TYP, "capbroker-v1", b64url_decode(p)) == f"{h}.{p}".encode()


def test_session_kids_are_never_transit_kids() -> None:
    kids = {new_session_kid() for _ in range(200)}
    assert len(kids) == 200
    for kid in kids:
        assert kid.startswith("s-")
        assert len(kid) == 18
        assert "-v" not in kid  # a Transit kid is <key>-v<N>
    with pytest.raises(ValueError, match="session kid"):
        endorsement_payload(LocalSigner.generate("EdDSA", "capbroker-v2").public, ISSUER, W)


# ---------------------------------------------------------------- refused


def test_a_key_the_attacker_endorses_with_their_own_key_is_refused() -> None:
    """Someone with Redis write access but not the Transit key: they can sign an
    endorsement with a key of their own, under the real long-term kid."""
    endorser, attacker, key = long_term(), LocalSigner.generate("EdDSA", "capbroker-v1"), session()
    compact, _ = endorsed(attacker, key)
    refused(compact, KeySet([endorser.public]), "bad_signature")


def test_a_tampered_endorsement_is_refused_byte_by_byte() -> None:
    endorser, key = long_term(), session()
    compact, keys = endorsed(endorser, key)
    for i in range(len(compact)):
        for replacement in {"A", "B", "_"} - {compact[i]}:
            changed = compact[:i] + replacement + compact[i + 1 :]
            with pytest.raises(EndorsementError):
                verify_endorsement(changed, keys, issuer=ISSUER, alg="EdDSA")


def test_another_key_swapped_into_a_genuine_endorsement_is_refused() -> None:
    endorser, key, attacker = long_term(), session(), session()
    compact, keys = endorsed(endorser, key)
    h, _, sig = compact.split(".")
    swapped = b64url_encode(endorsement_payload(attacker.public, ISSUER, W))
    refused(f"{h}.{swapped}.{sig}", keys, "bad_signature")


def test_an_unknown_or_retired_long_term_key_is_refused() -> None:
    endorser, key = long_term(), session()
    compact, _ = endorsed(endorser, key)
    refused(compact, KeySet([]), "unknown_endorser")
    refused(compact, KeySet([LocalSigner.generate("EdDSA", "capbroker-v2").public]), "unknown_endorser")


def test_the_long_term_keys_algorithm_comes_from_the_key() -> None:
    endorser, key = long_term("ES256"), session()
    compact = raw(endorser, header(endorser, alg="EdDSA"), good_payload(key))
    refused(compact, KeySet([endorser.public]), "malformed")


@pytest.mark.parametrize(
    "changes",
    [
        {"typ": TYP},  # a token header: never an endorsement
        {"typ": None},
        {"typ": "capbroker-endorsement+JWT"},
        {"alg": "HS256"},
        {"alg": "none"},
        {"kid": "../x"},
        {"kid": None},
        {"jku": "https://evil.test/jwks"},
        {"crit": ["exp"]},
    ],
)
def test_a_header_outside_the_profile_is_refused(changes: dict[str, Any]) -> None:
    endorser, key = long_term(), session()
    refused(raw(endorser, header(endorser, **changes), good_payload(key)), KeySet([endorser.public]), "malformed")


def jwk_of(key: LocalSigner, **changes: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = key.public.to_jwk()
    for name, value in changes.items():
        if value is None:
            jwk.pop(name)
        else:
            jwk[name] = value
    return jwk


@pytest.mark.parametrize(
    "payload",
    [
        lambda k: good_payload(k, extra=1),  # an unknown field: refused, not ignored
        lambda k: good_payload(k, iss=None),
        lambda k: {**dict(reversed(list(good_payload(k).items())))},  # the order is part of the format
        lambda k: good_payload(k, iss=["https://broker.test"]),
        lambda k: good_payload(k, jwk=jwk_of(k, d=b64url_encode(b"\0" * 32))),  # a private part
        lambda k: good_payload(k, jwk=jwk_of(k, ext=True)),  # more than the published form
        lambda k: good_payload(k, jwk=jwk_of(k, use=None)),
        lambda k: good_payload(k, jwk=jwk_of(k, use="enc")),
        lambda k: good_payload(k, jwk=jwk_of(k, kid="capbroker-v9")),  # not a session kid
        lambda k: good_payload(k, jwk=jwk_of(k, kid="s-ABCDEF0123456789")),
        lambda k: good_payload(k, jwk=jwk_of(k, alg="ES256")),
        lambda k: good_payload(k, jwk=jwk_of(k, kty="RSA")),  # a key type we never use
        lambda k: good_payload(k, jwk=jwk_of(k, x=b64url_encode(b"\1" * 31))),
        lambda k: good_payload(k, jwk="not a jwk"),
        lambda k: good_payload(k, not_before=True),  # bool is not an int
        lambda k: good_payload(k, sign_until=float(NOW + 1200)),
        lambda k: good_payload(k, publish_until=str(NOW + 4920)),
        lambda k: good_payload(k, not_before=None),
        lambda k: good_payload(k, not_before=0, sign_until=0),
        lambda k: good_payload(k, sign_until=NOW),  # empty sign window
        lambda k: good_payload(k, publish_until=NOW + 1200),  # publish ends when signing does
        lambda k: good_payload(k, sign_until=NOW + MAX_SIGN_SPAN + 1, publish_until=NOW + MAX_SIGN_SPAN + 2),
        lambda k: good_payload(k, publish_until=NOW + 1200 + MAX_PUBLISH_TAIL + 1),
        lambda k: b'{"iss":"https://broker.test","iss":"https://broker.test"}',
        lambda k: b"\xef\xbb\xbf{}",
        lambda k: b"[]",
    ],
)
def test_a_payload_outside_the_format_is_refused(payload: Any) -> None:
    endorser, key = long_term(), session()
    refused(raw(endorser, header(endorser), payload(key)), KeySet([endorser.public]), "malformed")


def test_an_endorsement_for_another_issuer_or_algorithm_is_not_ours() -> None:
    endorser, key = long_term(), session()
    compact, keys = endorsed(endorser, key, issuer="https://other.test")
    refused(compact, keys, "not_ours")
    refused(endorsed(endorser, key)[0], keys, "not_ours", issuer="https://broker.test/")  # exact match
    refused(endorsed(endorser, key)[0], keys, "not_ours", alg="ES256")


@pytest.mark.parametrize("value", [None, 1, "", "a.b", "a.b.c.d", "a..c", "x" * 3000, "é.b.c", "a.b.c\n"])
def test_anything_else_stored_is_malformed(value: object) -> None:
    refused(value, KeySet([long_term().public]), "malformed")


def test_an_endorsement_is_never_a_token_and_a_token_never_an_endorsement() -> None:
    """Domain separation by ``typ``: the long-term key signs both kinds in a mixed
    deployment (Transit-signed tokens are still published), so neither may pass as the other."""
    endorser, key = long_term(), session()
    compact, keys = endorsed(endorser, key)
    with pytest.raises(TokenRejected) as e:
        verify_token(compact, keys, issuer=ISSUER, audience=AUDIENCE, now=NOW)
    assert e.value.code == "bad_header"
    token = mint(claims(), endorser)
    refused(token, keys, "malformed")


# ---------------------------------------------------------------- windows


def test_windows_publish_past_the_last_token_plus_leeway() -> None:
    w = windows(NOW, 1200, 3600)
    assert w == Windows(NOW, NOW + 1200, NOW + 1200 + 3600 + PUBLISH_MARGIN)
    assert PUBLISH_MARGIN > MAX_LEEWAY
    assert windows(NOW, 60, 300).publish_until == NOW + 60 + 300 + PUBLISH_MARGIN
    for bad in [(0, 3600), (MAX_SIGN_SPAN + 1, 3600), (60, 0), (60, 3601)]:
        with pytest.raises(ValueError, match=r"span|ttl"):
            windows(NOW, *bad)


def test_signs_only_inside_its_window_and_only_tokens_it_outlives() -> None:
    endorser, key = long_term(), session()
    e = verify_endorsement(endorsed(endorser, key)[0], KeySet([endorser.public]), issuer=ISSUER, alg="EdDSA")
    assert not e.signs_at(NOW - 1)
    assert e.signs_at(NOW)
    assert e.signs_at(NOW + 1199.999)
    assert not e.signs_at(NOW + 1200)  # sign_until is exclusive
    assert e.published_at(NOW + 1200)
    assert e.published_at(e.publish_until - 0.001)
    assert not e.published_at(e.publish_until)
    # the last token it may sign (iat just before sign_until, the full ttl cap) is covered
    assert e.covers_exp(NOW + 1199 + 3600)
    assert e.covers_exp(e.publish_until - MAX_LEEWAY)
    assert not e.covers_exp(e.publish_until - MAX_LEEWAY + 1)


def test_claimed_publish_until_reads_without_trusting() -> None:
    endorser, key = long_term(), session()
    compact, _ = endorsed(endorser, key)
    assert claimed_publish_until(compact) == W.publish_until
    forged = raw(LocalSigner.generate("EdDSA", "x"), header(endorser), good_payload(key, publish_until=5))
    assert claimed_publish_until(forged) == 5  # not verified: only for removing old entries
    for junk in [None, "a.b.c", "x" * 3000, raw(endorser, header(endorser), good_payload(key, publish_until=True))]:
        assert claimed_publish_until(junk) is None


def test_a_high_s_p256_endorsement_is_refused() -> None:
    """One spelling per signature, as for tokens: ``s`` replaced by ``n - s`` still
    verifies mathematically, and is refused."""
    endorser = long_term("ES256")
    compact, keys = endorsed(endorser, session())
    verify_endorsement(compact, keys, issuer=ISSUER, alg="EdDSA")
    h, p, sig = compact.split(".")
    r, s = b64url_decode(sig)[:32], int.from_bytes(b64url_decode(sig)[32:], "big")
    high = b64url_encode(r + (P256_ORDER - s).to_bytes(32, "big"))
    refused(f"{h}.{p}.{high}", keys, "bad_signature")
