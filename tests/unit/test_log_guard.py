"""The log guard finds what it is meant to find, and a session it finds something in fails.

These tests plant fake secrets, so they keep them away from the real session guard: files
in a temporary directory outside the session's basetemp (or removed after use), and log
records on a logger that does not propagate to the root logger.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import log_guard
from tests.log_guard import GuardHandler, scan_file, scan_log_files

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
JWS = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhZ2VudDpyZXZpZXdlciJ9.c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
CLIENT_SECRET = "cbk_" + "A" * 20 + "-_" + "b" * 21
VAULT_TOKEN = "hvs.CAESIJ1abcdefghijklmnopqrstuv"
BAO_TOKEN = "s.zN95eq2ueMALv0fwABdSMEfE"


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory outside the session's basetemp, which the session guard scans."""
    with tempfile.TemporaryDirectory(prefix="log-guard-test-") as path:
        yield Path(path)


CLEAN_AUDIT_LINE = (
    '{"audit_id":"1763740000000-0","ts":"2026-11-21T10:00:00.000Z","type":"mint","agent":"reviewer",'
    '"jti":["Yk3t7x1fP0m2QbWcS9dJ4A"],"prev":"' + "0" * 64 + '","hash":"' + "ab" * 32 + '"}'
)


def test_every_kind_of_secret_is_found_with_file_and_line_and_never_printed(outside: Path) -> None:
    log = outside / "broker-1234.log"
    log.write_text(
        "\n".join(
            [
                "INFO: started",
                f"minted {JWS}",
                f"Authorization: Bearer {CLIENT_SECRET}",
                f"vault token={VAULT_TOKEN} and {BAO_TOKEN}",
                "X-Vault-Token: root-token-for-tests",
                CLEAN_AUDIT_LINE,
            ]
        )
    )

    findings = scan_file(log)

    assert [(f.line, f.what) for f in findings] == [
        (2, "capability token (compact JWS)"),
        (3, "client secret"),
        (4, "Vault token"),
        (4, "Vault token"),
        (5, "Vault dev root token"),
    ]
    assert all(f.where == str(log) for f in findings)
    report = log_guard.report(findings)
    assert f"{log}:2: capability token" in report
    for secret in (JWS, CLIENT_SECRET, VAULT_TOKEN, BAO_TOKEN, "root-token-for-tests"):
        assert secret not in report


def test_clean_broker_output_has_no_findings(outside: Path) -> None:
    log = outside / "broker-1.log"
    log.write_text(
        "INFO:     Uvicorn running on http://127.0.0.1:8700 (Press CTRL+C to quit)\n"
        "WARNING - broker.http - backend unavailable: vault: ConnectionError (request 9f1c2d)\n"
        f"{CLEAN_AUDIT_LINE}\n"
        "policy digest 06aea0657c7c4f1b2f3b26c02450, kid capbroker-v2, tests.servers.processes\n"
    )
    assert scan_file(log) == []


def test_registered_secret_is_found(outside: Path) -> None:
    secret = "capbroker-fault-0123456789abcdef"
    log = outside / "broker-2.log"
    log.write_text(f"token {secret}\n")
    assert scan_file(log) == []
    log_guard.forbid_in_logs(secret)
    try:
        assert [f.what for f in scan_file(log)] == ["a secret registered by a test"]
    finally:
        log_guard._forbidden.discard(secret)


def test_only_broker_logs_are_scanned(outside: Path) -> None:
    (outside / "a" / "b").mkdir(parents=True)
    (outside / "a" / "b" / "broker-9.log").write_text(f"{JWS}\n")
    (outside / "bao-9.log").write_text("Root Token: root-token-for-tests\n")  # the Vault server's own log
    (outside / "broker-9.yaml").write_text(f"{JWS}\n")
    assert [Path(f.where).name for f in scan_log_files(outside)] == ["broker-9.log"]


def test_handler_sees_messages_arguments_and_tracebacks() -> None:
    handler = GuardHandler()
    logger = logging.getLogger("tests.log_guard_probe")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # the session guard must not see these
    try:
        logger.debug("nothing here")
        logger.debug("header %s", CLIENT_SECRET)
        try:
            int(JWS)
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
    assert handler.records == 3
    assert [f.what for f in handler.findings] == ["client secret", "capability token (compact JWS)"]
    assert handler.findings[1].line > 1  # the token is in the traceback, not the message line


LEAKY_TESTS = f"""
import logging

def test_logs_a_token_at_info():
    logging.getLogger("leaky").info("minted %s", "{JWS}")

def test_broker_process_output(tmp_path):
    (tmp_path / "broker-4242.log").write_text("ok\\nAuthorization: Bearer {CLIENT_SECRET}\\n")
"""


def _run_with_guard(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tests: str) -> pytest.RunResult:
    """Run ``tests`` in a pytest subprocess with this suite's log-guard hooks."""
    pytester.makeconftest(
        "from tests.conftest import pytest_sessionstart, pytest_sessionfinish, pytest_terminal_summary"
    )
    pytester.makepyfile(test_probe=tests)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    try:
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    finally:  # the subprocess's basetemp is inside ours: take its planted log away from the session guard
        for planted in pytester.path.rglob(log_guard.LOG_GLOB):
            planted.unlink()


def test_a_session_that_logs_a_secret_fails_and_says_where(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _run_with_guard(pytester, monkeypatch, LEAKY_TESTS)

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*LOG GUARD: 2 secret(s) in log lines*",
            "*log record leaky (*test_probe.py:4):1: capability token (compact JWS) (eyJhbG...)*",
            "*broker-4242.log:2: client secret (cbk_AA...)*",
            "*2 passed*",  # every test passed, and yet the session fails
        ]
    )
    assert JWS not in result.stdout.str()
    assert CLIENT_SECRET not in result.stdout.str()
