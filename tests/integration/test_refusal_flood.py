"""Issue 11, reproduction 2: refused requests fill Redis. On a real redis-server.

Before: every refusal by an authenticated caller was stored in the audit stream, rate-limit
refusals included (3,000 events from an agent whose rate is 5/min), and reasons quoted the
caller's input whole (a service's 64 KB unknown field name: +12.6 MiB for 200 requests).

Now: a caller's refusals beyond its allowance (its rate per window) are counted, one
summary event per window; every stored event is at most ``MAX_EVENT_BYTES``; services have
a rate (60/min by default) that their refused requests spend. The in-process broker here
(the real app) stores into a real Redis; each test has its own key prefix and stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from broker.audit.shape import MAX_EVENT_BYTES
from broker.backends.redis_state import RedisState
from broker.policy.model import DEFAULT_SERVICE_RATE
from tests.servers.processes import RedisServer
from tests.service.harness import Harness, make_harness
from tests.service.support import copy_scopes, edit

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]


def broker_on_redis(redis_server: RedisServer, scopes: Path) -> tuple[Harness, str]:
    tag = f"flood-{time.monotonic_ns()}"
    stream = f"{tag}:audit"
    h = make_harness(scopes, state=RedisState.from_url(redis_server.url, prefix=f"{tag}:", stream=stream))
    h.broker.ready_for_signing = True  # the local signer needs no self-test; no lifespan here
    return h, stream


def run(h: Harness, body: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    """``body`` against the app in one event loop (the Redis client's), then the broker's
    shutdown, which stores the summaries of windows still open."""

    async def main() -> Any:
        transport = httpx.ASGITransport(app=h.app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8700") as client:
                return await body(client)
        finally:
            await h.broker.aclose()

    return asyncio.run(main())


def entries(redis_server: RedisServer, stream: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        return [json.loads(fields["e"]) for _, fields in client.xrange(stream)]
    finally:
        client.close()


def test_an_agent_over_its_rate_of_5_an_hour_does_not_store_3000_refusals(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The reproduction's flood, at 5 an hour rather than its 5 a minute: the counts are the
    same, and no slot opens while the 3,000 requests run (at 5/min one opens every 12 s,
    which a loaded machine with coverage on can reach)."""
    scopes = copy_scopes(tmp_path)
    edit(scopes / "deploy.yaml", "    rate: 30/min", "    rate: 5/h")
    h, stream = broker_on_redis(redis_server, scopes)
    headers = {**h.auth("deployer"), "Content-Type": "application/json"}
    body = json.dumps({"task": "t-flood", "scopes": ["widgets-push"]}).encode()

    async def flood(client: httpx.AsyncClient) -> list[int]:
        return [(await client.post("/v1/tokens", content=body, headers=headers)).status_code for _ in range(3000)]

    statuses = run(h, flood)
    assert statuses[:5] == [201] * 5
    assert statuses[5:] == [429] * 2995
    events = entries(redis_server, stream)
    mints = [e for e in events if e["type"] == "mint"]
    refusals = [e for e in events if e["type"] == "deny" and not e.get("summary")]
    summaries = [e for e in events if e.get("summary")]
    assert len(mints) == 5
    assert len(refusals) == 5  # the allowance: the agent's own rate, 5 an hour
    assert len(events) == 5 + 5 + 1
    (summary,) = summaries
    assert (summary["agent"], summary["count"], summary["codes"]) == ("deployer", 2990, {"rate_limited": 2990})


def test_a_services_64_kb_unknown_field_names_grow_the_stream_by_at_most_its_allowance(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    h, stream = broker_on_redis(redis_server, copy_scopes(tmp_path))
    headers = {**h.auth("git-gateway"), "Content-Type": "application/json"}

    async def flood(client: httpx.AsyncClient) -> list[httpx.Response]:
        # each name its own, as a caller varying its input would
        bodies = [json.dumps({f"{i}." + "eyJ" * 21500: 1}).encode() for i in range(200)]
        return [await client.post("/v1/introspect", content=b, headers=headers) for b in bodies]

    responses = run(h, flood)
    allowance = DEFAULT_SERVICE_RATE.count
    assert [r.status_code for r in responses] == [400] * allowance + [429] * (200 - allowance)
    assert all(int(r.headers["retry-after"]) >= 1 for r in responses[allowance:])
    assert {r.json()["code"] for r in responses[allowance:]} == {"rate_limited"}
    events = entries(redis_server, stream)
    assert len(events) == allowance + 1  # the refusals within the allowance, and one summary
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        sizes = [len(fields["e"].encode()) for _, fields in client.xrange(stream)]
        used = client.memory_usage(stream)
    finally:
        client.close()
    assert max(sizes) <= MAX_EVENT_BYTES
    assert used is not None
    assert used < 1024 * 1024  # was +12.6 MiB for these 200 requests
    (summary,) = [e for e in events if e.get("summary")]
    assert (summary["service"], summary["count"], summary["codes"]) == (
        "git-gateway",
        200 - allowance,
        {"rate_limited": 200 - allowance},
    )
