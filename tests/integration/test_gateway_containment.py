"""Containment (SPEC 9, issue 15): the first request a valid token does not allow is
reported to the broker (``POST /v1/tasks/{task}/contain`` with the gateway's service key
and the token as evidence); the agent gets its 403 whatever the broker answers.

End to end on the real broker: the report revokes the task, and every later request of
the task is 401 ``revoked`` at the gateway (through the revocation feed).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.gateway_stack import GatewayStack, own_stack
from tests.servers.processes import BaoServer

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]


@pytest.fixture(scope="module")
def stack(bao_server: BaoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    with own_stack(tmp_path_factory.mktemp("gateway-contain"), bao_server) as built:
        yield built


def test_a_denied_request_is_reported_once_and_the_agent_still_gets_403(stack: GatewayStack) -> None:
    token = stack.token("contain-report", ["gw-api"])
    status, headers, body = stack.request("DELETE", "/http/api.test/v1/items", token=token)
    assert (status, stack.refused(403, body)) == (403, "capability_denied")
    line = stack.audit_for(headers["x-request-id"])
    assert line["containment"] == "contained"
    status, headers, body = stack.request("DELETE", "/http/api.test/v1/items", token=token)
    assert (status, stack.refused(401, body)) == (401, "revoked")  # at once: not reported again
    assert stack.audit_for(headers["x-request-id"])["containment"] is None
    assert (line["kind"], line["resource"], line["action"]) == ("http", "https://api.test/v1/items", "DELETE")
    assert token not in stack.gateway_log.read_text()


def test_containment_revokes_the_task_at_the_gateway(stack: GatewayStack) -> None:
    token = stack.token("contain-e2e", ["gw-api"])
    assert stack.request("GET", "/http/api.test/v1/items", token=token)[0] == 200
    status, headers, _ = stack.request("GET", "/http/api.test/v2/secret-admin", token=token)
    assert status == 403
    assert stack.audit_for(headers["x-request-id"])["containment"] == "contained"
    requests_before = len(stack.api_requests())
    # the very next request of the task, before the revocation could reach the feed
    status, _, body = stack.request("GET", "/http/api.test/v1/items", token=token)
    assert (status, stack.refused(401, body)) == (401, "revoked")
    assert len(stack.api_requests()) == requests_before  # nothing reached the upstream
    other_token_of_the_task = stack.token("contain-e2e-2", ["gw-api"])  # another task: served
    assert stack.request("GET", "/http/api.test/v1/items", token=other_token_of_the_task)[0] == 200


def test_containment_deny_only_refuses(stack: GatewayStack) -> None:
    stack.start_gateway(containment="deny")
    try:
        stack.wait_ready()
        token = stack.token("contain-deny", ["gw-api"])
        status, headers, body = stack.request("DELETE", "/http/api.test/v1/items", token=token)
        assert (status, stack.refused(403, body)) == (403, "capability_denied")
        assert stack.audit_for(headers["x-request-id"])["containment"] is None
        assert stack.request("GET", "/http/api.test/v1/items", token=token)[0] == 200
    finally:
        stack.start_gateway()
        stack.wait_ready()
