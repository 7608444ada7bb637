"""``redis_prefix``: derived from the issuer, checked, and never silently defaulted for a
reader (a reader on the wrong prefix sees no revocation at all)."""

from __future__ import annotations

import pytest

from broker.backends.redis_legacy import legacy_refusal
from broker.verify import RedisRevocation, redis_keys


def test_the_default_prefix_is_the_issuer_or_its_hash_never_a_brace() -> None:
    assert redis_keys.default_prefix("https://broker.internal") == "capbroker:https://broker.internal:"
    hashed = redis_keys.default_prefix("https://broker.internal/{tag}")
    assert hashed.startswith("capbroker:")
    assert "{" not in hashed
    assert hashed != redis_keys.default_prefix("https://broker.internal/{other}")


def test_a_reader_must_name_the_issuer_or_the_prefix() -> None:
    with pytest.raises(ValueError, match="would miss every revocation"):
        redis_keys.deployment_prefix(None, None)
    with pytest.raises(ValueError, match="not both"):
        redis_keys.deployment_prefix("https://b", "capbroker:")
    assert redis_keys.deployment_prefix("https://b", None) == "capbroker:https://b:"
    assert redis_keys.deployment_prefix(None, "capbroker:x:") == "capbroker:x:"
    with pytest.raises(ValueError, match="braces"):
        redis_keys.deployment_prefix(None, "capbroker:{x}:")
    with pytest.raises(ValueError, match="would miss every revocation"):
        RedisRevocation("redis://127.0.0.1:9/0")


def test_channels_carry_the_database_number_except_db_0() -> None:
    assert redis_keys.revocation_channel("p:") == "p:revocations"  # what older verifiers hear
    assert redis_keys.revocation_channel("p:", 3) == "p:db3:revocations"
    assert redis_keys.policy_channel("p:", 3) == "p:db3:policy-reloads"
    assert redis_keys.revocation_channel("p:", 3) != redis_keys.revocation_channel("p:", 4)


def test_an_upgrade_onto_legacy_keys_is_refused_only_with_a_derived_prefix() -> None:
    assert legacy_refusal("", "capbroker:https://b:", legacy_present=True) is not None
    assert legacy_refusal("", "capbroker:https://b:", legacy_present=False) is None
    assert legacy_refusal("capbroker:new:", "capbroker:new:", legacy_present=True) is None  # chosen: a new one
    assert legacy_refusal("capbroker:", "capbroker:", legacy_present=True) is None

