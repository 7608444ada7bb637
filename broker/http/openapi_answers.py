"""Success body schemas for the OpenAPI document (without them its answers were empty).

Handlers build their answers as plain JSON; these dataclasses only describe them for
``/schema/openapi.json``. Fields an answer always carries are required; the rest have
defaults. Extra members are allowed (answers only grow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.openapi import ResponseSpec


@dataclass
class CapabilityEntry:
    kind: str
    resource: str
    actions: list[str]
    scope: str


@dataclass
class MintedToken:
    audience: str
    token: str
    token_id: str
    expires_in: int
    capabilities: list[CapabilityEntry]


@dataclass
class MintAnswer:
    """One token per audience; ``credentials`` carries downstream secrets (docs/downstream.md)."""

    task: str
    expires_at: str
    tokens: list[MintedToken]
    credentials: list[dict[str, Any]]


@dataclass
class ExchangeAnswer:
    """RFC 8693 token exchange response, plus capbroker's own fields."""

    access_token: str
    issued_token_type: str
    token_type: str
    expires_in: int
    token_id: str
    task: str
    audience: str
    capabilities: list[CapabilityEntry]


@dataclass
class RevokeAnswer:
    """``revoked``, and what was revoked (``jti``, ``task`` and ``agent``, or the kill
    switch's ``issued_at_or_before`` and ``suspended``), or why nothing was."""

    revoked: bool
    jti: str | None = None
    task: str | None = None
    agent: str | None = None
    reason: str | None = None
    issued_at_or_before: int | None = None
    suspended: bool | None = None


@dataclass
class ContainAnswer:
    task: str
    revoked: bool


@dataclass
class ReinstateAnswer:
    reinstated: bool
    agent: str


@dataclass
class IntrospectionAnswer:
    """RFC 7662: ``{"active": false}`` only, or ``active: true`` with the token's claims."""

    active: bool


@dataclass
class Jwks:
    keys: list[dict[str, Any]]


@dataclass
class ServerMetadata:
    """RFC 8414 authorization server metadata."""

    issuer: str
    jwks_uri: str
    token_endpoint: str
    revocation_endpoint: str
    introspection_endpoint: str
    grant_types_supported: list[str]
    response_types_supported: list[str]


@dataclass
class PolicyAnswer:
    digest: str
    files: list[str]
    global_max_ttl: int
    scopes: dict[str, Any]


@dataclass
class ExplainAnswer:
    decision: str
    code: str | None
    reasons: list[str]
    capabilities: list[dict[str, Any]]
    ttl: int | None = None


@dataclass
class ReloadAnswer:
    reloaded: bool
    digest: str
    files: list[str]
    previous: str | None = None


@dataclass
class Health:
    status: str


@dataclass
class ReadinessAnswer:
    ready: bool
    checks: dict[str, str]
    policy: str  # the digest of the policy in force


def answer(container: type, status: int = 200, description: str = "success") -> dict[int, ResponseSpec]:
    """The documented success response of a route."""
    return {status: ResponseSpec(data_container=container, description=description)}
