"""The verifier library: key sources, JWKS refresh rules, revocation, require()."""

from __future__ import annotations

import json

import pytest

from broker.token import KeyRing, KeySet, LocalSigner
from broker.verify import RemoteJwks, StaticRevocationList, TokenRejected, Verifier
from tests.helpers import AUDIENCE, ISSUER, NOW, good_token, verifier


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class JwksServer:
    """A fetch function standing in for the network (the real HTTP path is an integration test)."""

    def __init__(self, keys: KeySet) -> None:
        self.body = json.dumps(keys.to_jwks()).encode()
        self.fail = False
        self.calls = 0

    def __call__(self, url: str) -> bytes:
        self.calls += 1
        if self.fail:
            raise OSError("connection refused")
        return self.body


def test_exactly_one_key_source_is_required(ring: KeyRing) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Verifier(issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(ValueError, match="exactly one"):
        Verifier(issuer=ISSUER, audience=AUDIENCE, jwks=ring.keyset, jwks_url="https://x/jwks")


def test_leeway_above_sixty_seconds_is_refused(ring: KeyRing) -> None:
    with pytest.raises(ValueError, match="leeway"):
        verifier(ring, leeway=61)


def test_plain_http_jwks_url_only_on_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        Verifier(issuer=ISSUER, audience=AUDIENCE, jwks_url="http://broker.internal/jwks")
    Verifier(issuer=ISSUER, audience=AUDIENCE, jwks_url="http://127.0.0.1:8700/.well-known/jwks.json")


def test_jwks_document_dict_is_accepted(ring: KeyRing, ed_signer: LocalSigner) -> None:
    v = Verifier(issuer=ISSUER, audience=AUDIENCE, jwks=ring.keyset.to_jwks(), clock=lambda: NOW + 1.0)
    assert v.verify(good_token(ed_signer)).task == "t1"


def test_require_refuses_access_outside_the_token(ring: KeyRing, ed_signer: LocalSigner) -> None:
    v = verifier(ring)
    token = good_token(ed_signer)
    assert v.require(token, kind="bucket", resource="s3://acme-reports/agents/t1/a.csv", action="read").agent == (
        "analyst"
    )
    for kind, resource, action in [
        ("bucket", "s3://acme-reports/agents/t1/a.csv", "delete"),
        ("bucket", "s3://acme-reports/agents/t10/a.csv", "read"),
        ("bucket", "s3://acme-reports/agents/t1/../t2/a.csv", "read"),
        ("git", "s3://acme-reports/agents/t1/a.csv", "read"),
    ]:
        with pytest.raises(TokenRejected) as e:
            v.require(token, kind=kind, resource=resource, action=action)
        assert e.value.code == "not_allowed"


def test_another_agents_task_of_the_same_id_is_not_this_tokens(ring: KeyRing, ed_signer: LocalSigner) -> None:
    revoked = StaticRevocationList()
    revoked.revoke_task("t1", "reviewer")  # reviewer's t1; the token is analyst's t1
    assert verifier(ring, revocation=revoked).verify(good_token(ed_signer)).task == "t1"


def test_revoked_token_task_and_agent_are_rejected(ring: KeyRing, ed_signer: LocalSigner) -> None:
    revoked = StaticRevocationList()
    v = verifier(ring, revocation=revoked)
    token = good_token(ed_signer)
    assert v.verify(token)
    for revoke in (
        lambda: revoked.token_ids.add("test-token-id-00000001"),
        lambda: revoked.revoke_task("t1", "analyst"),
        lambda: revoked.revoke_task("t1"),  # the task id, for every agent
        lambda: revoked.agents_before.__setitem__("analyst", NOW),
    ):
        revoked.token_ids.clear()
        revoked.tasks.clear()
        revoked.agents_before.clear()
        revoke()
        with pytest.raises(TokenRejected) as e:
            v.verify(token)
        assert e.value.code == "revoked"


def test_agent_kill_switch_spares_tokens_issued_after_the_cutoff(ring: KeyRing, ed_signer: LocalSigner) -> None:
    revoked = StaticRevocationList()
    revoked.agents_before["analyst"] = NOW - 1
    assert verifier(ring, revocation=revoked).verify(good_token(ed_signer))


def test_agent_kill_switch_reaches_tokens_delegated_from_the_agent(ring: KeyRing, ed_signer: LocalSigner) -> None:
    from broker.token import Actor

    revoked = StaticRevocationList()
    revoked.agents_before["analyst"] = NOW
    delegated = good_token(ed_signer, agent="helper-2", act=Actor("agent:helper", Actor("agent:analyst")))
    with pytest.raises(TokenRejected) as e:
        verifier(ring, revocation=revoked).verify(delegated)
    assert e.value.code == "revoked"
    unrelated = good_token(ed_signer, agent="helper-2", act=Actor("agent:helper", Actor("agent:reviewer")))
    assert verifier(ring, revocation=revoked).verify(unrelated)


def test_revocation_check_failure_fails_closed(ring: KeyRing, ed_signer: LocalSigner) -> None:
    class Down:
        def is_revoked(self, claims: object) -> bool:
            raise ConnectionError("redis down")

    with pytest.raises(TokenRejected) as e:
        verifier(ring, revocation=Down()).verify(good_token(ed_signer))
    assert e.value.code == "revocation_unavailable"


def test_remote_jwks_unknown_kid_refetches_at_most_once_per_cooldown(ring: KeyRing) -> None:
    server, clock = JwksServer(ring.keyset), FakeClock()
    jwks = RemoteJwks("https://broker.test/jwks", fetch=server, clock=clock, cooldown=30, refresh=300)
    assert jwks.key_for("ed-1") is not None
    assert server.calls == 1
    for _ in range(50):
        assert jwks.key_for("nope") is None
    assert server.calls == 1  # inside the cooldown: no refetch storm
    clock.t = 31
    assert jwks.key_for("nope") is None
    assert server.calls == 2


def test_remote_jwks_picks_up_a_rotated_key(ring: KeyRing) -> None:
    old = KeySet([next(iter(ring.keyset))])
    server, clock = JwksServer(old), FakeClock()
    jwks = RemoteJwks("https://broker.test/jwks", fetch=server, clock=clock, cooldown=5, refresh=300)
    assert jwks.key_for("es-1") is None
    server.body = json.dumps(ring.keyset.to_jwks()).encode()
    clock.t = 6
    assert jwks.key_for("es-1") is not None


def test_remote_jwks_keeps_keys_through_an_outage_then_fails_closed(ring: KeyRing) -> None:
    server, clock = JwksServer(ring.keyset), FakeClock()
    jwks = RemoteJwks("https://broker.test/jwks", fetch=server, clock=clock, cooldown=5, refresh=60, max_stale=600)
    assert jwks.key_for("ed-1") is not None
    server.fail = True
    clock.t = 599
    assert jwks.key_for("ed-1") is not None  # stale but within the bound
    clock.t = 601
    with pytest.raises(TokenRejected) as e:
        jwks.key_for("ed-1")
    assert e.value.code == "keys_unavailable"
    server.fail = False
    clock.t = 700
    assert jwks.key_for("ed-1") is not None  # recovers without a restart


def test_remote_jwks_never_fetched_fails_closed() -> None:
    def down(url: str) -> bytes:
        raise OSError("down")

    jwks = RemoteJwks("https://broker.test/jwks", fetch=down, clock=FakeClock())
    with pytest.raises(TokenRejected) as e:
        jwks.key_for("ed-1")
    assert e.value.code == "keys_unavailable"


def test_malformed_jwks_does_not_replace_good_keys(ring: KeyRing) -> None:
    server, clock = JwksServer(ring.keyset), FakeClock()
    jwks = RemoteJwks("https://broker.test/jwks", fetch=server, clock=clock, cooldown=5, refresh=10)
    assert jwks.key_for("ed-1") is not None
    for bad in (b"not json", b'{"keys": "x"}', b'{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AA", "kid": "a"}]}'):
        server.body = bad
        clock.t += 11
        assert jwks.key_for("ed-1") is not None


def test_jwks_with_a_private_key_is_refused(ring: KeyRing) -> None:
    doc = ring.keyset.to_jwks()
    doc["keys"][0]["d"] = "AAAA"
    with pytest.raises(ValueError, match="private"):
        KeySet.from_jwks(doc)


def test_jwks_skips_key_types_it_never_uses(ring: KeyRing) -> None:
    doc = ring.keyset.to_jwks()
    doc["keys"].append({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"})
    keys = KeySet.from_jwks(doc)
    assert keys.key_for("hmac") is None
    assert len(keys) == 2


def test_verifier_with_remote_jwks_verifies(ring: KeyRing, ed_signer: LocalSigner) -> None:
    server = JwksServer(ring.keyset)
    v = Verifier(
        issuer=ISSUER, audience=AUDIENCE, jwks_url="https://broker.test/jwks", fetch=server, clock=lambda: NOW + 5.0
    )
    assert v.verify(good_token(ed_signer)).token_id == "test-token-id-00000001"


def test_revocation_must_be_a_check_object(ring: KeyRing) -> None:
    with pytest.raises(TypeError, match="is_revoked"):
        verifier(ring, revocation="http://127.0.0.1:6379")


@pytest.mark.parametrize("max_ttl", [0, 3601, 10**9, 1.5])
def test_max_ttl_can_only_lower_the_global_cap(ring: KeyRing, max_ttl: object) -> None:
    with pytest.raises(ValueError, match="max_ttl"):
        verifier(ring, max_ttl=max_ttl)


def test_jwks_fetch_that_explodes_in_any_way_keeps_the_old_keys(ring: KeyRing) -> None:
    server, clock = JwksServer(ring.keyset), FakeClock()
    jwks = RemoteJwks("https://broker.test/jwks", fetch=server, clock=clock, cooldown=5, refresh=10)
    assert jwks.key_for("ed-1") is not None
    server.body = b"[" * 100_000 + b"]" * 100_000  # RecursionError in the JSON parser
    clock.t += 11
    assert jwks.key_for("ed-1") is not None

    def broken(url: str) -> bytes:
        raise RuntimeError("anything at all")

    jwks._fetch = broken
    clock.t += 11
    assert jwks.key_for("ed-1") is not None


def test_allows_refuses_values_of_the_wrong_type(ring: KeyRing, ed_signer: LocalSigner) -> None:
    grant = verifier(ring).verify(good_token(ed_signer))
    assert not grant.allows(["bucket"], "s3://acme-reports/agents/t1/a", "read")  # type: ignore[arg-type]
    assert not grant.allows("bucket", None, "read")  # type: ignore[arg-type]


def test_proof_settings_are_checked(ring: KeyRing) -> None:
    for bad in (0, 301, 60.0, True):
        with pytest.raises(ValueError, match="proof_max_age"):
            verifier(ring, proof_max_age=bad)
    with pytest.raises(TypeError, match="proof_replay"):
        verifier(ring, proof_replay=set())
    verifier(ring, proof_max_age=300)


def test_the_presets_build_the_verifier_they_name(ring: KeyRing, ed_signer: LocalSigner) -> None:
    """``with_keys`` and ``with_introspection`` are the constructor with one source each."""
    revoked = StaticRevocationList()
    token = good_token(ed_signer)
    fixed = Verifier.with_keys(issuer=ISSUER, audience=AUDIENCE, jwks=ring.keyset, revocation=revoked)
    assert fixed.verify(token, now=NOW).task == "t1"
    revoked.token_ids.add(fixed.verify(token, now=NOW).token_id)
    with pytest.raises(TokenRejected) as e:
        fixed.verify(token, now=NOW)
    assert e.value.code == "revoked"

    class Asked:
        def __init__(self) -> None:
            self.tokens: list[str] = []

        def is_active(self, token: str) -> bool:
            self.tokens.append(token)
            return False

    broker = Asked()
    remote = Verifier.with_introspection(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_url="http://127.0.0.1:1/.well-known/jwks.json",
        introspection=broker,  # type: ignore[arg-type]
        fetch=lambda _url: json.dumps(ring.keyset.to_jwks()).encode(),
    )
    assert remote.may_block
    with pytest.raises(TokenRejected) as e:
        remote.verify(token, now=NOW)
    assert (e.value.code, broker.tokens) == ("revoked", [token])
