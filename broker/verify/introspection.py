"""``IntrospectionClient``: ask the broker (RFC 7662) whether a token is still active.

For services that do not read the broker's Redis: the verifier checks the signature and
claims locally, then asks the introspection endpoint with the service's own client key.
Any failure (network, timeout, status, body) raises, and the verifier rejects the token
(``revocation_unavailable``): an unanswered question is never an allow.

For a DPoP-bound token the form also carries the proof and the request it came with:
``dpop`` (the proof), ``htm`` (the method) and ``htu`` (the URL, without query and
fragment), so the broker can check the binding too.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable

from broker.dpop import htu_of
from broker.verify.jwks import check_jwks_url, read_capped

MAX_ANSWER_BYTES = 64 * 1024

Post = Callable[[str, bytes, dict[str, str]], bytes]


def _post(url: str, body: bytes, headers: dict[str, str], *, timeout: float) -> bytes:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 -- checked URL
    return read_capped(request, timeout=timeout, cap=MAX_ANSWER_BYTES, what="introspection")


class IntrospectionClient:
    def __init__(self, url: str, credential: str, *, timeout: float = 1.0, post: Post | None = None) -> None:
        try:
            self.url = check_jwks_url(url)
        except ValueError:
            raise ValueError("the introspection URL must be https (plain http only on loopback)") from None
        if not credential:
            raise ValueError("the service's client key is required")
        self._credential = credential
        self._timeout = timeout
        self._post = post

    def __repr__(self) -> str:
        return f"IntrospectionClient({self.url!r})"  # never the credential

    def is_active(
        self, token: str, *, dpop: str | None = None, method: str | None = None, url: str | None = None
    ) -> bool:
        """Is ``token`` active? With ``dpop``, also send the proof and the request it came
        with (``method`` and ``url`` are then required)."""
        fields = {"token": token}
        if dpop is not None:
            if not method or not url:
                raise ValueError("a DPoP proof is sent with the request's method and url")
            fields |= {"dpop": dpop, "htm": method, "htu": htu_of(url)}
        body = urllib.parse.urlencode(fields).encode("ascii")
        headers = {
            "Authorization": f"Bearer {self._credential}",
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        raw = (
            self._post(self.url, body, headers) if self._post else _post(self.url, body, headers, timeout=self._timeout)
        )
        answer = json.loads(raw)
        active = answer.get("active") if isinstance(answer, dict) else None
        if not isinstance(active, bool):
            raise ValueError("not an introspection answer")
        return active
