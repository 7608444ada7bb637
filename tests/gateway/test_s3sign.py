"""The upstream signature: botocore's SigV4 over exactly the headers sent, with the
route's keys and region and the payload hash the route chose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from broker.errors import BackendUnavailable
from broker.gateway.config import Credential
from broker.gateway.headers import response_headers
from broker.gateway.s3sign import UNSIGNED_PAYLOAD, declared_hash, sign
from broker.gateway.secrets import S3Keys, SecretStore

KEYS = S3Keys("AKIAGATEWAY000000000", "gateway/secret+key", "session-token-of-the-gateway")


def _signature_again(method: str, url: str, sent: list[tuple[bytes, bytes]]) -> str:
    """What S3 computes from the request it received (as moto does: the signed headers only)."""
    headers = {k.decode(): v.decode() for k, v in sent}
    auth = headers["authorization"]
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    request = AWSRequest(method=method, url=url, headers={k: v for k, v in headers.items() if k in signed})
    request.context["timestamp"] = headers["x-amz-date"]
    signer = S3SigV4Auth(Credentials(KEYS.access_key_id, KEYS.secret_access_key, KEYS.session_token), "s3", "eu-west-1")
    canonical = signer.canonical_request(request)
    return signer.signature(signer.string_to_sign(request, canonical), request)


def test_every_header_sent_is_signed_and_the_signature_verifies() -> None:
    url = "http://127.0.0.1:9000/agent-data/tasks/t1/a%20b.txt?partNumber=1&uploadId=xyz"
    sent = sign(
        "PUT",
        url,
        [(b"content-type", b"text/plain"), (b"content-length", b"5")],
        KEYS,
        region="eu-west-1",
        payload_hash=UNSIGNED_PAYLOAD,
    )
    headers = dict(sent)
    assert headers[b"x-amz-content-sha256"] == b"UNSIGNED-PAYLOAD"
    assert headers[b"x-amz-security-token"] == KEYS.session_token.encode()
    auth = headers[b"authorization"].decode()
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={KEYS.access_key_id}/")
    assert "/eu-west-1/s3/aws4_request" in auth
    signed = set(auth.split("SignedHeaders=")[1].split(",")[0].split(";"))
    assert {k.decode() for k in headers} - {"authorization"} <= signed | {"host"}
    assert auth.split("Signature=")[1] == _signature_again("PUT", url, sent)


def test_only_a_plain_sha256_is_kept_as_the_declared_hash() -> None:
    assert declared_hash("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    for other in (None, "UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "E3B0" * 16, "x" * 64):
        assert declared_hash(other) is None


def test_a_response_header_echoing_any_of_several_secrets_is_dropped() -> None:
    given = [
        (b"x-one", KEYS.secret_access_key.encode()),
        (b"x-two", b"gateway%2Fsecret%2Bkey"),
        (b"x-three", KEYS.session_token.encode() if KEYS.session_token else b""),
        (b"etag", b'"abc"'),
    ]
    assert response_headers(given, KEYS.secrets()) == [(b"etag", b'"abc"')]


def test_keys_never_show_their_secret_in_a_repr() -> None:
    assert KEYS.secret_access_key not in repr(KEYS)
    assert str(KEYS.session_token) not in repr(KEYS)


def test_a_bucket_credential_file_is_read_whole_or_not_at_all(tmp_path: Path) -> None:
    credential = Credential(
        str(tmp_path / "keys.json"), None, None, "sigv4", access_key_id="id", secret_access_key="secret"
    )
    store = SecretStore([credential], vault=None, refresh=60)
    (tmp_path / "keys.json").write_text(json.dumps({"id": "AKIAX", "secret": "s3cr3t"}))
    assert store.refresh_once()
    assert store.s3_keys(credential) == S3Keys("AKIAX", "s3cr3t")
    assert "s3cr3t" in store.values()
    (tmp_path / "keys.json").write_text(json.dumps({"id": "AKIAX"}))  # the secret missing: unavailable
    assert not store.refresh_once()
    assert not store.ready
    with pytest.raises(BackendUnavailable):
        store.s3_keys(credential)
