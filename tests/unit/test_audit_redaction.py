"""The linear redactor (``broker.audit.redaction``) against the old regex, and its bound.

The old redactor was one regex over the whole text. As a model it is exact on short text
(where its backtracking costs nothing): the new redactor must replace, in every maximal run
of ``[A-Za-z0-9_.-]``, everything from where the old regex's first match in that run starts
to the end of the run, and change nothing else. On 64 KB adversarial text, where the old
regex took seconds, the new one must stay within a small time bound.
"""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit.redaction import CUT_MARK, MAX_TEXT, REDACTED, cut, redact_text
from broker.errors import MAX_REASON, InvalidRequest, excerpt, quoted
from broker.policy.requests import parse_mint_request

OLD_SHAPES = re.compile(
    r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"
    r"|(?i:cbk)_[A-Za-z0-9_-]{8,}"
    r"|\b(?:hvs|hvb|s|b)\.[A-Za-z0-9]{20,}"
)
RUN = re.compile(r"[A-Za-z0-9_.-]+")
JWS = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln"

# fragments that make every shape, and the near misses around each
FRAGMENTS = ["eyJ", ".", "cbk_", "s.", "b.", "hvs.", "hvb.", "A" * 20, "AAAA", "x", "-", "_", " ", ":", "é", "\n"]
adversarial = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)


def model(text: str) -> str:
    """The intended result, built with the old regex one run at a time (short text only)."""

    def one(run: str) -> str:
        found = OLD_SHAPES.search(run)
        return run if found is None else run[: found.start()] + REDACTED

    return RUN.sub(lambda m: one(m.group()), text)


@settings(max_examples=400, deadline=None)
@given(adversarial)
def test_the_linear_redactor_matches_the_old_regex_run_by_run(text: str) -> None:
    assert redact_text(text) == model(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="eyJcbk_hvs.b-A0 ", max_size=60))
def test_no_secret_shape_survives_and_text_without_one_is_unchanged(text: str) -> None:
    out = redact_text(text)
    assert OLD_SHAPES.search(out.replace(REDACTED, " ")) is None
    if OLD_SHAPES.search(text) is None:
        assert out == text


def test_the_shapes_the_old_redactor_caught_are_still_caught() -> None:
    assert redact_text(f"token {JWS} here") == f"token {REDACTED} here"
    assert redact_text("ns s.AAAAAAAAAAAAAAAAAAAAAAAA.ns1 end") == f"ns {REDACTED} end"
    assert redact_text("xcbk_AAAAAAAA.rest") == f"x{REDACTED}"
    assert redact_text("cbk_AAAA.AAAA cbk_short") == "cbk_AAAA.AAAA cbk_short"


SIZE = 64 * 1024
# CPU seconds for two 64 KB texts (~35 ms at worst here: many short runs, each redacted);
# the old regex took over a second on the issue's payload alone, and seconds on repeats
LINEAR_BOUND = 0.250


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=6).map("".join))
def test_redaction_of_64_kb_of_any_repeated_pattern_is_fast(unit: str) -> None:
    text = (unit * (SIZE // len(unit) + 1))[:SIZE]
    start = time.process_time()
    redact_text(text)
    redact_text("." + text)  # the issue's payload is a dot, then eyJ repeated
    assert time.process_time() - start < LINEAR_BOUND, repr(unit)


def test_the_issue_payload_is_redacted_fast() -> None:
    text = "." + "eyJ" * 21500
    start = time.process_time()
    assert redact_text(text) == text  # no two dots after an eyJ: nothing secret here
    assert time.process_time() - start < 0.050  # the issue's bound for a whole request


def test_cut_bounds_text_and_drops_a_run_it_splits() -> None:
    assert cut("short") == "short"
    long = "a " * MAX_TEXT
    assert cut(long) == long[:MAX_TEXT] + CUT_MARK
    # a token that the cut would split goes whole: no half token is left to escape redaction
    text = "x" * (MAX_TEXT - 10) + " " + JWS
    assert cut(text) == "x" * (MAX_TEXT - 10) + " " + CUT_MARK
    assert "eyJ" not in cut(text)


def test_a_reason_quotes_a_bounded_excerpt_of_a_huge_unknown_field() -> None:
    body = {"." + "eyJ" * 21500: 1, "task": "t", "scopes": ["s"]}
    with pytest.raises(InvalidRequest) as e:
        parse_mint_request(body)
    assert len(e.value.reason) < 200
    assert "eyJeyJ" in e.value.reason


def test_a_reason_lists_a_few_of_many_unknown_fields() -> None:
    body: dict[object, object] = {f"f{i}": 1 for i in range(10_000)}
    with pytest.raises(InvalidRequest) as e:
        parse_mint_request(body)
    assert "and 9996 more" in e.value.reason
    assert len(e.value.reason) < 200


def test_excerpt_and_quoted_are_bounded() -> None:
    assert excerpt("x" * 10_000).startswith("'" + "x" * 64 + "'")
    assert len(excerpt("x" * 10_000)) < 80
    assert excerpt(None) == "None"
    assert excerpt(10**100) == "<int>"
    assert excerpt({"a": 1}) == "<dict>"
    assert quoted(["a", "b"]) == "['a', 'b']"
    assert quoted([str(i) for i in range(10)]) == "['0', '1', '2', '3'] and 6 more"


def test_every_reason_is_capped() -> None:
    assert len(InvalidRequest("x" * 100_000).reason) <= MAX_REASON + len("…[cut]")


def test_a_client_secret_in_upper_case_is_redacted_too() -> None:
    """Found by an outside test: ``CBK_<secret>`` as an unknown field name reached the log."""
    secret = "JkW4kwnskv4yZJ9gV_zYZiy0kRQTXGuHmfx-XK7Lgq0"
    for shape in (f"CBK_{secret}", f"Cbk_{secret}", f"cbk_{secret}"):
        assert redact_text(f"unknown field(s): ['{shape}']") == "unknown field(s): ['[redacted]']"
