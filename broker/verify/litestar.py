"""A Litestar guard that verifies the bearer capability token and attaches the grant.

from broker.verify.litestar import capability_guard, grant_of
app = Litestar([...], guards=[capability_guard(verifier)])
grant = grant_of(request)   # in a handler
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

from broker.errors import TokenRejected
from broker.verify.asgi import STATE_KEY, authenticate
from broker.verify.grant import Grant
from broker.verify.verifier import Verifier

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]


def capability_guard(verifier: Verifier) -> Guard:
    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        try:
            grant = authenticate(verifier, connection.scope.get("headers", []))
        except TokenRejected as e:
            raise NotAuthorizedException(
                detail="a valid capability token is required",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
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
