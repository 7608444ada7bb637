"""The gateway checks and forwards one set of request headers: the server's list as it was
when the request reached the gateway. A server appends a chunked body's trailers to its
own list when they arrive, which may be after the checks; an outside tester smuggled an
``x-amz-copy-source`` trailer past the bucket route that way (its race, on the real stack,
is ``tests/integration/test_gateway_s3.py``'s trailer test)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from broker.gateway.app import GatewayApp
from broker.gateway.config import load_config
from tests.gateway.test_config import SPEC_EXAMPLE


def _app() -> GatewayApp:
    # only the routing is exercised: the parts a request would use are never reached
    nothing = cast(Any, None)
    return GatewayApp(
        load_config(SPEC_EXAMPLE),
        verifiers=nothing,
        secrets_store=nothing,
        ledger=nothing,
        upstream=nothing,
        client=nothing,
        containment=None,
    )


@pytest.mark.parametrize("path", ["/s3/acme-reports/tasks/t1/a.txt", "/http/billing.internal/v1/x"])
def test_a_header_the_server_appends_later_never_reaches_a_route(path: str) -> None:
    app = _app()
    seen: list[Any] = []

    async def route(scope: Any, receive: Any, send: Any) -> None:
        server_list.append((b"x-amz-copy-source", b"agent-data/other/secret.txt"))  # a trailer, late
        seen.append(scope["headers"])

    app._bucket = route  # type: ignore[assignment]  # the two routes' entry points
    app._proxy = route  # type: ignore[method-assign]
    server_list: list[tuple[bytes, bytes]] = [(b"x-amz-security-token", b"t"), (b"content-length", b"5")]
    scope = {"type": "http", "method": "PUT", "path": path, "headers": server_list}
    asyncio.run(app(scope, cast(Any, None), cast(Any, None)))
    (headers,) = seen
    assert list(headers) == [(b"x-amz-security-token", b"t"), (b"content-length", b"5")]
    assert len(server_list) == 3  # the server's own list did grow
