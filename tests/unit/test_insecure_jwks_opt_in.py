"""A sibling container's broker at ``http://broker:8700`` (issue 13, item 5): its JWKS may be
fetched over plain http only when the service says so, ``allow_insecure_jwks=True``; never
by default, and the verifier logs it as UNSAFE when built."""

from __future__ import annotations

import json
import logging

import pytest

from broker.token import KeyRing, LocalSigner
from broker.verify import Verifier
from broker.verify.jwks import check_jwks_url
from tests.helpers import AUDIENCE, ISSUER, JTI, NOW, good_token

SIBLING = "http://broker:8700/.well-known/jwks.json"


def test_plain_http_to_a_named_host_is_refused_by_default() -> None:
    with pytest.raises(ValueError, match="allow_insecure_jwks"):
        Verifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=SIBLING)


def test_with_the_opt_in_the_sibling_is_fetched_and_the_choice_logged(
    caplog: pytest.LogCaptureFixture, ring: KeyRing, ed_signer: LocalSigner
) -> None:
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return json.dumps(ring.keyset.to_jwks()).encode()

    with caplog.at_level(logging.WARNING, logger="broker.verify"):
        v = Verifier(
            issuer=ISSUER, audience=AUDIENCE, jwks_url=SIBLING, allow_insecure_jwks=True, fetch=fetch,
            clock=lambda: NOW + 5.0,
        )  # fmt: skip
    assert "UNSAFE" in caplog.text
    assert v.verify(good_token(ed_signer)).token_id == JTI
    assert fetched == [SIBLING]


@pytest.mark.parametrize(
    "url", ["http://broker:8700/jwks.json?x", "ftp://broker/jwks.json", "http://user@broker/jwks.json", "http://"]
)
def test_the_opt_in_is_http_to_a_host_name_and_nothing_else(url: str) -> None:
    if url.startswith("http://broker:8700/"):
        assert check_jwks_url(url, allow_insecure=True) == url
        return
    with pytest.raises(ValueError, match="jwks_url"):
        check_jwks_url(url, allow_insecure=True)
