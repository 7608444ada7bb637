"""The audit hash chain: sealed events verify; any change names the first broken link."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.audit.chain import GENESIS, canonical, event_digest, seal, sealed_with_canonical, verify_chain
from broker.audit.stored import StoredEvent


def chain(n: int) -> list[StoredEvent]:
    events, prev = [], GENESIS
    for i in range(n):
        sealed = seal({"type": "mint", "agent": "reviewer", "task": f"t{i}", "jti": [f"j{i}"]}, prev)
        events.append(StoredEvent(f"{1000 + i}-0", sealed))
        prev = sealed["hash"]
    return events


def test_a_sealed_chain_verifies() -> None:
    events = chain(5)
    report = verify_chain(events)
    assert report.ok
    assert report.count == 5
    assert report.head == events[-1].event["hash"]
    assert events[0].event["prev"] == GENESIS


def test_the_digest_ignores_key_order_and_the_hash_field() -> None:
    assert event_digest({"a": 1, "b": [1, 2]}) == event_digest({"b": [1, 2], "a": 1, "hash": "x"})


@pytest.mark.parametrize("index", [0, 2, 4])
def test_changing_one_event_breaks_the_chain_at_that_event(index: int) -> None:
    events = chain(5)
    tampered = dict(events[index].event, agent="mallory")
    events[index] = dataclasses.replace(events[index], event=tampered)
    report = verify_chain(events)
    assert report.broken is not None
    assert report.broken.index == index
    assert report.broken.id == f"{1000 + index}-0"
    assert report.count == index


def test_a_resealed_forgery_breaks_the_link_to_the_next_event() -> None:
    events = chain(4)
    forged = seal({"type": "mint", "agent": "mallory", "task": "t1", "jti": ["j1"]}, events[0].event["hash"])
    events[1] = StoredEvent(events[1].id, forged)
    report = verify_chain(events)
    assert report.broken is not None
    assert report.broken.index == 2
    assert "does not follow" in report.broken.reason


@pytest.mark.parametrize("edit", ["delete", "swap", "insert"])
def test_removing_reordering_or_inserting_is_detected(edit: str) -> None:
    events = chain(4)
    if edit == "delete":
        del events[1]
    elif edit == "swap":
        events[1], events[2] = events[2], events[1]
    else:
        events.insert(2, StoredEvent("x-0", seal({"type": "admin"}, events[1].event["hash"])))
    report = verify_chain(events)
    assert report.broken is not None
    assert report.broken.index in (1, 2, 3)


def test_an_event_is_sealed_once() -> None:
    with pytest.raises(ValueError, match="sealed once"):
        seal(seal({"type": "mint"}, GENESIS), GENESIS)


def test_a_missing_hash_is_a_break() -> None:
    events = chain(2)
    events[1] = StoredEvent(events[1].id, {k: v for k, v in events[1].event.items() if k != "hash"})
    report = verify_chain(events)
    assert report.broken is not None
    assert report.broken.index == 1


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_KEYS = st.sampled_from(
    ["a", "h", "ha", "has", "hasg", "hasi", "hash_", "hashes", "hb", "i", "z", "", "héllo"]
) | st.text(max_size=8)


@given(
    event=st.dictionaries(_KEYS.filter(lambda k: k not in ("prev", "hash")), _JSON_VALUES, max_size=8),
    prev=st.sampled_from([GENESIS, "ab" * 32]),
)
def test_sealing_with_one_encoding_gives_the_same_event_and_bytes_as_the_definition(
    event: dict[str, Any], prev: str
) -> None:
    body = {**event, "prev": prev}
    expected = {**body, "hash": event_digest(body)}  # the definition: hash over all but hash
    sealed, encoded = sealed_with_canonical(event, prev)
    assert sealed == expected
    assert encoded == canonical(expected)
