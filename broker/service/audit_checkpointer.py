"""``Checkpointer``: the shell that writes signed audit checkpoints (``broker.audit.checkpoint``).

Each broker process runs one, in the background of its app (``broker.http.app``): it is
told of every event its recorder stores, and when its ``CheckpointSchedule`` says so
(``audit_checkpoint_events`` own events, or ``audit_checkpoint_interval`` seconds after
the oldest of them) it has the long-term key sign a checkpoint anchoring the newest of
them and stores it on the chain. Every process does so on its own timer, for its own
events: no election, no lease. Two processes' checkpoints are harmless duplicates, and a
process vouching only for what it wrote itself is what catches a tail cut in Redis.

Failure never blocks minting: a mint needs its own audit event, never a checkpoint. If
the checkpoint cannot be signed or stored (Vault or Redis down), it is logged, its events
stay pending, and the next try comes ``retry`` seconds later. On shutdown a last
checkpoint anchors what this process wrote since the previous one (best effort, bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Final

from broker.audit.checkpoint import (
    CHECKPOINT_TYP,
    DEFAULT_EVERY_EVENTS,
    DEFAULT_INTERVAL,
    CheckpointSchedule,
    checkpoint_payload,
    flattened,
)
from broker.audit.stored import StoredEvent
from broker.errors import BackendUnavailable
from broker.service.audit_recorder import AuditRecorder
from broker.service.metrics import Metrics
from broker.service.ports import StatementSigner

__all__ = ["Checkpointer"]

log = logging.getLogger("broker.audit")

#: after a failed checkpoint, seconds before the next try (at most the interval)
RETRY: Final = 5.0
#: how long shutdown waits for the last checkpoint
CLOSE_WAIT: Final = 3.0


class Checkpointer:
    """Signs and stores this process's checkpoints; listens to ``recorder`` (its
    ``on_stored``). ``clock``: wall time (the checkpoint's ``iat``); ``monotonic``: the
    schedule's time; ``metrics``: the broker's (``capbroker_audit_checkpoints_total``)."""

    def __init__(
        self,
        recorder: AuditRecorder,
        signer: StatementSigner,
        *,
        issuer: str,
        every_events: int = DEFAULT_EVERY_EVENTS,
        interval: float = DEFAULT_INTERVAL,
        retry: float = RETRY,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self._schedule = CheckpointSchedule(every_events=every_events, interval=interval, retry=retry)
        self._recorder, self._signer, self._issuer = recorder, signer, issuer
        self._clock, self._monotonic = clock, monotonic
        self._metrics = metrics if metrics is not None else Metrics()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._writer = secrets.token_hex(6)  # names this process's checkpoints' request ids
        self.written = 0
        self.failed = 0
        recorder.on_stored = self.appended

    def appended(self, stored: StoredEvent) -> None:
        """The recorder stored one of this process's events."""
        digest = stored.event.get("hash")
        if not isinstance(digest, str):
            return
        self._schedule.appended(stored.id, digest, self._monotonic())
        pending = self._schedule.pending
        if pending == 1 or pending >= self._schedule.every_events:
            self._wake.set()  # the first starts the interval's clock; the Nth is due now

    async def run(self) -> None:
        """Write checkpoints as they fall due, until cancelled."""
        while True:
            self._wake.clear()
            wait = self._schedule.wait(self._monotonic())
            if wait is None or wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            try:
                await self.checkpoint()
            except Exception:  # a bug: say so, and keep the timer alive
                log.exception("audit checkpoint failed unexpectedly")
                await asyncio.sleep(self._schedule.retry)

    async def checkpoint(self) -> StoredEvent | None:
        """Sign and store a checkpoint of this process's newest event now, if any waits;
        None if none does, or if it failed (logged; its events wait for the next)."""
        async with self._lock:
            taken = self._schedule.take()
            if taken is None:
                return None
            try:
                payload = checkpoint_payload(self._issuer, int(self._clock()), taken.head)
                statement = await self._signer.sign_statement(CHECKPOINT_TYP, payload)
                stored = await self._recorder.record_checkpoint(
                    flattened(statement), request_id=f"checkpoint-{self._writer}-{self.written + self.failed + 1}"
                )
            except BackendUnavailable as e:
                self._schedule.failed(taken, self._monotonic())
                self.failed += 1
                self._metrics.inc("capbroker_audit_checkpoints_total", result="failed")
                log.warning(
                    "audit checkpoint not written (%s); %d event(s) wait for the next try in %g s",
                    e.reason, self._schedule.pending, self._schedule.retry,
                )  # fmt: skip
                return None
            self.written += 1
            self._metrics.inc("capbroker_audit_checkpoints_total", result="written")
            return stored

    async def close(self) -> None:
        """A last checkpoint for what this process wrote since the previous one."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.checkpoint(), CLOSE_WAIT)
