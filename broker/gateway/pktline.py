"""The ref-update commands at the start of a ``git-receive-pack`` request body. Pure.

The body starts with pkt-lines (four hex digits of length, then the payload): optional
``shallow <oid>`` lines, then the commands ``<old-oid> <new-oid> <ref>`` (the first
followed by NUL and the capabilities), then a flush packet ``0000``; the pack follows.
``push_commands`` reads exactly that far: it returns ``None`` while the commands are not
complete yet (give it more bytes), else the refs named and where the commands end. A
signed push (``push-cert``) or anything else it does not recognise is refused: a gateway
that cannot read the refs must not forward the push.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

#: the most bytes of commands the gateway reads before it must have seen the flush
MAX_COMMANDS_BYTES: Final = 1 << 20
_OID = r"[0-9a-f]{40}(?:[0-9a-f]{24})?"  # SHA-1 or SHA-256
_COMMAND = re.compile(rf"({_OID}) ({_OID}) (refs/[^\x00\n ]+)")
_SHALLOW = re.compile(rf"shallow {_OID}")
_LENGTH = re.compile(rb"[0-9a-f]{4}")


class PktLineError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PushCommands:
    refs: tuple[str, ...]
    end: int  # offset just past the flush packet


def push_commands(data: bytes) -> PushCommands | None:
    refs: list[str] = []
    at = 0
    while True:
        if len(data) < at + 4:
            _check_room(data)
            return None
        head = data[at : at + 4]
        if not _LENGTH.fullmatch(head):
            raise PktLineError("not a pkt-line")
        length = int(head, 16)
        if length == 0:
            return PushCommands(tuple(refs), at + 4)
        if length < 5:
            raise PktLineError("unexpected special packet")
        if len(data) < at + length:
            _check_room(data)
            return None
        payload = data[at + 4 : at + length].decode("ascii", "strict") if data[at + 4 : at + length].isascii() else None
        if payload is None:
            raise PktLineError("non-ASCII command")
        line = payload.removesuffix("\n")
        if not refs and _SHALLOW.fullmatch(line):
            at += length
            continue
        command, _, _capabilities = line.partition("\x00")
        m = _COMMAND.fullmatch(command)
        if m is None:
            raise PktLineError("not a ref-update command")
        refs.append(m.group(3))
        at += length


def _check_room(data: bytes) -> None:
    if len(data) > MAX_COMMANDS_BYTES:
        raise PktLineError("ref-update commands too long")


def outside_prefix(refs: tuple[str, ...], prefix: str) -> tuple[str, ...]:
    """The refs not under ``prefix`` (which ends in ``/``), or with ``..`` in them."""
    return tuple(r for r in refs if not r.startswith(prefix) or ".." in r or r == prefix)
