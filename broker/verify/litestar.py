"""A Litestar guard that verifies the capability token and attaches the grant.

from broker.verify.litestar import capability_guard, grant_of
app = Litestar([...], guards=[capability_guard(verifier, public_url="https://git.internal")])
grant = grant_of(request)   # in a handler

Credentials and the DPoP rules are those of the ASGI middleware (``broker.verify.asgi``):
``Authorization: Bearer`` or ``Authorization: DPoP`` with one ``DPoP`` proof header; a
bound token needs the proof, checked against this request's method and URL
(``public_url`` + path, or the URL built from the ASGI scope without it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

from broker.errors import TokenRejected
from broker.verify.asgi import STATE_KEY, authenticate_off_loop, challenge, check_public_url
from broker.verify.grant import Grant
from broker.verify.verifier import Verifier

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def capability_guard(verifier: Verifier, *, public_url: str | None = None) -> Guard:
    base = check_public_url(public_url) if public_url is not None else None

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        try:  # off the event loop when the verifier may wait on the network (asgi.authenticate_off_loop)
            grant = await authenticate_off_loop(verifier, connection.scope, base)  # type: ignore[arg-type]
        except TokenRejected as e:
            raise NotAuthorizedException(
                detail="a valid capability token is required",
                headers={"WWW-Authenticate": challenge(e.code)},
                extra={"code": e.code},
            ) from None
        connection.state[STATE_KEY] = grant

    return guard


def grant_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Grant:
    """The grant the guard attached; a handler without the guard is a bug, not an allow."""
    grant = connection.state.get(STATE_KEY)
    if not isinstance(grant, Grant):
        raise RuntimeError("capability_guard did not run for this route")
    return grant
