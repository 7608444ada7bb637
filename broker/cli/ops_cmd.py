"""``broker keys rotate`` and ``broker audit verify``: operator commands on the backends."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from broker.audit.chain import verify_chain
from broker.config import SettingsError, load_settings
from broker.errors import BackendUnavailable
from broker.service.ports import StoredEvent


def register_rotate(keys_commands: Any) -> None:
    rotate = keys_commands.add_parser("rotate", help="make a new signing key version current (Vault Transit)")
    rotate.add_argument("--config", help="settings file; BROKER_VAULT_TOKEN must allow transit rotate")
    rotate.set_defaults(run=run_rotate)


def register(commands: Any) -> None:
    audit = commands.add_parser("audit", help="the audit trail")
    sub = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    verify = sub.add_parser("verify", help="check the audit hash chain; name the first broken link")
    verify.add_argument("--config", help="settings file (the Redis holding the audit stream)")
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


async def _events(config: str | None) -> list[StoredEvent]:
    from broker.runtime import state_store

    state = state_store(load_settings(config))
    try:
        return [event async for event in state.audit_events()]
    finally:
        await state.aclose()


def run_audit_verify(args: argparse.Namespace) -> int:
    try:
        events = asyncio.run(_events(args.config))
    except (SettingsError, OSError) as e:
        print(f"broker audit verify: {e}", file=sys.stderr)
        return 2
    except BackendUnavailable as e:
        print(f"broker audit verify: the state store is unavailable ({e.reason})", file=sys.stderr)
        return 2
    report = verify_chain(events)
    if report.broken is not None:
        b = report.broken
        print(f"audit chain BROKEN at event #{b.index} (id {b.id}): {b.reason}")
        print(f"{report.count} event(s) before it verify; last good hash {report.head}")
        return 1
    print(f"audit chain OK: {report.count} event(s), head {report.head}")
    return 0
