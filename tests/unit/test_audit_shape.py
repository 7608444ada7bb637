"""What the recorder stores: ids exactly (issue 12 item 4), free text redacted and cut, and
every sealed event within ``MAX_EVENT_BYTES`` (issue 11, reproduction 2)."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit.chain import canonical
from broker.audit.redaction import REDACTED
from broker.audit.shape import CORE, MAX_EVENT_BYTES
from broker.backends.memory_state import MemoryState
from broker.service.audit_recorder import AuditRecorder

JWS = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln"
SECRET = "cbk_" + "A" * 43
SECRET_LIKE_JTI = "cbk_xxxxxxxxAAAA"
VAULT_LIKE_TASK = "b.AAAAAAAAAAAAAAAAAAAAAAAA"


def record(**fields: Any) -> dict[str, Any]:
    state = MemoryState()
    stored = asyncio.run(AuditRecorder(state, out=io.StringIO()).record("mint", request_id="r1", **fields))
    assert stored is not None
    return dict(stored.event)


def test_ids_are_stored_exactly_even_when_they_look_like_secrets() -> None:
    event = record(
        agent="reviewer",
        task=VAULT_LIKE_TASK,
        jti=[SECRET_LIKE_JTI, "s.AAAAAAAAAAAAAAAAAAAAAAAA"],
        parent_jti=SECRET_LIKE_JTI,
        scopes=["widgets-read"],
        audiences=["git-gateway"],
        reasons=[f"quoted {JWS}"],
        reason=f"key {SECRET}",
    )
    assert event["task"] == VAULT_LIKE_TASK
    assert event["jti"] == [SECRET_LIKE_JTI, "s.AAAAAAAAAAAAAAAAAAAAAAAA"]
    assert event["parent_jti"] == SECRET_LIKE_JTI
    # free text still never carries a secret
    assert event["reasons"] == [f"quoted {REDACTED}"]
    assert event["reason"] == f"key {REDACTED}"


def test_a_field_the_recorder_does_not_know_is_treated_as_free_text() -> None:
    assert record(agent="a", note=f"token {JWS}")["note"] == f"token {REDACTED}"


def sealed_size(event: dict[str, Any]) -> int:
    return len(canonical(event))


def test_a_huge_event_is_cut_to_the_cap_and_keeps_its_ids() -> None:
    event = record(
        agent="reviewer",
        task="t-1",
        jti=["j" * 22],
        reason="x " * 50_000,
        reasons=["y" * 600] * 500,
        descendants=[f"jti-{i:018d}" for i in range(2000)],
        other="\u2028" * 5000,
    )
    assert sealed_size(event) <= MAX_EVENT_BYTES
    assert (event["agent"], event["task"], event["jti"], event["request_id"]) == ("reviewer", "t-1", ["j" * 22], "r1")
    assert event["truncated"]["descendants"] > 0
    assert event["reason"].endswith("…[cut]")


fields = st.dictionaries(
    st.sampled_from(["agent", "task", "reason", "reasons", "descendants", "detail", "x", "scopes", "codes"]),
    st.one_of(
        st.text(max_size=3000),
        st.lists(st.text(max_size=300), max_size=200),
        st.dictionaries(st.text(max_size=50), st.integers(), max_size=50),
    ),
)


@settings(max_examples=60, deadline=None)
@given(fields)
def test_every_stored_event_is_within_the_cap(given_fields: dict[str, Any]) -> None:
    given_fields.setdefault("agent", "reviewer")
    given_fields.setdefault("task", "t-1")
    event = record(**given_fields)
    assert sealed_size(event) <= MAX_EVENT_BYTES
    for key in CORE:
        if key in given_fields and isinstance(given_fields[key], str) and len(given_fields[key]) < 200:
            assert event[key] == given_fields[key]
