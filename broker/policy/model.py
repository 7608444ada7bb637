"""The compiled policy: immutable objects built once by ``compile``; nothing else makes them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from broker.capability import Budget, Capability
from broker.capability.lifetime import MAX_TOKEN_TTL

#: a ``vault-kv`` token's ``num_uses`` when its scope sets no ``uses:`` (README, "Writing a policy file")
DEFAULT_KV_USES: Final = 10
#: the most ``uses:`` a scope may set
MAX_KV_USES: Final = 1000
#: ``ttl`` when a mint request gives none (docs/api.md).
DEFAULT_TTL: Final = 300
#: How many times a token may be exchanged down a chain of sub-agents, unless the agent
#: that minted it sets ``max_delegation_depth`` (0 forbids delegation).
DEFAULT_DELEGATION_DEPTH: Final = 3
#: The most any agent may set: the token profile refuses deeper ``act`` chains.
MAX_DELEGATION_DEPTH: Final = 8


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Scope:
    name: str
    kind: str
    resource: str
    actions: tuple[str, ...]
    audience: str
    max_ttl: int
    description: str
    require_pop: bool
    where: Location
    uses: int | None = None  # vault-kv only: how many requests its Vault token may make
    #: what a token of this scope may use through a gateway (docs/gateway.md); None: no limit
    budget: Budget | None = None

    @property
    def capability(self) -> Capability:
        """The widest capability this scope grants (with the scope's budget)."""
        return Capability(self.kind, self.resource, self.actions, self.name, self.budget)


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """A static client secret; the policy holds only its SHA-256 (lower-case hex)."""

    sha256: str


@dataclass(frozen=True, slots=True)
class JwtIdentity:
    """Workload identity federation: an OIDC-style JWT from ``issuer``."""

    issuer: str
    audience: str
    subject: str
    claims: tuple[tuple[str, str | int | bool], ...] = ()
    jwks_uri: str | None = None


@dataclass(frozen=True, slots=True)
class VaultIdentity:
    """A Vault token, looked up in Vault and matched on role, entity and metadata."""

    role: str | None = None
    entity: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()


Identity = KeyIdentity | JwtIdentity | VaultIdentity


@dataclass(frozen=True, slots=True)
class Rate:
    count: int
    per_seconds: int

    def __str__(self) -> str:
        unit = {1: "s", 60: "min", 3600: "h"}[self.per_seconds]
        return f"{self.count}/{unit}"


#: A service's ``rate:`` when its policy entry sets none (README, "Writing a policy file"). Only a service's refused
#: requests spend it (a successful introspection costs no Redis round trip).
DEFAULT_SERVICE_RATE: Final = Rate(60, 60)


@dataclass(frozen=True, slots=True)
class Agent:
    name: str
    identity: Identity
    scopes: tuple[str, ...]
    max_ttl: int
    rate: Rate | None
    description: str
    where: Location
    max_delegation_depth: int = DEFAULT_DELEGATION_DEPTH


@dataclass(frozen=True, slots=True)
class Service:
    """An internal service allowed to introspect tokens of its own audiences."""

    name: str
    identity: Identity
    audiences: tuple[str, ...]
    where: Location
    rate: Rate = DEFAULT_SERVICE_RATE  # spent by its refused requests only


@dataclass(frozen=True, slots=True)
class Policy:
    scopes: Mapping[str, Scope]
    agents: Mapping[str, Agent]
    services: Mapping[str, Service]
    digest: str  # sha256 over the files that made it, for /v1/scopes and audit
    files: tuple[str, ...]
    global_max_ttl: int = MAX_TOKEN_TTL
    _by_key: Mapping[str, Agent | Service] = field(default_factory=dict, repr=False)

    def principal_for_key(self, sha256_hex: str) -> Agent | Service | None:
        """The agent or service whose ``key`` identity has this secret hash."""
        return self._by_key.get(sha256_hex)
