"""The session-key signer's decisions (``broker/token/published.py``), from inputs and an
injected ``now``: no Redis, no Vault, no sleep."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broker.token.endorsement import endorse_locally, endorsement_payload, verify_endorsement, windows
from broker.token.keys import MAX_JWKS_KEYS, KeySet, LocalSigner
from broker.token.published import GC_GRACE, Entries, SessionKey, build_view, choose, expired, vanished

ISSUER = "https://broker.test"
LONG_TERM = LocalSigner.generate("EdDSA", "capbroker-v1")
TRANSIT = KeySet([LONG_TERM.public])
T0 = 1_800_000_000
SPAN = 1200  # window 900 + lead 300
LEAD = 300


def endorsed(at: int = T0, n: int = 0, endorser: LocalSigner = LONG_TERM) -> tuple[SessionKey, str]:
    signer = LocalSigner.generate("EdDSA", f"s-{n:016x}")
    compact = endorse_locally(endorsement_payload(signer.public, ISSUER, windows(at, SPAN)), endorser)
    endorsement = verify_endorsement(compact, KeySet([endorser.public]), issuer=ISSUER, alg="EdDSA")
    return SessionKey(signer, endorsement), compact


def published(*keys: SessionKey) -> frozenset[str]:
    return frozenset(k.kid for k in keys)


# ---------------------------------------------------------------- which key signs


def test_the_current_key_signs_inside_its_window() -> None:
    current, _ = endorsed()
    choice = choose(current, None, published(current), now=T0 + 10, exp=T0 + 310, lead=LEAD)
    assert (choice.key, choice.current, choice.renew) == (current, current, False)


def test_a_successor_is_due_lead_seconds_before_the_current_key_stops() -> None:
    current, _ = endorsed()
    stop = current.endorsement.sign_until
    assert not choose(current, None, published(current), now=stop - LEAD - 1, exp=stop, lead=LEAD).renew
    assert choose(current, None, published(current), now=stop - LEAD, exp=stop, lead=LEAD).renew


def test_the_successor_takes_over_when_the_current_key_stops() -> None:
    current, _ = endorsed()
    successor, _ = endorsed(T0 + 900, 1)
    after = current.endorsement.sign_until
    choice = choose(current, successor, published(current, successor), now=after, exp=after + 300, lead=LEAD)
    assert (choice.key, choice.current, choice.next) == (successor, successor, None)


def test_a_key_no_longer_published_is_dropped_and_never_signs() -> None:
    current, _ = endorsed()
    choice = choose(current, None, frozenset(), now=T0 + 10, exp=T0 + 310, lead=LEAD)
    assert (choice.key, choice.current, choice.dropped, choice.renew) == (None, None, (current,), True)


def test_no_key_signs_a_token_that_outlives_its_publication() -> None:
    current, _ = endorsed()
    too_late = current.endorsement.publish_until
    choice = choose(current, None, published(current), now=T0 + 10, exp=too_late, lead=LEAD)
    assert (choice.key, choice.renew) == (None, True)


@given(now=st.integers(T0 - 100, T0 + 6000), ttl=st.integers(1, 3600), have_next=st.booleans())
def test_a_chosen_key_is_published_signs_now_and_covers_the_token(now: int, ttl: int, have_next: bool) -> None:
    current, _ = KEYS[0]
    successor = KEYS[1][0] if have_next else None
    choice = choose(current, successor, published(current, *KEYS[1][:1]), now=now, exp=now + ttl, lead=LEAD)
    if choice.key is not None:
        e = choice.key.endorsement
        assert e.signs_at(now)
        assert e.covers_exp(now + ttl)
        assert choice.key is choice.current


KEYS = [endorsed(T0, 7), endorsed(T0 + 900, 8)]


# ---------------------------------------------------------------- what is published


def test_a_view_publishes_the_transit_versions_then_the_newest_session_keys() -> None:
    keys = [endorsed(T0 + i, i) for i in range(3)]
    view = build_view([k.endorsement for k, _ in keys], TRANSIT, now=T0 + 100, read_at=1.0, seq=1)
    assert [k.kid for k in view.keyset][:1] == ["capbroker-v1"]
    assert view.session_kids == published(*(k for k, _ in keys))
    assert view.valid_until == min(k.endorsement.publish_until for k, _ in keys)


def test_a_key_past_its_publication_leaves_the_view() -> None:
    key, _ = endorsed()
    view = build_view([key.endorsement], TRANSIT, now=key.endorsement.publish_until, read_at=1.0, seq=1)
    assert view.session_kids == frozenset()


def test_the_jwks_cap_leaves_the_oldest_keys_out_and_says_so() -> None:
    keys = [endorsed(T0 + i, i)[0].endorsement for i in range(MAX_JWKS_KEYS + 2)]
    view = build_view(keys, TRANSIT, now=T0 + 100, read_at=1.0, seq=1)
    assert len(view.keyset) == MAX_JWKS_KEYS
    assert view.left_out == 3  # one slot went to the Transit version
    assert keys[0].kid not in view.session_kids  # the oldest
    assert keys[-1].kid in view.session_kids


def test_a_key_that_vanishes_before_its_end_is_withdrawn_only_against_an_older_view() -> None:
    a, _ = endorsed(T0, 1)
    b, _ = endorsed(T0, 2)
    before = build_view([a.endorsement, b.endorsement], TRANSIT, now=T0 + 1, read_at=1.0, seq=1)
    assert vanished(before, 2, [a.endorsement], now=T0 + 2) == {b.kid: b.endorsement.publish_until}
    assert vanished(before, 1, [a.endorsement], now=T0 + 2) == {}  # a read that started earlier
    assert vanished(before, 2, [a.endorsement], now=b.endorsement.publish_until) == {}  # ended anyway


# ---------------------------------------------------------------- stored entries


def test_entries_publish_what_verifies_and_count_each_refused_value_once() -> None:
    good, good_compact = endorsed(T0, 1)
    forged, forged_compact = endorsed(T0, 2, endorser=LocalSigner.generate("EdDSA", "capbroker-v1"))
    checked = Entries(ISSUER, "EdDSA")
    stored = {good.kid: good_compact, forged.kid: forged_compact, "s-00000000000000ff": good_compact}
    for _ in range(3):
        entries, unknown = checked.verify_all(stored, TRANSIT)
        assert [e.kid for e in entries] == [good.kid]
        assert unknown is False
    assert checked.refused == 2  # the forgery, and a genuine entry stored under another kid


def test_an_entry_by_a_version_not_read_yet_asks_for_a_fresh_transit_read() -> None:
    rotated = LocalSigner.generate("EdDSA", "capbroker-v2")
    key, compact = endorsed(T0, 1, endorser=rotated)
    checked = Entries(ISSUER, "EdDSA")
    assert checked.verify_all({key.kid: compact}, TRANSIT) == ([], True)
    entries, unknown = checked.verify_all({key.kid: compact}, KeySet([LONG_TERM.public, rotated.public]))
    assert ([e.kid for e in entries], unknown) == ([key.kid], False)


def test_entries_long_past_their_end_are_collected_refused_ones_by_the_end_they_claim() -> None:
    good, good_compact = endorsed(T0, 1)
    old, old_compact = endorsed(T0, 2, endorser=LocalSigner.generate("EdDSA", "capbroker-v0"))
    checked = Entries(ISSUER, "EdDSA")
    stored = {good.kid: good_compact, old.kid: old_compact, "s-junk": "not an endorsement"}
    entries, _ = checked.verify_all(stored, TRANSIT)
    ends = checked.ends(stored, entries)
    assert ends == {good.kid: good.endorsement.publish_until, old.kid: old.endorsement.publish_until}
    end = good.endorsement.publish_until
    assert expired(ends, end + GC_GRACE) == []
    assert sorted(expired(ends, end + GC_GRACE + 1)) == sorted([good.kid, old.kid])  # the junk stays

