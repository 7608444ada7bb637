"""``OidcKeys`` against a real OIDC issuer on loopback (tests/servers/oidc_issuer.py).

Discovery, explicit ``jwks_uri``, caching, refresh, the unknown-kid cooldown, rotation,
staleness with an injected clock, and failing closed (``BackendUnavailable``) in bounded
time when the issuer is down or hangs.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from broker.backends.oidc_keys import OidcKeys
from broker.errors import BackendUnavailable
from broker.identity.jwt_identity import IdentityKeys, IdentityRejected, match_jwt_identity, verify_identity_jwt
from broker.policy.model import JwtIdentity
from tests.servers.oidc_issuer import OidcIssuer, running_issuer

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

SUB = "repo:acme/widgets:ref:refs/heads/main"
AUD = "capbroker"
T = TypeVar("T")


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def idp() -> Iterator[OidcIssuer]:
    with running_issuer() as issuer:
        yield issuer


@pytest.fixture
def clock() -> Clock:
    return Clock()


def run(make: Callable[[], Awaitable[T]]) -> T:
    async def body() -> T:
        return await make()

    return asyncio.run(body())


def counts(idp: OidcIssuer) -> tuple[int, int]:
    """(discovery fetches, JWKS fetches)"""
    return idp.fetches[idp.discovery_path], idp.fetches[idp.jwks_path]


def oidc(clock: Clock | None = None, **kw: Any) -> OidcKeys:
    return OidcKeys(clock=clock or time.monotonic, **kw)


# ---------------------------------------------------------------- where the keys come from


def test_discovery_then_jwks(idp: OidcIssuer) -> None:
    keys = oidc()
    found = run(lambda: keys.keys_for(idp.issuer, None, "rsa-1"))
    assert found.kids == {"rsa-1", "ec-1", "ed-1"}
    assert counts(idp) == (1, 1)
    keys.close()


def test_discovery_for_an_issuer_with_a_path() -> None:
    with running_issuer(path="/tenants/t1") as idp:
        keys = oidc()
        found = run(lambda: keys.keys_for(idp.issuer, None, "ec-1"))
        assert idp.issuer.endswith("/tenants/t1")
        assert "ec-1" in found
        assert idp.fetches["/tenants/t1/.well-known/openid-configuration"] == 1
        assert idp.fetches["/tenants/t1/jwks.json"] == 1
        keys.close()


def test_closed_and_reopened(idp: OidcIssuer) -> None:
    """``aclose`` stops the fetch threads; a later fetch starts new ones."""
    keys = oidc()

    async def twice() -> None:
        await keys.keys_for(idp.issuer, idp.jwks_uri, None)
        await keys.aclose()
        await keys.aclose()
        await keys.keys_for(idp.issuer, None, None)

    run(twice)
    assert counts(idp) == (1, 2)
    keys.close()


def test_explicit_jwks_uri_skips_discovery(idp: OidcIssuer) -> None:
    keys = oidc()
    found = run(lambda: keys.keys_for(idp.issuer, idp.jwks_uri, "ed-1"))
    assert "ed-1" in found
    assert counts(idp) == (0, 1)
    keys.close()


def test_end_to_end_a_token_verifies_and_matches(idp: OidcIssuer) -> None:
    keys = oidc()
    token = idp.issue(sub=SUB, aud=AUD, alg="ES256", extra_claims={"repository_owner": "acme"})
    found = run(lambda: keys.keys_for(idp.issuer, None, "ec-1"))
    claims = verify_identity_jwt(token, found, issuer=idp.issuer, now=int(time.time()))
    identity = JwtIdentity(idp.issuer, AUD, SUB, (("repository_owner", "acme"),))
    assert match_jwt_identity(claims, identity) is None
    keys.close()


def test_environment_proxies_are_not_used(idp: OidcIssuer) -> None:
    """A fresh process whose environment names a dead proxy for everything still fetches
    directly (urllib reads proxy settings when the opener is built, at import)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # bound, never listening
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy",)}
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env[name] = f"http://127.0.0.1:{dead}"
    script = (
        "import asyncio, sys\n"
        "from broker.backends.oidc_keys import OidcKeys\n"
        "keys = asyncio.run(OidcKeys().keys_for(sys.argv[1], sys.argv[2], None))\n"
        "print(len(keys))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, idp.issuer, idp.jwks_uri],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "3"
    assert counts(idp) == (0, 1)


# ---------------------------------------------------------------- caching


def test_cached_between_calls(idp: OidcIssuer) -> None:
    keys = oidc()

    async def three() -> None:
        for kid in ("rsa-1", "ec-1", "ed-1"):
            await keys.keys_for(idp.issuer, None, kid)

    run(three)
    assert counts(idp) == (1, 1)
    keys.close()


def test_concurrent_callers_share_one_fetch(idp: OidcIssuer) -> None:
    keys = oidc()

    async def many() -> list[IdentityKeys]:
        return await asyncio.gather(*(keys.keys_for(idp.issuer, None, "rsa-1") for _ in range(20)))

    sets = run(many)
    assert all(s is sets[0] for s in sets)
    assert counts(idp) == (1, 1)
    keys.close()


def test_concurrent_unknown_kids_share_one_refetch(idp: OidcIssuer, clock: Clock) -> None:
    keys = oidc(clock)

    async def many() -> None:
        await keys.keys_for(idp.issuer, None, "rsa-1")
        clock.t += 31
        await asyncio.gather(*(keys.keys_for(idp.issuer, None, f"nope-{i}") for i in range(20)))

    run(many)
    assert counts(idp) == (2, 2)
    keys.close()


def test_refreshed_every_refresh_seconds(idp: OidcIssuer, clock: Clock) -> None:
    keys = oidc(clock, refresh=300.0)
    run(lambda: keys.keys_for(idp.issuer, None, "rsa-1"))
    clock.t += 299
    run(lambda: keys.keys_for(idp.issuer, None, "rsa-1"))
    assert counts(idp) == (1, 1)
    clock.t += 1
    run(lambda: keys.keys_for(idp.issuer, None, "rsa-1"))
    assert counts(idp) == (2, 2)
    keys.close()


def test_a_removed_key_disappears_on_refresh(idp: OidcIssuer, clock: Clock) -> None:
    """An issuer that unpublishes a (compromised) key is obeyed within ``refresh``."""
    keys = oidc(clock)
    assert "rsa-1" in run(lambda: keys.keys_for(idp.issuer, None, "rsa-1"))
    idp.rotate("RS256")
    clock.t += 300
    found = run(lambda: keys.keys_for(idp.issuer, None, "rsa-1"))
    assert "rsa-1" not in found
    assert "rsa-2" in found
    keys.close()


def test_unknown_kid_refetches_at_most_once_per_cooldown(idp: OidcIssuer, clock: Clock) -> None:
    keys = oidc(clock, cooldown=30.0)
    run(lambda: keys.keys_for(idp.issuer, None, "rsa-1"))
    clock.t += 30  # the first fetch was an attempt too: the cooldown counts from it
    for _ in range(5):
        assert "ghost" not in run(lambda: keys.keys_for(idp.issuer, None, "ghost"))
        clock.t += 5
    assert counts(idp) == (2, 2)  # one refetch for five unknown-kid lookups within 30 s
    clock.t += 10
    run(lambda: keys.keys_for(idp.issuer, None, "ghost"))
    assert counts(idp) == (3, 3)
    keys.close()


def test_a_known_kid_causes_no_refetch(idp: OidcIssuer, clock: Clock) -> None:
    keys = oidc(clock)
    run(lambda: keys.keys_for(idp.issuer, None, "rsa-1"))
    clock.t += 100
    run(lambda: keys.keys_for(idp.issuer, None, "ec-1"))
    run(lambda: keys.keys_for(idp.issuer, None, None))
    assert counts(idp) == (1, 1)
    keys.close()


def test_rotation_new_kid_is_fetched_once_and_accepted(idp: OidcIssuer, clock: Clock) -> None:
    keys = oidc(clock)
    run(lambda: keys.keys_for(idp.issuer, None, "rsa-1"))
    new_kid = idp.rotate("RS256")
    token = idp.issue(sub=SUB, aud=AUD)  # signed by the new key
    clock.t += 31
    found = run(lambda: keys.keys_for(idp.issuer, None, new_kid))
    assert counts(idp) == (2, 2)
    assert verify_identity_jwt(token, found, issuer=idp.issuer, now=int(time.time())).sub == SUB
    old = idp.forge({"alg": "RS256", "kid": "rsa-1"}, idp.claims(sub=SUB, aud=AUD), kid=new_kid)
    with pytest.raises(IdentityRejected, match="no key 'rsa-1'"):
        verify_identity_jwt(old, found, issuer=idp.issuer, now=int(time.time()))
    keys.close()


def test_issuers_are_bounded() -> None:
    with running_issuer(path="/a") as a, running_issuer(path="/b") as b:
        keys = oidc(max_issuers=1)
        run(lambda: keys.keys_for(a.issuer, None, None))
        run(lambda: keys.keys_for(b.issuer, None, None))  # a is dropped
        run(lambda: keys.keys_for(a.issuer, None, None))
        assert counts(a) == (2, 2)
        assert counts(b) == (1, 1)
        keys.close()


def test_the_least_recently_used_issuer_is_dropped() -> None:
    with running_issuer(path="/a") as a, running_issuer(path="/b") as b, running_issuer(path="/c") as c:
        keys = oidc(max_issuers=2)

        async def visit(*issuers: OidcIssuer) -> None:
            for issuer in issuers:
                await keys.keys_for(issuer.issuer, None, None)

        run(lambda: visit(a, b, a, c, a))  # c pushes out b, the least recently used, not a
        assert (counts(a), counts(b), counts(c)) == ((1, 1), (1, 1), (1, 1))
        run(lambda: keys.keys_for(b.issuer, None, None))
        assert counts(b) == (2, 2)
        keys.close()


def test_entries_are_per_issuer_and_jwks_uri(idp: OidcIssuer) -> None:
    keys = oidc()
    run(lambda: keys.keys_for(idp.issuer, None, None))
    run(lambda: keys.keys_for(idp.issuer, idp.jwks_uri, None))
    assert counts(idp) == (1, 2)
    keys.close()


# ---------------------------------------------------------------- failing closed


def test_issuer_down_with_a_cached_set_until_max_stale(idp: OidcIssuer, clock: Clock) -> None:
    keys = oidc(clock, cooldown=30.0, refresh=300.0, max_stale=3600.0)
    first = run(lambda: keys.keys_for(idp.issuer, None, "rsa-1"))
    idp.fail(503)
    clock.t += 300
    assert run(lambda: keys.keys_for(idp.issuer, None, "rsa-1")) is first  # refresh failed, old set kept
    assert idp.fetches[idp.discovery_path] == 2
    clock.t += 3300  # exactly max_stale after the last good fetch
    assert run(lambda: keys.keys_for(idp.issuer, None, "rsa-1")) is first
    clock.t += 1
    with pytest.raises(BackendUnavailable, match="no usable key set") as e:
        run(lambda: keys.keys_for(idp.issuer, None, "rsa-1"))
    assert e.value.code == "backend_unavailable"
    idp.recover()
    clock.t += 30
    assert "rsa-1" in run(lambda: keys.keys_for(idp.issuer, None, "rsa-1"))
    keys.close()


def test_issuer_down_with_no_set_fails_quickly(idp: OidcIssuer, clock: Clock) -> None:
    idp.fail(503)
    keys = oidc(clock)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="fetch failed: OSError"):
        run(lambda: keys.keys_for(idp.issuer, None, "rsa-1"))
    assert time.monotonic() - started < 1.0
    with pytest.raises(BackendUnavailable) as e:  # within the cooldown: no new fetch
        run(lambda: keys.keys_for(idp.issuer, None, "rsa-1"))
    assert e.value.retry_after == 30.0
    assert counts(idp) == (1, 0)
    keys.close()


def test_unreachable_issuer_fails_quickly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        keys = oidc()
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            run(lambda: keys.keys_for(f"http://127.0.0.1:{port}", None, "k"))
        assert time.monotonic() - started < 1.0
        keys.close()


@pytest.mark.parametrize("explicit", [False, True])
def test_hanging_issuer_fails_within_the_timeout(idp: OidcIssuer, explicit: bool) -> None:
    idp.hang()
    keys = oidc(timeout=0.5)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="timed out"):
        run(lambda: keys.keys_for(idp.issuer, idp.jwks_uri if explicit else None, "rsa-1"))
    assert time.monotonic() - started < 1.2
    idp.recover()
    keys.close()


def test_hanging_issuer_with_a_cached_set_keeps_serving(idp: OidcIssuer, clock: Clock) -> None:
    keys = oidc(clock, timeout=0.3)
    first = run(lambda: keys.keys_for(idp.issuer, None, "rsa-1"))
    idp.hang()
    clock.t += 300
    started = time.monotonic()
    assert run(lambda: keys.keys_for(idp.issuer, None, "rsa-1")) is first
    assert time.monotonic() - started < 1.0
    idp.recover()
    keys.close()


def test_discovery_and_jwks_together_take_at_most_the_timeout() -> None:
    """Each fetch alone is quick enough; both together are not: one deadline covers both."""
    doc = json.dumps({"issuer": "https://issuer.example", "jwks_uri": "https://keys.example/jwks"}).encode()

    async def slow(url: str) -> bytes:
        await asyncio.sleep(0.3)
        return doc if url.endswith("openid-configuration") else b'{"keys": []}'

    keys = OidcKeys(fetch=slow, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="timed out"):
        run(lambda: keys.keys_for("https://issuer.example", None, None))
    assert time.monotonic() - started < 2.0


def test_callers_queued_behind_a_failing_fetch_do_not_fetch_again(idp: OidcIssuer) -> None:
    idp.hang()
    keys = oidc(timeout=0.3)

    async def many() -> list[object]:
        return await asyncio.gather(*(keys.keys_for(idp.issuer, None, "k") for _ in range(10)), return_exceptions=True)

    started = time.monotonic()
    results = run(many)
    assert all(isinstance(r, BackendUnavailable) for r in results)
    assert time.monotonic() - started < 1.0
    assert idp.fetches[idp.discovery_path] == 1
    idp.recover()
    keys.close()


def test_malformed_jwks_keeps_the_last_good_set(idp: OidcIssuer, clock: Clock) -> None:
    keys = oidc(clock)
    first = run(lambda: keys.keys_for(idp.issuer, None, "rsa-1"))
    idp.jwks_body = b'{"keys": [}'
    clock.t += 300
    assert run(lambda: keys.keys_for(idp.issuer, None, "rsa-1")) is first
    assert counts(idp) == (2, 2)
    keys.close()


def test_oversize_jwks_is_a_failed_fetch(idp: OidcIssuer) -> None:
    idp.jwks_body = json.dumps({"keys": [], "pad": "x" * 5000}).encode()
    keys = oidc(max_bytes=4096)
    with pytest.raises(BackendUnavailable, match="OSError"):
        run(lambda: keys.keys_for(idp.issuer, idp.jwks_uri, None))
    keys.close()


def test_an_empty_key_set_is_a_successful_fetch(idp: OidcIssuer) -> None:
    """An issuer that withdraws every key is obeyed: nothing verifies, nothing is stale."""
    idp.jwks_body = b'{"keys": []}'
    keys = oidc()
    assert len(run(lambda: keys.keys_for(idp.issuer, None, "rsa-1"))) == 0
    keys.close()


def test_injected_fetch_is_used() -> None:
    calls: list[str] = []
    doc = {"issuer": "https://issuer.example", "jwks_uri": "https://keys.example/jwks"}

    async def fetch(url: str) -> bytes:
        calls.append(url)
        return json.dumps(doc if url.endswith("openid-configuration") else {"keys": []}).encode()

    keys = OidcKeys(fetch=fetch)
    assert len(run(lambda: keys.keys_for("https://issuer.example", None, None))) == 0
    assert calls == ["https://issuer.example/.well-known/openid-configuration", "https://keys.example/jwks"]


def test_an_injected_fetch_that_raises_is_a_failed_fetch() -> None:
    async def fetch(url: str) -> bytes:
        raise RuntimeError("boom")

    with pytest.raises(BackendUnavailable, match="RuntimeError"):
        run(lambda: OidcKeys(fetch=fetch).keys_for("https://issuer.example", None, None))


@pytest.mark.parametrize(
    ("issuer", "jwks_uri"),
    [("http://issuer.example", None), ("https://issuer.example", "http://keys.example/jwks"), ("file:///x", None)],
)
def test_only_https_or_loopback_urls(issuer: str, jwks_uri: str | None) -> None:
    with pytest.raises(ValueError, match="https"):
        run(lambda: OidcKeys().keys_for(issuer, jwks_uri, None))


@pytest.mark.parametrize(
    "kw",
    [{"cooldown": 0}, {"cooldown": 400.0}, {"refresh": 4000.0}, {"timeout": 0}, {"max_bytes": 0}, {"max_issuers": 0}],
)
def test_settings_are_checked(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"need|positive"):
        OidcKeys(**kw)
