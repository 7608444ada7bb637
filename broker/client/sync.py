"""``BrokerClient``: the agent's side of the broker, blocking (httpx).

    with BrokerClient("https://broker.internal", credential=os.environ["CAPBROKER_KEY"]) as broker:
        token = broker.token("fix-123", "widgets-read")          # cached until shortly before expiry
        token.token, token.audience, token.expires_at
        broker.revoke_task("fix-123")

``credential`` is a client key (``cbk_…``), an identity JWT or a Vault token, or a
callable returning a fresh one for each call (an identity JWT is accepted once). With
``dpop=True`` (or a ``DpopKey``) every token is bound to the client's key and
``broker.proof(method, url, token)`` makes the proof to send with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from broker.client.base import ClientBase
from broker.client.calls import (
    METADATA_PATH,
    Call,
    Credential,
    answer,
    mint_call,
    revoke_task_call,
    scope_entry,
    token_endpoint,
)
from broker.client.errors import BrokerUnreachable
from broker.client.freshness import IssuedToken


class BrokerClient(ClientBase):
    def __init__(
        self, broker_url: str, credential: Credential, *, transport: httpx.BaseTransport | None = None, **kw: Any
    ) -> None:
        super().__init__(broker_url, credential, **kw)
        self._http = httpx.Client(
            base_url=self.base_url, timeout=self._timeout, transport=transport, follow_redirects=False
        )

    def __enter__(self) -> BrokerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call, *, expected: int, proof: str | None = None, auth: bool = True) -> dict[str, Any]:
        headers = self._headers(call, proof) if auth else {"Accept": "application/json"}
        try:
            r = self._http.request(call.method, call.path, content=call.encoded(), headers=headers)
        except httpx.HTTPError as e:
            raise BrokerUnreachable(f"{type(e).__name__} calling the broker") from None
        return answer(r.status_code, r.headers, r.content, expected=expected)

    def _ensure_token_endpoint(self) -> None:
        if self.dpop_key is not None and self._token_endpoint is None:
            metadata = self._send(Call("GET", METADATA_PATH), expected=200, auth=False)
            self._token_endpoint = token_endpoint(metadata, self.base_url)

    def mint(
        self, task: str, scopes: Sequence[str | Mapping[str, Any]], *, ttl: str | int | None = None
    ) -> list[IssuedToken]:
        """One mint (never cached): a token per audience of ``scopes``."""
        self._ensure_token_endpoint()
        minted = self._send(mint_call(task, scopes, ttl), expected=201, proof=self._mint_proof())
        return self._issued(minted)

    def token(
        self,
        task: str,
        scope: str,
        *,
        resource: str | None = None,
        action: str | None = None,
        ttl: str | int | None = None,
    ) -> IssuedToken:
        """The token for one scope (narrowed to ``resource``/``action`` when given), from
        the cache while it is fresh, else minted."""
        key = (task, scope, resource, action)
        cached = self._cached(key)
        if cached is not None:
            return cached
        return self._keep(key, self.mint(task, [scope_entry(scope, resource, action)], ttl=ttl))

    def revoke_task(self, task: str) -> dict[str, Any]:
        """Revoke every token of the task (this agent's own); forget them here too."""
        self._cache.forget_task(task)
        return self._send(revoke_task_call(task), expected=200)
