"""What the policy files mean in Vault (``broker/policy/vault.py``, SPEC 6), the ``uses:``
grammar, and the decision's rule that a downstream credential is its whole scope."""

from __future__ import annotations

import re
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from broker.policy import Allow, Deny, Policy, decide, load_policy, parse_mint_request
from broker.policy.model import DEFAULT_KV_USES
from broker.policy.vault import (
    TASK_POLICY,
    agent_scope_policies,
    scope_policies,
    scope_policy_hcl,
    scope_policy_name,
    task_role,
)

SCOPES = Path(__file__).resolve().parents[2] / "scopes"
PATH_BLOCK = re.compile(r'path "([^"]+)" \{\n  capabilities = \[([^\]]*)\]\n\}')


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(SCOPES)


def paths(hcl: str) -> dict[str, list[str]]:
    """``{path: capabilities}`` of an HCL policy of path blocks (and comments) only."""
    body = "\n".join(line for line in hcl.splitlines() if not line.startswith("#"))
    found = {m[1]: [c.strip().strip('"') for c in m[2].split(",")] for m in PATH_BLOCK.finditer(body)}
    assert PATH_BLOCK.sub("", body).strip() == "", hcl  # nothing but path blocks
    return found


def test_a_vault_kv_secret_scope_reads_exactly_its_path(policy: Policy) -> None:
    assert paths(scope_policy_hcl(policy.scopes["weather-api-key"])) == {"secret/data/data-agent/weather-api": ["read"]}


def test_a_vault_kv_subtree_scope_reads_below_it_and_lists_its_metadata(policy: Policy) -> None:
    assert paths(scope_policy_hcl(policy.scopes["deploy-config-read"])) == {
        "secret/data/deploy/staging/*": ["read"],
        "secret/metadata/deploy/staging/": ["list"],
        "secret/metadata/deploy/staging/*": ["list"],
    }


def test_a_read_only_subtree_scope_lists_nothing(policy: Policy) -> None:
    scope = replace(policy.scopes["deploy-config-read"], actions=("read",))
    assert paths(scope_policy_hcl(scope)) == {"secret/data/deploy/staging/*": ["read"]}


def test_a_database_scope_reads_its_role_creds_only(policy: Policy) -> None:
    assert paths(scope_policy_hcl(policy.scopes["warehouse-readonly"])) == {
        "database/creds/analytics-readonly": ["read"]
    }


def test_only_downstream_scopes_have_a_vault_policy(policy: Policy) -> None:
    assert set(scope_policies(policy)) == {
        "capbroker-scope-weather-api-key",
        "capbroker-scope-warehouse-readonly",
        "capbroker-scope-deploy-config-read",
    }
    with pytest.raises(ValueError, match="has no Vault policy"):
        scope_policy_hcl(policy.scopes["widgets-read"])


def test_a_task_token_carries_the_agents_downstream_scopes(policy: Policy) -> None:
    assert agent_scope_policies(policy, "analyst") == (
        "capbroker-scope-warehouse-readonly",
        "capbroker-scope-weather-api-key",
    )
    assert agent_scope_policies(policy, "reviewer") == ()


def test_the_role_is_orphan_and_attaches_only_capbroker_policies() -> None:
    role = task_role(3600)
    assert role["orphan"] is True
    assert role["allowed_policies"] == [TASK_POLICY]
    assert role["allowed_policies_glob"] == ["capbroker-scope-*"]
    assert role["token_explicit_max_ttl"] == 3600
    assert role["token_no_default_policy"] is True


# ---------------------------------------------------------------------- uses:


def kv_policy(tmp_path: Path, extra: str) -> Policy:
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent(
            f"""\
            scopes:
              one-secret:
                kind: vault-kv
                resource: secret/data/app/key
                actions: [read]
                audience: vault
                max_ttl: 5m
            {extra}
            """
        )
    )
    return load_policy(tmp_path)


def test_uses_defaults_and_is_read(tmp_path: Path) -> None:
    assert kv_policy(tmp_path, "").scopes["one-secret"].uses is None  # the issuer uses DEFAULT_KV_USES
    assert DEFAULT_KV_USES == 10
    assert kv_policy(tmp_path, "    uses: 3").scopes["one-secret"].uses == 3


# ---------------------------------------------------------------------- narrowing


def run(policy: Policy, agent: str, scopes: list[Any]) -> Allow | Deny:
    return decide(policy.agents[agent], parse_mint_request({"task": "t1", "scopes": scopes}), policy)


@pytest.mark.parametrize(
    "entry",
    [
        {"scope": "deploy-config-read", "resource": "secret/data/deploy/staging/app"},  # deeper
        {"scope": "deploy-config-read", "actions": ["read"]},  # fewer actions
    ],
)
def test_a_narrowed_downstream_scope_is_refused(policy: Policy, entry: dict[str, Any]) -> None:
    decision = run(policy, "deployer", [entry])
    assert isinstance(decision, Deny)
    assert decision.code == "invalid_request"
    assert "narrowing it is refused" in decision.reason


def test_the_whole_downstream_scope_is_allowed_and_names_its_vault_policy(policy: Policy) -> None:
    for entry in ("deploy-config-read", {"scope": "deploy-config-read", "actions": ["read", "list"]}):
        decision = run(policy, "deployer", [entry])
        assert isinstance(decision, Allow)
        assert f"a Vault credential with policy {scope_policy_name('deploy-config-read')!r}" in " ".join(
            decision.reasons
        )


def test_other_kinds_still_narrow(policy: Policy) -> None:
    decision = run(policy, "analyst", [{"scope": "reports-write", "resource": "s3://acme-reports/agents/t1/"}])
    assert isinstance(decision, Allow)


def test_explain_names_the_uses_of_a_vault_kv_grant(policy: Policy) -> None:
    decision = run(policy, "analyst", ["weather-api-key"])
    assert isinstance(decision, Allow)
    assert "policy 'capbroker-scope-weather-api-key', 10 uses" in " ".join(decision.reasons)


def test_lint_warns_about_a_vault_kv_scope_with_many_uses(tmp_path: Path) -> None:
    from broker.policy.lint import lint

    def warnings(uses: int) -> list[str]:
        return [w.message for w in lint(kv_policy(tmp_path, f"    uses: {uses}")) if "uses" in w.message]

    assert warnings(500) == [
        "scope 'one-secret' gives a Vault token 500 uses; a token that reads one secret needs a few (100 or less)"
    ]
    assert warnings(100) == []
