"""A policy reload announced by another replica: followed when this replica's files give
the announced digest; otherwise the policy in force is kept and ``/readyz`` reports
``policy_mismatch`` (not ready) until the files match (``broker.service.policy_follower``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from broker.backends.memory_state import MemoryState
from broker.errors import BackendUnavailable
from broker.policy.loader import load_policy
from broker.service import admin
from broker.service.broker import Call
from broker.service.policy_follower import PolicyFollower
from broker.service.ports import StoredEvent
from broker.service.readiness import Readiness
from tests.service.harness import Harness, make_harness
from tests.service.support import copy_scopes, edit

NARROWER = ("scopes: [widgets-read, widgets-pulls-read, widgets-review-comment]", "scopes: [widgets-read]")


class Announcements(MemoryState):
    """A state store whose peers' reload announcements the test sends; ``down``: audit
    appends fail as on a Redis that went away."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.down = False

    async def policy_reloads(self, origin: str) -> AsyncIterator[str | None]:
        while True:
            yield await self.queue.get()

    async def append_audit(self, event: Mapping[str, Any]) -> StoredEvent:
        if self.down:
            raise BackendUnavailable("redis down (test)")
        return await super().append_audit(event)


def replicas(tmp_path: Path) -> tuple[Harness, Path, Path]:
    """A replica on its own copy of the policy, and another copy its peer edits."""
    mine = copy_scopes(tmp_path / "mine")
    theirs = copy_scopes(tmp_path / "theirs")
    edit(theirs / "code-review.yaml", *NARROWER)
    return make_harness(mine), mine, theirs


async def readyz(h: Harness) -> dict[str, Any]:
    await h.broker.state.ping()
    h.broker.ready_for_signing = True
    return await Readiness(h.broker).check()


def audit_events(h: Harness) -> list[dict[str, Any]]:
    return [json.loads(line) for line in h.audit_out.getvalue().splitlines() if line.strip()]


def test_an_announced_digest_the_files_give_is_put_in_force(tmp_path: Path) -> None:
    h, mine, theirs = replicas(tmp_path)
    announced = load_policy(theirs).digest
    edit(mine / "code-review.yaml", *NARROWER)  # the deploy reached this replica too

    async def go() -> dict[str, Any]:
        await PolicyFollower(h.broker).announced(announced)
        return await readyz(h)

    answer = asyncio.run(go())
    assert h.broker.policy.digest == announced
    assert answer["ready"] is True
    assert (answer["checks"]["policy"], answer["policy"]) == ("ok", announced)


def test_files_giving_another_digest_keep_the_policy_and_readyz_says_policy_mismatch_until_they_match(
    tmp_path: Path,
) -> None:
    h, mine, theirs = replicas(tmp_path)
    kept = h.broker.policy.digest
    announced = load_policy(theirs).digest
    assert kept != announced
    follower = PolicyFollower(h.broker)

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        await follower.announced(announced)
        before = await readyz(h)
        await follower.recheck()  # the files have not changed: still mismatched
        assert h.broker.policy.digest == kept
        edit(mine / "code-review.yaml", *NARROWER)
        await follower.recheck()
        return before, await readyz(h)

    before, after = asyncio.run(go())
    assert before["ready"] is False
    assert (before["checks"]["policy"], before["policy"]) == ("policy_mismatch", kept)
    assert after["ready"] is True
    assert (after["checks"]["policy"], after["policy"]) == ("ok", announced)
    reloads = [e for e in audit_events(h) if e.get("action") == "reload"]
    assert [(e["decision"], e.get("code")) for e in reloads] == [("deny", "policy_mismatch"), ("allow", None)]
    assert (reloads[0]["announced"], reloads[0]["kept"]) == (announced, kept)


def test_the_running_follower_rechecks_the_files_while_mismatched(tmp_path: Path) -> None:
    mine = copy_scopes(tmp_path / "mine")
    theirs = copy_scopes(tmp_path / "theirs")
    edit(theirs / "code-review.yaml", *NARROWER)
    announced = load_policy(theirs).digest

    async def go() -> tuple[str, str]:
        state = Announcements()
        h = make_harness(mine, state=state)
        running = asyncio.create_task(PolicyFollower(h.broker, recheck_seconds=0.05).run())
        try:
            await state.queue.put(announced)
            async with asyncio.timeout(10):
                while (await readyz(h))["checks"]["policy"] != "policy_mismatch":
                    await asyncio.sleep(0.01)
            edit(mine / "code-review.yaml", *NARROWER)
            async with asyncio.timeout(10):  # rechecked every 0.05 s
                while not (answer := await readyz(h))["ready"]:
                    await asyncio.sleep(0.01)
            return answer["checks"]["policy"], answer["policy"]
        finally:
            running.cancel()

    assert asyncio.run(go()) == ("ok", announced)


def test_a_reload_through_the_mismatched_replica_makes_its_digest_the_announced_one(tmp_path: Path) -> None:
    h, _mine, theirs = replicas(tmp_path)

    async def go() -> dict[str, Any]:
        await PolicyFollower(h.broker).announced(load_policy(theirs).digest)
        assert (await readyz(h))["checks"]["policy"] == "policy_mismatch"
        call = Call("r1", h.keys["admin"])
        await admin.reload(h.broker, call)
        return await readyz(h)

    answer = asyncio.run(go())
    assert answer["ready"] is True


def test_an_announcement_without_a_digest_reloads_the_files(tmp_path: Path) -> None:
    h, mine, theirs = replicas(tmp_path)
    edit(mine / "code-review.yaml", *NARROWER)
    asyncio.run(PolicyFollower(h.broker).announced(None))
    assert h.broker.policy.digest == load_policy(theirs).digest
    assert asyncio.run(readyz(h))["ready"] is True


def test_the_follower_outlives_an_audit_store_that_was_away(tmp_path: Path) -> None:
    mine = copy_scopes(tmp_path / "mine")
    theirs = copy_scopes(tmp_path / "theirs")
    edit(theirs / "code-review.yaml", *NARROWER)
    announced = load_policy(theirs).digest

    async def go() -> str:
        state = Announcements()
        h = make_harness(mine, state=state)
        running = asyncio.create_task(PolicyFollower(h.broker, recheck_seconds=60).run())
        try:
            state.down = True
            await state.queue.put(announced)  # mismatched: its audit event cannot be stored
            async with asyncio.timeout(10):
                while (await readyz(h))["checks"]["policy"] != "policy_mismatch":
                    await asyncio.sleep(0.01)
            state.down = False
            edit(mine / "code-review.yaml", *NARROWER)
            await state.queue.put(announced)  # announced again: the follower still runs
            async with asyncio.timeout(10):
                while not (answer := await readyz(h))["ready"]:
                    await asyncio.sleep(0.01)
            assert not running.done()
            return str(answer["policy"])
        finally:
            running.cancel()

    assert asyncio.run(go()) == announced
