"""Print the shape of the code under a package: the classes with the most instance
attributes, the longest functions, and the median function length.

    python tools/code_shape.py [broker] [--top N]

A frozen dataclass is marked: its fields never change. Instance attributes are the
distinct names assigned as ``self.NAME = ...`` (or annotated) in a class's methods, plus
the annotated fields of a dataclass body. Function length is
the number of lines from ``def`` to the last line of its body, decorators excluded.
"""

from __future__ import annotations

import argparse
import ast
import statistics
import sys
from pathlib import Path


def _self_targets(method: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(method):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Name) and leaf.value.id == "self":
                    names.add(leaf.attr)
    return names


def _mutated_attributes(cls: ast.ClassDef) -> set[str]:
    """The attributes a method other than ``__init__``/``__post_init__`` assigns: state
    that changes over the object's life (a dataclass's fields count when not frozen)."""
    names: set[str] = set()
    for item in cls.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name not in ("__init__", "__post_init__"):
            names |= _self_targets(item)
    return names


def _class_attributes(cls: ast.ClassDef) -> set[str]:
    names: set[str] = set()
    for item in cls.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            annotation = ast.unparse(item.annotation)
            if "ClassVar" not in annotation and "Final" not in annotation:
                names.add(item.target.id)
        elif isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names |= _self_targets(item)
    return names


def _frozen(cls: ast.ClassDef) -> bool:
    """A dataclass declared ``frozen=True``: its fields never change after construction."""
    for decorator in cls.decorator_list:
        if isinstance(decorator, ast.Call):
            for keyword in decorator.keywords:
                if keyword.arg == "frozen" and isinstance(keyword.value, ast.Constant) and keyword.value.value is True:
                    return True
    return False


def shape(root: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]], list[tuple[int, str]]]:
    classes: list[tuple[int, str]] = []
    mutated: list[tuple[int, str]] = []
    functions: list[tuple[int, str]] = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                frozen = " (frozen)" if _frozen(node) else ""
                classes.append((len(_class_attributes(node)), f"{path}:{node.lineno} {node.name}{frozen}"))
                mutated.append((len(_mutated_attributes(node)), f"{path}:{node.lineno} {node.name}"))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                functions.append((length, f"{path}:{node.lineno} {node.name}"))
    return sorted(classes, reverse=True), sorted(functions, reverse=True), sorted(mutated, reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", nargs="?", default="broker")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args(argv)
    classes, functions, mutated = shape(Path(args.package))
    mutable = [(count, where) for count, where in classes if not where.endswith("(frozen)")]
    print(f"classes: {len(classes)}; most instance attributes:")
    for count, where in classes[: args.top]:
        print(f"  {count:3d}  {where}")
    print("most instance attributes of a class that is not a frozen dataclass:")
    for count, where in mutable[: args.top]:
        print(f"  {count:3d}  {where}")
    print("most attributes assigned after construction (state that changes):")
    for count, where in mutated[: args.top]:
        print(f"  {count:3d}  {where}")
    lengths = [n for n, _ in functions]
    print(f"functions: {len(functions)}; median {statistics.median(lengths):g} lines; longest:")
    for length, where in functions[: args.top]:
        print(f"  {length:3d}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
