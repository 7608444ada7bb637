"""The broker's agent API as plain data: the requests a client sends and what it makes of
the answers. No I/O here: ``sync.py`` and ``aio.py`` send these with httpx.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

from broker.client.errors import BrokerCallFailed, BrokerUnreachable
from broker.client.freshness import IssuedToken

#: a credential, or what returns a fresh one for each call (an identity JWT is single use)
Credential = str | Callable[[], str]
METADATA_PATH: Final = "/.well-known/oauth-authorization-server"
_CODE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# The rule of broker.verify.jwks.check_jwks_url, without importing the verifier (and Redis)
# into every `broker token get` and git credential helper run.
_HTTPS: Final = re.compile(r"https://[^\s/]+(/\S*)?")
_LOOPBACK_HTTP: Final = re.compile(r"http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]{1,5})?(/\S*)?")


def broker_base(url: str) -> str:
    """The broker's base URL: https, or plain http on loopback only (a credential is sent)."""
    base = url.rstrip("/")
    if not (_HTTPS.fullmatch(base) or _LOOPBACK_HTTP.fullmatch(base)):
        raise ValueError("the broker URL must be https (plain http only on loopback)")
    return base


def credential_of(credential: Credential) -> str:
    value = credential() if callable(credential) else credential
    value = value.strip()
    if not value:
        raise ValueError("the credential is empty")
    return value


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request to the broker."""

    method: str
    path: str
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes | None:
        return None if self.body is None else json.dumps(self.body, separators=(",", ":")).encode()


def scope_entry(scope: str, resource: str | None, action: str | None) -> str | dict[str, Any]:
    """A scope name, or the narrowed form when a resource or an action is asked."""
    if resource is None and action is None:
        return scope
    entry: dict[str, Any] = {"scope": scope}
    if resource is not None:
        entry["resource"] = resource
    if action is not None:
        entry["actions"] = [action]
    return entry


def mint_call(task: str, scopes: Sequence[str | Mapping[str, Any]], ttl: str | int | None) -> Call:
    body: dict[str, Any] = {"task": task, "scopes": list(scopes)}
    if ttl is not None:
        body["ttl"] = ttl
    return Call("POST", "/v1/tokens", body)


def revoke_task_call(task: str) -> Call:
    return Call("POST", f"/v1/tasks/{quote(task, safe='')}/revoke")


def failure(status: int, headers: Mapping[str, str], body: bytes) -> BrokerCallFailed:
    """The error for a non-2xx answer: the problem's ``code`` when it is one."""
    code, request_id = "http_error", headers.get("x-request-id")
    try:
        problem = json.loads(body)
    except ValueError:
        problem = None
    if isinstance(problem, dict) and isinstance(problem.get("code"), str) and _CODE.fullmatch(problem["code"]):
        code = problem["code"]
    retry_after = headers.get("retry-after")
    return BrokerCallFailed(
        code,
        status=status,
        request_id=request_id if request_id and _REQUEST_ID.fullmatch(request_id) else None,
        retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
    )


def answer(status: int, headers: Mapping[str, str], body: bytes, *, expected: int) -> dict[str, Any]:
    if status != expected:
        raise failure(status, headers, body)
    try:
        parsed = json.loads(body)
    except ValueError:
        raise BrokerUnreachable("the broker's answer is not JSON") from None
    if not isinstance(parsed, dict):
        raise BrokerUnreachable("the broker's answer is not a JSON object")
    return parsed


def issued_tokens(minted: Mapping[str, Any], now: float) -> list[IssuedToken]:
    """The tokens of a mint answer (``POST /v1/tokens``), stamped with the client's clock."""
    try:
        return [
            IssuedToken(
                task=str(minted["task"]),
                audience=str(entry["audience"]),
                token=str(entry["token"]),
                token_id=str(entry["token_id"]),
                issued_at=int(now),
                expires_at=int(now) + int(entry["expires_in"]),
                capabilities=tuple(dict(c) for c in entry["capabilities"]),
            )
            for entry in minted["tokens"]
        ]
    except (KeyError, TypeError, ValueError):
        raise BrokerUnreachable("the broker's mint answer is not of the expected shape") from None


def token_endpoint(metadata: Mapping[str, Any], base: str) -> str:
    """The URL a DPoP proof for a mint names (``htu``): the broker's own idea of its mint
    endpoint (its issuer + ``/v1/tokens``), which may differ from the URL this client reaches
    it by. Not RFC 8414's ``token_endpoint``: that is the token-exchange grant's endpoint."""
    issuer = metadata.get("issuer")
    return (issuer.rstrip("/") if isinstance(issuer, str) and issuer else base) + "/v1/tokens"
