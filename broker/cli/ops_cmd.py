"""``broker keys rotate`` and ``broker audit verify``: operator commands on the backends."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from broker.audit.chain import ChainReport, ChainWalk, CheckpointKeys
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
        "verify", help="check the audit hash chain, its signed checkpoints and its head; name the first bad link"
    )
    verify.add_argument("--config", help="settings file (the Redis holding the audit stream, the Vault key)")
    verify.add_argument(
        "--keys",
        metavar="FILE|URL",
        help="check checkpoints against this JWKS (e.g. the broker's /.well-known/jwks.json) "
        "instead of reading the Transit key from Vault",
    )
    verify.set_defaults(run=run_audit_verify)


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
        return 1
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
    from broker.backends.transit import TransitSigningBackend

    transit = TransitSigningBackend(
        addr=settings.vault_addr,
        token=settings.vault_token,
        mount=settings.transit_mount,
        key=settings.transit_key,
        alg=settings.signing_alg,
        timeout=settings.backend_timeout,
    )
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


async def _verify(config: str | None, keys_source: str | None) -> ChainReport:
    from broker.runtime import state_store

    settings = load_settings(config)
    keys = await _long_term_keys(settings, keys_source)
    state = state_store(settings)
    try:
        head = await state.audit_head()  # before the walk: later events are appended since
        walk = ChainWalk(checkpoints=CheckpointKeys(keys, settings.issuer), head=head)
        async for stored in state.audit_events():
            if walk.feed(stored) is not None:
                break
        return walk.finish(now=time.time(), interval=settings.audit_checkpoint_interval)
    finally:
        await state.aclose()


def run_audit_verify(args: argparse.Namespace) -> int:
    try:
        report = asyncio.run(_verify(args.config, args.keys))
    except (SettingsError, OSError, ValueError) as e:
        print(f"broker audit verify: {e}", file=sys.stderr)
        return 2
    except BackendUnavailable as e:
        print(f"broker audit verify: a backend is unavailable ({e.reason})", file=sys.stderr)
        return 2
    if report.broken is not None:
        b = report.broken
        where = "the stored head" if b.id == "head" else f"event #{b.index} (id {b.id})"
        print(f"audit chain BROKEN at {where}: {b.reason}")
        print(f"{report.count} event(s) before it verify; last good hash {report.head}")
        return 1
    summary = f"{report.count} event(s), {report.checkpoints} checkpoint(s), head {report.head}"
    if report.unanchored is not None:
        u = report.unanchored
        print(f"audit chain UNANCHORED from event #{u.index} (id {u.id}): {u.reason}")
        print(f"the {report.anchored} event(s) before it verify and are anchored; {summary}")
        return 1
    print(f"audit chain OK: {summary}")
    if report.anchored < report.count:
        print(f"{report.count - report.anchored} newest event(s) await their checkpoint (within the interval)")
    return 0
