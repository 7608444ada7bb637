"""Which node an HA Vault request goes to next, and when the pass stops (``vault_failover``).

``one_pass`` runs over a fake transport and a fake clock; ``FailoverAdapter`` over a fake
``HTTPAdapter.send`` (no sockets): which URLs it sends, which answers it returns or raises,
and where the next request starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from broker.backends.vault_clients import fail_fast_session
from broker.backends.vault_failover import Attempt, FailoverAdapter, NoActiveNode, NodeHint, one_pass, pass_order

A, N, B = Attempt.ANSWERED, Attempt.NOT_PERFORMED, Attempt.BROKEN


class FakeTransport:
    """Node i answers ``kinds[i]``; each attempt takes ``cost`` seconds of the fake clock."""

    def __init__(self, kinds: list[Attempt], cost: float = 0.0) -> None:
        self.kinds, self.cost, self.now, self.sent = kinds, cost, 0.0, []
        self.lefts: list[float] = []

    def clock(self) -> float:
        return self.now

    def send(self, node: int, left: float) -> tuple[Attempt, str]:
        self.sent.append(node)
        self.lefts.append(left)
        self.now += self.cost
        return self.kinds[node], f"node{node}"


def run(kinds: list[Attempt], *, start: int = 0, resend: bool = False, budget: float = 1.0, cost: float = 0.0) -> Any:
    fake = FakeTransport(kinds, cost)
    node, kind, result = one_pass(len(kinds), start, fake.send, budget=budget, resend=resend, clock=fake.clock)
    return fake.sent, (node, kind, result), fake.lefts


def test_every_node_once_from_the_start_wrapping_around() -> None:
    assert pass_order(3, 0) == (0, 1, 2)
    assert pass_order(3, 2) == (2, 0, 1)
    assert pass_order(1, 0) == (0,)


def test_the_node_that_answers_ends_the_pass() -> None:
    sent, last, _ = run([A, A, A], start=1)
    assert sent == [1]
    assert last == (1, A, "node1")


def test_a_request_not_performed_moves_to_the_next_node() -> None:
    sent, last, _ = run([N, N, A])
    assert sent == [0, 1, 2]
    assert last == (2, A, "node2")


def test_one_pass_only_when_no_node_performs_it() -> None:
    sent, last, _ = run([N, N, N], start=1)
    assert sent == [1, 2, 0]
    assert last == (0, N, "node0")


def test_a_broken_request_is_not_sent_again_unless_declared_safe() -> None:
    sent, last, _ = run([B, A, A])
    assert sent == [0]
    assert last == (0, B, "node0")
    sent, last, _ = run([B, A, A], resend=True)
    assert sent == [0, 1]
    assert last == (1, A, "node1")


def test_the_pass_stops_when_the_budget_is_spent() -> None:
    sent, last, lefts = run([N, N, A], budget=1.0, cost=0.6)
    assert sent == [0, 1]  # 1.2 s spent after two: the third is not tried
    assert last == (1, N, "node1")
    assert lefts == [1.0, pytest.approx(0.4)]  # each attempt gets what is left


def test_the_first_node_is_tried_even_with_no_time_left() -> None:
    sent, _, lefts = run([A], budget=0.0)
    assert sent == [0]
    assert lefts == [0.0]


# ---------------------------------------------------------------------- the adapter

NODES = ("http://n0:8200", "http://n1:8200", "http://n2:8200")


def refused() -> Exception:
    return requests.exceptions.ConnectionError(MaxRetryError(None, "/", NewConnectionError(None, "refused")))  # type: ignore[arg-type]


def reset() -> Exception:
    return requests.exceptions.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError()))


def answer(status: int) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = b"{}"
    return response


@pytest.fixture
def fake_nodes(monkeypatch: pytest.MonkeyPatch) -> dict[str, Callable[[], Any]]:
    """Behaviour per node host; records the URLs sent in ``behaviour["sent"]``."""
    behaviour: dict[str, Any] = {"sent": []}

    def send(self: HTTPAdapter, request: requests.PreparedRequest, **_: Any) -> requests.Response:
        behaviour["sent"].append(request.url)
        host = (request.url or "").split("/")[2].split(":")[0]
        outcome = behaviour[host]()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(HTTPAdapter, "send", send)
    return behaviour


def get(adapter: FailoverAdapter, path: str = "/v1/transit/keys/k") -> requests.Response:
    session = requests.Session()
    session.mount("http://", adapter)
    return session.get(NODES[0] + path, timeout=1.0, allow_redirects=False)


def test_the_adapter_sends_the_path_to_the_next_node_and_starts_there_next_time(fake_nodes: Any) -> None:
    fake_nodes.update(n0=refused, n1=lambda: answer(503), n2=lambda: answer(200))
    hint = NodeHint()
    assert get(FailoverAdapter(NODES, hint)).status_code == 200
    assert fake_nodes["sent"] == [f"{n}/v1/transit/keys/k" for n in NODES]
    assert hint.index == 2
    fake_nodes["sent"].clear()
    assert get(FailoverAdapter(NODES, hint)).status_code == 200  # another session of the same pool
    assert fake_nodes["sent"] == ["http://n2:8200/v1/transit/keys/k"]


def test_any_other_answer_is_vaults_answer(fake_nodes: Any) -> None:
    fake_nodes.update(n0=lambda: answer(403), n1=lambda: answer(200), n2=lambda: answer(200))
    assert get(FailoverAdapter(NODES)).status_code == 403
    assert len(fake_nodes["sent"]) == 1


def test_a_redirect_from_every_node_is_no_active_node_and_is_never_followed(fake_nodes: Any) -> None:
    fake_nodes.update(n0=lambda: answer(307), n1=lambda: answer(307), n2=lambda: answer(307))
    hint = NodeHint()
    with pytest.raises(NoActiveNode):
        get(FailoverAdapter(NODES, hint))
    assert len(fake_nodes["sent"]) == 3
    assert hint.index == 0  # after the last tried (n2): the next request starts at n0


def test_sealed_everywhere_returns_the_last_503(fake_nodes: Any) -> None:
    fake_nodes.update(n0=lambda: answer(503), n1=lambda: answer(503), n2=lambda: answer(503))
    assert get(FailoverAdapter(NODES)).status_code == 503


def test_a_connection_broken_mid_request_is_raised_unless_the_request_is_safe(fake_nodes: Any) -> None:
    fake_nodes.update(n0=reset, n1=lambda: answer(200), n2=lambda: answer(200))
    with pytest.raises(requests.exceptions.ConnectionError):
        get(FailoverAdapter(NODES))  # a token create: never twice
    assert len(fake_nodes["sent"]) == 1
    fake_nodes["sent"].clear()
    assert get(FailoverAdapter(NODES, resend=True)).status_code == 200  # a sign or a read
    assert len(fake_nodes["sent"]) == 2


def test_a_url_outside_the_nodes_is_sent_as_it_is(fake_nodes: Any) -> None:
    fake_nodes.update(other=lambda: answer(200))
    session = requests.Session()
    session.mount("http://", FailoverAdapter(NODES))
    assert session.get("http://other:1/x", timeout=1.0).status_code == 200
    assert fake_nodes["sent"] == ["http://other:1/x"]


def test_the_fail_fast_session_of_a_list_fails_over(fake_nodes: Any) -> None:
    fake_nodes.update(n0=refused, n1=lambda: answer(200), n2=lambda: answer(200))
    session = fail_fast_session(verify=True, addr=",".join(NODES))
    assert session.get(NODES[0] + "/v1/sys/health", timeout=1.0).status_code == 200
    assert fake_nodes["sent"][-1] == "http://n1:8200/v1/sys/health"


def test_no_active_node_is_described_in_words_an_operator_can_act_on() -> None:
    from broker.backends.vault_failures import describe

    assert describe(NoActiveNode("x"), timeout=1.0).startswith("no node performed the request (no active node")
