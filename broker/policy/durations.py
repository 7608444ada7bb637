"""Durations: ``90s``, ``5m``, ``1h``, or a positive integer of seconds."""

from __future__ import annotations

import re
from typing import Final

from broker.errors import InvalidRequest

_DURATION = re.compile(r"([1-9][0-9]{0,6})(s|m|h)")
_UNIT: Final = {"s": 1, "m": 60, "h": 3600}
MAX_SECONDS: Final = 10**7


def parse_duration(value: object) -> int:
    """Seconds, > 0. Booleans and floats are refused; so is anything not in the grammar."""
    if isinstance(value, bool):
        raise InvalidRequest("a duration is a string like '5m' or a whole number of seconds")
    if isinstance(value, int):
        if not 0 < value <= MAX_SECONDS:
            raise InvalidRequest(f"duration {value} out of range")
        return value
    if isinstance(value, str):
        m = _DURATION.fullmatch(value)
        if m:
            return int(m.group(1)) * _UNIT[m.group(2)]
    raise InvalidRequest(f"{value!r:.40} is not a duration like '90s', '5m' or '1h'")
