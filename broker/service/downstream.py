"""Downstream credentials, rooted in the task (docs/downstream.md): issue them with a mint, revoke them
with the task, the token that carried them, or the agent.

- The task token: the first downstream credential of a task creates one Vault token for
  it (through the token role: orphan, no default policy, the ``capbroker-task`` policy and
  the agent's downstream scope policies, metadata naming task and agent, TTL = the task's
  longest capability). A later mint that outlives it renews it (up to the role's explicit
  max TTL). The state store keeps its accessor and the token sealed by Transit.
- Each downstream capability gets a child of the task token with exactly its scope's
  policy and TTL = the capability's: for ``vault-kv`` the child is the credential (limited
  ``uses``); for ``database`` the child reads ``MOUNT/creds/ROLE``, so the lease belongs to
  it and Vault revokes the lease when the child expires: at the capability's expiry,
  whatever the role's own TTL. The broker keeps no child token, only accessors.
- Revoking: the task's token by accessor (its tree and every lease die in one call), the
  children a capability token carried, every task token of an agent (kill switch).
- Nothing half-issued: if any step fails, the children already made are revoked (best
  effort: they expire with the capability in any case) and the mint answers 503.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from broker.capability import Capability
from broker.capability.names import ANY_AGENT, task_ref
from broker.errors import BackendUnavailable, BrokerError
from broker.policy.model import DEFAULT_KV_USES
from broker.policy.vault import DOWNSTREAM_KINDS, TASK_POLICY, agent_scope_policies, scope_policy_name
from broker.service.broker import Broker
from broker.service.ports import Downstream, DownstreamRecords, IssuedToken, TaskToken

#: unsealed task tokens this process remembers (by accessor), so a task's later mints
#: need no Transit decrypt
TASK_TOKEN_CACHE: Final = 10_000


@dataclass
class DownstreamCredentials:
    """What one mint issued: response entries (secret), audit entries (accessors and lease
    ids only) and the children's accessors per capability token."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    carried: dict[str, list[str]] = field(default_factory=dict)  # jti -> accessors


def downstream_capabilities(tokens: Iterable[tuple[str, Sequence[Capability]]]) -> list[tuple[str, Capability]]:
    """``(jti, capability)`` for every capability that comes with a Vault credential."""
    return [(jti, cap) for jti, caps in tokens for cap in caps if cap.kind in DOWNSTREAM_KINDS]


def _parts(broker: Broker) -> tuple[Downstream, DownstreamRecords]:
    if broker.downstream is None or broker.downstream_records is None:
        raise BackendUnavailable("downstream credentials need Vault (vault-kv and database scopes)")
    return broker.downstream, broker.downstream_records


async def issue(
    broker: Broker, owner: str, task: str, wanted: list[tuple[str, Capability]], *, now: int, ttl: int
) -> DownstreamCredentials:
    """The credentials of ``wanted`` (from ``downstream_capabilities``), all or none."""
    issued = DownstreamCredentials()
    if not wanted:
        return issued
    vault, records = _parts(broker)
    task_token = await _task_token(broker, vault, records, owner, task, expires=now + ttl, now=now)
    children: list[str] = []
    try:
        for jti, cap in wanted:
            meta = {"task": task, "agent": owner, "scope": cap.scope, "token_id": jti}
            uses = _uses(broker, cap) if cap.kind == "vault-kv" else 0  # 0: the broker reads once
            child = await vault.create_child(task_token, (scope_policy_name(cap.scope),), ttl, uses, meta)
            children.append(child.accessor)
            issued.carried.setdefault(jti, []).append(child.accessor)
            entry: dict[str, Any] = {"kind": cap.kind, "resource": cap.resource, "scope": cap.scope}
            audit: dict[str, Any] = {**entry, "accessor": child.accessor}
            if cap.kind == "vault-kv":
                entry |= {"expires_in": min(ttl, child.ttl), "token": child.token, "accessor": child.accessor}
            else:
                lease = await vault.read_database_creds(child.token, cap.resource)
                entry |= {
                    "expires_in": min(ttl, lease.lease_duration),
                    "username": lease.username,
                    "password": lease.password,
                    "lease_id": lease.lease_id,
                }
                audit["lease_id"] = lease.lease_id
            issued.entries.append(entry)
            issued.audit.append(audit)
        for jti, accessors in issued.carried.items():
            await records.note_carried(jti, accessors, now + ttl)
    except BrokerError:
        await withdraw(broker, children)
        raise
    return issued


async def withdraw(broker: Broker, accessors: Iterable[str]) -> None:
    """Revoke children of a mint that fails after issuing them (best effort: each expires
    with its capability anyway, and Vault may be the reason the mint failed)."""
    if broker.downstream is None:
        return
    for accessor in accessors:
        with contextlib.suppress(BrokerError):
            await broker.downstream.revoke_accessor(accessor)


def _uses(broker: Broker, cap: Capability) -> int:
    scope = broker.policy.scopes.get(cap.scope)
    return DEFAULT_KV_USES if scope is None or scope.uses is None else scope.uses


async def _task_token(
    broker: Broker, vault: Downstream, records: DownstreamRecords, owner: str, task: str, *, expires: int, now: int
) -> str:
    """The task's token, alive at least until ``expires``: the stored one (renewed if it
    would die sooner), or a new one. Two mints racing to create it keep the first stored."""
    ref = task_ref(owner, task)
    record = await records.task_token(ref)
    if record is None:
        policies = (TASK_POLICY, *agent_scope_policies(broker.policy, owner))
        created = await vault.create_task_token(policies, expires - now, {"task": task, "agent": owner})
        fresh = TaskToken(created.accessor, await vault.seal(created.token), now + created.ttl)
        record = await records.put_task_token(ref, owner, fresh, replace=False)
        if record.accessor != created.accessor:  # another mint stored one first
            await vault.revoke_accessor(created.accessor)
        else:
            _remember(broker, created)
    token = await _unsealed(broker, vault, record)
    if record.expires < expires:
        granted = await vault.renew_task_token(token, expires - now)
        if now + granted < expires:
            raise BackendUnavailable("vault: the task token cannot live as long as the capability")
        await records.put_task_token(ref, owner, TaskToken(record.accessor, record.sealed, now + granted), replace=True)
    return token


def _remember(broker: Broker, issued: IssuedToken) -> None:
    cache = broker.task_tokens
    if len(cache) >= TASK_TOKEN_CACHE:
        cache.clear()
    cache[issued.accessor] = issued.token


async def _unsealed(broker: Broker, vault: Downstream, record: TaskToken) -> str:
    token = broker.task_tokens.get(record.accessor)
    if token is None:
        token = await vault.unseal(record.sealed)
        _remember(broker, IssuedToken(token, record.accessor))
    return token


# ---------------------------------------------------------------------- revocation


async def revoke_task(broker: Broker, owner: str | None, task: str) -> list[str]:
    """Revoke the task token of ``owner``'s task (of every agent in the policy when None):
    one Vault call each, and every child and lease of it dies. The accessors revoked."""
    if broker.downstream is None or broker.downstream_records is None:
        return []
    owners = [owner] if owner is not None and owner != ANY_AGENT else sorted(broker.policy.agents)
    return [a for name in owners for a in await _revoke_ref(broker, task_ref(name, task))]


async def _revoke_ref(broker: Broker, ref: str) -> list[str]:
    vault, records = _parts(broker)
    record = await records.task_token(ref)
    if record is None:
        return []
    await vault.revoke_accessor(record.accessor)
    await records.forget_task_token(ref)
    broker.task_tokens.pop(record.accessor, None)
    return [record.accessor]


async def revoke_agent(broker: Broker, agent: str) -> list[str]:
    """Kill switch: revoke every task token of ``agent``."""
    if broker.downstream is None or broker.downstream_records is None:
        return []
    revoked: list[str] = []
    for ref in await broker.downstream_records.agent_task_tokens(agent):
        revoked += await _revoke_ref(broker, ref)
    return revoked


async def revoke_carried(broker: Broker, jtis: Iterable[str]) -> list[str]:
    """Revoke the Vault tokens (and so the leases) issued with these capability tokens."""
    if broker.downstream is None or broker.downstream_records is None:
        return []
    revoked: list[str] = []
    for jti in jtis:
        for accessor in await broker.downstream_records.carried(jti):
            await broker.downstream.revoke_accessor(accessor)
            revoked.append(accessor)
    return revoked
