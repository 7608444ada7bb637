"""The federation examples (examples/federation/) compile with the real policy loader, and
real-shaped GitHub Actions and Kubernetes tokens match exactly the agents they are for."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.identity.jwt_identity import IdentityKeys, IdentityRejected, select_jwt_principal, verify_identity_jwt
from broker.policy.lint import lint
from broker.policy.loader import load_policy
from broker.policy.model import JwtIdentity, Policy
from tests.helpers import NOW
from tests.servers.oidc_issuer import JwtIssuer

HERE = Path(__file__).resolve().parents[2] / "examples" / "federation"
POLICY = HERE / "policy"
GITHUB = "https://token.actions.githubusercontent.com"
K8S = "https://kubernetes.default.svc.cluster.local"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(POLICY)


def github_claims(**over: Any) -> dict[str, Any]:
    """The claims GitHub puts in a push-to-main token of acme/widgets (ids are strings)."""
    claims: dict[str, Any] = {
        "ref": "refs/heads/main",
        "sha": "a3f5e1c0d9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4",
        "repository": "acme/widgets",
        "repository_owner": "acme",
        "repository_owner_id": "1234567",
        "repository_visibility": "private",
        "repository_id": "7654321",
        "run_id": "9876543210",
        "run_number": "42",
        "run_attempt": "1",
        "runner_environment": "github-hosted",
        "actor": "octocat",
        "actor_id": "583231",
        "workflow": "ci",
        "event_name": "push",
        "ref_type": "branch",
        "workflow_ref": "acme/widgets/.github/workflows/ci.yml@refs/heads/main",
        "job_workflow_ref": "acme/widgets/.github/workflows/ci.yml@refs/heads/main",
    }
    claims.update(over)
    return claims


def test_both_files_compile_together_and_lint_clean(policy: Policy) -> None:
    assert sorted(Path(f).name for f in policy.files) == ["github-actions.yaml", "kubernetes.yaml"]
    assert sorted(policy.agents) == ["triage-bot", "widgets-ci"]
    assert lint(policy) == []


@pytest.mark.parametrize("name", ["github-actions.yaml", "kubernetes.yaml"])
def test_each_file_compiles_alone(tmp_path: Path, name: str) -> None:
    shutil.copy(POLICY / name, tmp_path / name)
    assert load_policy(tmp_path).agents


def test_only_policy_files_sit_in_the_policy_folder() -> None:
    """The loader reads every *.yaml under a directory: the workflow and pod spec stay out."""
    assert sorted(p.name for p in POLICY.iterdir()) == ["github-actions.yaml", "kubernetes.yaml"]


def test_github_actions_identity(policy: Policy) -> None:
    agent = policy.agents["widgets-ci"]
    assert agent.identity == JwtIdentity(
        issuer=GITHUB,
        audience="capbroker",
        subject="repo:acme/widgets:ref:refs/heads/main",
        claims=(
            ("repository_owner", "acme"),
            ("repository_owner_id", "1234567"),  # quoted in YAML: a string, as GitHub sends it
            ("job_workflow_ref", "acme/widgets/.github/workflows/ci.yml@refs/heads/main"),
            ("runner_environment", "github-hosted"),
        ),
        jwks_uri=None,  # discovery
    )
    assert set(agent.scopes) == {"widgets-ci-read", "widgets-ci-reports"}


def test_kubernetes_identity(policy: Policy) -> None:
    agent = policy.agents["triage-bot"]
    assert agent.identity == JwtIdentity(
        issuer=K8S,
        audience="capbroker",
        subject="system:serviceaccount:agents:triage-bot",
        claims=(),
        jwks_uri="https://10.0.0.1:443/openid/v1/jwks",
    )


def test_a_github_token_matches_the_ci_agent_only_from_main(policy: Policy) -> None:
    github = JwtIssuer(GITHUB, now=NOW)
    keys = IdentityKeys.from_jwks(github.jwks())

    def principal(sub: str, **claims: Any) -> str:
        token = github.issue(sub=sub, aud="capbroker", headers={"x5t": "cc41"}, extra_claims=github_claims(**claims))
        verified = verify_identity_jwt(token, keys, issuer=GITHUB, now=NOW)
        return select_jwt_principal(verified, policy.agents.values()).name

    assert principal("repo:acme/widgets:ref:refs/heads/main") == "widgets-ci"
    wrong: list[tuple[str, dict[str, Any]]] = [
        ("repo:acme/widgets:pull_request", {}),
        ("repo:acme/widgets:ref:refs/heads/main", {"repository_owner_id": 1234567}),  # type-exact
        ("repo:acme/widgets:ref:refs/heads/main", {"runner_environment": "self-hosted"}),
        (
            "repo:acme/widgets:ref:refs/heads/main",
            {"job_workflow_ref": "evil/x/.github/workflows/a.yml@refs/heads/main"},
        ),
    ]
    for sub, claims in wrong:
        with pytest.raises(IdentityRejected, match="no principal matches"):
            principal(sub, **claims)


def test_a_kubernetes_token_matches_the_triage_agent(policy: Policy) -> None:
    cluster = JwtIssuer(K8S, now=NOW)
    keys = IdentityKeys.from_jwks(cluster.jwks())
    nested = {
        "namespace": "agents",
        "pod": {"name": "triage-bot", "uid": "p-1"},
        "serviceaccount": {"name": "triage-bot"},
    }

    def principal(sub: str) -> str:
        token = cluster.issue(
            sub=sub, aud=["capbroker"], typ=None, lifetime=600, extra_claims={"kubernetes.io": nested}
        )
        verified = verify_identity_jwt(token, keys, issuer=K8S, now=NOW)
        return select_jwt_principal(verified, policy.agents.values()).name

    assert principal("system:serviceaccount:agents:triage-bot") == "triage-bot"
    with pytest.raises(IdentityRejected, match="no principal matches"):
        principal("system:serviceaccount:default:triage-bot")


def test_pod_spec_projects_a_short_lived_token_for_the_broker(policy: Policy) -> None:
    docs = list(yaml.safe_load_all((HERE / "kubernetes-pod.yaml").read_text()))
    account, pod = docs
    assert account["kind"] == "ServiceAccount"
    assert pod["kind"] == "Pod"
    identity = policy.agents["triage-bot"].identity
    assert isinstance(identity, JwtIdentity)
    assert (
        identity.subject == f"system:serviceaccount:{pod['metadata']['namespace']}:{pod['spec']['serviceAccountName']}"
    )
    (volume,) = pod["spec"]["volumes"]
    (source,) = volume["projected"]["sources"]
    projected = source["serviceAccountToken"]
    assert projected["audience"] == identity.audience
    assert 600 <= projected["expirationSeconds"] < 3607  # 3607 is the one value the API server extends to a year


def test_workflow_asks_for_an_id_token_for_the_broker(policy: Policy) -> None:
    workflow = yaml.safe_load((HERE / "github-actions-workflow.yml").read_text())
    assert workflow["permissions"]["id-token"] == "write"
    assert workflow[True]["push"]["branches"] == ["main"]  # YAML 1.1 reads the key `on` as true
    (step,) = workflow["jobs"]["build"]["steps"]
    script = step["run"]
    identity = policy.agents["widgets-ci"].identity
    assert isinstance(identity, JwtIdentity)
    assert f"$ACTIONS_ID_TOKEN_REQUEST_URL&audience={identity.audience}" in script
    assert '-X POST "$CAPBROKER_URL/v1/tokens"' in script
    assert 'scopes: ["widgets-ci-read", "widgets-ci-reports"]' in script
    assert set(policy.agents["widgets-ci"].scopes) == {"widgets-ci-read", "widgets-ci-reports"}
