"""What a call to the broker can fail with, on the agent's side.

BrokerError (broker.errors)
└── BrokerCallFailed          the broker's problem+json ``code`` (``scope_not_granted``,
    │                         ``rate_limited``, ``backend_unavailable``, ...), its status,
    │                         request id and ``Retry-After``
    └── BrokerUnreachable     ``broker_unreachable``: no answer (network, timeout) or one
                              that is not the broker's API
"""

from __future__ import annotations

from broker.errors import BrokerError


class BrokerCallFailed(BrokerError):
    """The broker refused the call; ``code`` is its stable problem+json code."""

    code = "broker_call_failed"

    def __init__(
        self, code: str, *, status: int, request_id: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(f"the broker answered {status} {code}" + (f" (request {request_id})" if request_id else ""))
        self.code = code
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after


class BrokerUnreachable(BrokerCallFailed):
    """No usable answer from the broker (connection, timeout, a body that is not its API)."""

    def __init__(self, reason: str) -> None:
        super().__init__("broker_unreachable", status=0)
        self.reason = reason
        self.args = (reason,)
