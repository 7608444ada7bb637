"""The pure cores behind Vault failure logging and the broker's token renewal (issue 13, items 1 and 3)."""

from __future__ import annotations

import pytest

from broker.backends.token_lease import TokenLease, lease_from_lookup, lease_from_renewal
from broker.repeat_log import RepeatLog


def test_a_repeated_failure_is_logged_with_backoff_not_once_a_second() -> None:
    log = RepeatLog(ceiling=60.0)
    lines = [line for t in range(600) if (line := log.failure("vault: unreachable", float(t))) is not None]
    # one a second for ten minutes would be 600 lines; backoff 1, 2, 4 ... 60 gives about 15
    assert lines[0] == "vault: unreachable"
    assert len(lines) <= 16
    assert "again" in lines[1]


def test_a_new_cause_is_logged_at_once_and_recovery_once() -> None:
    log = RepeatLog()
    assert log.failure("vault: 403", 0.0) == "vault: 403"
    assert log.failure("vault: 403", 0.1) is None
    assert log.failure("vault: TLS failure", 0.2) == "vault: TLS failure"
    assert log.success() is True
    assert log.success() is False


def test_a_periodic_token_is_renewed_half_way() -> None:
    lease = lease_from_lookup({"data": {"ttl": 20, "renewable": True}}, now=100.0)
    assert not lease.renew_due(109.9)
    assert lease.renew_due(110.0)
    assert lease.expires_at == 120.0


def test_a_token_without_ttl_or_renewal_is_never_renewed() -> None:
    assert not TokenLease(ttl=0.0, renewable=True, seen_at=0.0).renew_due(1e9)
    assert TokenLease(ttl=0.0, renewable=True, seen_at=0.0).expires_at is None
    assert not lease_from_renewal({"auth": {"lease_duration": 10, "renewable": False}}, now=0.0).renew_due(9.0)


@pytest.mark.parametrize(
    "answer", [{}, {"data": {"ttl": "20", "renewable": True}}, {"data": {"ttl": -1, "renewable": True}}, None]
)
def test_a_malformed_answer_is_refused(answer: object) -> None:
    with pytest.raises(ValueError, match="malformed"):
        lease_from_lookup(answer, now=0.0)
