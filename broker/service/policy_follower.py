"""Follow policy reloads announced by the other processes (workers, replicas) of a broker.

A reload through one process is announced with the digest it loaded. Each other process
loads its own policy files again and compares:

- same digest: the new policy is in force here too;
- another digest (this replica's files differ, e.g. a deploy that has not reached it):
  the policy in force is kept, and ``/readyz`` reports ``policy_mismatch`` (not ready)
  until its files give the announced digest; they are read again every
  ``RECHECK_SECONDS`` meanwhile. A reload here that gives the announced digest (SIGHUP)
  ends the mismatch too; a reload through this process's API makes its digest the one
  announced to the others.

An announcement without a digest (an older process, or the one yielded after the
store's reconnect, when announcements may have been missed) reloads as before, with
nothing to compare against.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from broker.errors import BrokerError, PolicyInvalid
from broker.policy.model import Policy
from broker.service import admin
from broker.service.broker import Broker, Call

log = logging.getLogger("capbroker.policy")

#: while mismatched, how often the policy files are read again
RECHECK_SECONDS = 1.0

POLICY_MISMATCH = "policy_mismatch"


def policy_check(broker: Broker) -> str:
    """The readiness check's value: ``ok``, or ``policy_mismatch`` while another process
    announced a digest this one's files do not give."""
    wanted = broker.policy_wanted
    return "ok" if wanted is None or wanted == broker.policy.digest else POLICY_MISMATCH


@dataclass
class PolicyFollower:
    broker: Broker
    recheck_seconds: float = RECHECK_SECONDS
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def run(self) -> None:
        """Follow announcements, and recheck the files while mismatched, for the app's
        life (cancelled at shutdown)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._follow())
            group.create_task(self._recheck_while_mismatched())

    async def _follow(self) -> None:
        async for digest in self.broker.state.policy_reloads(self.broker.origin):
            async with self._lock:
                try:
                    await self.announced(digest)
                except BrokerError as e:  # the audit event not stored (Redis away): keep following
                    log.error("a policy reload announced by a peer: %s (%s)", e.code, e.reason)  # noqa: TRY400

    async def _recheck_while_mismatched(self) -> None:
        while True:
            await asyncio.sleep(self.recheck_seconds)
            if policy_check(self.broker) != "ok":
                async with self._lock:
                    try:
                        await self.recheck()
                    except BrokerError as e:
                        log.error("policy recheck: %s (%s)", e.code, e.reason)  # noqa: TRY400

    async def announced(self, digest: str | None) -> None:
        """Another process reloaded (``digest``: what it loaded, None if not said)."""
        broker = self.broker
        broker.policy_wanted = digest
        if digest is not None and digest == broker.policy.digest:
            return
        try:
            if digest is None:
                await admin.reload(broker, Call("peer-reload", None), trigger="peer")
                return
            found = await broker.load_policy_files()
        except PolicyInvalid as e:
            log.error("policy reload announced by a peer refused here, policy kept: %s", e.reason)  # noqa: TRY400
            return
        except BrokerError as e:
            log.error("policy reload announced by a peer failed (%s)", e.code)  # noqa: TRY400
            return
        if found.digest == digest:
            await self._apply(found)
            return
        log.error(
            "a peer reloaded policy %s but this replica's files give %s: policy %s kept, not ready until they match",
            digest[:12],
            found.digest[:12],
            broker.policy.digest[:12],
        )
        await broker.audit.record(
            "admin",
            request_id="peer-reload",
            action="reload",
            trigger="peer",
            decision="deny",
            code=POLICY_MISMATCH,
            announced=digest,
            found=found.digest,
            kept=broker.policy.digest,
        )

    async def recheck(self) -> None:
        """Read the files again; in force if they now give the announced digest."""
        wanted = self.broker.policy_wanted
        if policy_check(self.broker) == "ok" or wanted is None:
            return
        try:
            found = await self.broker.load_policy_files()
        except BrokerError:
            return  # still not ready; the next recheck tries again
        if found.digest == wanted:
            log.info("this replica's policy files now give the announced digest %s", wanted[:12])
            await self._apply(found)

    async def _apply(self, policy: Policy) -> None:
        old = self.broker.policy.digest
        self.broker.install_policy(policy)
        await self.broker.audit.record(
            "admin",
            request_id="peer-reload",
            action="reload",
            trigger="peer",
            decision="allow",
            previous=old,
            policy=policy.digest,
        )
