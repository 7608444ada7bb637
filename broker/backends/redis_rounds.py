"""``SharedRounds``: the mint claims and audit appends of concurrent requests, in shared
Redis round trips.

Every mint writes twice: its claim (rate, then task) before signing, its audit event
after. Both queue here, and one writer sends, in one pipeline, everything queued while
the round before was in flight: the claim script for every queued claim (each runs as if
alone, in arrival order) and one compare-and-append of every queued event, sealed onto
the chain head this process last saw. No added wait: alone, an item leaves at once.

An append that finds the head moved (another process appended first) is not a failure:
its events are sealed again onto the head the script answered and go first in the next
round, ahead of newer events, so queue order stays chain order and the retry costs no
round trip of its own. After ``AUDIT_ATTEMPTS`` such rounds they fail
(``BackendUnavailable``). A round whose pipeline fails fails every item in it; the
writer goes on with the next. Cancelling the writer (``aclose``) fails everything queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from broker.audit.chain import GENESIS, sealed_with_canonical
from broker.audit.stored import StoredEvent
from broker.errors import BackendUnavailable
from broker.service.metrics import observe_redis
from broker.service.ports import MintClaim, TaskClaim

CLAIM_BATCH: Final = 128  # claims per round at most
AUDIT_BATCH: Final = 256  # events per round at most
AUDIT_ATTEMPTS: Final = 64  # rounds an event may find the head moved before it fails


@dataclass(frozen=True, slots=True)
class Claim:
    # rate, revoked task, its id revoked for every agent, task record, suspended, cut-off
    keys: tuple[str, str, str, str, str, str]
    args: tuple[int, int, int, int]  # interval, limit, the tokens' iat, the record's expiry


@dataclass(slots=True)
class _Pending:
    item: Any
    future: asyncio.Future[Any]
    attempts: int = field(default=0)


@dataclass(frozen=True, slots=True)
class Scripts:
    """The two scripts a round runs: their source (loaded once, again after a NOSCRIPT)."""

    claim: str
    append: str


class SharedRounds:
    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        *,
        call: Callable[[Awaitable[Any]], Awaitable[Any]],
        head_key: str,
        stream: str,
        deadline: float = math.inf,
    ) -> None:
        """``deadline``: the longest (seconds) a caller waits for its claim or event, queued
        behind a round in flight included; past it the caller gets ``BackendUnavailable``
        and the item, if not sent yet, never is."""
        self._deadline = deadline
        self._redis = redis
        self._scripts = scripts
        self._shas: tuple[str, str] | None = None
        self._call = call
        self._head_key = head_key
        self._stream = stream
        self.head = GENESIS  # the chain head this process last saw: a guess the script checks
        self._claims: list[_Pending] = []
        self._events: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None

    async def claim(self, claim: Claim) -> MintClaim:
        return await self._submit(self._claims, claim)  # type: ignore[no-any-return]

    async def append(self, event: Mapping[str, Any]) -> StoredEvent:
        return await self._submit(self._events, event)  # type: ignore[no-any-return]

    async def _submit(self, queue: list[_Pending], item: object) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queue.append(_Pending(item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._deadline)
        except TimeoutError:
            # queued behind a round that hangs (a paused Redis): answer within the bound
            # anyway; the round's own failure, when it comes, finds this one settled
            if not future.done():
                future.set_exception(BackendUnavailable("redis: TimeoutError"))
            return future.result()

    async def _write(self) -> None:
        while self._claims or self._events:
            claims, events = _take(self._claims, CLAIM_BATCH), _take(self._events, AUDIT_BATCH)
            if not (claims or events):
                continue  # only items whose callers gave up (past the deadline): never sent
            try:
                claim_reply, append_reply, sealed = await self._round(
                    [p.item for p in claims], [p.item for p in events]
                )
            except BaseException as e:  # every waiter must hear of it, cancellation too
                error = e if isinstance(e, BackendUnavailable) else BackendUnavailable(f"redis: {type(e).__name__}")
                _fail([*claims, *events], error)
                if isinstance(e, asyncio.CancelledError):
                    _fail([*self._claims, *self._events], error)
                    self._claims.clear()
                    self._events.clear()
                    raise
                continue
            _settle_claims(claims, claim_reply)
            self._settle_events(events, append_reply, sealed)

    async def _round(
        self, claims: list[Claim], events: list[Mapping[str, Any]]
    ) -> tuple[object, object, list[tuple[dict[str, Any], str]]]:
        """One pipeline: the claims' script, then the events' compare-and-append. Returns
        both replies (an error reply as its exception) and the events as sealed."""
        head = self.head
        sealed: list[tuple[dict[str, Any], str]] = []
        stored: list[bytes] = []
        prev = head
        for event in events:
            one, encoded = sealed_with_canonical(event, prev)
            prev = one["hash"]
            sealed.append((one, prev))
            stored.append(encoded)
        claim_reply: object = None
        append_reply: object = None
        send_claims, send_events = bool(claims), bool(events)
        for _ in range(2):  # once more after loading the scripts (a restarted Redis forgot them)
            claim_sha, append_sha = self._shas or await self._load_scripts()
            pipe = self._redis.pipeline(transaction=False)
            if send_claims:
                keys = [k for c in claims for k in c.keys]
                # as a raw command: redis-py's cluster pipeline refuses its ``evalsha`` method,
                # though it routes the command by its keys like any other
                pipe.execute_command("EVALSHA", claim_sha, len(keys), *keys, *(a for c in claims for a in c.args))
            if send_events:
                pipe.execute_command(
                    "EVALSHA", append_sha, 2, self._head_key, self._stream, GENESIS, head, *stored, prev
                )
            started = time.perf_counter()
            try:
                replies = iter(await self._call(pipe.execute(raise_on_error=False)))
            finally:
                observe_redis(time.perf_counter() - started)
            claim_reply = next(replies) if send_claims else claim_reply
            append_reply = next(replies) if send_events else append_reply
            # only a part Redis did not run (NOSCRIPT) goes again: the other one has run
            send_claims = isinstance(claim_reply, NoScriptError)
            send_events = isinstance(append_reply, NoScriptError)
            if not (send_claims or send_events):
                return claim_reply, append_reply, sealed
            self._shas = None
        raise BackendUnavailable("redis: scripts not loaded")

    async def _load_scripts(self) -> tuple[str, str]:
        claim_sha = await self._call(self._redis.script_load(self._scripts.claim))
        append_sha = await self._call(self._redis.script_load(self._scripts.append))
        self._shas = (str(claim_sha), str(append_sha))
        return self._shas

    def _settle_events(self, events: list[_Pending], reply: object, sealed: list[tuple[dict[str, Any], str]]) -> None:
        if not events:
            return
        if isinstance(reply, BaseException):
            _fail(events, BackendUnavailable(f"redis: {type(reply).__name__}"))
            return
        if not isinstance(reply, list) or len(reply) != 2:
            _fail(events, BackendUnavailable("redis: unexpected reply"))
            return
        ok, value = reply
        if ok == 1 and isinstance(value, list) and len(value) == len(events):
            self.head = sealed[-1][1]
            for pending, entry_id, (event, _) in zip(events, value, sealed, strict=True):
                if not pending.future.done():
                    pending.future.set_result(StoredEvent(str(entry_id), event))
            return
        if ok == 0 and isinstance(value, str):
            self.head = value  # another process appended first: seal onto its event, next round
            retry = [p for p in events if not p.future.done()]
            for pending in retry:
                pending.attempts += 1
            busy = [p for p in retry if p.attempts >= AUDIT_ATTEMPTS]
            _fail(busy, BackendUnavailable("redis: audit stream too busy"))
            self._events[:0] = [p for p in retry if p.attempts < AUDIT_ATTEMPTS]
            return
        _fail(events, BackendUnavailable("redis: unexpected reply"))

    async def aclose(self) -> None:
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer


def _take(queue: list[_Pending], most: int) -> list[_Pending]:
    """Up to ``most`` items from the front whose callers still wait."""
    batch = queue[:most]
    del queue[: len(batch)]
    return [p for p in batch if not p.future.done()]


def _fail(waiting: Sequence[_Pending], error: BaseException) -> None:
    for pending in waiting:
        if not pending.future.done():
            pending.future.set_exception(error)


def _settle_claims(claims: list[_Pending], reply: object) -> None:
    if not claims:
        return
    if isinstance(reply, BaseException):
        _fail(claims, BackendUnavailable(f"redis: {type(reply).__name__}"))
        return
    if not isinstance(reply, list) or len(reply) != len(claims):
        _fail(claims, BackendUnavailable("redis: unexpected reply"))
        return
    for pending, one in zip(claims, reply, strict=True):
        if pending.future.done():
            continue
        try:
            pending.future.set_result(mint_claim(one))
        except BackendUnavailable as e:
            pending.future.set_exception(e)


def mint_claim(reply: object) -> MintClaim:
    if not isinstance(reply, list) or len(reply) != 2:
        raise BackendUnavailable("redis: unexpected reply")
    wait = reply[0]
    if not isinstance(wait, int):
        raise BackendUnavailable("redis: unexpected reply")
    if wait > 0:
        return MintClaim(wait / 1_000_000, None)
    try:
        return MintClaim(0.0, TaskClaim(str(reply[1])))
    except ValueError:
        raise BackendUnavailable("redis: unexpected reply") from None
