"""Signing windows published with session keys (issue 12, reproduction 1): a token is
accepted only if its ``iat`` is inside the window of the key that signed it, so a stolen
session key is worth its window, not the ~82 minutes it stays published. Pure."""

from __future__ import annotations

from typing import Any

import pytest

from broker.errors import TokenRejected
from broker.token.endorsement import endorse_locally, endorsement_payload, verify_endorsement, windows
from broker.token.keys import KeyFormatError, KeySet, LocalSigner, VerificationKey, key_from_jwk
from broker.token.mint import mint
from broker.token.verify import MAX_LEEWAY, verify_token
from tests.helpers import AUDIENCE, ISSUER, NOW, claims

SIGN_FROM, SIGN_UNTIL = NOW, NOW + 1200


def session_key() -> tuple[LocalSigner, KeySet]:
    signer = LocalSigner.generate("EdDSA", "s-0123456789abcdef")
    published = VerificationKey(signer.kid, signer.public.key, (SIGN_FROM, SIGN_UNTIL))
    return signer, KeySet.from_jwks(KeySet([published]).to_jwks())  # as a verifier reads the JWKS


def verified_at(token: str, keys: KeySet, iat: int) -> str | None:
    try:
        verify_token(token, keys, issuer=ISSUER, audience=AUDIENCE, now=iat + 1, leeway=MAX_LEEWAY)
    except TokenRejected as e:
        return e.code
    return None


def test_the_jwks_publishes_the_window_beside_the_key() -> None:
    _, keys = session_key()
    (jwk,) = keys.to_jwks()["keys"]
    assert (jwk["sign_from"], jwk["sign_until"]) == (SIGN_FROM, SIGN_UNTIL)
    assert {k: v for k, v in jwk.items() if not k.startswith("sign_")} == next(iter(keys)).bare_jwk()


@pytest.mark.parametrize("late", [0, 5, 100, 3000])
def test_a_stolen_session_key_signs_nothing_accepted_at_or_after_sign_until(late: int) -> None:
    stolen, keys = session_key()
    iat = SIGN_UNTIL + late
    assert verified_at(mint(claims(now=iat), stolen), keys, iat) == "outside_key_window"


def test_tokens_stamped_inside_the_window_verify() -> None:
    signer, keys = session_key()
    for iat in (SIGN_FROM, SIGN_FROM + 600, SIGN_UNTIL - 1):
        assert verified_at(mint(claims(now=iat), signer), keys, iat) is None


def test_the_start_allows_a_mint_stamped_just_before_its_key_took_over() -> None:
    signer, keys = session_key()
    assert verified_at(mint(claims(now=SIGN_FROM - MAX_LEEWAY), signer), keys, SIGN_FROM) is None
    iat = SIGN_FROM - MAX_LEEWAY - 1
    assert verified_at(mint(claims(now=iat), signer), keys, iat) == "outside_key_window"


def test_a_key_without_a_window_signs_for_as_long_as_it_is_published() -> None:
    transit_like = LocalSigner.generate("EdDSA", "capbroker-v1")
    keys = KeySet([transit_like.public])
    iat = NOW + 10 * 86400
    assert verified_at(mint(claims(now=iat), transit_like), keys, iat) is None


@pytest.mark.parametrize(
    "window",
    [
        {"sign_from": SIGN_FROM},
        {"sign_until": SIGN_UNTIL},
        {"sign_from": SIGN_UNTIL, "sign_until": SIGN_FROM},
        {"sign_from": SIGN_FROM, "sign_until": SIGN_FROM},
        {"sign_from": str(SIGN_FROM), "sign_until": SIGN_UNTIL},
        {"sign_from": True, "sign_until": SIGN_UNTIL},
        {"sign_from": -1, "sign_until": SIGN_UNTIL},
        {"sign_from": SIGN_FROM, "sign_until": float(SIGN_UNTIL)},
    ],
)
def test_a_malformed_window_refuses_the_key(window: dict[str, Any]) -> None:
    jwk = {**LocalSigner.generate("EdDSA", "s-0123456789abcdef").public.bare_jwk(), **window}
    with pytest.raises(KeyFormatError):
        key_from_jwk(jwk)


def test_an_endorsement_never_names_a_windowed_jwk() -> None:
    """The endorsement's ``jwk`` is the bare key; its windows are its own fields."""
    endorser = LocalSigner.generate("EdDSA", "capbroker-v1")
    session = LocalSigner.generate("EdDSA", "s-0123456789abcdef")
    w = windows(NOW, 1200, 3600)
    endorsement = verify_endorsement(
        endorse_locally(endorsement_payload(session.public, ISSUER, w), endorser),
        KeySet([endorser.public]),
        issuer=ISSUER,
        alg="EdDSA",
    )
    assert endorsement.published_key.window == (w.not_before, w.sign_until)
    assert endorsement.published_key.bare_jwk() == session.public.bare_jwk()
