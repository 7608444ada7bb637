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


def test_a_full_cache_refuses_every_new_proof() -> None:
    """Fail closed: a cache that cannot remember a proof never lets it through."""
    cache = MemoryReplayCache(max_entries=2, max_per_key=1)
    assert cache.claim(A, "a", NOW + 60, NOW)
    assert cache.claim(B, "b", NOW + 60, NOW)
    assert not cache.claim("C" * 43, "c", NOW + 60, NOW)
    assert not cache.claim(A, "a", NOW + 60, NOW)
    assert len(cache) == 2


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
