"""Redaction of free text, in linear time: no token, client secret or Vault token survives.

Every secret shape the broker knows is made of the characters ``[A-Za-z0-9_.-]``: a
compact JWS (``eyJ…`` with two dots), a client secret (``cbk_`` and at least 8 more
characters, whole or in part) and a Vault/OpenBao token (``hvs.``, ``hvb.``, ``s.`` or
``b.`` at a word start, then at least 20 letters or digits). So the text is cut into
maximal runs of those characters (one pass of one character class: nothing to backtrack
over), and each run is tested with ``str.find``/``str.count`` scans that never look at a
character more than a fixed number of times. From the start of the first secret shape in a
run to the end of that run, the run is replaced by ``[redacted]``: what follows a secret in
the same run (a signature, a namespace) goes with it.

The old shape was one backtracking regex over the whole text: quadratic on a run of
``eyJ`` repeats, which an unauthenticated caller could send as an unknown field name
(issue 11, reproduction 1). ``cut`` bounds the text before it is scanned at all.
"""

from __future__ import annotations

import re
from typing import Final

REDACTED: Final = "[redacted]"
CUT_MARK: Final = "…[cut]"
#: Free text longer than this is cut before it is redacted or stored.
MAX_TEXT: Final = 512

_RUN = re.compile(r"[A-Za-z0-9_.-]+")  # one character class, maximal runs: linear
_RUN_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_WORD: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_ALNUM: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_SECRET_TAIL: Final = 8  # cbk_ and at least this many of [A-Za-z0-9_-]
_VAULT_TAIL: Final = 20  # a Vault token's prefix and at least this many letters or digits


def _jws_start(run: str) -> int:
    """Where a compact JWS starts in ``run``: ``eyJ`` with two dots after it, or -1."""
    start = run.find("eyJ")
    if start < 0:
        return -1
    first = run.find(".", start)
    if first < 0 or run.find(".", first + 1) < 0:
        return -1  # no later eyJ has more dots after it than the first one
    return start


def _secret_start(run: str) -> int:
    """Where ``cbk_`` followed by 8 characters other than ``.`` starts, or -1."""
    at = run.find("cbk_")
    while at >= 0:
        tail = run[at + 4 : at + 4 + _SECRET_TAIL]
        dot = tail.find(".")
        if dot < 0 and len(tail) == _SECRET_TAIL:
            return at
        # the next candidate cannot start before the dot (or the end) that spoiled this one
        at = run.find("cbk_", at + 4 + (dot if dot >= 0 else len(tail)))
    return -1


def _vault_start(run: str) -> int:
    """Where a Vault token starts: a prefix at a word start, ``.``, 20 letters or digits."""
    dot = run.find(".")
    while dot >= 0:
        for prefix in ("hvs", "hvb", "s", "b"):
            begin = dot - len(prefix)
            if (
                begin >= 0
                and run.startswith(prefix, begin)
                and (begin == 0 or run[begin - 1] not in _WORD)
                and _alnum_run(run, dot + 1, _VAULT_TAIL)
            ):
                return begin
        dot = run.find(".", dot + 1)
    return -1


def _alnum_run(run: str, at: int, n: int) -> bool:
    tail = run[at : at + n]
    return len(tail) == n and all(ch in _ALNUM for ch in tail)


def _redact_run(run: str) -> str:
    starts = [s for s in (_jws_start(run), _secret_start(run), _vault_start(run)) if s >= 0]
    if not starts:
        return run
    return run[: min(starts)] + REDACTED


def redact_text(text: str) -> str:
    """``text`` with every token-, secret- or Vault-token-shaped part replaced."""
    # every shape holds a "." or "cbk_": a string with neither is left as it is
    if "." not in text and "cbk_" not in text:
        return text
    return _RUN.sub(lambda m: _redact_run(m.group()), text)


def cut(text: str, limit: int = MAX_TEXT) -> str:
    """At most ``limit`` characters of ``text`` (plus a marker when cut). A run of token
    characters that the cut splits is dropped whole: half a token is not left for the
    redactor to miss."""
    if len(text) <= limit:
        return text
    kept = text[:limit]
    if text[limit] in _RUN_CHARS:
        kept = kept.rstrip("".join(sorted(_RUN_CHARS)))
    return kept + CUT_MARK
