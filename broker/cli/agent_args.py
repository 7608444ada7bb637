"""What the agent-side commands share: the broker URL, the credential and the client.

The credential is never a command-line argument (``ps`` would show it): it comes from
``--key-file PATH`` (read again for every call, so a projected identity token that is
rotated on disk keeps working) or the ``CAPBROKER_KEY`` environment variable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from broker.client import BrokerCallFailed, BrokerClient, BrokerUnreachable
from broker.client.disk_cache import DiskTokenCache
from broker.client.freshness import IssuedToken

KEY_ENV = "CAPBROKER_KEY"
BROKER_ENV = "CAPBROKER_BROKER"


def add_broker_args(parser: argparse.ArgumentParser, *, scope_many: bool = False) -> None:
    parser.add_argument("--broker", default=os.environ.get(BROKER_ENV), help=f"the broker's URL (or ${BROKER_ENV})")
    parser.add_argument("--task", required=True, help="the task id")
    if scope_many:
        parser.add_argument("--scope", action="append", required=True, help="a scope (repeat for several)")
    else:
        parser.add_argument("--scope", required=True, help="the scope")
    parser.add_argument("--ttl", default=None, help="the tokens' lifetime (90s, 5m, 1h; default the broker's, 5m)")
    parser.add_argument(
        "--key-file", type=Path, help=f"a file holding the agent's credential (default: ${KEY_ENV}); never an argument"
    )


class UsageError(Exception):
    pass


def credential_source(args: argparse.Namespace) -> Callable[[], str]:
    path: Path | None = args.key_file
    if path is not None:

        def from_file() -> str:
            try:
                return path.read_text().strip()
            except OSError as e:
                raise UsageError(f"cannot read --key-file: {e.strerror}") from None

        from_file()  # fail early on a missing file
        return from_file
    value = os.environ.get(KEY_ENV, "").strip()
    if not value:
        raise UsageError(f"no credential: set ${KEY_ENV} or give --key-file")
    return lambda: value


def client_of(args: argparse.Namespace, *, cache: bool = True) -> BrokerClient:
    if not args.broker:
        raise UsageError(f"no broker: give --broker URL or set ${BROKER_ENV}")
    credential = credential_source(args)
    try:
        disk = DiskTokenCache(args.broker.rstrip("/"), credential()) if cache else None
        return BrokerClient(args.broker, credential, cache=disk)
    except ValueError as e:
        raise UsageError(str(e)) from None


def asked_token(args: argparse.Namespace) -> IssuedToken:
    """The token ``--task``/``--scope`` (narrowed by ``--resource``/``--action``) ask for,
    from the disk cache unless ``--no-cache``: what ``token get`` and ``aws-credentials`` print."""
    with client_of(args, cache=not args.no_cache) as client:
        return client.token(args.task, args.scope, resource=args.resource, action=args.action, ttl=ttl_of(args))


def ttl_of(args: argparse.Namespace) -> str | int | None:
    ttl: str | None = args.ttl
    return int(ttl) if ttl is not None and ttl.isdigit() else ttl


def report_failure(error: Exception) -> int:
    """One line on stderr for the user; exit status 1 (2 for usage)."""
    if isinstance(error, UsageError):
        print(f"broker: {error}", file=sys.stderr)
        return 2
    if isinstance(error, BrokerUnreachable):
        print(f"broker: the broker could not be reached: {error.reason}", file=sys.stderr)
        return 1
    if isinstance(error, BrokerCallFailed):
        where = f", request {error.request_id}" if error.request_id else ""
        print(f"broker: refused: {error.code} (HTTP {error.status}{where})", file=sys.stderr)
        return 1
    raise error
