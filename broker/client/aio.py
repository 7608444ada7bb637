"""``AsyncBrokerClient``: ``BrokerClient`` (``broker.client.sync``) for asyncio.

async with AsyncBrokerClient("https://broker.internal", credential=key) as broker:
    token = await broker.token("fix-123", "widgets-read")
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


class AsyncBrokerClient(ClientBase):
    def __init__(
        self, broker_url: str, credential: Credential, *, transport: httpx.AsyncBaseTransport | None = None, **kw: Any
    ) -> None:
        super().__init__(broker_url, credential, **kw)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=self._timeout, transport=transport, follow_redirects=False
        )

    async def __aenter__(self) -> AsyncBrokerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call, *, expected: int, proof: str | None = None, auth: bool = True) -> dict[str, Any]:
        headers = self._headers(call, proof) if auth else {"Accept": "application/json"}
        try:
            r = await self._http.request(call.method, call.path, content=call.encoded(), headers=headers)
        except httpx.HTTPError as e:
            raise BrokerUnreachable(f"{type(e).__name__} calling the broker") from None
        return answer(r.status_code, r.headers, r.content, expected=expected)

    async def _ensure_token_endpoint(self) -> None:
        if self.dpop_key is not None and self._token_endpoint is None:
            metadata = await self._send(Call("GET", METADATA_PATH), expected=200, auth=False)
            self._token_endpoint = token_endpoint(metadata, self.base_url)

    async def mint(
        self, task: str, scopes: Sequence[str | Mapping[str, Any]], *, ttl: str | int | None = None
    ) -> list[IssuedToken]:
        await self._ensure_token_endpoint()
        minted = await self._send(mint_call(task, scopes, ttl), expected=201, proof=self._mint_proof())
        return self._issued(minted)

    async def token(
        self,
        task: str,
        scope: str,
        *,
        resource: str | None = None,
        action: str | None = None,
        ttl: str | int | None = None,
    ) -> IssuedToken:
        key = (task, scope, resource, action)
        cached = self._cached(key)
        if cached is not None:
            return cached
        return self._keep(key, await self.mint(task, [scope_entry(scope, resource, action)], ttl=ttl))

    async def revoke_task(self, task: str) -> dict[str, Any]:
        self._cache.forget_task(task)
        return await self._send(revoke_task_call(task), expected=200)
