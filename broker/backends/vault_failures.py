"""What went wrong talking to Vault, in words an operator can act on.

``describe`` turns an hvac or requests exception into one line naming the cause class:
unreachable, no answer in time, TLS (and the certificate problem), sealed or standby, no
active node among an HA cluster's nodes, the
broker's token refused (with the policy hint), or another HTTP status. Never Vault's
response body (it may echo request data) and never a token.
"""

from __future__ import annotations

import re
from typing import Final

import hvac.exceptions
import requests

from broker.backends.vault_failover import NoActiveNode
from broker.errors import BackendUnavailable

_TLS_CAUSE: Final = re.compile(r"(certificate verify failed[^'\"()]*|wrong version number|hostname mismatch[^'\"()]*)")
_STATUS: Final = {
    hvac.exceptions.InvalidRequest: 400,
    hvac.exceptions.Unauthorized: 401,
    hvac.exceptions.Forbidden: 403,
    hvac.exceptions.InvalidPath: 404,
    hvac.exceptions.RateLimitExceeded: 429,
    hvac.exceptions.InternalServerError: 500,
    hvac.exceptions.BadGateway: 502,
    hvac.exceptions.VaultNotInitialized: 501,
    hvac.exceptions.VaultDown: 503,
}


def describe(error: BaseException, *, timeout: float) -> str:
    """One line for a log: what kind of failure ``error`` is, and its status or cause."""
    if isinstance(error, BackendUnavailable):  # already said in these words (a login, ...)
        return error.reason
    if isinstance(error, requests.exceptions.SSLError):
        match = _TLS_CAUSE.search(str(error))
        cause = match.group(1).strip() if match else "handshake failed"
        return f"TLS failure ({cause}): check vault_ca_file and the certificate's names"
    if isinstance(error, requests.exceptions.Timeout | TimeoutError):
        return f"no answer within {timeout:g}s (backend_timeout)"
    if isinstance(error, NoActiveNode):
        return "no node performed the request (no active node: an election, or every node down or sealed)"
    if isinstance(error, requests.exceptions.ConnectionError):
        return "unreachable (connection refused, reset or name not resolved)"
    if isinstance(error, hvac.exceptions.VaultDown):
        return "503: Vault is sealed or has no active node"
    if isinstance(error, hvac.exceptions.Forbidden):
        return "403 permission denied: the broker's token is invalid, expired or lacks the capbroker policy"
    for kind, status in _STATUS.items():
        if isinstance(error, kind):
            return f"{status} {type(error).__name__}"
    if isinstance(error, hvac.exceptions.VaultError):
        return f"{type(error).__name__}"
    return f"client error {type(error).__name__}"
