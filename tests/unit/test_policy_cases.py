"""Malformed policy files are refused whole, with the right file, line and reason.

Each entry of ``tests/policy_cases/`` is one malformed policy: a single ``.yaml``/``.yml``
file, or a folder of files for problems that span files. The file holding the error starts
with ``# expect: LINE: SUBSTRING``; every case is otherwise a valid small policy. A case is
loaded by itself from a fresh directory.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.errors import PolicyInvalid, PolicyIssue
from broker.policy import load_policy
from tests.helpers import policy_check

REPO = Path(__file__).resolve().parents[2]
CASES_DIR = REPO / "tests" / "policy_cases"
SCOPES_DIR = REPO / "scopes"
EXPECT = re.compile(r"# expect: (?P<line>[1-9][0-9]*): (?P<text>\S.*)")
POLICY_SUFFIXES = (".yaml", ".yml")

KEY_A = "edfcfa7069a8c658600f6a9058c02935b9ae3a064882e958f11ae8ce3624629b"
KEY_B = "e77fce8f1ab433aa4c212ef4b6ebc9d7c61b8614fc064c0bec8bcbd92edf8d00"


@dataclass(frozen=True)
class Expectation:
    file: str  # the base name of the file that holds the error
    line: int
    text: str


def _case_entries() -> list[Path]:
    return sorted(
        entry
        for entry in CASES_DIR.iterdir()
        if not entry.name.startswith(".") and (entry.is_dir() or entry.suffix in POLICY_SUFFIXES)
    )


CASES = _case_entries()


def _expectation(entry: Path) -> Expectation:
    files = sorted(p for p in entry.iterdir() if p.suffix in POLICY_SUFFIXES) if entry.is_dir() else [entry]
    found: list[Expectation] = []
    for path in files:
        first = path.read_text(encoding="utf-8").partition("\n")[0]
        m = EXPECT.fullmatch(first)
        if m:
            found.append(Expectation(path.name, int(m["line"]), m["text"]))
    assert len(found) == 1, f"{entry.name}: exactly one file must start with '# expect: LINE: SUBSTRING'"
    return found[0]


def _stage(entry: Path, tmp_path: Path) -> Path:
    """A fresh directory holding only this case."""
    directory = tmp_path / "policy"
    if entry.is_dir():
        shutil.copytree(entry, directory)
    else:
        directory.mkdir()
        shutil.copyfile(entry, directory / entry.name)
    return directory


def _refusal(directory: Path) -> tuple[PolicyIssue, ...]:
    """The issues of the ``PolicyInvalid`` that loading raises; any other outcome fails the test."""
    try:
        load_policy(directory)
    except PolicyInvalid as e:
        return e.issues
    except Exception as e:  # noqa: BLE001 - a crash is the finding; show it in one line
        outcome = f"crashed with {type(e).__name__}: {str(e)[:300]}"
    else:
        outcome = "loaded without error"
    pytest.fail(f"load_policy({directory}) {outcome}; expected PolicyInvalid", pytrace=False)


def _shown(issues: tuple[PolicyIssue, ...]) -> str:
    return "\n".join(str(i) for i in issues)


def _located(issues: tuple[PolicyIssue, ...], file: str, line: int, text: str) -> list[PolicyIssue]:
    return [i for i in issues if Path(i.file).name == file and i.line == line and text in i.message]


def _write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


# ------------------------------------------------------------------ the case files


@pytest.mark.parametrize("entry", CASES, ids=[e.name for e in CASES])
def test_malformed_case_is_refused_at_its_line(entry: Path, tmp_path: Path) -> None:
    expected = _expectation(entry)
    issues = _refusal(_stage(entry, tmp_path))
    hits = _located(issues, expected.file, expected.line, expected.text)
    assert hits, f"wanted {expected.file}:{expected.line}: ...{expected.text}...; got:\n{_shown(issues)}"
    assert all(i.severity == "error" for i in hits)


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 25
    assert any(e.is_dir() for e in CASES), "multi-file cases are folders"
    assert any(e.suffix == ".yml" for e in CASES)


# ------------------------------------------------------------------ every error, not the first


def test_independent_errors_in_one_file_are_all_reported(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "policy.yaml",
        f"""
        scopes:
          good:
            kind: git
            resource: github.com/acme/widgets
            actions: [read]
            audience: git-gateway
            max_ttl: 15m
          bad-resource:
            kind: bucket
            resource: s3://acme-reports/agents/../admin/
            actions: [read]
            audience: storage-gateway
            max_ttl: 10m
          bad-kind:
            kind: blob
            resource: s3://acme-reports/x/
            actions: [read]
            audience: storage-gateway
            max_ttl: 10m
          bad-key:
            kind: git
            resouce: github.com/acme/widgets
            actions: [read]
            audience: git-gateway
            max_ttl: 10m
        agents:
          bad-sha:
            identity:
              key:
                sha256: not-hex
            scopes: [good]
            rate: 10/min
          bad-rate:
            identity:
              key:
                sha256: {KEY_A}
            scopes: [good]
            rate: lots
          bad-ref:
            identity:
              key:
                sha256: {KEY_B}
            scopes: [good, nonexistent]
            rate: 10/min
        """,
    )
    issues = _refusal(tmp_path)
    wanted = [
        (10, "'..' is not allowed anywhere"),
        (15, "unknown kind 'blob'"),
        (22, "unknown key 'resouce'"),
        (30, "sha256: expected 64 lower-case hex digits"),
        (38, "'lots' is not a rate"),
        (43, "refers to unknown scope 'nonexistent'"),
    ]
    missing = [(line, text) for line, text in wanted if not _located(issues, "policy.yaml", line, text)]
    assert not missing, f"not reported: {missing}; got:\n{_shown(issues)}"


def test_errors_in_several_files_are_all_reported(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "scopes:\n  x:\n    kind: git\n  y: [\n")  # YAML syntax error
    _write(tmp_path, "b.yaml", "scopes:\n  Bad-Name:\n    kind: git\n")
    _write(tmp_path, "c.yaml", "agents: {}\nextra: 1\n")
    issues = _refusal(tmp_path)
    assert {Path(i.file).name for i in issues} >= {"a.yaml", "b.yaml", "c.yaml"}, _shown(issues)
    assert _located(issues, "b.yaml", 2, "scope name 'Bad-Name' is not valid")
    assert _located(issues, "c.yaml", 2, "unknown key 'extra'")


def test_independent_errors_in_one_scope_and_one_agent_are_all_reported(tmp_path: Path) -> None:
    """BUG: compile.py promises "every field checked, every error kept", but the first bad
    field of a scope or agent ends its checking: the audience and max_ttl errors below
    (and the agent's rate and max_ttl) are never reported."""
    _write(
        tmp_path,
        "policy.yaml",
        """
        scopes:
          widgets-read:
            kind: git
            resource: github.com/acme/wid gets
            actions: [read]
            audience: git gateway
            max_ttl: 2h
        agents:
          reviewer:
            identity:
              key:
                sha256: not-hex
            scopes: [widgets-read]
            max_ttl: 3h
            rate: lots
        """,
    )
    issues = _refusal(tmp_path)
    wanted = [
        (4, "only printable ASCII"),
        (6, "not a valid audience"),
        (7, "above the global cap"),
        (12, "expected 64 lower-case hex digits"),
        (14, "above the global cap"),
        (15, "'lots' is not a rate"),
    ]
    missing = [(line, text) for line, text in wanted if not _located(issues, "policy.yaml", line, text)]
    assert not missing, f"not reported: {missing}; got:\n{_shown(issues)}"


def test_an_invalid_scope_is_not_reported_as_unknown(tmp_path: Path) -> None:
    """BUG: a scope that exists but has a bad field is dropped, and every agent granting it
    then gets a false second error "refers to unknown scope"."""
    _write(
        tmp_path,
        "policy.yaml",
        f"""
        scopes:
          widgets-read:
            kind: git
            resource: github.com/acme/*
            actions: [read]
            audience: git-gateway
            max_ttl: 15m
        agents:
          reviewer:
            identity:
              key:
                sha256: {KEY_A}
            scopes: [widgets-read]
            rate: 10/min
        """,
    )
    issues = _refusal(tmp_path)
    assert _located(issues, "policy.yaml", 4, "character '*' is not allowed")
    assert not [i for i in issues if "unknown scope" in i.message], _shown(issues)


# ------------------------------------------------------------------ no crash, right line


def test_control_character_in_file_is_an_issue_not_a_crash(tmp_path: Path) -> None:
    """BUG: a raw control character (here BEL on line 4) makes PyYAML's reader raise
    ReaderError from the loader's constructor, outside the try block in parse_yaml:
    load_policy (and ``broker policy check``) crash instead of reporting file:line."""
    (tmp_path / "policy.yaml").write_bytes(
        b"scopes:\n  widgets-read:\n    kind: git\n    description: ring\x07bell\n"
        b"    resource: github.com/acme/widgets\n    actions: [read]\n    audience: git-gateway\n    max_ttl: 15m\n"
    )
    issues = _refusal(tmp_path)
    assert [i for i in issues if Path(i.file).name == "policy.yaml" and i.line == 4], _shown(issues)


def test_deeply_nested_yaml_is_an_issue_not_a_crash(tmp_path: Path) -> None:
    """BUG: a 2 kB file of nested flow sequences (about 500 levels already do it) exhausts
    the recursion limit in PyYAML's parser: RecursionError escapes load_policy."""
    depth = 1_000
    (tmp_path / "policy.yaml").write_text("scopes: " + "[" * depth + "]" * depth + "\n", encoding="utf-8")
    issues = _refusal(tmp_path)
    assert [i for i in issues if Path(i.file).name == "policy.yaml"], _shown(issues)


def test_non_utf8_is_reported_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_bytes(b"scopes:\n  widgets-read:\n    description: caf\xe9\n")
    issues = _refusal(tmp_path)
    assert _located(issues, "policy.yaml", 3, "not valid UTF-8"), _shown(issues)


def test_directory_without_policy_files_is_refused(tmp_path: Path) -> None:
    issues = _refusal(tmp_path)
    assert [i for i in issues if "no *.yaml policy files" in i.message], _shown(issues)


# ------------------------------------------------------------------ the shipped policy and the CLI


def test_shipped_scopes_load() -> None:
    policy = load_policy(SCOPES_DIR)
    assert {"widgets-read", "reports-write", "widgets-push"} <= set(policy.scopes)
    assert {"reviewer", "analyst", "deployer"} <= set(policy.agents)
    assert {"storage-gateway", "git-gateway"} <= set(policy.services)
    for agent in policy.agents.values():
        assert set(agent.scopes) <= set(policy.scopes)


def test_cli_strict_check_of_shipped_scopes_exits_0() -> None:
    done = policy_check("--strict", str(SCOPES_DIR))
    assert done.returncode == 0, done.stderr
    assert "policy ok" in done.stdout
    assert "warning" not in done.stderr


@pytest.mark.parametrize("name", ["resource_dotdot_segment.yaml", "dup_key_in_scope.yaml", "scope_in_two_files"])
def test_cli_check_of_malformed_case_exits_1_with_file_line(name: str, tmp_path: Path) -> None:
    entry = CASES_DIR / name
    expected = _expectation(entry)
    directory = _stage(entry, tmp_path)
    bad_file = next(p for p in directory.rglob(expected.file))
    done = policy_check(str(directory))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{bad_file}:{expected.line}: error: " in done.stderr
    assert expected.text in done.stderr
    assert "policy invalid" in done.stderr
    assert "policy ok" not in done.stdout
