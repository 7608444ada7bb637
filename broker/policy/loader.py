"""Read every ``*.yaml`` under a directory and compile it, or report every problem."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from broker.capability.lifetime import MAX_TOKEN_TTL
from broker.errors import PolicyInvalid, PolicyIssue
from broker.policy.compile import compile_policy
from broker.policy.model import Policy
from broker.policy.yamlstrict import YNode, parse_yaml_all


def policy_files(directory: Path) -> list[Path]:
    """``*.yaml`` files under ``directory``, sorted; hidden files and folders are skipped."""
    found = []
    for path in directory.rglob("*"):
        rel = path.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() in (".yaml", ".yml"):
            found.append(path)
    return sorted(found)


def load_policy(directory: str | Path, *, global_max_ttl: int = MAX_TOKEN_TTL) -> Policy:
    """The compiled policy; raises ``PolicyInvalid`` listing every problem with file:line."""
    root = Path(directory)
    if not root.is_dir():
        raise PolicyInvalid([PolicyIssue(str(root), 0, "not a directory")])
    issues: list[PolicyIssue] = []
    documents: list[tuple[str, YNode, bytes]] = []
    files = policy_files(root)
    for path in files:
        name = str(path)
        if path.suffix != ".yaml":
            issues.append(PolicyIssue(name, 1, "policy files end in .yaml (lower case): rename this file"))
            continue
        try:
            raw = path.read_bytes()
        except OSError as e:
            issues.append(PolicyIssue(name, 0, f"cannot read: {e.strerror}"))
            continue
        parsed = parse_yaml_all(raw, name)
        if isinstance(parsed, list):  # every problem of the file, not only the first
            issues.extend(parsed)
            continue
        documents.append((name, parsed, raw))
    if not files:
        issues.append(PolicyIssue(str(root), 0, "no *.yaml policy files"))
    result = compile_policy(documents, global_max_ttl=global_max_ttl)
    if isinstance(result, list):
        issues.extend(result)
    if issues or isinstance(result, list):
        raise PolicyInvalid(issues)
    return dataclasses.replace(result, digest=policy_digest(root, [(Path(name), raw) for name, _, raw in documents]))


def policy_digest(root: Path, files: list[tuple[Path, bytes]]) -> str:
    """SHA-256 over each file's path relative to the policy directory and the bytes that
    were compiled: the same files give the same digest on every replica, wherever the
    directory is mounted."""
    digest = hashlib.sha256()
    for path, raw in files:
        digest.update(hashlib.sha256(path.relative_to(root).as_posix().encode()).digest())
        digest.update(hashlib.sha256(raw).digest())
    return digest.hexdigest()
