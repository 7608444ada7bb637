"""``RefusalLedger``: within the allowance each refusal is stored, beyond it counted, and
one summary per window keeps the count (fake clock)."""

from __future__ import annotations

from broker.audit.refusals import Allowance, RefusalLedger, Summary

FIVE_A_MINUTE = Allowance("agent:hammer", 5, 60)


def test_refusals_beyond_the_allowance_are_counted_and_summarised_when_the_window_closes() -> None:
    ledger = RefusalLedger()
    stored = [ledger.admit(FIVE_A_MINUTE, "rate_limited", 100.0 + i * 0.01) for i in range(3000)]
    assert [keep for keep, _ in stored].count(True) == 5
    assert all(not due for _, due in stored)
    assert ledger.due(159.0) == []
    (summary,) = ledger.due(160.0)
    assert summary == Summary("agent:hammer", 100.0, 160.0, 2995, {"rate_limited": 2995})
    assert ledger.due(1000.0) == []


def test_the_next_refusal_after_the_window_opens_a_new_one_and_brings_the_summary() -> None:
    ledger = RefusalLedger()
    for i in range(7):
        ledger.admit(FIVE_A_MINUTE, "forbidden" if i % 2 else "invalid_request", 0.0)
    keep, due = ledger.admit(FIVE_A_MINUTE, "invalid_request", 61.0)
    assert keep
    assert due == [Summary("agent:hammer", 0.0, 60.0, 2, {"forbidden": 1, "invalid_request": 1})]


def test_callers_have_their_own_windows() -> None:
    ledger = RefusalLedger()
    other = Allowance("service:git-gateway", 1, 60)
    assert ledger.admit(other, "invalid_request", 0.0)[0]
    assert not ledger.admit(other, "invalid_request", 0.0)[0]
    assert ledger.admit(FIVE_A_MINUTE, "invalid_request", 0.0)[0]


def test_a_summary_that_could_not_be_stored_is_counted_again() -> None:
    ledger = RefusalLedger()
    for _ in range(8):
        ledger.admit(FIVE_A_MINUTE, "forbidden", 0.0)
    lost = ledger.due(60.0)
    ledger.restore(lost)
    (again,) = ledger.due(60.0)
    assert again.count == 3
