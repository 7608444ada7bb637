"""Agent identities with no static secret, end to end over HTTP: ``jwt`` (a real local OIDC
issuer serving discovery and a JWKS, signing real tokens) and ``vault`` (real OpenBao with
AppRole; the broker looks tokens up with its least-privilege token). The jti replay guard
lives in a real Redis.

Every refusal is 401 ``unauthenticated`` and leaves an audit event naming the reason.
"""

# ruff: noqa: E501  (tables of attack rows read best one per line)

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest
from litestar.testing import TestClient

from broker.backends.local_signer import LocalSigningBackend
from broker.backends.oidc_keys import OidcKeys
from broker.backends.redis_state import RedisState
from broker.backends.vault_lookup import VaultTokenLookup
from broker.http.app import create_app
from broker.policy.loader import load_policy
from broker.service.audit_recorder import AuditRecorder
from broker.service.broker import Broker
from tests.servers.oidc_issuer import OidcIssuer, hs256
from tests.servers.processes import BaoServer, RedisServer
from tests.servers.vault_setup import admin_client, approle_login, setup_approle, setup_transit
from tests.service.support import assert_problem, post_json, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

GH_SUB = "repo:acme/widgets:ref:refs/heads/main"
K8S_SUB = "system:serviceaccount:agents:builder"
AUD = "capbroker"
REPORTS = [{"scope": "reports-write", "resource": "s3://acme-reports/agents/t1/"}]

POLICY = """
scopes:
  reports-write:
    kind: bucket
    resource: s3://acme-reports/agents/
    actions: [list, read, write]
    audience: storage-gateway
    max_ttl: 10m
agents:
  gh-agent:
    identity:
      jwt:
        issuer: {issuer}
        audience: capbroker
        subject: "{gh_sub}"
        claims:
          repository_owner: acme
    scopes: [reports-write]
  k8s-agent:
    identity:
      jwt:
        issuer: {issuer}
        jwks_uri: {jwks_uri}
        audience: capbroker
        subject: "{k8s_sub}"
    scopes: [reports-write]
  ci-agent:
    identity:
      vault:
        role: ci-builder
    scopes: [reports-write]
"""


@dataclass
class Env:
    client: TestClient[Any]
    broker: Broker
    issuer: OidcIssuer
    bao: BaoServer
    audit: io.StringIO

    def mint(self, credential: str, task: str = "t1") -> Any:
        return post_json(
            self.client, "/v1/tokens", {"task": task, "scopes": REPORTS}, {"Authorization": f"Bearer {credential}"}
        )

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.getvalue().splitlines()]

    def last_event(self) -> dict[str, Any]:
        return self.events()[-1]

    def gh_token(self, **kw: Any) -> str:
        kw.setdefault("sub", GH_SUB)
        kw.setdefault("aud", AUD)
        extra = {"repository_owner": "acme", **kw.pop("extra_claims", {})}
        return self.issuer.issue(extra_claims=extra, **kw)


@pytest.fixture(scope="module")
def issuer() -> Iterator[OidcIssuer]:
    with OidcIssuer() as running:
        yield running


@pytest.fixture(scope="module")
def vault_token(bao_server: BaoServer) -> str:
    return setup_transit(bao_server, key="capbroker-federation")


@pytest.fixture
def env(
    tmp_path: Path, issuer: OidcIssuer, bao_server: BaoServer, redis_server: RedisServer, vault_token: str
) -> Iterator[Env]:
    (tmp_path / "p.yaml").write_text(
        POLICY.format(issuer=issuer.issuer, jwks_uri=issuer.jwks_uri, gh_sub=GH_SUB, k8s_sub=K8S_SUB)
    )
    state = RedisState.from_url(redis_server.url, prefix=f"fed-{time.monotonic_ns()}:")
    audit = io.StringIO()
    broker = Broker(
        issuer="http://127.0.0.1:8700",
        policy_dir=tmp_path,
        policy=load_policy(tmp_path),
        signer=LocalSigningBackend.generate(),
        state=state,
        audit=AuditRecorder(state, out=audit),
        admin_key_hashes=(),
        issuer_keys=OidcKeys(timeout=1.0),
        vault_tokens=VaultTokenLookup(bao_server.addr, vault_token, timeout=1.0),
    )
    with TestClient(create_app(broker)) as client:
        h = Env(client, broker, issuer, bao_server, audit)
        wait_ready(h)  # type: ignore[arg-type]  # only .broker is read
        yield h


def refused(env: Env, credential: str, reason: str) -> None:
    """401 unauthenticated, no token, and an audit event whose reason says ``reason``."""
    r = env.mint(credential)
    assert_problem(r, 401, "unauthenticated")
    event = env.last_event()
    assert (event["type"], event["code"], event["stored"]) == ("deny", "unauthenticated", False)
    assert reason in event["reason"], event["reason"]
    assert credential not in env.audit.getvalue()


# ====================================================================== jwt: accepted


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_a_matching_github_style_identity_mints(env: Env, alg: str) -> None:
    r = env.mint(env.gh_token(alg=alg))
    assert r.status_code == 201, r.text
    assert env.last_event()["agent"] == "gh-agent"


def test_a_kubernetes_style_identity_with_an_explicit_jwks_uri_mints(env: Env) -> None:
    token = env.issuer.issue(sub=K8S_SUB, aud=[AUD, "https://kubernetes.default.svc"], typ=None,
                             extra_claims={"kubernetes.io": {"namespace": "agents", "serviceaccount": {"name": "builder"}}})  # fmt: skip
    r = env.mint(token)
    assert r.status_code == 201, r.text
    assert env.last_event()["agent"] == "k8s-agent"


def test_an_agent_with_a_jwt_identity_can_revoke_its_task(env: Env) -> None:
    assert env.mint(env.gh_token(), task="t-revoke").status_code == 201
    r = env.client.post("/v1/tasks/t-revoke/revoke", headers={"Authorization": f"Bearer {env.gh_token()}"})
    assert r.status_code == 200, r.text


# ====================================================================== jwt: each attack refused


def test_wrong_issuer(env: Env) -> None:
    with OidcIssuer() as stranger:
        refused(
            env,
            stranger.issue(sub=GH_SUB, aud=AUD, extra_claims={"repository_owner": "acme"}),
            "no principal trusts this issuer",
        )


def test_wrong_audience(env: Env) -> None:
    refused(env, env.gh_token(aud="sts.amazonaws.com"), "audience")


def test_wrong_subject(env: Env) -> None:
    refused(env, env.gh_token(sub="repo:acme/widgets:ref:refs/heads/evil"), "subject")


def test_wrong_claim(env: Env) -> None:
    refused(env, env.gh_token(extra_claims={"repository_owner": "mallory"}), "repository_owner")


def test_expired(env: Env) -> None:
    now = int(time.time())
    refused(env, env.gh_token(iat=now - 900, exp=now - 300), "expired")


def test_replayed_jti(env: Env) -> None:
    token = env.gh_token()
    assert env.mint(token).status_code == 201
    refused(env, token, "replay")


def test_replayed_jti_across_two_brokers_on_one_redis(env: Env, redis_server: RedisServer) -> None:
    token = env.gh_token(jti="one-time-id-shared")
    assert env.mint(token).status_code == 201
    # a second broker (another replica) over the same Redis prefix refuses the same token
    other = RedisState.from_url(redis_server.url, prefix=env.broker.state._prefix)  # type: ignore[attr-defined]
    replica = Broker(
        issuer=env.broker.issuer, policy_dir=env.broker.policy_dir, policy=env.broker.policy,
        signer=env.broker.signer, state=other, audit=AuditRecorder(other, out=io.StringIO()),
        admin_key_hashes=(), issuer_keys=OidcKeys(timeout=1.0),
    )  # fmt: skip
    with TestClient(create_app(replica)) as client:
        wait_ready(Env(client, replica, env.issuer, env.bao, io.StringIO()))  # type: ignore[arg-type]
        r = post_json(client, "/v1/tokens", {"task": "t1", "scopes": REPORTS}, {"Authorization": f"Bearer {token}"})
        assert_problem(r, 401, "unauthenticated")


def test_unknown_kid(env: Env) -> None:
    refused(env, env.gh_token(headers={"kid": "rsa-404"}), "no key")


def test_alg_none(env: Env) -> None:
    """An unsigned token (empty signature) is not even JWT-shaped to the broker: refused
    before any key is looked at. With a junk signature it is refused for its alg."""
    claims = env.issuer.claims(sub=GH_SUB, aud=AUD, extra_claims={"repository_owner": "acme"})
    header = {"alg": "none", "typ": "JWT", "kid": env.issuer.kid_for("RS256")}
    refused(env, env.issuer.forge(header, claims, signature=b""), "no agent has this credential")
    refused(env, env.issuer.forge(header, claims, signature=b"junk"), "alg")


@pytest.mark.parametrize("form", ["pem", "jwk"])
def test_hs256_signed_with_the_public_key(env: Env, form: str) -> None:
    kid = env.issuer.kid_for("RS256")
    secret = env.issuer.public_pem(kid) if form == "pem" else json.dumps(env.issuer.jwk(kid)).encode()
    token = env.issuer.forge({"alg": "HS256", "typ": "JWT", "kid": kid},
                             env.issuer.claims(sub=GH_SUB, aud=AUD, extra_claims={"repository_owner": "acme"}), sign=hs256(secret))  # fmt: skip
    refused(env, token, "alg")


def test_a_token_naming_a_key_url_is_refused(env: Env) -> None:
    refused(env, env.gh_token(headers={"jku": "https://evil.example/jwks.json"}), "jku")


def test_the_identity_provider_down_with_no_cached_keys_is_503(env: Env) -> None:
    env.issuer.fail(503)
    try:
        started = time.monotonic()
        r = env.mint(env.gh_token())
        assert_problem(r, 503, "backend_unavailable")
        assert time.monotonic() - started < 2.0
    finally:
        env.issuer.recover()


# ====================================================================== vault identity


def role_token(bao: BaoServer, role: str = "ci-builder", **kw: Any) -> str:
    role_id, secret_id = setup_approle(bao, role=role, **kw)
    return approle_login(bao, role_id, secret_id)


def test_an_approle_login_token_of_the_right_role_mints(env: Env) -> None:
    r = env.mint(role_token(env.bao))
    assert r.status_code == 201, r.text
    assert env.last_event()["agent"] == "ci-agent"


def test_a_token_of_another_role_is_refused(env: Env) -> None:
    refused(env, role_token(env.bao, role="ci-other"), "role")


def test_a_revoked_vault_token_is_refused(env: Env) -> None:
    token = role_token(env.bao)
    client = admin_client(env.bao)
    try:
        client.auth.token.revoke(token)
    finally:
        client.adapter.close()
    refused(env, token, "unknown, expired or revoked")


def test_an_expired_vault_token_is_refused(env: Env) -> None:
    token = role_token(env.bao, role="ci-builder", token_ttl="1s")
    time.sleep(2.2)
    refused(env, token, "unknown, expired or revoked")
    setup_approle(env.bao, role="ci-builder")  # back to the default ttl for other tests


def test_an_unknown_vault_token_is_refused(env: Env) -> None:
    refused(env, "s." + "A" * 24, "unknown, expired or revoked")


def test_a_plain_token_with_forged_role_metadata_is_refused(env: Env) -> None:
    client: Any = hvac.Client(url=env.bao.addr, token=env.bao.root_token, timeout=10)
    try:
        forged = client.auth.token.create(policies=["default"], meta={"role_name": "ci-builder"}, ttl="5m")
    finally:
        client.adapter.close()
    refused(env, forged["auth"]["client_token"], "role")
