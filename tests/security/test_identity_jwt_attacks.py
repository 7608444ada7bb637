"""One regression test per attack on the ``jwt`` agent identity (SPEC 2.2).

Each attack is tried against the pure verifier (``verify_identity_jwt`` and
``match_jwt_identity``), and end to end: the unverified issuer routes the token to a
policy identity, ``OidcKeys`` fetches that issuer's keys from a real OIDC issuer on
loopback (tests/servers/oidc_issuer.py), then verification and matching run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from broker.backends.oidc_keys import OidcKeys
from broker.errors import BackendUnavailable
from broker.identity.jwt_identity import (
    MAX_IDENTITY_TOKEN_BYTES,
    IdentityClaims,
    IdentityKeys,
    IdentityRejected,
    looks_like_jwt,
    match_jwt_identity,
    unverified_route,
    verify_identity_jwt,
)
from broker.identity.jwt_keys import KeySetError
from broker.policy.model import JwtIdentity
from tests.helpers import NOW
from tests.servers.oidc_issuer import JwtIssuer, OidcIssuer, hs256, private_jwk, running_issuer

ISS = "https://token.actions.githubusercontent.com"
SUB = "repo:acme/widgets:ref:refs/heads/main"
AUD = "capbroker"
IDENTITY = JwtIdentity(ISS, AUD, SUB, (("repository_owner", "acme"),))
OWNER = {"repository_owner": "acme"}


@pytest.fixture(scope="module")
def idp() -> JwtIssuer:
    return JwtIssuer(ISS, now=NOW)


@pytest.fixture(scope="module")
def keys(idp: JwtIssuer) -> IdentityKeys:
    return IdentityKeys.from_jwks(idp.jwks())


def good(idp: JwtIssuer, **kw: Any) -> str:
    kw.setdefault("extra_claims", OWNER)
    return idp.issue(sub=SUB, aud=AUD, **kw)


def check(token: str, keys: IdentityKeys, identity: JwtIdentity = IDENTITY, *, now: int = NOW) -> IdentityClaims:
    """Verify, then match; any refusal is ``IdentityRejected``."""
    claims = verify_identity_jwt(token, keys, issuer=identity.issuer, now=now)
    reason = match_jwt_identity(claims, identity)
    if reason is not None:
        raise IdentityRejected(reason)
    return claims


def refused(token: str, keys: IdentityKeys, match: str, identity: JwtIdentity = IDENTITY) -> None:
    with pytest.raises(IdentityRejected, match=match):
        check(token, keys, identity)


def test_the_good_token_passes(idp: JwtIssuer, keys: IdentityKeys) -> None:
    """The baseline each attack below departs from."""
    assert check(good(idp), keys).sub == SUB


# ---------------------------------------------------------------- the pure verifier and matcher


def test_wrong_issuer(keys: IdentityKeys) -> None:
    other = JwtIssuer("https://token.actions.githubusercontent.com.evil.example", now=NOW)
    refused(good(other), keys, "signature")  # its own keys under the same kids
    with pytest.raises(IdentityRejected, match="iss is not"):
        verify_identity_jwt(good(other), IdentityKeys.from_jwks(other.jwks()), issuer=ISS, now=NOW)


def test_wrong_issuer_with_the_right_keys(idp: JwtIssuer, keys: IdentityKeys) -> None:
    """Same keys, another iss (an issuer serving two tenants from one key set)."""
    token = idp.forge({"alg": "RS256", "kid": "rsa-1"}, {**idp.claims(sub=SUB, aud=AUD), "iss": ISS + "/"}, kid="rsa-1")
    refused(token, keys, "iss is not")


def test_wrong_audience(idp: JwtIssuer, keys: IdentityKeys) -> None:
    refused(idp.issue(sub=SUB, aud="https://github.com/acme", extra_claims=OWNER), keys, "audience")
    refused(idp.issue(sub=SUB, aud=["sts.amazonaws.com"], extra_claims=OWNER), keys, "audience")


def test_wrong_subject(idp: JwtIssuer, keys: IdentityKeys) -> None:
    for sub in ("repo:acme/widgets:ref:refs/heads/feature", "repo:acme/widgets:pull_request", SUB + "x"):
        refused(idp.issue(sub=sub, aud=AUD, extra_claims=OWNER), keys, "subject")


def test_wrong_claim_value_or_type(idp: JwtIssuer, keys: IdentityKeys) -> None:
    refused(good(idp, extra_claims={"repository_owner": "acme-evil"}), keys, "repository_owner")
    refused(good(idp, extra_claims={"repository_owner": ["acme"]}), keys, "repository_owner")
    refused(good(idp, extra_claims={}), keys, "missing")


def test_expired(idp: JwtIssuer, keys: IdentityKeys) -> None:
    refused(good(idp, now=NOW - 331, lifetime=300), keys, "expired")


def test_unknown_kid(idp: JwtIssuer, keys: IdentityKeys) -> None:
    rogue = JwtIssuer(ISS, now=NOW)
    kid = rogue.add_key("RS256", kid="rsa-unpublished")
    refused(rogue.issue(sub=SUB, aud=AUD, kid=kid, extra_claims=OWNER), keys, "no key 'rsa-unpublished'")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none(idp: JwtIssuer, keys: IdentityKeys, alg: str) -> None:
    body = idp.claims(sub=SUB, aud=AUD, extra_claims=OWNER)
    unsigned = idp.forge({"alg": alg, "typ": "JWT", "kid": "rsa-1"}, body, signature=b"")
    assert not looks_like_jwt(unsigned)
    refused(unsigned, keys, "compact JWS")
    with_junk = idp.forge({"alg": alg, "typ": "JWT", "kid": "rsa-1"}, body, signature=b"x")
    refused(with_junk, keys, "is not accepted")
    without_kid = idp.forge({"alg": alg}, body, signature=b"x")
    refused(without_kid, IdentityKeys.from_jwks({"keys": [idp.jwk("rsa-1")]}), "is not accepted")


def _public_key_forms(idp: JwtIssuer) -> dict[str, bytes]:
    """Every spelling of the RSA public key an HMAC-confusion attacker would try as the secret."""
    public = idp.public_key("rsa-1")
    assert isinstance(public, rsa.RSAPublicKey)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    jwk = idp.jwk("rsa-1")
    return {
        "pem": idp.public_pem("rsa-1"),
        "pem-no-newline": idp.public_pem("rsa-1").rstrip(b"\n"),
        "pem-pkcs1": public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
        "der": public.public_bytes(serialization.Encoding.DER, spki),
        "openssh": public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
        "jwk-json": json.dumps(jwk).encode(),
        "jwk-json-compact-sorted": json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode(),
        "jwk-jwks-document": json.dumps(idp.jwks()).encode(),
        "jwk-n": jwk["n"].encode(),
    }


@pytest.mark.parametrize(
    "form",
    [
        "pem",
        "pem-no-newline",
        "pem-pkcs1",
        "der",
        "openssh",
        "jwk-json",
        "jwk-json-compact-sorted",
        "jwk-jwks-document",
        "jwk-n",
    ],
)
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hs256_signed_with_the_rsa_public_key(idp: JwtIssuer, keys: IdentityKeys, form: str, alg: str) -> None:
    secret = _public_key_forms(idp)[form]
    token = idp.forge({"alg": alg, "typ": "JWT", "kid": "rsa-1"}, idp.claims(sub=SUB, aud=AUD), sign=hs256(secret))
    refused(token, keys, "is not accepted")
    with pytest.raises(IdentityRejected):
        unverified_route(token)  # refused before any key is fetched


@pytest.mark.parametrize(("alg", "kid"), [("RS256", "ec-1"), ("RS256", "ed-1"), ("ES256", "rsa-1"), ("EdDSA", "ec-1")])
def test_rs256_token_whose_kid_names_an_ec_key(idp: JwtIssuer, keys: IdentityKeys, alg: str, kid: str) -> None:
    """alg/key confusion: the token's alg must equal the named key's algorithm."""
    signer = idp.kid_for(alg)
    token = idp.forge({"alg": alg, "kid": kid}, idp.claims(sub=SUB, aud=AUD, extra_claims=OWNER), kid=signer)
    refused(token, keys, f"does not fit key '{kid}'")


def test_jku_header_injection(idp: JwtIssuer, keys: IdentityKeys) -> None:
    attacker = JwtIssuer(ISS, now=NOW)
    token = good(attacker, headers={"jku": "https://evil.example/jwks.json"})
    refused(token, keys, "header carries jku")


def test_x5u_header_injection(idp: JwtIssuer, keys: IdentityKeys) -> None:
    attacker = JwtIssuer(ISS, now=NOW)
    refused(good(attacker, headers={"x5u": "https://evil.example/cert.pem"}), keys, "header carries x5u")


def test_jwk_header_injection(idp: JwtIssuer, keys: IdentityKeys) -> None:
    """The attacker embeds its own public key and signs with the matching private key."""
    attacker = JwtIssuer(ISS, now=NOW)
    embedded = attacker.jwk("rsa-1")
    refused(good(attacker, headers={"jwk": embedded}), keys, "header carries jwk")
    refused(good(attacker, headers={"jwk": embedded, "kid": None}), keys, "header carries jwk")


def test_x5c_header_injection(idp: JwtIssuer, keys: IdentityKeys) -> None:
    refused(good(JwtIssuer(ISS, now=NOW), headers={"x5c": ["MIIB..."]}), keys, "header carries x5c")


def test_embedded_private_key_in_the_header(idp: JwtIssuer, keys: IdentityKeys) -> None:
    attacker = JwtIssuer(ISS, now=NOW)
    refused(good(attacker, headers={"jwk": private_jwk("rsa-1", attacker.private_key("rsa-1"))}), keys, "jwk")


def test_embedded_private_key_in_the_key_set(idp: JwtIssuer) -> None:
    """An issuer that publishes private key material is broken: its whole set is refused."""
    leaked = {"keys": [idp.jwk("ec-1"), private_jwk("rsa-1", idp.private_key("rsa-1"))]}
    with pytest.raises(KeySetError, match="private"):
        IdentityKeys.from_jwks(leaked)


def test_oversize_token(idp: JwtIssuer, keys: IdentityKeys) -> None:
    token = good(idp, extra_claims={**OWNER, "pad": "x" * MAX_IDENTITY_TOKEN_BYTES})
    assert not looks_like_jwt(token)
    refused(token, keys, "over 16384 bytes")
    with pytest.raises(IdentityRejected, match="over"):
        unverified_route(token)


def test_duplicate_json_keys_in_the_payload(idp: JwtIssuer, keys: IdentityKeys) -> None:
    """A lenient parser keeps the last ``sub``; a verifier and a logger could disagree."""
    body = json.dumps({**idp.claims(sub="repo:acme/other:ref:refs/heads/main", aud=AUD), **OWNER})
    body = body[:-1] + f', "sub": "{SUB}"}}'
    refused(idp.forge({"alg": "RS256", "kid": "rsa-1"}, body.encode(), kid="rsa-1"), keys, "duplicate key 'sub'")


def test_duplicate_json_keys_in_the_header(idp: JwtIssuer, keys: IdentityKeys) -> None:
    header = b'{"alg":"HS256","kid":"rsa-1","alg":"RS256"}'
    refused(idp.forge(header, idp.claims(sub=SUB, aud=AUD), kid="rsa-1"), keys, "duplicate key 'alg'")


@pytest.mark.parametrize(
    "kid",
    ["../../../../dev/null", "/etc/passwd", "..\\..\\keys", "rsa-1/../ec-1", "%2e%2e%2fjwks", "rsa-1\x00", ".."],
)
def test_kid_with_path_traversal(idp: JwtIssuer, keys: IdentityKeys, kid: str) -> None:
    token = good(idp, headers={"kid": kid})
    refused(token, keys, "grammar")
    with pytest.raises(IdentityRejected, match="grammar"):
        unverified_route(token)


def test_lifetime_over_the_cap(idp: JwtIssuer, keys: IdentityKeys) -> None:
    """A year-long token (Kubernetes' extended tokens) would make the replay record unbounded."""
    refused(good(idp, lifetime=365 * 24 * 3600), keys, "over the cap")
    body = idp.claims(sub=SUB, aud=AUD, exp=NOW + 25 * 3600, extra_claims={**OWNER, "iat": None, "nbf": None})
    refused(idp.forge({"alg": "RS256", "kid": "rsa-1"}, body, kid="rsa-1"), keys, "over the cap")


# ---------------------------------------------------------------- end to end: OidcKeys and a real issuer


@pytest.fixture
def live() -> Iterator[OidcIssuer]:
    with running_issuer() as issuer:
        yield issuer


def identity_of(issuer: OidcIssuer, **kw: Any) -> JwtIdentity:
    return JwtIdentity(issuer.issuer, AUD, SUB, (("repository_owner", "acme"),), **kw)


async def authenticate(keys: OidcKeys, token: str, policy: list[JwtIdentity], *, now: int) -> IdentityClaims:
    """What the broker does: route by the unverified issuer to a *policy* issuer, fetch its
    keys, verify, match."""
    route = unverified_route(token)
    candidates = [i for i in policy if i.issuer == route.issuer]
    if not candidates:
        raise IdentityRejected("no policy identity names this issuer")
    identity = candidates[0]
    found = await keys.keys_for(identity.issuer, identity.jwks_uri, route.kid)
    claims = verify_identity_jwt(token, found, issuer=identity.issuer, now=now)
    reason = match_jwt_identity(claims, identity)
    if reason is not None:
        raise IdentityRejected(reason)
    return claims


def e2e(issuer: OidcIssuer, token: str, *, keys: OidcKeys | None = None, **kw: Any) -> IdentityClaims:
    oidc = keys or OidcKeys(timeout=1.0)
    return asyncio.run(authenticate(oidc, token, [identity_of(issuer, **kw)], now=int(time.time())))


def e2e_refused(issuer: OidcIssuer, token: str, match: str, **kw: Any) -> None:
    with pytest.raises(IdentityRejected, match=match):
        e2e(issuer, token, **kw)


def jwks_fetches(issuer: OidcIssuer) -> int:
    return issuer.fetches[issuer.jwks_path]


@pytest.mark.integration
@pytest.mark.enable_socket
@pytest.mark.allow_hosts(["127.0.0.1"])
class TestEndToEnd:
    def test_the_good_token_passes(self, live: OidcIssuer) -> None:
        assert e2e(live, good(live)).sub == SUB
        assert (live.fetches[live.discovery_path], jwks_fetches(live)) == (1, 1)

    def test_wrong_issuer(self, live: OidcIssuer) -> None:
        with running_issuer() as evil:
            token = good(evil)  # iss = the evil issuer: no policy names it
            e2e_refused(live, token, "no policy identity names this issuer")
            assert evil.fetches.total() == 0  # never asked for keys
            forged = evil.forge(
                {"alg": "RS256", "kid": "rsa-1"}, {**evil.claims(sub=SUB, aud=AUD), **OWNER, "iss": live.issuer}
            )
            e2e_refused(live, forged, "signature")  # claims the good issuer, signed by the evil one
            assert evil.fetches.total() == 0

    def test_wrong_audience(self, live: OidcIssuer) -> None:
        e2e_refused(live, live.issue(sub=SUB, aud="https://github.com/acme", extra_claims=OWNER), "audience")

    def test_wrong_subject(self, live: OidcIssuer) -> None:
        token = live.issue(sub="repo:acme/widgets:ref:refs/heads/evil", aud=AUD, extra_claims=OWNER)
        e2e_refused(live, token, "subject")

    def test_expired(self, live: OidcIssuer) -> None:
        e2e_refused(live, good(live, now=int(time.time()) - 400, lifetime=300), "expired")

    def test_unknown_kid_refetches_at_most_once_per_cooldown(self, live: OidcIssuer) -> None:
        clock = [1000.0]
        keys = OidcKeys(clock=lambda: clock[0], cooldown=30.0)
        rogue = JwtIssuer(live.issuer)
        e2e(live, good(live), keys=keys)
        assert jwks_fetches(live) == 1
        clock[0] += 30
        for n in range(10):
            kid = rogue.add_key("RS256", kid=f"rsa-rogue-{n}")
            e2e_refused(live, good(rogue, kid=kid), f"no key 'rsa-rogue-{n}'", keys=keys)
            clock[0] += 1
        assert jwks_fetches(live) == 2  # ten unknown kids in ten seconds: one refetch
        clock[0] += 30
        e2e_refused(live, good(rogue, kid="rsa-rogue-0"), "no key", keys=keys)
        assert jwks_fetches(live) == 3

    def test_alg_none(self, live: OidcIssuer) -> None:
        body = live.claims(sub=SUB, aud=AUD, extra_claims=OWNER)
        e2e_refused(live, live.forge({"alg": "none", "kid": "rsa-1"}, body, signature=b"x"), "is not accepted")
        assert jwks_fetches(live) == 0

    @pytest.mark.parametrize("form", ["pem", "pem-pkcs1", "der", "jwk-json", "jwk-json-compact-sorted", "jwk-n"])
    def test_hs256_signed_with_the_rsa_public_key(self, live: OidcIssuer, form: str) -> None:
        secret = _public_key_forms(live)[form]
        token = live.forge({"alg": "HS256", "kid": "rsa-1"}, live.claims(sub=SUB, aud=AUD), sign=hs256(secret))
        e2e_refused(live, token, "is not accepted")
        assert jwks_fetches(live) == 0

    def test_rs256_token_whose_kid_names_an_ec_key(self, live: OidcIssuer) -> None:
        token = live.forge({"alg": "RS256", "kid": "ec-1"}, {**live.claims(sub=SUB, aud=AUD), **OWNER}, kid="rsa-1")
        e2e_refused(live, token, "does not fit key 'ec-1'")

    @pytest.mark.parametrize("field", ["jku", "x5u"])
    def test_url_header_injection_fetches_nothing(self, live: OidcIssuer, field: str) -> None:
        with running_issuer() as evil:
            evil_keys = evil.jwks_uri
            token = good(evil, headers={field: evil_keys}, extra_claims={**OWNER, "iss": live.issuer})
            e2e_refused(live, token, f"header carries {field}")
            assert evil.fetches.total() == 0
            assert live.fetches.total() == 0

    def test_jwk_header_injection(self, live: OidcIssuer) -> None:
        attacker = JwtIssuer(live.issuer)
        e2e_refused(live, good(attacker, headers={"jwk": attacker.jwk("rsa-1")}), "header carries jwk")

    def test_embedded_private_key_in_the_key_set(self, live: OidcIssuer) -> None:
        live.jwks_body = json.dumps({"keys": [private_jwk("rsa-1", live.private_key("rsa-1"))]}).encode()
        with pytest.raises(BackendUnavailable, match="private key material"):
            e2e(live, good(live))

    def test_oversize_token(self, live: OidcIssuer) -> None:
        e2e_refused(live, good(live, extra_claims={**OWNER, "pad": "x" * MAX_IDENTITY_TOKEN_BYTES}), "over")
        assert live.fetches.total() == 0

    def test_duplicate_json_keys(self, live: OidcIssuer) -> None:
        body = json.dumps({**live.claims(sub="repo:acme/other:ref:refs/heads/main", aud=AUD), **OWNER})
        body = body[:-1] + f', "sub": "{SUB}"}}'
        e2e_refused(live, live.forge({"alg": "RS256", "kid": "rsa-1"}, body.encode(), kid="rsa-1"), "duplicate key")

    def test_kid_with_path_traversal(self, live: OidcIssuer) -> None:
        e2e_refused(live, good(live, headers={"kid": "../jwks.json"}), "grammar")
        assert live.fetches.total() == 0

    def test_lifetime_over_the_cap(self, live: OidcIssuer) -> None:
        e2e_refused(live, good(live, lifetime=2 * 24 * 3600), "over the cap")

    def test_discovery_issuer_mix_up(self, live: OidcIssuer) -> None:
        """The discovery document names another issuer: its keys are not this issuer's."""
        live.discovery_overrides = {"issuer": "https://accounts.google.com"}
        with pytest.raises(BackendUnavailable, match="mix-up"):
            e2e(live, good(live))
        assert jwks_fetches(live) == 0

    def test_discovery_jwks_uri_plain_http_to_another_host(self, live: OidcIssuer) -> None:
        live.discovery_overrides = {"jwks_uri": "http://keys.example/jwks.json"}
        with pytest.raises(BackendUnavailable, match="https"):
            e2e(live, good(live))

    def test_jwks_redirect_is_refused(self, live: OidcIssuer) -> None:
        with running_issuer() as elsewhere:
            live.redirects[live.jwks_path] = elsewhere.jwks_uri
            with pytest.raises(BackendUnavailable, match="fetch failed"):
                e2e(live, good(live))
            assert jwks_fetches(elsewhere) == 0  # the redirect target was never asked

    def test_discovery_redirect_is_refused(self, live: OidcIssuer) -> None:
        with running_issuer() as elsewhere:
            live.redirects[live.discovery_path] = elsewhere.base_url + elsewhere.discovery_path
            with pytest.raises(BackendUnavailable, match="fetch failed"):
                e2e(live, good(live))
            assert elsewhere.fetches.total() == 0

    def test_key_confusion_across_issuers(self, live: OidcIssuer) -> None:
        """Two policy issuers: a token routed to one is never checked with the other's keys."""
        with running_issuer() as other:
            token = other.forge(
                {"alg": "RS256", "kid": "rsa-1"}, {**other.claims(sub=SUB, aud=AUD), **OWNER, "iss": live.issuer}
            )
            policy = [identity_of(other), identity_of(live)]
            with pytest.raises(IdentityRejected, match="signature"):
                asyncio.run(authenticate(OidcKeys(), token, policy, now=int(time.time())))
            assert other.fetches.total() == 0
