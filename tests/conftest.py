from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from broker.token import KeyRing, LocalSigner
from tests import log_guard


@pytest.fixture(scope="session")
def ed_signer() -> LocalSigner:
    return LocalSigner(ed25519.Ed25519PrivateKey.generate(), "ed-1")


@pytest.fixture(scope="session")
def es_signer() -> LocalSigner:
    return LocalSigner(ec.generate_private_key(ec.SECP256R1()), "es-1")


@pytest.fixture(scope="session")
def ring(ed_signer: LocalSigner, es_signer: LocalSigner) -> KeyRing:
    """EdDSA key first (it signs), ES256 second (it verifies too)."""
    return KeyRing([ed_signer, es_signer])


# ---------------------------------------------------------------- the log guard
# No token, client secret or Vault token in any log line of the session: log records in
# this process, and the broker processes' output files (tests/log_guard.py).

_LOG_GUARD = pytest.StashKey[log_guard.SessionGuard]()
_LOG_GUARD_REPORT = pytest.StashKey[str]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[_LOG_GUARD] = log_guard.SessionGuard.install()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    guard = session.stash.get(_LOG_GUARD, None)
    if guard is None:
        return
    guard.uninstall()
    factory = getattr(session.config, "_tmp_path_factory", None)  # the session's basetemp
    roots = [factory.getbasetemp()] if factory is not None else []
    findings = guard.findings(roots)
    if findings:
        session.config.stash[_LOG_GUARD_REPORT] = log_guard.report(findings)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    text = config.stash.get(_LOG_GUARD_REPORT, None)
    if text:
        terminalreporter.section("log guard", red=True, bold=True)
        terminalreporter.write_line(text)
