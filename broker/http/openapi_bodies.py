"""Request body schemas for the OpenAPI document.

Handlers read their bodies strictly themselves (``bodies.py``), so the schemas are
declared here for ``/schema/openapi.json`` and the schemathesis run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

PROBLEM_JSON = "application/problem+json"


@dataclass
class Problem:
    """RFC 9457 problem details with capbroker's stable ``code``."""

    type: str
    title: str
    status: int
    code: str
    detail: str
    request_id: str


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """Documented error responses: every error is problem+json with a ``code``."""
    return {
        status: ResponseSpec(data_container=Problem, media_type=PROBLEM_JSON, description=f"problem ({status})")
        for status in statuses
    }


NAME = Schema(type=OpenAPIType.STRING, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
TASK = Schema(type=OpenAPIType.STRING, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
TTL = Schema(
    one_of=[
        Schema(type=OpenAPIType.STRING, pattern=r"^[1-9][0-9]{0,5}(s|m|h)$"),
        Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=3600),
    ]
)
SCOPE_ENTRY = Schema(
    one_of=[
        NAME,
        Schema(
            type=OpenAPIType.OBJECT,
            properties={
                "scope": NAME,
                "resource": Schema(type=OpenAPIType.STRING, max_length=1024),
                "actions": Schema(
                    type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING), min_items=1, unique_items=True
                ),
            },
            required=["scope"],
            additional_properties=False,
        ),
    ]
)
_MINT_PROPERTIES: dict[str, Any] = {
    "task": TASK,
    "scopes": Schema(type=OpenAPIType.ARRAY, items=SCOPE_ENTRY, min_items=1, max_items=16),
    "ttl": TTL,
}
MINT = Schema(
    type=OpenAPIType.OBJECT, properties=_MINT_PROPERTIES, required=["task", "scopes"], additional_properties=False
)
EXPLAIN = Schema(
    type=OpenAPIType.OBJECT,
    properties={**_MINT_PROPERTIES, "agent": NAME},
    required=["agent", "task", "scopes"],
    additional_properties=False,
)
REVOKE = Schema(
    one_of=[
        Schema(
            type=OpenAPIType.OBJECT,
            properties={
                "token": Schema(type=OpenAPIType.STRING, max_length=8192),
                "token_type_hint": Schema(type=OpenAPIType.STRING, max_length=64, description="RFC 7009; ignored"),
            },
            required=["token"],
            additional_properties=False,
        ),
        Schema(
            type=OpenAPIType.OBJECT,
            properties={"jti": Schema(type=OpenAPIType.STRING, pattern=r"^[A-Za-z0-9_-]{22}$")},
            required=["jti"],
            additional_properties=False,
        ),
    ]
)
TASK_REVOKE = Schema(
    type=OpenAPIType.OBJECT,
    properties={"agent": NAME},
    additional_properties=False,
    description="Admins may name the agent whose task this is; without it, the task id is revoked for every agent.",
)
CONTAIN = Schema(
    type=OpenAPIType.OBJECT,
    properties={
        "token": Schema(type=OpenAPIType.STRING, min_length=1, max_length=8192),
        "kind": Schema(type=OpenAPIType.STRING, enum=["git", "bucket", "http", "vault-kv", "database"]),
        "resource": Schema(type=OpenAPIType.STRING, min_length=1, max_length=2048),
        "action": Schema(type=OpenAPIType.STRING, pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,31}$"),
        "request_id": Schema(type=OpenAPIType.STRING, pattern=r"^[A-Za-z0-9._:-]{1,64}$"),
    },
    required=["token", "kind", "resource", "action"],
    additional_properties=False,
    description="The agent's token as evidence, and the request the service refused it for.",
)

_TOKEN_TYPE = Schema(
    type=OpenAPIType.STRING,
    enum=["urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:access_token"],
)
EXCHANGE = Schema(
    type=OpenAPIType.OBJECT,
    properties={
        "grant_type": Schema(type=OpenAPIType.STRING, enum=["urn:ietf:params:oauth:grant-type:token-exchange"]),
        "subject_token": Schema(type=OpenAPIType.STRING, min_length=1, max_length=8192),
        "subject_token_type": _TOKEN_TYPE,
        "requested_token_type": _TOKEN_TYPE,
        "actor": NAME,
        "scopes": Schema(type=OpenAPIType.ARRAY, items=SCOPE_ENTRY, min_items=1, max_items=16),
        "scope": Schema(type=OpenAPIType.STRING, pattern=r"^[a-z0-9][a-z0-9-]{0,62}( [a-z0-9][a-z0-9-]{0,62}){0,15}$"),
        "audience": Schema(type=OpenAPIType.STRING, pattern=r"^[a-z0-9][a-z0-9.-]{0,62}$"),
        "task": TASK,
        "ttl": TTL,
    },
    required=["grant_type", "subject_token", "subject_token_type", "actor"],
    additional_properties=False,
)
INTROSPECT = Schema(
    type=OpenAPIType.OBJECT,
    properties={
        "token": Schema(type=OpenAPIType.STRING, max_length=8192),
        "token_type_hint": Schema(type=OpenAPIType.STRING, max_length=64),
        "dpop": Schema(type=OpenAPIType.STRING, max_length=4096),
        "htm": Schema(type=OpenAPIType.STRING, max_length=16),
        "htu": Schema(type=OpenAPIType.STRING, max_length=2048),
    },
    required=["token"],
    additional_properties=False,
)


def with_body(schema: Schema, *media_types: str, required: bool = True) -> type[Operation]:
    """An ``Operation`` class for ``operation_class=`` that documents the request body."""
    kinds = media_types or ("application/json",)

    @dataclass
    class _WithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                content={kind: OpenAPIMediaType(schema=schema) for kind in kinds}, required=required
            )

    return _WithBody
