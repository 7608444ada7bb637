"""Redis key names, shared by the broker's ``RedisState`` and the verifier's sync reader.

Pure (it imports only the name grammars) on purpose: ``broker.verify`` imports it, and the verifier library
must not pull in the broker's backends. Every name is ``<prefix><kind>:<id>`` with the
caller's id last, so two different (kind, id) pairs can never name the same key, whatever
characters the id holds.

On a Redis Cluster (a ``redis+cluster://`` URL) some names carry a hash tag, so that the
keys one command or script touches share a slot. Only there: a broker upgraded over an
existing single Redis keeps its key names (no revocation forgotten), and verifiers that
predate the tags keep reading them. Three groups:

- **the state tag** ``{<prefix>}`` (``state_prefix``): revocations (tokens, tasks, agent
  cut-offs, withdrawn keys), suspensions, rate limits, task records (and their Vault task
  tokens), the endorsed session keys and both channels. One revocation check MGETs the
  token, both task names and the cut-off of every agent up the delegation chain; one
  mint-claim script carries the claims of many agents; a revocation script writes and
  announces; a feed loads every revocation with one SCAN of one node. So they share one
  slot, on one primary. They are small (a few keys per agent and task), and that primary
  is the one every mint and check talks to anyway.
- **the audit tag** ``{<stream>}`` (``cluster_stream``): the audit stream, its head and the
  archiver lease, which the compare-and-append and the archiver's scripts touch together.
  The audit chain is one sequence: it cannot be spread, so it gets a slot of its own,
  usually on another primary than the state.
- **untagged**: replay claims (``once``), delegations (``children``), the Vault
  credentials carried by a token and the gateway's budgets. Each command touches one key,
  and they are the bulk of the keys, so they spread over every primary.
"""

from __future__ import annotations

import hashlib
import json
import re

from broker.capability.names import ANY_AGENT, task_ref

DEFAULT_PREFIX = "capbroker:"
DEFAULT_STREAM = "capbroker:audit"
LEGACY_PREFIX = "capbroker:"  # every key and channel before ``redis_prefix`` existed
SENTINEL_SCHEME = "redis+sentinel://"
CLUSTER_SCHEME = "redis+cluster://"
#: the Redis URLs ``broker.verify.redis_options`` connects to
URL_SCHEMES = ("redis://", "rediss://", "unix://", SENTINEL_SCHEME, CLUSTER_SCHEME)

#: what a ``redis_prefix`` may hold (and an issuer, to stand in one as it is)
_URL_SAFE = re.compile(r"[A-Za-z0-9:/._~-]{1,200}")


def default_prefix(issuer: str) -> str:
    """The ``redis_prefix`` of a deployment that sets none: derived from its issuer, so
    two deployments (different issuers) on one Redis server never share a key or a
    channel, whatever DB number they use (pub/sub ignores it).

    ``capbroker:<issuer>:`` when the issuer is plain URL characters (readable in
    ``redis-cli --scan``), else ``capbroker:<sha256 of the issuer, 16 hex>:``; never a
    brace, so a Cluster hash tag in a key name is never spoiled by the prefix."""
    if _URL_SAFE.fullmatch(issuer):
        return f"capbroker:{issuer}:"
    return f"capbroker:{hashlib.sha256(issuer.encode()).hexdigest()[:16]}:"


def deployment_prefix(issuer: str | None, prefix: str | None) -> str:
    """The prefix a reader of the broker's Redis uses: ``prefix`` (the deployment's
    ``redis_prefix``) or, without it, the default derived from the broker's ``issuer``.
    One of the two is required: a reader on the wrong prefix would see no revocation at
    all and accept revoked tokens, so there is no silent default."""
    if prefix is not None and issuer is not None:
        raise ValueError("give issuer (the default prefix is derived from it) or prefix, not both")
    if prefix is not None:
        return check_prefix(prefix)
    if issuer:
        return default_prefix(issuer)
    raise ValueError(
        "give the broker's issuer (its default redis_prefix is derived from it) or its redis_prefix: "
        "a reader on another deployment's keys would miss every revocation"
    )


def check_prefix(prefix: str) -> str:
    """``prefix`` if it is a valid ``redis_prefix``: 1 to 200 URL-safe characters, no brace
    (a Cluster hash tag in a key name must stay the key's own), no space or control."""
    if not _URL_SAFE.fullmatch(prefix):
        raise ValueError(
            "redis_prefix is 1 to 200 of A-Z a-z 0-9 : / . _ ~ - (no braces, spaces or control characters)"
        )
    return prefix


def on_cluster(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (then the names carry hash tags)."""
    return url.startswith(CLUSTER_SCHEME)


def state_prefix(prefix: str, *, cluster: bool) -> str:
    """The prefix of the keys and channels of the state tag (see the module docstring):
    ``{<prefix>}`` on a cluster, so they all hash to one slot, else ``prefix`` itself."""
    return f"{{{prefix}}}" if cluster else prefix


def cluster_stream(stream: str, *, cluster: bool) -> str:
    """The audit stream's name: on a cluster ``{<stream>}`` (its head and archiver lease,
    named after it, then share its slot), unless the configured name already has a tag."""
    return f"{{{stream}}}" if cluster and not has_tag(stream) else stream


def has_tag(name: str) -> bool:
    """Whether Redis Cluster hashes ``name`` by a tag: a ``{`` followed later by a ``}``
    with at least one character between them."""
    start = name.find("{")
    return start >= 0 and name.find("}", start + 1) > start + 1


def audit_stream(prefix: str) -> str:
    """The audit stream of the deployment with this prefix (unless ``audit_stream`` names one)."""
    return f"{prefix}audit"


def rate(prefix: str, agent: str) -> str:
    """The agent's GCRA state: its theoretical arrival time, in microseconds."""
    return f"{prefix}rate:{agent}"


def task(prefix: str, ref: str) -> str:
    """Hash of the task record (``ref`` from ``broker.capability.names.task_ref``):
    ``expiry`` (epoch seconds), until which the task's last token could be in use."""
    return f"{prefix}task:{ref}"


def revoked_token(prefix: str, jti: str) -> str:
    return f"{prefix}rev:jti:{jti}"


def revoked_task(prefix: str, ref: str) -> str:
    """A revoked task: ``ref`` is ``owner/task``, the owner an agent or ``*`` (every agent)."""
    return f"{prefix}rev:task:{ref}"


def agent_cutoff(prefix: str, agent: str) -> str:
    """The agent's kill-switch cut-off: tokens with ``iat`` at or before it are revoked."""
    return f"{prefix}rev:agent:{agent}"


def suspended(prefix: str, agent: str) -> str:
    """Set while the agent is suspended by the kill switch (no expiry: until an admin
    reinstates it); its value is the time of the suspension."""
    return f"{prefix}suspended:{agent}"


def withdrawn_key(prefix: str, kid: str) -> str:
    """A session key withdrawn from the published set (by an operator, a lost or refused
    entry): never published or signed with again, and every token it signed refused.
    Kept until the key's ``publish_until``, when it would have left the JWKS anyway."""
    return f"{prefix}rev:key:{kid}"


def revocation(prefix: str, jti: str, task_id: str, agent: str, delegators: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The keys one revocation check reads, in ``MGET`` order: token, the task as its
    owner's (the root agent: the last delegator, else the agent), the task id for every
    agent, the agent's cut-off, then the cut-off of each agent up the delegation chain."""
    owner = delegators[-1] if delegators else agent
    return (
        revoked_token(prefix, jti),
        revoked_task(prefix, task_ref(owner, task_id)),
        revoked_task(prefix, task_ref(ANY_AGENT, task_id)),
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


def revocation_channel(prefix: str, db: int = 0) -> str:
    """Pub/sub channel on which every revocation is announced as it is written, so
    verifiers and replicas can keep a local revocation set (``revocation_message``).

    Pub/sub ignores the database number, so a deployment on DB ``db`` other than 0 has it
    in its channel names: two deployments on different DBs never hear each other, even
    with the same prefix. (DB 0 keeps the plain name, which verifiers from before
    ``redis_prefix`` listen on.)"""
    return f"{_on_db(prefix, db)}revocations"


def _on_db(prefix: str, db: int) -> str:
    return prefix if db == 0 else f"{prefix}db{db}:"


def revocation_message(kind: str, ident: str, value: int) -> str:
    """``{"kind": "token"|"task"|"agent"|"key", "id": ..., "value": ...}`` as compact JSON.

    ``id``: for a task, its reference ``owner/task`` (the owner ``*`` for every agent's);
    for a key (a withdrawn signing key), its kid, and ``value`` the time its entry expires.
    ``value``: for a token, its ``exp``; for a task, the time of the revocation; for an
    agent, the cut-off (tokens with ``iat`` at or before it are revoked). The durable state
    (the keys above) is the truth; a message only says "read it now"."""
    if kind not in ("token", "task", "agent", "key"):
        raise ValueError(f"unknown revocation kind {kind!r}")
    return json.dumps({"kind": kind, "id": ident, "value": value}, separators=(",", ":"))


def policy_channel(prefix: str, db: int = 0) -> str:
    """Pub/sub channel on which a process that reloaded its policy tells the others (the
    database number in it as in ``revocation_channel``)."""
    return f"{_on_db(prefix, db)}policy-reloads"


def task_vault_token(prefix: str, ref: str) -> str:
    """The task's Vault token (docs/downstream.md), JSON ``{"accessor", "sealed", "expires"}``: its
    accessor (revocation needs no secret) and the token sealed by Transit, until it expires."""
    return f"{prefix}vault-task:{ref}"


def agent_vault_tasks(prefix: str, agent: str) -> str:
    """Sorted set of the references of the agent's tasks with a task token, scored by the
    task token's expiry (the kill switch revokes them all; expired ones are dropped)."""
    return f"{prefix}vault-agent:{agent}"


def carried_credentials(prefix: str, jti: str) -> str:
    """Set of the accessors of the Vault tokens issued with the capability token ``jti``
    (revoking the token revokes them)."""
    return f"{prefix}vault-carried:{jti}"
