"""Containment (SPEC 9, issue 15): the first request a valid token does not allow is
reported to the broker (``POST /v1/tasks/{task}/contain`` with the gateway's service key
and the token as evidence); the agent gets its 403 whatever the broker answers.

End to end on the real broker: the report revokes the task, and every later request of
the task is 401 ``revoked`` at the gateway (through the revocation feed).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.servers.gateway_stack import GatewayStack, start_stack
from tests.servers.processes import BaoServer, RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]


@pytest.fixture(scope="module")
def stack(bao_server: BaoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    root = tmp_path_factory.mktemp("gateway-contain")
    own_redis = RedisServer(root / "redis").start()
    try:
        built = start_stack(root / "stack", bao_server, own_redis)
        try:
            yield built
        finally:
            built.stop()
    finally:
        own_redis.stop()


def test_a_denied_request_is_reported_once_and_the_agent_still_gets_403(stack: GatewayStack) -> None:
    token = stack.token("contain-report", ["gw-api"])
    status, headers, body = stack.request("DELETE", "/http/api.test/v1/items", token=token)
    assert (status, stack.refused(403, body)) == (403, "capability_denied")
    line = stack.audit_for(headers["x-request-id"])
    assert line["containment"] == "contained"
    deadline = time.monotonic() + 10
    while True:  # revoked within the second; until then a refusal is not reported again
        status, headers, body = stack.request("DELETE", "/http/api.test/v1/items", token=token)
        if status == 401:
            break
        assert stack.audit_for(headers["x-request-id"])["containment"] == "already"
        assert time.monotonic() < deadline
    assert stack.refused(401, body) == "revoked"
    assert (line["kind"], line["resource"], line["action"]) == ("http", "https://api.test/v1/items", "DELETE")
    assert token not in stack.gateway_log.read_text()


def test_containment_revokes_the_task_at_the_gateway(stack: GatewayStack) -> None:
    token = stack.token("contain-e2e", ["gw-api"])
    assert stack.request("GET", "/http/api.test/v1/items", token=token)[0] == 200
    status, headers, _ = stack.request("GET", "/http/api.test/v2/secret-admin", token=token)
    assert status == 403
    assert stack.audit_for(headers["x-request-id"])["containment"] == "contained"
    deadline = time.monotonic() + 10
    while True:
        status, _, body = stack.request("GET", "/http/api.test/v1/items", token=token)
        if status == 401:
            break
        assert time.monotonic() < deadline, "the contained task is still served"
    assert stack.refused(401, body) == "revoked"


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
