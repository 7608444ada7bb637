"""Services have a ``rate:`` like agents (SPEC 2); a default applies when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import PolicyInvalid
from broker.policy.loader import load_policy
from broker.policy.model import DEFAULT_SERVICE_RATE, Policy, Rate

POLICY = """
scopes:
  widgets-read:
    kind: git
    resource: github.com/acme/widgets
    actions: [read]
    audience: git-gateway
    max_ttl: 15m
services:
  git-gateway:
    identity: {{key: {{sha256: {sha}}}}}
    audiences: [git-gateway]
{rate}
"""


def load(tmp_path: Path, rate: str) -> Policy:
    (tmp_path / "p.yaml").write_text(POLICY.format(sha="a" * 64, rate=rate))
    return load_policy(tmp_path)


def test_a_service_rate_is_read_like_an_agents(tmp_path: Path) -> None:
    policy = load(tmp_path, "    rate: 10/min")
    assert policy.services["git-gateway"].rate == Rate(10, 60)


def test_a_service_without_a_rate_gets_the_default(tmp_path: Path) -> None:
    policy = load(tmp_path, "")
    assert policy.services["git-gateway"].rate == DEFAULT_SERVICE_RATE == Rate(60, 60)


def test_a_malformed_service_rate_is_refused_with_its_line(tmp_path: Path) -> None:
    with pytest.raises(PolicyInvalid) as e:
        load(tmp_path, "    rate: lots")
    assert any("service 'git-gateway' rate" in str(issue) for issue in e.value.issues)
