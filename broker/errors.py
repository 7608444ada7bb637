"""The one error tree of capbroker. Every error carries a stable machine ``code``.

Domain errors know nothing of HTTP; the service maps codes to status codes in one place.

    BrokerError                       code
    ├── RequestError
    │   ├── InvalidRequest            invalid_request
    │   ├── UnknownScope              unknown_scope
    │   ├── TtlExceedsMax             ttl_exceeds_max
    │   ├── InvalidDpopProof          invalid_dpop_proof (RFC 9449)
    │   └── PayloadTooLarge           payload_too_large
    ├── AccessError
    │   ├── Unauthenticated           unauthenticated
    │   ├── Forbidden                 forbidden
    │   │   └── TaskRevoked           task_revoked
    │   ├── ScopeNotGranted           scope_not_granted
    │   └── AgentRevoked              agent_revoked
    ├── RateLimited                   rate_limited
    ├── BackendUnavailable            backend_unavailable
    ├── GatewayError                  (the gateway's refusals, docs/gateway.md)
    │   ├── CapabilityDenied          capability_denied
    │   ├── BudgetExhausted           budget_exhausted
    │   ├── UpstreamUnavailable       upstream_unavailable
    │   └── UpstreamTimeout           upstream_timeout
    ├── PolicyInvalid                 policy_invalid   (carries every PolicyIssue)
    └── TokenRejected                 one of TOKEN_REJECTION_CODES

Messages are for logs and the audit stream. Callers outside the broker get the code and a
generic sentence, never the message, unless the error is ``told()``: a use case marks an
error whose reason is about the authenticated caller's own request (its field, scope, cap
or task) and holds nothing about anyone else; that reason is then the problem's
``detail``. A message quotes what a caller sent only through
``excerpt`` (a bounded prefix), and is itself cut at ``MAX_REASON`` characters: no request
makes a reason, and so the work on it, larger than that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, Self, get_args

__all__ = [
    "TOKEN_REJECTION_CODES",
    "RejectionCode",
    "TaskRevoked",
    "AccessError",
    "AgentRevoked",
    "BackendUnavailable",
    "BrokerError",
    "BudgetExhausted",
    "CapabilityDenied",
    "GatewayError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "Forbidden",
    "InvalidDpopProof",
    "InvalidRequest",
    "PayloadTooLarge",
    "PolicyInvalid",
    "PolicyIssue",
    "RateLimited",
    "RequestError",
    "ScopeNotGranted",
    "TokenRejected",
    "TtlExceedsMax",
    "Unauthenticated",
    "UnknownScope",
    "error_for_code",
    "excerpt",
    "quoted",
]

#: The most characters of a caller's text that one quote in a reason holds.
MAX_QUOTE: Final = 64
#: The most characters of any reason.
MAX_REASON: Final = 1024
#: The most caller-supplied values (field names, actions) one reason lists.
MAX_QUOTED: Final = 4
_CUT: Final = "…[cut]"


def excerpt(value: object, limit: int = MAX_QUOTE) -> str:
    """A caller-supplied value quoted for a reason (``repr``): at most ``limit`` characters
    of a string; a small scalar as it is; anything else by its type name only."""
    if value is None or isinstance(value, bool | float) or (isinstance(value, int) and value.bit_length() <= 64):
        return repr(value)
    if not isinstance(value, str):
        return f"<{type(value).__name__}>"
    return repr(value) if len(value) <= limit else repr(value[:limit]) + _CUT


def quoted(values: Sequence[object], *, most: int = MAX_QUOTED) -> str:
    """The first ``most`` of ``values`` (caller-supplied), each an ``excerpt``; the rest
    only counted: bounded whatever the caller sent."""
    shown = ", ".join(excerpt(v) for v in values[:most])
    more = len(values) - most
    return f"[{shown}]" + (f" and {more} more" if more > 0 else "")


class BrokerError(Exception):
    """Base of every error capbroker raises on purpose."""

    code: str = "internal_error"
    #: the reason may be shown to the caller (see ``told``)
    for_caller: bool = False

    def __init__(self, reason: str = "") -> None:
        if len(reason) > MAX_REASON:
            reason = reason[:MAX_REASON] + _CUT
        super().__init__(reason or self.code)
        self.reason = reason or self.code

    def told(self) -> Self:
        """Mark the reason as fit for the authenticated caller it is about (its own request)."""
        self.for_caller = True
        return self


class RequestError(BrokerError):
    """The request itself is wrong."""


class InvalidRequest(RequestError):
    code = "invalid_request"


class UnknownScope(RequestError):
    code = "unknown_scope"


class TtlExceedsMax(RequestError):
    code = "ttl_exceeds_max"


class InvalidDpopProof(RequestError):
    """A DPoP proof (RFC 9449) is required and missing, or presented and not valid."""

    code = "invalid_dpop_proof"


class PayloadTooLarge(RequestError):
    code = "payload_too_large"


class AccessError(BrokerError):
    """Who is asking, or what they may have, says no."""


class Unauthenticated(AccessError):
    code = "unauthenticated"


class Forbidden(AccessError):
    code = "forbidden"


class TaskRevoked(Forbidden):
    """The caller's task is revoked: it gets no new token (a ``Forbidden``, with its own code)."""

    code = "task_revoked"


class ScopeNotGranted(AccessError):
    code = "scope_not_granted"


class AgentRevoked(AccessError):
    """The agent is suspended by the kill switch until an admin reinstates it."""

    code = "agent_revoked"


class RateLimited(BrokerError):
    code = "rate_limited"

    def __init__(self, reason: str = "", *, retry_after: float = 1.0) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class BackendUnavailable(BrokerError):
    """Vault or Redis is down, slow or sealed: nothing is issued, nothing is skipped."""

    code = "backend_unavailable"

    def __init__(self, reason: str = "", *, retry_after: float = 1.0) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class GatewayError(BrokerError):
    """A request the gateway refuses to forward, or could not forward (docs/gateway.md)."""


class CapabilityDenied(GatewayError):
    """A valid token that does not allow this request (or a request no token can allow)."""

    code = "capability_denied"


class BudgetExhausted(GatewayError):
    code = "budget_exhausted"


class UpstreamUnavailable(GatewayError):
    code = "upstream_unavailable"


class UpstreamTimeout(GatewayError):
    code = "upstream_timeout"


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    """One problem in a policy file, located for an admin to fix."""

    file: str
    line: int
    message: str
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity}: {self.message}"


class PolicyInvalid(BrokerError):
    code = "policy_invalid"

    def __init__(self, issues: list[PolicyIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("; ".join(str(i) for i in self.issues))


def error_for_code(code: str, reason: str) -> BrokerError:
    """The error of the tree whose code is ``code`` (a policy ``Deny`` becomes an error)."""
    for cls in (
        InvalidRequest,
        UnknownScope,
        TtlExceedsMax,
        InvalidDpopProof,
        Unauthenticated,
        Forbidden,
        ScopeNotGranted,
        AgentRevoked,
    ):
        if cls.code == code:
            return cls(reason)
    raise ValueError(f"no request error has the code {code!r}")


RejectionCode = Literal[
    "malformed",  # not a well-formed compact JWS of our profile
    "too_large",  # over the size cap
    "bad_header",  # header fields outside the profile (alg, typ, kid, crit, jwk, ...)
    "unknown_key",  # no key with that kid
    "bad_signature",  # signature does not verify
    "outside_key_window",  # signed by a key outside the window it may sign in (a stolen session key)
    "bad_claims",  # claims missing, of the wrong type, or out of the grammar
    "expired",
    "not_yet_valid",
    "ttl_exceeds_max",
    "wrong_issuer",
    "wrong_audience",
    "revoked",
    "revocation_unavailable",  # fail closed: the revocation state could not be read
    "keys_unavailable",  # fail closed: no fresh enough key set
    "not_allowed",  # valid token, but it does not allow the requested access
    "proof_required",  # a DPoP-bound token (cnf) presented without a DPoP proof
    "bad_proof",  # a DPoP proof that is malformed, stale, replayed, for another key or request
]
"""Why a capability token was refused: one stable word (mypy checks every ``TokenRejected``)."""

TOKEN_REJECTION_CODES: Final[frozenset[str]] = frozenset(get_args(RejectionCode))


class TokenRejected(BrokerError):
    """A capability token was refused. ``code`` says why, in one stable word."""

    code = "token_rejected"

    def __init__(self, code: RejectionCode, reason: str = "") -> None:
        if code not in TOKEN_REJECTION_CODES:
            raise ValueError(f"unknown rejection code {code!r}")
        super().__init__(reason or code)
        self.code = code
