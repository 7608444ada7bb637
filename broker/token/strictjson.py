"""Strict JSON for token headers and payloads.

UTF-8 only (no BOM, no UTF-16/32 auto-detection), duplicate keys refused, no NaN or
Infinity, integers bounded, an object at the top.
"""

from __future__ import annotations

import json
from typing import Any

from broker.errors import excerpt


class StrictJsonError(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):  # a key repeated: name the first one that did
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise StrictJsonError(f"duplicate key {excerpt(key)}")
            seen.add(key)
    return out


def _no_constant(name: str) -> Any:
    raise StrictJsonError(f"{name} is not JSON")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 16:
        raise StrictJsonError("integer too large")
    return int(text)


#: built once: ``json.loads`` with hooks builds a new decoder on every call. A text that
#: starts with a BOM is refused by the scanner (``json.loads`` would refuse it too).
_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_no_constant, parse_int=_bounded_int)


def loads_object(data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        raise StrictJsonError("not UTF-8") from e
    try:
        value = _DECODER.decode(text)
    except StrictJsonError:
        raise
    except (ValueError, RecursionError) as e:
        raise StrictJsonError("not JSON") from e
    if not isinstance(value, dict):
        raise StrictJsonError("not a JSON object")
    return value


def dumps_canonical(value: dict[str, Any]) -> bytes:
    """Compact, ASCII, key order as given (the claim order is fixed by the caller)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
