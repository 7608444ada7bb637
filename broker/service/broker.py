"""``Broker``: the running service's parts in one place, and the policy in force.

Created by ``broker.runtime`` from settings; the HTTP layer holds one per app (no module
globals). The use cases (``mint``, ``revoke``, ``introspect``, ``admin``) are functions
over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from broker.errors import BrokerError, PolicyInvalid
from broker.policy.loader import load_policy
from broker.policy.model import Policy
from broker.service.audit_checkpointer import Checkpointer
from broker.service.audit_recorder import AuditRecorder
from broker.service.decisions import DecisionCache
from broker.service.metrics import Metrics
from broker.service.own_revocations import OwnRevocations
from broker.service.ports import Downstream, DownstreamRecords, IssuerKeys, SigningBackend, StateStore, VaultTokens
from broker.token.claims import Claims
from broker.token.seen import SeenTokens
from broker.verify.revocation import RevocationCheck

SEEN_TOKENS = 10_000  # verified tokens remembered per process


@dataclass(frozen=True, slots=True)
class Call:
    """Who is calling and under which request id (for the audit trail)."""

    request_id: str
    credential: str | None  # the bearer credential, never logged
    dpop: str | None = None  # the request's DPoP proof (RFC 9449), if it sent exactly one
    # client_secret_basic (RFC 6749 2.3.1): the client id that came with the secret; it
    # must name the secret's owner (broker.service.auth)
    client_id: str | None = None


@dataclass
class Broker:
    issuer: str
    policy_dir: Path
    policy: Policy
    signer: SigningBackend
    state: StateStore
    audit: AuditRecorder
    admin_key_hashes: tuple[str, ...]
    clock: Callable[[], float] = time.time
    metrics: Metrics = field(default_factory=Metrics)
    # How far replica clocks may disagree. Introspection accepts a token this much before
    # its nbf or after its exp; the kill switch's cut-off reaches this far ahead.
    clock_skew: int = 5
    ready_for_signing: bool = False  # set by the start-up self-test
    overlay: Callable[[Policy], Policy] | None = None  # `broker dev` only: its generated keys
    issuer_keys: IssuerKeys | None = None  # identity providers' keys (``jwt`` identities)
    vault_tokens: VaultTokens | None = None  # Vault token lookup (``vault`` identities)
    decisions: DecisionCache = field(default_factory=DecisionCache)
    # a local revocation set (``RevocationFeed``): introspection without a Redis round trip
    revocations: RevocationCheck | None = None
    own_revocations: OwnRevocations = field(default_factory=OwnRevocations)
    # tokens of ours verified before (introspection sees one token many times): their
    # claims, skipping only the parse and the signature while the key set keeps the key
    seen_tokens: SeenTokens[Claims] = field(default_factory=lambda: SeenTokens(SEEN_TOKENS))
    # this process among those sharing the state store (policy reload announcements)
    origin: str = field(default_factory=lambda: f"{os.getpid()}-{secrets.token_hex(6)}")
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # the digest another process announced and this one's files did not give (None: in
    # step); ``/readyz`` reports ``policy_mismatch`` meanwhile (``policy_follower``)
    policy_wanted: str | None = None
    # signs checkpoints of the audit chain in the app's background (``broker.http.app``)
    checkpoints: Checkpointer | None = None
    # downstream credentials from Vault (``broker.service.downstream``); None without Vault
    downstream: Downstream | None = None
    downstream_records: DownstreamRecords | None = None
    task_tokens: dict[str, str] = field(default_factory=dict, repr=False)  # accessor -> unsealed task token

    def now(self) -> int:
        return int(self.clock())

    async def reload_policy(self) -> Policy:
        """Load the policy directory again; on any error keep the old policy and raise."""
        async with self._reload_lock:
            try:
                policy = await self.load_policy_files()
            except PolicyInvalid:
                self.metrics.inc("capbroker_policy_reloads_total", result="refused")
                raise
            self.install_policy(policy)
            return policy

    async def load_policy_files(self) -> Policy:
        """The policy the directory gives now, not put in force (``PolicyInvalid``)."""
        policy = await asyncio.to_thread(load_policy, self.policy_dir, global_max_ttl=self.policy.global_max_ttl)
        return self.overlay(policy) if self.overlay is not None else policy

    def install_policy(self, policy: Policy) -> None:
        """Put a loaded policy in force."""
        self.policy = policy
        self.metrics.inc("capbroker_policy_reloads_total", result="loaded")

    async def aclose(self) -> None:
        close = getattr(self.revocations, "close", None)
        if callable(close):
            close()
        await self.signer.aclose()
        with contextlib.suppress(BrokerError):  # refusals counted but not yet summarised
            await self.audit.flush(everything=True)
        await self.state.aclose()
        if self.issuer_keys is not None:
            await self.issuer_keys.aclose()
        if self.vault_tokens is not None:
            await self.vault_tokens.aclose()
        if self.downstream is not None:
            await self.downstream.aclose()
