"""``GroupCommit``: batches in arrival order, one failure per batch, nobody left waiting."""

from __future__ import annotations

import asyncio

import pytest

from broker.backends.group_commit import GroupCommit
from broker.errors import BackendUnavailable


class Recorder:
    def __init__(self, fail_on: int | None = None, short: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.short = short
        self.gate = asyncio.Event()
        self.gate.set()

    async def flush(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await self.gate.wait()
        await asyncio.sleep(0)
        if self.fail_on is not None and self.fail_on in items:
            raise ConnectionError("down")
        return [i * 10 for i in items][: -1 if self.short else None]


def test_each_caller_gets_its_own_answer_and_batches_keep_arrival_order() -> None:
    async def body() -> None:
        rec = Recorder()
        commit: GroupCommit[int, int] = GroupCommit(rec.flush, max_batch=8, name="t")
        assert await asyncio.gather(*(commit.submit(i) for i in range(30))) == [i * 10 for i in range(30)]
        assert [i for batch in rec.batches for i in batch] == list(range(30))
        assert [len(b) for b in rec.batches] == [8, 8, 8, 6]

    asyncio.run(body())


def test_a_failed_batch_fails_only_its_callers_and_the_next_batch_goes_on() -> None:
    async def body() -> None:
        rec = Recorder(fail_on=3)
        commit: GroupCommit[int, int] = GroupCommit(rec.flush, max_batch=4, name="store")
        results = await asyncio.gather(*(commit.submit(i) for i in range(9)), return_exceptions=True)
        failed = {i for i, r in enumerate(results) if isinstance(r, BaseException)}
        (bad,) = [b for b in rec.batches if 3 in b]
        assert failed == set(bad)
        assert all(str(results[i]) == "store: ConnectionError" for i in failed)
        assert all(results[i] == i * 10 for i in range(9) if i not in failed)

    asyncio.run(body())


def test_an_answer_of_the_wrong_length_is_backend_unavailable() -> None:
    async def body() -> None:
        commit: GroupCommit[int, int] = GroupCommit(Recorder(short=True).flush, max_batch=4, name="store")
        with pytest.raises(BackendUnavailable, match="unexpected reply"):
            await commit.submit(1)

    asyncio.run(body())


def test_closing_fails_everything_still_queued() -> None:
    async def body() -> None:
        rec = Recorder()
        rec.gate.clear()  # the first batch hangs in flight
        commit: GroupCommit[int, int] = GroupCommit(rec.flush, max_batch=4, name="store")
        waiting = [asyncio.ensure_future(commit.submit(i)) for i in range(6)]
        await asyncio.sleep(0.01)
        await commit.aclose()
        results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 1.0)
        assert all(isinstance(r, BackendUnavailable) for r in results)

    asyncio.run(body())


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommit(Recorder().flush, max_batch=0, name="t")
