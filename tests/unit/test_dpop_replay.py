"""The in-memory DPoP replay cache: once per proof, bounded in all and per key, fail
closed when full or over quota, thread-safe."""

from __future__ import annotations

import threading
import time

import pytest

from broker.dpop import MemoryReplayCache, ProofReplayCache

NOW = 1_790_000_000
A = "A" * 43  # thumbprints: 43 base64url characters
B = "B" * 43


def test_a_proof_is_claimed_once() -> None:
    cache: ProofReplayCache = MemoryReplayCache()
    assert cache.claim(A, "jti-1", NOW + 65, NOW) is True
    assert cache.claim(A, "jti-1", NOW + 65, NOW) is False
    assert cache.claim(A, "jti-2", NOW + 65, NOW) is True


def test_the_same_jti_from_another_key_is_another_proof() -> None:
    cache = MemoryReplayCache()
    assert cache.claim(A, "jti-1", NOW + 65, NOW)
    assert cache.claim(B, "jti-1", NOW + 65, NOW)
    assert not cache.claim(B, "jti-1", NOW + 65, NOW)


def test_a_proof_is_remembered_until_its_expiry_inclusive() -> None:
    cache = MemoryReplayCache()
    assert cache.claim(A, "k", NOW + 65, NOW)
    assert not cache.claim(A, "k", NOW + 200, NOW + 65)  # the last second it could be accepted
    assert cache.claim(A, "k", NOW + 200, NOW + 66)  # past it: forgotten, and claimable again
    assert len(cache) == 1


C = "C" * 43


def test_a_full_cache_forgets_the_proof_that_expires_first_and_never_lets_it_back() -> None:
    cache = MemoryReplayCache(max_entries=2, max_per_key=2)
    assert cache.claim(A, "a", NOW + 50, NOW)
    assert cache.claim(B, "b", NOW + 60, NOW)
    assert cache.claim(C, "c", NOW + 60, NOW)  # full: A's "a" (the first to expire) is forgotten
    assert len(cache) == 2
    assert cache.held_by(A) == 0
    assert not cache.claim(A, "a", NOW + 50, NOW)  # but its replay is refused: A's floor
    assert not cache.claim(A, "older", NOW + 49, NOW)  # as is anything of A's as old
    assert not cache.claim(B, "b", NOW + 60, NOW)  # B's "b" is still remembered


def test_a_floor_refuses_only_what_expires_no_later_than_the_forgotten_proof() -> None:
    cache = MemoryReplayCache(max_entries=2)
    assert cache.claim(A, "first", NOW + 60, NOW)
    assert cache.claim(B, "b", NOW + 70, NOW)
    assert cache.claim(C, "c", NOW + 70, NOW)  # "first" forgotten: A's floor is NOW + 60
    assert not cache.claim(A, "made-in-the-same-second", NOW + 60, NOW + 1)
    assert cache.claim(A, "made-a-second-later", NOW + 61, NOW + 1)  # B's "b" forgotten now
    assert not cache.claim(B, "b", NOW + 70, NOW + 1)
    assert not cache.claim(B, "made-in-the-same-second", NOW + 70, NOW + 1)
    assert cache.claim(B, "made-a-second-later", NOW + 71, NOW + 1)  # A's floor rises to NOW + 61
    assert cache._floor == {A: NOW + 61, B: NOW + 70}


def test_many_keys_filling_the_cache_do_not_lock_out_another_key() -> None:
    """Each key under its quota, together over the whole cache: a new key still gets room."""
    cache = MemoryReplayCache(max_entries=100, max_per_key=10)
    flooders = [f"{i:043d}" for i in range(20)]
    for n in range(10):
        for jkt in flooders:
            cache.claim(jkt, f"flood-{n}", NOW + 60 + n, NOW)
    assert len(cache) == 100
    assert cache.claim(A, "fresh", NOW + 65, NOW + 5)
    assert cache.claim(B, "fresh", NOW + 65, NOW + 5)
    for jkt in flooders:  # every flooder proof, remembered or forgotten, is refused again
        for n in range(10):
            assert not cache.claim(jkt, f"flood-{n}", NOW + 60 + n, NOW + 5)


def test_with_no_floor_left_a_full_cache_refuses_every_new_key() -> None:
    """Fail closed: a cache that can neither remember a proof nor mark its key never lets
    one through."""
    cache = MemoryReplayCache(max_entries=1)
    assert cache.claim(A, "a", NOW + 60, NOW)
    assert cache.claim(B, "b", NOW + 60, NOW)  # A's proof forgotten, A has the one floor
    assert not cache.claim(C, "c", NOW + 60, NOW)  # B's would need a second floor
    assert not cache.claim(A, "a", NOW + 60, NOW)
    assert not cache.claim(B, "b", NOW + 60, NOW)
    assert not cache.claim(B, "b2", NOW + 61, NOW + 1)  # B's own new proof too
    assert cache.claim(C, "c", NOW + 121, NOW + 61)  # all expired, floors too: room again
    assert cache.claim(A, "a", NOW + 121, NOW + 61)  # A's floor went with what it covered


def test_floors_expire_with_what_they_cover() -> None:
    cache = MemoryReplayCache(max_entries=1)
    assert cache.claim(A, "a", NOW + 60, NOW)
    assert cache.claim(B, "b", NOW + 70, NOW)  # A's floor: NOW + 60
    assert cache._floor == {A: NOW + 60}  # white-box: the floor is bounded state too
    assert cache.claim(C, "c", NOW + 130, NOW + 61)  # B expired? no: forgotten, B gets a floor
    assert cache._floor == {B: NOW + 70}  # A's went at NOW + 61
    assert cache.claim(A, "a2", NOW + 200, NOW + 131)
    assert cache._floor == {}


def test_a_key_at_its_quota_is_refused_and_the_others_are_not() -> None:
    """Reproduction 6 at the cache: one key's flood leaves room for every other key."""
    cache = MemoryReplayCache(max_entries=100, max_per_key=10)
    flood = [f"flood-{i:04d}" for i in range(50)]
    accepted = [jti for jti in flood if cache.claim(A, jti, NOW + 60, NOW)]
    assert accepted == flood[:10]
    assert cache.held_by(A) == 10
    assert cache.claim(B, "fresh", NOW + 60, NOW)
    assert not cache.claim(A, flood[0], NOW + 60, NOW)  # its replays are still refused
    assert not cache.claim(A, flood[20], NOW + 60, NOW)  # and so is what it sent over quota


def test_a_key_gets_its_quota_back_as_its_proofs_expire() -> None:
    cache = MemoryReplayCache(max_entries=100, max_per_key=2)
    assert cache.claim(A, "old", NOW + 10, NOW)
    assert cache.claim(A, "new", NOW + 60, NOW)
    assert not cache.claim(A, "more", NOW + 60, NOW)
    assert cache.claim(A, "more", NOW + 70, NOW + 11)  # "old" expired: one slot back
    assert not cache.claim(A, "new", NOW + 70, NOW + 11)  # "new" did not
    assert cache.held_by(A) == 2
    assert cache.claim(A, "later", NOW + 200, NOW + 71)  # all expired: the key is forgotten
    assert cache.held_by(A) == 1


def test_expired_proofs_make_room_first() -> None:
    cache = MemoryReplayCache(max_entries=2, max_per_key=2)
    assert cache.claim(A, "a", NOW + 10, NOW)
    assert cache.claim(B, "b", NOW + 60, NOW)
    assert cache.claim(A, "c", NOW + 60, NOW + 11)  # "a" expired and went
    assert not cache.claim(B, "b", NOW + 60, NOW + 11)  # "b" did not
    assert len(cache) == 2


class SlowDict(dict[tuple[str, str], int]):
    """Widens the gap between "seen?" and "remember it": without the lock, every thread
    would slip through it."""

    def __contains__(self, key: object) -> bool:
        found = super().__contains__(key)
        time.sleep(0.01)
        return found


def test_concurrent_claims_of_one_proof_let_exactly_one_through() -> None:
    cache = MemoryReplayCache()
    cache._expiry = SlowDict()  # white-box: make the race window wide enough to lose
    results: list[bool] = []
    barrier = threading.Barrier(16)

    def claim() -> None:
        barrier.wait()
        results.append(cache.claim(A, "same", NOW + 60, NOW))

    threads = [threading.Thread(target=claim) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 15 + [True]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_the_bound_is_a_positive_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryReplayCache(max_entries=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_the_quota_is_a_positive_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="max_per_key"):
        MemoryReplayCache(max_entries=100, max_per_key=bad)  # type: ignore[arg-type]
