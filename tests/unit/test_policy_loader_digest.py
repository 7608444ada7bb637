"""The policy digest names the policy, not where it is mounted."""

from __future__ import annotations

import shutil
from pathlib import Path

from broker.policy.loader import load_policy
from tests.helpers import REPO


def test_the_same_files_in_another_directory_have_the_same_digest(tmp_path: Path) -> None:
    copy = tmp_path / "mounted" / "scopes"
    shutil.copytree(REPO / "scopes", copy)
    assert load_policy(copy).digest == load_policy(REPO / "scopes").digest


def test_a_changed_byte_or_a_renamed_file_changes_the_digest(tmp_path: Path) -> None:
    copy = tmp_path / "scopes"
    shutil.copytree(REPO / "scopes", copy)
    before = load_policy(copy).digest
    path = copy / "data.yaml"
    path.write_text(path.read_text() + "\n")
    changed = load_policy(copy).digest
    assert changed != before
    path.rename(copy / "data2.yaml")
    assert load_policy(copy).digest not in (before, changed)
