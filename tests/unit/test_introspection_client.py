"""The verifier's introspection check: inactive -> revoked; any failure -> rejected."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import pytest

from broker.dpop import DpopKey
from broker.token import KeyRing, LocalSigner
from broker.verify import IntrospectionClient, TokenRejected
from tests.helpers import NOW, good_token, verifier

URL = "https://broker.internal/v1/introspect"
KEY = "cbk_" + "k" * 43


def client(
    answer: object = None, *, raises: Exception | None = None, seen: list[object] | None = None
) -> IntrospectionClient:
    def post(url: str, body: bytes, headers: dict[str, str]) -> bytes:
        if seen is not None:
            seen.append((url, body, headers))
        if raises is not None:
            raise raises
        return answer if isinstance(answer, bytes) else json.dumps(answer).encode()

    return IntrospectionClient(URL, KEY, post=post)


def test_an_active_token_passes_and_the_service_key_is_sent(ring: KeyRing, ed_signer: LocalSigner) -> None:
    seen: list[object] = []
    token = good_token(ed_signer)
    grant = verifier(ring, introspection=client({"active": True}, seen=seen)).verify(token)
    assert grant.task
    ((url, body, headers),) = seen
    assert url == URL
    assert body == f"token={token}".encode()
    assert headers["Authorization"] == f"Bearer {KEY}"


def test_an_inactive_token_is_revoked(ring: KeyRing, ed_signer: LocalSigner) -> None:
    with pytest.raises(TokenRejected) as e:
        verifier(ring, introspection=client({"active": False})).verify(good_token(ed_signer))
    assert e.value.code == "revoked"


@pytest.mark.parametrize(
    "answer",
    [b"not json", {"active": "true"}, {"active": 1}, [], {}],
    ids=["garbage", "string", "int", "list", "empty"],
)
def test_a_malformed_answer_fails_closed(ring: KeyRing, ed_signer: LocalSigner, answer: object) -> None:
    with pytest.raises(TokenRejected) as e:
        verifier(ring, introspection=client(answer)).verify(good_token(ed_signer))
    assert e.value.code == "revocation_unavailable"


def test_an_unreachable_broker_fails_closed(ring: KeyRing, ed_signer: LocalSigner) -> None:
    with pytest.raises(TokenRejected) as e:
        verifier(ring, introspection=client(raises=TimeoutError())).verify(good_token(ed_signer))
    assert e.value.code == "revocation_unavailable"


def test_a_bad_signature_never_reaches_introspection(ring: KeyRing, ed_signer: LocalSigner) -> None:
    seen: list[object] = []
    token = good_token(ed_signer)
    forged = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(TokenRejected):
        verifier(ring, introspection=client({"active": True}, seen=seen)).verify(forged)
    assert seen == []


def test_urls_and_keys_are_checked_and_the_key_never_shows() -> None:
    with pytest.raises(ValueError, match="https"):
        IntrospectionClient("http://broker.internal/v1/introspect", KEY)
    with pytest.raises(ValueError, match="client key"):
        IntrospectionClient(URL, "")
    assert KEY not in repr(IntrospectionClient(URL, KEY))
    IntrospectionClient("http://127.0.0.1:8700/v1/introspect", KEY)  # loopback http is fine


# ---------------------------------------------------------------- DPoP-bound tokens


def test_a_bound_token_is_introspected_with_its_proof_and_request(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """Form fields ``dpop``, ``htm`` and ``htu`` (query and fragment cut) go with the token."""
    key = DpopKey.generate()
    token = good_token(ed_signer, cnf_jkt=key.jkt)
    url = "https://storage.internal/reports/a.csv"
    proof = key.proof("PUT", url, now=NOW + 10, access_token=token)
    seen: list[object] = []
    verifier(ring, introspection=client({"active": True}, seen=seen)).verify(
        token, dpop=proof, method="PUT", url=url + "?part=2#x"
    )
    ((_, body, _),) = seen
    assert isinstance(body, bytes)
    assert parse_qs(body.decode(), strict_parsing=True) == {
        "token": [token],
        "dpop": [proof],
        "htm": ["PUT"],
        "htu": [url],
    }


def test_a_proof_with_an_unbound_token_is_not_sent(ring: KeyRing, ed_signer: LocalSigner) -> None:
    seen: list[object] = []
    token = good_token(ed_signer)
    verifier(ring, introspection=client({"active": True}, seen=seen)).verify(
        token, dpop="ignored", method="GET", url="https://storage.internal/a"
    )
    ((_, body, _),) = seen
    assert body == f"token={token}".encode()


def test_a_bound_token_without_a_valid_proof_never_reaches_introspection(ring: KeyRing, ed_signer: LocalSigner) -> None:
    seen: list[object] = []
    token = good_token(ed_signer, cnf_jkt="A" * 43)
    v = verifier(ring, introspection=client({"active": True}, seen=seen))
    attempts: list[dict[str, Any]] = [{}, {"dpop": "x.y.z", "method": "GET", "url": "https://storage.internal/a"}]
    for kw in attempts:
        with pytest.raises(TokenRejected):
            v.verify(token, **kw)
    assert seen == []


def test_the_client_needs_the_request_with_a_proof() -> None:
    with pytest.raises(ValueError, match="method and url"):
        client({"active": True}).is_active("t", dpop="p", method="GET")
