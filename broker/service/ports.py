"""The two backend interfaces the service needs, each with two implementations.

- ``SigningBackend``: Vault/OpenBao Transit (``broker.backends.transit``) or an
  in-process key (``broker.backends.local_signer``) for the embedded default.
- ``StateStore``: Redis (``broker.backends.redis_state``) or in-memory
  (``broker.backends.memory_state``).

Every method that touches a backend raises ``BackendUnavailable`` when the backend is
down, slow (about a second) or sealed, and never anything else for an I/O failure: the
HTTP layer turns that into 503 and no token.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from broker.audit.stored import StoredEvent
from broker.identity.jwt_keys import IdentityKeys
from broker.identity.vault_identity import VaultTokenInfo
from broker.token.algorithms import Algorithm
from broker.token.claims import Claims
from broker.token.keys import KeySet
from broker.token.revoked import revoked


class SigningBackend(Protocol):
    @property
    def alg(self) -> Algorithm: ...

    async def sign(self, claims: Claims) -> str:
        """The compact token for ``claims``, signed by the current key version."""
        ...

    async def keyset(self, *, kid: str | None = None, fresh: bool = False) -> KeySet:
        """Public keys of every key version still allowed to verify (the JWKS). With a
        ``kid`` the caller could not find, a backend that caches may look again first;
        ``fresh`` (the JWKS endpoint): keys another replica published a moment ago are
        listed, a backend that caches looks again first (its cooldown permitting)."""
        ...

    async def rotate(self) -> str:
        """Make a new key version current; return its ``kid``."""
        ...

    async def check(self) -> None:
        """Raise ``BackendUnavailable`` unless the backend can sign right now."""
        ...

    async def aclose(self) -> None: ...


class StatementSigner(Protocol):
    """The long-term key, for statements that are not tokens (audit checkpoints): Transit
    in production, the in-process key in ``broker dev``; never a session key."""

    async def sign_statement(self, typ: str, payload: bytes) -> str:
        """A compact JWS of ``payload``, header ``{"alg", "typ", "kid"}``."""
        ...


class LongTermSigning(SigningBackend, StatementSigner, Protocol):
    """A signing backend whose long-term key also signs statements (all three do)."""


class TaskClaim(enum.Enum):
    """A task is its root agent's (docs/api.md): two agents with one task id have two tasks."""

    OWNED = "owned"  # recorded (new or already) for its owner: the tokens may be issued
    REVOKED = "revoked"  # the task, or its id for every agent, was revoked: no new tokens
    SUSPENDED = "suspended"  # an agent of the token is suspended, or its cut-off would revoke it


@dataclass(frozen=True, slots=True)
class MintClaim:
    """The outcome of ``claim_mint``: the rate first, then (if allowed) the task."""

    wait: float  # 0.0 when the rate allowed the mint, else seconds until it would
    task: TaskClaim | None  # None when the rate refused (nothing was claimed)


@dataclass(frozen=True, slots=True)
class RevocationState:
    """What the store knows about one token's revocation, fetched in one round trip."""

    token_revoked: bool
    task_revoked: bool
    agent_cutoff: int | None  # tokens of the agent with iat <= cutoff are revoked

    def revokes(self, iat: int) -> bool:
        return revoked(iat, token=self.token_revoked, task=self.task_revoked, cutoffs=(self.agent_cutoff,))


class StateStore(Protocol):
    async def take_rate(self, agent: str, count: int, per_seconds: int) -> float:
        """Spend one mint from the agent's allowance (GCRA, burst = ``count``).

        Returns 0.0 when allowed, else the seconds until the next mint is allowed.
        Atomic and shared by every replica using the same store.
        """
        ...

    async def claim_task(self, task: str, owner: str, agents: Sequence[str], iat: int, expires_at: int) -> TaskClaim:
        """Record ``owner``'s task ``task`` (extending its record to the tokens' expiry)
        unless it is revoked (``REVOKED``) or one of ``agents`` (every agent a new token
        names: its subject and each delegator) is suspended or has a kill-switch cut-off at
        or after ``iat`` (``SUSPENDED``: the token would be dead on arrival). The record
        lives until the task's last token expires."""
        ...

    async def claim_mint(
        self, agent: str, rate: tuple[int, int] | None, task: str, iat: int, expires_at: int
    ) -> MintClaim:
        """``take_rate`` (when ``rate`` is ``(count, per_seconds)``) and, if it allows,
        ``claim_task`` for the agent's own task, atomically and in one round trip: the
        mint's whole state change."""
        ...

    async def task_live(self, task: str, owner: str) -> bool:
        """True while ``owner``'s task ``task`` has a record (a token of it may be live)."""
        ...

    async def revoke_token(self, jti: str, expires_at: int) -> None:
        """Revoke one token; remembered until it would have expired (plus leeway)."""
        ...

    async def revoke_task(self, task: str, owner: str | None, now: int, *, only_if_live: bool = False) -> bool:
        """Revoke every token of ``owner``'s task (every agent's task of that id when
        ``owner`` is None) and refuse new ones for it. With ``only_if_live``, only if the
        task has a record (an agent revoking its own task cannot create revocations for
        ids it never used). True if the revocation was written."""
        ...

    async def revoke_agent(self, agent: str, cutoff: int) -> None:
        """Kill switch: revoke every token of the agent issued at or before ``cutoff`` and
        suspend it until ``reinstate_agent``; shared by every replica, kept across restarts."""
        ...

    async def reinstate_agent(self, agent: str) -> bool:
        """Lift the agent's suspension; True if it was suspended. Its cut-off stays."""
        ...

    async def is_suspended(self, agent: str) -> bool: ...

    async def revocation_state(
        self, jti: str, task: str, agent: str, delegators: Sequence[str] = ()
    ) -> RevocationState:
        """One round trip: the token, its task, and the kill-switch cut-offs of its agent
        and of every agent that delegated to it (the ``act`` chain); the latest cut-off
        wins."""
        ...

    async def claim_once(self, key: str, expires_at: int) -> bool:
        """True the first time ``key`` is claimed; False while an earlier claim of it lives
        (until ``expires_at``, epoch seconds). The replay guard for identity JWTs and DPoP
        proofs; atomic and shared by every replica."""
        ...

    async def add_delegation(self, parent_jti: str, child_jti: str, parent_exp: int) -> None:
        """Record that ``child_jti`` was exchanged from ``parent_jti``, so revoking the
        parent can revoke it too. Kept as long as the parent's revocation would be."""
        ...

    async def delegations(self, jti: str) -> list[str]:
        """The token ids exchanged directly from ``jti``."""
        ...

    async def append_audit(self, event: Mapping[str, Any]) -> StoredEvent:
        """Seal ``event`` onto the hash chain (``broker.audit.chain.seal``) and store it,
        atomically with respect to every other writer of the same stream."""
        ...

    def audit_events(self) -> AsyncIterator[StoredEvent]:
        """Every audit event the store still holds, oldest first: in Redis the tail not yet
        archived (``broker.backends.audit_archiver``; the whole chain is
        ``broker.backends.audit_history``), in memory the newest ``AUDIT_TAIL``."""
        ...

    async def audit_head(self) -> str:
        """The stored head: the hash the next event will follow (``GENESIS`` if none)."""
        ...

    async def announce_policy_reload(self, origin: str, digest: str) -> None:
        """Tell every other broker process sharing this store to reload its policy, and
        the digest this one loaded."""
        ...

    def policy_reloads(self, origin: str) -> AsyncIterator[str | None]:
        """Yields the announced digest whenever a process other than ``origin`` announced
        a reload, and None once after every reconnect, since announcements may have been
        missed meanwhile (not after the first connect), or for an announcement without one."""
        ...

    async def ping(self) -> None: ...

    def downstream_records(self) -> DownstreamRecords:
        """Where downstream credentials' handles are kept, beside this state."""
        ...

    async def aclose(self) -> None: ...


class IssuerKeys(Protocol):
    """Identity providers' public keys (``broker.backends.oidc_keys``)."""

    async def keys_for(self, issuer: str, jwks_uri: str | None, kid: str | None) -> IdentityKeys:
        """The issuer's key set, fresh enough for ``kid``; ``BackendUnavailable`` if none."""
        ...

    async def aclose(self) -> None: ...


class VaultTokens(Protocol):
    """Vault token lookup with the broker's own token (``broker.backends.vault_lookup``)."""

    async def lookup(self, presented: str) -> VaultTokenInfo | None:
        """What Vault knows of ``presented``; None if it is not a valid token."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A Vault token just created: the secret, its accessor, its TTL (seconds)."""

    token: str = ""
    accessor: str = ""
    ttl: int = 0

    def __repr__(self) -> str:  # never the token
        return f"IssuedToken(accessor={self.accessor!r}, ttl={self.ttl})"


@dataclass(frozen=True, slots=True)
class DatabaseLease:
    username: str
    password: str
    lease_id: str
    lease_duration: int

    def __repr__(self) -> str:  # never the password
        return f"DatabaseLease(lease_id={self.lease_id!r}, lease_duration={self.lease_duration})"


@dataclass(frozen=True, slots=True)
class TaskToken:
    """A task's Vault token as stored: its accessor, the token sealed by Transit, its expiry."""

    accessor: str
    sealed: str
    expires: int  # epoch seconds


class DownstreamRecords(Protocol):
    """The handles of downstream credentials (``broker.backends.downstream_records``)."""

    async def task_token(self, ref: str) -> TaskToken | None: ...

    async def put_task_token(self, ref: str, agent: str, record: TaskToken, *, replace: bool) -> TaskToken:
        """Store ``record`` (only if the task has none, unless ``replace``); the one stored."""
        ...

    async def forget_task_token(self, ref: str) -> None: ...

    async def agent_task_tokens(self, agent: str) -> list[str]:
        """The task references of ``agent`` that have (or had) a task token."""
        ...

    async def note_carried(self, jti: str, accessors: list[str], expires: int) -> None: ...

    async def carried(self, jti: str) -> list[str]:
        """Accessors of the Vault tokens issued with the capability token ``jti``."""
        ...


class Downstream(Protocol):
    """Vault's side of downstream credentials (``broker.backends.vault_downstream``)."""

    async def create_task_token(self, policies: tuple[str, ...], ttl: int, meta: Mapping[str, str]) -> IssuedToken: ...

    async def renew_task_token(self, task_token: str, ttl: int) -> int: ...

    async def create_child(
        self, task_token: str, policies: tuple[str, ...], ttl: int, num_uses: int, meta: Mapping[str, str]
    ) -> IssuedToken: ...

    async def read_database_creds(self, token: str, path: str) -> DatabaseLease: ...

    async def revoke_accessor(self, accessor: str) -> None: ...

    async def seal(self, secret: str) -> str: ...

    async def unseal(self, sealed: str) -> str: ...

    async def aclose(self) -> None: ...
