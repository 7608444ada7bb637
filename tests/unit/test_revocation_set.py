"""``RevocationSet`` (``broker/verify/revocation_set.py``): what a feed holds, filled from
durable keys and announcements and purged, with ``now`` given: no Redis, no thread."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from broker.capability.lifetime import MAX_TOKEN_TTL, REVOCATION_GRACE
from broker.verify.revocation_set import FeedProtocolError, RevocationSet
from tests.helpers import NOW, claims


def announce(kind: str, ident: str, value: int) -> str:
    return json.dumps({"kind": kind, "id": ident, "value": value})


def test_an_announced_token_is_revoked_until_its_exp_plus_the_grace() -> None:
    s = RevocationSet()
    token = claims(jti="j1")
    s.apply(announce("token", "j1", token.exp))
    assert s.revokes(token)
    s.purge(token.exp + REVOCATION_GRACE - 1)
    assert s.revokes(token)
    s.purge(token.exp + REVOCATION_GRACE)
    assert not s.revokes(token)


def test_an_announced_task_and_cutoff_last_a_whole_token_lifetime() -> None:
    s = RevocationSet()
    token = claims()
    s.apply(announce("task", token.task_ref, NOW))
    s.apply(announce("agent", "analyst", NOW))
    assert len(s) == 2
    s.purge(NOW + MAX_TOKEN_TTL + REVOCATION_GRACE - 1)
    assert len(s) == 2
    s.purge(NOW + MAX_TOKEN_TTL + REVOCATION_GRACE)
    assert len(s) == 0


def test_a_cutoff_only_moves_forward() -> None:
    s = RevocationSet()
    s.apply(announce("agent", "analyst", NOW + 10))
    s.apply(announce("agent", "analyst", NOW))
    assert s.cutoffs == {"analyst": NOW + 10}


def test_a_withdrawn_key_is_held_until_its_publication_ends() -> None:
    s = RevocationSet()
    s.apply(announce("key", "s-00000000000000aa", NOW + 5))
    assert s.key_withdrawn("s-00000000000000aa")
    assert len(s) == 0  # a withdrawal is not a revocation of a token
    s.purge(NOW + 5)
    assert not s.key_withdrawn("s-00000000000000aa")


def test_loaded_keys_expire_with_their_pttl_and_a_gone_key_is_skipped() -> None:
    s = RevocationSet()
    s.load("token", "j1", 2_000, None, now=NOW)
    s.load("token", "j2", -2, None, now=NOW)  # expired between SCAN and PTTL
    s.load("agent", "analyst", 5_000, str(NOW), now=NOW)
    s.load("agent", "helper", 5_000, None, now=NOW)  # expired between PTTL and GET
    assert (s.tokens, s.cutoffs) == ({"j1": NOW + 2.0}, {"analyst": NOW})


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"kind": "token", "id": "j1"}),
        json.dumps({"kind": "nuke", "id": "j1", "value": 1}),
        json.dumps({"kind": "token", "id": "", "value": 1}),
        json.dumps({"kind": "token", "id": "j1", "value": "1"}),
        json.dumps({"kind": "token", "id": "j1", "value": -1}),
        json.dumps({"kind": "token", "id": "j1", "value": True}),
        b"bytes",
    ],
    ids=["text", "list", "missing-value", "unknown-kind", "empty-id", "string-value", "negative", "bool", "bytes"],
)
def test_an_announcement_the_feed_cannot_read_is_a_protocol_error(data: object) -> None:
    with pytest.raises(FeedProtocolError):
        RevocationSet().apply(data)


def test_an_agent_cutoff_that_is_not_an_integer_is_a_protocol_error() -> None:
    with pytest.raises(FeedProtocolError):
        RevocationSet().load("agent", "analyst", 5_000, "12.5", now=NOW)


def test_importing_the_verifier_and_its_feed_registers_no_fork_hook() -> None:
    """The at-fork hook is registered by the first feed built, never at import."""
    code = (
        "import os, sys\n"
        "callers = []\n"
        "os.register_at_fork = lambda **kw: callers.append(sys._getframe(1).f_code.co_filename)\n"
        "import broker.verify, broker.verify.revocation_feed\n"
        "print([c for c in callers if '/broker/' in c])\n"  # the standard library registers its own
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
