"""An internal service that checks capability tokens itself, with the verifier library
and its Litestar guard (for upstreams that cannot, put `broker gateway` in front instead:
examples/sandbox-demo).

It serves ``GET /repos/{owner}/{repo}`` only to callers whose capability token allows
``git read`` on ``github.com/{owner}/{repo}``. Tokens are verified locally against the
broker's JWKS; revocation is checked by introspection, so revoking the task stops the
very next call.

    BROKER_URL=http://127.0.0.1:8700 GATEWAY_KEY=cbk_... \
        .venv/bin/uvicorn --factory examples.protected_service.app:create_app --port 8701
"""

from __future__ import annotations

import os
from typing import Any

from litestar import Litestar, Request, get
from litestar.exceptions import PermissionDeniedException

from broker.verify import Verifier
from broker.verify.introspection import IntrospectionClient
from broker.verify.litestar import capability_guard, grant_of

BROKER_URL = os.environ.get("BROKER_URL", "http://127.0.0.1:8700")
AUDIENCE = "git-gateway"


def make_verifier() -> Verifier:
    return Verifier(
        issuer=BROKER_URL,
        audience=AUDIENCE,
        jwks_url=f"{BROKER_URL}/.well-known/jwks.json",
        introspection=IntrospectionClient(f"{BROKER_URL}/v1/introspect", os.environ["GATEWAY_KEY"]),
    )


@get("/repos/{owner:str}/{repo:str}")
async def read_repo(request: Request[Any, Any, Any], owner: str, repo: str) -> dict[str, Any]:
    grant = grant_of(request)
    resource = f"github.com/{owner}/{repo}"
    if not grant.allows("git", resource, "read"):
        raise PermissionDeniedException(detail=f"this token does not allow reading {resource}")
    return {"repo": resource, "task": grant.task, "agent": grant.agent, "refs": {"main": "4b825dc"}}


def create_app(verifier: Verifier | None = None) -> Litestar:
    return Litestar([read_repo], guards=[capability_guard(verifier or make_verifier())])
