"""Audit checkpoints, pure: the statement, its verification, the writer's schedule, and the
walk's checks (anchors, the stored head, the unanchored tail), with a fixed clock.

The same attacks on real Redis and OpenBao, through ``broker audit verify``, are in
tests/integration/test_audit_checkpoints.py."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from broker.audit.chain import (
    CHECKPOINT_GRACE,
    GENESIS,
    ChainWalk,
    CheckpointKeys,
    seal,
    verify_audit,
    verify_chain,
)
from broker.audit.checkpoint import (
    CHECKPOINT_TYP,
    CheckpointError,
    CheckpointSchedule,
    checkpoint_payload,
    flattened,
    verify_checkpoint,
)
from broker.audit.stored import StoredEvent
from broker.backends.local_signer import LocalSigningBackend
from broker.backends.memory_state import MemoryState
from broker.errors import BackendUnavailable
from broker.service.audit_checkpointer import Checkpointer
from broker.service.audit_recorder import AuditRecorder
from broker.service.metrics import Metrics
from broker.token.b64 import b64url_decode, b64url_encode
from broker.token.endorsement import ENDORSEMENT_TYP, statement_input
from broker.token.keys import KeySet, LocalSigner

ISSUER = "https://broker.example"
NOW = 1_800_000_000  # the fixed clock: epoch seconds
LONG_TERM = LocalSigner.generate("EdDSA", "capbroker-v1")
KEYS = CheckpointKeys(KeySet([LONG_TERM.public]), ISSUER)
HEAD = "ab" * 32


def sign(payload: bytes, signer: LocalSigner = LONG_TERM, typ: str = CHECKPOINT_TYP) -> dict[str, str]:
    """A checkpoint as a checkpoint event holds it (the flattened JWS)."""
    message = statement_input(signer.alg, typ, signer.kid, payload)
    return flattened(f"{message.decode()}.{b64url_encode(signer.sign(message))}")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------- the statement


def test_a_checkpoint_verifies_and_says_what_it_anchors() -> None:
    checkpoint = verify_checkpoint(sign(checkpoint_payload(ISSUER, NOW, HEAD)), KEYS.keys, issuer=ISSUER)
    assert (checkpoint.issuer, checkpoint.iat, checkpoint.head) == (ISSUER, NOW, HEAD)
    assert checkpoint.signer == "capbroker-v1"


def test_the_payload_is_canonical_iss_iat_head() -> None:
    assert checkpoint_payload(ISSUER, NOW, HEAD) == (
        b'{"iss":"https://broker.example","iat":1800000000,"head":"' + HEAD.encode() + b'"}'
    )
    with pytest.raises(ValueError, match="SHA-256"):
        checkpoint_payload(ISSUER, NOW, "not-a-hash")


def test_a_checkpoint_signed_by_another_key_with_our_kid_is_a_bad_signature() -> None:
    impostor = LocalSigner.generate("EdDSA", "capbroker-v1")
    with pytest.raises(CheckpointError) as caught:
        verify_checkpoint(sign(checkpoint_payload(ISSUER, NOW, HEAD), impostor), KEYS.keys, issuer=ISSUER)
    assert caught.value.code == "bad_signature"


def test_a_checkpoint_signed_by_an_unpublished_key_is_refused() -> None:
    other = LocalSigner.generate("EdDSA", "attacker-v1")
    with pytest.raises(CheckpointError) as caught:
        verify_checkpoint(sign(checkpoint_payload(ISSUER, NOW, HEAD), other), KEYS.keys, issuer=ISSUER)
    assert caught.value.code == "unknown_key"


def test_a_checkpoint_with_an_edited_payload_is_a_bad_signature() -> None:
    stored = sign(checkpoint_payload(ISSUER, NOW, HEAD))
    stored["payload"] = b64url_encode(checkpoint_payload(ISSUER, NOW, "cd" * 32))
    with pytest.raises(CheckpointError) as caught:
        verify_checkpoint(stored, KEYS.keys, issuer=ISSUER)
    assert caught.value.code == "bad_signature"


@pytest.mark.parametrize(
    "stored",
    [
        "a.b.c",  # the compact form is not what an event holds
        {"protected": "a", "payload": "b"},
        {"protected": "a.b", "payload": "c", "signature": "d"},
        {"protected": 1, "payload": "b", "signature": "c"},
    ],
)
def test_a_checkpoint_that_is_not_a_flattened_jws_is_malformed(stored: object) -> None:
    with pytest.raises(CheckpointError) as caught:
        verify_checkpoint(stored, KEYS.keys, issuer=ISSUER)
    assert caught.value.code == "malformed"


def test_a_session_key_never_signs_a_checkpoint() -> None:
    session = LocalSigner.generate("EdDSA", "s-0123456789abcdef")
    keys = KeySet([LONG_TERM.public, session.public])
    with pytest.raises(CheckpointError, match="session key") as caught:
        verify_checkpoint(sign(checkpoint_payload(ISSUER, NOW, HEAD), session), keys, issuer=ISSUER)
    assert caught.value.code == "unknown_key"


def test_an_endorsement_is_not_a_checkpoint_and_another_issuers_checkpoint_is_not_ours() -> None:
    with pytest.raises(CheckpointError) as caught:
        verify_checkpoint(sign(checkpoint_payload(ISSUER, NOW, HEAD), typ=ENDORSEMENT_TYP), KEYS.keys, issuer=ISSUER)
    assert caught.value.code == "malformed"
    with pytest.raises(CheckpointError) as caught:
        verify_checkpoint(sign(checkpoint_payload("https://other", NOW, HEAD)), KEYS.keys, issuer=ISSUER)
    assert caught.value.code == "not_ours"


@pytest.mark.parametrize(
    "payload",
    [
        {"iss": ISSUER, "iat": NOW},
        {"iat": NOW, "iss": ISSUER, "head": HEAD},
        {"iss": ISSUER, "iat": True, "head": HEAD},
        {"iss": ISSUER, "iat": NOW, "head": HEAD.upper()},
        {"iss": ISSUER, "iat": NOW, "head": HEAD, "events": 3},
    ],
)
def test_a_malformed_payload_is_refused(payload: dict[str, Any]) -> None:
    compact = sign(json.dumps(payload, separators=(",", ":")).encode())
    with pytest.raises(CheckpointError) as caught:
        verify_checkpoint(compact, KEYS.keys, issuer=ISSUER)
    assert caught.value.code == "malformed"


# ---------------------------------------------------------------------- the schedule


def test_a_checkpoint_is_due_after_n_events_of_this_process() -> None:
    schedule = CheckpointSchedule(every_events=3, interval=60)
    assert schedule.wait(0.0) is None  # nothing to anchor, nothing due
    schedule.appended("1-0", "a" * 64, 0.0)
    schedule.appended("2-0", "b" * 64, 0.0)
    assert not schedule.due(0.0)
    assert schedule.wait(0.0) == 60
    schedule.appended("3-0", "c" * 64, 0.0)
    assert schedule.due(0.0)


def test_a_checkpoint_is_due_an_interval_after_the_oldest_unanchored_event() -> None:
    schedule = CheckpointSchedule(every_events=1000, interval=60)
    schedule.appended("1-0", "a" * 64, 10.0)
    schedule.appended("2-0", "b" * 64, 50.0)
    assert schedule.wait(50.0) == 20
    assert not schedule.due(69.9)
    assert schedule.due(70.0)


def test_the_newest_own_event_by_stream_position_is_anchored() -> None:
    schedule = CheckpointSchedule(every_events=1, interval=60)
    schedule.appended("1700000000002-0", "b" * 64, 0.0)
    schedule.appended("1700000000001-5", "a" * 64, 0.0)  # told late: an earlier event of the same round
    taken = schedule.take()
    assert taken is not None
    assert taken.head == "b" * 64
    assert schedule.take() is None  # nothing new since


def test_a_failed_checkpoint_puts_its_events_back_and_waits_before_the_next_try() -> None:
    schedule = CheckpointSchedule(every_events=2, interval=60, retry=5)
    schedule.appended("1-0", "a" * 64, 0.0)
    schedule.appended("2-0", "b" * 64, 0.0)
    taken = schedule.take()
    assert taken is not None
    schedule.appended("3-0", "c" * 64, 1.0)
    schedule.failed(taken, 1.0)
    assert schedule.pending == 3
    assert not schedule.due(5.9)  # due by count, held off by the retry
    assert schedule.due(6.0)
    again = schedule.take()
    assert again is not None
    assert again.head == "c" * 64


# ---------------------------------------------------------------------- the walk


class Chain:
    """A chain written as the broker writes it: events, and checkpoints anchoring them."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []

    @property
    def head(self) -> str:
        return str(self.events[-1].event["hash"]) if self.events else GENESIS

    def add(self, body: dict[str, Any], t: float = NOW) -> StoredEvent:
        stored = StoredEvent(f"{len(self.events) + 1}-0", seal({"ts": iso(t), **body}, self.head))
        self.events.append(stored)
        return stored

    def event(self, n: int, t: float = NOW) -> StoredEvent:
        return self.add({"type": "mint", "agent": "reviewer", "task": f"t{n}"}, t)

    def checkpoint(self, anchor: StoredEvent, t: float = NOW, signer: LocalSigner = LONG_TERM) -> StoredEvent:
        statement = sign(checkpoint_payload(ISSUER, int(t), str(anchor.event["hash"])), signer)
        return self.add({"type": "checkpoint", "checkpoint": statement}, t)

    def verify(self, *, now: float = NOW, head: str | None = None, window: int = 100) -> Any:
        walk = ChainWalk(checkpoints=KEYS, head=self.head if head is None else head, window=window)
        for stored in self.events:
            if walk.feed(stored) is not None:
                break
        return walk.finish(now=now, interval=60)


def anchored_chain() -> Chain:
    chain = Chain()
    for n in range(3):
        chain.event(n)
    chain.checkpoint(chain.events[-1])
    last = chain.event(3)
    chain.checkpoint(last)
    return chain


def test_a_chain_with_checkpoints_verifies_and_counts_what_they_anchor() -> None:
    report = anchored_chain().verify()
    assert report.ok
    assert (report.count, report.checkpoints, report.anchored) == (6, 2, 5)
    assert verify_chain(anchored_chain().events).ok  # the hash links alone, as before


def test_a_checkpoint_may_anchor_an_event_a_few_places_back() -> None:
    chain = Chain()
    mine = chain.event(0)
    chain.event(1)  # another process's, appended while mine was being signed
    chain.checkpoint(mine)
    report = chain.verify()
    assert report.ok
    assert report.anchored == 1


def test_a_checkpoint_anchoring_beyond_the_window_is_refused() -> None:
    chain = Chain()
    mine = chain.event(0)
    for n in range(1, 4):
        chain.event(n)
    cp = chain.checkpoint(mine)
    report = chain.verify(window=3)
    assert report.broken is not None
    assert (report.broken.index, report.broken.id) == (4, cp.id)
    assert "not among the 3 before it" in report.broken.reason


def test_the_stored_head_must_name_an_event_of_the_chain() -> None:
    chain = anchored_chain()
    cut = chain.head
    chain.events.pop()
    report = chain.verify(head=cut)
    assert report.broken is not None
    assert (report.broken.index, report.broken.id) == (5, "head")
    assert "cut" in report.broken.reason


def test_events_appended_after_the_head_was_read_are_no_break() -> None:
    chain = anchored_chain()
    head = chain.head
    chain.event(9)
    assert chain.verify(head=head).broken is None


def test_the_tail_left_without_a_checkpoint_beyond_the_interval_is_unanchored() -> None:
    chain = anchored_chain()
    first = chain.event(10, t=NOW + 5)
    chain.event(11, t=NOW + 6)
    assert chain.verify(now=NOW + 5 + 60 + CHECKPOINT_GRACE).ok  # still within the interval and grace
    report = chain.verify(now=NOW + 5 + 60 + CHECKPOINT_GRACE + 1)
    assert report.broken is None
    assert report.unanchored is not None
    assert (report.unanchored.index, report.unanchored.id) == (6, first.id)


def test_an_idle_broker_owes_no_checkpoint() -> None:
    chain = anchored_chain()
    assert chain.verify(now=NOW + 86400).ok  # every event anchored: a day of silence is fine


def test_the_unanchored_clock_starts_at_the_last_signed_checkpoint_not_a_forged_ts() -> None:
    chain = anchored_chain()
    chain.event(10, t=NOW + 86400)  # the attacker dates the unanchored event to "now"
    report = chain.verify(now=NOW + 86400 + 1)
    assert report.unanchored is None  # an event's own time is trusted when later: see SECURITY.md
    chain2 = anchored_chain()
    chain2.event(10, t=NOW + 1)
    assert chain2.verify(now=NOW + 86400).unanchored is not None


def test_an_unanchored_event_that_left_the_window_is_still_reported() -> None:
    chain = Chain()
    first = chain.event(0)
    for n in range(1, 6):
        chain.event(n)
    report = chain.verify(now=NOW + 3600, window=2)
    assert report.unanchored is not None
    assert report.unanchored.id == first.id


def test_verify_audit_is_the_walk_over_an_iterable() -> None:
    chain = anchored_chain()
    report = verify_audit(iter(chain.events), checkpoints=KEYS, head=chain.head, now=NOW, interval=60)
    assert report.ok
    assert report.checkpoints == 2


# ---------------------------------------------------------------------- the writer (shell)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class VaultDown:
    async def sign_statement(self, typ: str, payload: bytes) -> str:
        raise BackendUnavailable("vault: ConnectionError")


METRICS = Metrics()


def writer(signer: Any, *, every: int = 3) -> tuple[MemoryState, AuditRecorder, Checkpointer, Clock]:
    state, clock = MemoryState(), Clock()
    recorder = AuditRecorder(state, out=io.StringIO())
    checkpointer = Checkpointer(
        recorder, signer, issuer=ISSUER, every_events=every, interval=60, clock=lambda: NOW, monotonic=clock,
        metrics=METRICS,
    )  # fmt: skip
    return state, recorder, checkpointer, clock


async def events_of(state: MemoryState) -> list[StoredEvent]:
    return [e async for e in state.audit_events()]


def test_the_writer_anchors_its_newest_event_with_the_long_term_key() -> None:
    backend = LocalSigningBackend.generate()

    async def body() -> tuple[list[StoredEvent], StoredEvent | None, KeySet]:
        state, recorder, checkpointer, _ = writer(backend)
        for n in range(3):
            await recorder.record("mint", request_id=f"r{n}", agent="reviewer")
        stored = await checkpointer.checkpoint()
        return await events_of(state), stored, await backend.keyset()

    events, stored, keys = asyncio.run(body())
    assert stored is not None
    assert stored.event["type"] == "checkpoint"
    assert stored.event["prev"] == events[2].event["hash"]
    anchored = verify_checkpoint(stored.event["checkpoint"], keys, issuer=ISSUER)
    assert anchored.head == events[2].event["hash"]
    report = verify_audit(events, checkpoints=CheckpointKeys(keys, ISSUER), head=None, now=NOW, interval=60)
    assert report.ok
    assert report.anchored == 3


def test_the_writer_runs_on_its_own_and_writes_when_n_events_wait() -> None:
    async def body() -> list[StoredEvent]:
        state, recorder, checkpointer, _ = writer(LocalSigningBackend.generate(), every=2)
        task = asyncio.create_task(checkpointer.run())
        for n in range(2):
            await recorder.record("mint", request_id=f"r{n}", agent="reviewer")
        for _ in range(100):
            await asyncio.sleep(0)
            if checkpointer.written:
                break
        task.cancel()
        return await events_of(state)

    events = asyncio.run(body())
    assert [e.event["type"] for e in events] == ["mint", "mint", "checkpoint"]


def test_minting_goes_on_while_vault_cannot_sign_a_checkpoint() -> None:
    async def body() -> tuple[list[StoredEvent], Checkpointer, Clock]:
        state, recorder, checkpointer, clock = writer(VaultDown(), every=1)
        await recorder.record("mint", request_id="r0", agent="reviewer")
        assert await checkpointer.checkpoint() is None
        await recorder.record("mint", request_id="r1", agent="reviewer")  # the audit still takes events
        return await events_of(state), checkpointer, clock

    failed_before = METRICS.value("capbroker_audit_checkpoints_total", result="failed")
    events, checkpointer, _ = asyncio.run(body())
    assert [e.event["type"] for e in events] == ["mint", "mint"]
    assert checkpointer.failed == 1
    assert METRICS.value("capbroker_audit_checkpoints_total", result="failed") == failed_before + 1


def test_a_checkpoint_event_is_stored_unredacted() -> None:
    backend = LocalSigningBackend.generate()

    async def body() -> StoredEvent | None:
        _, recorder, checkpointer, _ = writer(backend)
        await recorder.record("mint", request_id="r0", agent="reviewer")
        return await checkpointer.checkpoint()

    stored = asyncio.run(body())
    assert stored is not None
    statement = stored.event["checkpoint"]
    assert set(statement) == {"protected", "payload", "signature"}  # flattened: no token shape in the logs
    assert json.loads(b64url_decode(statement["protected"]))["typ"] == CHECKPOINT_TYP
