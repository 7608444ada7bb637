"""Sizes for ``budget.bytes``: ``500MB``, ``2GiB``, ``64KB`` or a whole number of bytes."""

from __future__ import annotations

import re
from typing import Final

from broker.capability.budget import MAX_BUDGET

_SIZE = re.compile(r"([1-9][0-9]{0,12})(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)")
_FACTOR: Final = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "TiB": 1 << 40,
}


def parse_size(value: object) -> int:
    """Bytes, 1..2^53. Booleans are refused; so is anything not in the grammar."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and (m := _SIZE.fullmatch(value)):
        number = int(m.group(1)) * _FACTOR[m.group(2)]
    else:
        raise ValueError(f"{value!r:.40} is not a size like '500MB', '2GiB' or a whole number of bytes")
    if not 0 < number <= MAX_BUDGET:
        raise ValueError("a size is 1 byte to 2^53 bytes")
    return number


def format_size(number: int) -> str:
    for unit in ("TiB", "GiB", "MiB", "KiB", "TB", "GB", "MB", "KB"):
        if number % _FACTOR[unit] == 0:
            return f"{number // _FACTOR[unit]}{unit}"
    return f"{number}B"
