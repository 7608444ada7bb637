"""Redaction of free text, in linear time: no token, client secret or Vault token survives.

Every secret shape the broker knows is made of the characters ``[A-Za-z0-9_.-]``: a
compact JWS (``eyJ…`` with two dots), a client secret (``cbk_`` and at least 8 more
characters, whole or in part) and a Vault/OpenBao token (``hvs.``, ``hvb.``, ``s.`` or
``b.`` at a word start, then at least 20 letters or digits). So the text is cut into
maximal runs of those characters (one pass of one character class: nothing to backtrack
over), and each run is tested with ``str.find`` and with searches for patterns of bounded
length (a fixed amount of work at each position): no character is looked at more than a
fixed number of times. From the start of the first secret shape in a
run to the end of that run, the run is replaced by ``[redacted]``: what follows a secret in
the same run (a signature, a namespace) goes with it.

The old shape was one backtracking regex over the whole text: quadratic on a run of
``eyJ`` repeats, which an unauthenticated caller could send as an unknown field name
(``tests/unit/test_audit_redaction.py`` holds the linear one to it, and fast on such
input). ``cut`` bounds the text before it is scanned at all.
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
# Bounded repetitions only: at each position a fixed amount of work, so a search is linear.
_SECRET = re.compile(r"(?i:cbk)_[A-Za-z0-9_-]{8}")  # a client secret, whole or in part, in any case
_VAULT = re.compile(r"(?<![A-Za-z0-9_])(?:hvs|hvb|s|b)\.[A-Za-z0-9]{20}")  # at a word start
_SHORTEST: Final = len("eyJ..")  # no secret shape is shorter


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
    found = _SECRET.search(run)
    return -1 if found is None else found.start()


def _vault_start(run: str) -> int:
    """Where a Vault token starts: a prefix at a word start, ``.``, 20 letters or digits."""
    found = _VAULT.search(run)
    return -1 if found is None else found.start()


def _redact_run(match: re.Match[str]) -> str:
    run = match.group()
    if len(run) < _SHORTEST or ("." not in run and "cbk_" not in run.lower()):
        return run
    starts = [s for s in (_jws_start(run), _secret_start(run), _vault_start(run)) if s >= 0]
    if not starts:
        return run
    return run[: min(starts)] + REDACTED


def redact_text(text: str) -> str:
    """``text`` with every token-, secret- or Vault-token-shaped part replaced."""
    # the common case, in linear scans only: no eyJ (or no dot), no cbk_, no Vault shape
    if ("eyJ" not in text or "." not in text) and "cbk_" not in text.lower() and _VAULT.search(text) is None:
        return text
    return _RUN.sub(_redact_run, text)


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
