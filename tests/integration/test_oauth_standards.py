"""Standards an off-the-shelf OAuth client relies on (issue 13, item 7), on a real broker.

authlib's OAuth 2 client introspects (RFC 7662) and revokes (RFC 7009) with
``client_secret_basic``: the service or agent name as client id, its ``cbk_`` key as the
secret, form bodies with ``token`` and ``token_type_hint``. The RFC 8414 document names the
endpoints that answer so and registered method names only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from authlib.integrations.requests_client import OAuth2Session

from tests.servers.broker_process import BrokerProcess, PolicyDir
from tests.servers.processes import BaoServer, RedisServer
from tests.servers.vault_setup import setup_transit

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

REGISTERED = {"client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt", "none",
              "tls_client_auth", "self_signed_tls_client_auth"}  # fmt: skip


@pytest.fixture(scope="module")
def broker(
    tmp_path_factory: pytest.TempPathFactory, bao_server: BaoServer, redis_server: RedisServer
) -> Iterator[BrokerProcess]:
    tmp = tmp_path_factory.mktemp("oauth")
    proc = BrokerProcess(
        tmp / "broker", PolicyDir.create(tmp / "policy"), redis_server.url, bao_server.addr,
        setup_transit(bao_server, key="oauth"), transit_key="oauth", redis_prefix="day2-oauth:",
    )  # fmt: skip
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def token(broker: BrokerProcess, task: str) -> str:
    status, _, body = broker.mint(task, ["widgets-read"])
    assert status == 201, body
    return str(body["tokens"][0]["token"])


def client(broker: BrokerProcess, who: str) -> OAuth2Session:
    return OAuth2Session(
        client_id=who, client_secret=broker.policy.keys[who], token_endpoint_auth_method="client_secret_basic"
    )


def test_authlib_introspects_with_client_secret_basic(broker: BrokerProcess) -> None:
    capability = token(broker, "oauth-introspect")
    with client(broker, "git-gateway") as session:
        answer = session.introspect_token(
            f"{broker.url}/v1/introspect", token=capability, token_type_hint="access_token"
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["active"] is True
    assert answer.json()["task"] == "oauth-introspect"


def test_a_client_id_that_is_not_the_secrets_owner_is_refused(broker: BrokerProcess) -> None:
    capability = token(broker, "oauth-wrong-id")
    with OAuth2Session(client_id="reviewer", client_secret=broker.policy.keys["git-gateway"]) as session:
        answer = session.introspect_token(f"{broker.url}/v1/introspect", token=capability)
    assert answer.status_code == 401, answer.text


def test_authlib_revokes_with_an_rfc_7009_form_body(broker: BrokerProcess) -> None:
    capability = token(broker, "oauth-revoke")
    with client(broker, "reviewer") as session:
        answer = session.revoke_token(f"{broker.url}/v1/revoke", token=capability, token_type_hint="access_token")
    assert answer.status_code == 200, answer.text
    with client(broker, "git-gateway") as session:
        after = session.introspect_token(f"{broker.url}/v1/introspect", token=capability)
    assert after.json() == {"active": False}


def test_the_metadata_names_the_endpoints_that_answer_and_registered_methods(broker: BrokerProcess) -> None:
    status, _, meta = broker.get("/.well-known/oauth-authorization-server")
    assert status == 200
    base = broker.issuer.rstrip("/")
    assert meta["token_endpoint"] == f"{base}/v1/tokens/exchange"  # where the token-exchange grant is served
    assert meta["grant_types_supported"] == ["urn:ietf:params:oauth:grant-type:token-exchange"]
    for key in (
        "introspection_endpoint_auth_methods_supported",
        "revocation_endpoint_auth_methods_supported",
        "token_endpoint_auth_methods_supported",
    ):
        assert set(meta[key]) <= REGISTERED, meta[key]
    assert "client_secret_basic" in meta["introspection_endpoint_auth_methods_supported"]
    assert "client_secret_basic" in meta["revocation_endpoint_auth_methods_supported"]
    for key in ("token_endpoint", "introspection_endpoint", "revocation_endpoint", "jwks_uri"):
        path = meta[key].removeprefix(base)
        method = "GET" if key == "jwks_uri" else "POST"
        status, _, _ = broker.request(method, path, {} if method == "POST" else None, form=method == "POST")
        assert status != 404, f"{key} {path} does not answer"


def test_the_openapi_document_and_a_swagger_ui_are_served(broker: BrokerProcess) -> None:
    status, _, document = broker.get("/schema/openapi.json")
    assert status == 200
    assert "/v1/revoke" in document["paths"]
    assert "application/x-www-form-urlencoded" in document["paths"]["/v1/revoke"]["post"]["requestBody"]["content"]
    status, headers, page = broker.get("/schema/swagger")
    assert status == 200
    assert "text/html" in headers.get("content-type", headers.get("Content-Type", ""))
    assert "swagger" in page.lower()
