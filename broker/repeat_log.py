"""``RepeatLog``: a failure that repeats is logged with backoff, not once a second forever.

A pure decision core (``now`` in, what to log out): the first failure is logged at once; the
same failure again is counted and logged after 1 s, 2 s, 4 s ... up to ``ceiling`` seconds,
with how many times it happened meanwhile; a different failure is logged at once; the first
success after failures is logged once ("recovered").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

FIRST_DELAY: Final = 1.0
CEILING: Final = 60.0


@dataclass(slots=True)
class RepeatLog:
    ceiling: float = CEILING
    _last: str | None = None
    _next_at: float = 0.0
    _delay: float = FIRST_DELAY
    _unlogged: int = 0

    def failure(self, what: str, now: float) -> str | None:
        """The line to log for this failure now, or None (counted for the next line)."""
        if what != self._last:
            self._last, self._delay, self._unlogged = what, FIRST_DELAY, 0
            self._next_at = now + self._delay
            return what
        self._unlogged += 1
        if now < self._next_at:
            return None
        line = f"{what} (again, {self._unlogged} times in the last {self._delay:g}s)"
        self._delay = min(self._delay * 2, self.ceiling)
        self._next_at, self._unlogged = now + self._delay, 0
        return line

    def success(self) -> bool:
        """True once after failures: the moment to log that it works again."""
        failed, self._last, self._unlogged = self._last is not None, None, 0
        return failed
