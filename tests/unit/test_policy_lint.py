"""Lint: policy that is valid but probably wider than meant (``broker/policy/lint.py``).

Each warning is shown present for a bad policy and absent once the policy is corrected,
and ``broker policy check --strict`` turns warnings into exit 1.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from broker.errors import PolicyIssue
from broker.policy import Policy, load_policy
from broker.policy.lint import lint
from tests.helpers import policy_check

REPO = Path(__file__).resolve().parents[2]

KEY_A = "edfcfa7069a8c658600f6a9058c02935b9ae3a064882e958f11ae8ce3624629b"
KEY_B = "e77fce8f1ab433aa4c212ef4b6ebc9d7c61b8614fc064c0bec8bcbd92edf8d00"


def scope(name: str, kind: str, resource: str, actions: str, audience: str, *, max_ttl: str = "10m") -> str:
    return textwrap.indent(
        textwrap.dedent(
            f"""\
            {name}:
              kind: {kind}
              resource: {resource}
              actions: {actions}
              audience: {audience}
              max_ttl: {max_ttl}
            """
        ),
        "  ",
    )


def agent(name: str, key: str, scopes: list[str], rate: str | None = "60/min") -> str:
    text = textwrap.dedent(
        f"""\
        {name}:
          identity:
            key:
              sha256: {key}
          scopes: [{", ".join(scopes)}]
          max_ttl: 10m
        """
    )
    if rate is not None:
        text += f"  rate: {rate}\n"
    return textwrap.indent(text, "  ")


WIDGETS_READ = scope("widgets-read", "git", "github.com/acme/widgets", "[read]", "git-gateway", max_ttl="15m")
#: actions and audience that are valid for each kind, for scopes built around one resource
FOR_KIND = {
    "git": ("[read]", "git-gateway"),
    "bucket": ("[list, read]", "storage-gateway"),
    "http": ("[GET]", "api-gateway"),
    "vault-kv": ("[read, list]", "vault"),
    "database": ("[connect]", "vault"),
}
REPORTS_WRITE = scope("reports-write", "bucket", "s3://acme-reports/agents/", "[list, read, write]", "storage-gateway")


def document(scopes: list[str], agents: list[str]) -> str:
    return "scopes:\n" + "".join(scopes) + "agents:\n" + "".join(agents)


CLEAN = document([WIDGETS_READ, REPORTS_WRITE], [agent("reviewer", KEY_A, ["widgets-read", "reports-write"])])


def load(tmp_path: Path, text: str, name: str = "policy") -> Policy:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "policy.yaml").write_text(text, encoding="utf-8")
    return load_policy(directory)


def line_of(text: str, needle: str) -> int:
    """1-based line of the one line that is exactly ``needle`` (the scope or agent name)."""
    lines = text.splitlines()
    assert lines.count(needle) == 1, needle
    return lines.index(needle) + 1


def matching(warnings: list[PolicyIssue], text: str) -> list[PolicyIssue]:
    return [w for w in warnings if text in w.message]


def shown(warnings: list[PolicyIssue]) -> str:
    return "\n".join(str(w) for w in warnings) or "(no warnings)"


def warned_once_at(warnings: list[PolicyIssue], text: str, line: int) -> None:
    hits = matching(warnings, text)
    assert len(hits) == 1, shown(warnings)
    assert hits[0].severity == "warning"
    assert hits[0].line == line
    assert Path(hits[0].file).name == "policy.yaml"


def test_clean_policy_has_no_warnings(tmp_path: Path) -> None:
    assert lint(load(tmp_path, CLEAN)) == []


# ------------------------------------------------------------------ root resources


@pytest.mark.parametrize(
    ("kind", "root", "narrow"),
    [
        ("bucket", "s3://acme-reports/", "s3://acme-reports/agents/"),
        ("http", "https://api.example.com/", "https://api.example.com/v1/"),
        ("http", "https://api.example.com:8443/", "https://api.example.com:8443/v1/"),
        ("vault-kv", "secret/data/", "secret/data/deploy/"),
    ],
    ids=["bucket", "http", "http-port", "vault-kv"],
)
def test_root_resource_warns(tmp_path: Path, kind: str, root: str, narrow: str) -> None:
    def text(resource: str) -> str:
        wide = scope("wide", kind, resource, *FOR_KIND[kind])
        return document([WIDGETS_READ, wide], [agent("reviewer", KEY_A, ["widgets-read", "wide"])])

    bad = text(root)
    warnings = lint(load(tmp_path, bad, "bad"))
    warned_once_at(warnings, f"scope 'wide' grants a whole {kind} root {root}", line_of(bad, "  wide:"))
    assert len(warnings) == 1, shown(warnings)

    assert lint(load(tmp_path, text(narrow), "fixed")) == []


@pytest.mark.parametrize(
    ("kind", "resource"),
    [
        ("git", "github.com/acme/widgets"),
        ("database", "database/creds/analytics-readonly"),
        ("vault-kv", "secret/data/deploy"),
        ("http", "https://api.example.com/v1"),
    ],
    ids=["git", "database", "vault-kv-exact", "http-exact"],
)
def test_exact_resources_are_not_roots(tmp_path: Path, kind: str, resource: str) -> None:
    exact = scope("exact", kind, resource, *FOR_KIND[kind])
    assert lint(load(tmp_path, document([exact], [agent("reviewer", KEY_A, ["exact"])]))) == []


# ------------------------------------------------------------------ git write lifetime


def test_git_write_longer_than_15m_warns(tmp_path: Path) -> None:
    def text(actions: str, max_ttl: str) -> str:
        push = scope("widgets-push", "git", "github.com/acme/widgets", actions, "git-gateway", max_ttl=max_ttl)
        return document([push], [agent("deployer", KEY_A, ["widgets-push"])])

    bad = text("[read, write]", "30m")
    warnings = lint(load(tmp_path, bad, "bad"))
    warned_once_at(warnings, "scope 'widgets-push' gives git write for up to 1800s", line_of(bad, "  widgets-push:"))
    assert len(warnings) == 1, shown(warnings)

    assert lint(load(tmp_path, text("[read, write]", "15m"), "at-limit")) == []
    assert lint(load(tmp_path, text("[read]", "30m"), "read-only")) == []


# ------------------------------------------------------------------ audiences per agent


FOUR_AUDIENCES = [
    WIDGETS_READ,
    REPORTS_WRITE,
    scope("weather-key", "vault-kv", "secret/data/agents/weather", "[read]", "vault"),
    scope("invoices-read", "http", "https://billing.internal/v1/invoices/", "[GET]", "billing-api"),
]
FOUR_NAMES = ["widgets-read", "reports-write", "weather-key", "invoices-read"]


def test_agent_reaching_more_than_n_audiences_warns(tmp_path: Path) -> None:
    bad = document(FOUR_AUDIENCES, [agent("busy", KEY_A, FOUR_NAMES)])
    policy = load(tmp_path, bad, "bad")
    warnings = lint(policy)
    warned_once_at(
        warnings,
        "agent 'busy' reaches 4 audiences (billing-api, git-gateway, storage-gateway, vault)",
        line_of(bad, "  busy:"),
    )
    assert len(warnings) == 1, shown(warnings)
    assert lint(policy, max_audiences=4) == []

    # corrected: the billing job goes to its own agent; each reaches at most 3 audiences
    fixed = document(
        FOUR_AUDIENCES,
        [agent("busy", KEY_A, FOUR_NAMES[:3]), agent("billing", KEY_B, ["invoices-read"])],
    )
    assert lint(load(tmp_path, fixed, "fixed")) == []


def test_audiences_are_counted_once_per_audience(tmp_path: Path) -> None:
    """Several scopes on one audience count once: 4 scopes, 3 audiences, no warning."""
    extra = scope("exports-read", "bucket", "s3://acme-exports/nightly/", "[list, read]", "storage-gateway")
    text = document([*FOUR_AUDIENCES[:3], extra], [agent("busy", KEY_A, [*FOUR_NAMES[:3], "exports-read"])])
    assert lint(load(tmp_path, text)) == []


# ------------------------------------------------------------------ unused scopes


def test_scope_granted_to_no_agent_warns(tmp_path: Path) -> None:
    orphan = scope("orphan", "bucket", "s3://acme-reports/old/", "[read]", "storage-gateway")
    bad = document([WIDGETS_READ, orphan], [agent("reviewer", KEY_A, ["widgets-read"])])
    warnings = lint(load(tmp_path, bad, "bad"))
    warned_once_at(warnings, "scope 'orphan' is granted to no agent", line_of(bad, "  orphan:"))
    assert len(warnings) == 1, shown(warnings)

    fixed = document([WIDGETS_READ, orphan], [agent("reviewer", KEY_A, ["widgets-read", "orphan"])])
    assert lint(load(tmp_path, fixed, "fixed")) == []


# ------------------------------------------------------------------ rate limits


def test_agent_without_rate_warns(tmp_path: Path) -> None:
    bad = document([WIDGETS_READ], [agent("reviewer", KEY_A, ["widgets-read"], rate=None)])
    warnings = lint(load(tmp_path, bad, "bad"))
    warned_once_at(warnings, "agent 'reviewer' has no rate limit", line_of(bad, "  reviewer:"))
    assert len(warnings) == 1, shown(warnings)

    fixed = document([WIDGETS_READ], [agent("reviewer", KEY_A, ["widgets-read"], rate="30/min")])
    assert lint(load(tmp_path, fixed, "fixed")) == []


# ------------------------------------------------------------------ the CLI


def test_strict_check_fails_on_a_warning_plain_check_passes(tmp_path: Path) -> None:
    text = document([WIDGETS_READ], [agent("reviewer", KEY_A, ["widgets-read"], rate=None)])
    directory = tmp_path / "policy"
    directory.mkdir()
    path = directory / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    where = f"{path}:{line_of(text, '  reviewer:')}: warning: agent 'reviewer' has no rate limit"

    plain = policy_check(str(directory))
    assert plain.returncode == 0, plain.stderr
    assert "policy ok" in plain.stdout
    assert where in plain.stderr

    strict = policy_check("--strict", str(directory))
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert where in strict.stderr
    assert "policy refused under --strict: 1 warning(s)" in strict.stderr
    assert "policy ok" not in strict.stdout


def test_strict_check_passes_a_clean_policy(tmp_path: Path) -> None:
    directory = tmp_path / "policy"
    directory.mkdir()
    (directory / "policy.yaml").write_text(CLEAN, encoding="utf-8")
    done = policy_check("--strict", str(directory))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_max_audiences_option_reaches_the_linter(tmp_path: Path) -> None:
    directory = tmp_path / "policy"
    directory.mkdir()
    (directory / "policy.yaml").write_text(document(FOUR_AUDIENCES, [agent("busy", KEY_A, FOUR_NAMES)]), "utf-8")
    assert policy_check("--strict", str(directory)).returncode == 1
    assert policy_check("--strict", "--max-audiences", "4", str(directory)).returncode == 0
