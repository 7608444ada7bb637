"""``broker keys rotate`` and ``broker audit verify``: operator commands on the backends."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from broker.audit.chain import ChainReport, ChainWalk, CheckpointKeys
from broker.audit.segments import ArchiveDamaged
from broker.audit.stored import StoredEvent
from broker.config import Settings, SettingsError, load_settings
from broker.errors import BackendUnavailable
from broker.token.endorsement import is_session_kid
from broker.token.keys import KeyFormatError, KeySet


def register_rotate(keys_commands: Any) -> None:
    rotate = keys_commands.add_parser("rotate", help="make a new signing key version current (Vault Transit)")
    rotate.add_argument("--config", help="settings file; BROKER_VAULT_TOKEN must allow transit rotate")
    rotate.set_defaults(run=run_rotate)


def register(commands: Any) -> None:
    audit = commands.add_parser("audit", help="the audit trail")
    sub = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    verify = sub.add_parser(
        "verify",
        help="check the audit hash chain (archive, then Redis), its signed checkpoints and its head;"
        " name the first bad link",
    )
    verify.add_argument(
        "--config", help="settings file (the Redis holding the audit stream, the archive directory, the Vault key)"
    )
    verify.add_argument(
        "--keys",
        metavar="FILE|URL",
        help="check checkpoints against this JWKS (e.g. the broker's /.well-known/jwks.json) "
        "instead of reading the Transit key from Vault",
    )
    verify.add_argument(
        "-o", "--output", choices=("text", "json"), default="text", help="text (default) or one JSON object"
    )
    verify.set_defaults(run=run_audit_verify)
    export = sub.add_parser("export", help="the audit events, archive then Redis, as JSON lines (for a SIEM)")
    export.add_argument("--config", help="settings file (the Redis and the archive directory)")
    export.add_argument(
        "--since", help="an ISO 8601 time with its zone (2026-12-04T10:00:00Z) or a span back (15m, 1h, 7d)"
    )
    export.set_defaults(run=run_audit_export)


async def _rotate(config: str | None) -> str:
    from broker.runtime import signing_backend

    backend = signing_backend(load_settings(config))
    try:
        kid = await backend.rotate()
        keys = await backend.keyset()
        return f"{kid} (the JWKS now publishes {len(keys)} key version(s))"
    finally:
        await backend.aclose()


def run_rotate(args: argparse.Namespace) -> int:
    try:
        print(f"new signing key: {asyncio.run(_rotate(args.config))}")
    except (SettingsError, OSError) as e:
        print(f"broker keys rotate: {e}", file=sys.stderr)
        return 2
    except BackendUnavailable as e:
        print(f"broker keys rotate: Vault refused or is unavailable ({e.reason})", file=sys.stderr)
        return 3
    print("brokers sign with it once they refresh their key metadata (key_refresh, default 10 s);")
    print("older versions stay in the JWKS until you raise min_decryption_version in Transit.")
    return 0


async def _long_term_keys(settings: Settings, source: str | None) -> KeySet:
    """The keys checkpoints must verify against: a JWKS file or URL (``--keys``; session
    keys in it are ignored), else the Transit key's versions read from Vault now."""
    if source is not None:
        return _jwks(source)
    if settings.signer != "vault":
        return KeySet(())  # broker dev: its in-process key died with it; pass --keys
    from broker.runtime import transit_backend

    transit = transit_backend(settings)
    try:
        return await transit.read_keyset()
    finally:
        await transit.aclose()


def _jwks(source: str) -> KeySet:
    if source.startswith(("https://", "http://")):
        with urllib.request.urlopen(source, timeout=10) as answer:  # noqa: S310 -- http(s) only, checked above
            raw = answer.read(1024 * 1024)
    else:
        raw = Path(source).read_bytes()
    try:
        keys = KeySet.from_jwks(json.loads(raw))
    except (ValueError, KeyFormatError) as e:
        raise OSError(f"{source}: not a JWKS ({e})") from None
    return KeySet(k for k in keys if not is_session_kid(k.kid))


async def _stored_head(settings: Settings) -> str | None:
    from broker.runtime import state_store

    state = state_store(settings)
    try:
        return await state.audit_head()
    finally:
        await state.aclose()


def _verify(config: str | None, keys_source: str | None, counted: list[_Counted]) -> ChainReport:
    """Walk archive + tail once, checking links, checkpoints and the stored head (read
    before the walk: events appended meanwhile are not a break)."""
    settings = load_settings(config)
    keys = asyncio.run(_long_term_keys(settings, keys_source))
    head = asyncio.run(_stored_head(settings))
    walk = ChainWalk(checkpoints=CheckpointKeys(keys, settings.issuer), head=head)
    with _history(config) as events:
        counted.append(_Counted(events))
        for stored in counted[-1]:
            if walk.feed(stored) is not None:
                break
    return walk.finish(now=time.time(), interval=settings.audit_checkpoint_interval)


@contextmanager
def _history(config: str | None, since: str | None = None) -> Iterator[Iterator[StoredEvent]]:
    """The chain, streamed: the archive's segments, then the Redis tail (``audit_history``).
    The memory state keeps nothing beyond its process: no events."""
    from broker.backends.audit_archive import ArchiveDir
    from broker.backends.audit_history import RedisTail, audit_history

    settings = load_settings(config)
    if settings.state != "redis":
        yield iter(())
        return
    archive = ArchiveDir(Path(settings.audit_archive_dir)) if settings.audit_archive_dir else None
    tail = RedisTail.connect(settings.redis_url, settings.stream, timeout=max(5.0, settings.backend_timeout))
    try:
        yield audit_history(archive, tail, since=since)
    finally:
        tail.close()


class _Counted:
    """Counts the events passed on (``verify_chain`` asks for the next one only once the
    one before it verified)."""

    def __init__(self, events: Iterable[StoredEvent]) -> None:
        self._events = events
        self.count = 0

    def __iter__(self) -> Iterator[StoredEvent]:
        for stored in self._events:
            yield stored
            self.count += 1


def run_audit_verify(args: argparse.Namespace) -> int:
    walked: list[_Counted] = []
    try:
        report = _verify(args.config, args.keys, walked)
    except (SettingsError, OSError, ValueError) as e:
        print(f"broker audit verify: {e}", file=sys.stderr)
        return 2
    except BackendUnavailable as e:
        print(f"broker audit verify: a backend is unavailable ({e.reason})", file=sys.stderr)
        return 3
    except ArchiveDamaged as e:
        good = walked[-1].count if walked else 0
        broken = {"status": "broken", "verified": good, "where": f"archive {e.where}", "reason": e.reason}
        return _verdict(args, broken, [
            f"audit chain BROKEN at event #{good} (archive {e.where}): {e.reason}",
            f"{good} event(s) before it verify",
        ])  # fmt: skip
    found = {"count": report.count, "checkpoints": report.checkpoints, "head": report.head, "anchored": report.anchored}
    if report.broken is not None:
        b = report.broken
        where = "the stored head" if b.id == "head" else f"event #{b.index} (id {b.id})"
        return _verdict(args, {**found, "status": "broken", "where": where, "reason": b.reason}, [
            f"audit chain BROKEN at {where}: {b.reason}",
            f"{report.count} event(s) before it verify; last good hash {report.head}",
        ])  # fmt: skip
    summary = f"{report.count} event(s), {report.checkpoints} checkpoint(s), head {report.head}"
    if report.unanchored is not None:
        u = report.unanchored
        where = f"event #{u.index} (id {u.id})"
        return _verdict(args, {**found, "status": "unanchored", "where": where, "reason": u.reason}, [
            f"audit chain UNANCHORED from event #{u.index} (id {u.id}): {u.reason}",
            f"the {report.anchored} event(s) before it verify and are anchored; {summary}",
        ])  # fmt: skip
    lines = [f"audit chain OK: {summary}"]
    if report.anchored < report.count:
        lines.append(f"{report.count - report.anchored} newest event(s) await their checkpoint (within the interval)")
    return _verdict(args, {**found, "status": "ok"}, lines)


def _verdict(args: argparse.Namespace, result: dict[str, Any], lines: list[str]) -> int:
    """Print the verdict (text lines, or one JSON object with ``-o json``): 0 ok, 1 otherwise."""
    if getattr(args, "output", "text") == "json":
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(lines))
    return 0 if result["status"] == "ok" else 1


_SPAN = re.compile(r"([1-9][0-9]{0,8})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_stream_id(text: str, now: float) -> str:
    """``--since``: an ISO 8601 time with its zone, or a span back from ``now`` (``90s``,
    ``15m``, ``1h``, ``7d``), as the first stream id at that time (stream ids are the
    milliseconds at which Redis stored the event). ``ValueError`` otherwise."""
    span = _SPAN.fullmatch(text.strip())
    if span is not None:
        at = now - int(span.group(1)) * _UNIT[span.group(2)]
    else:
        try:
            parsed = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(f"--since {text[:40]!r}: an ISO 8601 time or a span like 15m, 1h, 7d") from None
        if parsed.tzinfo is None:
            raise ValueError(f"--since {text[:40]!r}: give the time zone (e.g. Z or +01:00)")
        at = parsed.timestamp()
    return f"{max(0, int(at * 1000))}-0"


def run_audit_export(args: argparse.Namespace) -> int:
    """One JSON line per event, ``{"audit_id": <stream id>, ...the stored event}`` (the
    shape of the broker's stdout lines), oldest first. It does not verify: run ``verify``."""
    try:
        since = since_stream_id(args.since, time.time()) if args.since else None
    except ValueError as e:
        print(f"broker audit export: {e}", file=sys.stderr)
        return 2
    out = sys.stdout
    try:
        with _history(args.config, since) as events:
            for stored in events:
                out.write(json.dumps({"audit_id": stored.id, **stored.event}, separators=(",", ":")) + "\n")
            out.flush()
    except BrokenPipeError:
        return 0  # the reader stopped (| head): not an error
    except (SettingsError, OSError) as e:
        print(f"broker audit export: {e}", file=sys.stderr)
        return 2
    except BackendUnavailable as e:
        print(f"broker audit export: the state store is unavailable ({e.reason})", file=sys.stderr)
        return 3
    except ArchiveDamaged as e:
        print(f"broker audit export: the archive is damaged at {e.where}: {e.reason}", file=sys.stderr)
        return 1
    return 0
