"""Audit archive segments on disk: written whole and read back verifying, and every way a
segment can be torn, cut or out of place is reported (``ArchiveDamaged``), as is a tail
that does not follow the archive. ``--since`` parsing for ``broker audit export``."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.audit.chain import GENESIS, sealed_with_canonical, verify_chain
from broker.audit.segments import ArchiveDamaged, SegmentHeader, encode_line, id_after, segment_name
from broker.audit.stored import StoredEvent
from broker.backends.audit_archive import ArchiveDir, SegmentExists
from broker.backends.audit_history import audit_history
from broker.cli.ops_cmd import since_stream_id


def chain(n: int, *, start_ms: int = 1_000, prev: str = GENESIS) -> list[tuple[str, dict[str, object], bytes]]:
    """``n`` sealed events: (stream id, event, the stream's bytes)."""
    out = []
    for i in range(n):
        event, raw = sealed_with_canonical({"type": "mint", "n": i, "ts": f"t{i}"}, prev)
        prev = event["hash"]
        out.append((f"{start_ms + i}-0", event, raw))
    return out


def write(archive: ArchiveDir, seq: int, part: list[tuple[str, dict[str, object], bytes]]) -> SegmentHeader:
    header = SegmentHeader(seq, str(part[0][1]["prev"]), part[0][0], part[-1][0], len(part), str(part[-1][1]["hash"]))
    archive.write(header, [encode_line(i.encode(), raw) for i, _, raw in part], still_mine=lambda: True)
    return header


@pytest.fixture
def archive(tmp_path: Path) -> ArchiveDir:
    return ArchiveDir(tmp_path)


@pytest.fixture
def events() -> list[tuple[str, dict[str, object], bytes]]:
    return chain(30)


def archived(archive: ArchiveDir, events: list[tuple[str, dict[str, object], bytes]], size: int = 10) -> None:
    for seq, at in enumerate(range(0, len(events), size)):
        write(archive, seq, events[at : at + size])


def history(archive: ArchiveDir, tail: list[StoredEvent] | None = None, since: str | None = None) -> list[StoredEvent]:
    def page(after: str | None, count: int) -> list[StoredEvent]:
        rest = [e for e in tail or [] if after is None or e.id > after]  # ids of equal width here
        return rest[:count]

    return list(audit_history(archive, page, since=since))


def test_segments_are_written_whole_and_read_back_as_one_verifying_chain(archive: ArchiveDir, events: list) -> None:
    archived(archive, events)

    got = history(archive)

    assert [e.id for e in got] == [i for i, _, _ in events]
    assert verify_chain(got).ok
    assert verify_chain(got).count == 30
    assert archive.seqs() == [0, 1, 2]
    assert not [p for p in archive.path.iterdir() if p.name.endswith(".tmp")]


def test_the_tail_continues_after_the_last_segment_skipping_events_archived_but_not_trimmed(
    archive: ArchiveDir, events: list
) -> None:
    archived(archive, events[:20])
    tail = [StoredEvent(i, e) for i, e, _ in events[15:]]  # 15..19 archived and still in Redis

    got = history(archive, tail)

    assert [e.id for e in got] == [i for i, _, _ in events]
    assert verify_chain(got).ok


def test_a_cut_segment_is_reported(archive: ArchiveDir, events: list) -> None:
    archived(archive, events)
    path = archive.path / segment_name(1)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))  # the last event gone, the rest intact

    with pytest.raises(ArchiveDamaged) as broken:
        history(archive)

    assert broken.value.where == segment_name(1)
    assert "9 of its 10 events" in broken.value.reason


def test_a_torn_last_line_is_reported(archive: ArchiveDir, events: list) -> None:
    archived(archive, events)
    path = archive.path / segment_name(2)
    path.write_bytes(path.read_bytes()[:-25])

    with pytest.raises(ArchiveDamaged) as broken:
        history(archive)

    assert broken.value.where == f"{segment_name(2)} line 11"


def test_a_torn_header_is_reported(archive: ArchiveDir, events: list) -> None:
    archived(archive, events)
    (archive.path / segment_name(0)).write_bytes(b'{"capbroker_audit_segment":1,"seq":0,"pr')

    with pytest.raises(ArchiveDamaged, match="header"):
        history(archive)


def test_a_missing_segment_is_reported(archive: ArchiveDir, events: list) -> None:
    archived(archive, events)
    (archive.path / segment_name(1)).unlink()

    with pytest.raises(ArchiveDamaged) as broken:
        history(archive)

    assert broken.value.where == segment_name(2)
    assert "segment 1 is missing" in broken.value.reason


def test_a_segment_that_does_not_continue_the_previous_one_is_reported(archive: ArchiveDir) -> None:
    first = chain(10)
    other = chain(10, start_ms=5_000, prev="ab" * 32)  # a whole, well-formed segment of another chain
    write(archive, 0, first)
    write(archive, 1, other)

    with pytest.raises(ArchiveDamaged) as broken:
        history(archive)

    assert broken.value.where == segment_name(1)
    assert "does not continue the previous segment" in broken.value.reason


def test_an_edited_event_inside_a_segment_breaks_the_chain_there(archive: ArchiveDir, events: list) -> None:
    archived(archive, events)
    path = archive.path / segment_name(1)
    path.write_bytes(path.read_bytes().replace(b'"n":14,', b'"n":41,'))

    report = verify_chain(history(archive))

    assert report.broken is not None
    assert report.broken.id == events[14][0]


def test_a_segment_name_is_never_taken_twice(archive: ArchiveDir, events: list) -> None:
    write(archive, 0, events[:10])
    before = (archive.path / segment_name(0)).read_bytes()

    with pytest.raises(SegmentExists):
        write(archive, 0, events[10:20])

    assert (archive.path / segment_name(0)).read_bytes() == before
    assert not [p for p in archive.path.iterdir() if p.name.endswith(".tmp")]


def test_a_writer_that_lost_its_lease_once_the_data_is_on_disk_publishes_nothing(
    archive: ArchiveDir, events: list
) -> None:
    header = SegmentHeader(0, GENESIS, events[0][0], events[9][0], 10, str(events[9][1]["hash"]))

    archive.write(header, [encode_line(i.encode(), raw) for i, _, raw in events[:10]], still_mine=lambda: False)

    assert list(archive.path.iterdir()) == []


def test_export_since_skips_older_events_across_archive_and_tail(archive: ArchiveDir, events: list) -> None:
    archived(archive, events[:20])
    tail = [StoredEvent(i, e) for i, e, _ in events[20:]]

    got = history(archive, tail, since="1013-0")

    assert [e.id for e in got] == [i for i, _, _ in events[13:]]


def test_id_after_is_the_next_stream_id() -> None:
    assert id_after("1700000000000-41") == "1700000000000-42"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", "1699999910000-0"),
        ("15m", "1699999100000-0"),
        ("1h", "1699996400000-0"),
        ("2d", "1699827200000-0"),
        ("2023-11-14T22:13:20Z", "1700000000000-0"),
        ("2023-11-14T23:13:20+01:00", "1700000000000-0"),
    ],
)
def test_since_takes_a_span_or_a_zoned_time(text: str, expected: str) -> None:
    assert since_stream_id(text, 1_700_000_000.0) == expected


@pytest.mark.parametrize("text", ["yesterday", "2023-11-14T22:13:20", "-5m", "0h", "1w"])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="--since"):
        since_stream_id(text, 1_700_000_000.0)


def test_a_segment_archived_and_trimmed_while_the_tail_is_read_is_read_in_its_place(
    archive: ArchiveDir, events: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("broker.backends.audit_history._PAGE", 5)
    write(archive, 0, events[:10])
    redis = [StoredEvent(i, e) for i, e, _ in events[10:]]
    calls = 0

    def page(after: str | None, count: int) -> list[StoredEvent]:
        nonlocal calls, redis
        calls += 1
        if calls == 2:  # the archiver runs between two pages: segment 1 written, the stream trimmed
            write(archive, 1, events[10:20])
            redis = redis[10:]
        return [e for e in redis if after is None or e.id > after][:count]

    got = list(audit_history(archive, page))

    assert [e.id for e in got] == [i for i, _, _ in events]
    assert verify_chain(got).ok
