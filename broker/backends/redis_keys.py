"""Redis key names, shared by the broker's ``RedisState`` and the verifier's sync reader.

Pure and import-free on purpose: ``broker.verify`` imports it, and the verifier library
must not pull in the broker's backends. Every name is ``<prefix><kind>:<id>`` with the
caller's id last, so two different (kind, id) pairs can never name the same key, whatever
characters the id holds.
"""

from __future__ import annotations

import json

DEFAULT_PREFIX = "capbroker:"
DEFAULT_STREAM = "capbroker:audit"


def rate(prefix: str, agent: str) -> str:
    """The agent's GCRA state: its theoretical arrival time, in microseconds."""
    return f"{prefix}rate:{agent}"


def task(prefix: str, task_id: str) -> str:
    """Hash of the task record: ``owner`` and ``expiry`` (epoch seconds)."""
    return f"{prefix}task:{task_id}"


def task_tokens(prefix: str, task_id: str) -> str:
    """Set of the token ids issued for the task."""
    return f"{prefix}task-jtis:{task_id}"


def revoked_token(prefix: str, jti: str) -> str:
    return f"{prefix}rev:jti:{jti}"


def revoked_task(prefix: str, task_id: str) -> str:
    return f"{prefix}rev:task:{task_id}"


def agent_cutoff(prefix: str, agent: str) -> str:
    """The agent's kill-switch cut-off: tokens with ``iat`` at or before it are revoked."""
    return f"{prefix}rev:agent:{agent}"


def revocation(prefix: str, jti: str, task_id: str, agent: str, delegators: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The keys one revocation check reads, in ``MGET`` order: token, task, agent, then the
    cut-off of each agent up the token's delegation chain."""
    return (
        revoked_token(prefix, jti),
        revoked_task(prefix, task_id),
        agent_cutoff(prefix, agent),
        *(agent_cutoff(prefix, name) for name in delegators),
    )


def once(prefix: str, key: str) -> str:
    """A replay-guard claim (an identity JWT's or a DPoP proof's id)."""
    return f"{prefix}once:{key}"


def delegations(prefix: str, jti: str) -> str:
    """Set of the token ids exchanged from the token ``jti``."""
    return f"{prefix}children:{jti}"


def audit_head(stream: str) -> str:
    """The hash of the last event appended to ``stream``: one head per stream, so two
    deployments with their own streams on one Redis keep two intact chains."""
    return f"{stream}:head"


def audit_archiver_lease(stream: str) -> str:
    """The archiver lease of ``stream``: the token of the one process that may move its
    oldest events to the archive and trim them (``broker.backends.audit_archiver``)."""
    return f"{stream}:archiver"


def revocation_channel(prefix: str) -> str:
    """Pub/sub channel on which every revocation is announced as it is written, so
    verifiers and replicas can keep a local revocation set (``revocation_message``)."""
    return f"{prefix}revocations"


def revocation_message(kind: str, ident: str, value: int) -> str:
    """``{"kind": "token"|"task"|"agent", "id": ..., "value": ...}`` as compact JSON.

    ``value``: for a token, its ``exp``; for a task, the time of the revocation; for an
    agent, the cut-off (tokens with ``iat`` at or before it are revoked). The durable state
    (the keys above) is the truth; a message only says "read it now"."""
    if kind not in ("token", "task", "agent"):
        raise ValueError(f"unknown revocation kind {kind!r}")
    return json.dumps({"kind": kind, "id": ident, "value": value}, separators=(",", ":"))


def policy_channel(prefix: str) -> str:
    """Pub/sub channel on which a process that reloaded its policy tells the others."""
    return f"{prefix}policy-reloads"
