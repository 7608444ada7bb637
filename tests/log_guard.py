"""The no-secrets-in-logs guard for the whole test session (SECURITY.md: what is never logged).

Two sources are scanned:

- every log record emitted in the pytest process, formatted with its traceback, by a
  handler on the root logger installed for the whole session (the root logger is opened
  to DEBUG for the session, so library debug lines are seen too);
- every ``broker-*.log`` under the session's basetemp: the stdout/stderr of the real
  ``broker serve`` processes, including their JSON audit lines. The OpenBao servers' own
  logs (``bao-*.log``) are not ours and are not scanned.

A finding is a compact JWS (a capability token), a client secret (``cbk_`` + 43
base64url characters), a Vault/OpenBao token (``s.``, ``hvs.``, ``b.``, ``hvb.``), the dev
server's root token, or any string a test registered with ``forbid_in_logs``. Findings
fail the session (``tests/conftest.py`` wires the hooks) with file and line, never the
secret itself.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.servers.processes import ROOT_TOKEN

PATTERNS: dict[str, re.Pattern[str]] = {
    "capability token (compact JWS)": re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"),
    "client secret": re.compile(r"cbk_[A-Za-z0-9_-]{43}"),
    "Vault token": re.compile(r"\b(?:s|hvs|b|hvb)\.[A-Za-z0-9]{20,}"),
    "Vault dev root token": re.compile(re.escape(ROOT_TOKEN)),
}
LOG_GLOB = "broker-*.log"

_forbidden: set[str] = set()


def forbid_in_logs(secret: str) -> None:
    """Also look for ``secret`` (a credential whose shape no pattern knows, such as a Vault
    token with a chosen id) in every log line of the session."""
    if len(secret) < 8:
        raise ValueError("too short to search for without false alarms")
    _forbidden.add(secret)


@dataclass(frozen=True, slots=True)
class Finding:
    where: str  # a file path, or "log record <logger name>"
    line: int  # 1-based line in the file or in the formatted record
    what: str  # which pattern matched
    hint: str  # the first characters of the match, enough to find it, not to use it

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.what} ({self.hint}...)"


def scan_text(text: str, where: str) -> list[Finding]:
    findings = []
    for number, line in enumerate(text.splitlines(), start=1):
        for what, pattern in PATTERNS.items():
            findings.extend(Finding(where, number, what, m.group(0)[:6]) for m in pattern.finditer(line))
        findings.extend(
            Finding(where, number, "a secret registered by a test", secret[:6])
            for secret in _forbidden
            if secret in line
        )
    return findings


def scan_file(path: Path) -> list[Finding]:
    return scan_text(path.read_text(errors="replace"), str(path))


def scan_log_files(root: Path) -> list[Finding]:
    """Every ``broker-*.log`` under ``root`` (the broker processes' output)."""
    findings: list[Finding] = []
    for path in sorted(root.rglob(LOG_GLOB)):
        if path.is_file():
            findings.extend(scan_file(path))
    return findings


class GuardHandler(logging.Handler):
    """Formats every record it sees (message, exception and stack) and keeps the findings."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.records = 0
        self.findings: list[Finding] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 -- a record that cannot be formatted is not ours to fail on
            return
        self.records += 1
        self.findings.extend(scan_text(text, f"log record {record.name} ({record.pathname}:{record.lineno})"))


@dataclass
class SessionGuard:
    handler: GuardHandler
    root_level: int

    @classmethod
    def install(cls) -> SessionGuard:
        root = logging.getLogger()
        guard = cls(GuardHandler(), root.level)
        root.addHandler(guard.handler)
        root.setLevel(logging.DEBUG)
        return guard

    def uninstall(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self.root_level)

    def findings(self, log_roots: Iterable[Path]) -> list[Finding]:
        found = list(self.handler.findings)
        for root in log_roots:
            found.extend(scan_log_files(root))
        return found


def report(findings: list[Finding]) -> str:
    lines = [f"LOG GUARD: {len(findings)} secret(s) in log lines (tokens, client secrets, Vault tokens):"]
    lines.extend(f"  {f}" for f in findings[:50])
    if len(findings) > 50:
        lines.append(f"  ... and {len(findings) - 50} more")
    return "\n".join(lines)
