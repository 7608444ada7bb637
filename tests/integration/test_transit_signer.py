"""Transit signing against a real OpenBao, with the broker's least-privilege token."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from broker.backends import transit
from broker.backends.transit import TransitSigningBackend, ensure_key
from broker.errors import BackendUnavailable
from broker.service.ports import SigningBackend
from broker.token.algorithms import P256_ORDER, Algorithm
from broker.token.codec import parse_compact
from broker.token.keys import KeySet
from broker.token.verify import verify_token
from tests.helpers import AUDIENCE, ISSUER, NOW, claims
from tests.servers.processes import BaoServer
from tests.servers.vault_setup import admin_client, setup_transit

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

_names = itertools.count()


def fresh_key(bao: BaoServer, alg: Algorithm, *, rotate: bool = False) -> tuple[str, str]:
    """A new Transit key of its own, and a non-root token with only the broker's policy."""
    key = f"t-{alg.lower()}-{next(_names)}"
    return key, setup_transit(bao, key=key, alg=alg, rotate=rotate)


def backend(bao: BaoServer, key: str, token: str, alg: Algorithm, refresh: float = 10.0) -> TransitSigningBackend:
    return TransitSigningBackend(addr=bao.addr, token=token, key=key, alg=alg, refresh=refresh)


def verified(token: str, keys: KeySet) -> None:
    assert verify_token(token, keys, issuer=ISSUER, audience=AUDIENCE, now=NOW) == claims()


def latest_version(bao: BaoServer, key: str) -> int:
    return int(admin_client(bao).secrets.transit.read_key(name=key)["data"]["latest_version"])


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_sign_verifies_against_the_published_keyset(bao_server: BaoServer, alg: Algorithm) -> None:
    key, token = fresh_key(bao_server, alg)
    assert token != bao_server.root_token

    async def run() -> tuple[str, KeySet]:
        b: SigningBackend = backend(bao_server, key, token, alg)
        try:
            await b.check()
            return await b.sign(claims()), await b.keyset()
        finally:
            await b.aclose()

    signed, keys = asyncio.run(run())
    parsed = parse_compact(signed)
    assert (parsed.alg, parsed.kid) == (alg, f"{key}-v1")
    assert [k.kid for k in keys] == [f"{key}-v1"]
    assert keys.key_for(f"{key}-v1").alg == alg  # type: ignore[union-attr]
    verified(signed, keys)


def test_es256_tokens_are_always_low_s(bao_server: BaoServer) -> None:
    """Vault's jws marshaling does not normalise S; half of its signatures are high-S,
    which our verifier refuses. 64 tokens all low-S: a miss is a 2**-64 chance."""
    key, token = fresh_key(bao_server, "ES256")

    async def run() -> tuple[list[str], KeySet]:
        b = backend(bao_server, key, token, "ES256")
        try:
            return list(await asyncio.gather(*(b.sign(claims()) for _ in range(64)))), await b.keyset()
        finally:
            await b.aclose()

    tokens, keys = asyncio.run(run())
    for signed in tokens:
        s = int.from_bytes(parse_compact(signed).signature[32:], "big")
        assert 0 < s <= P256_ORDER // 2
        verified(signed, keys)


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_rotation_keeps_old_tokens_verifying(bao_server: BaoServer, alg: Algorithm) -> None:
    key, token = fresh_key(bao_server, alg, rotate=True)

    async def run() -> tuple[str, str, str, KeySet]:
        b = backend(bao_server, key, token, alg)
        try:
            old = await b.sign(claims())
            kid = await b.rotate()
            return old, kid, await b.sign(claims()), await b.keyset()
        finally:
            await b.aclose()

    old, kid, new, keys = asyncio.run(run())
    assert kid == f"{key}-v2"
    assert parse_compact(old).kid == f"{key}-v1"
    assert parse_compact(new).kid == f"{key}-v2"
    assert sorted(k.kid for k in keys) == [f"{key}-v1", f"{key}-v2"]
    verified(old, keys)
    verified(new, keys)


def test_rotation_by_another_process_is_picked_up_after_refresh(bao_server: BaoServer) -> None:
    key, token = fresh_key(bao_server, "EdDSA", rotate=True)

    async def run() -> None:
        first = backend(bao_server, key, token, "EdDSA", refresh=0.2)
        stale = backend(bao_server, key, token, "EdDSA", refresh=3600)  # keeps its first read
        other = backend(bao_server, key, token, "EdDSA")  # e.g. `broker keys rotate`
        try:
            assert parse_compact(await first.sign(claims())).kid == f"{key}-v1"
            stale_keys = await stale.keyset()
            assert await other.rotate() == f"{key}-v2"

            # within the refresh interval: still v1, the version it publishes
            assert parse_compact(await first.sign(claims())).kid == f"{key}-v1"
            await asyncio.sleep(0.25)
            picked_up = await first.sign(claims())
            assert parse_compact(picked_up).kid == f"{key}-v2"
            verified(picked_up, await first.keyset())

            # a backend that has not re-read the key signs with the version it publishes
            # (Vault is told the version: without it Vault would sign with v2 under a v1 kid)
            from_stale = await stale.sign(claims())
            assert parse_compact(from_stale).kid == f"{key}-v1"
            verified(from_stale, stale_keys)
        finally:
            for b in (first, stale, other):
                await b.aclose()

    asyncio.run(run())


def test_the_broker_token_cannot_rotate(bao_server: BaoServer) -> None:
    """Decision: rotation needs the operator's rotate policy; the broker's own token gets
    403, which surfaces as BackendUnavailable("vault: Forbidden") (never Vault's body),
    and the key is left as it was."""
    key, token = fresh_key(bao_server, "EdDSA")

    async def run() -> None:
        b = backend(bao_server, key, token, "EdDSA")
        try:
            with pytest.raises(BackendUnavailable) as e:
                await b.rotate()
            assert str(e.value) == "vault: Forbidden"
            assert e.value.__cause__ is None
            assert e.value.__suppress_context__
            await b.check()  # signing still works
        finally:
            await b.aclose()

    asyncio.run(run())
    assert latest_version(bao_server, key) == 1


def test_a_bad_token_fails_closed_without_echoing_it(bao_server: BaoServer) -> None:
    key, _ = fresh_key(bao_server, "EdDSA")
    bad = "hvs.not-a-real-token-0123456789"

    async def run() -> None:
        b = backend(bao_server, key, bad, "EdDSA")
        try:
            for op in (lambda: b.sign(claims()), b.keyset, b.check):
                with pytest.raises(BackendUnavailable) as e:
                    await op()
                assert str(e.value) == "vault: Forbidden"
            assert bad not in repr(b)
        finally:
            await b.aclose()

    asyncio.run(run())


def test_a_key_of_the_other_type_is_refused(bao_server: BaoServer) -> None:
    """An ES256 backend pointed at an ed25519 key never signs: check() fails."""
    key, token = fresh_key(bao_server, "EdDSA")

    async def run() -> None:
        b = backend(bao_server, key, token, "ES256")
        try:
            with pytest.raises(BackendUnavailable, match="is not ecdsa-p256"):
                await b.check()
            with pytest.raises(BackendUnavailable, match="is not ecdsa-p256"):
                await b.sign(claims())
        finally:
            await b.aclose()

    asyncio.run(run())
    with pytest.raises(ValueError, match="not ecdsa-p256"):
        ensure_key(addr=bao_server.addr, token=bao_server.root_token, key=key, alg="ES256")


def test_ensure_key_is_idempotent_and_needs_an_admin_token(bao_server: BaoServer) -> None:
    key, token = fresh_key(bao_server, "ES256")
    ensure_key(addr=bao_server.addr, token=bao_server.root_token, key=key, alg="ES256")  # again: no change
    assert latest_version(bao_server, key) == 1
    with pytest.raises(BackendUnavailable, match=r"^vault: Forbidden$"):
        ensure_key(addr=bao_server.addr, token=token, key=f"{key}-new", alg="ES256")


@pytest.mark.parametrize(("refresh", "max_age"), [(0.5, 0.5), (10, transit.KEYSET_MAX_AGE)])
def test_keyset_is_cached_for_the_refresh_interval_at_most_a_second(
    bao_server: BaoServer, refresh: float, max_age: float
) -> None:
    """The versions verification trusts are at most a second old whatever ``refresh`` says
    (issue 12 reproduction 8: a retired version still verified at introspection)."""
    key, token = fresh_key(bao_server, "EdDSA")
    now = [100.0]

    async def run() -> None:
        b = TransitSigningBackend(addr=bao_server.addr, token=token, key=key, refresh=refresh, clock=lambda: now[0])
        try:
            first = await b.keyset()
            admin_client(bao_server).secrets.transit.rotate_key(name=key)
            now[0] += max_age - 0.01
            assert await b.keyset() is first
            now[0] += 0.01
            assert sorted(k.kid for k in await b.keyset()) == [f"{key}-v1", f"{key}-v2"]
        finally:
            await b.aclose()

    asyncio.run(run())


def test_versions_below_min_decryption_version_are_not_published(bao_server: BaoServer) -> None:
    key, token = fresh_key(bao_server, "EdDSA")
    admin = admin_client(bao_server)
    for _ in range(3):
        admin.secrets.transit.rotate_key(name=key)
    admin.secrets.transit.update_key_configuration(name=key, min_decryption_version=3)

    async def run() -> KeySet:
        b = backend(bao_server, key, token, "EdDSA")
        try:
            return await b.keyset()
        finally:
            await b.aclose()

    assert sorted(k.kid for k in asyncio.run(run())) == [f"{key}-v3", f"{key}-v4"]


def test_a_signature_that_does_not_verify_never_leaves_the_backend(
    bao_server: BaoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every Vault signature is checked against the published key before it becomes a
    token: here one bit of it is flipped on the way back."""
    key, token = fresh_key(bao_server, "EdDSA")
    parse = transit._signature

    def flipped(*args: Any) -> bytes:
        good = parse(*args)
        return bytes([good[0] ^ 1]) + good[1:]

    monkeypatch.setattr(transit, "_signature", flipped)

    async def run() -> None:
        b = backend(bao_server, key, token, "EdDSA")
        try:
            for op in (lambda: b.sign(claims()), b.check):
                with pytest.raises(BackendUnavailable, match="does not verify"):
                    await op()
        finally:
            await b.aclose()

    asyncio.run(run())


def test_after_aclose_every_call_fails_closed(bao_server: BaoServer) -> None:
    key, token = fresh_key(bao_server, "EdDSA")

    async def run() -> None:
        b = backend(bao_server, key, token, "EdDSA")
        await b.check()
        await b.aclose()
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="closed"):
            await b.sign(claims())
        assert time.monotonic() - started < 0.5

    asyncio.run(run())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"addr": "file:///etc/passwd"}, "http"),
        ({"key": "../sys"}, "key name"),
        ({"key": "x" * 49}, "key name"),
        ({"mount": "transit/../sys"}, "mount"),
        ({"alg": "RS256"}, "alg"),
        ({"token": ""}, "token"),
        ({"timeout": 0}, "timeout"),
        ({"refresh": -1}, "refresh"),
    ],
)
def test_constructor_refuses_bad_settings(kwargs: dict[str, object], match: str) -> None:
    settings: dict[str, object] = {"addr": "http://127.0.0.1:1", "token": "t"} | kwargs
    with pytest.raises(ValueError, match=match):
        TransitSigningBackend(**settings)  # type: ignore[arg-type]


def test_a_version_retired_after_a_rotation_is_left_at_once_not_after_refresh(bao_server: BaoServer) -> None:
    """Issue 12 reproduction 8: retiring a Transit version soon after a rotation gave
    seconds of 503s (the worker kept signing with the version it had cached, which Transit
    now refuses). A refusal now makes the worker re-read the key and sign with the latest."""
    key, token = fresh_key(bao_server, "EdDSA")
    admin = admin_client(bao_server)

    async def run() -> None:
        b = backend(bao_server, key, token, "EdDSA", refresh=3600)
        try:
            assert parse_compact(await b.sign(claims())).kid == f"{key}-v1"
            admin.secrets.transit.rotate_key(name=key)
            admin.secrets.transit.update_key_configuration(name=key, min_decryption_version=2)
            token_after = await b.sign(claims())  # the cached snapshot still says v1
            assert parse_compact(token_after).kid == f"{key}-v2"
            verified(token_after, await b.keyset())
            assert [k.kid for k in await b.keyset()] == [f"{key}-v2"]  # the re-read serves the JWKS too
        finally:
            await b.aclose()

    asyncio.run(run())
