"""The route handlers: read the request, call one use case, shape the response."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.params import PathParameter

from broker.http.bodies import FORM, JSON, empty_body, json_body, json_or_form_body, optional_json_body
from broker.http.calls import call_of
from broker.http.openapi_answers import (
    ContainAnswer,
    ExchangeAnswer,
    ExplainAnswer,
    Health,
    IntrospectionAnswer,
    Jwks,
    MintAnswer,
    PolicyAnswer,
    ReadinessAnswer,
    ReinstateAnswer,
    ReloadAnswer,
    RevokeAnswer,
    ServerMetadata,
    answer,
)
from broker.http.openapi_bodies import (
    CONTAIN,
    EXCHANGE,
    EXPLAIN,
    INTROSPECT,
    MINT,
    REVOKE,
    TASK_REVOKE,
    problems,
    with_body,
)
from broker.service import admin, contain, exchange, introspect, mint, revoke
from broker.service.broker import Broker, Call

AnyRequest = Request[Any, Any, Any]


def _broker(request: AnyRequest) -> Broker:
    broker: Broker = request.app.state.broker
    return broker


def _call(request: AnyRequest) -> Call:
    return call_of(request.scope)


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(content=content, status_code=status, media_type=JSON, headers=headers)


NO_STORE = {"Cache-Control": "no-store"}
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
AGENT_ERRORS = problems(400, 401, 403, 413, 429, 503)
ACTION_ERRORS = problems(400, 401, 403, 413, 503)
ADMIN_ERRORS = problems(400, 401, 403, 413, 422, 503)


@post(
    "/v1/tokens",
    operation_class=with_body(MINT),
    status_code=201,
    security=BEARER,
    summary="Mint capability tokens for a task",
    tags=["agents"],
    responses={**AGENT_ERRORS, **answer(MintAnswer, 201)},
)
async def mint_tokens(request: AnyRequest) -> Response[Any]:
    return _json(await mint.mint(_broker(request), _call(request), lambda: json_body(request)), 201, NO_STORE)


@post(
    "/v1/tokens/exchange",
    operation_class=with_body(EXCHANGE, JSON, FORM),
    status_code=200,
    summary="Exchange a capability token for a narrower one for a sub-agent (RFC 8693)",
    tags=["agents"],
    responses={**AGENT_ERRORS, **answer(ExchangeAnswer, 200)},
)
async def exchange_token(request: AnyRequest) -> Response[Any]:
    return _json(
        await exchange.exchange(_broker(request), _call(request), lambda: json_or_form_body(request)),
        headers=NO_STORE,
    )


@post(
    "/v1/revoke",
    operation_class=with_body(REVOKE, JSON, FORM),
    status_code=200,
    security=BEARER,
    summary="Revoke one token",
    tags=["revocation"],
    responses={**ACTION_ERRORS, **answer(RevokeAnswer, 200)},
)
async def revoke_token(request: AnyRequest) -> Response[Any]:
    return _json(await revoke.revoke_token(_broker(request), _call(request), lambda: json_or_form_body(request)))


@post(
    "/v1/tasks/{task:str}/revoke",
    operation_class=with_body(TASK_REVOKE, required=False),
    status_code=200,
    security=BEARER,
    summary="Revoke every token of a task (the caller's own, or as an admin any agent's)",
    tags=["revocation"],
    responses={**ACTION_ERRORS, **answer(RevokeAnswer, 200)},
)
async def revoke_task(request: AnyRequest, task: Annotated[str, PathParameter()]) -> Response[Any]:
    return _json(await revoke.revoke_task(_broker(request), _call(request), task, lambda: optional_json_body(request)))


@post(
    "/v1/tasks/{task:str}/contain",
    operation_class=with_body(CONTAIN),
    status_code=200,
    security=BEARER,
    summary="Revoke a task after an out-of-scope use its service saw (the token is the evidence)",
    tags=["services"],
    responses={**AGENT_ERRORS, **answer(ContainAnswer)},  # 429: a service's refused requests spend its rate
)
async def contain_task(request: AnyRequest, task: Annotated[str, PathParameter()]) -> Response[Any]:
    return _json(await contain.contain(_broker(request), _call(request), task, lambda: json_body(request)))


@post(
    "/v1/agents/{agent:str}/revoke",
    status_code=200,
    security=BEARER,
    summary="Kill switch: every token of an agent",
    tags=["revocation"],
    responses={**ACTION_ERRORS, **answer(RevokeAnswer, 200)},
)
async def revoke_agent(request: AnyRequest, agent: Annotated[str, PathParameter()]) -> Response[Any]:
    return _json(await revoke.revoke_agent(_broker(request), _call(request), agent, lambda: empty_body(request)))


@post(
    "/v1/agents/{agent:str}/reinstate",
    status_code=200,
    security=BEARER,
    summary="Lift an agent's kill-switch suspension",
    tags=["revocation"],
    responses={**ACTION_ERRORS, **answer(ReinstateAnswer, 200)},
)
async def reinstate_agent(request: AnyRequest, agent: Annotated[str, PathParameter()]) -> Response[Any]:
    return _json(await revoke.reinstate_agent(_broker(request), _call(request), agent, lambda: empty_body(request)))


@post(
    "/v1/introspect",
    status_code=200,
    security=BEARER,
    responses={**AGENT_ERRORS, **answer(IntrospectionAnswer, 200)},  # 429: a service's refused requests spend its rate
    operation_class=with_body(INTROSPECT, JSON, FORM),
    summary="RFC 7662 introspection",
    tags=["services"],
)
async def introspect_token(request: AnyRequest) -> Response[Any]:
    return _json(
        await introspect.introspect(_broker(request), _call(request), lambda: json_or_form_body(request)),
        headers=NO_STORE,
    )


@get(
    "/.well-known/jwks.json",
    responses={**problems(503), **answer(Jwks)},
    summary="Public keys of every key version still able to verify",
    tags=["keys"],
)
async def jwks(request: AnyRequest) -> Response[Any]:
    keys = await _broker(request).signer.keyset(fresh=True)  # a key another replica stored a moment ago
    return _json(keys.to_jwks(), headers={"Cache-Control": "public, max-age=60"})


@get(
    "/.well-known/oauth-authorization-server",
    summary="RFC 8414 metadata",
    tags=["keys"],
    responses=answer(ServerMetadata),
)
async def metadata(request: AnyRequest) -> Response[Any]:
    broker = _broker(request)
    base = broker.issuer.rstrip("/")
    return _json(
        {
            "issuer": broker.issuer,
            "jwks_uri": f"{base}/.well-known/jwks.json",
            # the token-exchange grant (RFC 8693) is served here; minting (/v1/tokens) is
            # not an OAuth grant. Registered method names only (a Bearer key works too)
            "token_endpoint": f"{base}/v1/tokens/exchange",
            "revocation_endpoint": f"{base}/v1/revoke",
            "introspection_endpoint": f"{base}/v1/introspect",
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic"],
            "token_endpoint_auth_methods_supported": ["none"],  # the subject token is the proof
            "grant_types_supported": ["urn:ietf:params:oauth:grant-type:token-exchange"],
            "dpop_signing_alg_values_supported": ["EdDSA", "ES256"],
            "response_types_supported": [],
            "access_token_signing_alg_values_supported": [broker.signer.alg],
        }
    )


@get(
    "/v1/scopes",
    security=BEARER,
    responses={**ADMIN_ERRORS, **answer(PolicyAnswer)},
    summary="The loaded policy and its hash",
    tags=["admin"],
)
async def scopes(request: AnyRequest) -> Response[Any]:
    return _json(await admin.scopes(_broker(request), _call(request)))


@post(
    "/v1/explain",
    operation_class=with_body(EXPLAIN),
    status_code=200,
    security=BEARER,
    summary="Would this agent get these scopes?",
    tags=["admin"],
    responses={**ADMIN_ERRORS, **answer(ExplainAnswer)},
)
async def explain(request: AnyRequest) -> Response[Any]:
    return _json(await admin.explain(_broker(request), _call(request), lambda: json_body(request)))


@post(
    "/v1/admin/reload",
    status_code=200,
    security=BEARER,
    responses={**ADMIN_ERRORS, **answer(ReloadAnswer)},
    summary="Reload the policy files",
    tags=["admin"],
)
async def reload(request: AnyRequest) -> Response[Any]:
    return _json(await admin.reload(_broker(request), _call(request), lambda: empty_body(request)))


@get("/healthz", summary="Liveness", tags=["ops"], responses=answer(Health))
async def healthz() -> Response[Any]:
    return _json({"status": "ok"})


@get(
    "/readyz",
    summary="Readiness: state store and the signing self-test",
    tags=["ops"],
    responses={**answer(ReadinessAnswer), **answer(ReadinessAnswer, 503, "not ready")},
)
async def readyz(request: AnyRequest) -> Response[Any]:
    result = await request.app.state.readiness.check()
    return _json(result, 200 if result["ready"] else 503, None if result["ready"] else {"Retry-After": "1"})


@get("/metrics", summary="Prometheus metrics", tags=["ops"], media_type="text/plain; version=0.0.4")
async def metrics(request: AnyRequest) -> Response[str]:
    return Response(content=_broker(request).metrics.render(), media_type="text/plain; version=0.0.4")


HANDLERS = [
    mint_tokens,
    exchange_token,
    revoke_token,
    revoke_task,
    contain_task,
    revoke_agent,
    reinstate_agent,
    introspect_token,
    jwks,
    metadata,
    scopes,
    explain,
    reload,
    healthz,
    readyz,
    metrics,
]
