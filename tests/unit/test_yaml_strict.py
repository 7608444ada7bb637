"""Strict YAML: every refusal names its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import PolicyIssue
from broker.policy.yamlstrict import YMap, YScalar, YSeq, parse_yaml


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a' (first at line 1)"),
        ("a:\n  b: &x 1\n  c: *x\n", 2, "anchors"),
        ("a: [1, 2\n", 2, "YAML syntax"),
        ("a: yes\n", 1, "true or false"),
        ("a: on\n", 1, "true or false"),
        ("a: 0x10\n", 1, "plain decimal"),
        ("a: 1_000\n", 1, "plain decimal"),
        ("a: 1.5\n", 1, "not allowed"),
        ("a: !!python/object:os.system x\n", 1, "not allowed"),
        ("a: 2026-01-01\n", 1, "not allowed"),
        ("1: x\n", 1, "plain strings"),
        ("a: 1\n---\nb: 2\n", 2, "another document"),
        ("a:\n  <<: {b: 1}\n", 2, "merge keys"),
        ("", 1, "empty policy file"),
    ],
)
def test_refused_with_line(text: str, line: int, fragment: str) -> None:
    result = parse_yaml(text, "f.yaml")
    assert isinstance(result, PolicyIssue)
    assert (result.file, result.line) == ("f.yaml", line)
    assert fragment in result.message


def test_alias_is_refused_even_without_visible_anchor_use() -> None:
    result = parse_yaml("x: &a [1]\n", "f.yaml")
    assert isinstance(result, PolicyIssue)


def test_non_utf8_is_refused_with_its_line() -> None:
    result = parse_yaml(b"a: 1\nb: \xff\n", "f.yaml")
    assert isinstance(result, PolicyIssue)
    assert result.line == 2


def test_values_keep_their_lines_and_types() -> None:
    result = parse_yaml("a: 1\nb:\n  - 'yes'\n  - true\nc: ~\n", "f.yaml")
    assert isinstance(result, YMap)
    assert result.names() == ["a", "b", "c"]
    assert result.get("a") == YScalar(1, 1)
    b = result.get("b")
    assert isinstance(b, YSeq)
    assert b.items == (YScalar("yes", 3), YScalar(value=True, line=4))
    assert result.get("c") == YScalar(None, 5)


def test_every_yaml_problem_of_a_policy_file_is_reported_not_only_the_first(tmp_path: Path) -> None:
    """Issue 13 item 8: the README promises every problem; YAML-level ones stopped at the first."""
    from broker.errors import PolicyInvalid
    from broker.policy.loader import load_policy

    (tmp_path / "bad.yaml").write_text(
        "scopes:\n"
        "  a:\n"
        "    kind: git\n"
        "    kind: bucket\n"  # 4: duplicate key
        "    max_ttl: 1.5\n"  # 5: a float
        "  b:\n"
        "    require_pop: yes\n"  # 7: a YAML 1.1 boolean
        "    actions: [0x10]\n"  # 8: an integer not in plain decimal
    )
    with pytest.raises(PolicyInvalid) as e:
        load_policy(tmp_path)
    lines = sorted(i.line for i in e.value.issues if i.file.endswith("bad.yaml"))
    assert lines == [4, 5, 7, 8], e.value.issues
