"""The revocation rule, once: a token is revoked if its id is, or its task is (for its
agent, or that task id for every agent), or the agent or any agent up its delegation
chain has a cut-off at or after the token's ``iat`` (the kill switch).

Pure. Every place that answers "is this token revoked?" reads it from here: the broker's
state store and its own recent revocations, the verifier's static list, its Redis reader
and its revocation feed. They differ only in where the entries come from.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping

from broker.token.claims import Claims


def chain(claims: Claims) -> tuple[str, ...]:
    """The agents whose kill switch reaches this token: its agent, then every delegator."""
    if claims.act is None:
        return (claims.agent,)
    return (claims.agent, *claims.delegators)


def revoked(iat: int, *, token: bool, task: bool, cutoffs: Iterable[int | None]) -> bool:
    """The rule on entries already fetched for one token: its id's, its task's (either
    reference), and the cut-offs of ``chain(claims)`` (None where an agent has none)."""
    return token or task or any(cutoff is not None and iat <= cutoff for cutoff in cutoffs)


def revoked_in(claims: Claims, tokens: Container[str], tasks: Container[str], cutoffs: Mapping[str, int]) -> bool:
    """The rule on a local set: token ids, task references (``Claims.task_refs``) and
    agent -> cut-off. Empty sets are skipped before any name is built (the feed's hot path)."""
    if claims.jti in tokens:
        return True
    if tasks and any(ref in tasks for ref in claims.task_refs):
        return True
    if not cutoffs:
        return False
    return revoked(claims.iat, token=False, task=False, cutoffs=(cutoffs.get(agent) for agent in chain(claims)))
