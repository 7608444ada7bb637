"""DPoP (RFC 9449) attacks, one named test each, against the ``Verifier``, the plain ASGI
middleware and the Litestar guard.

The setting: an agent holds a key (``KEY``); its token carries ``cnf.jkt`` = that key's
thumbprint. A thief has a copy of the token (a log, a proxy, a compromised service) and
maybe of one proof; the thief's own key is ``THIEF``. Nothing the thief can send without
``KEY`` may be accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar, Request, get
from litestar.testing import TestClient

from broker.dpop import DpopKey, MemoryReplayCache, ProofError, ath_of, check_proof, sign_proof
from broker.dpop.jwk import thumbprint
from broker.errors import TokenRejected
from broker.token import KeyRing, LocalSigner
from broker.token.b64 import b64url_decode, b64url_encode
from broker.verify import StaticRevocationList, Verifier
from broker.verify.asgi import CapabilityMiddleware
from broker.verify.litestar import capability_guard, grant_of
from tests.helpers import NOW, good_token, verifier

KEY = DpopKey.generate("EdDSA")
KEY_ES = DpopKey.generate("ES256")
THIEF = DpopKey.generate("EdDSA")
AT = NOW + 10  # the verifiers' clock (tests.helpers.verifier)
METHOD = "GET"
URL = "https://storage.internal/reports/a.csv"


def bound(signer: LocalSigner, key: DpopKey = KEY, **overrides: Any) -> str:
    return good_token(signer, cnf_jkt=key.jkt, **overrides)


def proof_for(token: str | None, *, key: DpopKey = KEY, method: str = METHOD, url: str = URL, iat: int = AT) -> str:
    return key.proof(method, url, now=iat, access_token=token)


def forged(token: str, key: DpopKey = KEY, *, header: dict[str, Any] | None = None, **claims: Any) -> str:
    """A proof with the given header and claims changes, signed with ``key``."""
    h: dict[str, Any] = {"typ": "dpop+jwt", "alg": key.alg, "jwk": key.public_jwk, **(header or {})}
    c: dict[str, Any] = {"jti": "forged-proof-0000001", "htm": METHOD, "htu": URL, "iat": AT, "ath": ath_of(token)}
    c.update(claims)
    return sign_proof(h, c, key.private_key)


def rejected(v: Verifier, token: str, code: str, **kw: Any) -> TokenRejected:
    if "dpop" in kw:
        kw.setdefault("method", METHOD)
        kw.setdefault("url", URL)
    with pytest.raises(TokenRejected) as e:
        v.verify(token, **kw)
    assert e.value.code == code, e.value.reason
    return e.value


def accepted(v: Verifier, token: str, proof: str, *, method: str = METHOD, url: str = URL) -> None:
    assert v.verify(token, dpop=proof, method=method, url=url).task == "t1"


# =================================================================== the Verifier


@pytest.mark.parametrize("key", [KEY, KEY_ES], ids=["EdDSA", "ES256"])
def test_bound_token_with_a_valid_proof_is_accepted(ring: KeyRing, ed_signer: LocalSigner, key: DpopKey) -> None:
    token = bound(ed_signer, key)
    grant = verifier(ring).verify(token, dpop=proof_for(token, key=key), method=METHOD, url=URL)
    assert grant.claims.cnf_jkt == key.jkt
    another = bound(ed_signer, key, jti="test-token-id-00000002")
    verifier(ring).require(
        another,
        kind="bucket",
        resource="s3://acme-reports/agents/t1/a.csv",
        action="read",
        dpop=proof_for(another, key=key),
        method=METHOD,
        url=URL,
    )


def test_bound_token_without_a_proof_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """A stolen copy of a bound token, presented as a bearer token."""
    rejected(verifier(ring), bound(ed_signer), "proof_required")
    rejected(verifier(ring), bound(ed_signer), "proof_required", method=METHOD, url=URL)


def test_proof_from_another_key_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """The thief signs a perfect proof for the request, with the thief's own key."""
    token = bound(ed_signer)
    rejected(verifier(ring), token, "bad_proof", dpop=proof_for(token, key=THIEF))


def test_proof_carrying_the_victims_jwk_but_signed_by_the_thief_is_rejected(
    ring: KeyRing, ed_signer: LocalSigner
) -> None:
    token = bound(ed_signer)
    h = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": KEY.public_jwk}
    c = {"jti": "forged-proof-0000001", "htm": METHOD, "htu": URL, "iat": AT, "ath": ath_of(token)}
    rejected(verifier(ring), token, "bad_proof", dpop=sign_proof(h, c, THIEF.private_key))


def test_replayed_proof_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """The thief captured a token and the proof that came with it, and sends both again."""
    v = verifier(ring)
    token = bound(ed_signer)
    proof = proof_for(token)
    accepted(v, token, proof)
    rejected(v, token, "bad_proof", dpop=proof)
    rejected(v, token, "bad_proof", dpop=proof, now=AT + 30)  # still fresh, still refused


def test_replay_is_caught_across_verifiers_sharing_a_cache(ring: KeyRing, ed_signer: LocalSigner) -> None:
    shared = MemoryReplayCache()
    token = bound(ed_signer)
    proof = proof_for(token)
    accepted(verifier(ring, proof_replay=shared), token, proof)
    rejected(verifier(ring, proof_replay=shared), token, "bad_proof", dpop=proof)


def test_fresh_proofs_for_the_same_request_are_each_accepted(ring: KeyRing, ed_signer: LocalSigner) -> None:
    v = verifier(ring)
    token = bound(ed_signer)
    for _ in range(3):
        accepted(v, token, proof_for(token))


def test_proof_for_another_method_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """A proof made for a read, replayed to make a delete."""
    token = bound(ed_signer)
    rejected(verifier(ring), token, "bad_proof", dpop=proof_for(token), method="DELETE")
    rejected(verifier(ring), token, "bad_proof", dpop=proof_for(token), method="get")


@pytest.mark.parametrize(
    "url",
    [
        "https://storage.internal/reports/b.csv",
        "https://storage.internal/reports/a.csv/",
        "https://storage.internal/reports",
    ],
    ids=["sibling", "trailing-slash", "parent"],
)
def test_proof_for_another_path_is_rejected(ring: KeyRing, ed_signer: LocalSigner, url: str) -> None:
    token = bound(ed_signer)
    rejected(verifier(ring), token, "bad_proof", dpop=proof_for(token), url=url)


@pytest.mark.parametrize(
    "url",
    [
        "https://other.internal/reports/a.csv",
        "http://storage.internal/reports/a.csv",
        "https://storage.internal:8443/reports/a.csv",
    ],
    ids=["other-host", "other-scheme", "other-port"],
)
def test_proof_for_another_host_is_rejected(ring: KeyRing, ed_signer: LocalSigner, url: str) -> None:
    """A proof made for (or by a malicious) other service, replayed here."""
    token = bound(ed_signer)
    rejected(verifier(ring), token, "bad_proof", dpop=proof_for(token), url=url)


def test_stale_proof_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """A proof older than proof_max_age (60 s by default) is refused, even never used."""
    token = bound(ed_signer)
    rejected(verifier(ring), token, "bad_proof", dpop=proof_for(token, iat=AT - 61))
    accepted(verifier(ring), token, proof_for(token, iat=AT - 60))
    rejected(verifier(ring, proof_max_age=10), token, "bad_proof", dpop=proof_for(token, iat=AT - 11))


def test_future_proof_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """Proofs made ahead of time (to be used later, from elsewhere) are refused."""
    token = bound(ed_signer)
    rejected(verifier(ring), token, "bad_proof", dpop=proof_for(token, iat=AT + 6))


def test_proof_without_ath_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """A proof not bound to any access token (as sent to the broker's token endpoint)."""
    token = bound(ed_signer)
    rejected(verifier(ring), token, "bad_proof", dpop=proof_for(None))


def test_proof_made_for_another_token_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """Two tokens bound to the same key: a proof for one does not carry the other."""
    token = bound(ed_signer)
    other = bound(ed_signer, jti="test-token-id-00000002")
    rejected(verifier(ring), token, "bad_proof", dpop=proof_for(other))
    rejected(verifier(ring), token, "bad_proof", dpop=forged(token, ath=ath_of(other)))


def test_alg_none_proof_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    h = b64url_encode(json.dumps({"typ": "dpop+jwt", "alg": "none", "jwk": KEY.public_jwk}).encode())
    c = {"jti": "forged-proof-0000001", "htm": METHOD, "htu": URL, "iat": AT, "ath": ath_of(token)}
    unsigned = f"{h}.{b64url_encode(json.dumps(c).encode())}."
    rejected(verifier(ring), token, "bad_proof", dpop=unsigned)


def test_hs256_proof_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """HMAC keyed with the public key: the classic algorithm confusion."""
    token = bound(ed_signer)
    h = b64url_encode(json.dumps({"typ": "dpop+jwt", "alg": "HS256", "jwk": KEY.public_jwk}).encode())
    c = {"jti": "forged-proof-0000001", "htm": METHOD, "htu": URL, "iat": AT, "ath": ath_of(token)}
    body = b64url_encode(json.dumps(c).encode())
    mac = hmac.new(b64url_decode(KEY.public_jwk["x"]), f"{h}.{body}".encode(), hashlib.sha256).digest()
    rejected(verifier(ring), token, "bad_proof", dpop=f"{h}.{body}.{b64url_encode(mac)}")


def test_proof_by_a_small_order_key_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """The Ed25519 identity point as the proof key, with R = identity and S = 0: that
    signature satisfies the verification equation for every message, so whoever holds a
    token bound to this key could prove possession without any secret (OpenSSL's
    Ed25519 verify accepts it; libsodium's refuses small-order keys)."""
    identity = bytes([1]) + bytes(31)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(identity)}
    token = good_token(ed_signer, cnf_jkt=thumbprint(jwk))
    h = b64url_encode(json.dumps({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk}).encode())
    c = {"jti": "forged-proof-0000001", "htm": METHOD, "htu": URL, "iat": AT, "ath": ath_of(token)}
    universal = f"{h}.{b64url_encode(json.dumps(c).encode())}.{b64url_encode(identity + bytes(32))}"
    with pytest.raises(ProofError):
        check_proof(universal, method=METHOD, url=URL, now=AT, access_token=token)
    rejected(verifier(ring), token, "bad_proof", dpop=universal)


def test_proof_with_a_private_key_in_its_jwk_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    token = bound(ed_signer)
    d = KEY.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    jwk = {**KEY.public_jwk, "d": b64url_encode(d)}
    rejected(verifier(ring), token, "bad_proof", dpop=forged(token, header={"jwk": jwk}))


@pytest.mark.parametrize("typ", ["JWT", "cap+jwt", None])
def test_proof_with_another_typ_is_rejected(ring: KeyRing, ed_signer: LocalSigner, typ: str | None) -> None:
    """Another signed JWT of the agent (or a capability token) is not a proof."""
    token = bound(ed_signer)
    rejected(verifier(ring), token, "bad_proof", dpop=forged(token, header={"typ": typ}))


def test_the_token_itself_as_proof_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    rejected(verifier(ring), token, "bad_proof", dpop=token)


def test_proof_with_a_nonce_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """We never send a DPoP-Nonce; a proof with one answers another server's challenge."""
    token = bound(ed_signer)
    rejected(verifier(ring), token, "bad_proof", dpop=forged(token, nonce="their-nonce"))


def test_a_bound_token_for_a_key_nobody_holds_is_useless(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """The existing regression (test_token_attacks): a jkt that is no real key's thumbprint."""
    token = good_token(ed_signer, cnf_jkt="A" * 43)
    rejected(verifier(ring), token, "bad_proof", dpop=proof_for(token))


def test_a_proof_refused_for_another_reason_is_not_used_up(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """The replay claim comes last: a request refused for revocation trouble keeps its proof."""

    class Flaky:
        def __init__(self) -> None:
            self.up = False

        def is_revoked(self, claims: object) -> bool:
            if not self.up:
                raise TimeoutError
            return False

    flaky = Flaky()
    v = verifier(ring, revocation=flaky)
    token = bound(ed_signer)
    proof = proof_for(token)
    rejected(v, token, "revocation_unavailable", dpop=proof)
    flaky.up = True
    accepted(v, token, proof)


def test_a_revoked_bound_token_is_rejected_with_a_valid_proof(ring: KeyRing, ed_signer: LocalSigner) -> None:
    revoked = StaticRevocationList()
    revoked.revoke_task("t1")
    token = bound(ed_signer)
    rejected(verifier(ring, revocation=revoked), token, "revoked", dpop=proof_for(token))


def test_a_full_replay_cache_forgets_a_proof_but_never_lets_it_back(ring: KeyRing, ed_signer: LocalSigner) -> None:
    v = verifier(ring, proof_replay=MemoryReplayCache(max_entries=1))
    token = bound(ed_signer)
    first, second = proof_for(token), proof_for(token)
    accepted(v, token, first)
    accepted(v, token, second)  # the cache holds one proof: the first is forgotten...
    rejected(v, token, "bad_proof", dpop=first)  # ...and refused by its key's floor
    rejected(v, token, "bad_proof", dpop=second)


def test_a_full_replay_cache_fails_closed(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """Room for one proof and one floor: a third key can be neither remembered nor marked."""
    v = verifier(ring, proof_replay=MemoryReplayCache(max_entries=1))
    keys = [DpopKey.generate("EdDSA") for _ in range(3)]
    tokens = [bound(ed_signer, k, jti=f"test-token-id-0000001{i}") for i, k in enumerate(keys)]
    accepted(v, tokens[0], proof_for(tokens[0], key=keys[0]))
    accepted(v, tokens[1], proof_for(tokens[1], key=keys[1]))
    rejected(v, tokens[2], "bad_proof", dpop=proof_for(tokens[2], key=keys[2]))


def test_one_key_flooding_the_replay_cache_does_not_lock_out_other_keys(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """Issue 11, reproduction 6: one holder sent a flood of fresh proofs (100,000 against
    the default cache), the cache filled, and every other agent's valid proof was
    ``bad_proof`` until the flood expired. Now the flooding key stops at its quota: the
    others keep their room, and the flooder's replays are still refused."""
    flooder = DpopKey.generate("EdDSA")
    cache = MemoryReplayCache(max_entries=300, max_per_key=100)
    v = verifier(ring, proof_replay=cache)
    flood_token = bound(ed_signer, flooder, jti="test-token-id-00000009")
    flood = [proof_for(flood_token, key=flooder) for _ in range(400)]  # more than the whole cache
    outcomes: list[str] = []
    for proof in flood:
        try:
            v.verify(flood_token, dpop=proof, method=METHOD, url=URL)
            outcomes.append("accepted")
        except TokenRejected as e:
            outcomes.append(e.code)
    assert outcomes == ["accepted"] * 100 + ["bad_proof"] * 300  # its quota, then refused
    token = bound(ed_signer)
    accepted(v, token, proof_for(token))  # another key's fresh proof passes
    accepted(v, token, proof_for(token))
    rejected(v, flood_token, "bad_proof", dpop=flood[0])  # a replay of an accepted proof
    rejected(v, flood_token, "bad_proof", dpop=flood[0], now=AT + 60)  # still, while it could be fresh
    assert cache.held_by(flooder.jkt) == 100
    assert len(cache) == 102


def test_many_keys_flooding_the_replay_cache_do_not_lock_out_another_key(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """The same flood from several keys, each under its quota, together over the whole
    cache: another key's fresh proof still passes (the proofs that expire first are
    forgotten), and no flood proof, remembered or forgotten, is accepted twice."""
    cache = MemoryReplayCache(max_entries=300, max_per_key=100)
    v = verifier(ring, proof_replay=cache)
    flood: list[tuple[str, str]] = []
    taken = 0
    for i in range(4):
        key = DpopKey.generate("EdDSA")
        flood_token = bound(ed_signer, key, jti=f"test-token-id-0000002{i}")
        for _ in range(100):  # older proofs first: iat AT - 5, they expire first
            proof = proof_for(flood_token, key=key, iat=AT - 5)
            # All flood proofs expire together, so the one forgotten to make room may be
            # the flooding key's own: its floor then refuses the rest of its burst (closed
            # for the flooder). Which key that is depends on the keys' random thumbprints.
            with contextlib.suppress(TokenRejected):
                accepted(v, flood_token, proof)
                taken += 1
            flood.append((flood_token, proof))
    assert taken >= 300
    assert len(cache) == 300
    token = bound(ed_signer)
    for _ in range(3):
        accepted(v, token, proof_for(token))
    for flood_token, proof in flood:
        rejected(v, flood_token, "bad_proof", dpop=proof)


def test_a_replay_cache_that_cannot_answer_fails_closed(ring: KeyRing, ed_signer: LocalSigner) -> None:
    class Down:
        def claim(self, jkt: str, jti: str, expires_at: int, now: int) -> bool:
            raise ConnectionError

    token = bound(ed_signer)
    rejected(verifier(ring, proof_replay=Down()), token, "revocation_unavailable", dpop=proof_for(token))


def test_the_replay_key_outlives_the_freshness_window(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """The cache must remember a proof at least until its iat + max_age (when it goes stale)."""
    seen: list[tuple[str, int, int]] = []

    class Recording(MemoryReplayCache):
        def claim(self, jkt: str, jti: str, expires_at: int, now: int) -> bool:
            seen.append((jkt, expires_at, now))
            return super().claim(jkt, jti, expires_at, now)

    token = bound(ed_signer)
    accepted(verifier(ring, proof_replay=Recording()), token, proof_for(token, iat=AT - 3))
    ((jkt, expires_at, now),) = seen
    assert jkt == KEY.jkt
    assert now == AT
    assert expires_at >= AT - 3 + 60


def test_a_proof_with_an_unbound_token_is_ignored(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """Decision: an unbound token is a bearer token by design; a proof with it adds nothing."""
    token = good_token(ed_signer)
    v = verifier(ring)
    assert v.verify(token, dpop="not a proof", method=METHOD, url=URL).claims.cnf_jkt is None


def test_a_proof_without_the_request_is_a_programming_error(ring: KeyRing, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    with pytest.raises(ValueError, match="method and url"):
        verifier(ring).verify(token, dpop=proof_for(token))
    with pytest.raises(ValueError, match="method and url"):
        verifier(ring).verify(token, dpop=proof_for(token), method=METHOD)


# =================================================================== properties


GOOD_TOKEN = "eyJ0eXAiOiJjYXArand0In0.e30.c2ln"
GOOD_PROOF = KEY_ES.proof(METHOD, URL, now=AT, access_token=GOOD_TOKEN)
PROOF_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_changing_any_one_character_of_a_proof_makes_it_refused(data: st.DataObject) -> None:
    check_proof(GOOD_PROOF, method=METHOD, url=URL, now=AT, access_token=GOOD_TOKEN)  # the original is fine
    i = data.draw(st.integers(0, len(GOOD_PROOF) - 1), label="index")
    c = data.draw(st.sampled_from(PROOF_CHARS).filter(lambda c: c != GOOD_PROOF[i]), label="char")
    with pytest.raises(ProofError):
        check_proof(GOOD_PROOF[:i] + c + GOOD_PROOF[i + 1 :], method=METHOD, url=URL, now=AT, access_token=GOOD_TOKEN)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
    path=st.sampled_from(["/reports/a.csv", "/reports/b.csv", "/reports", "/reports/a.csv/x", "/"]),
    host=st.sampled_from(["storage.internal", "other.internal", "storage.internal:444"]),
)
def test_a_proof_is_accepted_for_its_own_request_only(method: str, path: str, host: str) -> None:
    url = f"https://{host}{path}"
    try:
        check_proof(GOOD_PROOF, method=method, url=url + "?any=query", now=AT, access_token=GOOD_TOKEN)
    except ProofError:
        assert (method, url) != (METHOD, URL)
    else:
        assert (method, url) == (METHOD, URL)


# =================================================================== the ASGI middleware

HOST = "storage.internal"
PATH = "/reports/a.csv"


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = scope["state"]["capability_grant"].task.encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def asgi(
    app: Any,
    headers: list[tuple[bytes, bytes]],
    *,
    method: str = METHOD,
    path: str = PATH,
    host: str = HOST,
    **scope: Any,
) -> tuple[int, dict[bytes, bytes], dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    full = {
        "type": "http",
        "scheme": "https",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", host.encode()), *headers],
        **scope,
    }
    asyncio.run(app(full, receive, send))
    body = b"".join(m.get("body", b"") for m in sent[1:])
    answer = json.loads(body) if sent[0]["status"] != 200 else {"task": body.decode()}
    return sent[0]["status"], dict(sent[0]["headers"]), answer


def dpop_headers(token: str, *proofs: str, scheme: str = "DPoP") -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"{scheme} {token}".encode()), *((b"dpop", p.encode()) for p in proofs)]


def refused_by_middleware(app: Any, headers: list[tuple[bytes, bytes]], code: str, **kw: Any) -> dict[bytes, bytes]:
    status, response_headers, answer = asgi(app, headers, **kw)
    assert (status, answer["code"]) == (401, code)
    return response_headers


@pytest.fixture
def app(ring: KeyRing) -> CapabilityMiddleware:
    return CapabilityMiddleware(echo_app, verifier(ring))


def test_middleware_accepts_a_bound_token_with_a_valid_proof(app: CapabilityMiddleware, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    assert asgi(app, dpop_headers(token, proof_for(token)))[::2] == (200, {"task": "t1"})
    for scheme in ("dpop", "DPOP"):  # the scheme is case-insensitive
        assert asgi(app, dpop_headers(token, proof_for(token), scheme=scheme))[0] == 200


def test_middleware_bound_token_without_a_proof_is_rejected(app: CapabilityMiddleware, ed_signer: LocalSigner) -> None:
    refused_by_middleware(app, dpop_headers(bound(ed_signer)), "proof_required")


def test_middleware_bearer_scheme_with_a_bound_token_is_rejected(
    app: CapabilityMiddleware, ed_signer: LocalSigner
) -> None:
    """Downgrade: the bound token sent as a plain bearer token, even with a valid proof."""
    token = bound(ed_signer)
    refused_by_middleware(app, dpop_headers(token, scheme="Bearer"), "proof_required")
    refused_by_middleware(app, dpop_headers(token, proof_for(token), scheme="Bearer"), "proof_required")
    refused_by_middleware(app, dpop_headers(token, proof_for(token), scheme="bearer"), "proof_required")


def test_middleware_unbound_token_still_works_with_either_scheme(
    app: CapabilityMiddleware, ed_signer: LocalSigner
) -> None:
    token = good_token(ed_signer)
    assert asgi(app, dpop_headers(token, scheme="Bearer"))[0] == 200
    assert asgi(app, dpop_headers(token, proof_for(token), scheme="DPoP"))[0] == 200
    # RFC 9449 7.1: the DPoP scheme always comes with a proof, bound token or not
    refused_by_middleware(app, dpop_headers(token, scheme="DPoP"), "proof_required")


def test_middleware_two_dpop_headers_are_rejected(app: CapabilityMiddleware, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    refused_by_middleware(app, dpop_headers(token, proof_for(token), proof_for(token)), "bad_proof")


def test_middleware_proof_from_another_key_is_rejected(app: CapabilityMiddleware, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    refused_by_middleware(app, dpop_headers(token, proof_for(token, key=THIEF)), "bad_proof")


def test_middleware_replayed_proof_is_rejected(app: CapabilityMiddleware, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    proof = proof_for(token)
    assert asgi(app, dpop_headers(token, proof))[0] == 200
    refused_by_middleware(app, dpop_headers(token, proof), "bad_proof")


def test_middleware_proof_for_another_method_is_rejected(app: CapabilityMiddleware, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    refused_by_middleware(app, dpop_headers(token, proof_for(token)), "bad_proof", method="DELETE")


def test_middleware_proof_for_another_path_is_rejected(app: CapabilityMiddleware, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    refused_by_middleware(app, dpop_headers(token, proof_for(token)), "bad_proof", path="/reports/b.csv")


def test_middleware_proof_for_another_host_is_rejected(app: CapabilityMiddleware, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    refused_by_middleware(app, dpop_headers(token, proof_for(token)), "bad_proof", host="other.internal")
    refused_by_middleware(app, dpop_headers(token, proof_for(token)), "bad_proof", scheme="http")


def test_middleware_stale_and_future_proofs_are_rejected(app: CapabilityMiddleware, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    refused_by_middleware(app, dpop_headers(token, proof_for(token, iat=AT - 61)), "bad_proof")
    refused_by_middleware(app, dpop_headers(token, proof_for(token, iat=AT + 6)), "bad_proof")


def test_middleware_proof_for_another_token_is_rejected(app: CapabilityMiddleware, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    other = bound(ed_signer, jti="test-token-id-00000002")
    refused_by_middleware(app, dpop_headers(token, proof_for(other)), "bad_proof")
    refused_by_middleware(app, dpop_headers(token, proof_for(None)), "bad_proof")


def test_middleware_host_header_cannot_cut_the_path_out_of_the_url(
    app: CapabilityMiddleware, ed_signer: LocalSigner
) -> None:
    """Host ``storage.internal/reports/a.csv?`` would make any path look like a.csv."""
    token = bound(ed_signer)
    proof = proof_for(token)
    refused_by_middleware(
        app, dpop_headers(token, proof), "bad_proof", host="storage.internal/reports/a.csv?", path="/admin"
    )


def test_middleware_an_encoded_question_mark_cannot_cut_the_path(
    app: CapabilityMiddleware, ed_signer: LocalSigner
) -> None:
    """A server without raw_path decodes %3F into the path: a.csv%3F/../admin is not a.csv."""
    token = bound(ed_signer)
    refused_by_middleware(
        app, dpop_headers(token, proof_for(token)), "bad_proof", path="/reports/a.csv?/x", raw_path=None
    )


def test_middleware_public_url_names_the_external_url(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """Behind a proxy: the proof names the public URL, whatever Host the app sees."""
    app = CapabilityMiddleware(echo_app, verifier(ring), public_url="https://storage.internal/")
    token = bound(ed_signer)
    assert asgi(app, dpop_headers(token, proof_for(token)), host="10.0.0.7:8080", scheme="http")[0] == 200
    internal = proof_for(token, url="http://10.0.0.7:8080/reports/a.csv")
    refused_by_middleware(app, dpop_headers(token, internal), "bad_proof", host="10.0.0.7:8080", scheme="http")


def test_middleware_root_path_is_part_of_the_url(app: CapabilityMiddleware, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    proof = proof_for(token, url=f"https://{HOST}/storage{PATH}")
    assert asgi(app, dpop_headers(token, proof), root_path="/storage", raw_path=None)[0] == 200
    proof = proof_for(token, url=f"https://{HOST}/storage{PATH}")
    assert asgi(app, dpop_headers(token, proof), root_path="/storage", path="/storage" + PATH)[0] == 200
    refused_by_middleware(app, dpop_headers(token, proof_for(token)), "bad_proof", root_path="/storage")


def test_middleware_offers_both_schemes_in_www_authenticate(app: CapabilityMiddleware, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    challenge = refused_by_middleware(app, dpop_headers(token), "proof_required")[b"www-authenticate"]
    assert challenge.startswith(b'Bearer error="invalid_token"')
    assert b'DPoP error="invalid_token", algs="EdDSA ES256"' in challenge
    challenge = refused_by_middleware(app, dpop_headers(token, "x"), "bad_proof")[b"www-authenticate"]
    assert b'DPoP error="invalid_dpop_proof", algs="EdDSA ES256"' in challenge


def test_middleware_refuses_a_bad_public_url(ring: KeyRing) -> None:
    for url in ["storage.internal", "https://storage.internal/?q=1", "https://storage.internal/#f", "ftp://x"]:
        with pytest.raises(ValueError, match="public_url"):
            CapabilityMiddleware(echo_app, verifier(ring), public_url=url)


# =================================================================== the Litestar guard

BASE = "http://testserver.local"


def guarded(v: Verifier, **kw: Any) -> Litestar:
    @get(PATH)
    async def read_report(request: Request[Any, Any, Any]) -> dict[str, Any]:
        return {"task": grant_of(request).task}

    @get("/reports/b.csv")
    async def read_other(request: Request[Any, Any, Any]) -> dict[str, Any]:
        return {"task": grant_of(request).task}

    return Litestar([read_report, read_other], guards=[capability_guard(v, **kw)])


def auth(token: str, proof: str | None = None, scheme: str = "DPoP") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}", **({"DPoP": proof} if proof is not None else {})}


def guard_refuses(response: Any, code: str) -> None:
    assert response.status_code == 401
    assert response.json()["extra"]["code"] == code
    assert 'algs="EdDSA ES256"' in response.headers["www-authenticate"]


def test_guard_accepts_a_bound_token_with_a_valid_proof(ring: KeyRing, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    with TestClient(guarded(verifier(ring))) as client:
        ok = client.get(PATH, headers=auth(token, proof_for(token, url=BASE + PATH)))
        assert (ok.status_code, ok.json()) == (200, {"task": "t1"})


def test_guard_bound_token_without_a_proof_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    with TestClient(guarded(verifier(ring))) as client:
        guard_refuses(client.get(PATH, headers=auth(bound(ed_signer))), "proof_required")


def test_guard_bearer_scheme_with_a_bound_token_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    with TestClient(guarded(verifier(ring))) as client:
        response = client.get(PATH, headers=auth(token, proof_for(token, url=BASE + PATH), scheme="Bearer"))
        guard_refuses(response, "proof_required")


def test_guard_replayed_proof_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    proof = proof_for(token, url=BASE + PATH)
    with TestClient(guarded(verifier(ring))) as client:
        assert client.get(PATH, headers=auth(token, proof)).status_code == 200
        guard_refuses(client.get(PATH, headers=auth(token, proof)), "bad_proof")


def test_guard_proof_for_another_request_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    with TestClient(guarded(verifier(ring))) as client:
        guard_refuses(client.get("/reports/b.csv", headers=auth(token, proof_for(token, url=BASE + PATH))), "bad_proof")
        guard_refuses(client.get(PATH, headers=auth(token, proof_for(token, url=URL))), "bad_proof")
        post = proof_for(token, method="POST", url=BASE + PATH)
        guard_refuses(client.get(PATH, headers=auth(token, post)), "bad_proof")


def test_guard_proof_from_another_key_is_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    with TestClient(guarded(verifier(ring))) as client:
        guard_refuses(client.get(PATH, headers=auth(token, proof_for(token, key=THIEF, url=BASE + PATH))), "bad_proof")


def test_guard_two_dpop_headers_are_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    proof = proof_for(token, url=BASE + PATH)
    headers = [("Authorization", f"DPoP {token}"), ("DPoP", proof), ("DPoP", proof)]
    with TestClient(guarded(verifier(ring))) as client:
        guard_refuses(client.get(PATH, headers=headers), "bad_proof")


def test_guard_public_url_names_the_external_url(ring: KeyRing, ed_signer: LocalSigner) -> None:
    token = bound(ed_signer)
    with TestClient(guarded(verifier(ring), public_url="https://storage.internal")) as client:
        assert client.get(PATH, headers=auth(token, proof_for(token))).status_code == 200
        guard_refuses(client.get(PATH, headers=auth(token, proof_for(token, url=BASE + PATH))), "bad_proof")
