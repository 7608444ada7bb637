"""``broker dev`` adds the keys it prints beside the policy's own (issue 13, item 9): a
user's own policy keys keep working under dev, and the printed ones work too."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.cli.serve_cmd import _dev_overlay
from broker.policy.loader import load_policy
from broker.policy.model import KeyIdentity
from broker.policy.rekey import with_added_client_key

SCOPES = Path(__file__).resolve().parents[2] / "scopes"


def test_the_policys_own_key_and_the_dev_key_both_authenticate() -> None:
    policy = load_policy(SCOPES)
    reviewer = policy.agents["reviewer"]
    assert isinstance(reviewer.identity, KeyIdentity)
    own = reviewer.identity.sha256
    dev = "ab" * 32
    overlaid = _dev_overlay(policy, {"reviewer": dev})
    assert overlaid.principal_for_key(own) is overlaid.agents["reviewer"]
    assert overlaid.principal_for_key(dev) is overlaid.agents["reviewer"]
    assert overlaid.agents["reviewer"].identity == reviewer.identity  # unchanged


def test_a_key_that_is_another_principals_is_refused() -> None:
    policy = load_policy(SCOPES)
    analyst = policy.agents["analyst"]
    assert isinstance(analyst.identity, KeyIdentity)
    with pytest.raises(ValueError, match="already 'analyst'"):
        with_added_client_key(policy, "reviewer", analyst.identity.sha256)
