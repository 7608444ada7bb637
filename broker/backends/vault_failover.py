"""Requests to an HA Vault/OpenBao go to the node that performs them (``vault_addr`` lists
the nodes: ``broker.vault_addrs``).

Every hvac client of the broker and the gateway is built with the first node's address
on a fail-fast session (``broker.backends.vault_clients.fail_fast_session``) whose
transport is a ``FailoverAdapter``: it sends each request to the node that answered last
and, in one pass over the nodes within the request's timeout, moves to the next node only
when the request was **not performed**:

- the connection was refused, or not made in time, or its TLS handshake failed;
- the node answered 503 (sealed, or a standby with no active node to forward to);
- the node answered 307 (a standby that cannot forward redirects to the active node it
  knows, which during an election is the dead one). Redirects are never followed: they
  would carry the token to whatever address the answer names.

Any other answer is Vault's answer, returned as it is. A connection that broke (or timed
out) after the request was sent may have been performed: it is sent to another node only
if the caller declared the request safe to send twice (``resend``: Transit sign, key
reads, token lookups, the gateway's KV reads). Token creates, logins and
``database/creds`` are never sent twice: a second one would leave a live credential no
one holds.

``one_pass`` is the decision, over a ``send`` callable (unit-tested with a fake transport
and clock); ``FailoverAdapter`` is its requests transport.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError
from urllib3.util.retry import Retry

__all__ = ["Attempt", "FailoverAdapter", "NoActiveNode", "NodeHint", "one_pass", "pass_order"]

log = logging.getLogger("broker.vault")

R = TypeVar("R")

#: the answers of a node that did not perform the request
NOT_PERFORMED_STATUS: Final = frozenset({307, 503})


class Attempt(enum.Enum):
    ANSWERED = "answered"  # the node's answer, whatever its status: the pass ends
    NOT_PERFORMED = "not performed"  # refused, not connected in time, 503, 307: the next node
    BROKEN = "broken"  # sent, then no answer: maybe performed; the next node only if resend


class NoActiveNode(requests.exceptions.ConnectionError):
    """No node performed the request: each was unreachable, sealed or a standby without a
    leader (its redirect is not followed)."""


class NodeHint:
    """The node that answered last, shared by the sessions of one client pool."""

    def __init__(self) -> None:
        self.index = 0  # where the next request starts
        self.answered = 0  # the node that answered last


def pass_order(count: int, start: int) -> tuple[int, ...]:
    """Every node once, from ``start`` on, wrapping around."""
    return tuple((start + i) % count for i in range(count))


def one_pass(
    count: int,
    start: int,
    send: Callable[[int, float], tuple[Attempt, R]],
    *,
    budget: float,
    resend: bool,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[int, Attempt, R]:
    """Try the nodes from ``start`` on, once each, within ``budget`` seconds; ``send(node,
    seconds_left)`` makes one attempt. Ends at the first answer, at a broken attempt
    unless ``resend``, when the budget is spent, or after the last node; returns the last
    attempt: its node, its kind and its result."""
    deadline = clock() + budget
    last: tuple[int, Attempt, R] | None = None
    for node in pass_order(count, start):
        left = deadline - clock()
        if last is not None and left <= 0:
            break
        kind, result = send(node, max(left, 0.0))
        last = (node, kind, result)
        if kind is Attempt.ANSWERED or (kind is Attempt.BROKEN and not resend):
            break
    assert last is not None  # noqa: S101 -- count >= 1: the first node is always tried
    return last


def _not_connected(error: requests.exceptions.RequestException) -> bool:
    """The request never reached the node (so it was not performed there)."""
    if isinstance(error, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return True
    cause = error.args[0] if error.args else None
    return isinstance(cause, MaxRetryError) and isinstance(cause.reason, NewConnectionError)


def _budget(timeout: Any) -> float:
    if timeout is None:
        return math.inf
    if isinstance(timeout, tuple):
        return float(sum(t for t in timeout if t is not None))
    return float(timeout)


class FailoverAdapter(HTTPAdapter):
    """A fail-fast transport (no retries, no redirects) over the listed nodes (module
    docstring). One per session; ``resend`` is set by the session's owner before each call."""

    def __init__(self, nodes: tuple[str, ...], hint: NodeHint | None = None, *, resend: bool = False) -> None:
        super().__init__(
            max_retries=Retry(total=0, read=False, redirect=False), pool_connections=len(nodes), pool_maxsize=1
        )
        self.nodes, self.hint, self.resend = nodes, hint or NodeHint(), resend

    def send(  # noqa: PLR0917 -- requests' own signature
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        url = request.url or ""
        base = next((node for node in self.nodes if url == node or url.startswith(node + "/")), None)
        if base is None or len(self.nodes) == 1:
            return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
        path = url[len(base) :]

        def attempt(node: int, left: float) -> tuple[Attempt, requests.Response | Exception]:
            sent = request.copy()
            sent.url = self.nodes[node] + path
            seconds = timeout if math.isinf(left) else min(_budget(timeout), left)
            try:
                response = super(FailoverAdapter, self).send(
                    sent, stream=stream, timeout=seconds, verify=verify, cert=cert, proxies=proxies
                )
            except requests.exceptions.RequestException as e:
                return (Attempt.NOT_PERFORMED if _not_connected(e) else Attempt.BROKEN), e
            if response.status_code in NOT_PERFORMED_STATUS:
                _ = response.content  # read (a few bytes): its connection goes back to the pool
                return Attempt.NOT_PERFORMED, response
            return Attempt.ANSWERED, response

        start = self.hint.index % len(self.nodes)
        node, kind, result = one_pass(len(self.nodes), start, attempt, budget=_budget(timeout), resend=self.resend)
        if kind is Attempt.ANSWERED:
            if node != self.hint.answered:
                log.info("vault: %s answers now (before: %s)", self.nodes[node], self.nodes[self.hint.answered])
            self.hint.index = self.hint.answered = node
        else:
            self.hint.index = (node + 1) % len(self.nodes)  # the next request starts elsewhere
        if isinstance(result, Exception):
            raise result
        if result.status_code == 307:
            raise NoActiveNode("no node performed the request (a standby without a leader)", request=request)
        return result
