"""GCRA rate-limit parameters, shared by the Redis script and the in-memory store."""

from __future__ import annotations


def gcra_parameters(count: int, per_seconds: int) -> tuple[int, int]:
    """The emission interval and the limit on ``tat - now``, both in whole microseconds.

    The interval is rounded up so that ``limit = count * interval`` lets exactly ``count``
    mints through in a fresh burst, with no floating-point edge at the last one.
    """
    if type(count) is not int or type(per_seconds) is not int or count < 1 or per_seconds < 1:
        raise ValueError("a rate limit is a positive count per a positive number of seconds")
    interval = -(-per_seconds * 1_000_000 // count)  # integer ceiling
    return interval, count * interval
