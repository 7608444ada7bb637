"""``AuditRecorder``'s echo and ``redact``: pure parts, no store needed beyond memory."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from broker.backends.memory_state import MemoryState
from broker.service.audit_recorder import AuditRecorder, redact

JWS = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln"
SECRET = "cbk_" + "A" * 43


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        (f"token {JWS} here", "token [redacted] here"),
        (f"key{SECRET}", "key[redacted]"),
        ("vault hvs.CAESIJlaaaaaaaaaaaaaaaaaaaaaaaa and s.bbbbbbbbbbbbbbbbbbbbbbbb", "vault [redacted] and [redacted]"),
        ("plain words, no secret", "plain words, no secret"),
        ("a.b and cbk_short", "a.b and cbk_short"),
    ],
)
def test_redact_replaces_every_secret_shape_and_nothing_else(raw: str, kept: str) -> None:
    assert redact(raw) == kept
    assert redact({"r": [raw, 1, None]}) == {"r": [kept, 1, None]}


class CountingOut(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_lines_written_in_one_turn_of_the_loop_share_one_flush() -> None:
    out = CountingOut()
    recorder = AuditRecorder(MemoryState(), out=out)

    async def body() -> None:
        await asyncio.gather(*(recorder.record("mint", request_id=f"r{i}", agent="a") for i in range(5)))
        await asyncio.sleep(0)
        assert out.flushes <= 2
        assert len(out.getvalue().splitlines()) == 5

    asyncio.run(body())
    assert out.flushes >= 1


def test_without_a_loop_a_line_is_flushed_at_once() -> None:
    out = CountingOut()
    AuditRecorder(MemoryState(), out=out)._write({"a": 1})
    assert out.flushes == 1
    assert out.getvalue() == '{"a":1}\n'


def test_the_echo_is_ascii_with_anything_else_escaped() -> None:
    out = CountingOut()
    recorder = AuditRecorder(MemoryState(), out=out)
    asyncio.run(recorder.record("deny", request_id="r1", reason="unknown scope 'réport\u2028s'"))
    line = out.getvalue().strip()
    assert line.isascii()
    assert json.loads(line)["reason"] == "unknown scope 'réport\u2028s'"


def test_echo_lines_are_the_stored_event_with_its_id_first() -> None:
    out = CountingOut()
    state = MemoryState()
    recorder = AuditRecorder(state, out=out)
    stored = asyncio.run(recorder.record("mint", request_id="r1", agent="a", jti=["j1"]))
    assert stored is not None
    line = json.loads(out.getvalue())
    assert next(iter(line)) == "audit_id"
    assert line == {"audit_id": stored.id, **stored.event}
