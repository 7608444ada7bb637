"""The in-memory DPoP replay cache: once per key, bounded, fail closed when full, thread-safe."""

from __future__ import annotations

import threading
import time

import pytest

from broker.dpop import MemoryReplayCache, ProofReplayCache

NOW = 1_790_000_000


def test_a_key_is_claimed_once() -> None:
    cache: ProofReplayCache = MemoryReplayCache()
    assert cache.claim("jkt:a", NOW + 65, NOW) is True
    assert cache.claim("jkt:a", NOW + 65, NOW) is False
    assert cache.claim("jkt:b", NOW + 65, NOW) is True


def test_a_key_is_remembered_until_its_expiry_inclusive() -> None:
    cache = MemoryReplayCache()
    assert cache.claim("k", NOW + 65, NOW)
    assert not cache.claim("k", NOW + 200, NOW + 65)  # the last second it could be accepted
    assert cache.claim("k", NOW + 200, NOW + 66)  # past it: forgotten, and claimable again
    assert len(cache) == 1


def test_a_full_cache_refuses_every_new_key() -> None:
    """Fail closed: a cache that cannot remember a key never lets it through."""
    cache = MemoryReplayCache(max_entries=2)
    assert cache.claim("a", NOW + 60, NOW)
    assert cache.claim("b", NOW + 60, NOW)
    assert not cache.claim("c", NOW + 60, NOW)
    assert not cache.claim("a", NOW + 60, NOW)
    assert len(cache) == 2


def test_expired_keys_make_room_first() -> None:
    cache = MemoryReplayCache(max_entries=2)
    assert cache.claim("a", NOW + 10, NOW)
    assert cache.claim("b", NOW + 60, NOW)
    assert cache.claim("c", NOW + 60, NOW + 11)  # "a" expired and went
    assert not cache.claim("b", NOW + 60, NOW + 11)  # "b" did not
    assert len(cache) == 2


class SlowDict(dict[str, int]):
    """Widens the gap between "seen?" and "remember it": without the lock, every thread
    would slip through it."""

    def __contains__(self, key: object) -> bool:
        found = super().__contains__(key)
        time.sleep(0.01)
        return found


def test_concurrent_claims_of_one_key_let_exactly_one_through() -> None:
    cache = MemoryReplayCache()
    cache._expiry = SlowDict()  # white-box: make the race window wide enough to lose
    results: list[bool] = []
    barrier = threading.Barrier(16)

    def claim() -> None:
        barrier.wait()
        results.append(cache.claim("same", NOW + 60, NOW))

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
