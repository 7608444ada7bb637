"""``MemoryState``: the ``StateStore`` of the embedded default, inside one process.

Everything lives in dicts and dies with the process; nothing is shared with another
replica, so run exactly one broker process with it. Each method runs to completion
without awaiting, which makes it atomic on the event loop, the way a Lua script is atomic
in Redis. Entries expire lazily (when read, and in a sweep every few hundred writes) on
the schedule of ``broker.service.retention``, using the injected clock.

Audit events: the chain is sealed here as in Redis, and the newest ``audit_tail`` events
(10,000 by default) are kept, so a dev broker left running does not grow without bound.
The complete record of a dev broker is its stdout, where every event is also written as
one JSON line; there is no archive (``broker serve`` archives: docs/settings.md "Audit").
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.audit.chain import GENESIS, seal
from broker.audit.stored import StoredEvent
from broker.backends.downstream_records import MemoryDownstreamRecords
from broker.backends.gcra import gcra_parameters
from broker.capability.names import ANY_AGENT, task_ref
from broker.service import retention
from broker.service.ports import MintClaim, RevocationState, TaskClaim

_SWEEP_EVERY = 512  # writes between two sweeps of expired entries
AUDIT_TAIL = 10_000  # audit events kept in memory (the newest)


@dataclass(frozen=True, slots=True)
class _Expiring:
    value: int
    expiry: float  # epoch seconds


class MemoryState:
    """In-process state: rate limits, task records, revocations and the audit chain."""

    def __init__(self, *, clock: Callable[[], float] = time.time, audit_tail: int = AUDIT_TAIL) -> None:
        self._clock = clock
        self._rates: dict[str, _Expiring] = {}  # agent -> GCRA arrival time (µs)
        self._tasks: dict[str, _Expiring] = {}  # task reference -> record (value unused)
        self._revoked_tokens: dict[str, _Expiring] = {}
        self._revoked_tasks: dict[str, _Expiring] = {}
        self._cutoffs: dict[str, _Expiring] = {}  # agent -> cut-off (epoch seconds)
        self._suspended: dict[str, int] = {}  # agent -> when suspended; until reinstated
        self._once: dict[str, _Expiring] = {}  # replay-guard claims
        self._children: dict[str, tuple[set[str], _Expiring]] = {}  # parent jti -> child jtis
        self._events: deque[StoredEvent] = deque(maxlen=audit_tail)
        self._head = GENESIS
        self._last_id = (0, 0)
        self._writes = 0

    def downstream_records(self) -> MemoryDownstreamRecords:
        """The downstream credentials' records, in this process."""
        return MemoryDownstreamRecords(self._clock)

    # ------------------------------------------------------------------ rate limits

    async def take_rate(self, agent: str, count: int, per_seconds: int) -> float:
        """GCRA, the same arithmetic as ``RedisState``'s script, in whole microseconds."""
        interval, limit = gcra_parameters(count, per_seconds)
        now = int(self._clock() * 1_000_000)
        stored = self._live(self._rates, agent)
        tat = max(stored.value if stored else now, now)
        new_tat = tat + interval
        if new_tat - now > limit:
            return (new_tat - limit - now) / 1_000_000
        self._write(self._rates, agent, _Expiring(new_tat, new_tat / 1_000_000))
        return 0.0

    # ------------------------------------------------------------------ tasks

    async def claim_task(self, task: str, owner: str, agents: Sequence[str], iat: int, expires_at: int) -> TaskClaim:
        refs = (task_ref(owner, task), task_ref(ANY_AGENT, task))
        if any(self._live(self._revoked_tasks, ref) is not None for ref in refs):
            return TaskClaim.REVOKED
        for agent in agents:
            cutoff = self._live(self._cutoffs, agent)
            if agent in self._suspended or (cutoff is not None and cutoff.value >= iat):
                return TaskClaim.SUSPENDED
        record = self._live(self._tasks, refs[0])
        expiry = max(retention.task_record_expiry(expires_at), int(record.expiry) if record else 0)
        self._write(self._tasks, refs[0], _Expiring(1, expiry))
        return TaskClaim.OWNED

    async def claim_mint(
        self, agent: str, rate: tuple[int, int] | None, task: str, iat: int, expires_at: int
    ) -> MintClaim:
        # Neither call suspends, so the pair is atomic on the event loop.
        wait = 0.0 if rate is None else await self.take_rate(agent, *rate)
        if wait > 0:
            return MintClaim(wait, None)
        return MintClaim(0.0, await self.claim_task(task, agent, (agent,), iat, expires_at))

    async def task_live(self, task: str, owner: str) -> bool:
        return self._live(self._tasks, task_ref(owner, task)) is not None

    # ------------------------------------------------------------------ revocation

    async def revoke_token(self, jti: str, expires_at: int) -> None:
        self._write(self._revoked_tokens, jti, _Expiring(1, retention.token_revocation_expiry(expires_at)))

    async def revoke_task(self, task: str, owner: str | None, now: int, *, only_if_live: bool = False) -> bool:
        ref = task_ref(ANY_AGENT if owner is None else owner, task)
        if only_if_live and self._live(self._tasks, ref) is None:
            return False
        self._write(self._revoked_tasks, ref, _Expiring(1, retention.task_revocation_expiry(now)))
        return True

    async def revoke_agent(self, agent: str, cutoff: int) -> None:
        self._suspended[agent] = cutoff
        current = self._live(self._cutoffs, agent)
        if current is None or cutoff > current.value:
            self._write(self._cutoffs, agent, _Expiring(cutoff, retention.agent_cutoff_expiry(cutoff)))

    async def reinstate_agent(self, agent: str) -> bool:
        return self._suspended.pop(agent, None) is not None

    async def is_suspended(self, agent: str) -> bool:
        return agent in self._suspended

    async def revocation_state(
        self, jti: str, task: str, agent: str, delegators: Sequence[str] = ()
    ) -> RevocationState:
        cutoffs = [c.value for name in (agent, *delegators) if (c := self._live(self._cutoffs, name)) is not None]
        owner = delegators[-1] if delegators else agent
        refs = (task_ref(owner, task), task_ref(ANY_AGENT, task))
        return RevocationState(
            token_revoked=self._live(self._revoked_tokens, jti) is not None,
            task_revoked=any(self._live(self._revoked_tasks, ref) is not None for ref in refs),
            agent_cutoff=max(cutoffs) if cutoffs else None,
        )

    async def claim_once(self, key: str, expires_at: int) -> bool:
        if self._live(self._once, key) is not None:
            return False
        self._write(self._once, key, _Expiring(1, expires_at))
        return True

    async def add_delegation(self, parent_jti: str, child_jti: str, parent_exp: int) -> None:
        entry = self._children.get(parent_jti)
        if entry is None or self._expired(entry[1].expiry):
            entry = (set(), _Expiring(0, retention.token_revocation_expiry(parent_exp)))
            self._children[parent_jti] = entry
        entry[0].add(child_jti)
        self._count_write()

    async def delegations(self, jti: str) -> list[str]:
        entry = self._children.get(jti)
        if entry is None or self._expired(entry[1].expiry):
            return []
        return sorted(entry[0])

    # ------------------------------------------------------------------ audit

    async def append_audit(self, event: Mapping[str, Any]) -> StoredEvent:
        sealed = seal(event, self._head)
        stored = StoredEvent(self._next_id(), sealed)
        self._events.append(stored)
        self._head = sealed["hash"]
        return stored

    async def audit_events(self) -> AsyncIterator[StoredEvent]:
        for stored in list(self._events):
            yield stored

    async def audit_head(self) -> str:
        return self._head

    async def announce_policy_reload(self, origin: str, digest: str) -> None:
        return None  # one process: nobody else to tell

    async def policy_reloads(self, origin: str) -> AsyncIterator[str | None]:
        await asyncio.Event().wait()  # never: there are no other processes
        yield None

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    # ------------------------------------------------------------------ internals

    def _next_id(self) -> str:
        """A Redis-style stream id, ``<ms>-<seq>``, strictly increasing even if the clock
        stands still or steps back."""
        ms = int(self._clock() * 1000)
        last_ms, last_seq = self._last_id
        self._last_id = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return f"{self._last_id[0]}-{self._last_id[1]}"

    def _expired(self, expiry: float) -> bool:
        return self._clock() >= expiry

    def _live(self, table: dict[str, _Expiring], key: str) -> _Expiring | None:
        entry = table.get(key)
        if entry is not None and self._expired(entry.expiry):
            del table[key]
            return None
        return entry

    def _write(self, table: dict[str, _Expiring], key: str, entry: _Expiring) -> None:
        table[key] = entry
        self._count_write()

    def _count_write(self) -> None:
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            self._sweep()

    def _sweep(self) -> None:
        now = self._clock()
        for table in (self._rates, self._tasks, self._revoked_tokens, self._revoked_tasks, self._cutoffs, self._once):
            for key in [k for k, e in table.items() if now >= e.expiry]:
                del table[key]
        for key in [k for k, (_, e) in self._children.items() if now >= e.expiry]:
            del self._children[key]
