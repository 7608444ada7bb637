"""Every distribution the broker package imports is declared in pyproject.toml (issue 13,
item 11): ``msgspec``, ``requests`` and ``urllib3`` were imported and came in only by luck,
through other packages' dependencies."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _imported_top_modules() -> set[str]:
    found: set[str] = set()
    for path in (REPO / "broker").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"broker"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_distribution_is_declared() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    specs = [*project["dependencies"], *extras["server"], *extras["redis"]]  # server names capbroker[redis]
    declared = {_normal(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0]) for spec in specs}
    providers = packages_distributions()
    undeclared = {}
    for module in sorted(_imported_top_modules()):
        distributions = {_normal(d) for d in providers.get(module, [module])}
        if not distributions & declared:
            undeclared[module] = sorted(distributions)
    assert not undeclared, f"imported by broker/ but not in the dependencies or the server extra: {undeclared}"


def _requirements_closure(names: set[str]) -> set[str]:
    """``names`` and every distribution they require, installed here (extras' markers skipped)."""
    from importlib.metadata import PackageNotFoundError, requires

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            specs = requires(name) or []
        except PackageNotFoundError:
            continue
        todo += [_normal(re.split(r"[<>=!~\[; (]", s, maxsplit=1)[0]) for s in specs if "extra ==" not in s]
    return seen


def test_the_verifier_library_needs_only_the_base_install() -> None:
    """``pip install capbroker`` (no extra) is what ``broker.verify`` needs, and only that:
    importing it loads no distribution outside the base dependencies and what they require
    (litestar, hvac, uvicorn and the rest come with ``capbroker[server]``)."""
    import json
    import subprocess

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {_normal(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0]) for spec in project["dependencies"]}
    allowed = _requirements_closure(base)
    loaded = subprocess.run(
        [sys.executable, "-c", "import broker.verify, json, sys; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    modules = {m.split(".")[0] for m in json.loads(loaded.stdout)} - set(sys.stdlib_module_names) - {"broker"}
    providers = packages_distributions()
    outside = {
        m: sorted(d)
        for m in sorted(modules)
        if not m.startswith("_") and (d := {_normal(x) for x in providers.get(m, [m])}) and not d & allowed
    }
    assert not outside, f"broker.verify loads distributions outside the base install: {outside}"
    assert {"litestar", "hvac", "uvicorn", "yaml"}.isdisjoint(modules)


def test_the_verifier_imports_without_redis_and_a_redis_source_says_what_to_install() -> None:
    """``redis`` is for services that read the broker's Redis (``capbroker[redis]``): with
    it unimportable, ``broker.verify`` and a verifier on keys still work, and naming a Redis
    source fails with the extra to install, not a bare import error."""
    import subprocess

    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import broker.verify as v\n"
        "from broker.token import KeyRing, LocalSigner\n"
        "v.Verifier(issuer='https://b', audience='a', jwks=KeyRing([LocalSigner.generate()]).keyset)\n"
        "try:\n"
        "    v.RevocationFeed\n"
        "except ModuleNotFoundError as e:\n"
        "    print(e)\n"
        "try:\n"
        "    v.Verifier(issuer='https://b', audience='a', jwks={'keys': []}, revocation='redis://127.0.0.1:1/0')\n"
        "except ModuleNotFoundError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("pip install 'capbroker[redis]'") == 2, done.stdout


def test_the_broker_command_without_the_server_extra_says_what_to_install() -> None:
    """With only the base install (here: PyYAML and Litestar made unimportable), ``broker``
    exits 2 naming ``capbroker[server]``, not with a traceback."""
    import subprocess

    code = (
        "import sys; sys.modules['yaml'] = None; sys.modules['litestar'] = None\n"
        "from broker.cli import main; sys.exit(main(['policy', 'check', '.']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO, check=False
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'capbroker[server]'" in done.stderr
    assert "Traceback" not in done.stderr
