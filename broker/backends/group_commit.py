"""``GroupCommit``: many callers' items, one round trip per batch (group commit).

Callers ``submit`` an item and wait for its own result. One writer task takes everything
queued and hands it to ``flush`` in one call (at most ``max_batch`` items), while new
items queue behind it. No added wait: alone, an item goes at once; under load one round
trip carries every item that arrived while the previous one was in flight.

``flush`` answers every item of its batch, in order, or raises; then every caller of that
batch gets the error (a ``BackendUnavailable`` as is, anything else wrapped in one), and
the writer goes on with the next batch. Cancelling the writer (``aclose``) fails every
item still queued: no caller waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from broker.errors import BackendUnavailable

In = TypeVar("In")
Out = TypeVar("Out")


class GroupCommit(Generic[In, Out]):
    def __init__(self, flush: Callable[[list[In]], Awaitable[Sequence[Out]]], *, max_batch: int, name: str) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._flush = flush
        self._max_batch = max_batch
        self._name = name
        self._queue: list[tuple[In, asyncio.Future[Out]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: In) -> Out:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: len(batch)]
            try:
                results = await self._answers(batch)
            except BaseException as e:  # every waiter must hear of it, cancellation too
                error = e if isinstance(e, BackendUnavailable) else _unavailable(self._name, e)
                _fail(batch, error)
                if isinstance(e, asyncio.CancelledError):
                    _fail(self._queue, error)
                    self._queue.clear()
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _answers(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> Sequence[Out]:
        results = await self._flush([item for item, _ in batch])
        if len(results) != len(batch):
            raise BackendUnavailable(f"{self._name}: unexpected reply")
        return results

    async def aclose(self) -> None:
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer


def _fail(waiting: Sequence[tuple[object, asyncio.Future[Out]]], error: BaseException) -> None:
    for _, future in waiting:
        if not future.done():
            future.set_exception(error)


def _unavailable(name: str, e: BaseException) -> BackendUnavailable:
    return BackendUnavailable(f"{name}: {type(e).__name__}")
