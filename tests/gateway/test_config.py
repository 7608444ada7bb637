"""gateway.yaml: SPEC 9's field names, strict YAML, GATEWAY_<NAME> twins, redis_prefix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broker.gateway.config import ConfigError, load_config
from broker.verify.redis_keys import default_prefix

SPEC_EXAMPLE = """\
issuer: https://broker.internal
jwks_url: https://broker.internal/.well-known/jwks.json
service_key_file: /run/secrets/gateway-key
revocation: redis://redis:6379/0
redis_url: redis://redis:6379/0
vault_addr: https://vault:8200
vault_token_file: /run/secrets/gateway-vault-token
host: 127.0.0.1
port: 8800
public_url: https://gateway.internal
containment: revoke-task
routes:
  - kind: git
    audience: git-gateway
    host: github.com
    upstream: https://github.com
    credential: {vault: secret/data/gateway/github, field: token, as: basic, username: x-access-token}
    push_refs: refs/heads/agents/{task}/
  - kind: http
    audience: billing-api
    origin: https://billing.internal
    upstream: https://billing.internal
    credential: {vault: secret/data/gateway/billing, field: api_key, as: header, header: X-Api-Key}
    strip_headers: [X-Api-Key]
    strip_query: [api_key]
"""


def test_the_spec_example_loads_with_its_field_names() -> None:
    config = load_config(SPEC_EXAMPLE)
    git, http = config.routes
    assert (git.kind, git.match, git.upstream, git.push_refs) == (
        "git",
        "github.com",
        "https://github.com",
        "refs/heads/agents/{task}/",
    )
    assert (git.credential.vault, git.credential.field, git.credential.present, git.credential.username) == (
        "secret/data/gateway/github",
        "token",
        "basic",
        "x-access-token",
    )
    assert (http.origin, http.match, http.strip_headers, http.strip_query) == (
        "https://billing.internal",
        "billing.internal",
        ("x-api-key",),
        ("api_key",),
    )
    assert config.public_url == "https://gateway.internal"
    assert config.containment == "revoke-task"
    assert config.audiences == ("git-gateway", "billing-api")


def test_redis_prefix_defaults_to_the_issuers_and_may_be_set() -> None:
    assert load_config(SPEC_EXAMPLE).redis_prefix == default_prefix("https://broker.internal")
    assert load_config(SPEC_EXAMPLE + "redis_prefix: 'acme:'\n").redis_prefix == "acme:"


def test_every_setting_has_a_gateway_environment_twin() -> None:
    env = {
        "GATEWAY_PORT": "9900",
        "GATEWAY_CONTAINMENT": "deny",
        "GATEWAY_REVOCATION": "introspection",
        "GATEWAY_REDIS_PREFIX": "env:",
        "GATEWAY_ROUTES": '[{"kind": "http", "audience": "a-api", "origin": "https://a.test", '
        '"upstream": "http://127.0.0.1:1", "credential": {"file": "/k", "as": "query", "param": "key"}}]',
    }
    config = load_config(SPEC_EXAMPLE, env=env)
    assert (config.port, config.containment, config.revocation, config.redis_prefix) == (
        9900,
        "deny",
        "introspection",
        "env:",
    )
    (route,) = config.routes
    assert (route.credential.file, route.credential.present, route.credential.param) == ("/k", "query", "key")


def test_environment_only() -> None:
    env = {
        "GATEWAY_ISSUER": "http://127.0.0.1:8700",
        "GATEWAY_JWKS_URL": "http://127.0.0.1:8700/.well-known/jwks.json",
        "GATEWAY_REVOCATION": "introspection",
        "GATEWAY_SERVICE_KEY_FILE": "/k",
        "GATEWAY_ROUTES": '[{"kind": "git", "audience": "git-gateway", "host": "github.com", '
        '"upstream": "https://github.com", "credential": {"file": "/t", "as": "bearer"}}]',
    }
    assert load_config(None, env=env).routes[0].credential.present == "bearer"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("containment: revoke-task", "containment: revoke"), "containment"),
        (("port: 8800", "port: 8800\nport: 8801"), "duplicate key"),
        (("port: 8800", "prot: 8800"), "unknown setting 'prot'"),
        (("host: github.com", "host: GitHub.com"), "host"),
        (("origin: https://billing.internal", "origin: http://billing.internal"), "origin"),
        (("as: basic, username: x-access-token", "as: basic"), "username"),
        (("as: basic, username", "as: query, param"), "as must be one of"),
        (("field: token, ", ""), "field"),
        (("push_refs: refs/heads/agents/{task}/", "push_refs: refs/heads/../main/"), "push_refs"),
        (("vault: secret/data/gateway/github", "file: /x, vault: secret/data/gateway/github"), "exactly one"),
        (("kind: git", "kind: ftp"), "kind"),
        (("kind: git", "kind: bucket"), "unknown field"),
        (("revocation: redis://redis:6379/0", "revocation: memcached://x"), "revocation"),
        (("    strip_query: [api_key]", "    strip_query: [api_key]\n    extra: 1"), "unknown field"),
        (("port: 8800", "port: yes"), "booleans"),
    ],
)
def test_strictness(change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(SPEC_EXAMPLE.replace(*change, 1))


def test_two_routes_for_one_host_are_refused() -> None:
    routes = SPEC_EXAMPLE.split("routes:\n")[1]
    with pytest.raises(ConfigError, match="two git routes"):
        load_config(SPEC_EXAMPLE + routes.split("  - kind: http")[0])


def test_vault_credentials_need_vault_settings() -> None:
    with pytest.raises(ConfigError, match="vault_addr"):
        load_config(SPEC_EXAMPLE.replace("vault_addr: https://vault:8200\n", ""))


def test_the_service_key_is_needed_for_containment_and_introspection() -> None:
    no_key = SPEC_EXAMPLE.replace("service_key_file: /run/secrets/gateway-key\n", "")
    with pytest.raises(ConfigError, match="service_key_file"):
        load_config(no_key)
    assert load_config(no_key.replace("containment: revoke-task", "containment: deny")).service_key_file is None


def test_the_infra_example_loads() -> None:
    path = Path(__file__).resolve().parents[2] / "infra" / "gateway.yaml"
    config = load_config(path.read_bytes(), str(path))
    assert [r.kind for r in config.routes] == ["git", "http", "bucket"]
    assert config.containment == "revoke-task"


def test_the_gateways_vault_policy_is_read_only_on_its_paths() -> None:
    policy = (Path(__file__).resolve().parents[2] / "infra" / "vault" / "gateway-policy.hcl").read_text()
    blocks = re.findall(r'path "([^"]+)" \{\s*capabilities = \[([^\]]*)\]', policy)
    assert blocks == [("secret/data/gateway/*", '"read"')]
