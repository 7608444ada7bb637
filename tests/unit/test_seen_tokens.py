"""``SeenTokens``: bounded, exact-string, and valid only while the key set keeps the key."""

from __future__ import annotations

from broker.backends.local_signer import LocalSigner
from broker.token.keys import KeySet
from broker.token.seen import SeenTokens


def _key(kid: str = "k1") -> LocalSigner:
    return LocalSigner.generate("EdDSA", kid)


def test_a_token_is_given_back_while_its_key_is_the_key_sets() -> None:
    signer = _key()
    seen: SeenTokens[str] = SeenTokens(4)
    seen.remember("tok", "claims", signer.public)
    assert seen.get("tok", KeySet([signer.public])) == "claims"


def test_a_replaced_key_of_the_same_kid_forgets_the_token() -> None:
    old, new = _key("k1"), _key("k1")
    seen: SeenTokens[str] = SeenTokens(4)
    seen.remember("tok", "claims", old.public)
    assert seen.get("tok", KeySet([new.public])) is None
    assert "tok" not in seen


def test_a_key_gone_from_the_key_set_forgets_the_token() -> None:
    seen: SeenTokens[str] = SeenTokens(4)
    seen.remember("tok", "claims", _key("k1").public)
    assert seen.get("tok", KeySet([_key("k2").public])) is None
    assert len(seen) == 0


def test_only_exact_strings_are_kept() -> None:
    class Sly(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    signer = _key()
    seen: SeenTokens[str] = SeenTokens(4)
    seen.remember(Sly("tok"), "claims", signer.public)
    seen.remember(b"tok", "claims", signer.public)
    assert len(seen) == 0
    seen.remember("tok", "claims", signer.public)
    assert seen.get(Sly("tok"), KeySet([signer.public])) is None


def test_the_oldest_is_forgotten_first_and_size_zero_keeps_nothing() -> None:
    signer = _key()
    seen: SeenTokens[int] = SeenTokens(2)
    for i in range(3):
        seen.remember(f"t{i}", i, signer.public)
    assert [t in seen for t in ("t0", "t1", "t2")] == [False, True, True]
    none: SeenTokens[int] = SeenTokens(0)
    none.remember("t", 1, signer.public)
    assert len(none) == 0
