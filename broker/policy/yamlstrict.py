"""Strict YAML: a safe subset read into values that remember their line.

Refused, each with the file and line: duplicate keys, anchors and aliases, tags other than
YAML's own (``!!str`` is fine, ``!!python/...`` is not), non-string keys, several documents,
control characters, nesting deeper than ``MAX_DEPTH``, floats, YAML 1.1 booleans other than true/false
(``yes``, ``on``, ...), integers not written in plain decimal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from broker.errors import PolicyIssue

MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 16  # a policy file needs 6

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_DECIMAL = re.compile(r"0|-?[1-9][0-9]{0,17}")
_FLOAT = "tag:yaml.org,2002:float"
_PLAIN_DECIMAL = re.compile(r"[0-9]{1,9}\.[0-9]{1,9}")


@dataclass(frozen=True, slots=True)
class YScalar:
    value: str | int | bool | None
    line: int


@dataclass(frozen=True, slots=True)
class YSeq:
    items: tuple[YNode, ...]
    line: int


@dataclass(frozen=True, slots=True)
class YMap:
    """Keys in file order, each with the line of the key."""

    entries: tuple[tuple[str, int, YNode], ...]
    line: int

    def names(self) -> list[str]:
        return [k for k, _, _ in self.entries]

    def get(self, key: str) -> YNode | None:
        for k, _, v in self.entries:
            if k == key:
                return v
        return None

    def key_line(self, key: str) -> int:
        for k, line, _ in self.entries:
            if k == key:
                return line
        return self.line


YNode = YScalar | YSeq | YMap


class YamlError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _NoAliasLoader(yaml.SafeLoader):
    """Refuses anchors and aliases while composing: they let one edit change many places."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1 if event.start_mark is not None else 1
        if isinstance(event, yaml.AliasEvent):
            raise YamlError(line, "aliases (*name) are not allowed")
        if getattr(event, "anchor", None) is not None:
            raise YamlError(line, "anchors (&name) are not allowed")
        if self.depth >= MAX_DEPTH:
            raise YamlError(line, f"nested deeper than {MAX_DEPTH} levels")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _scalar(node: yaml.ScalarNode, decimals: bool) -> YScalar:
    line = _line(node)
    text = str(node.value)
    if decimals and node.tag == _FLOAT and _PLAIN_DECIMAL.fullmatch(text):
        return YScalar(text, line)  # as written: the reader of the value converts it
    if node.tag == _STR:
        return YScalar(text, line)
    if node.style is not None and node.style in "'\"":
        return YScalar(text, line)
    if node.tag == _NULL:
        return YScalar(None, line)
    if node.tag == _BOOL:
        if text not in ("true", "false"):
            raise YamlError(line, f"write booleans as true or false, not {text!r}")
        return YScalar(text == "true", line)
    if node.tag == _INT:
        if not _DECIMAL.fullmatch(text):
            raise YamlError(line, f"write integers in plain decimal, not {text!r}")
        return YScalar(int(text), line)
    raise YamlError(line, f"value {text!r} is not allowed; quote strings")


def _convert(node: yaml.Node, decimals: bool = False, errors: list[YamlError] | None = None) -> YNode:
    """The node as plain values. With ``errors``, a refused value or key is recorded there
    and the walk goes on (every problem of a file at once); without, the first one raises."""
    try:
        return _convert_one(node, decimals, errors)
    except YamlError as e:
        if errors is None:
            raise
        errors.append(e)
        return YScalar(None, e.line)


def _refuse(error: YamlError, errors: list[YamlError] | None) -> None:
    if errors is None:
        raise error
    errors.append(error)


def _convert_one(node: yaml.Node, decimals: bool, errors: list[YamlError] | None) -> YNode:
    allowed = (_STR, _INT, _BOOL, _NULL, _MAP, _SEQ, *((_FLOAT,) if decimals else ()))
    if node.tag not in allowed:
        raise YamlError(_line(node), f"values of type {node.tag} are not allowed; quote strings")
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node, decimals)
    if isinstance(node, yaml.SequenceNode):
        return YSeq(tuple(_convert(item, decimals, errors) for item in node.value), _line(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        entries: list[tuple[str, int, YNode]] = []
        for key_node, value_node in node.value:
            kline = _line(key_node)
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == "<<":
                _refuse(YamlError(kline, "merge keys (<<) are not allowed"), errors)
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                _refuse(YamlError(kline, "mapping keys must be plain strings"), errors)
                continue
            key = str(key_node.value)
            if key in seen:
                _refuse(YamlError(kline, f"duplicate key {key!r} (first at line {seen[key]})"), errors)
                continue
            seen[key] = kline
            entries.append((key, kline, _convert(value_node, decimals, errors)))
        return YMap(tuple(entries), _line(node))
    raise YamlError(_line(node), "unsupported YAML node")


def parse_yaml(text: str | bytes, filename: str, *, decimals: bool = False) -> YNode | PolicyIssue:
    """The file's one document, or the first problem found in it. ``decimals``: a plain
    decimal such as ``0.5`` is kept as its text (settings' durations), not refused."""
    parsed = _parse(text, filename, decimals=decimals, every=False)
    return parsed[0] if isinstance(parsed, list) else parsed


def parse_yaml_all(text: str | bytes, filename: str) -> YNode | list[PolicyIssue]:
    """The file's one document, or every problem found in it (a syntax error still ends
    the reading: what follows it cannot be read)."""
    return _parse(text, filename, decimals=False, every=True)


def _parse(text: str | bytes, filename: str, *, decimals: bool, every: bool) -> YNode | list[PolicyIssue]:
    if len(text) > MAX_FILE_BYTES:
        return [PolicyIssue(filename, 1, f"file larger than {MAX_FILE_BYTES} bytes")]
    if isinstance(text, bytes):
        raw = text
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return [PolicyIssue(filename, raw.count(b"\n", 0, e.start) + 1, "not valid UTF-8")]
    try:
        loader = _NoAliasLoader(text)
    except yaml.reader.ReaderError as e:  # a control character or NUL in the file
        return [
            PolicyIssue(filename, text.count("\n", 0, max(e.position, 0)) + 1, "control characters are not allowed")
        ]
    errors: list[YamlError] | None = [] if every else None
    try:
        node = loader.get_single_node()
        if node is None:
            return [PolicyIssue(filename, 1, "empty policy file")]
        converted = _convert(node, decimals, errors)
        if errors:
            return [PolicyIssue(filename, e.line, e.message) for e in errors]
        return converted
    except YamlError as e:
        return [PolicyIssue(filename, e.line, e.message)]
    except yaml.reader.ReaderError as e:
        return [
            PolicyIssue(filename, text.count("\n", 0, max(e.position, 0)) + 1, "control characters are not allowed")
        ]
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        return [PolicyIssue(filename, line, f"YAML syntax: {e.problem or e.context}")]
    except yaml.YAMLError as e:
        return [PolicyIssue(filename, 1, f"YAML syntax: {e}")]
    finally:
        loader.dispose()
