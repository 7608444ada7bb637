"""gateway.yaml: ``kind: bucket`` routes (SPEC 9's example), strictly checked."""

from __future__ import annotations

import json

import pytest

from broker.gateway.config import ConfigError, load_config
from tests.gateway.test_config import SPEC_EXAMPLE

BUCKET_ROUTE = """\
  - kind: bucket
    audience: storage-gateway
    bucket: acme-reports
    upstream: https://s3.eu-west-1.amazonaws.com
    region: eu-west-1
    credential: {vault: secret/data/gateway/s3, access_key_id: access_key_id, secret_access_key: secret_access_key}
"""
WITH_BUCKET = SPEC_EXAMPLE + BUCKET_ROUTE


def test_the_spec_example_bucket_route_loads() -> None:
    config = load_config(WITH_BUCKET)
    route = config.routes[2]
    assert (route.kind, route.audience, route.bucket, route.match, route.region, route.upstream) == (
        "bucket",
        "storage-gateway",
        "acme-reports",
        "acme-reports",
        "eu-west-1",
        "https://s3.eu-west-1.amazonaws.com",
    )
    cred = route.credential
    assert (cred.vault, cred.file, cred.field, cred.present) == ("secret/data/gateway/s3", None, None, "sigv4")
    assert (cred.access_key_id, cred.secret_access_key, cred.session_token) == (
        "access_key_id",
        "secret_access_key",
        None,
    )
    assert config.route("bucket", "acme-reports") is route
    assert "storage-gateway" in config.audiences
    assert cred.source == "vault:secret/data/gateway/s3#access_key_id"


def test_a_vault_credential_may_name_its_fields_and_a_session_token() -> None:
    text = WITH_BUCKET.replace(
        "access_key_id: access_key_id, secret_access_key: secret_access_key}",
        "access_key_id: id, secret_access_key: key, session_token: tok}",
    )
    cred = load_config(text).routes[2].credential
    assert (cred.access_key_id, cred.secret_access_key, cred.session_token) == ("id", "key", "tok")


def test_a_file_credential_defaults_to_the_json_field_names() -> None:
    text = WITH_BUCKET.replace(
        "{vault: secret/data/gateway/s3, access_key_id: access_key_id, secret_access_key: secret_access_key}",
        "{file: /run/secrets/s3.json}",
    )
    cred = load_config(text).routes[2].credential
    assert (cred.file, cred.vault, cred.present) == ("/run/secrets/s3.json", None, "sigv4")
    assert (cred.access_key_id, cred.secret_access_key, cred.session_token) == (
        "access_key_id",
        "secret_access_key",
        "session_token",
    )
    assert cred.source == "file:/run/secrets/s3.json"


def bucket_env(credential: dict[str, str]) -> dict[str, str]:
    return {
        "GATEWAY_ISSUER": "http://127.0.0.1:8700",
        "GATEWAY_JWKS_URL": "http://127.0.0.1:8700/.well-known/jwks.json",
        "GATEWAY_REVOCATION": "introspection",
        "GATEWAY_SERVICE_KEY_FILE": "/k",
        "GATEWAY_ROUTES": json.dumps(
            [
                {
                    "kind": "bucket",
                    "audience": "storage-gateway",
                    "bucket": "agent-data",
                    "upstream": "http://127.0.0.1:9000",
                    "region": "us-east-1",
                    "credential": credential,
                }
            ]
        ),
    }


def test_a_bucket_route_from_the_environment() -> None:
    (route,) = load_config(None, env=bucket_env({"file": "/s3.json"})).routes
    assert (route.bucket, route.region, route.upstream) == ("agent-data", "us-east-1", "http://127.0.0.1:9000")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("bucket: acme-reports", "bucket: Acme_Reports"), "bucket must be an S3 bucket name"),
        (("bucket: acme-reports", "bucket: ab"), "bucket must be an S3 bucket name"),
        (("bucket: acme-reports", "bucket: acme..reports"), "bucket must be an S3 bucket name"),
        (("    bucket: acme-reports\n", ""), "bucket must be a non-empty string"),
        (("region: eu-west-1", "region: EU West"), "region"),
        (("    region: eu-west-1\n", ""), "region must be a non-empty string"),
        (("upstream: https://s3.eu-west-1.amazonaws.com", "upstream: s3.amazonaws.com"), "upstream"),
        (("upstream: https://s3.eu-west-1.amazonaws.com", "upstream: https://s3/?x=1"), "upstream"),
        (("    region: eu-west-1\n", "    region: eu-west-1\n    host: x\n"), "unknown field"),
        (("access_key_id: access_key_id, ", ""), "names its access_key_id"),
        (("vault: secret/data/gateway/s3", "vault: secret/gateway/s3"), "KV v2 path"),
        (("vault: secret/data/gateway/s3", "file: /x, vault: secret/data/gateway/s3"), "exactly one"),
        (("secret_access_key: secret_access_key}", "secret_access_key: secret_access_key, field: x}"), "unknown"),
        (("secret_access_key: secret_access_key}", "secret_access_key: 'a b'}"), "plain field name"),
        (("secret_access_key: secret_access_key}", "secret_access_key: secret_access_key, as: basic}"), "unknown"),
        (("    audience: storage-gateway\n", "    audience: Storage Gateway\n"), "audience"),
    ],
)
def test_bucket_route_strictness(change: tuple[str, str], message: str) -> None:
    text = SPEC_EXAMPLE + BUCKET_ROUTE.replace(*change, 1)
    with pytest.raises(ConfigError, match=message):
        load_config(text)


def test_two_routes_for_one_bucket_are_refused() -> None:
    with pytest.raises(ConfigError, match="two bucket routes for acme-reports"):
        load_config(WITH_BUCKET + BUCKET_ROUTE.replace("storage-gateway", "other-gateway"))


def test_a_vault_bucket_credential_needs_the_vault_settings() -> None:
    vault = {"vault": "secret/data/s3", "access_key_id": "id", "secret_access_key": "key"}
    with pytest.raises(ConfigError, match="vault_addr"):
        load_config(None, env=bucket_env(vault))
    env = bucket_env(vault) | {"GATEWAY_VAULT_ADDR": "http://127.0.0.1:8200", "GATEWAY_VAULT_TOKEN_FILE": "/t"}
    assert load_config(None, env=env).routes[0].credential.vault == "secret/data/s3"
