"""SigV4 for the bucket route's upstream requests, made by botocore's ``S3SigV4Auth``.

The agent's own signature never goes upstream: the route drops it and signs the request
again with the route's region and the keys the gateway holds (``S3Keys``, read from Vault
KV v2 or a file by ``broker.gateway.secrets``). The payload hash is the one the route
chose: the SHA-256 of a body it read whole (DeleteObjects), the client's declared hash of
a body that passes unchanged, ``UNSIGNED-PAYLOAD`` for a body de-chunked on the way, or
``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` for a trailer stream that passes as it is.
The signed request's headers are exactly the headers sent: ``Host``, ``X-Amz-Date``,
``X-Amz-Content-SHA256``, ``X-Amz-Security-Token`` (with a session token) and
``Authorization`` are added by botocore.
"""

from __future__ import annotations

import re
from typing import Final

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from broker.gateway.secrets import S3Keys

UNSIGNED_PAYLOAD: Final = "UNSIGNED-PAYLOAD"
EMPTY_SHA256: Final = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class _Signer(S3SigV4Auth):
    """botocore's S3 signer with the payload hash decided by the route (the body is a
    stream it never sees)."""

    def __init__(self, credentials: Credentials, region: str, payload_hash: str) -> None:
        super().__init__(credentials, "s3", region)
        self._payload_hash = payload_hash

    def payload(self, request: AWSRequest) -> str:
        return self._payload_hash


def declared_hash(value: str | None) -> str | None:
    """The client's ``x-amz-content-sha256`` when it is a plain SHA-256 (kept, so S3 still
    checks the body against it), else None."""
    return value if value is not None and _SHA256_HEX.fullmatch(value) else None


def sign(
    method: str,
    url: str,
    headers: list[tuple[bytes, bytes]],
    keys: S3Keys,
    *,
    region: str,
    payload_hash: str,
) -> list[tuple[bytes, bytes]]:
    """The headers to send for ``method url``: ``headers`` (one value per name; the
    route joined repeats) and the signature's, every one of them signed."""
    request = AWSRequest(method=method, url=url, headers={k.decode("latin-1"): v.decode("latin-1") for k, v in headers})
    credentials = Credentials(keys.access_key_id, keys.secret_access_key, keys.session_token)
    _Signer(credentials, region, payload_hash).add_auth(request)
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()]
