"""Session keys endorsed by the Transit key (broker/backends/endorsed_signer.py), on a real
OpenBao (the broker's least-privilege token, a Transit key per test) and a real Redis.

Each ``EndorsedSigningBackend`` stands for one worker process: its own session key, its
own view of what is published, shared only through Redis and Vault.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from broker.backends import endorsed_signer
from broker.backends.endorsed_signer import GC_GRACE, RETRY, EndorsedSigningBackend, SignerSettings, endorsed_keys_key
from broker.backends.transit import TransitSigningBackend
from broker.errors import BackendUnavailable, InvalidRequest, TokenRejected
from broker.service.ports import SigningBackend
from broker.token.algorithms import Algorithm
from broker.token.b64 import b64url_decode, b64url_encode
from broker.token.codec import TYP, parse_compact
from broker.token.endorsement import (
    ENDORSEMENT_TYP,
    Endorsement,
    endorse_locally,
    endorsement_payload,
    verify_endorsement,
    windows,
)
from broker.token.keys import KeySet, LocalSigner
from broker.token.mint import mint
from broker.token.strictjson import loads_object
from broker.token.verify import signed_claims_and_key
from broker.verify import RevocationFeed, Verifier
from broker.verify.redis_keys import withdrawn_key
from tests.helpers import AUDIENCE, ISSUER, claims
from tests.log_guard import forbid_in_logs
from tests.servers.processes import BaoServer, RedisServer
from tests.servers.vault_setup import admin_client, setup_transit

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

WINDOW, LEAD = 900, 300
FAST = 1.5  # seconds: "fails fast" for a 1 s timeout, when the backend answers at once
SLOW_BOUND = 2.0  # ... when it never answers: the SPEC's "about 1 s", room for a slow CI
_names = itertools.count()


class Clock:
    """An injected wall clock (epoch seconds) that tests move by hand."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def at(self, when: float) -> None:
        self.now = float(when)


@dataclass
class Deployment:
    """One broker deployment: a Transit key, the broker's token for it, a Redis prefix."""

    bao: BaoServer
    redis_url: str
    key: str
    token: str
    prefix: str
    alg: Algorithm = "EdDSA"

    def worker(self, clock: Callable[[], float] = time.time, **kw: Any) -> EndorsedSigningBackend:
        kw.setdefault("alg", self.alg)
        tuned = {name: kw.pop(name) for name in ("max_token_ttl", "timeout", "refresh", "vault_silence") if name in kw}
        settings = SignerSettings(issuer=ISSUER, window=WINDOW, lead=LEAD, **tuned)
        return EndorsedSigningBackend.connect(
            settings,
            vault_addr=self.bao.addr,
            vault_token=self.token,
            redis_url=self.redis_url,
            key=self.key,
            prefix=self.prefix,
            clock=clock,
            **kw,
        )

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True, socket_timeout=5)

    def stored(self) -> dict[str, str]:
        with self.redis() as r:
            return r.hgetall(endorsed_keys_key(self.prefix))  # type: ignore[return-value]

    async def endorsement(self, kid: str) -> Endorsement:
        """The stored endorsement of ``kid``, verified as a fresh replica would."""
        t = TransitSigningBackend(addr=self.bao.addr, token=self.token, key=self.key, alg=self.alg)
        try:
            keys = await t.read_keyset()
        finally:
            await t.aclose()
        return verify_endorsement(self.stored()[kid], keys, issuer=ISSUER, alg=self.alg)

    async def published(self, clock: Callable[[], float] = time.time) -> KeySet:
        """The JWKS as a replica that starts now serves it."""
        observer = self.worker(clock)
        try:
            return await observer.keyset()
        finally:
            await observer.aclose()


def deployment_on(bao: BaoServer, redis_url: str, *, rotate: bool = False, alg: Algorithm = "EdDSA") -> Deployment:
    n = next(_names)
    key = f"e-{alg.lower()}-{n}"
    token = setup_transit(bao, key=key, alg=alg, rotate=rotate)
    return Deployment(bao, redis_url, key, token, f"t{n}-{secrets.token_hex(3)}:", alg)


@pytest.fixture
def d(bao_server: BaoServer, redis_server: RedisServer) -> Deployment:
    return deployment_on(bao_server, redis_server.url)


def kid_of(token: str) -> str:
    return parse_compact(token).kid


def verifies(token: str, keys: KeySet, now: float) -> None:
    """As a resource server would: the Verifier library over the JWKS document."""
    verifier = Verifier(issuer=ISSUER, audience=AUDIENCE, jwks=keys.to_jwks(), clock=lambda: now)
    assert verifier.verify(token).claims.jti


def rejected(token: str, keys: KeySet, now: float) -> str:
    verifier = Verifier(issuer=ISSUER, audience=AUDIENCE, jwks=keys.to_jwks(), clock=lambda: now)
    with pytest.raises(TokenRejected) as e:
        verifier.verify(token)
    return e.value.code


def at(clock: Callable[[], float], **kw: Any) -> Any:
    return claims(now=int(clock()), **kw)


async def fails_fast(call: Callable[[], Awaitable[object]], prefix: str, bound: float = FAST) -> str:
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as e:
        await call()
    elapsed = time.monotonic() - started
    assert elapsed < bound, f"took {elapsed:.2f}s"
    assert e.value.reason.startswith(prefix), e.value.reason
    return e.value.reason


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------- workers share one JWKS


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_a_token_signed_by_one_worker_verifies_with_the_jwks_of_every_other(
    bao_server: BaoServer, redis_server: RedisServer, alg: Algorithm
) -> None:
    dep = deployment_on(bao_server, redis_server.url, alg=alg)

    async def run() -> None:
        a: SigningBackend = dep.worker()
        b = dep.worker()
        try:
            assert a.alg == b.alg == alg
            ta, tb = await a.sign(at(time.time)), await b.sign(at(time.time))
            ka, kb = kid_of(ta), kid_of(tb)
            assert ka != kb
            assert ka.startswith("s-")
            assert kb.startswith("s-")
            assert parse_compact(ta).alg == alg
            for keys in (await a.keyset(kid=kb), await b.keyset(kid=ka), await dep.published()):
                assert sorted(k.kid for k in keys) == sorted([f"{dep.key}-v1", ka, kb])
                verifies(ta, keys, time.time())
                verifies(tb, keys, time.time())
            stored = dep.stored()
            assert sorted(stored) == sorted([ka, kb])
            for kid, value in stored.items():
                header = loads_object(b64url_decode(value.split(".")[0]))
                assert header == {"alg": alg, "typ": ENDORSEMENT_TYP, "kid": f"{dep.key}-v1"}
                jwk = loads_object(b64url_decode(value.split(".")[1]))["jwk"]
                assert jwk["kid"] == kid
                assert "d" not in jwk
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(run())


def test_a_new_key_of_another_worker_is_found_on_a_kid_miss(d: Deployment) -> None:
    """Introspection on B of a token A signed a moment ago: the unknown kid makes B read
    Redis again instead of waiting for its next refresh."""

    async def run() -> None:
        a, b = d.worker(), d.worker(refresh=4.5)
        try:
            before = await b.keyset()
            token = await a.sign(at(time.time))
            assert await b.keyset() is before  # its view is young: no re-read
            keys = await b.keyset(kid=kid_of(token))
            verifies(token, keys, time.time())
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(run())


def test_the_jwks_of_another_replica_lists_a_key_stored_a_moment_ago(d: Deployment) -> None:
    """A replica signs with its new session key as soon as it stored it; the JWKS of
    another (``keyset(fresh=True)``, what the endpoint serves) lists that key without
    waiting for its next refresh: a verifier refetching then would otherwise cache a set
    without it for its refetch cooldown."""

    async def run() -> None:
        a, b = d.worker(), d.worker(refresh=4.5)
        try:
            before = await b.keyset()
            token = await a.sign(at(time.time))
            assert kid_of(token) not in {k.kid for k in before}
            await asyncio.sleep(endorsed_signer.MISS_COOLDOWN)  # the re-read's own cooldown
            served = await b.keyset(fresh=True)
            assert kid_of(token) in {k.kid for k in served}
            verifies(token, served, time.time())
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(run())


# ---------------------------------------------------------------- injected entries


def attacker_entries(d: Deployment, genuine: str) -> tuple[dict[str, str], LocalSigner]:
    """What someone with Redis write access but without the Vault token can store."""
    attacker = LocalSigner.generate("EdDSA", "s-a77ac0000000000a")
    w = windows(int(time.time()), WINDOW, 3600)
    payload = endorsement_payload(attacker.public, ISSUER, w)
    forged_long_term = LocalSigner.generate("EdDSA", f"{d.key}-v1")  # the real kid, the attacker's key
    h, _, sig = genuine.split(".")
    entries = {
        attacker.kid: endorse_locally(payload, forged_long_term),  # signed by the wrong key
        "s-a77ac0000000000b": endorse_locally(payload, LocalSigner.generate("EdDSA", f"{d.key}-v9")),
        "s-a77ac0000000000c": f"{h}.{b64url_encode(payload)}.{sig}",  # a genuine signature, another key
        "s-a77ac0000000000d": genuine,  # a genuine endorsement, stored under another kid
        "s-a77ac0000000000e": str(attacker.public.to_jwk()),  # a bare public key
        "s-a77ac0000000000f": "",
    }
    return entries, attacker


def test_entries_injected_into_redis_are_never_published(d: Deployment, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "broker.signing")

    async def run() -> None:
        a, b = d.worker(), d.worker()
        try:
            genuine = await a.sign(at(time.time))
            entries, attacker = attacker_entries(d, d.stored()[kid_of(genuine)])
            with d.redis() as r:
                r.hset(endorsed_keys_key(d.prefix), mapping=entries)
            forged = mint(at(time.time), attacker)  # kid s-a77ac0000000000a
            with_a_real_kid = mint(at(time.time), LocalSigner(attacker._key, kid_of(genuine)))
            await asyncio.sleep(1.1)  # past a's refresh interval
            await a.keyset()
            await a.wait_idle()
            for keys in (await a.keyset(), await b.keyset(kid=attacker.kid), await d.published()):
                assert sorted(k.kid for k in keys) == sorted([f"{d.key}-v1", kid_of(genuine)])
                assert rejected(forged, keys, time.time()) == "unknown_key"
                assert rejected(with_a_real_kid, keys, time.time()) == "bad_signature"
                verifies(genuine, keys, time.time())
            assert a.rejected_entries == b.rejected_entries == len(entries)
            verifies(await a.sign(at(time.time)), await b.keyset(), time.time())  # signing goes on
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(run())
    for kid in ("s-a77ac0000000000a", "s-a77ac0000000000d", "s-a77ac0000000000f"):
        assert f"endorsed-keys entry '{kid}' is not published" in caplog.text


def test_a_copy_of_a_genuine_endorsement_under_another_kid_does_not_hide_it(d: Deployment) -> None:
    """The copy is refused; the original, seen after it, is still published (what was
    refused is remembered per stored entry, not per value)."""

    async def run() -> None:
        a, observer = d.worker(), d.worker(refresh=4.5)
        try:
            kid = kid_of(await a.sign(at(time.time)))
            genuine = d.stored()[kid]
            with d.redis() as r:  # the observer's first read sees only the copy
                r.hset(endorsed_keys_key(d.prefix), "s-c0b1ed000000000a", genuine)
                r.hdel(endorsed_keys_key(d.prefix), kid)
                assert [k.kid for k in await observer.keyset()] == [f"{d.key}-v1"]
                r.hset(endorsed_keys_key(d.prefix), kid, genuine)
            keys = await observer.keyset(kid=kid)
            assert sorted(k.kid for k in keys) == sorted([f"{d.key}-v1", kid])
            assert observer.rejected_entries == 1
        finally:
            await a.aclose()
            await observer.aclose()

    asyncio.run(run())


def test_an_endorsement_for_another_issuer_is_not_published(d: Deployment) -> None:
    """Signed by the real Transit key (another deployment sharing key and Redis prefix):
    an endorsement is bound to its issuer."""

    async def run() -> None:
        other = LocalSigner.generate("EdDSA", "s-00e4e4000000000a")
        t = TransitSigningBackend(addr=d.bao.addr, token=d.token, key=d.key)
        a = d.worker()
        try:
            payload = endorsement_payload(other.public, "https://other.test", windows(int(time.time()), WINDOW))
            with d.redis() as r:
                r.hset(endorsed_keys_key(d.prefix), other.kid, await t.sign_statement(ENDORSEMENT_TYP, payload))
            assert [k.kid for k in await a.keyset()] == [f"{d.key}-v1"]
            assert a.rejected_entries == 1
        finally:
            await t.aclose()
            await a.aclose()

    asyncio.run(run())


# ---------------------------------------------------------------- windows and rotation


def test_keys_rotate_ahead_of_time_and_no_token_is_signed_by_a_key_the_jwks_does_not_publish(d: Deployment) -> None:
    """Every 30 s of (injected) time over three rotations: each token's key was already
    in the JWKS of a replica that started before the token was signed, the token verifies
    with it, and its key's endorsement covered the moment it was signed."""
    clock = Clock()
    start = clock.now

    async def run() -> None:
        a = d.worker(clock)
        first_use: dict[str, float] = {}
        try:
            for step in range(0, 3 * WINDOW + LEAD + 1, 30):
                clock.at(start + step)
                before = await d.published(clock)
                token = await a.sign(at(clock))
                kid = kid_of(token)
                await a.wait_idle()  # a successor's endorsement, if one was started
                if step > 0:
                    assert before.key_for(kid) is not None, f"{kid} signed before it was published"
                verifies(token, await d.published(clock), clock.now)
                e = await d.endorsement(kid)
                assert e.signs_at(clock.now)
                first_use.setdefault(kid, clock.now)
            kids = list(first_use)
            assert len(kids) == 4
            for previous, kid in itertools.pairwise(kids):
                e, p = await d.endorsement(kid), await d.endorsement(previous)
                assert first_use[kid] == p.sign_until  # used from the moment its predecessor stops
                assert first_use[kid] - e.not_before >= LEAD  # and published lead seconds before
            assert a.kid == kids[-1]
        finally:
            await a.aclose()

    asyncio.run(run())


def test_a_key_is_never_used_past_sign_until(bao_server: BaoServer, d: Deployment) -> None:
    """With its successor refused (the broker's Vault token revoked), the current key
    stops at sign_until to the second, and nothing else signs."""
    clock = Clock()

    async def run() -> None:
        a = d.worker(clock)
        try:
            first = kid_of(await a.sign(at(clock)))
            e = await d.endorsement(first)
            admin_client(bao_server).auth.token.revoke(d.token)
            clock.at(e.sign_until - 1)
            assert kid_of(await a.sign(at(clock))) == first
            await a.wait_idle()
            clock.at(e.sign_until)
            await fails_fast(lambda: a.sign(at(clock)), "vault: Forbidden")
            await asyncio.sleep(RETRY)
            clock.at(e.sign_until + 3600)
            await fails_fast(lambda: a.sign(at(clock)), "vault: Forbidden")
            assert list(d.stored()) == [first]
        finally:
            await a.aclose()

    asyncio.run(run())


def test_a_stolen_session_key_signs_nothing_accepted_after_sign_until(d: Deployment) -> None:
    """Issue 12 reproduction 1: with the key a worker holds in memory, tokens stamped 5 s
    and 100 s after its endorsement's sign_until were accepted by introspection and by
    Verifier(jwks=...), since windows were enforced only when signing. The JWKS now
    carries each session key's window and every verifier of ours enforces it."""
    clock = Clock()

    async def run() -> None:
        a = d.worker(clock)
        try:
            honest = await a.sign(at(clock))
            kid = kid_of(honest)
            e = await d.endorsement(kid)
            assert a._current is not None
            stolen = a._current.signer  # what an attacker who read the worker's memory holds
            published = await d.published(clock)  # the JWKS as a fresh replica serves it
            key = published.key_for(kid)
            assert key is not None
            assert (key.to_jwk()["sign_from"], key.to_jwk()["sign_until"]) == (e.not_before, e.sign_until)
            verifies(honest, published, clock())
            for late in (5, 100):
                clock.at(e.sign_until + late)
                forged = mint(at(clock), stolen)
                assert rejected(forged, published, clock()) == "outside_key_window"
                # the broker's own introspection path: the same keys, the same rule
                with pytest.raises(TokenRejected) as refused:
                    signed_claims_and_key(forged, await a.keyset())
                assert refused.value.code == "outside_key_window"
        finally:
            await a.aclose()

    asyncio.run(run())


def test_renew_replaces_the_key_now_and_rotate_is_the_long_term_key(bao_server: BaoServer, d: Deployment) -> None:
    """``rotate`` is ``broker keys rotate``: the long-term key, which the broker's own token
    may not do. ``renew`` makes a new session key at once."""

    async def run() -> None:
        a = d.worker()
        try:
            old = kid_of(await a.sign(at(time.time)))
            with pytest.raises(BackendUnavailable, match=r"^vault: Forbidden$"):
                await a.rotate()
            new = await a.renew()
            assert new != old
            assert kid_of(await a.sign(at(time.time))) == new
            assert sorted(d.stored()) == sorted([old, new])
        finally:
            await a.aclose()

    asyncio.run(run())
    assert admin_client(bao_server).secrets.transit.read_key(name=d.key)["data"]["latest_version"] == 1


def test_the_operators_rotation_of_the_long_term_key(bao_server: BaoServer, redis_server: RedisServer) -> None:
    """New endorsements use the new version; old ones keep verifying while Transit
    publishes their version, and leave the JWKS when the operator retires it."""
    dep = deployment_on(bao_server, redis_server.url, rotate=True)

    async def run() -> None:
        a = dep.worker(key_refresh=0.2, refresh=0.2)
        stale = dep.worker(key_refresh=3600, refresh=0.2)  # a replica that has not read the rotation
        try:
            old_token = await a.sign(at(time.time))
            old = kid_of(old_token)
            await stale.keyset()
            assert (await dep.endorsement(old)).endorser == f"{dep.key}-v1"
            assert await a.rotate() == f"{dep.key}-v2"
            new = await a.renew()
            assert (await dep.endorsement(new)).endorser == f"{dep.key}-v2"
            new_token = await a.sign(at(time.time))

            async def stale_publishes_it() -> bool:  # its own re-reads, no kid miss: an unknown
                return (await stale.keyset()).key_for(new) is not None  # endorser makes it read Vault

            await eventually(stale_publishes_it)
            for keys in (await dep.published(), await stale.keyset()):
                assert sorted(k.kid for k in keys) == sorted([f"{dep.key}-v1", f"{dep.key}-v2", old, new])
                verifies(old_token, keys, time.time())
                verifies(new_token, keys, time.time())

            admin_client(bao_server).secrets.transit.update_key_configuration(name=dep.key, min_decryption_version=2)
            keys = await dep.published()
            assert sorted(k.kid for k in keys) == sorted([f"{dep.key}-v2", new])
            assert rejected(old_token, keys, time.time()) == "unknown_key"

            async def a_drops_it() -> bool:
                return (await a.keyset()).key_for(old) is None

            await eventually(a_drops_it)
            verifies(await a.sign(at(time.time)), await a.keyset(), time.time())
        finally:
            await a.aclose()
            await stale.aclose()

    asyncio.run(run())


def test_old_keys_leave_the_jwks_at_publish_until_and_redis_later(d: Deployment) -> None:
    clock = Clock()

    async def run() -> None:
        a = d.worker(clock)
        try:
            token = await a.sign(at(clock))
            kid = kid_of(token)
            e = await d.endorsement(kid)
            with d.redis() as r:
                r.hset(endorsed_keys_key(d.prefix), "s-0000000000000bad", "not an endorsement")
            clock.at(e.publish_until - 1)
            assert (await d.published(clock)).key_for(kid) is not None
            clock.at(e.publish_until)
            assert (await a.keyset()).key_for(kid) is None  # the cached view too
            assert (await d.published(clock)).key_for(kid) is None
            assert kid in d.stored()
            clock.at(e.publish_until + GC_GRACE + 1)
            await d.published(clock)
            assert sorted(d.stored()) == ["s-0000000000000bad"]  # junk stays, as evidence
        finally:
            await a.aclose()

    asyncio.run(run())


def test_unused_keys_are_withdrawn_on_close(d: Deployment) -> None:
    async def run() -> None:
        a = d.worker()
        used = kid_of(await a.sign(at(time.time)))
        unused = await a.renew()
        assert sorted(d.stored()) == sorted([used, unused])
        await a.aclose()
        assert list(d.stored()) == [used]  # its tokens still need it
        await fails_fast(lambda: a.sign(at(time.time)), "signer: the backend is closed")

    asyncio.run(run())


def test_a_withdrawn_key_is_never_used_again(d: Deployment) -> None:
    """An operator removes a worker's entry from Redis (or Redis lost it): within the
    refresh interval the worker stops signing with it, for good, and endorses another."""

    async def run() -> None:
        a = d.worker(refresh=0.2)
        try:
            first = kid_of(await a.sign(at(time.time)))
            with d.redis() as r:
                r.hdel(endorsed_keys_key(d.prefix), first)
            withdrawn_at = time.monotonic()
            kids = []
            while time.monotonic() < withdrawn_at + 1.5:
                kids.append(kid_of(await a.sign(at(time.time))))
                await asyncio.sleep(0.01)
            last_old = max(i for i, k in enumerate(kids) if k == first) if first in kids else -1
            assert all(k != first for k in kids[last_old + 1 :])
            assert kids[-1] != first
            assert len(kids) - last_old > len(kids) // 2  # switched within about refresh + a read
            verifies(await a.sign(at(time.time)), await d.published(), time.time())
            assert first not in d.stored()
        finally:
            await a.aclose()

    asyncio.run(run())


def test_a_deleted_key_written_back_is_never_signed_with_again(d: Deployment) -> None:
    """Issue 12 reproduction 6: after its kid was deleted and written back 4 s later, 12 of
    20 new mints were signed by it. Now the first worker to read the view without it
    (every refresh, traffic or not) marks it withdrawn, and nothing publishes or signs
    with it again, whatever reappears in Redis."""

    async def run() -> None:
        a = d.worker(refresh=0.2)
        b = d.worker(refresh=0.2)
        try:
            first = kid_of(await a.sign(at(time.time)))
            entry = d.stored()[first]
            with d.redis() as r:
                r.hdel(endorsed_keys_key(d.prefix), first)
                await asyncio.sleep(1.0)  # no traffic meanwhile: the workers re-read on their own
                r.hset(endorsed_keys_key(d.prefix), first, entry)
                assert r.exists(withdrawn_key(d.prefix, first)) == 1
            kids = [kid_of(await w.sign(at(time.time))) for _ in range(10) for w in (a, b)]
            assert first not in kids
            assert (await d.published()).key_for(first) is None
            assert (await a.keyset()).key_for(first) is None
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(run())


def test_a_deleted_kid_stops_a_running_verifier_with_a_feed_within_a_second(
    d: Deployment, redis_server: RedisServer
) -> None:
    """Issue 12 reproduction 2: a running Verifier kept accepting a token of a kid deleted
    from the endorsed-keys hash for the 40 s observed (its key set refreshes every 300 s,
    and its seen-token cache checked against that stale set). The withdrawal now travels
    on the revocation feed; the verifier forgets the key, and the tokens it remembered."""

    async def run() -> None:
        a = d.worker(refresh=0.5)
        feed = RevocationFeed(redis_server.url, prefix=d.prefix)
        try:
            assert feed.wait_ready(5.0)
            token = await a.sign(at(time.time))
            kid = kid_of(token)
            jwks = (await a.keyset()).to_jwks()  # fetched once, as a remote verifier would
            v = Verifier(issuer=ISSUER, audience=AUDIENCE, jwks=jwks, revocation=feed)
            for _ in range(3):
                assert v.verify(token).claims.jti  # remembered now
            with d.redis() as r:
                r.hdel(endorsed_keys_key(d.prefix), kid)
            deleted_at = time.monotonic()
            while True:  # the worker keeps re-reading with no traffic; no sign call here
                with contextlib.suppress(TokenRejected):
                    v.verify(token)
                    assert time.monotonic() - deleted_at < 0.5 + 1.0, "still accepted after a second"
                    await asyncio.sleep(0.02)
                    continue
                break
            with pytest.raises(TokenRejected) as e:
                v.verify(token)
            assert e.value.code == "unknown_key"
            assert feed.key_withdrawn(kid)
        finally:
            feed.close()
            await a.aclose()

    asyncio.run(run())


def test_an_operator_withdraws_a_key_with_one_command(own_redis: RedisServer, tmp_path: Any) -> None:
    """``broker keys withdraw KID``: marked, removed, announced; the feed hears it."""
    kid = "s-00112233aabbccdd"
    prefix = "capbroker:https://broker.test:"  # derived from the settings' issuer below
    with redis.Redis.from_url(own_redis.url, decode_responses=True) as r:
        r.hset(endorsed_keys_key(prefix), kid, "not-even-an-endorsement")
    feed = RevocationFeed(own_redis.url, issuer="https://broker.test")
    try:
        assert feed.wait_ready(5.0)
        config = tmp_path / "broker.yaml"
        config.write_text(
            f"issuer: https://broker.test\nscopes: {tmp_path}\nadmin_key_sha256: [{'a' * 64}]\n"
            f"signer: local\nstate: redis\nredis_url: {own_redis.url}\n"
        )
        done = subprocess.run(
            [sys.executable, "-m", "broker", "keys", "withdraw", kid, "--config", str(config)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"withdrawn: {kid}")
        with redis.Redis.from_url(own_redis.url, decode_responses=True) as r:
            assert r.hget(endorsed_keys_key(prefix), kid) is None
            assert r.ttl(withdrawn_key(prefix, kid)) > 0
        deadline = time.monotonic() + 1.0
        while not feed.key_withdrawn(kid):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        bad = subprocess.run(
            [sys.executable, "-m", "broker", "keys", "withdraw", "../etc", "--config", str(config)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert bad.returncode == 2
    finally:
        feed.close()


def test_a_token_over_the_lifetime_cap_is_refused(d: Deployment) -> None:
    async def run() -> None:
        a = d.worker(max_token_ttl=600)
        try:
            with pytest.raises(InvalidRequest, match="lifetime"):
                await a.sign(at(time.time, ttl=601))
            with pytest.raises(InvalidRequest, match="issuer"):
                await a.sign(at(time.time, issuer="https://other.test"))
            assert d.stored() == {}  # refused before any key was made
            await a.sign(at(time.time, ttl=600))
        finally:
            await a.aclose()

    asyncio.run(run())


# ---------------------------------------------------------------- Vault down


def test_no_vault_call_per_token_and_none_at_the_switch(own_bao: BaoServer, redis_server: RedisServer) -> None:
    """Vault sealed after the successor was endorsed: signing goes on, across the switch
    to the successor, with nothing but memory and Redis."""
    dep = deployment_on(own_bao, redis_server.url)
    clock = Clock()

    async def run() -> None:
        a = dep.worker(clock, key_refresh=0.2)
        try:
            first = kid_of(await a.sign(at(clock)))
            e = await dep.endorsement(first)
            clock.at(e.sign_until - LEAD)
            assert kid_of(await a.sign(at(clock))) == first
            await a.wait_idle()
            assert len(dep.stored()) == 2
            own_bao.seal()
            clock.at(e.sign_until)
            started = time.monotonic()
            tokens = [await a.sign(at(clock)) for _ in range(500)]
            assert time.monotonic() - started < 1.0
            second = kid_of(tokens[0])
            assert second != first
            assert {kid_of(t) for t in tokens} == {second}
            await asyncio.sleep(0.3)  # past key_refresh: Vault is asked, and cannot answer
            keys = await a.keyset()
            for t in tokens[::50]:
                verifies(t, keys, clock.now)
        finally:
            await a.aclose()

    asyncio.run(run())


def test_vault_sealed_when_a_renewal_is_due_fails_fast_and_recovers(
    own_bao: BaoServer, redis_server: RedisServer
) -> None:
    dep = deployment_on(own_bao, redis_server.url)
    clock = Clock()

    async def run() -> None:
        a = dep.worker(clock)
        try:
            first = kid_of(await a.sign(at(clock)))
            e = await dep.endorsement(first)
            own_bao.seal()
            clock.at(e.sign_until - LEAD)
            assert kid_of(await a.sign(at(clock))) == first  # the current key still signs
            await a.wait_idle()  # its successor was refused
            clock.at(e.sign_until)
            assert await fails_fast(lambda: a.sign(at(clock)), "vault: ") == "vault: VaultDown"
            for _ in range(20):  # and again at once, without a Vault call each
                await fails_fast(lambda: a.sign(at(clock)), "vault: ")
            assert (await a.keyset()).key_for(first) is not None  # its tokens still verify

            own_bao.unseal()
            await asyncio.sleep(RETRY)
            token = await a.sign(at(clock))
            assert kid_of(token) not in (first, None)
            verifies(token, await dep.published(clock), clock.now)
        finally:
            await a.aclose()

    asyncio.run(run())


def test_vault_stopped_fails_fast_when_no_key_can_sign(own_bao: BaoServer, redis_server: RedisServer) -> None:
    dep = deployment_on(own_bao, redis_server.url)
    clock = Clock()

    async def run() -> None:
        a, b = dep.worker(clock), dep.worker(clock)
        try:
            first = kid_of(await a.sign(at(clock)))
            await b.keyset()
            e = await dep.endorsement(first)
            own_bao.stop()
            await fails_fast(lambda: b.sign(at(clock)), "vault: ConnectionError")  # a new worker: no key
            clock.at(e.sign_until)
            await fails_fast(lambda: a.sign(at(clock)), "vault: ConnectionError")
            await fails_fast(a.check, "vault: ConnectionError")
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(run())


def test_vault_sealed_stops_signing_within_a_second_and_resumes_with_the_same_key(
    own_bao: BaoServer, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC 7: Vault sealed means no token (and no key set: introspection and the JWKS
    answer 503), even though the session key could still sign. The endorsement stays
    stored, so after the unseal the same key signs again and earlier tokens verify."""
    monkeypatch.setattr(endorsed_signer, "MAX_STALE", 1.5)
    dep = deployment_on(own_bao, redis_server.url)

    async def run() -> None:
        a = dep.worker(key_refresh=0.2, refresh=0.2)
        try:
            earlier = await a.sign(at(time.time))
            first = kid_of(earlier)
            own_bao.seal()
            await asyncio.sleep(1.6)
            await fails_fast(lambda: a.sign(at(time.time)), "vault: ")
            await fails_fast(a.keyset, "vault: ")  # introspection and the JWKS answer 503 too (SPEC 7)
            await fails_fast(a.check, "vault: VaultDown")  # check says Vault is down
            own_bao.unseal()
            deadline = time.monotonic() + 5
            while True:
                try:
                    token = await a.sign(at(time.time))
                    break
                except BackendUnavailable:
                    assert time.monotonic() < deadline, "signing did not resume after the unseal"
                    await asyncio.sleep(0.2)
            assert kid_of(token) == first
            verifies(earlier, await a.keyset(), time.time())  # the key stayed published
        finally:
            await a.aclose()

    asyncio.run(run())


# ---------------------------------------------------------------- Redis down


def test_redis_refusing_the_endorsement_fails_closed(d: Deployment, redis_server: RedisServer) -> None:
    """Vault endorsed the key but Redis will not store it: the key never signs."""

    async def run() -> None:
        a = d.worker()
        with d.redis() as r:
            r.config_set("min-replicas-to-write", 1)  # every write is refused (NOREPLICAS)
        try:
            for _ in range(3):
                await fails_fast(lambda: a.sign(at(time.time)), "redis: ")
                await asyncio.sleep(RETRY)
            assert d.stored() == {}
        finally:
            with d.redis() as r:
                r.config_set("min-replicas-to-write", 0)
        try:
            await asyncio.sleep(RETRY)
            token = await a.sign(at(time.time))
            assert list(d.stored()) == [kid_of(token)]
        finally:
            await a.aclose()

    asyncio.run(run())


def test_redis_paused_when_storing_fails_fast(own_redis: RedisServer, bao_server: BaoServer) -> None:
    dep = deployment_on(bao_server, own_redis.url)

    async def run() -> None:
        a = dep.worker()
        try:
            await a.keyset()  # the view is read; the key is not made yet
            own_redis.pause()
            try:
                await fails_fast(lambda: a.sign(at(time.time)), "", SLOW_BOUND)
            finally:
                own_redis.resume()
            await asyncio.sleep(RETRY + 0.3)
            token = await a.sign(at(time.time))
            verifies(token, await dep.published(), time.time())
        finally:
            await a.aclose()

    asyncio.run(run())


def test_redis_down_stops_signing_within_max_stale_and_a_lost_entry_is_not_reused(
    own_redis: RedisServer, bao_server: BaoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While Redis cannot be read, whether the key is still published is unknown: once a
    read has failed nothing is signed, and after MAX_STALE the key set is not served either.
    Redis back without its data (no persistence): the old
    key's entry is gone, so it never signs again; a new key is endorsed and stored."""
    monkeypatch.setattr(endorsed_signer, "MAX_STALE", 1.5)
    dep = deployment_on(bao_server, own_redis.url)

    async def run() -> None:
        a = dep.worker(refresh=0.2)
        try:
            first = kid_of(await a.sign(at(time.time)))
            own_redis.stop()
            await asyncio.sleep(0.3)  # older than refresh: the next call starts a re-read
            with contextlib.suppress(BackendUnavailable):
                await a.sign(at(time.time))  # may still sign: that re-read has not failed yet
            await asyncio.sleep(0.3)
            # the re-read failed: nothing is signed any more, long before MAX_STALE
            await fails_fast(lambda: a.sign(at(time.time)), "redis: ")
            await asyncio.sleep(1.0)
            await fails_fast(lambda: a.sign(at(time.time)), "redis: ")
            await fails_fast(a.keyset, "redis: ")
            own_redis.start()  # same port, empty
            await asyncio.sleep(RETRY)
            token = await a.sign(at(time.time))
            assert kid_of(token) != first
            assert list(dep.stored()) == [kid_of(token)]
            verifies(token, await dep.published(), time.time())
        finally:
            await a.aclose()

    asyncio.run(run())


# ---------------------------------------------------------------- the private key


def test_the_session_private_key_never_leaves_the_process(d: Deployment, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def run() -> list[str]:
        a = d.worker()
        try:
            await a.sign(at(time.time))
            await a.renew()
            await a.sign(at(time.time))
            key = a._current
            assert key is not None
            private = key.signer._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            forms = [private.hex(), b64url_encode(private), base64.b64encode(private).decode()]
            for form in forms:
                forbid_in_logs(form)  # and the session's log guard looks for it everywhere
                assert form not in repr(a)
                assert form not in repr(key)
                assert form not in repr(key.signer)
            return forms
        finally:
            await a.aclose()

    forms = asyncio.run(run())
    with d.redis() as r:
        dumped = [str(r.hgetall(k) if r.type(k) == "hash" else r.get(k)) for k in r.scan_iter(f"{d.prefix}*")]
    for form in forms:
        assert form not in caplog.text
        assert all(form not in text for text in dumped)


# ---------------------------------------------------------------- Transit, the additions


def test_transit_signs_statements_but_never_a_token_typ(d: Deployment) -> None:
    async def run() -> None:
        t = TransitSigningBackend(addr=d.bao.addr, token=d.token, key=d.key)
        try:
            with pytest.raises(ValueError, match="tokens"):
                await t.sign_statement(TYP, b"{}")
            statement = await t.sign_statement("x+jwt", b'{"a":1}')
            h, p, s = statement.split(".")
            assert loads_object(b64url_decode(h)) == {"alg": "EdDSA", "typ": "x+jwt", "kid": f"{d.key}-v1"}
            key = (await t.read_keyset()).key_for(f"{d.key}-v1")
            assert key is not None
            key.key.verify(b64url_decode(s), f"{h}.{p}".encode())  # type: ignore[call-arg]
        finally:
            await t.aclose()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"issuer": ""}, "issuer"),
        ({"window": 59}, "window"),
        ({"window": 900, "lead": 901}, "lead"),
        ({"max_token_ttl": 3601}, "max_token_ttl"),
        ({"refresh": 5.0}, "refresh"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_constructor_refuses_bad_settings(kwargs: dict[str, Any], match: str) -> None:
    settings: dict[str, Any] = {"issuer": ISSUER} | kwargs
    with pytest.raises(ValueError, match=match):
        SignerSettings(**settings)  # checked once, before anything connects
