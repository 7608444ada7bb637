"""``DecisionCache``: remembered per policy digest, never across a policy change."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from broker.policy import Allow, Deny, load_policy, parse_mint_request
from broker.service.decisions import DecisionCache

POLICY = """
scopes:
  s:
    kind: git
    resource: github.com/a/b
    actions: [read]
    audience: gw
    max_ttl: 5m
agents:
  a:
    identity: {key: {sha256: %s}}
    scopes: [%s]
"""
REQUEST = parse_mint_request({"task": "t", "scopes": ["s"]})


def policy_dir(tmp_path: Path, name: str, granted: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "p.yaml").write_text(POLICY % ("a" * 64, granted))
    return d


def test_the_same_question_is_answered_from_memory(tmp_path: Path) -> None:
    policy = load_policy(policy_dir(tmp_path, "p", "s"))
    cache = DecisionCache()
    first = cache.decide(policy.agents["a"], REQUEST, policy)
    assert isinstance(first, Allow)
    assert cache.decide(policy.agents["a"], replace(REQUEST, task="other"), policy) is first


def test_a_new_policy_is_asked_afresh(tmp_path: Path) -> None:
    granted = load_policy(policy_dir(tmp_path, "p", "s"))
    cache = DecisionCache()
    assert isinstance(cache.decide(granted.agents["a"], REQUEST, granted), Allow)
    d = tmp_path / "q"
    d.mkdir()
    (d / "p.yaml").write_text((POLICY % ("a" * 64, "s")).replace("actions: [read]", "actions: [write]"))
    changed = load_policy(d)
    assert changed.digest != granted.digest
    assert isinstance(cache.decide(changed.agents["a"], REQUEST, changed), Allow)
    narrowed = parse_mint_request({"task": "t", "scopes": [{"scope": "s", "actions": ["read"]}]})
    assert isinstance(cache.decide(changed.agents["a"], narrowed, changed), Deny)
    assert isinstance(cache.decide(granted.agents["a"], narrowed, granted), Allow)


def test_an_agent_not_of_this_policy_is_never_answered_from_memory(tmp_path: Path) -> None:
    policy = load_policy(policy_dir(tmp_path, "p", "s"))
    cache = DecisionCache()
    cache.decide(policy.agents["a"], REQUEST, policy)
    stranger = replace(policy.agents["a"], scopes=())
    decision = cache.decide(stranger, REQUEST, policy)
    assert isinstance(decision, Deny)
    assert decision.code == "forbidden"


def test_memory_is_bounded(tmp_path: Path) -> None:
    policy = load_policy(policy_dir(tmp_path, "p", "s"))
    cache = DecisionCache(size=3)
    for ttl in range(1, 10):
        cache.decide(policy.agents["a"], replace(REQUEST, ttl=ttl), policy)
    assert len(cache._known) <= 3
