"""Refusals beyond a caller's allowance are counted, not stored one by one.

A caller (an agent, a service, or ``UNIDENTIFIED`` for refusals whose caller the broker
could not name) has an allowance: ``count`` refusals stored per window of ``per_seconds``.
Within it each refusal is stored as its own event; beyond it a refusal is only counted,
and when the window closes the count becomes one summary event (``"summary": true``,
``"count"``, ``"codes"``). So no caller grows the audit stream by more than its allowance
plus one summary per window, whatever it sends, rate-limit refusals (429) included.

Pure: the caller passes ``now``. One ledger per broker process; callers are policy
names, so the table is bounded by the policy (an entry goes when its window closes).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Final

#: Refusals stored per window for a caller without a rate of its own.
DEFAULT_ALLOWANCE: Final = (60, 60)
UNIDENTIFIED: Final = "-"


@dataclass(frozen=True, slots=True)
class Allowance:
    caller: str  # "agent:<name>", "service:<name>" or UNIDENTIFIED
    count: int
    per_seconds: int


@dataclass(frozen=True, slots=True)
class Summary:
    caller: str
    start: float
    end: float
    count: int  # refusals counted and not stored
    codes: dict[str, int]


@dataclass(slots=True)
class _Window:
    start: float
    end: float
    stored: int = 0
    codes: Counter[str] = field(default_factory=Counter)

    def summary(self, caller: str) -> Summary | None:
        total = sum(self.codes.values())
        return Summary(caller, self.start, self.end, total, dict(sorted(self.codes.items()))) if total else None


class RefusalLedger:
    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}
        self._next_end = float("inf")  # the earliest end among windows with counted refusals

    def admit(self, allowance: Allowance, code: str, now: float) -> tuple[bool, list[Summary]]:
        """Whether to store this refusal, and the summaries of windows closed by ``now``."""
        closed = self.due(now)
        window = self._windows.get(allowance.caller)
        if window is not None and window.end <= now:
            del self._windows[allowance.caller]
            ended = window.summary(allowance.caller)
            closed.extend([ended] if ended is not None else [])
            window = None
        if window is None:
            window = self._windows[allowance.caller] = _Window(now, now + allowance.per_seconds)
        if window.stored < allowance.count:
            window.stored += 1
            return True, closed
        window.codes[code] += 1
        self._next_end = min(self._next_end, window.end)
        return False, closed

    def due(self, now: float) -> list[Summary]:
        """Close every window that ended by ``now``: the summaries of those that counted.
        Cheap while nothing counted is due (one comparison: it runs for every event)."""
        if now < self._next_end:
            return []
        out: list[Summary] = []
        self._next_end = float("inf")
        for caller, window in list(self._windows.items()):
            if window.end <= now:
                del self._windows[caller]
                summary = window.summary(caller)
                if summary is not None:
                    out.append(summary)
            elif window.codes:
                self._next_end = min(self._next_end, window.end)
        return out

    def restore(self, summaries: list[Summary]) -> None:
        """Summaries that could not be stored are counted again, so no count is lost."""
        for s in summaries:
            window = self._windows.setdefault(s.caller, _Window(s.start, s.end))
            window.codes.update(s.codes)
            self._next_end = min(self._next_end, window.end)
