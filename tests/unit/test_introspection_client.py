"""The verifier's introspection check: inactive -> revoked; any failure -> rejected."""

from __future__ import annotations

import json

import pytest

from broker.token import KeyRing, LocalSigner
from broker.verify import IntrospectionClient, TokenRejected
from tests.helpers import good_token, verifier

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
