"""``ArchiveDir``: the audit archive's segment files in one directory (a shared volume).

Writing is durable and exclusive: the segment goes to a temporary name, is fsynced, then
hard-linked to its final name (``link`` fails if that name exists, so two writers can never
replace each other's segment, even when a lease went wrong), and the directory is
fsynced. A segment is never changed after that. Reading streams line by line.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from broker.audit.segments import (
    ArchiveDamaged,
    SegmentHeader,
    encode_header,
    parse_header,
    segment_events,
    segment_name,
    segment_seq,
)
from broker.audit.stored import StoredEvent

_TEMP_SUFFIX = ".tmp"


class SegmentExists(Exception):
    """The segment's name was taken meanwhile: this writer is no longer the archiver."""


class ArchiveDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def check(self) -> None:
        """``OSError`` unless the directory exists and is writable (a volume not mounted
        must not turn into a fresh local directory)."""
        if not self.path.is_dir():
            raise FileNotFoundError(f"audit archive directory {self.path} does not exist")
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise PermissionError(f"audit archive directory {self.path} is not writable")

    def seqs(self) -> list[int]:
        """The segments' numbers, in order."""
        found = (segment_seq(entry.name) for entry in os.scandir(self.path))
        return sorted(seq for seq in found if seq is not None)

    def exists(self, seq: int) -> bool:
        return (self.path / segment_name(seq)).exists()

    def header(self, seq: int) -> SegmentHeader:
        with (self.path / segment_name(seq)).open("rb") as f:
            return self._header(seq, f.readline())

    def last_header(self) -> SegmentHeader | None:
        seqs = self.seqs()
        return self.header(seqs[-1]) if seqs else None

    def read(self, seq: int) -> tuple[SegmentHeader, Iterator[StoredEvent]]:
        """The segment's header, and its events streamed from the file (checked whole)."""
        f = (self.path / segment_name(seq)).open("rb")
        try:
            header = self._header(seq, f.readline())
        except BaseException:
            f.close()
            raise

        def events() -> Iterator[StoredEvent]:
            with f:
                yield from segment_events(header, f)

        return header, events()

    def _header(self, seq: int, line: bytes) -> SegmentHeader:
        header = parse_header(line, segment_name(seq))
        if header.seq != seq:
            raise ArchiveDamaged(segment_name(seq), f"the header says segment {header.seq}")
        return header

    def write(self, header: SegmentHeader, lines: Iterable[bytes], *, still_mine: Callable[[], bool]) -> None:
        """Write the segment durably under its final name, unless ``still_mine()`` turns
        false once the data is on disk (a lost lease: nothing becomes visible).
        ``SegmentExists`` if the name was taken meanwhile."""
        final = self.path / header.name
        temp = self.path / f".{header.name}.{secrets.token_hex(6)}{_TEMP_SUFFIX}"
        try:
            with temp.open("xb") as f:
                f.write(encode_header(header))
                for line in lines:
                    f.write(line)
                f.flush()
                os.fsync(f.fileno())
            if not still_mine():
                return
            try:
                os.link(temp, final)
            except FileExistsError:
                raise SegmentExists(header.name) from None
            self._fsync_dir()
        finally:
            with contextlib.suppress(OSError):  # best effort: the segment is already linked
                temp.unlink()

    def remove_temporary(self) -> None:
        """Drop temporary files a crashed writer left (only the lease holder calls this; a
        writer that lost its lease meanwhile then fails to link, as it should)."""
        for entry in os.scandir(self.path):
            if entry.name.startswith(".segment-") and entry.name.endswith(_TEMP_SUFFIX):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

    def _fsync_dir(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
