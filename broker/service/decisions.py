"""Policy decisions remembered per policy: the same agent asking for the same scopes gets
the same answer until the policy changes, so the capability checks run once, not per mint.

The key is the policy's digest (a reload gives a new one) plus everything ``decide`` reads
from the request except the task id, which no decision depends on. Bounded: when full it
starts over.
"""

from __future__ import annotations

from typing import Final

from broker.policy.decide import Decision, decide
from broker.policy.model import Agent, Policy
from broker.policy.requests import MintRequest, ScopeRequest

MAX_REMEMBERED: Final = 4096

_Key = tuple[str, str, tuple[ScopeRequest, ...], int | None, bool]


class DecisionCache:
    def __init__(self, size: int = MAX_REMEMBERED) -> None:
        self._size = size
        self._known: dict[_Key, Decision] = {}

    def decide(self, agent: Agent, request: MintRequest, policy: Policy) -> Decision:
        if policy.agents.get(agent.name) is not agent:
            return decide(agent, request, policy)  # not this policy's agent: never from memory
        key = (policy.digest, agent.name, request.scopes, request.ttl, request.pop)
        known = self._known.get(key)
        if known is None:
            known = decide(agent, request, policy)
            if len(self._known) >= self._size:
                self._known.clear()
            self._known[key] = known
        return known
