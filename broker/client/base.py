"""What the sync and the async client share: settings, the calls they build, and what
they make of the answers. Only sending differs (``sync.py``, ``aio.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from broker.client.cache import CacheKey, MemoryTokenCache, TokenCache
from broker.client.calls import Call, Credential, broker_base, credential_of, issued_tokens
from broker.client.errors import BrokerUnreachable
from broker.client.freshness import IssuedToken
from broker.dpop.client import DpopKey

DEFAULT_TIMEOUT = 10.0


class ClientBase:
    def __init__(
        self,
        broker_url: str,
        credential: Credential,
        *,
        dpop: DpopKey | bool = False,
        cache: TokenCache | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = broker_base(broker_url)
        self._credential = credential
        self.dpop_key: DpopKey | None = DpopKey.generate() if dpop is True else dpop or None
        self._cache: TokenCache = cache if cache is not None else MemoryTokenCache()
        self._timeout = timeout
        self._clock = clock
        self._token_endpoint: str | None = None  # from the broker's metadata, for DPoP proofs

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"  # never the credential

    def _headers(self, call: Call, proof: str | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {credential_of(self._credential)}", "Accept": "application/json"}
        if call.body is not None:
            headers["Content-Type"] = "application/json"
        if proof is not None:
            headers["DPoP"] = proof
        return headers | dict(call.headers)

    def _mint_proof(self) -> str | None:
        if self.dpop_key is None:
            return None
        if self._token_endpoint is None:
            raise RuntimeError("the token endpoint is read from the broker's metadata first")
        return self.dpop_key.proof("POST", self._token_endpoint, now=int(self._clock()))

    def _issued(self, minted: Mapping[str, Any]) -> list[IssuedToken]:
        return issued_tokens(minted, self._clock())

    def _cached(self, key: CacheKey) -> IssuedToken | None:
        return self._cache.get(key, self._clock())

    def _keep(self, key: CacheKey, tokens: Sequence[IssuedToken]) -> IssuedToken:
        if len(tokens) != 1:
            raise BrokerUnreachable(f"one scope, {len(tokens)} tokens: not the broker's mint answer")
        self._cache.put(key, tokens[0])
        return tokens[0]

    def proof(self, method: str, url: str, token: str) -> str:
        """A DPoP proof for using ``token`` (bound to this client's key) on one request."""
        if self.dpop_key is None:
            raise ValueError("this client has no DPoP key (dpop=True)")
        return self.dpop_key.proof(method, url, now=int(self._clock()), access_token=token)
